"""Fairness soak: does a heavy analyst slow a light one down?

    .venv/bin/python bench/soak.py [--seconds 30] [--heavy-clients 8] [--light-statements 40]

Starts the demo gateway (HTTP `cleanroom serve` with its workers, and the wire
server `cleanroom pg`) on generated demo data, with a second analyst, `heavy`.
The demo policy is copied without its differential privacy, so that statements
are neither answered from the release cache nor stopped by the budget, and
without timing padding, so that what is measured is scheduling.

1. Light alone: the analyst `analyst` runs light statements one after another
   over the wire (psycopg); median latency, before and after step 2.
2. The same while `heavy` keeps --heavy-clients HTTP clients busy with an
   expensive cross-party join, on the other front end.
3. Prints both medians and their ratio (the issue's bar: at most 2x), with how
   many of heavy's statements ran and how many were refused by its quotas.

A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from tests.servers import HttpGateway, PgServer  # noqa: E402  (the test suite's own launchers)
from http_latency import write_demo  # noqa: E402

LIGHT = "SELECT region, count(*) AS purchases FROM purchases WHERE category = '{category}' GROUP BY region"
CATEGORIES = ("dairy", "bakery", "produce", "meat", "frozen", "beverages")
HEAVY = ("SELECT i.campaign, p.region, count(DISTINCT p.household_id) AS buyers, sum(p.amount) AS revenue "
         "FROM purchases p JOIN impressions i ON p.household_id = i.household_id GROUP BY i.campaign, p.region")


def configure(folder: Path) -> Path:
    from gateway.pgwire.scram import make_verifier

    config_path = write_demo(folder, None)
    policy = yaml.safe_load((REPO / "policies/demo.yaml").read_text())
    policy.pop("privacy", None)
    policy["timing"] = {"pad": "off"}
    policy["analysts"]["heavy"] = dict(policy["analysts"]["analyst"])
    for model in policy.get("models", {}).values():  # the copy lies elsewhere: its model files stay where they are
        model["file"] = str(REPO / "policies" / model["file"])
    policy_path = folder / "soak-policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))
    config = yaml.safe_load(config_path.read_text())
    config["policies"] = [str(policy_path)]
    for user in ("analyst", "heavy"):
        config["users"][user] = {"token_sha256": hashlib.sha256(user.encode()).hexdigest(),
                                 "scram_sha256": make_verifier(user)}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    from gateway.collab.demo import approve_demo

    approve_demo(config_path)  # both owners approve, as `cleanroom demo` does
    return config_path


def start(config_path: Path, folder: Path) -> tuple[list, str, int]:
    http = HttpGateway(config_path, folder / "http.log", workers=None)  # the config's workers
    pg = PgServer(config_path, folder / "pg.log")
    return [http, pg], http.url, pg.port


def light_latencies(pg_port: int, n: int) -> list[float]:
    import psycopg

    dsn = f"host=127.0.0.1 port={pg_port} dbname=demo user=analyst password=analyst sslmode=disable"
    for _ in range(100):
        try:
            conn = psycopg.connect(dsn, autocommit=True)
            break
        except psycopg.OperationalError:
            time.sleep(0.2)
    times = []
    with conn:
        conn.execute(LIGHT.format(category="dairy")).fetchall()  # warm
        for i in range(n):
            started = time.perf_counter()
            conn.execute(LIGHT.format(category=CATEGORIES[i % len(CATEGORIES)])).fetchall()
            times.append(time.perf_counter() - started)
    return times


def heavy_load(base_url: str, clients: int, stop: threading.Event, counts: dict) -> list[threading.Thread]:
    def client() -> None:
        while not stop.is_set():
            request = urllib.request.Request(base_url + "/v1/query", data=json.dumps({"sql": HEAVY}).encode(),
                                             headers={"Authorization": "Bearer heavy",
                                                      "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    response.read()
                counts["ran"] += 1
            except urllib.error.HTTPError as error:
                counts[f"http {error.code}"] = counts.get(f"http {error.code}", 0) + 1
                time.sleep(float(error.headers.get("Retry-After") or 0.1))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heavy-clients", type=int, default=8)
    parser.add_argument("--light-statements", type=int, default=40)
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of heavy load before measuring")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config_path = configure(folder)
        servers, base_url, pg_port = start(config_path, folder)
        try:
            alone = light_latencies(pg_port, args.light_statements)
            stop, counts = threading.Event(), {"ran": 0}
            threads = heavy_load(base_url, args.heavy_clients, stop, counts)
            time.sleep(args.warmup)
            loaded = light_latencies(pg_port, args.light_statements)
            stop.set()
            for thread in threads:
                thread.join(120)
            time.sleep(2)
            alone += light_latencies(pg_port, args.light_statements)  # before and after: drift in the machine's load
        finally:
            for server in servers:
                server.stop()
        a, b = statistics.median(alone), statistics.median(loaded)
        print(f"light statement over the wire, {args.light_statements} runs each (median ms)")
        print(f"  alone (before and after):       {a * 1000:8.1f}")
        print(f"  with {args.heavy_clients} heavy HTTP clients:       {b * 1000:8.1f}")
        print(f"  slowdown (with / alone):        {b / a:8.2f}x")
        print(f"  heavy analyst's statements:     {counts}")


if __name__ == "__main__":
    main()
