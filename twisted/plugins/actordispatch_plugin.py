"""
The twistd/twist plugin: C{twist actordispatch --config dispatcher.toml}.

(This directory has no C{__init__.py}, as Twisted's plugin system requires.)
"""

from twisted.application.service import ServiceMaker

actordispatch = ServiceMaker(
    "actordispatch",
    "actordispatch._service.tap",
    "An event dispatcher whose handlers run in isolated child processes.",
    "actordispatch",
)
