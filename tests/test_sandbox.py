"""
Tests for the sandbox layers of a child (L{actordispatch.children.sandbox}) and the
parent's description of them (L{actordispatch._core.sandbox}).

Each layer is checked from inside a real child process, from what the process
reads about itself (L{actordispatch.children.sandbox.describe_sandbox}) and from
what it can and cannot do afterwards: a sandbox that only reports itself applied proves
nothing.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from actordispatch._core.sandbox import SandboxProfile, missing_layers
from actordispatch.children import sandbox
from actordispatch.children.sandbox import apply_sandbox, requested_layers

#: Run in the child: apply the configuration in argv[1], then run the probe in
#: argv[2], which may store what it saw in C{probe}, then print everything.
#: What the probes need is imported first: a child that dropped to another user
#: may no longer be able to read the standard library.
_CHILD = textwrap.dedent(
    """
    import errno, json, os, resource, socket, subprocess, sys, threading
    from actordispatch.children.sandbox import apply_sandbox, describe_sandbox
    exec(sys.argv[3])
    applied = apply_sandbox(json.loads(sys.argv[1]))
    probe = {}
    exec(sys.argv[2])
    print(json.dumps({"applied": applied, "state": describe_sandbox(), "probe": probe}))
    """
)

#: What a status in a report may look like.
_STATUS = re.compile(r"applied|(failed|unavailable): \S.*")


def _seccomp_problem() -> str | None:
    try:
        import pyseccomp  # noqa: F401
    except Exception as error:
        return f"libseccomp cannot be used here ({error}); pip install pyseccomp"
    return None


def _landlock_problem() -> str | None:
    try:
        sandbox._landlock_abi()
    except Exception as error:
        return str(error)
    return None


SECCOMP_PROBLEM = _seccomp_problem()
LANDLOCK_PROBLEM = _landlock_problem()


def run_child(
    config: dict[str, Any],
    probe: str = "",
    before: str = "",
    timeout: float = 10,
    **options: Any,
) -> dict[str, Any]:
    """
    Run a child that applies C{config}, runs C{probe} (and C{before}, before
    the sandbox), and return what it printed, failing if it did not exit 0.
    """
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(config), probe, before],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        text=True,
        **options,
    )
    if completed.returncode != 0:
        raise AssertionError(
            f"child exited {completed.returncode}: {completed.stderr[-2000:]}"
        )
    result: dict[str, Any] = json.loads(completed.stdout.splitlines()[-1])
    return result


def _is_dead(pid: int) -> bool:
    """
    Whether a process (not our child, so we cannot wait for it) has ended: gone,
    or a zombie its new parent has not reaped yet.
    """
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


class ReportTests(SynchronousTestCase):
    """
    The report of L{apply_sandbox} names every layer asked for, and only those.
    """

    def test_nothing_requested(self) -> None:
        """
        An empty configuration applies nothing and reports nothing.
        """
        self.assertEqual(apply_sandbox({}), {})
        self.assertEqual(requested_layers({}), [])

    def test_every_requested_layer_is_reported(self) -> None:
        """
        With every option set, and some unknown ones, each requested layer
        appears in the report with C{applied} or a reason, in the order of
        L{requested_layers}; an unknown option or limit is a failure, never
        ignored.
        """
        root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, root)
        config = SandboxProfile.untrusted(
            cpu_seconds=60, uid=65534, gid=65534, writable_paths=[root]
        ).to_child_config(os.getpid())
        config["rlimits"]["stack_size"] = 1
        config["sparkles"] = True
        report = run_child(config)["applied"]
        self.assertEqual(list(report), requested_layers(config))
        for name, status in report.items():
            self.assertRegex(status, _STATUS, name)
        self.assertEqual(report["sparkles"], "failed: unknown sandbox option")
        self.assertEqual(report["rlimit:stack_size"], "failed: unknown limit")
        self.assertEqual(report["rlimit:address_space"], "applied")

    def test_profile_layers_match_report(self) -> None:
        """
        L{SandboxProfile.layer_names} names the layers the child reports for
        that profile, so the parent can tell a layer the report left out.
        """
        profiles = [
            SandboxProfile(),
            SandboxProfile.untrusted(),
            SandboxProfile(core_dumps=True, parent_death_signal=None),
            SandboxProfile(uid=1, gid=2, cpu_seconds=3, writable_paths=["/tmp"]),
        ]
        for profile in profiles:
            config = profile.to_child_config(1)
            self.assertEqual(list(profile.layer_names()), requested_layers(config))

    def test_seccomp_unavailable(self) -> None:
        """
        Without pyseccomp the seccomp layers are reported unavailable, saying
        what to install, and the other layers are applied all the same.
        """
        result = run_child(
            {"deny_network": True, "deny_exec": True, "no_new_privs": True},
            before="sys.modules['pyseccomp'] = None",
        )
        report = result["applied"]
        for name in ("seccomp:network", "seccomp:exec"):
            self.assertTrue(report[name].startswith("unavailable: "), report[name])
            self.assertIn("pyseccomp", report[name])
        self.assertEqual(report["no_new_privs"], "applied")
        self.assertFalse(result["state"]["inet_socket_denied"])

    def test_invalid_values_fail(self) -> None:
        """
        A value of the wrong kind fails its layer, with the reason, instead of
        passing as "not asked for" or crashing the child.
        """
        report = run_child(
            {
                "no_new_privs": "yes",
                "deny_network": 1,
                "rlimits": {"open_files": -1, "file_size": "big"},
                "uid": 1,
                "parent_death_signal": 99,
                "parent_pid": os.getpid(),
                "writable_paths": "/tmp",
            }
        )["applied"]
        self.assertEqual(
            report,
            {
                "drop_privileges": "failed: uid and gid must be given together",
                "parent_death_signal": "failed: not a signal number: 99",
                "no_new_privs": "failed: no_new_privs must be true or false",
                "landlock": "failed: writable_paths must be a list of paths",
                "rlimit:open_files": "failed: must be a non-negative integer, not -1",
                "rlimit:file_size": (
                    "failed: must be a non-negative integer, not 'big'"
                ),
                "seccomp:network": "failed: deny_network must be true or false",
            },
        )

    def test_rlimits_not_an_object(self) -> None:
        """
        C{rlimits} that is not an object is one failed C{rlimits} layer.
        """
        self.assertEqual(requested_layers({"rlimits": [1]}), ["rlimits"])
        report = run_child({"rlimits": [1]})["applied"]
        self.assertEqual(report, {"rlimits": "failed: rlimits must be an object"})


class DescribeTests(SynchronousTestCase):
    """
    L{actordispatch.children.sandbox.describe_sandbox} reads the state of the
    process itself.
    """

    def test_unconfined(self) -> None:
        """
        A child asked for nothing holds only the descriptors it was given (not
        the one used to list them), sees only the names of its environment
        variables, not their values, and may make an C{AF_INET} socket.
        """
        result = run_child(
            {}, env={"PATH": os.environ.get("PATH", ""), "SECRET_TOKEN": "s3cret"}
        )
        state = result["state"]
        self.assertEqual(result["applied"], {})
        self.assertEqual(state["open_fds"], [0, 1, 2])
        self.assertEqual(sorted(state["fd_targets"]), ["0", "1", "2"])
        self.assertIn("SECRET_TOKEN", state["environment_names"])
        self.assertNotIn("s3cret", json.dumps(result))
        self.assertFalse(state["inet_socket_denied"])
        self.assertEqual(state["threads"], 1)
        self.assertEqual(
            (state["uid"], state["euid"], state["gid"], state["egid"]),
            (os.getuid(), os.geteuid(), os.getgid(), os.getegid()),
        )

    def test_inherited_descriptor(self) -> None:
        """
        A descriptor the child inherited is listed, with what it points at.
        """
        reading, writing = os.pipe()
        self.addCleanup(os.close, reading)
        self.addCleanup(os.close, writing)
        state = run_child({}, pass_fds=[writing])["state"]
        self.assertIn(writing, state["open_fds"])
        self.assertTrue(state["fd_targets"][str(writing)].startswith("pipe:"))


class RlimitTests(SynchronousTestCase):
    """
    Resource limits are in force, soft and hard, and do what they are for.
    """

    def test_limits_in_force(self) -> None:
        """
        Each limit asked for is the soft and the hard limit of the child.
        """
        limits = {
            "address_space": 2 * 1024**3,
            "cpu_seconds": 30,
            "open_files": 64,
            "file_size": 1024**2,
            "core_size": 0,
        }
        result = run_child({"rlimits": limits})
        for name, value in limits.items():
            self.assertEqual(result["applied"][f"rlimit:{name}"], "applied")
            self.assertEqual(result["state"]["rlimits"][name], [value, value], name)

    def test_hard_limit_never_raised(self) -> None:
        """
        A limit above the inherited hard limit is not an attempt to raise it:
        the inherited, stricter limit stays, and the layer counts as applied.
        """
        result = run_child(
            {"rlimits": {"open_files": 200}},
            before="resource.setrlimit(resource.RLIMIT_NOFILE, (50, 100))",
        )
        self.assertEqual(result["applied"], {"rlimit:open_files": "applied"})
        self.assertEqual(result["state"]["rlimits"]["open_files"], [100, 100])

    def test_address_space(self) -> None:
        """
        Allocating more than the address space allowed raises C{MemoryError} in
        the child, which keeps running; a small allocation still works.
        """
        result = run_child(
            {"rlimits": {"address_space": 512 * 1024**2}},
            probe=textwrap.dedent(
                """
                try:
                    bytearray(768 * 1024**2)
                except MemoryError:
                    probe["large"] = "MemoryError"
                probe["small"] = len(bytearray(1024**2))
                """
            ),
        )
        self.assertEqual(result["probe"], {"large": "MemoryError", "small": 1024**2})

    def test_cpu_budget(self) -> None:
        """
        A child that spins is killed (SIGXCPU or SIGKILL) once it has used its
        CPU seconds, within two seconds of them.
        """
        started = time.monotonic()
        completed = subprocess.run(
            [
                sys.executable,
                "-c",
                _CHILD,
                json.dumps({"rlimits": {"cpu_seconds": 1}}),
                "while True: pass",
                "",
            ],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=10,
        )
        elapsed = time.monotonic() - started
        self.assertIn(completed.returncode, (-signal.SIGXCPU, -signal.SIGKILL))
        self.assertLess(elapsed, 1 + 2)

    def test_file_size(self) -> None:
        """
        Writing a file past C{file_size} fails with C{EFBIG}; the child lives on.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "big")
        result = run_child(
            {"rlimits": {"file_size": 4096}},
            probe=textwrap.dedent(
                f"""
                with open({path!r}, "wb", buffering=0) as f:
                    try:
                        f.write(b"x" * 8192)
                        f.write(b"x")
                    except OSError as e:
                        probe["error"] = errno.errorcode[e.errno]
                probe["size"] = os.path.getsize({path!r})
                """
            ),
        )
        self.assertEqual(result["probe"], {"error": "EFBIG", "size": 4096})

    def test_core_dumps_disabled(self) -> None:
        """
        The default profile turns core dumps off and sets the parent-death
        signal, and nothing else.
        """
        config = SandboxProfile().to_child_config(os.getpid())
        result = run_child(config)
        self.assertEqual(
            result["applied"],
            {"parent_death_signal": "applied", "rlimit:core_size": "applied"},
        )
        self.assertEqual(result["state"]["rlimits"]["core_size"], [0, 0])


class PrivilegeTests(SynchronousTestCase):
    """
    no_new_privs, the parent-death signal, and dropping to another user.
    """

    def test_no_new_privs(self) -> None:
        """
        The child reads no_new_privs set on itself.
        """
        result = run_child({"no_new_privs": True})
        self.assertEqual(result["applied"], {"no_new_privs": "applied"})
        self.assertTrue(result["state"]["no_new_privs"])

    def test_not_on_a_second_thread(self) -> None:
        """
        no_new_privs binds only the calling thread: with another thread running
        it is reported failed rather than half applied.
        """
        result = run_child(
            {"no_new_privs": True},
            before=(
                "stop = threading.Event(); "
                "threading.Thread(target=stop.wait, daemon=True).start()"
            ),
            probe="stop.set()",
        )
        self.assertRegex(result["applied"]["no_new_privs"], r"^failed: 2 threads ")

    def test_parent_death_signal_set(self) -> None:
        """
        The child reads the parent-death signal it was asked for.
        """
        result = run_child({"parent_death_signal": 9, "parent_pid": os.getpid()})
        self.assertEqual(result["applied"], {"parent_death_signal": "applied"})
        self.assertEqual(result["state"]["parent_death_signal"], signal.SIGKILL)

    def test_parent_death_signal_without_parent_pid(self) -> None:
        """
        Without C{parent_pid} the signal is set, but the layer is reported
        failed: a parent that died before it was set would go unnoticed.
        """
        result = run_child({"parent_death_signal": 9})
        self.assertRegex(
            result["applied"]["parent_death_signal"], "^failed: signal set, but"
        )
        self.assertEqual(result["state"]["parent_death_signal"], signal.SIGKILL)

    def test_parent_already_gone(self) -> None:
        """
        A child whose parent is not the one named (it died, and the child was
        adopted) exits at once with status 70 and does nothing more.
        """
        completed = subprocess.run(
            [
                sys.executable,
                "-c",
                _CHILD,
                json.dumps({"parent_death_signal": 9, "parent_pid": 1}),
                "",
                "",
            ],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=10,
        )
        self.assertEqual(completed.returncode, sandbox.PARENT_GONE_EXIT)
        self.assertEqual(completed.stdout, b"")

    def test_child_dies_with_parent(self) -> None:
        """
        When the parent is killed with SIGKILL the child dies too: here a middle
        process starts a sandboxed child and is killed.
        """
        grandchild = (
            "import os, time\n"
            "from actordispatch.children.sandbox import apply_sandbox\n"
            "report = apply_sandbox("
            "{'parent_death_signal': 9, 'parent_pid': os.getppid()})\n"
            "print(os.getpid(), report['parent_death_signal'], flush=True)\n"
            "time.sleep(30)\n"
        )
        middle = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import subprocess, sys, time\n"
                "subprocess.Popen([sys.executable, '-c', sys.argv[1]])\n"
                "time.sleep(30)\n",
                grandchild,
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self.addCleanup(middle.wait, 10)
        self.addCleanup(middle.kill)
        assert middle.stdout is not None
        self.addCleanup(middle.stdout.close)
        readable, _, _ = select.select([middle.stdout], [], [], 10)
        self.assertTrue(readable, "the sandboxed child never started")
        pid_text, status = middle.stdout.readline().decode().split()
        pid = int(pid_text)
        self.addCleanup(self._kill_if_alive, pid)
        self.assertEqual(status, "applied")
        self.assertFalse(_is_dead(pid))

        middle.kill()
        middle.wait(10)
        deadline = time.monotonic() + 5
        while not _is_dead(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertTrue(_is_dead(pid), "the child outlived its parent")

    def _kill_if_alive(self, pid: int) -> None:
        if not _is_dead(pid):
            os.kill(pid, signal.SIGKILL)

    def test_drop_privileges(self) -> None:
        """
        As root, the child drops to the given user and group, with no
        supplementary groups, and cannot become root again.
        """
        if os.geteuid() != 0:
            raise self.skipTest("dropping privileges needs the tests to run as root")
        result = run_child(
            {"uid": 65534, "gid": 65534},
            probe=textwrap.dedent(
                """
                try:
                    os.setuid(0)
                except PermissionError:
                    probe["setuid(0)"] = "denied"
                """
            ),
        )
        state = result["state"]
        self.assertEqual(result["applied"], {"drop_privileges": "applied"})
        self.assertEqual(
            (state["uid"], state["euid"], state["gid"], state["egid"]),
            (65534, 65534, 65534, 65534),
        )
        self.assertEqual(state["groups"], [])
        self.assertEqual(result["probe"], {"setuid(0)": "denied"})

    def test_drop_privileges_not_root(self) -> None:
        """
        Not running as root, a requested user and group are reported as failed
        (C{not root}), and the child keeps its own.  When the tests run as root
        the child first makes itself another user.
        """
        before = ""
        if os.geteuid() == 0:
            before = "os.setgroups([]); os.setgid(65534); os.setuid(65534)"
        result = run_child({"uid": 65533, "gid": 65533}, before=before)
        self.assertEqual(result["applied"], {"drop_privileges": "failed: not root"})
        self.assertNotEqual(result["state"]["euid"], 65533)


class SeccompTests(SynchronousTestCase):
    """
    The seccomp filters deny the network and new programs and processes.
    """

    skip = SECCOMP_PROBLEM

    def test_network(self) -> None:
        """
        With C{deny_network}, making an C{AF_INET} or C{AF_INET6} socket fails
        with C{EPERM}; UNIX sockets and socket pairs still work.
        """
        result = run_child(
            {"deny_network": True},
            probe=textwrap.dedent(
                """
                for family in ("AF_INET", "AF_INET6", "AF_UNIX"):
                    try:
                        socket.socket(getattr(socket, family)).close()
                        probe[family] = "ok"
                    except OSError as e:
                        probe[family] = errno.errorcode[e.errno]
                left, right = socket.socketpair()
                left.sendall(b"x")
                probe["socketpair"] = right.recv(1).decode()
                """
            ),
        )
        self.assertEqual(result["applied"], {"seccomp:network": "applied"})
        self.assertEqual(
            result["probe"],
            {
                "AF_INET": "EPERM",
                "AF_INET6": "EPERM",
                "AF_UNIX": "ok",
                "socketpair": "x",
            },
        )
        self.assertTrue(result["state"]["inet_socket_denied"])
        self.assertEqual(result["state"]["seccomp_mode"], 2)
        self.assertTrue(result["state"]["no_new_privs"])

    def test_exec(self) -> None:
        """
        With C{deny_exec}, running a program, forking, and spawning fail with
        C{EPERM}, while Python threads still start and finish.
        """
        result = run_child(
            {"deny_exec": True},
            probe=textwrap.dedent(
                """
                def attempt(name, action):
                    try:
                        action()
                        probe[name] = "ok"
                    except OSError as e:
                        probe[name] = errno.errorcode[e.errno]
                def fork():
                    if os.fork() == 0:
                        os._exit(0)
                attempt("execv", lambda: os.execv("/bin/true", ["true"]))
                attempt("fork", fork)
                attempt("subprocess", lambda: subprocess.run(["/bin/true"]))
                attempt(
                    "posix_spawn",
                    lambda: os.posix_spawn("/bin/true", ["true"], os.environ),
                )
                seen = []
                thread = threading.Thread(target=lambda: seen.append(41 + 1))
                thread.start()
                thread.join(5)
                probe["thread"] = seen
                """
            ),
        )
        self.assertEqual(result["applied"], {"seccomp:exec": "applied"})
        self.assertEqual(
            result["probe"],
            {
                "execv": "EPERM",
                "fork": "EPERM",
                "subprocess": "EPERM",
                "posix_spawn": "EPERM",
                "thread": [42],
            },
        )
        self.assertEqual(result["state"]["seccomp_mode"], 2)


class LandlockTests(SynchronousTestCase):
    """
    The Landlock ruleset confines writes to the given paths.
    """

    skip = LANDLOCK_PROBLEM

    def setUp(self) -> None:
        self.allowed = tempfile.mkdtemp()
        self.other = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.allowed)
        self.addCleanup(shutil.rmtree, self.other)
        for directory in (self.allowed, self.other):
            with open(os.path.join(directory, "existing"), "w") as existing:
                existing.write("old")
        self.single = os.path.join(self.other, "single")
        with open(self.single, "w"):
            pass

    _PROBE = textwrap.dedent(
        """
        def attempt(name, action):
            try:
                action()
                probe[name] = "ok"
            except OSError as e:
                probe[name] = errno.errorcode[e.errno]
        def write(path):
            with open(path, "w") as f:
                f.write("new")
        def read(path):
            with open(path) as f:
                f.read()
        attempt("write inside", lambda: write(ALLOWED + "/new"))
        attempt("mkdir inside", lambda: os.mkdir(ALLOWED + "/sub"))
        attempt("unlink inside", lambda: os.unlink(ALLOWED + "/existing"))
        attempt("write outside", lambda: write(OTHER + "/new"))
        attempt("overwrite outside", lambda: write(OTHER + "/existing"))
        attempt("unlink outside", lambda: os.unlink(OTHER + "/existing"))
        attempt("read outside", lambda: read(OTHER + "/existing"))
        attempt("write single file", lambda: write(OTHER + "/single"))
        """
    )

    def _probe(self) -> str:
        return f"ALLOWED = {self.allowed!r}; OTHER = {self.other!r}\n" + self._PROBE

    def test_writes_confined(self) -> None:
        """
        Beneath an allowed directory the child writes, creates and removes;
        elsewhere it may read but not write, create or remove, except a single
        file allowed by name.
        """
        result = run_child(
            {"writable_paths": [self.allowed, self.single]}, probe=self._probe()
        )
        self.assertEqual(result["applied"], {"landlock": "applied"})
        self.assertEqual(
            result["probe"],
            {
                "write inside": "ok",
                "mkdir inside": "ok",
                "unlink inside": "ok",
                "write outside": "EACCES",
                "overwrite outside": "EACCES",
                "unlink outside": "EACCES",
                "read outside": "ok",
                "write single file": "ok",
            },
        )

    def test_missing_path(self) -> None:
        """
        A writable path that cannot be opened is reported as a failure, and the
        ruleset is applied without it: stricter than asked, never looser.
        """
        missing = os.path.join(self.other, "missing")
        result = run_child(
            {"writable_paths": [self.allowed, missing]}, probe=self._probe()
        )
        self.assertRegex(result["applied"]["landlock"], "^failed: .*stricter")
        self.assertIn(repr(missing), result["applied"]["landlock"])
        self.assertEqual(result["probe"]["write inside"], "ok")
        self.assertEqual(result["probe"]["write outside"], "EACCES")


class ProfileTests(SynchronousTestCase):
    """
    L{SandboxProfile} validates itself and makes the child configuration.
    """

    def test_default(self) -> None:
        """
        The default profile asks only for the parent-death signal (SIGKILL) and
        no core dumps.
        """
        self.assertEqual(
            SandboxProfile().to_child_config(123),
            {
                "rlimits": {"core_size": 0},
                "parent_death_signal": signal.SIGKILL,
                "parent_pid": 123,
            },
        )

    def test_nothing(self) -> None:
        """
        With core dumps allowed and no parent-death signal, nothing is asked.
        """
        profile = SandboxProfile(core_dumps=True, parent_death_signal=None)
        self.assertEqual(profile.to_child_config(123), {})
        self.assertEqual(profile.layer_names(), ())

    def test_untrusted(self) -> None:
        """
        The untrusted profile confines memory, descriptors, file sizes,
        privileges, network, programs, writes, capabilities, the view of other
        processes, signals and sockets, and survives JSON.
        """
        config = SandboxProfile.untrusted().to_child_config(123)
        self.assertEqual(
            config,
            {
                "rlimits": {
                    "address_space": 1024**3,
                    "open_files": 256,
                    "file_size": 64 * 1024**2,
                    "core_size": 0,
                },
                "no_new_privs": True,
                "parent_death_signal": signal.SIGKILL,
                "parent_pid": 123,
                "deny_network": True,
                "deny_exec": True,
                "writable_paths": [],
                "drop_capabilities": True,
                "hide_processes": True,
                "confine_signals": True,
                "socket_families": [],
            },
        )
        self.assertEqual(json.loads(json.dumps(config)), config)

    def test_untrusted_overrides(self) -> None:
        """
        Overrides replace the strict defaults, are converted and validated like
        any field, and an unknown one is a C{TypeError}.
        """
        profile = SandboxProfile.untrusted(
            writable_paths=["/srv/scratch"], address_space=None, uid=7, gid=8
        )
        self.assertEqual(profile.writable_paths, ("/srv/scratch",))
        self.assertIsNone(profile.address_space)
        config = profile.to_child_config(1)
        self.assertEqual((config["uid"], config["gid"]), (7, 8))
        self.assertRaises(ValueError, SandboxProfile.untrusted, open_files=-1)
        self.assertRaises(TypeError, SandboxProfile.untrusted, sparkles=True)

    def test_invalid(self) -> None:
        """
        Impossible values are refused when the profile is made, with a
        C{ValueError} naming the field.
        """
        cases: list[tuple[dict[str, Any], str]] = [
            ({"address_space": -1}, "address_space"),
            ({"address_space": 0}, "address_space"),
            ({"cpu_seconds": 0}, "cpu_seconds"),
            ({"open_files": True}, "open_files"),
            ({"file_size": -5}, "file_size"),
            ({"file_size": 1.5}, "file_size"),
            ({"core_dumps": 1}, "core_dumps"),
            ({"no_new_privs": "yes"}, "no_new_privs"),
            ({"parent_death_signal": 0}, "parent_death_signal"),
            ({"parent_death_signal": 200}, "parent_death_signal"),
            ({"uid": -1, "gid": 0}, "uid"),
            ({"uid": 1}, "uid and gid"),
            ({"gid": 1}, "uid and gid"),
            ({"deny_network": None}, "deny_network"),
            ({"writable_paths": "/tmp"}, "one path"),
            ({"writable_paths": ["tmp"]}, "absolute"),
            ({"writable_paths": [b"/tmp"]}, "absolute"),
        ]
        for arguments, message in cases:
            with self.assertRaises(ValueError, msg=repr(arguments)) as raised:
                SandboxProfile(**arguments)
            self.assertIn(message, str(raised.exception))

    def test_file_size_zero(self) -> None:
        """
        A file size of 0 is allowed: it forbids writing to any file at all.
        """
        config = SandboxProfile(file_size=0).to_child_config(1)
        self.assertEqual(config["rlimits"]["file_size"], 0)

    def test_bad_parent_pid(self) -> None:
        """
        C{to_child_config} refuses a parent pid that is not a positive integer.
        """
        bad: tuple[Any, ...] = (0, -1, True, "1")
        for parent_pid in bad:
            self.assertRaises(ValueError, SandboxProfile().to_child_config, parent_pid)


class MissingLayersTests(SynchronousTestCase):
    """
    L{missing_layers} names what the parent must complain about.
    """

    def test_not_applied(self) -> None:
        """
        Failed and unavailable layers are missing, in report order; applied
        ones are not.
        """
        report = {
            "no_new_privs": "applied",
            "seccomp:network": "unavailable: no libseccomp",
            "landlock": "failed: boom",
        }
        self.assertEqual(missing_layers(report), ["seccomp:network", "landlock"])

    def test_left_out(self) -> None:
        """
        An expected layer the report leaves out is missing as well.
        """
        profile = SandboxProfile(no_new_privs=True)
        self.assertEqual(
            missing_layers({"no_new_privs": "applied"}, expected=profile.layer_names()),
            ["parent_death_signal", "rlimit:core_size"],
        )
        self.assertEqual(missing_layers({}), [])
