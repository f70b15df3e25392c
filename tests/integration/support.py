"""
What several integration test modules share: a collector of a child process's
output and exit, a test case that runs commands in processes of their own, a
smoke run of a benchmark script, and throwaway certificate authorities for TLS
tests.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet import defer, protocol, reactor, utils
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

ROOT = Path(__file__).resolve().parents[2]


class Collector(protocol.ProcessProtocol):
    """
    Collects a process's output; C{ended} fires with its exit code (or the
    signal that ended it, negated).
    """

    def __init__(self) -> None:
        self.output = b""
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        value = reason.value
        code = value.exitCode if value.exitCode is not None else -value.signal
        self.ended.callback(code)


#: The command line, run with C{python -c CLI serve ...}.
CLI = "import sys; from actordispatch._service.cli import main; sys.exit(main())"

# Start the rest of the command line in a session of its own, as the same
# process (so its pid is the one to signal): a signal meant for it, or for its
# process group, never reaches the test runner.
_NEW_SESSION = "import os, sys; os.setsid(); os.execv(sys.executable, sys.argv[1:])"


def free_port() -> int:
    """
    A TCP port on loopback that nothing listens on now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """
    Poll C{condition} every 50 ms, for at most C{seconds}.
    """
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


class ProcessTestCase(TestCase):
    """
    Runs commands in processes of their own, each in a new session, killed at
    the end of the test unless they ended; writes configuration files that
    are removed then.
    """

    timeout = 60

    def write_config(self, text: str, name: str = "dispatcher.toml") -> str:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = Path(directory) / name
        path.write_text(text)
        return str(path)

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> Collector:
        """
        Run C{python *args} from the project root; C{self.transport} is its
        process, to signal.
        """
        collector = Collector()
        transport = reactor.spawnProcess(  # type: ignore[attr-defined]
            collector,
            sys.executable,
            [sys.executable, "-c", _NEW_SESSION, sys.executable, *args],
            env=dict(os.environ) if env is None else env,
            path=str(ROOT),
        )

        def kill() -> Any:
            if not collector.ended.called:
                transport.signalProcess("KILL")
                return collector.ended

        self.addCleanup(kill)
        self.transport = transport
        return collector

    @defer.inlineCallbacks
    def wait_for(self, collector: Collector, text: bytes, seconds: float = 20) -> Any:
        """
        Wait until C{text} is in the process's output; fail the test if it
        ends or C{seconds} pass first.
        """
        deadline = time.monotonic() + seconds
        while text not in collector.output:
            if collector.ended.called or time.monotonic() > deadline:
                self.fail(
                    f"never saw {text!r}; output:\n{collector.output.decode()[-3000:]}"
                )
            yield deferLater(reactor, 0.05, lambda: None)


@defer.inlineCallbacks
def run_quick(
    case: TestCase, module: str, *, figures: bool = True
) -> Generator[Any, Any, tuple[str, Any]]:
    """
    Run C{python -m <module> --quick} from the project root (so that its
    children can import C{benchmarks}), with C{--json} into a directory C{case}
    removes afterwards when C{figures}; fail C{case} unless it exits 0.

    @return: a Deferred firing with its output and the figures it wrote
        (C{None} without C{figures}).
    """
    args = ["-m", module, "--quick"]
    path = None
    if figures:
        workdir = tempfile.mkdtemp()
        case.addCleanup(shutil.rmtree, workdir)
        path = Path(workdir) / "figures.json"
        args += ["--json", str(path)]
    out, err, code = yield utils.getProcessOutputAndValue(
        sys.executable, args, env=dict(os.environ), path=str(ROOT)
    )
    text = out.decode()
    case.assertEqual(code, 0, text[-3000:] + err.decode()[-2000:])
    return text, None if path is None else json.loads(path.read_text())


# --- throwaway certificates -------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _builder(subject: str, issuer: x509.Name, key: Any) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False
        )
    )


class Authority:
    """
    A certificate authority that lives as long as one test.
    """

    def __init__(self, name: str) -> None:
        self.key = _key()
        self.certificate = (
            _builder(name, _name(name), self.key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                True,
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, name: str, *, server: bool = False) -> tuple[bytes, bytes]:
        """
        A certificate for C{name} (client or server use): C{(cert, key)} PEM.
        """
        key = _key()
        usage = (
            ExtendedKeyUsageOID.SERVER_AUTH
            if server
            else (ExtendedKeyUsageOID.CLIENT_AUTH)
        )
        certificate = (
            _builder(name, self.certificate.subject, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.ExtendedKeyUsage([usage]), False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.key.public_key()
                ),
                False,
            )
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return certificate.public_bytes(serialization.Encoding.PEM), key_pem
