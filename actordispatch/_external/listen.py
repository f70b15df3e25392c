"""
Serving the AMP endpoint: L{listen} on a Twisted server endpoint, plaintext
only on this machine (a UNIX socket, loopback TCP) unless told otherwise, and
TLS with client certificates from a configured CA (L{TLSServerOptions}).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import define, field, frozen
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from actordispatch._core.errors import ActorDispatchError
from actordispatch._external.server import DispatcherAMPFactory

if TYPE_CHECKING:
    from actordispatch._dispatch.dispatcher import EventDispatcher

__all__ = ["AMPListener", "InsecureEndpointError", "TLSServerOptions", "listen"]

_log = Logger()


class InsecureEndpointError(ActorDispatchError, ValueError):
    """
    L{listen} was asked for plaintext beyond loopback without C{insecure=True}.
    """


def _split_pem(data: bytes) -> list[bytes]:
    marker = b"-----BEGIN CERTIFICATE-----"
    return [marker + part for part in data.split(marker)[1:]]


@frozen
class TLSServerOptions:
    """
    TLS for the AMP endpoint, with mandatory client certificates.

    @ivar certificate: PEM: the server's certificate, then any intermediate
        certificates.
    @ivar private_key: PEM: the server certificate's private key.
    @ivar client_ca: PEM: the certificates of the authorities whose client
        certificates are accepted (one or more).
    @ivar allowed_peers: if set, only clients whose certificate's subject
        common name or a DNS subject alternative name is listed.
    """

    certificate: bytes
    private_key: bytes
    client_ca: bytes
    allowed_peers: frozenset[str] | None = field(
        default=None, converter=lambda v: None if v is None else frozenset(v)
    )

    @classmethod
    def from_files(
        cls,
        certificate: str | Path,
        private_key: str | Path,
        client_ca: str | Path,
        allowed_peers: Collection[str] | None = None,
    ) -> TLSServerOptions:
        """
        Read the PEM files.
        """
        return cls(
            Path(certificate).read_bytes(),
            Path(private_key).read_bytes(),
            Path(client_ca).read_bytes(),
            None if allowed_peers is None else frozenset(allowed_peers),
        )

    @classmethod
    def from_config(cls, table: Mapping[str, Any]) -> TLSServerOptions:
        """
        From a configuration table: C{certificate}, C{private_key} and
        C{client_ca} (paths to PEM files), and optionally C{allowed_peers} (a
        list of names).

        @raise ValueError: for a missing or unknown key.
        """
        known = {"certificate", "private_key", "client_ca", "allowed_peers"}
        unknown = sorted(set(table) - known)
        missing = sorted({"certificate", "private_key", "client_ca"} - set(table))
        if unknown or missing:
            raise ValueError(
                f"tls: unknown keys {unknown}, missing keys {missing} (known: "
                f"{', '.join(sorted(known))})"
            )
        return cls.from_files(
            table["certificate"],
            table["private_key"],
            table["client_ca"],
            table.get("allowed_peers"),
        )

    def certificate_options(self) -> Any:
        """
        Twisted's C{CertificateOptions}: this certificate, TLS 1.2 or later,
        and a client certificate signed by one of C{client_ca} required (a
        C{trustRoot} makes Twisted verify the peer and require its
        certificate).
        """
        from twisted.internet import ssl

        chain = _split_pem(self.certificate)
        if not chain:
            raise ValueError("tls: the certificate holds no PEM certificate")
        server = ssl.PrivateCertificate.loadPEM(chain[0] + b"\n" + self.private_key)
        authorities = [
            ssl.Certificate.loadPEM(pem) for pem in _split_pem(self.client_ca)
        ]
        if not authorities:
            raise ValueError("tls: client_ca holds no PEM certificate")
        return ssl.CertificateOptions(
            privateKey=server.privateKey.original,
            certificate=server.original,
            extraCertChain=[ssl.Certificate.loadPEM(p).original for p in chain[1:]],
            trustRoot=ssl.trustRootFromCertificates(authorities),
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        )


def _is_private(address: Any) -> bool:
    """
    Whether only this machine can reach C{address}: a UNIX socket, or TCP on
    a loopback interface.
    """
    if isinstance(address, UNIXAddress):
        return True
    if isinstance(address, (IPv4Address, IPv6Address)):
        try:
            return ipaddress.ip_address(address.host.split("%")[0]).is_loopback
        except ValueError:
            return False
    return False


@define
class AMPListener:
    """
    A listening AMP endpoint: its port and factory.  It looks enough like a
    port (C{getHost}, C{stopListening}) to stand in for one.
    """

    port: Any
    factory: DispatcherAMPFactory

    def getHost(self) -> Any:
        """
        The address it listens on.
        """
        return self.port.getHost()

    def stopListening(self) -> Deferred[None]:
        """
        Stop listening and close every connection (their handlers are
        removed).
        """
        self.factory.accepting = False
        stopped: Deferred[Any] = DeferredList(
            [maybeDeferred(self.port.stopListening), self.factory.disconnect_all()],
            consumeErrors=True,
        )
        return stopped.addCallback(lambda _: None)


def listen(
    reactor: Any,
    dispatcher: EventDispatcher,
    endpoint: str,
    *,
    insecure: bool = False,
    tls: TLSServerOptions | Mapping[str, Any] | None = None,
    **factory_options: Any,
) -> Deferred[AMPListener]:
    """
    Serve the AMP endpoint of C{dispatcher} on C{endpoint}, a Twisted server
    endpoint string (C{"unix:/run/ad.sock"}, C{"tcp:8750:interface=127.0.0.1"}).

    Without C{tls}, only a UNIX socket or TCP on a loopback interface is
    allowed, since anyone who can connect can run events and serve as a
    handler; anything else (all interfaces, a public address, an C{ssl:}
    endpoint beyond loopback: it does not check clients) needs
    C{insecure=True}.  With C{tls}, the endpoint is wrapped in TLS that
    requires a client certificate from C{tls.client_ca} (and, if given, one of
    C{tls.allowed_peers}), on any interface.

    @param tls: L{TLSServerOptions}, or a configuration table for
        L{TLSServerOptions.from_config}.
    @param factory_options: keyword arguments for L{DispatcherAMPFactory}.
    @return: a Deferred firing with the L{AMPListener}; failing with
        L{InsecureEndpointError} (and not listening) when refused.
    """
    from twisted.internet.endpoints import serverFromString, wrapServerTLS

    if tls is not None and not isinstance(tls, TLSServerOptions):
        tls = TLSServerOptions.from_config(tls)
    if tls is not None:
        factory_options.setdefault("allowed_peers", tls.allowed_peers)
    factory = DispatcherAMPFactory(dispatcher, reactor=reactor, **factory_options)
    # Nothing is served until the address has been checked.
    factory.accepting = False
    server = serverFromString(reactor, endpoint)
    if tls is not None:
        server = wrapServerTLS(tls.certificate_options(), server)

    def listening(port: Any) -> Any:
        address = port.getHost()
        if tls is None and not insecure and not _is_private(address):

            def refuse(_: object) -> Failure:
                return Failure(
                    InsecureEndpointError(
                        f"{endpoint!r} listens on {address}, beyond this machine, "
                        "without TLS client certificates: pass tls=... (or "
                        "insecure=True if another layer protects it)"
                    )
                )

            return maybeDeferred(port.stopListening).addBoth(refuse)
        factory.accepting = True
        _log.info(
            "AMP endpoint for external processes on {address}{tls}",
            address=str(address),
            tls=" (TLS, client certificates required)" if tls is not None else "",
        )
        return AMPListener(port, factory)

    return server.listen(factory).addCallback(listening)
