"""
C{actordispatch sandbox-check}, run as a user runs it: a real child under the
profile tries the attacks, and the exit code says whether the profile holds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from twisted.internet import defer

from actordispatch._core.sandbox import SandboxProfile
from actordispatch._service.sandbox_check import ATTACKS, Attack, _verdict
from tests.integration.support import CLI, ProcessTestCase


class SandboxCheckTests(ProcessTestCase):
    """
    The verb prints the layers and the attacks, and fails when a layer the
    profile asks for is not in force.
    """

    timeout = 120

    @defer.inlineCallbacks
    def test_untrusted_here(self) -> Any:
        """
        On this machine (Linux with seccomp and Landlock) C{untrusted()} is
        honoured: every layer in force, every attack it must stop stopped, a
        child still allowed to signal itself; exit code 0.
        """
        run = self.spawn("-c", CLI, "sandbox-check", "--json")
        code = yield run.ended
        report = json.loads(run.output[run.output.index(b"{") :])
        self.assertEqual(code, 0, run.output.decode())
        self.assertTrue(report["honoured"])
        self.assertEqual(
            set(report["layers"]), set(SandboxProfile.untrusted().layer_names())
        )
        self.assertEqual(set(report["layers"].values()), {"in force"})
        verdicts = {row["attack"]: row["verdict"] for row in report["attacks"]}
        self.assertEqual(verdicts["open an inet socket"], "ok")
        self.assertEqual(verdicts["start a process"], "ok")
        self.assertEqual(verdicts["write outside the writable paths"], "ok")
        self.assertEqual(verdicts["signal itself"], "ok")

    @defer.inlineCallbacks
    def test_missing_layer_fails(self) -> Any:
        """
        Where libseccomp cannot be loaded (here: a C{pyseccomp} that fails to
        import, first on the children's path), the seccomp layers are reported
        missing, the inet socket is not stopped, and the exit code is 1.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        with open(os.path.join(directory, "pyseccomp.py"), "w") as module:
            module.write("raise ImportError('no libseccomp here')\n")
        env = dict(os.environ, PYTHONPATH=directory)
        run = self.spawn("-c", CLI, "sandbox-check", env=env)
        code = yield run.ended
        output = run.output.decode()
        self.assertEqual(code, 1, output)
        self.assertIn("seccomp:network", output)
        self.assertIn("unavailable", output)
        self.assertIn("NOT STOPPED", output)
        self.assertIn("NOT honoured", output)

    @defer.inlineCallbacks
    def test_pool_of_a_config(self) -> Any:
        """
        With C{--config}, the profile is the pool's C{sandbox} table; a pool
        that does not exist is a usage error (exit 2).
        """
        path = self.write_config(
            "[dispatcher]\nkeywords = []\n[pools.default]\nsize = 1\n"
            "sandbox = { deny_network = true }\n"
        )
        run = self.spawn("-c", CLI, "sandbox-check", "--config", path, "--json")
        code = yield run.ended
        self.assertEqual(code, 0, run.output.decode())
        report = json.loads(run.output[run.output.index(b"{") :])
        self.assertIn("seccomp:network", report["layers"])
        self.assertNotIn("seccomp:exec", report["layers"])
        missing = self.spawn(
            "-c", CLI, "sandbox-check", "--config", path, "--pool", "nope"
        )
        code = yield missing.ended
        self.assertEqual(code, 2)
        self.assertIn(b"no local pool 'nope'", missing.output)


class VerdictTests(ProcessTestCase):
    """
    How a result becomes a verdict.
    """

    def test_verdicts(self) -> None:
        """
        An attack the profile must stop is "ok" when blocked and "NOT STOPPED"
        when allowed; one it need not stop is "stopped" or "not asked"; one
        that must stay allowed is "BROKEN" when blocked.
        """
        strict = SandboxProfile.untrusted()
        loose = SandboxProfile()
        network = next(a for a in ATTACKS if a.name == "open an inet socket")
        self.assertEqual(_verdict(network, strict, "blocked (EPERM)"), "ok")
        self.assertEqual(_verdict(network, strict, "ALLOWED"), "NOT STOPPED")
        self.assertEqual(_verdict(network, loose, "ALLOWED"), "not asked")
        self.assertEqual(_verdict(network, loose, "blocked (EPERM)"), "stopped")
        itself = Attack("signal itself", "", lambda p: None)
        self.assertEqual(_verdict(itself, strict, "ALLOWED"), "ok")
        self.assertEqual(_verdict(itself, strict, "blocked (EPERM)"), "BROKEN")
