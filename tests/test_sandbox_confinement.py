"""
Tests for the sandbox layers that keep a hostile handler away from other
processes: C{drop_capabilities}, C{hide_processes}, C{confine_signals} and
C{socket_families} (L{actordispatch.children.sandbox}).

As in L{tests.test_sandbox}, each layer is applied in a real child process,
which then tries what the layer forbids and reports what happened.  Every
signal a child sends here is harmless (signal 0, which only checks, or
SIGCONT), so a layer that does not hold fails the test without hurting
anything.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from actordispatch._core.sandbox import SandboxProfile
from actordispatch.children import sandbox
from actordispatch.children.sandbox import requested_layers
from tests.test_sandbox import LANDLOCK_PROBLEM, SECCOMP_PROBLEM, run_child


def _scope_problem() -> str | None:
    if LANDLOCK_PROBLEM is not None:
        return LANDLOCK_PROBLEM
    abi = sandbox._landlock_abi()
    if abi < 6:
        return f"Landlock scoping needs ABI 6; this kernel has {abi}"
    return None


SCOPE_PROBLEM = _scope_problem()
ROOT_PROBLEM = None if os.geteuid() == 0 else "needs the tests to run as root"

#: Run in the child before the probes: C{attempt(name, action)} stores "ok"
#: or the errno name in C{probe}; C{raw(number, *args)} makes a system call
#: with arguments as given, high bits and all.
_HELPERS = textwrap.dedent(
    """
    import ctypes, signal
    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.syscall.restype = ctypes.c_long
    def attempt(name, action):
        try:
            action()
            probe[name] = "ok"
        except OSError as e:
            probe[name] = errno.errorcode[e.errno]
    def raw(number, *arguments):
        ctypes.set_errno(0)
        result = _libc.syscall(
            ctypes.c_long(number), *[ctypes.c_long(a) for a in arguments]
        )
        if result == -1:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return result
    def read(path):
        with open(path, "rb") as f:
            return f.read()
    """
)


def _sleeper(case: SynchronousTestCase) -> int:
    """
    Start a process unrelated to the child (a sibling of it, as the other
    children of a pool are), in a session of its own; stop it at the end.
    """
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
    )
    case.addCleanup(sleeper.wait, 10)
    case.addCleanup(sleeper.kill)
    return sleeper.pid


def _run(config: dict[str, Any], probe: str, **options: Any) -> dict[str, Any]:
    return run_child(config, probe=_HELPERS + probe, **options)


class CapabilityTests(SynchronousTestCase):
    """
    C{drop_capabilities} leaves the child no capability, even as root.
    """

    _PROBE = textwrap.dedent(
        """
        for line in read("/proc/self/status").decode().splitlines():
            if line.startswith("Cap"):
                name, value = line.split(":")
                probe[name] = int(value, 16)
        attempt("setuid(1)", lambda: os.setuid(1))
        attempt("chown", lambda: os.chown(PATH, 1, 1))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard + 1))
            probe["raise hard limit"] = "ok"
        except ValueError:  # how Python reports EPERM here
            probe["raise hard limit"] = "refused"
        """
    )

    def _probe(self) -> str:
        handle, path = tempfile.mkstemp()
        os.close(handle)
        self.addCleanup(os.unlink, path)
        return f"PATH = {path!r}\n" + self._PROBE

    def test_root_keeps_nothing(self) -> None:
        """
        A child that stays root (no uid given) holds no capability in any set,
        the bounding set included, so it cannot change user, chown a file, or
        raise a hard limit again.
        """
        if ROOT_PROBLEM:
            raise self.skipTest(ROOT_PROBLEM)
        result = _run(
            {"drop_capabilities": True, "rlimits": {"open_files": 128}},
            self._probe(),
        )
        self.assertEqual(
            result["applied"],
            {"rlimit:open_files": "applied", "drop_capabilities": "applied"},
        )
        probe = result["probe"]
        for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            self.assertEqual(probe[name], 0, name)
        self.assertEqual(probe["setuid(1)"], "EPERM")
        self.assertEqual(probe["chown"], "EPERM")
        self.assertEqual(probe["raise hard limit"], "refused")
        self.assertEqual(result["state"]["uid"], 0)
        self.assertTrue(result["state"]["no_new_privs"])

    def test_after_dropping_the_user(self) -> None:
        """
        With a uid, the capabilities are dropped after the user is, so both
        layers are applied.
        """
        if ROOT_PROBLEM:
            raise self.skipTest(ROOT_PROBLEM)
        result = _run({"uid": 65534, "gid": 65534, "drop_capabilities": True}, "pass")
        self.assertEqual(
            result["applied"],
            {"drop_privileges": "applied", "drop_capabilities": "applied"},
        )
        self.assertEqual(result["state"]["euid"], 65534)

    def test_not_root(self) -> None:
        """
        As another user, with no CAP_SETPCAP to empty the bounding set, the
        layer is still applied: nothing is held, and no_new_privs keeps
        C{execve} from granting anything.  (When the tests run as root the
        child first makes itself another user, which leaves it nothing.)
        """
        before = ""
        if os.geteuid() == 0:
            before = "os.setgroups([]); os.setgid(65534); os.setuid(65534)"
        result = _run({"drop_capabilities": True}, self._probe(), before=before)
        self.assertEqual(result["applied"], {"drop_capabilities": "applied"})
        for name in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
            self.assertEqual(result["probe"][name], 0, name)
        self.assertTrue(result["state"]["no_new_privs"])

    def test_invalid(self) -> None:
        """
        A value that is not C{true} fails the layer instead of passing as not
        asked for.
        """
        report = run_child({"drop_capabilities": "yes"})["applied"]
        self.assertEqual(
            report,
            {"drop_capabilities": "failed: drop_capabilities must be true or false"},
        )


class SignalTests(SynchronousTestCase):
    """
    C{confine_signals}: the child may signal itself and nobody else, and may
    not undo its parent-death signal.
    """

    skip = SECCOMP_PROBLEM or SCOPE_PROBLEM

    _PROBE = textwrap.dedent(
        """
        parent = os.getppid()
        me = os.getpid()
        attempt("kill parent 0", lambda: os.kill(parent, 0))
        attempt("kill parent SIGCONT", lambda: os.kill(parent, signal.SIGCONT))
        attempt("kill other", lambda: os.kill(OTHER, 0))
        attempt("kill 1", lambda: os.kill(1, 0))
        attempt("kill 0", lambda: os.kill(0, 0))
        attempt("kill -1", lambda: os.kill(-1, 0))
        attempt("killpg", lambda: os.killpg(os.getpgid(0), 0))
        attempt("tgkill parent", lambda: raw(234, parent, parent, 0))
        attempt("tkill parent", lambda: raw(200, parent, 0))
        attempt("rt_sigqueueinfo parent", lambda: raw(129, parent, 0, 0))
        attempt("rt_tgsigqueueinfo parent", lambda: raw(297, parent, parent, 0, 0))
        attempt("pidfd_send_signal", lambda: raw(424, 0, 0, 0, 0))
        attempt("kill parent high bits", lambda: raw(62, parent | 1 << 32, 0))
        attempt("F_SETOWN parent", lambda: raw(72, 1, 8, parent))
        got = []
        signal.signal(signal.SIGUSR1, lambda number, frame: got.append(number))
        attempt("kill self", lambda: os.kill(me, signal.SIGUSR1))
        attempt(
            "pthread_kill self",
            lambda: signal.pthread_kill(threading.get_ident(), signal.SIGUSR1),
        )
        attempt("raise_signal", lambda: signal.raise_signal(signal.SIGUSR1))
        probe["handled"] = len(got)
        attempt("clear pdeathsig", lambda: raw(157, 1, 0))
        attempt("clear pdeathsig high bits", lambda: raw(157, 1 | 1 << 32, 0))
        attempt("setsid", os.setsid)
        attempt("setpgid", lambda: os.setpgid(0, 0))
        """
    )

    def _probe(self) -> str:
        if os.uname().machine != "x86_64":
            raise self.skipTest("the raw system call numbers are x86-64 ones")
        return f"OTHER = {_sleeper(self)}\n" + self._PROBE

    def test_only_itself(self) -> None:
        """
        Signalling the parent, an unrelated process, init, the process group
        or everyone is refused with C{EPERM}, by every system call that sends
        signals (and with junk in the high bits of the pid); signals to itself
        and its own threads arrive; the parent-death signal cannot be cleared
        and the child cannot leave its session or process group.
        """
        result = _run(
            {
                "confine_signals": True,
                "parent_death_signal": signal.SIGKILL,
                "parent_pid": os.getpid(),
            },
            self._probe(),
        )
        self.assertEqual(
            result["applied"],
            {"parent_death_signal": "applied", "confine_signals": "applied"},
        )
        probe = result["probe"]
        handled = probe.pop("handled")
        self.assertEqual(
            probe,
            {
                "kill parent 0": "EPERM",
                "kill parent SIGCONT": "EPERM",
                "kill other": "EPERM",
                "kill 1": "EPERM",
                "kill 0": "EPERM",
                "kill -1": "EPERM",
                "killpg": "EPERM",
                "tgkill parent": "EPERM",
                "tkill parent": "EPERM",
                "rt_sigqueueinfo parent": "EPERM",
                "rt_tgsigqueueinfo parent": "EPERM",
                "pidfd_send_signal": "EPERM",
                "kill parent high bits": "EPERM",
                "F_SETOWN parent": "EPERM",
                "kill self": "ok",
                "pthread_kill self": "ok",
                "raise_signal": "ok",
                "clear pdeathsig": "EPERM",
                "clear pdeathsig high bits": "EPERM",
                "setsid": "EPERM",
                "setpgid": "EPERM",
            },
        )
        self.assertEqual(handled, 3)
        self.assertEqual(result["state"]["parent_death_signal"], signal.SIGKILL)

    def test_landlock_alone(self) -> None:
        """
        Without libseccomp the Landlock half still refuses a signal to the
        parent or an unrelated process, and the layer is reported unavailable,
        saying which half is in force.
        """
        result = _run(
            {"confine_signals": True},
            self._probe(),
            before="sys.modules['pyseccomp'] = None",
        )
        status = result["applied"]["confine_signals"]
        self.assertRegex(status, "^unavailable: only the Landlock scope")
        self.assertIn("pyseccomp", status)
        self.assertEqual(result["probe"]["kill parent SIGCONT"], "EPERM")
        self.assertEqual(result["probe"]["kill other"], "EPERM")
        self.assertEqual(result["probe"]["kill self"], "ok")

    def test_sigterm_still_stops_twisted(self) -> None:
        """
        Under the whole untrusted profile a Twisted reactor in the child still
        stops cleanly on the parent's SIGTERM: Twisted's own signal handling
        only ever signals the child itself.
        """
        config = SandboxProfile.untrusted().to_child_config(os.getpid())
        program = textwrap.dedent(
            """
            import json, sys
            from actordispatch.children.sandbox import apply_sandbox
            report = apply_sandbox(json.loads(sys.argv[1]))
            from twisted.internet import reactor
            reactor.callWhenRunning(print, json.dumps(report), flush=True)
            reactor.run()
            print("stopped", flush=True)
            """
        )
        child = subprocess.Popen(
            [sys.executable, "-c", program, json.dumps(config)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.addCleanup(child.wait, 10)
        self.addCleanup(child.kill)
        assert child.stdout is not None
        self.addCleanup(child.stdout.close)
        report = json.loads(child.stdout.readline())
        self.assertEqual(
            [name for name, status in report.items() if status != "applied"], []
        )
        # The report is printed after startup: the handlers are installed.
        child.send_signal(signal.SIGTERM)
        self.assertEqual(child.wait(30), 0)
        self.assertEqual(child.stdout.read(), "stopped\n")


class SocketTests(SynchronousTestCase):
    """
    C{socket_families}: no socket of a family not allowed, UNIX ones included.
    """

    skip = SECCOMP_PROBLEM or SCOPE_PROBLEM

    _PROBE = textwrap.dedent(
        """
        for family in ("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"):
            attempt(family, lambda: socket.socket(getattr(socket, family)).close())
        attempt("socketpair", lambda: [s.close() for s in socket.socketpair()])
        attempt("AF_INET high bits", lambda: os.close(raw(41, 2 | 1 << 32, 1, 0)))
        def connect(address):
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(address)
        attempt("connect path", lambda: connect(PATH))
        attempt("connect abstract", lambda: connect(ABSTRACT))
        """
    )

    def _probe(self) -> str:
        if os.uname().machine != "x86_64":
            raise self.skipTest("the raw system call numbers are x86-64 ones")
        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        path = os.path.join(directory, "endpoint")
        abstract = f"\0actordispatch-test-{os.getpid()}-{id(self)}"
        for address in (path, abstract):
            server = socket.socket(socket.AF_UNIX)
            self.addCleanup(server.close)
            server.bind(address)
            server.listen(5)
        self.addCleanup(os.unlink, path)
        return f"PATH = {path!r}; ABSTRACT = {abstract!r}\n" + self._PROBE

    def test_no_sockets(self) -> None:
        """
        With no family allowed, every socket fails with C{EPERM}: UNIX,
        network, netlink and packet ones, socket pairs, and a family with junk
        in the high bits; so nothing can connect to a UNIX socket either.
        """
        result = _run({"socket_families": []}, self._probe())
        self.assertEqual(result["applied"], {"socket_families": "applied"})
        self.assertEqual(
            result["probe"],
            {
                "AF_UNIX": "EPERM",
                "AF_INET": "EPERM",
                "AF_INET6": "EPERM",
                "AF_NETLINK": "EPERM",
                "AF_PACKET": "EPERM",
                "socketpair": "EPERM",
                "AF_INET high bits": "EPERM",
                "connect path": "EPERM",
                "connect abstract": "EPERM",
            },
        )
        self.assertTrue(result["state"]["inet_socket_denied"])

    def test_unix_allowed(self) -> None:
        """
        With only C{AF_UNIX} allowed, UNIX sockets and pairs work and connect
        to a socket by path, but not to an abstract socket outside the
        sandbox (Landlock); every other family fails, high bits or not.
        """
        result = _run({"socket_families": [socket.AF_UNIX]}, self._probe())
        self.assertEqual(result["applied"], {"socket_families": "applied"})
        self.assertEqual(
            result["probe"],
            {
                "AF_UNIX": "ok",
                "AF_INET": "EPERM",
                "AF_INET6": "EPERM",
                "AF_NETLINK": "EPERM",
                "AF_PACKET": "EPERM",
                "socketpair": "ok",
                "AF_INET high bits": "EPERM",
                "connect path": "ok",
                "connect abstract": "EPERM",
            },
        )

    def test_invalid(self) -> None:
        """
        Families that are not a list of small integers fail the layer.
        """
        for families in ("AF_UNIX", [1, 99], [True]):
            report = run_child({"socket_families": families})["applied"]
            self.assertRegex(report["socket_families"], "^failed: socket_families")


class HideProcessesTests(SynchronousTestCase):
    """
    C{hide_processes}: another process's C{/proc} entries cannot be read.
    """

    skip = LANDLOCK_PROBLEM

    _PROBE = textwrap.dedent(
        """
        parent = os.getppid()
        for victim, pid in (("parent", parent), ("other", OTHER)):
            for entry in ("environ", "cmdline", "maps", "status"):
                attempt(f"{victim} {entry}", lambda: read(f"/proc/{pid}/{entry}"))
            attempt(f"{victim} fd", lambda: os.listdir(f"/proc/{pid}/fd"))
        probe["listed"] = sorted(
            int(name) for name in os.listdir("/proc") if name.isdigit()
        )
        try:
            probe["own environ"] = b"SECRET_TOKEN" in read("/proc/self/environ")
        except OSError as e:  # not dumpable once it changed user
            probe["own environ"] = errno.errorcode[e.errno]
        """
    )

    def test_parent_and_others_hidden(self) -> None:
        """
        A root child (no uid given, capabilities dropped) can read neither the
        parent's nor an unrelated process's environ, cmdline, maps, status or
        descriptors, and sees only itself in C{/proc}; its own entries work.
        """
        if ROOT_PROBLEM:
            raise self.skipTest(ROOT_PROBLEM)
        result = _run(
            {"drop_capabilities": True, "hide_processes": True},
            f"OTHER = {_sleeper(self)}\n" + self._PROBE,
            env={**os.environ, "SECRET_TOKEN": "s3cret"},
        )
        self.assertEqual(
            result["applied"],
            {"drop_capabilities": "applied", "hide_processes": "applied"},
        )
        probe = result["probe"]
        listed = probe.pop("listed")
        self.assertTrue(probe.pop("own environ"))
        for name, outcome in probe.items():
            self.assertIn(outcome, ("ENOENT", "EACCES", "EPERM"), name)
        self.assertEqual(len(listed), 1)

    def test_not_root(self) -> None:
        """
        Without CAP_SYS_ADMIN there is no private C{/proc}: the layer says so,
        unavailable; the Landlock half still keeps the parent's environ
        unreadable.
        """
        before = "os.setgroups([]); os.setgid(65534); os.setuid(65534)"
        if os.geteuid() != 0:
            before = ""
        result = _run(
            {"hide_processes": True},
            "OTHER = 1\n" + self._PROBE,
            before=before,
        )
        self.assertRegex(
            result["applied"]["hide_processes"], "^unavailable: .*CAP_SYS_ADMIN"
        )
        self.assertIn(result["probe"]["parent environ"], ("EACCES", "EPERM"))


class ProfileTests(SynchronousTestCase):
    """
    The profile fields of the new layers.
    """

    def test_layers_match_report(self) -> None:
        """
        Each new field names its layer, as the child reports it, and only when
        asked for.
        """
        profiles = [
            SandboxProfile(drop_capabilities=True),
            SandboxProfile(hide_processes=True, confine_signals=True),
            SandboxProfile(allowed_socket_families=()),
            SandboxProfile.untrusted(allowed_socket_families=None),
        ]
        for profile in profiles:
            config = profile.to_child_config(1)
            self.assertEqual(list(profile.layer_names()), requested_layers(config))
        self.assertNotIn("socket_families", profiles[3].layer_names())
        self.assertIn("socket_families", SandboxProfile.untrusted().layer_names())

    def test_socket_families(self) -> None:
        """
        Families may be numbers, members of C{socket.AddressFamily} or their
        names, and travel as sorted numbers; anything else is a C{ValueError}.
        """
        profile = SandboxProfile(
            allowed_socket_families=["AF_INET", socket.AF_UNIX, socket.AF_INET]
        )
        self.assertEqual(
            profile.allowed_socket_families, (socket.AF_UNIX, socket.AF_INET)
        )
        self.assertEqual(profile.to_child_config(1)["socket_families"], [1, 2])
        for bad in ("AF_UNIX", ["AF_NOPE"], ["SOCK_STREAM"], [True], [64], 1):
            self.assertRaises(ValueError, SandboxProfile, allowed_socket_families=bad)
        for flag in ("drop_capabilities", "hide_processes", "confine_signals"):
            self.assertRaises(ValueError, SandboxProfile, **{flag: 1})
