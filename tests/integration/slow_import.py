"""
A handler module that takes half a second to import.
"""

import os
import time

time.sleep(0.5)


def handler(event: object) -> int:
    """
    Return the child's pid.
    """
    return os.getpid()
