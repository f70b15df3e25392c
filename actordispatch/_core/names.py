"""
The form of a handler's name, which the registry, the wire, the children and
the configuration all check.
"""

from __future__ import annotations

import re

__all__ = ["HANDLER_NAME"]

#: The form of a handler name, as the C{handler} arguments carry it: a dotted
#: module path, a colon, a dotted attribute path (C{"myapp.handlers:notify"}).
HANDLER_NAME = re.compile(
    r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z"
)
