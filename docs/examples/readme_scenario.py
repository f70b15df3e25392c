"""
The README scenario, runnable: ``python docs/examples/readme_scenario.py``.

A user is created; three phases of handlers react, each handler in a child
process of an ampoule pool.  The test suite imports this file and runs ``main``.
"""

from twisted.internet import defer, task

from actordispatch import EventDispatcher
from actordispatch.examples.user_created import UserEvent

HANDLERS = "actordispatch.examples.user_created:"


@defer.inlineCallbacks
def main(reactor, out=print):
    d = EventDispatcher(allowed_match_spec_keywords=("event_type", "user", "role"))
    hid = yield d.add_event_handler(HANDLERS + "notify_admin", "during", role="user")
    yield d.add_event_handler(HANDLERS + "validate_user", "before")
    yield d.add_event_handler(
        HANDLERS + "audit_log", "after", event_type="user_created"
    )
    d.start()
    result = yield d.fire_event(
        UserEvent("user_created", "bob", "user", "1234"),
        event_type="user_created",
        user="bob",
        role="user",
    )
    for outcome in result.outcomes:
        name = outcome.handler.rpartition(":")[2]
        out(f"{outcome.phase:>6} {name:<14} {outcome.status} pid={outcome.pid}")
    out(f"notify_admin (handler {hid}) said: {result.for_handler(hid)[0].value!r}")
    yield d.stop()
    return result


if __name__ == "__main__":
    task.react(lambda reactor: main(reactor).addCallback(lambda _: None))
