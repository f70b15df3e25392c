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
  - A source folder that C{setup.cfg} installs under another name (its
    C{package_dir}: the top-level C{children/} folder is installed as
    C{actordispatch.children}) is documented under its installed name, the
    one code and docstrings import and link to.
"""

from __future__ import annotations

import ast
import configparser
from pathlib import Path

from pydoctor import model
from pydoctor.extensions import ExtRegistrar, ModuleVisitorExt

#: Modules left out of the reference: entry points, not API.
NOT_API = frozenset({"actordispatch._service.cli", "actordispatch._service.tap"})

ROOT = Path(__file__).resolve().parent.parent


def installed_names(setup_cfg: Path = ROOT / "setup.cfg") -> dict[Path, str]:
    """
    Read C{package_dir} from C{setup.cfg}: the source folders installed under
    another name.

    @return: each such folder (absolute) and the dotted name it is installed as.
    """
    config = configparser.ConfigParser()
    config.read(setup_cfg)
    names = {}
    for line in config.get("options", "package_dir", fallback="").splitlines():
        if "=" not in line:
            continue
        name, folder = (part.strip() for part in line.split("=", 1))
        if name:  # "= src" (the root moved) is not used here
            names[(setup_cfg.parent / folder).resolve()] = name
    return names


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


class _InstalledNamesBuilder(model.SystemBuilder):
    """
    Add a source folder named in L{installed_names} under its installed
    parent package, so that C{children/} becomes C{actordispatch.children}.
    The parent must be given first on the command line.
    """

    def addModule(self, path: Path, parent_name: str | None = None) -> None:
        installed = installed_names().get(path.resolve())
        if parent_name is None and installed is not None:
            parent_name, _, name = installed.rpartition(".")
            if name != path.name:
                raise model.SystemBuildingError(
                    f"{path} is installed as {installed}; pydoctor names a"
                    f" package after its folder, so it would document"
                    f" {parent_name}.{path.name}"
                )
            if parent_name not in self.system.allobjects:
                raise model.SystemBuildingError(
                    f"{path} is installed as {installed}: give {parent_name}"
                    " before it in the pydoctor arguments"
                )
        super().addModule(path, parent_name or None)


class ActorDispatchSystem(model.System):
    """
    pydoctor's system with the extension above, leaving out L{NOT_API} and
    naming folders as they are installed (L{installed_names}).
    """

    custom_extensions = ["pydoctor_system"]
    systemBuilder = _InstalledNamesBuilder

    def addModule(self, path: Path, parent: model.Package | None) -> None:
        if parent is not None and f"{parent.fullName()}.{path.stem}" in NOT_API:
            return
        super().addModule(path, parent)
