"""
docs/api.rst, the curated API reference, names every public name, so that a
name added to C{actordispatch.__all__} cannot go undocumented.
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import actordispatch

API_PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.rst"


class APIPageTests(SynchronousTestCase):
    def test_every_public_name_is_listed(self) -> None:
        """
        Each name in C{actordispatch.__all__} has a C{:py:obj:} entry in
        docs/api.rst (which links it to the pydoctor reference).
        """
        listed = set(
            re.findall(r":py:obj:`actordispatch\.(\w+)`", API_PAGE.read_text())
        )
        missing = sorted(set(actordispatch.__all__) - listed)
        self.assertEqual(missing, [], f"add these to {API_PAGE}")
