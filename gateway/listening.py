"""Listening sockets, bound before anything slow starts.

`cleanroom serve`, `cleanroom pg` and `cleanroom demo` bind their ports first, so a
port another process holds is reported at once, in one line, before any source is
opened or any process started; the bound socket is then handed to what serves it
(gunicorn's master as `fd://N`, the wire server's event loop as `sock=`), so no
other process can take the port in between.
"""

from __future__ import annotations

import socket


class CannotListen(Exception):
    """The address cannot be bound (in use, not this host's, not resolvable)."""


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to host:port, not yet listening (whoever serves it listens,
    so until then a client is refused rather than left waiting)."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except OSError as error:  # socket.gaierror: an unknown host name
        raise CannotListen(f"cannot listen on {where}: {error.strerror or error}") from None
    sock = socket.socket(family, kind, proto)
    try:
        # A restart must not wait out the old connections' TIME_WAIT; a listener that
        # holds the port still refuses the bind (Linux checks for one).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # several wire worker processes share the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise CannotListen(f"cannot listen on {where}: {(error.strerror or str(error)).lower()}") from None
    return sock


def inherited(fd: int) -> socket.socket:
    """The bound socket a parent passed down as file descriptor fd."""
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    return sock
