"""Real servers on 127.0.0.1 (and local PostgreSQL) that the network tests talk to."""

from __future__ import annotations

import socket
import socketserver
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # typing.Self is Python 3.11+; the project supports 3.10
    from typing_extensions import Self


class ServedInThread:
    """start(), stop() and `with` for a loopback server whose socketserver (`_served`) runs in a daemon thread."""

    _served: socketserver.BaseServer

    def start(self) -> Self:
        """Serve in a daemon thread; returns self."""
        threading.Thread(target=self._served.serve_forever, daemon=True, name=type(self).__name__).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._served.shutdown()
        self._served.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class UdpServedInThread:
    """start(), stop() and `with` for a UDP loopback server: `_serve` loops on `_sock` until `_stop` is set."""

    _sock: socket.socket
    _stop: threading.Event
    _thread: threading.Thread | None

    def _serve(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._serve, daemon=True, name=type(self).__name__)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        self._sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
