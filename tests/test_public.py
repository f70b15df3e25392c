"""
The front door: actordispatch's public names are its private modules' objects.
"""

from __future__ import annotations

import importlib
import types

from twisted.trial.unittest import SynchronousTestCase

import actordispatch


class PublicNamesTests(SynchronousTestCase):
    def test_all_names_exist(self) -> None:
        """
        Every name in __all__ exists, and __all__ has no duplicates.
        """
        self.assertEqual(len(set(actordispatch.__all__)), len(actordispatch.__all__))
        for name in actordispatch.__all__:
            self.assertTrue(hasattr(actordispatch, name), name)

    def test_names_are_the_private_ones(self) -> None:
        """
        Each public class or function is defined in a private module of the
        package, and is the very object found there.
        """
        for name in actordispatch.__all__:
            obj = getattr(actordispatch, name)
            if not isinstance(obj, (type, types.FunctionType)):
                continue  # constants and type aliases
            module_name = obj.__module__
            self.assertTrue(
                module_name.startswith("actordispatch._"), f"{name}: {module_name}"
            )
            module = importlib.import_module(module_name)
            self.assertIs(getattr(module, name), obj)

    def test_init_only_reexports(self) -> None:
        """
        The package's __init__ defines nothing of its own.
        """
        for name in dir(actordispatch):
            if name in ("__getattr__", "__dir__"):
                continue  # the lazy import of the public names
            obj = getattr(actordispatch, name)
            if hasattr(obj, "__module__") and callable(obj):
                self.assertNotEqual(obj.__module__, "actordispatch", name)
