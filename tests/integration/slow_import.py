"""
A handler module that takes two seconds to import: an invocation that pays for
the import cannot be mistaken for one that does not, however busy the machine.
"""

import os
import time

time.sleep(2.0)


def handler(event: object) -> int:
    """
    Return the child's pid.
    """
    return os.getpid()
