"""
The child side of actordispatch: the code that runs inside the pool's child
processes.  Nothing here imports the dispatcher; the two sides share only the AMP
commands, the codec and the error types.

Handlers may import L{fire_event} from here to fire follow-up events (see
L{actordispatch.children.followup}).  It is imported on first use: the sandbox
(L{actordispatch.children.sandbox}) is applied before anything else is imported.
"""

from typing import Any

__all__ = ["FollowUpResult", "fire_event"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from actordispatch.children import followup

        return getattr(followup, name)
    raise AttributeError(f"module 'actordispatch.children' has no attribute {name!r}")
