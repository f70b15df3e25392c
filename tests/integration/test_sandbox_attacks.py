"""
Hostile handlers (L{tests.integration.hostile}) against real ampoule children
under C{SandboxProfile.untrusted()}: each attack on the dispatcher, its other
children, the machine's processes, a UNIX socket or the dispatcher's secrets
ends as an C{"error"} outcome, the dispatcher survives and serves a probe, and
nothing is left running.

An attack that works may kill, so the dispatcher runs in a process of its
own, in a session of its own (C{start_new_session=True}): the test runner is
never at risk.  What is checked is only what that process reports of
L{EventDispatcher.fire_event}'s outcomes, and the processes the test can see.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.integration.support import ROOT
from tests.test_sandbox import SECCOMP_PROBLEM, _is_dead
from tests.test_sandbox_confinement import SCOPE_PROBLEM

#: The dispatcher, run as C{python -c DISPATCHER OPTIONS}: it adds every
#: hostile handler, fires the attacks named in the options one by one, then a
#: probe, prints what came back, and stops (or, with C{"hang"}, waits to be
#: killed).
DISPATCHER = """
import json, sys
from twisted.internet import defer, task
from twisted.logger import globalLogPublisher
from actordispatch import EventDispatcher, SandboxProfile

H = "tests.integration.hostile:"
HANDLERS = (
    "pid", "kill_parent", "kill_pid", "kill_siblings", "signal_everyone",
    "signal_group", "clear_parent_death_signal", "connect_unix",
    "read_parent_environ", "descriptors",
)

def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False

def say(tag, value):
    print(tag, json.dumps(value), flush=True)

@defer.inlineCallbacks
def main(reactor, arguments):
    options = json.loads(arguments)
    not_in_force = []
    def watch(event):
        if "NOT in force" in (event.get("log_format") or ""):
            not_in_force.append(repr(event.get("missing")))
    globalLogPublisher.addObserver(watch)
    d = EventDispatcher(
        ("kind",), ("during",), pool_size=2, default_timeout=30,
        # Shared children: the attackers and the probes run in the same two
        # processes, which must all survive (isolation="handler", untrusted's
        # default, would give each handler children of its own).
        sandbox=SandboxProfile.untrusted(
            **{"isolation": "shared", **options["overrides"]}
        ),
    )
    yield d.start()
    for name in HANDLERS:
        yield d.add_event_handler(H + name, "during", kind=name)
    pool = d.pools()["default"]
    yield defer.gatherResults([d.fire_event({}, kind="pid") for _ in range(2)])
    pids = sorted(pool.child_pids())
    say("CHILDREN", pids + sorted(pool.standby_pids()))
    events = {
        "kill_pid": {"pid": options.get("victim")},
        "kill_siblings": {"pids": pids},
        "connect_unix": {"path": options.get("path")},
    }
    outcomes = {}
    for name in options["attacks"]:
        result = yield d.fire_event(events.get(name, {}), kind=name)
        (outcome,) = result.outcomes
        outcomes[name] = [outcome.status, outcome.error_type, outcome.value]
    probe = yield d.fire_event({}, kind="pid")
    seen = yield d.fire_event({}, kind="descriptors")
    say("DESCRIPTORS", seen.outcomes[0].value)
    outcomes["probe"] = [probe.outcomes[0].status, None, None]
    say("OUTCOMES", outcomes)
    say("ALIVE", [running(pid) for pid in pids])
    say("NOT_IN_FORCE", not_in_force)
    if options.get("hang"):
        yield defer.Deferred()
    yield d.stop()
    say("STOPPED", True)

task.react(main, sys.argv[1:])
"""

#: Every attack, in the order they are fired.
ATTACKS = (
    "kill_parent",
    "kill_pid",
    "kill_siblings",
    "signal_everyone",
    "signal_group",
    "clear_parent_death_signal",
    "connect_unix",
    "read_parent_environ",
)

#: A secret in the dispatcher's environment that no handler may read.
SECRET = "hunter2-do-not-leak"


def _other_user_problem() -> str | None:
    """
    Why children cannot run as another user here, or C{None} if they can:
    that user must be able to run this interpreter and read the project.
    """
    if os.geteuid() != 0:
        return "dropping to another user needs the tests to run as root"
    try:
        subprocess.run(
            [sys.executable, "-c", "import actordispatch, tests.integration.hostile"],
            cwd=str(ROOT),
            user=65534,
            group=65534,
            extra_groups=[],
            capture_output=True,
            check=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as error:
        return f"user 65534 cannot run this interpreter and project here: {error}"
    return None


class DispatcherProcess:
    """
    A dispatcher running L{DISPATCHER} in a session of its own, whose output
    lines are read as they come.
    """

    def __init__(self, case: SynchronousTestCase, options: dict[str, Any]) -> None:
        self.case = case
        self.lines: dict[str, Any] = {}
        self.output = ""
        self.pending = ""
        self.process = subprocess.Popen(
            [sys.executable, "-c", DISPATCHER, json.dumps(options)],
            cwd=str(ROOT),
            env={**os.environ, "DISPATCHER_SECRET": SECRET},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
        case.addCleanup(self.kill)

    def wait_for(self, tag: str, seconds: float = 120) -> Any:
        """
        Read output until the line tagged C{tag}, and return its value.  The
        pipe is read unbuffered: a line already buffered would not wake
        C{select}.
        """
        assert self.process.stdout is not None
        descriptor = self.process.stdout.fileno()
        deadline = time.monotonic() + seconds
        while tag not in self.lines:
            if "\n" not in self.pending:
                left = deadline - time.monotonic()
                readable, _, _ = select.select([descriptor], [], [], max(left, 0))
                chunk = os.read(descriptor, 65536) if readable else b""
                if not chunk:
                    self.case.fail(
                        f"no {tag} from the dispatcher:\n{self.output[-4000:]}"
                    )
                self.pending += chunk.decode(errors="replace")
                continue
            line, _, self.pending = self.pending.partition("\n")
            self.output += line + "\n"
            name, _, value = line.partition(" ")
            if name.isupper() and value:
                self.lines[name] = json.loads(value)
        return self.lines[tag]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        if self.process.stdout is not None:
            self.process.stdout.close()


def _wait_dead(pids: list[int], seconds: float = 15) -> list[int]:
    """
    Wait for C{pids} to end; return those still running after C{seconds}.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(_is_dead(pid) for pid in pids):
            return []
        time.sleep(0.05)
    return [pid for pid in pids if not _is_dead(pid)]


class AttackTests(SynchronousTestCase):
    """
    Every attack of L{tests.integration.hostile} fails under the untrusted
    profile, and the dispatcher and everything else survives it.
    """

    skip = SECCOMP_PROBLEM or SCOPE_PROBLEM

    def setUp(self) -> None:
        victim = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(300)"],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
        self.addCleanup(victim.wait, 10)
        self.addCleanup(victim.kill)
        self.victim = victim.pid
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        self.path = os.path.join(directory, "dispatcher.sock")
        self.endpoint = socket.socket(socket.AF_UNIX)
        self.addCleanup(self.endpoint.close)
        self.endpoint.bind(self.path)
        self.endpoint.listen(5)
        self.endpoint.setblocking(False)

    def _attack(self, overrides: dict[str, Any]) -> None:
        dispatcher = DispatcherProcess(
            self,
            {
                "overrides": overrides,
                "attacks": ATTACKS,
                "victim": self.victim,
                "path": self.path,
            },
        )
        children = dispatcher.wait_for("CHILDREN")
        self.addCleanup(self._kill_left_over, children)
        outcomes = dispatcher.wait_for("OUTCOMES")
        self.assertEqual(
            {name: outcome[0] for name, outcome in outcomes.items()},
            {**{name: "error" for name in ATTACKS}, "probe": "ok"},
            dispatcher.output,
        )
        refused = {"PermissionError", "FileNotFoundError"}
        for name in ATTACKS:
            self.assertIn(outcomes[name][1], refused, name)
        self.assertEqual(outcomes["read_parent_environ"][1], "FileNotFoundError")
        descriptors = dispatcher.wait_for("DESCRIPTORS")
        self.assertEqual(
            [fd for fd, target in descriptors.items() if target.startswith("socket:")],
            [],
        )
        for fd in ("3", "4"):  # the AMP channels
            self.assertTrue(descriptors[fd].startswith("pipe:"), descriptors)
        self.assertEqual(dispatcher.wait_for("ALIVE"), [True, True], "a child died")
        if os.geteuid() == 0:
            self.assertEqual(dispatcher.wait_for("NOT_IN_FORCE"), [])
        dispatcher.wait_for("STOPPED")
        self.assertEqual(dispatcher.process.wait(60), 0)
        self.assertNotIn(SECRET, dispatcher.output)
        self.assertEqual(_wait_dead(children), [], "children left running")
        self.assertFalse(_is_dead(self.victim), "the unrelated process was killed")
        self.assertRaises(BlockingIOError, self.endpoint.accept)

    def _kill_left_over(self, pids: list[int]) -> None:
        for pid in pids:
            if not _is_dead(pid):
                os.kill(pid, signal.SIGKILL)

    def test_attacks_as_root(self) -> None:
        """
        With the children left as the parent's user (root here: no uid in the
        profile), killing the dispatcher, an unrelated process or a sibling,
        signalling everyone or the process group, clearing the parent-death
        signal, connecting to a UNIX socket and reading the dispatcher's
        environment all end "error"; the dispatcher serves a probe after, with
        the same children, every layer was in force, the secret never showed,
        and after C{stop()} no child is left.
        """
        self._attack({})

    def test_attacks_as_another_user(self) -> None:
        """
        The same holds with the children dropped to another user, where a
        signal to a sibling of the same user was the way through.
        """
        problem = _other_user_problem()
        if problem:
            raise self.skipTest(problem)
        self._attack({"uid": 65534, "gid": 65534})


class OrphanTests(SynchronousTestCase):
    """
    A handler cannot make its child outlive the dispatcher.
    """

    skip = SECCOMP_PROBLEM or SCOPE_PROBLEM

    def test_cannot_outlive_parent(self) -> None:
        """
        Clearing the parent-death signal ends "error", and when the dispatcher
        is then killed with SIGKILL, its children die with it.
        """
        dispatcher = DispatcherProcess(
            self,
            {"overrides": {}, "attacks": ["clear_parent_death_signal"], "hang": True},
        )
        children = dispatcher.wait_for("CHILDREN")
        outcomes = dispatcher.wait_for("OUTCOMES")
        self.assertEqual(
            outcomes["clear_parent_death_signal"][:2], ["error", "PermissionError"]
        )
        self.assertEqual(outcomes["probe"][0], "ok")
        self.assertEqual([pid for pid in children if _is_dead(pid)], [])
        dispatcher.process.kill()  # the dispatcher alone, not its session
        dispatcher.process.wait(30)
        left = _wait_dead(children)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        self.assertEqual(left, [], "children outlived the dispatcher")
