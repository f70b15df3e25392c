"""
Handlers on worker hosts behind RabbitMQ, runnable::

    python docs/examples/amqp_scaleout.py [amqp://guest:guest@127.0.0.1:5672/%2F]

It starts two worker hosts (``actordispatch worker``, each with one child of its
own) for the user-created handlers, registers those handlers on an AMQP pool,
fires three events and prints each outcome with the pid of the child that ran it,
then stops the hosts.  In production the hosts run on other machines; here they
are processes on this one.  The test suite imports this file and runs ``main``.
"""

import os
import sys
import uuid

from twisted.internet import defer, protocol, task

from actordispatch import AMQPPool, EventDispatcher
from actordispatch.examples.user_created import UserEvent

HANDLERS = "actordispatch.examples.user_created:"
SERVED = [HANDLERS + name for name in ("validate_user", "notify_admin", "audit_log")]


class _Host(protocol.ProcessProtocol):
    def __init__(self):
        self.ended = defer.Deferred()
        self.ready = defer.Deferred()

    def errReceived(self, data):
        # The host logs to stderr; it says "serving" once it consumes.
        if b"serving" in data and not self.ready.called:
            self.ready.callback(None)

    def processEnded(self, reason):
        if not self.ready.called:
            self.ready.errback(reason)
        self.ended.callback(None)


def start_host(reactor, url, namespace):
    host = _Host()
    env = {
        "ACTORDISPATCH_AMQP_URL": url,  # not on the command line: ps shows that
        "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path),
    }
    argv = [sys.executable, "-m", "actordispatch", "worker", "--children", "1"]
    argv += ["--namespace", namespace, "--handlers", *SERVED]
    transport = reactor.spawnProcess(host, sys.executable, argv, env=env)
    return transport, host


@defer.inlineCallbacks
def main(
    reactor, url="amqp://guest:guest@127.0.0.1:5672/%2F", namespace=None, out=print
):
    namespace = namespace or f"example.{uuid.uuid4().hex[:8]}"
    hosts = [start_host(reactor, url, namespace) for _ in range(2)]
    try:
        yield defer.gatherResults([host.ready for _, host in hosts])
        d = EventDispatcher(
            allowed_match_spec_keywords=("event_type", "user", "role"),
            phases=("before", "during", "after"),
        )
        d.add_pool("remote", AMQPPool(url, namespace=namespace))
        yield d.start()
        yield d.add_event_handler(HANDLERS + "validate_user", "before", pool="remote")
        yield d.add_event_handler(
            HANDLERS + "notify_admin", "during", pool="remote", role="user"
        )
        yield d.add_event_handler(HANDLERS + "audit_log", "after", pool="remote")
        results = []
        for user, role in (("bob", "user"), ("ann", "admin"), ("cy", "user")):
            event = UserEvent("user_created", user, role, "1234")
            result = yield d.fire_event(event, event_type="user_created", role=role)
            for o in result.outcomes:
                name = o.handler.rpartition(":")[2]
                out(f"{user:>4} {o.phase:>6} {name:<14} {o.status} pid={o.pid}")
            results.append(result)
        yield d.stop()
        return results
    finally:
        for transport, _ in hosts:
            if transport.pid is not None:
                transport.signalProcess("TERM")  # a host drains, then exits
        yield defer.DeferredList([host.ended for _, host in hosts])


if __name__ == "__main__":
    arguments = sys.argv[1:2]
    task.react(lambda reactor: main(reactor, *arguments).addCallback(lambda _: None))
