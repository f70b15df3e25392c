"""
A handler module that kills the child importing it when the child's environment
says so (the test process itself imports it safely).
"""

import os
from typing import NamedTuple

if os.environ.get("ACTORDISPATCH_TEST_CRASH_ON_IMPORT") == "1":
    os._exit(13)


def handler(event: object) -> str:
    """
    Never runs in a crashing child.
    """
    return "imported"


class Poison(NamedTuple):
    """
    An event type: a child rebuilding it imports this module, and dies.
    """

    n: int
