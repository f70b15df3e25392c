"""
The TOML configuration: what a good one gives, and that every mistake names the
file, the key and the problem.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from actordispatch._service.config import ConfigError, load_config, parse_config

GOOD = """
[dispatcher]
keywords = ["event_type", "user", "role"]
phases = ["before", "during"]
max_in_flight = 4
order_by = "user"
drain_timeout = 5

[pools.default]
size = 1
default_timeout = 2.5
child_env = { LANG = "C.UTF-8" }

[pools.heavy]
size = 2
max_rss = 1000000

[[handlers]]
handler = "myapp.handlers:notify_admin"
phase = "during"
match = { role = "user" }
timeout = 5
max_calls = 3

[[handlers]]
handler = "myapp.handlers:audit"
phase = "before"
pool = "heavy"

[listen]
endpoints = ["tcp:0:interface=127.0.0.1"]

[metrics]
endpoint = "tcp:0:interface=127.0.0.1"
"""


class GoodConfigTests(SynchronousTestCase):
    def test_parsed(self) -> None:
        """
        A good configuration gives the dispatcher's arguments, the pools (the
        default one always), the handlers with their options, and the endpoints.
        """
        config = parse_config(GOOD, "good.toml")
        self.assertEqual(
            config.dispatcher,
            {
                "allowed_match_spec_keywords": ("event_type", "user", "role"),
                "phases": ("before", "during"),
                "max_in_flight": 4,
                "order_by": "user",
                "drain_timeout": 5,
            },
        )
        self.assertEqual(
            config.pools,
            {
                "default": {
                    "size": 1,
                    "default_timeout": 2.5,
                    "child_env": {"LANG": "C.UTF-8"},
                },
                "heavy": {"size": 2, "max_rss": 1000000},
            },
        )
        first, second = config.handlers
        self.assertEqual(
            (first.handler, first.phase, first.match, first.options),
            (
                "myapp.handlers:notify_admin",
                "during",
                {"role": "user"},
                {"timeout": 5, "max_calls": 3},
            ),
        )
        self.assertEqual(second.options, {"pool": "heavy"})
        self.assertEqual(config.listen, {"endpoints": ["tcp:0:interface=127.0.0.1"]})
        self.assertEqual(config.metrics_endpoint, "tcp:0:interface=127.0.0.1")

    def test_minimal(self) -> None:
        """
        Only the keywords are required; phases default to before/during/after.
        """
        config = parse_config('[dispatcher]\nkeywords = ["a"]\n')
        self.assertEqual(config.dispatcher["phases"], ("before", "during", "after"))
        self.assertEqual(config.handlers, ())
        self.assertEqual(config.pools, {"default": {}})


class BadConfigTests(SynchronousTestCase):
    def assertRefused(self, text: str, *fragments: str) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse_config(text, "bad.toml")
        message = str(caught.exception)
        self.assertTrue(message.startswith("bad.toml: "), message)
        for fragment in fragments:
            self.assertIn(fragment, message)

    def test_mistakes(self) -> None:
        """
        Each mistake is refused with a message naming the file, the key and the
        problem.
        """
        head = '[dispatcher]\nkeywords = ["role"]\n'
        cases = [
            ("not toml = = 1", ("not valid TOML",)),
            ("[dispatcher]\n", ("dispatcher.keywords", "missing")),
            ('[dispatcher]\nkeywords = ["no good"]\n', ("dispatcher.keywords[0]",)),
            (head + "max_in_flight = 0\n", ("dispatcher.max_in_flight",)),
            (
                head + 'max_in_flight = "x"\n',
                ("dispatcher.max_in_flight", "must be int"),
            ),
            (head + "colour = 1\n", ("dispatcher.colour", "unknown key")),
            (head + 'order_by = "user"\n', ("dispatcher.order_by",)),
            (head + 'on_overload = "drop"\n', ("dispatcher.on_overload",)),
            (head + "[surprise]\n", ("surprise", "unknown table")),
            (
                head + "[pools.default]\nsize = 0\n",
                ("pools.default.size", "at least 1"),
            ),
            (head + "[pools.default]\nsize = true\n", ("pools.default.size",)),
            (head + "[pools.x]\ndefault_timeout = -1\n", ("pools.x.default_timeout",)),
            (head + "[pools.x]\nchild_env = { A = 1 }\n", ("pools.x.child_env.A",)),
            (
                head + '[[handlers]]\nphase = "during"\n',
                ("handlers[0].handler", "missing"),
            ),
            (
                head + '[[handlers]]\nhandler = "x"\nphase = "during"\n',
                ("handlers[0].handler", "package.module:attribute"),
            ),
            (
                head + '[[handlers]]\nhandler = "a.b:c"\nphase = "durin"\n',
                ("handlers[0].phase", "unknown phase 'durin'"),
            ),
            (
                head
                + '[[handlers]]\nhandler = "a.b:c"\nphase = "during"\n'
                + 'match = { user = "bob" }\n',
                ("handlers[0].match.user",),
            ),
            (
                head
                + '[[handlers]]\nhandler = "a.b:c"\nphase = "during"\npool = "gpu"\n',
                ("handlers[0].pool", "unknown pool"),
            ),
            (
                head
                + '[[handlers]]\nhandler = "a.b:c"\nphase = "during"\nmax_calls = 0\n',
                ("handlers[0].max_calls",),
            ),
            (
                head
                + '[[handlers]]\nhandler = "a.b:c"\nphase = "during"\ntimeout = 0\n',
                ("handlers[0].timeout",),
            ),
            (head + '[listen]\nendpoints = ["nonsense"]\n', ("listen.endpoints[0]",)),
            (head + "[metrics]\nendpoint = 5\n", ("metrics.endpoint",)),
            (
                head + "[pools.default.sandbox]\naddress_space = -1\n",
                ("pools.default.sandbox", "address_space"),
            ),
            (
                head + "[pools.default.sandbox]\nno_such_layer = true\n",
                ("pools.default.sandbox", "no_such_layer"),
            ),
        ]
        for text, fragments in cases:
            self.assertRefused(text, *fragments)

    def test_unreadable_file(self) -> None:
        """
        A missing file, or one that is not UTF-8, is refused naming the file.
        """
        with self.assertRaises(ConfigError) as caught:
            load_config("/nonexistent/dispatcher.toml")
        self.assertIn(
            "/nonexistent/dispatcher.toml: cannot read", str(caught.exception)
        )
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "latin1.toml"
            path.write_bytes(b"# caf\xe9\n")
            with self.assertRaises(ConfigError) as caught:
                load_config(path)
            self.assertIn("latin1.toml: not UTF-8", str(caught.exception))

    def test_amqp_pool(self) -> None:
        """
        A pool table with an C{amqp} URL is an L{AMQPPool}: its own keys are
        checked (URL, namespace, TLS files, positive durations), the local
        pool's keys are not allowed there, and the service builds it with
        its name, so handlers can use it (C{start_timeout} is the service's,
        not the pool's).
        """
        from actordispatch import AMQPPool, ClientTLS
        from actordispatch._service.service import build_dispatcher
        from tests.integration.support import Authority

        authority = Authority("config test CA")
        certificate, key = authority.issue("me")
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(lambda: [p.unlink() for p in directory.iterdir()])
        (directory / "ca.pem").write_bytes(authority.pem)
        (directory / "me.pem").write_bytes(certificate + key)
        ca, me = directory / "ca.pem", directory / "me.pem"
        head = '[dispatcher]\nkeywords = ["role"]\n'
        config = parse_config(
            head
            + "[pools.remote]\n"
            + 'amqp = "amqps://broker.example/%2F"\nnamespace = "myapp"\n'
            + "reply_grace = 2\nstart_timeout = 3\n"
            + f'tls = {{ ca = "{ca}", certificate = "{me}" }}\n'
            + '[[handlers]]\nhandler = "a.b:c"\nphase = "during"\npool = "remote"\n'
        )
        pool = build_dispatcher(config).pools()["remote"]
        self.assertIsInstance(pool, AMQPPool)
        assert isinstance(pool, AMQPPool)
        self.assertEqual(
            (pool.namespace, pool.reply_grace, pool.name, pool.address.tls),
            ("myapp", 2.0, "remote", ClientTLS(ca=str(ca), certificate=str(me))),
        )
        self.assertTrue(pool.address.external)
        remote = head + "[pools.remote]\n"
        for text, fragments in [
            (remote + 'amqp = "http://x"\n', ("pools.remote.amqp", "amqp://")),
            (remote + 'amqp = "amqp://u:hunter2@x:bad/"\n', ("pools.remote.amqp",)),
            (
                remote + 'amqp = "amqp://x"\nsize = 2\n',
                ("pools.remote.size", "unknown"),
            ),
            (
                remote + 'amqp = "amqp://x"\nnamespace = "amq.x"\n',
                ("pools.remote.namespace",),
            ),
            (
                remote + 'amqp = "amqp://x"\nreply_grace = 0\n',
                ("pools.remote.reply_grace", "positive"),
            ),
            (
                remote + 'amqp = "amqp://x"\nstart_timeout = 0\n',
                ("pools.remote.start_timeout", "positive"),
            ),
            (
                remote + 'amqp = "amqp://x"\ntls = { ca = "ca.pem" }\n',
                ("pools.remote.amqp", "amqps://"),
            ),
            (
                remote + 'amqp = "amqps://x"\ntls = { pem = "x" }\n',
                ("pools.remote.tls.pem", "unknown key"),
            ),
            (
                remote + 'amqp = "amqps://x"\ntls = { ca = "/nonexistent.pem" }\n',
                ("pools.remote.tls", "cannot use the TLS files", "nonexistent"),
            ),
        ]:
            self.assertRefused(text, *fragments)
        with self.assertRaises(ConfigError) as caught:
            parse_config(remote + 'amqp = "amqp://u:hunter2@x:bad/"\n')
        self.assertNotIn("hunter2", str(caught.exception))


class WorkerConfigTests(SynchronousTestCase):
    def test_parsed(self) -> None:
        """
        A worker configuration gives the broker, namespace, handlers,
        prefetch and name, and a C{[pool]} table with the keys of a local
        pool (its sandbox included).
        """
        from actordispatch._core.sandbox import SandboxProfile
        from actordispatch._service.config import parse_worker_config, pool_arguments

        config = parse_worker_config(
            '[worker]\namqp = "amqp://x/"\nnamespace = "app"\n'
            'handlers = ["a.b:c"]\nprefetch = 4\nname = "w1"\n'
            "[pool]\nsize = 3\n[pool.sandbox]\nno_new_privs = true\n"
        )
        self.assertEqual(
            (config.amqp, config.namespace, config.handlers, config.prefetch),
            ("amqp://x/", "app", ("a.b:c",), 4),
        )
        self.assertEqual(
            pool_arguments(config.pool),
            {"size": 3, "sandbox": SandboxProfile(no_new_privs=True)},
        )
        empty = parse_worker_config("")
        self.assertEqual((empty.amqp, empty.handlers, empty.pool), (None, (), {}))

    def test_mistakes(self) -> None:
        """
        Each mistake names the key: unknown tables and keys, bad handler
        names, prefetch below 1, a bad URL or namespace, bad pool settings.
        """
        from actordispatch._service.config import parse_worker_config

        for text, key in [
            ("[surprise]\n", "surprise"),
            ("[worker]\ncolour = 1\n", "worker.colour"),
            ('[worker]\nhandlers = ["nope"]\n', "worker.handlers[0]"),
            ("[worker]\nprefetch = 0\n", "worker.prefetch"),
            ('[worker]\namqp = "http://x"\n', "worker.amqp"),
            ('[worker]\nnamespace = "amq.x"\n', "worker.namespace"),
            ("[pool]\nsize = 0\n", "pool.size"),
            ("[pool.sandbox]\nno_such_layer = true\n", "pool.sandbox"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                parse_worker_config(text, "w.toml")
            self.assertIn(f"w.toml: {key}", str(caught.exception))


class OperatorConfigTests(SynchronousTestCase):
    def test_operators(self) -> None:
        """
        A match value can be an operator table: in, not (of a value or of an
        operator table), glob, present, absent; mistakes name the key.
        """
        from actordispatch import Absent, Glob, In, Not, Present

        head = '[dispatcher]\nkeywords = ["role", "user", "team"]\n'
        entry = '[[handlers]]\nhandler = "a.b:c"\nphase = "during"\n'
        config = parse_config(
            head
            + entry
            + 'match = { role = { in = ["admin", "user"] }, '
            + 'user = { not = { glob = "x*" } }, team = { absent = true } }\n'
            + entry
            + "match = { user = { present = true } }\n"
        )
        self.assertEqual(
            config.handlers[0].match,
            {"role": In("admin", "user"), "user": Not(Glob("x*")), "team": Absent},
        )
        self.assertEqual(config.handlers[1].match, {"user": Present})
        for match, fragment in [
            ("{ role = [1] }", "single value"),
            ("{ role = { in = [] } }", "at least one value"),
            ("{ role = { glob = 3 } }", "string pattern"),
            ("{ role = { present = false } }", "unknown operator"),
            ("{ role = { near = 1 } }", "unknown operator"),
            ("{ role = { in = [1], not = 2 } }", "exactly one"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                parse_config(head + entry + f"match = {match}\n", "bad.toml")
            self.assertIn("bad.toml: handlers[0].match.role", str(caught.exception))
            self.assertIn(fragment, str(caught.exception))

    def test_lifetimes(self) -> None:
        """
        A handler entry takes C{expires} (positive seconds) and C{owner} (a
        string), passed to C{add_event_handler}.
        """
        head = '[dispatcher]\nkeywords = ["role"]\n'
        entry = '[[handlers]]\nhandler = "a.b:c"\nphase = "during"\n'
        config = parse_config(head + entry + 'expires = 30\nowner = "plugin-a"\n')
        self.assertEqual(
            config.handlers[0].options, {"expires": 30, "owner": "plugin-a"}
        )
        with self.assertRaises(ConfigError) as caught:
            parse_config(head + entry + "expires = 0\n", "bad.toml")
        self.assertIn("bad.toml: handlers[0].expires", str(caught.exception))

    def test_phases_and_priority(self) -> None:
        """
        A phase may be a table (name, sequential, veto, on_error) and a
        handler takes a priority; mistakes name the key.
        """
        from actordispatch import Phase

        config = parse_config(
            '[dispatcher]\nkeywords = ["role"]\nphases = ["before", '
            '{ name = "check", sequential = true, veto = true, on_error = "abort" }]\n'
            '[[handlers]]\nhandler = "a.b:c"\nphase = "check"\npriority = 5\n'
        )
        self.assertEqual(
            config.dispatcher["phases"],
            ("before", Phase("check", sequential=True, veto=True, on_error="abort")),
        )
        self.assertEqual(config.handlers[0].options, {"priority": 5})
        for phases, key in [
            ('[{ name = "a", veto = 1 }]', "dispatcher.phases[0].veto"),
            ('["a", { veto = true }]', "dispatcher.phases[1].name"),
            ('[{ name = "a", on_error = "stop" }]', "dispatcher.phases[0]"),
            ('[{ name = "a", colour = "red" }]', "dispatcher.phases[0].colour"),
            ("[3]", "dispatcher.phases[0]"),
            ('["a", { name = "a" }]', "dispatcher.phases"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                parse_config(
                    f'[dispatcher]\nkeywords = ["role"]\nphases = {phases}\n',
                    "bad.toml",
                )
            self.assertIn(f"bad.toml: {key}", str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            parse_config(
                '[dispatcher]\nkeywords = ["role"]\n[[handlers]]\nhandler = "a.b:c"\n'
                'phase = "during"\npriority = 1.5\n',
                "bad.toml",
            )
        self.assertIn("bad.toml: handlers[0].priority", str(caught.exception))

    def test_service_dispatcher(self) -> None:
        """
        The service builds its dispatcher from the file's phases (tables
        included) and max_depth.
        """
        from twisted.internet.task import Clock

        from actordispatch import Phase
        from actordispatch._service.service import build_dispatcher

        config = parse_config(
            '[dispatcher]\nkeywords = ["role"]\nmax_depth = 2\nphases = ["a", '
            '{ name = "b", sequential = true }]\n'
        )
        dispatcher = build_dispatcher(config, Clock())
        self.assertEqual(
            dispatcher.phase_specs, (Phase("a"), Phase("b", sequential=True))
        )
        self.assertEqual(dispatcher._max_depth, 2)


class IsolationConfigTests(SynchronousTestCase):
    """
    A pool's isolation level and fork server come from TOML.
    """

    def test_isolation_and_fork_server(self) -> None:
        """
        C{sandbox = { isolation = "invocation" }} and C{fork_server} reach the
        pool; an unknown level is an error naming the key.
        """
        from actordispatch._service.config import pool_arguments

        config = parse_config(
            '[dispatcher]\nkeywords = ["a"]\n[pools.default]\nfork_server = true\n'
            'sandbox = { isolation = "invocation" }\n',
            "iso.toml",
        )
        arguments = pool_arguments(config.pools["default"])
        self.assertEqual(arguments["sandbox"].isolation, "invocation")
        self.assertIs(arguments["fork_server"], True)
        with self.assertRaises(ConfigError) as caught:
            parse_config(
                '[dispatcher]\nkeywords = ["a"]\n[pools.default]\n'
                'sandbox = { isolation = "process" }\n',
                "iso.toml",
            )
        self.assertIn("pools.default.sandbox", str(caught.exception))
        self.assertIn("isolation", str(caught.exception))
