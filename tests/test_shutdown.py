"""Clean start and stop (issue #13): `cleanroom serve`, `cleanroom pg` and `cleanroom demo`
stop on SIGTERM or SIGINT with exit status 0 and no crash in their output; a port in
use stops them before anything starts, in one line; a server that dies takes the
others down with it; an executor whose parent is gone ends quietly.

The crash these guard against: gunicorn workers forked from a process in which
`import duckdb` had started DuckDB's threads died at exit with SIGABRT or SIGSEGV
(gateway/http/serve.py says why, and how the master is kept clear of DuckDB).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.servers import REPO, HttpGateway, Launched, PgServer, free_port

# Every test starts servers (some the demo, with its data); the slow part of the suite.
pytestmark = [pytest.mark.server, pytest.mark.slow]

START_SECONDS = 180.0  # the demo's start on a loaded 2-core machine: generous, it only bounds a hang
STOP_SECONDS = 60.0
# What a crash, or an exception nobody handled, leaves in the output.
CRASH_SIGNS = ("Segmentation", "SIGSEGV", "SIGABRT", "core dumped", "terminate called", "Traceback",
               "was sent SIG", "exited with code")


def cleanroom(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway", *args]


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def query(port: int) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/query",
        data=json.dumps({"sql": "SELECT region, COUNT(DISTINCT household_id) AS households FROM purchases "
                                "GROUP BY region"}).encode(),
        headers={"Authorization": "Bearer analyst", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def descendants(pid: int) -> list[int]:
    """Every process below pid (executors run in sessions of their own, still its descendants)."""
    found, parents = [], {pid}
    while parents:
        children = []
        for parent in parents:
            try:
                children += [int(c) for c in Path(f"/proc/{parent}/task/{parent}/children").read_text().split()]
            except OSError:
                pass
        found += children
        parents = set(children)
    return found


def gone(pids: list[int]) -> bool:
    """Whether none of pids still runs (a zombie nobody reaped counts as gone)."""
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            return False
    return True


def stop(server: Launched, sig: int) -> int:
    server.process.send_signal(sig)
    try:
        return server.process.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        pytest.fail(f"no exit {STOP_SECONDS:g} s after {signal.Signals(sig).name}")


def assert_clean(log: str) -> None:
    signs = [sign for sign in CRASH_SIGNS if sign in log]
    assert not signs, f"{signs} in the output:\n{log[-6000:]}"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_cleanly(demo_config_path, tmp_path, sig):
    server = HttpGateway(demo_config_path, tmp_path / "serve.log", workers=2)
    for _ in range(4):  # DuckDB at work in the workers and their executors
        assert query(server.port)["rows"]
    # The pid started is gunicorn's master now (exec), and DuckDB never entered it.
    assert "gateway.http.serve" in Path(f"/proc/{server.pid}/cmdline").read_text()
    assert "_duckdb" not in Path(f"/proc/{server.pid}/maps").read_text()
    # Each worker warms its engine before it accepts (post_worker_init): its executors are up.
    server.wait_for(lambda: server.log().count(": engine ready in") == 2, "both workers")
    below = descendants(server.pid)
    assert len(below) == 2 + 2 * 2  # two workers, two executors each (the demo config's)

    code = stop(server, sig)
    assert code == 0, server.log()[-6000:]
    assert_clean(server.log())
    deadline = time.monotonic() + 10
    while not gone(below) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gone(below), "a worker or executor outlived the server"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_pg_stops_cleanly(demo_config_path, tmp_path, sig):
    server = PgServer(demo_config_path, tmp_path / "pg.log")
    below = descendants(server.pid)
    assert len(below) == 2  # the executors, started before the port listened
    code = stop(server, sig)
    assert code == 0, server.log()[-6000:]
    assert_clean(server.log())
    assert gone(below)


def start_demo(tmp_path) -> tuple[Launched, int, int]:
    http_port, pg_port = free_port(), free_port()
    demo = Launched(cleanroom("demo", "--http-port", str(http_port), "--pg-port", str(pg_port),
                              "--data-dir", str(tmp_path / "demo"), "--scale", "0.05"), tmp_path / "demo.log")
    demo.wait_for(lambda: f"port={pg_port} " in demo.log(), "cleanroom demo", START_SECONDS)
    return demo, http_port, pg_port


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_demo_stops_cleanly(tmp_path, sig):
    demo, http_port, pg_port = start_demo(tmp_path)
    assert healthy(http_port) and accepts(pg_port)  # the instructions appear once both answer
    assert query(http_port)["rows"]
    below = descendants(demo.pid)
    code = stop(demo, sig)
    assert code == 0, demo.log()[-6000:]
    assert_clean(demo.log())
    assert gone(below)
    assert not accepts(http_port) and not accepts(pg_port)


def test_demo_stops_when_a_server_dies(tmp_path):
    demo, http_port, pg_port = start_demo(tmp_path)
    wire = [pid for pid in descendants(demo.pid) if "\0pg\0" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(wire) == 1
    os.kill(wire[0], signal.SIGKILL)
    assert demo.process.wait(STOP_SECONDS) == 1
    last_line = demo.log().strip().splitlines()[-1]
    assert last_line == "cleanroom demo: the wire server ended (was killed by SIGKILL); the demo stopped"
    assert not accepts(http_port)  # the HTTP server went down with it


def test_pg_workers_stop_together(demo_config_path, tmp_path):
    """One of several wire workers dying stops the others and the supervisor, non-zero."""
    server = PgServer(demo_config_path, tmp_path / "pg.log", workers=2)
    workers = [int(pid) for pid in Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    assert server.process.wait(STOP_SECONDS) == 1
    assert "cleanroom pg: worker 0 ended with exit status -9; the other workers were stopped" in server.log()
    assert gone(workers)


@pytest.fixture
def taken_port():
    """A port another process (here: this one) listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("command", ["serve", "pg", "demo --http-port", "demo --pg-port"])
def test_port_in_use_fails_fast_in_one_line(demo_config_path, tmp_path, taken_port, command):
    if command == "serve":
        args = ["serve", "--config", str(demo_config_path), "--host", "127.0.0.1", "--port", str(taken_port)]
    elif command == "pg":
        args = ["pg", "--config", str(demo_config_path), "--host", "127.0.0.1", "--port", str(taken_port)]
    else:
        ports = {"--http-port": free_port(), "--pg-port": free_port(), command.split()[1]: taken_port}
        args = ["demo", "--data-dir", str(tmp_path / "demo"), "--scale", "0.05",
                *[str(part) for option, port in ports.items() for part in (option, port)]]
    result = subprocess.run(cleanroom(*args), cwd=REPO, capture_output=True, text=True, timeout=STOP_SECONDS)
    program = args[0]
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        f"cleanroom {program}: cannot listen on 127.0.0.1:{taken_port}: address already in use"], result.stderr
    assert result.stdout == ""  # nothing generated, nothing started
    assert not (tmp_path / "demo").exists()


def test_executor_ends_quietly_when_its_parent_leaves_during_start(demo_config_path):
    """The parent gone before the executor said it was ready: no BrokenPipe traceback."""
    from multiprocessing.connection import Connection

    from gateway.config import load_config

    ours, theirs = socket.socketpair()
    with theirs:
        child = subprocess.Popen([sys.executable, "-m", "gateway.executor_main", str(theirs.fileno())],
                                 pass_fds=[theirs.fileno()], cwd=REPO, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    pipe = Connection(ours.detach())
    pipe.send(load_config(demo_config_path))
    pipe.close()  # as a front end exiting while its executors start
    out, err = child.communicate(timeout=STOP_SECONDS)
    assert child.returncode == 0
    assert (out, err) == ("", "")


ORPHANING_PARENT = """
import sys, time
from gateway.config import load_config
from gateway.engine.executors import Executor
executor = Executor(load_config(sys.argv[1]), time.monotonic() + 120)
print(executor.process.pid, flush=True)
executor.run("SELECT count(*) FROM range(1000000000000)", 10, time.monotonic() + 600)
"""


def test_executor_ends_when_its_parent_is_killed_mid_statement(demo_config_path):
    parent = subprocess.Popen([sys.executable, "-c", ORPHANING_PARENT, str(demo_config_path)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    executor = int(parent.stdout.readline())
    time.sleep(0.5)  # inside its statement (one that would run for hours)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + STOP_SECONDS
    while not gone([executor]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gone([executor]), "the executor ran on without its parent"
