"""`cleanroom serve`: the HTTP API under gunicorn.

Two processes in turn, one pid:

1. `cleanroom serve` binds the port (one line and exit 2 if it is taken), checks that
   every source opens (each problem one line, exit 2), then replaces itself (exec)
   with a fresh interpreter running this module as gunicorn's master, handing it
   the bound socket (`fd://N`).
2. The master imports gunicorn and this module, nothing else, and forks the
   workers. Each worker builds its own Engine and warms it (post_worker_init)
   before it takes its first request.

Why the master must be a fresh interpreter: DuckDB's threads do not survive a
fork, and `import duckdb` alone starts one (duckdb 1.5 builds a DuckDBPyType at
import, which opens the module's default connection: an in-memory database with
a scheduler thread). The `cleanroom` command imports much of the gateway, duckdb
with it, before it knows what it will run; a worker forked from such a process
that then opens its own database dies at exit, with SIGABRT ("terminate called
without an active exception") or SIGSEGV: every worker, every shutdown. The
master therefore refuses to fork while duckdb is imported or any other thread
runs in it (`_check_fork_safe`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path

from gunicorn.app.base import BaseApplication

from gateway.errors import PolicyInvalid

log = logging.getLogger("gateway.http.serve")  # not __main__ in the master

THREADS_PER_WORKER = 4  # queries block on DuckDB, which releases the GIL
TIMEOUT_MARGIN_SECONDS = 30  # past the engine's own query timeout before gunicorn kills a worker


class GatewayServer(BaseApplication):
    def __init__(self, config_path: Path, options: dict):
        self.config_path = config_path
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings:  # settings differ between gunicorn releases
                self.cfg.set(key, value)

    def load(self):
        from gateway.engine import Engine  # after fork: keep DuckDB out of the master
        from gateway.http.app import create_app

        config_path = self.config_path
        return create_app(lambda: Engine.from_config_file(config_path))


def warm_up(worker) -> None:
    """Build and warm the worker's engine before it accepts its first request, so that
    request is not the slow one (Engine.warm says what is warmed). A failure is logged;
    requests then answer 503 until it is fixed."""
    started = time.monotonic()
    warming = threading.Event()

    def keep_alive() -> None:  # the master takes a worker silent for `timeout` for hung
        while not warming.wait(1.0):
            worker.notify()

    threading.Thread(target=keep_alive, name="warm-up-heartbeat", daemon=True).start()
    try:
        worker.wsgi.extensions["cleanroom_engine"].get().warm(wait=True)
    except Exception:
        log.exception("worker %s: the engine could not be built", worker.pid)
        return
    finally:
        warming.set()
    log.info("worker %s: engine ready in %.1f s", worker.pid, time.monotonic() - started)


def close_engine(server, worker) -> None:
    """Close the worker's engine on a graceful exit: its executors are stopped and its
    database closed before the interpreter exits."""
    app = getattr(worker, "wsgi", None)
    if app is not None:
        app.extensions["cleanroom_engine"].close()


def check_sources(config_path: Path):
    """The config, once every source in it could be opened (PolicyInvalid names the
    sources that cannot), so a broken source stops the start instead of every worker."""
    from gateway.config import load_config
    from gateway.sources import open_database

    config = load_config(config_path)
    open_database(config).close()
    return config


def run_server(config_path, host=None, port=None, workers=None, listen_fd: int | None = None) -> int:
    """Check, bind and exec into gunicorn's master (see the module's docstring); returns
    only on a problem found first: 2, having said what it is in one line per problem."""
    from gateway.config import load_config
    from gateway.listening import CannotListen, bind, inherited

    config_path = Path(config_path).resolve()
    try:
        config = load_config(config_path)
        host, port = host or config.http.host, port if port is not None else config.http.port
        sock = inherited(listen_fd) if listen_fd is not None else bind(host, port)  # first: a taken port fails fast
        check_sources(config_path)
    except CannotListen as error:
        print(f"cleanroom serve: {error}", file=sys.stderr)
        return 2
    except PolicyInvalid as error:
        print("\n".join(error.problems), file=sys.stderr)
        return 2
    sock.set_inheritable(True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [
        sys.executable, "-m", "gateway.http.serve", "--config", str(config_path), "--fd", str(sock.fileno()),
        "--workers", str(workers or config.http.workers),
        "--timeout", str(int(config.engine.query_timeout_seconds + TIMEOUT_MARGIN_SECONDS)),
    ])
    raise AssertionError("unreachable")  # pragma: no cover - execv does not return


def master(config_path: Path, fd: int, workers: int, timeout: int) -> int:
    """gunicorn's master, in a fresh interpreter, over the socket `cleanroom serve` bound."""
    problem = _check_fork_safe()
    if problem:
        print(f"cleanroom serve: {problem}", file=sys.stderr)
        return 70  # EX_SOFTWARE: a bug in the gateway, not in the config
    options = {
        "bind": f"fd://{fd}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": THREADS_PER_WORKER,
        "preload_app": False,
        "timeout": timeout,
        "graceful_timeout": 10,
        "post_worker_init": warm_up,
        "worker_exit": close_engine,
        "accesslog": "-",
        "errorlog": "-",
        "proc_name": "cleanroom-http",
        # gunicorn 27's control socket has one default path per user: two gateways
        # (or a test run beside a demo) would fight over it, and nothing here uses it.
        "control_socket_disable": True,
    }
    GatewayServer(config_path, options).run()
    return 0


def _check_fork_safe() -> str | None:
    """Why this process must not fork workers, or None: duckdb imported, or a thread
    besides this one (its locks and its library's state would be copied half-held)."""
    if "duckdb" in sys.modules:
        return "duckdb was imported in gunicorn's master; workers forked from it crash at exit"
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:  # not Linux: nothing to count with
        return None
    return None if threads == 1 else f"gunicorn's master runs {threads} threads before forking workers"


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="serve the HTTP API")
    parser.add_argument("--config", required=True, type=Path, help="gateway config file")
    parser.add_argument("--host", help="address to listen on (default: http.host in the config)")
    parser.add_argument("--port", type=int, help="port (default: http.port in the config)")
    parser.add_argument("--workers", type=int, help="worker processes (default: http.workers)")
    parser.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)  # a socket bound by `cleanroom demo`
    parser.set_defaults(handler=_serve)


def _serve(args) -> int:
    return run_server(args.config, host=args.host, port=args.port, workers=args.workers, listen_fd=args.listen_fd)


def _master_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.http.serve", description="gunicorn's master (internal)")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--fd", required=True, type=int)
    parser.add_argument("--workers", required=True, type=int)
    parser.add_argument("--timeout", required=True, type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return master(args.config, args.fd, args.workers, args.timeout)


if __name__ == "__main__":
    sys.exit(_master_main())
