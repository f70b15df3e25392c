"""
The pydoctor system that builds the API reference (see C{pydoctor_args} in
C{docs/conf.py}).

Two differences from pydoctor's default system:

  - A public name re-exported by a package's C{__all__} from a private module
    is documented under the package (C{actordispatch.AmpoulePool}), even when
    the private module lists it in its own C{__all__} too.  pydoctor leaves
    such names in the private module, which would document
    C{actordispatch._local.pool.AmpoulePool}, a path users must never import.
  - The command line and the twistd plugin glue are not library API: they are
    documented in C{docs/howto-twistd.rst} and by C{actordispatch --help}.
"""

from __future__ import annotations

import ast
from pathlib import Path

from pydoctor import model
from pydoctor.extensions import ExtRegistrar, ModuleVisitorExt

#: Modules left out of the reference: entry points, not API.
NOT_API = frozenset({"actordispatch._service.cli", "actordispatch._service.tap"})


def _is_private(full_name: str) -> bool:
    return any(part.startswith("_") for part in full_name.split("."))


class _PrivateModulesDoNotKeepExports(ModuleVisitorExt):
    """
    Forget the C{__all__} of private modules once they are read, so that a
    package listing one of their names in its own C{__all__} documents it.
    """

    def depart_Module(self, node: ast.Module) -> None:
        module = self.visitor.module
        if _is_private(module.fullName()):
            module.all = None


def setup_pydoctor_extension(registrar: ExtRegistrar) -> None:
    """
    Register the visitor above (pydoctor calls this for C{custom_extensions}).
    """
    registrar.register_astbuilder_visitor(_PrivateModulesDoNotKeepExports)


class ActorDispatchSystem(model.System):
    """
    pydoctor's system with the extension above, leaving out L{NOT_API}.
    """

    custom_extensions = ["pydoctor_system"]

    def addModule(self, path: Path, parent: model.Package | None) -> None:
        if parent is not None and f"{parent.fullName()}.{path.stem}" in NOT_API:
            return
        super().addModule(path, parent)
