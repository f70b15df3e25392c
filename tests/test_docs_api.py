"""
docs/api.rst, the curated API reference, names every public name, so that a
name added to C{actordispatch.__all__} cannot go undocumented; and the pydoctor
reference documents the child side under its installed name.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from unittest import SkipTest

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


class InstalledNamesTests(SynchronousTestCase):
    def test_children_documented_as_installed(self) -> None:
        """
        The pydoctor system reads setup.cfg's C{package_dir}: the top-level
        C{children/} folder is documented as C{actordispatch.children}, the name
        code imports and docstrings link to.
        """
        try:
            import pydoctor  # noqa: F401
        except ImportError:
            raise SkipTest("pydoctor is in the docs extra") from None
        sys.path.insert(0, str(API_PAGE.parent))
        try:
            import pydoctor_system
        finally:
            sys.path.remove(str(API_PAGE.parent))
        root = API_PAGE.parents[1]
        self.assertEqual(
            pydoctor_system.installed_names(root / "setup.cfg"),
            {root / "children": "actordispatch.children"},
        )
