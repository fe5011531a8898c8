"""`cleanroom serve`: the HTTP API under gunicorn, run in-process.

Workers are forked before any engine exists (preload_app off): each builds its
own Engine, since DuckDB connections and threads do not survive a fork.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from gunicorn.app.base import BaseApplication

from gateway.errors import PolicyInvalid

log = logging.getLogger(__name__)

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
    """Build the worker's engine before its first request, so that request is not slow.
    A failure here is logged; requests then answer 503 until it is fixed."""
    try:
        worker.wsgi.extensions["cleanroom_engine"].get()
    except Exception:
        log.exception("worker %s: the engine could not be built", worker.pid)


def close_engine(server, worker) -> None:
    """Close the worker's engine on a graceful exit, so DuckDB shuts down cleanly."""
    app = getattr(worker, "wsgi", None)
    if app is not None:
        app.extensions["cleanroom_engine"].close()


def load_gateway_config(config_path: Path):
    """The config, once every source in it could be opened (PolicyInvalid names the
    sources that cannot), so a broken source stops the start instead of every worker."""
    from gateway.config import load_config
    from gateway.sources import open_database

    config = load_config(config_path)
    open_database(config).close()
    return config


def run_server(config_path, host=None, port=None, workers=None) -> None:
    config_path = Path(config_path).resolve()
    config = load_gateway_config(config_path)  # fail here, once, rather than in every worker
    host, port = host or config.http.host, port or config.http.port
    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",  # IPv6 needs brackets
        "workers": workers or config.http.workers,
        "worker_class": "gthread",
        "threads": THREADS_PER_WORKER,
        "preload_app": False,
        "timeout": int(config.engine.query_timeout_seconds + TIMEOUT_MARGIN_SECONDS),
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


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="serve the HTTP API")
    parser.add_argument("--config", required=True, type=Path, help="gateway config file")
    parser.add_argument("--host", help="address to listen on (default: http.host in the config)")
    parser.add_argument("--port", type=int, help="port (default: http.port in the config)")
    parser.add_argument("--workers", type=int, help="worker processes (default: http.workers)")
    parser.set_defaults(handler=_serve)


def _serve(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_server(args.config, host=args.host, port=args.port, workers=args.workers)
    except PolicyInvalid as error:
        print("\n".join(error.problems), file=sys.stderr)
        return 2
    return 0
