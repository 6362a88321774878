"""Real TLS servers (Python ssl) on several loopback addresses, and a DNS server that answers A records.

`TlsNodes` binds one port on several addresses (127.0.0.2, 127.0.0.3 ...) and serves a
different certificate chain from each, like the nodes of a load-balanced test website where one
node was never updated. `AddressDns` answers A/AAAA questions for chosen names (dnslib).
"""

from __future__ import annotations

import socket
import ssl
import tempfile
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .registry_servers import DnsServer


def _pem_files(chain: list[x509.Certificate], key, folder: Path, tag: str) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{tag}.crt", folder / f"{tag}.key"
    cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class TlsNodes:
    """One TCP port on several loopback addresses; `nodes[address] = (chain, key)` picks what each serves."""

    def __init__(self, nodes: dict[str, tuple[list[x509.Certificate], object]]):
        self._dir = tempfile.TemporaryDirectory(prefix="ctscan-tls-")
        self._contexts: dict[str, ssl.SSLContext] = {}
        for i, (address, (chain, key)) in enumerate(nodes.items()):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*_pem_files(chain, key, Path(self._dir.name), f"node{i}"))
            self._contexts[address] = ctx
        self.handshakes: list[tuple[str, str | None]] = []  # (address, SNI name)
        self._socks = self._bind(list(nodes))
        self.port = self._socks[0].getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @staticmethod
    def _bind(addresses: list[str]) -> list[socket.socket]:
        for _ in range(20):  # the first address picks a free port; the others may find it taken
            socks: list[socket.socket] = []
            try:
                for address in addresses:
                    s = socket.socket()
                    socks.append(s)
                    s.bind((address, socks[0].getsockname()[1] if len(socks) > 1 else 0))
                    s.listen(16)
                    s.settimeout(0.2)
                return socks
            except OSError:
                for s in socks:
                    s.close()
        raise OSError(f"could not bind one port on all of {addresses}")

    def _serve(self, sock: socket.socket, ctx: ssl.SSLContext, address: str) -> None:
        def sni(_sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            self.handshakes.append((address, name))

        ctx.sni_callback = sni  # type: ignore[assignment]
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                conn.settimeout(2)
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            except (OSError, ssl.SSLError):
                conn.close()

    def start(self) -> TlsNodes:
        """Serve each address in its own thread."""
        for sock, (address, ctx) in zip(self._socks, self._contexts.items()):
            t = threading.Thread(target=self._serve, args=(sock, ctx, address), daemon=True, name=f"tls-{address}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        """Stop serving and remove the key files."""
        self._stop.set()
        for t in self._threads:
            t.join(2)
        for s in self._socks:
            s.close()
        self._dir.cleanup()

    def __enter__(self) -> TlsNodes:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def AddressDns(records: dict[str, list[str]]) -> DnsServer:  # noqa: N802  (reads like the server it builds)
    """A loopback DNS server answering A/AAAA for `records[name]`; other names get NXDOMAIN."""
    zone: dict[tuple[str, str], list[str]] = {}
    for name, addrs in records.items():
        zone[(name, "A")] = [f"{name}. 60 IN A {a}" for a in addrs if ":" not in a]
        zone[(name, "AAAA")] = [f"{name}. 60 IN AAAA {a}" for a in addrs if ":" in a]
    return DnsServer(records=zone)


class SilentDns:
    """A UDP socket on 127.0.0.1:<free port> that reads DNS questions and never answers (a resolver that hangs)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.questions = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True, name="dns-silent")

    @property
    def address(self) -> str:
        """ADDR:PORT for --dns-server."""
        return f"127.0.0.1:{self.port}"

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                self._sock.recvfrom(4096)
                self.questions += 1
            except TimeoutError:
                continue
            except OSError:
                return

    def start(self) -> SilentDns:
        """Start reading questions."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop and close the socket."""
        self._stop.set()
        self._thread.join(2)
        self._sock.close()

    def __enter__(self) -> SilentDns:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
