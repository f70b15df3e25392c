"""
Sphinx configuration of the actordispatch documentation.

Build it as tox does (warnings are errors)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

The API reference under C{reference/} is made by pydoctor, which reads the
code's epytext docstrings, during the same build (C{pydoctor_args} below); the
pages link into it through its intersphinx inventory.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# pydoctor_system (the --system-class below) lives beside this file.
sys.path.insert(0, str(DOCS))

project = "actordispatch"
author = "the actordispatch authors"
copyright = "the actordispatch authors"
try:
    release = metadata.version("actordispatch")
except metadata.PackageNotFoundError:  # a checkout that was not installed
    release = "0+unknown"
version = release

extensions = [
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "pydoctor.sphinx_ext.build_apidocs",
]

exclude_patterns = ["_build"]
# Every :py: reference must resolve (to the pydoctor reference).
nitpicky = True

html_theme = "furo"
html_title = f"actordispatch {release}"

# -- API reference: pydoctor --------------------------------------------------

# Filled in by pydoctor.sphinx_ext.build_apidocs with the inventory of the
# pydoctor run below; no other project's inventory is fetched (builds must not
# need the network).
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

pydoctor_url_path = "reference/"
pydoctor_args = [
    "--project-name=actordispatch",
    f"--project-version={release}",
    "--project-url=../index.html",
    f"--project-base-dir={ROOT}",
    "--docformat=epytext",
    "--system-class=pydoctor_system.ActorDispatchSystem",
    "--html-output={outdir}/reference",
    str(ROOT / "actordispatch"),
    # Documented as actordispatch.children, the name setup.cfg installs it
    # under (see pydoctor_system); it must come after actordispatch.
    str(ROOT / "children"),
]

# -- doctest builder ----------------------------------------------------------

# The tutorial runs real child processes; its own flags are in the file, so
# that ``python -m doctest docs/tutorial.rst`` behaves the same.
doctest_test_doctest_blocks = "default"
