"""
C{python -m actordispatch}: the same command line as C{actordispatch}.
"""

import sys

from actordispatch._service.cli import main

sys.exit(main())
