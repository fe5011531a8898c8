"""The Postgres wire front end's transport: asyncio streams, TLS, limits.

One event loop serves every connection; engine calls (and encoding of large
batches) run in a thread pool, except a statement the engine can answer from
memory (Engine.runs_in_memory), which runs on the loop. Audit records are
written and fsync'd by the audit log's own thread, never on the loop, which
therefore never waits on the disk. Idle connections cost a coroutine and two
buffers. `cleanroom pg --config FILE` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from gateway.errors import PolicyInvalid
from gateway.pgwire import messages as m
from gateway.pgwire.session import ServerState, Session

log = logging.getLogger("gateway.pgwire")

READ_LIMIT = 64 * 1024
_LENGTH = struct.Struct("!i")


class StreamTransport:
    """Session I/O over asyncio streams, with message size limits."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pool, tls: bool):
        self.reader, self.writer, self.pool, self.tls = reader, writer, pool, tls
        self.buffer = bytearray()  # bytes read but not yet taken as messages (a pipelined batch, say)
        self.pos = 0

    async def read_message(self) -> tuple[bytes, bytes]:
        """The next typed message. Whatever the socket has is read in one go, and the messages
        a client pipelined (Bind, Describe, Execute, Sync) are cut from it without more awaits."""
        buffer = self.buffer
        while True:
            pos = self.pos
            available = len(buffer) - pos
            if available >= 5:
                (length,) = _LENGTH.unpack_from(buffer, pos + 1)
                if length < 4:
                    raise m.ProtocolViolation("invalid message length")
                if length - 4 > m.MAX_MESSAGE_BYTES:
                    raise MessageTooLarge(length)
                if available > length:
                    kind = bytes(buffer[pos : pos + 1])
                    body = bytes(buffer[pos + 5 : pos + 1 + length])
                    self.pos = pos + 1 + length
                    if self.pos == len(buffer):
                        buffer.clear()
                        self.pos = 0
                    return kind, body
            if pos:
                del buffer[:pos]
                self.pos = 0
            data = await self.reader.read(READ_LIMIT)
            if not data:
                raise asyncio.IncompleteReadError(bytes(buffer), None)
            buffer += data

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def drain(self) -> None:
        transport = self.writer.transport
        if transport.get_write_buffer_size() == 0 and not transport.is_closing():
            return  # everything went straight into the socket: nothing to wait for
        await self.writer.drain()

    async def run(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, function, *args)

    async def wait(self, future: concurrent.futures.Future):
        """A future completed elsewhere (an audit record made durable), without holding a
        thread. Completed on the loop's own thread, it wakes the session directly;
        from another thread, through call_soon_threadsafe."""
        if future.done():
            return future.result()
        loop = asyncio.get_running_loop()
        waiter, loop_thread = loop.create_future(), threading.get_ident()

        def done(completed: concurrent.futures.Future) -> None:
            if threading.get_ident() == loop_thread:
                _settle(waiter, completed)
            else:
                loop.call_soon_threadsafe(_settle, waiter, completed)

        future.add_done_callback(done)
        return await waiter


def _settle(waiter: asyncio.Future, completed: concurrent.futures.Future) -> None:
    if waiter.done():  # the session went away meanwhile
        return
    error = completed.exception()
    if error is None:
        waiter.set_result(completed.result())
    else:
        waiter.set_exception(error)


class MessageTooLarge(Exception):
    pass


class PgServer:
    def __init__(self, engine, config, pool_size: int | None = None, worker: int = 0, cancel_dir: Path | None = None):
        self.state = ServerState(engine=engine, config=config, worker=worker)
        self.cancel_dir = cancel_dir  # with several workers: unix sockets that take forwarded CancelRequests
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=pool_size or max(4, 2 * config.engine.threads), thread_name_prefix="pgwire")
        self.ssl_context = None
        if config.pg.tls_cert and config.pg.tls_key:
            self.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ssl_context.load_cert_chain(str(config.pg.tls_cert), str(config.pg.tls_key))
        self.server: asyncio.base_events.Server | None = None
        self.cancel_server = None
        self.connections: set[asyncio.Task] = set()  # one task per open connection, ended by stop()

    async def start(self, host: str, port: int, sock=None, reuse_port: bool = False):
        if sock is not None:
            self.server = await asyncio.start_server(self.handle, sock=sock, limit=READ_LIMIT)
        else:
            self.server = await asyncio.start_server(self.handle, host, port, limit=READ_LIMIT, reuse_address=True,
                                                     reuse_port=reuse_port or None)
        if self.cancel_dir is not None:
            path = _cancel_socket(self.cancel_dir, self.state.worker)
            path.unlink(missing_ok=True)
            self.cancel_server = await asyncio.start_unix_server(self.handle, path=str(path))
        return self.server

    async def forward_cancel(self, key: m.CancelKey) -> None:
        """A CancelRequest for a session of another worker process goes to that worker."""
        from gateway.pgwire.session import MAX_WORKERS

        target = key.pid % MAX_WORKERS
        if target == self.state.worker or self.cancel_dir is None:
            self.state.cancel(key.pid, key.secret)
            return
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(_cancel_socket(self.cancel_dir, target))), 2)
            writer.write(struct.pack("!iiii", 16, m.CANCEL_REQUEST, key.pid, key.secret))
            await writer.drain()
            writer.close()
        except (OSError, asyncio.TimeoutError):
            pass

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        transport = StreamTransport(reader, writer, self.pool, tls=False)
        session = None
        task = asyncio.current_task()
        self.connections.add(task)
        try:
            startup = await self._negotiate(transport, writer)
            if startup is None:
                return
            session = Session(self.state, transport, peer)
            if await session.start(startup):
                await session.serve()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ssl.SSLError):
            pass  # the client went away
        except asyncio.CancelledError:
            pass  # the server is stopping (stop()): the connection closes below, the task ends normally
        except MessageTooLarge as error:
            self._fatal(writer, "54000", f"message of {error.args[0]} bytes exceeds the limit of {m.MAX_MESSAGE_BYTES}")
        except m.ProtocolViolation as error:
            self._fatal(writer, "08P01", f"protocol violation: {error}")
        except Exception:  # noqa: BLE001 - one broken connection must not take the server down
            log.exception("pgwire: connection from %s failed", peer)
        finally:
            self.connections.discard(task)
            if session is not None:
                session.close()
            try:
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 5)
            except (Exception, asyncio.CancelledError):  # noqa: BLE001 - closing, whatever the peer does
                pass

    def _fatal(self, writer, sqlstate: str, text: str) -> None:
        try:
            writer.write(m.error_response(sqlstate, text, severity="FATAL"))
        except Exception:  # noqa: BLE001
            pass

    async def _negotiate(self, transport: StreamTransport, writer) -> m.Startup | None:
        """SSLRequest / GSSENCRequest / CancelRequest, until a StartupMessage arrives."""
        for _ in range(3):
            header = await transport.reader.readexactly(4)
            (length,) = struct.unpack("!i", header)
            if length < 8 or length > m.MAX_STARTUP_BYTES:
                raise m.ProtocolViolation("invalid startup packet length")
            first = m.decode_startup(await transport.reader.readexactly(length - 4))
            if first == m.SSL_REQUEST:
                if self.ssl_context is not None and not transport.tls:
                    writer.write(b"S")
                    await writer.drain()
                    await writer.start_tls(self.ssl_context)
                    transport.tls = True
                else:
                    writer.write(b"N")
                    await writer.drain()
                continue
            if first == m.GSSENC_REQUEST:
                writer.write(b"N")
                await writer.drain()
                continue
            if isinstance(first, m.CancelKey):
                await self.forward_cancel(first)
                return None
            return first
        raise m.ProtocolViolation("too many negotiation requests")

    async def stop(self) -> None:
        """Stop listening, end every open connection, and return once their tasks have
        (left to asyncio.run, each cancelled handler would be logged as an error)."""
        for server in (self.server, self.cancel_server):
            if server is not None:
                server.close()
        connections = list(self.connections)
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        self.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.cancel_server is not None:
            self.cancel_server.close()
        self.pool.shutdown(wait=False, cancel_futures=True)


def _cancel_socket(folder: Path, worker: int) -> Path:
    return Path(folder) / f"pgwire-cancel-{worker}.sock"


def run_pg_server(config_path, host: str | None = None, port: int | None = None, workers: int = 1,
                  worker: int | None = None, cancel_dir: Path | None = None, listen_fd: int | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then return 0. With workers > 1, start that many
    processes sharing the port (SO_REUSEPORT, or the socket listen_fd when a parent
    bound it): each has its own engine, so statements scale across cores.

    The port is bound first: one taken is reported in one line (exit 2) before the
    engine is built. The socket listens only once the engine is warm, so the first
    client waits for nothing the server could have done before."""
    from gateway.config import load_config
    from gateway.listening import CannotListen, bind, inherited

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(Path(config_path))
    host = host or config.pg.host
    port = port if port is not None else config.pg.port
    try:
        if listen_fd is not None:
            sock = inherited(listen_fd)
        elif workers > 1 and worker is None:
            bind(host, port).close()  # in use? The workers bind it themselves, sharing it
            sock = None
        else:
            sock = bind(host, port, reuse_port=worker is not None)
    except CannotListen as error:
        print(f"cleanroom pg: {error}", file=sys.stderr)
        return 2
    if workers > 1 and worker is None:
        return _supervise(config_path, host, port, workers, sock)

    from gateway.engine import Engine

    engine = Engine(config)
    try:
        warm(engine)

        async def main() -> None:
            server = PgServer(engine, config, worker=worker or 0, cancel_dir=cancel_dir)
            await server.start(host, port, sock=sock)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            # SIGHUP reloads the policies off the loop; a bad edit keeps the old ones serving.
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, engine.reload))
            listening = sock.getsockname()
            log.info("pgwire: listening on %s:%s", host, listening[1])
            print(f"cleanroom pg: listening on {host}:{listening[1]}", flush=True)
            await stop.wait()
            await server.stop()

        asyncio.run(main())
    finally:
        engine.close()
    return 0


def warm(engine) -> None:
    """Before the socket listens: every executor process started and its database open
    (a statement would otherwise wait half a second or more for one)."""
    started = time.monotonic()
    engine.warm(wait=True)
    log.info("pgwire: engine ready in %.1f s", time.monotonic() - started)


def _supervise(config_path, host: str, port: int, workers: int, sock) -> int:
    """Start the worker processes and wait. One that ends on its own (it could not bind,
    or crashed) stops the others: a server missing a worker would serve on, unnoticed.
    Returns 0 after SIGTERM/SIGINT, else the failed worker's exit status (1 if killed)."""
    import tempfile

    cancel_dir = Path(tempfile.mkdtemp(prefix="cleanroom-pgwire-"))
    shared = [] if sock is None else ["--listen-fd", str(sock.fileno())]
    if sock is not None:
        sock.set_inheritable(True)
    children = [
        subprocess.Popen([sys.executable, "-m", "gateway.pgwire", "--config", str(config_path), "--host", host,
                          "--port", str(port), "--worker-index", str(i), "--cancel-dir", str(cancel_dir), *shared],
                         pass_fds=[sock.fileno()] if sock is not None else ())
        for i in range(workers)
    ]
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.terminate()

    def reload(*_):
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    failed = None
    try:
        while not stopping and failed is None:
            failed = next((child for child in children if child.poll() is not None), None)
            time.sleep(0.2)
    finally:
        stop()
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        shutil.rmtree(cancel_dir, ignore_errors=True)
    if failed is None:
        return 0
    print(f"cleanroom pg: worker {children.index(failed)} ended with exit status {failed.returncode}; "
          "the other workers were stopped", file=sys.stderr)
    return failed.returncode if failed.returncode > 0 else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="gateway config file")
    parser.add_argument("--host", help="listen address (default: pg.host in the config)")
    parser.add_argument("--port", type=int, help="listen port (default: pg.port in the config, 5433)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes sharing the port (SO_REUSEPORT), one engine each (default 1)")
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cancel-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # a socket bound by the parent
    parser.add_argument("--scram-verifier", action="store_true",
                        help="read a password on stdin and print its SCRAM-SHA-256 verifier for users.<name>.scram_sha256")


def register(subparsers) -> None:
    parser = subparsers.add_parser("pg", help="serve the Postgres wire protocol")
    add_arguments(parser)
    parser.set_defaults(handler=_handler)


def _handler(args) -> int:
    if args.scram_verifier:
        from gateway.pgwire.scram import make_verifier

        password = sys.stdin.readline().rstrip("\n")
        print(make_verifier(password))
        return 0
    if args.config is None:
        print("cleanroom pg: --config is required", file=sys.stderr)
        return 2
    try:
        return run_pg_server(args.config, args.host, args.port, workers=max(1, min(args.workers, 64)),
                             worker=args.worker_index, cancel_dir=args.cancel_dir, listen_fd=args.listen_fd)
    except PolicyInvalid as error:  # a bad config or an unreadable source: say which, no traceback
        print("\n".join(error.problems), file=sys.stderr)
        return 2
