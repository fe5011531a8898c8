"""Mixed load: both front ends at once, replayed releases against SELECT 1, memory over time.

    .venv/bin/python bench/mixed_load.py [--clients 16] [--phase-seconds 10] [--seconds 60] [--workers 2]

Builds the demo clean room in a temporary folder (as the tests do), with the
operator's quotas raised so that the load itself is not refused, and starts the
HTTP front end (`cleanroom serve`, --workers gunicorn workers) and the wire front
end (`python -m gateway.pgwire`, --workers processes) on one state. The demo's
headline DP aggregate is released once (paid once); every later run of it is a
replay: the same noisy answer, free.

1. Each front end alone, --clients clients, --phase-seconds each: `SELECT 1`, then
   the replay. Median and 95th percentile latency, and replay / SELECT 1 (the
   issue's bar: at most 2x at the same concurrency).
2. Each front end alone with its mixed workload (wire: pgbench cycling SELECT 1,
   the replay and a catalog query; HTTP: SELECT 1 and the replay alternating),
   then both together for --seconds. Latency together / alone per front end (the
   bar: at most 2x), errors, and the resident memory of every gateway process
   every 5 s (it should level off).

Wire clients are pgbench (-M simple, per-transaction log); HTTP clients are
threads of this process with a kept-alive connection each. A benchmark, not a
test: it asserts nothing. Needs pgbench (postgresql-contrib).
"""

from __future__ import annotations

import argparse
import glob
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.demokit import DEMO_POLICY, write_demo_config  # noqa: E402
from tests.servers import PASSWORD, TOKEN, HttpGateway, PgServer, wire_config  # noqa: E402

CONSTANT = "SELECT 1"
REPLAY = "SELECT region, count(*) AS purchases FROM purchases GROUP BY region"
CATALOG = ("SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
           "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'v') ORDER BY 1, 2")
RAISED = {"concurrent_statements": 1000, "statements_per_minute": 1_000_000, "engine_seconds_per_hour": 1e6}


def configure(folder: Path) -> Path:
    from gateway import demo

    data = folder / "data"
    data.mkdir()
    demo.generate(data)  # the shipped demo's size
    path = wire_config(write_demo_config(folder, data, DEMO_POLICY), folder)
    config = yaml.safe_load(path.read_text())
    config["quotas"] = {"per_analyst": RAISED, "per_collaborator": RAISED}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# -- the wire: pgbench -----------------------------------------------------------------


def pgbench(server: PgServer, statements: list[str], clients: int, seconds: float, folder: Path) -> dict:
    script = folder / f"script-{time.monotonic_ns()}.sql"
    script.write_text("".join(f"{sql};\n" for sql in statements))
    prefix = folder / f"pgbench-{time.monotonic_ns()}"
    env = {**os.environ, "PGPASSWORD": PASSWORD}
    done = subprocess.run(
        ["pgbench", "-n", "-M", "simple", "-c", str(clients), "-j", "2", "-T", str(int(seconds)), "-r",
         "-h", "127.0.0.1", "-p", str(server.port), "-U", "analyst", "-l", "--log-prefix", str(prefix),
         "-f", str(script), "demo"], capture_output=True, text=True, env=env)
    latencies = []  # per transaction (the whole script), seconds
    for log in glob.glob(f"{prefix}*"):
        for line in open(log):
            fields = line.split()
            latencies.append(int(fields[2]) / 1e6)
    errors = sum("error" in line for line in done.stderr.splitlines())
    per_statement = len(statements)
    return {"latencies": [t / per_statement for t in latencies], "errors": errors,
            "stderr": done.stderr.strip().splitlines()[-3:] if done.returncode else []}


# -- HTTP: threads with kept-alive connections ------------------------------------------


def http_clients(port: int, statements: list[str], clients: int, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, problems, i = [], [], offset
        while time.monotonic() < deadline:
            body = json.dumps({"sql": statements[i % len(statements)]})
            i += 1
            started = time.perf_counter()
            try:
                connection.request("POST", "/v1/query", body, headers)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    problems.append(str(response.status))
            except (OSError, http.client.HTTPException) as error:
                problems.append(type(error).__name__)
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            mine.append(time.perf_counter() - started)
        connection.close()
        with lock:
            latencies.extend(mine)
            errors.extend(problems)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies": latencies, "errors": len(errors), "stderr": sorted(set(errors))[:3]}


# -- memory ---------------------------------------------------------------------------------


def tree(pids: list[int]) -> list[int]:
    found, frontier = set(pids), list(pids)
    while frontier:
        parent = frontier.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return sorted(found)


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in tree(pids):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def summary(result: dict) -> str:
    times = sorted(result["latencies"])
    if not times:
        return f"no statement completed; errors {result['errors']} {result['stderr']}"
    p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
    return (f"median {statistics.median(times) * 1000:7.2f} ms, p95 {p95 * 1000:7.2f} ms, "
            f"{len(times):6d} statements, errors {result['errors']}" + (f" {result['stderr']}" if result["errors"] else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--phase-seconds", type=float, default=10)
    parser.add_argument("--seconds", type=float, default=60, help="both front ends together")
    parser.add_argument("--workers", type=int, default=2, help="processes per front end")
    args = parser.parse_args()
    clients, phase = args.clients, args.phase_seconds

    with tempfile.TemporaryDirectory(prefix="mixed-load-") as tmp:
        folder = Path(tmp)
        config_path = configure(folder)
        web = HttpGateway(config_path, folder / "http.log", workers=args.workers, own_group=True)
        wire = PgServer(config_path, folder / "pg.log", workers=args.workers, own_group=True)
        try:
            http_clients(web.port, [REPLAY], 1, 0.1)  # released once: every later run is a replay
            pgbench(wire, [REPLAY, CONSTANT, CATALOG], 2, 2, folder)  # warm both front ends
            http_clients(web.port, [CONSTANT, REPLAY], 2, 2)
            print(f"{clients} clients per front end, {args.workers} processes each, {os.cpu_count()} cores; "
                  f"load average {os.getloadavg()[0]:.1f}")

            print("\n1. each statement alone, per front end")
            for name, run in (("wire", lambda s: pgbench(wire, s, clients, phase, folder)),
                              ("http", lambda s: http_clients(web.port, s, clients, phase))):
                constant, replay = run([CONSTANT]), run([REPLAY])
                ratio = statistics.median(replay["latencies"]) / statistics.median(constant["latencies"])
                print(f"  {name} SELECT 1  {summary(constant)}")
                print(f"  {name} replay    {summary(replay)}")
                print(f"  {name} replay / SELECT 1 (medians): {ratio:.2f}x")

            print("\n2. mixed workloads, alone and together")
            wire_mix, http_mix = [CONSTANT, REPLAY, CATALOG], [CONSTANT, REPLAY]
            alone = {"wire": pgbench(wire, wire_mix, clients, phase, folder),
                     "http": http_clients(web.port, http_mix, clients, phase)}
            together: dict[str, dict] = {}
            memory: list[tuple[float, float]] = []
            stop = threading.Event()

            def sample() -> None:
                started = time.monotonic()
                while not stop.wait(5 if memory else 0):
                    memory.append((time.monotonic() - started, rss_mb([web.pid, wire.pid])))

            sampler = threading.Thread(target=sample)
            sampler.start()
            runner = threading.Thread(target=lambda: together.update(
                wire=pgbench(wire, wire_mix, clients, args.seconds, folder)))
            runner.start()
            together["http"] = http_clients(web.port, http_mix, clients, args.seconds)
            runner.join()
            stop.set()
            sampler.join()
            for name in ("wire", "http"):
                ratio = statistics.median(together[name]["latencies"]) / statistics.median(alone[name]["latencies"])
                print(f"  {name} alone     {summary(alone[name])}")
                print(f"  {name} together  {summary(together[name])}")
                print(f"  {name} together / alone (medians): {ratio:.2f}x")
            print("  resident memory of all gateway processes (MB): "
                  + ", ".join(f"{t:.0f}s {mb:.0f}" for t, mb in memory))
            print(f"  load average at the end {os.getloadavg()[0]:.1f}")
        finally:
            wire.stop()
            web.stop()


if __name__ == "__main__":
    main()
