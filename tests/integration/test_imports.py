"""
What importing the package costs an application and a child: library code
never imports the global reactor (an application installs the reactor of its
choice after importing us), the package's names are imported only when used,
and a child imports only the child side.  Each check runs in a fresh
interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from twisted.trial.unittest import TestCase

import actordispatch

PACKAGE = Path(actordispatch.__file__).resolve().parent


def modules_of(*layers: str) -> tuple[str, ...]:
    """
    The dotted names of every module of the given layer subpackages of
    actordispatch (C{"_local"}, ...), read from the source tree, so that a
    module added to a layer is checked without anyone listing it.
    """
    names = []
    for layer in layers:
        folder = PACKAGE / layer
        for path in sorted(folder.glob("*.py")):
            stem = "" if path.stem == "__init__" else f".{path.stem}"
            names.append(f"actordispatch.{layer}{stem}")
    return tuple(names)


def source_of(module: str) -> Path:
    """
    The source file of an actordispatch module (not imported).
    """
    path = PACKAGE.joinpath(*module.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


#: Modules of the parent side that a child must not import: every module of
#: the parent's layers, the seams, the fakes, and the registry (a child runs
#: handlers it is given, it never routes).  See docs/architecture.rst.
PARENT_SIDE = (
    *modules_of("_dispatch", "_local", "_external", "_amqp", "_service"),
    "actordispatch._core.registry",
    "actordispatch.interfaces",
    "actordispatch.testing",
)

#: What an application of the local pool alone never imports: the endpoint,
#: RabbitMQ, the service and their third-party libraries, and the reactor.
NOT_FOR_THE_LOCAL_POOL = (
    *modules_of("_external", "_amqp", "_service"),
    "pika",
    "prometheus_client",
    "twisted.internet.reactor",
)


def run_python(code: str) -> dict[str, object]:
    """
    Run C{code} in a fresh interpreter; it prints one JSON object last.
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


class ImportTests(TestCase):
    def test_no_reactor_no_extras(self) -> None:
        """
        Importing the package, then each public name, imports neither the
        global reactor nor pika, prometheus_client, the service, the
        configuration or the AMP endpoint, unless the name needs them; the
        package itself imports no private module at all.
        """
        found = run_python(
            """
            import json, sys
            import actordispatch
            bare = sorted(m for m in sys.modules if m.startswith("actordispatch."))
            seen = {}
            for name in actordispatch.__all__:
                getattr(actordispatch, name)
                seen[name] = {
                    "reactor": "twisted.internet.reactor" in sys.modules,
                    "pika": "pika" in sys.modules,
                    "prometheus": "prometheus_client" in sys.modules,
                    "service": "actordispatch._service.service" in sys.modules,
                    "config": "actordispatch._service.config" in sys.modules,
                    "endpoint": "actordispatch._external.server" in sys.modules,
                }
            print(json.dumps({"bare": bare, "seen": seen}))
            """
        )
        self.assertEqual(found["bare"], [])
        for name, flags in found["seen"].items():  # type: ignore[attr-defined]
            self.assertFalse(flags["reactor"], f"{name} imported the reactor")
        # What an application of the local pool imports, on its own.
        core = run_python(
            f"""
            import json, sys
            from actordispatch import (
                AmpoulePool, DispatchResult, EventDispatcher, In, Phase,
                SandboxProfile, Veto,
            )
            print(json.dumps(sorted(
                m for m in {list(NOT_FOR_THE_LOCAL_POOL)!r} if m in sys.modules
            )))
            """
        )
        self.assertEqual(core, [])

    def test_install_another_reactor_after_import(self) -> None:
        """
        An application that imports the dispatcher and then installs the
        asyncio reactor can do so, and runs a handler in a real child on it.
        """
        found = run_python(
            """
            import json
            from actordispatch import EventDispatcher
            from twisted.internet import asyncioreactor
            asyncioreactor.install()
            from twisted.internet import defer, task

            @defer.inlineCallbacks
            def main(reactor):
                d = EventDispatcher(("kind",), pool_size=1)
                yield d.add_event_handler("tests.integration.handlers:pid", "during")
                yield d.start()
                try:
                    result = yield d.fire_event({}, kind="x")
                finally:
                    yield d.stop()
                print(json.dumps({
                    "reactor": type(reactor).__name__,
                    "status": result.outcomes[0].status,
                }))

            task.react(main)
            """
        )
        self.assertEqual(found, {"reactor": "AsyncioSelectorReactor", "status": "ok"})

    def test_child_imports_only_the_child_side(self) -> None:
        """
        A child's host imports none of the parent side's modules.
        """
        found = run_python(
            """
            import json, sys
            import actordispatch.children.host
            print(json.dumps(sorted(
                m for m in sys.modules if m.startswith("actordispatch")
            )))
            """
        )
        imported = set(found)  # type: ignore[arg-type]
        self.assertEqual(imported & set(PARENT_SIDE), set())
        self.assertIn("actordispatch._wire.codec", imported)

    def test_lists_name_real_modules(self) -> None:
        """
        Every actordispatch module the lists above name exists, and each layer
        they cover has modules: a list of modules that were renamed or moved
        would make the checks above pass without testing anything.
        """
        named = [
            m
            for m in PARENT_SIDE + NOT_FOR_THE_LOCAL_POOL
            if m.startswith("actordispatch.")
        ]
        for layer in ("_dispatch", "_local", "_external", "_amqp", "_service"):
            self.assertIn(f"actordispatch.{layer}", named)
            self.assertGreater(len(modules_of(layer)), 1, layer)
        missing = [m for m in named if not source_of(m).is_file()]
        self.assertEqual(missing, [])
        for expected in (
            "actordispatch._dispatch.dispatcher",
            "actordispatch._local.pool",
            "actordispatch._external.server",
            "actordispatch._service.service",
            "actordispatch._amqp.pool",
        ):
            self.assertIn(expected, PARENT_SIDE)

    def test_public_names_listed(self) -> None:
        """
        dir() of the package lists every public name before any is imported.
        """
        self.assertLessEqual(set(actordispatch.__all__), set(dir(actordispatch)))
