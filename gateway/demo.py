"""`cleanroom demo`: generate the demo clean room's data, then serve it.

The data is synthetic and deterministic: every pseudo-random value is DuckDB's
hash() of row numbers and a salt, so two runs produce the same rows. A retailer
(purchases in a DuckDB file) and a publisher (impressions in Parquet files)
share 200,000 households; seeing a campaign makes a household somewhat more
likely to buy within three weeks, so the campaign_reach template has an effect
to show.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import gateway
from gateway.collab.demo import approve_demo, demo_users_text
from gateway.config import load_config
from gateway.dp.policy import describe
from gateway.listening import CannotListen, bind
from gateway.policy.loader import load_policy

VERSION = 1  # bump when the generated data changes, so old generations are replaced
MARKER = "generation.json"  # written last: its presence means the generation is complete
HOUSEHOLDS = 200_000

# (region, name, country, weight in %): the home region of a household.
REGIONS = [
    ("north", "North", "DE", 16), ("south", "South", "IT", 15), ("east", "East", "PL", 12),
    ("west", "West", "FR", 14), ("central", "Central", "AT", 13), ("coast", "Coast", "PT", 12),
    ("mountain", "Mountain", "CH", 8), ("islands", "Islands", "GR", 10),
]
# (category, weight in %, price factor): groceries are frequent and cheap, baby items rare and dear.
CATEGORIES = [
    ("grocery", 18, 1.0), ("dairy", 12, 0.5), ("bakery", 10, 0.4), ("produce", 12, 0.6),
    ("meat", 8, 1.4), ("frozen", 7, 0.9), ("beverages", 9, 0.8), ("snacks", 8, 0.5),
    ("household", 6, 1.6), ("personal_care", 5, 1.3), ("pets", 3, 1.8), ("baby", 2, 2.5),
]
# (campaign, first day, days, share of households reached)
CAMPAIGNS = [
    ("spring_sale", "2026-03-15", 45, 0.35), ("summer_fresh", "2026-06-01", 60, 0.30),
    ("back_to_school", "2026-08-10", 35, 0.30), ("autumn_treats", "2026-10-01", 31, 0.25),
    ("holiday_gifts", "2026-11-15", 40, 0.40), ("new_year", "2026-01-01", 31, 0.20),
]
CHANNELS = [("ctv", 20), ("web", 35), ("mobile", 38), ("audio", 7)]
BASE_PURCHASES = 3.9  # exponential scale of purchases beyond the first, per household and year
IMPRESSIONS_PER_EXPOSURE = 5.0  # exponential scale of impressions beyond the first
EXPOSED_EXTRA_PURCHASE = 0.3  # chance an exposure brings one more purchase soon after
READY_SECONDS = 300  # for the servers to answer: generous, a loaded 2-core machine starts executors slowly


def generate(data_dir: Path, scale: float = 1.0) -> None:
    """Write retail.duckdb, impressions/*.parquet and regions.csv into data_dir,
    unless a complete generation of this version and scale is already there."""
    data_dir = Path(data_dir)
    marker = data_dir / MARKER
    # hash() may change between DuckDB releases, so a new DuckDB regenerates too.
    import duckdb  # not at module level: the CLI imports this module in gunicorn's master

    wanted = {"version": VERSION, "duckdb": duckdb.__version__, "households": round(HOUSEHOLDS * scale)}
    if marker.is_file() and _read_json(marker) == wanted:
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    for stale in ("retail.duckdb", "retail.duckdb.tmp", "retail.duckdb.tmp.wal", "regions.csv", "impressions"):
        target = data_dir / stale
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    with duckdb.connect() as con:
        _build(con, data_dir, wanted["households"])
    marker.write_text(json.dumps(wanted) + "\n")


def _build(con, data_dir: Path, households: int) -> None:
    # u(a, b, c): a uniform double in [0, 1) drawn from the hash of its arguments.
    # hash(a, b, c) alone barely changes when only c does (draws with different
    # salts came out 0.998 correlated); hashing it again mixes the bits.
    con.execute("CREATE MACRO u(a, b, c) AS (hash(hash(a, b, c)) >> 11) / 9007199254740992.0")
    regions = _slots((region, weight) for region, _, _, weight in REGIONS)
    categories = _slots((category, weight) for category, weight, _ in CATEGORIES)
    channels = _slots(CHANNELS)
    price = {name: factor for name, _, factor in CATEGORIES}
    campaigns = ", ".join(
        f"({i}, '{name}', TIMESTAMP '{start}', {days}, {reach})"
        for i, (name, start, days, reach) in enumerate(CAMPAIGNS)
    )
    con.execute(f"""
        CREATE TABLE households AS
        SELECT h, left(sha256('household:' || h), 16) AS household_id,
               {regions}[1 + floor(u(h, 0, 1) * 100)::INT] AS region
        FROM range({households}) t(h)""")
    # One row per (household, campaign) the household saw: when it was first
    # reached, how many impressions it got, and the campaign's window.
    con.execute(f"""
        CREATE TABLE exposures AS
        SELECT h.h, h.household_id, c.i AS c, c.name AS campaign, c.start + to_days(c.days) AS c_end,
               c.start + to_seconds(floor(u(h.h, c.i, 2) * c.days * 43200)::BIGINT) AS first_seen,
               1 + floor(-ln(1 - u(h.h, c.i, 3)) * {IMPRESSIONS_PER_EXPOSURE})::INT AS impressions
        FROM households h, (VALUES {campaigns}) c(i, name, start, days, reach)
        WHERE u(h.h, c.i, 4) < c.reach""")
    # The first impression is at first_seen; the others fall later in the window.
    con.execute(f"""
        CREATE TABLE impressions AS
        SELECT household_id, campaign,
               {channels}[1 + floor(u(h, c * 1000 + k, 5) * 100)::INT] AS channel,
               CASE WHEN k = 0 THEN first_seen ELSE least(
                   first_seen + to_seconds(floor(u(h, c * 1000 + k, 6)
                       * (epoch(c_end) - epoch(first_seen)))::BIGINT),
                   TIMESTAMP '2026-12-31 23:59:59') END AS shown_at
        FROM (SELECT *, unnest(range(impressions)) AS k FROM exposures)""")
    # Purchases: every household buys at least once (so all of them are in the
    # retailer's data), a skewed number in all spread over the year, plus one more
    # within three weeks of a first impression for some exposed households.
    category_case = "CASE category " + " ".join(f"WHEN '{n}' THEN {f}" for n, f in price.items()) + " END"
    con.execute(f"""
        CREATE TABLE purchase_events AS
        SELECT h, household_id, region, k,
               DATE '2026-01-01' + floor(u(h, k, 7) * 365)::INT AS purchased_on
        FROM (SELECT *, unnest(range(1 + floor(-ln(1 - u(h, 0, 8)) * {BASE_PURCHASES})::INT)) AS k
              FROM households)
        UNION ALL
        SELECT e.h, e.household_id, hh.region, 100000 + e.c AS k,
               least(CAST(e.first_seen AS DATE) + floor(u(e.h, e.c, 9) * 21)::INT, DATE '2026-12-31')
        FROM exposures e JOIN households hh USING (h)
        WHERE u(e.h, e.c, 10) < {EXPOSED_EXTRA_PURCHASE}""")
    retail = data_dir / "retail.duckdb.tmp"
    con.execute(f"ATTACH '{retail}' AS retail")
    # Amount: log-normal (median ~EUR 22 times the category's factor), capped at 500.
    con.execute(f"""
        CREATE TABLE retail.purchases AS
        SELECT household_id, region, category,
               CAST(least(500, greatest(0.5, 22 * {category_case} * exp(0.9
                   * sqrt(-2 * ln(1 - u(h, k, 12))) * cos(2 * pi() * u(h, k, 13))))) AS DECIMAL(10, 2))
                 AS amount,
               purchased_on,
               -- most households pay with one card, sometimes with a second
               lpad(CAST(floor(u(h, 1 + (u(h, k, 14) < 0.2)::INT, 15) * 10000)::INT AS VARCHAR), 4, '0')
                 AS card_last4
        FROM (SELECT *, {categories}[1 + floor(u(h, k, 11) * 100)::INT] AS category FROM purchase_events)
        ORDER BY purchased_on, household_id, k""")
    con.execute("DETACH retail")
    retail.rename(data_dir / "retail.duckdb")

    folder = data_dir / "impressions"
    folder.mkdir()
    for quarter in range(1, 5):  # one file per quarter, as a publisher's export would come
        con.execute(f"""
            COPY (SELECT * FROM impressions WHERE quarter(shown_at) = {quarter}
                  ORDER BY shown_at, household_id, campaign, channel)
            TO '{folder / f"2026-q{quarter}.parquet"}' (FORMAT parquet)""")
    con.execute(f"""
        COPY (SELECT * FROM (VALUES {", ".join(f"('{r}', '{n}', '{c}')" for r, n, c, _ in REGIONS)})
              t(region, region_name, country))
        TO '{data_dir / "regions.csv"}' (HEADER, DELIMITER ',')""")


def _slots(weights) -> str:
    """A 100-element list literal where each value appears `weight` times: indexing
    it with a uniform 0..99 draws values with those weights."""
    slots = [name for name, weight in weights for _ in range(weight)]
    assert len(slots) == 100, slots
    return "[" + ", ".join(f"'{s}'" for s in slots) + "]"


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def repo_dir() -> Path:
    """The folder holding config/demo.yaml (the checkout the package was installed from)."""
    return Path(gateway.__file__).resolve().parent.parent


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="generate the demo data and serve the demo clean room")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--pg-port", type=int, default=5433)
    parser.add_argument("--data-dir", type=Path, help="where the data goes (default: <repo>/var/demo)")
    parser.add_argument("--config", type=Path, help="gateway config (default: <repo>/config/demo.yaml)")
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)  # tests: fewer households
    parser.set_defaults(handler=_run_demo)


def _run_demo(args) -> int:
    config = (args.config or repo_dir() / "config" / "demo.yaml").resolve()
    default_data_dir = repo_dir() / "var" / "demo"
    data_dir = (args.data_dir or default_data_dir).resolve()
    if not config.is_file():
        print(f"cleanroom demo: {config} not found (run from a checkout, or pass --config)", file=sys.stderr)
        return 2
    # Both ports first, held until the servers take them over: a port in use stops the
    # demo here, in one line, before anything is generated or started.
    try:
        http_socket = bind("127.0.0.1", args.http_port)
        with contextlib.ExitStack() as undo:
            undo.callback(http_socket.close)
            pg_socket = bind("127.0.0.1", args.pg_port)
            undo.pop_all()
    except CannotListen as error:
        print(f"cleanroom demo: {error}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    print(f"Generating demo data in {data_dir} ...", flush=True)
    generate(data_dir, args.scale)
    print(f"Data ready in {time.perf_counter() - started:.1f} s.")
    if data_dir != default_data_dir.resolve():
        config = _relocated_config(config, default_data_dir.resolve(), data_dir)
    for approval in approve_demo(config):  # both owners, through the approvers' own code path
        print(f"{approval.subject.capitalize()} approved by {approval.approver} for {approval.collaborator} "
              f"(hash {approval.template_sha256[:12]})")
    print(f"Serving {config}; starting the HTTP and wire servers ...", flush=True)
    ready_text = (f"\n{_instructions(args.http_port, args.pg_port, _privacy(config))}\n"
                  f"Collaboration users:\n{demo_users_text()}\n")
    servers = [
        ("HTTP server", ["serve", "--host", "127.0.0.1", "--port", str(args.http_port)], http_socket,
         lambda: _http_ready(args.http_port)),
        ("wire server", ["pg", "--host", "127.0.0.1", "--port", str(args.pg_port)], pg_socket,
         lambda: _accepts(args.pg_port)),
    ]
    return supervise(config, servers, ready_text)


def supervise(config: Path, servers, ready_text: str) -> int:
    """Run each server (`cleanroom serve`, `cleanroom pg`) as a child process on the socket
    bound for it, print ready_text once all of them answer, and wait. SIGINT, SIGTERM or
    SIGHUP stop them all (one SIGTERM each: they are in their own sessions, so a
    terminal's Ctrl-C reaches only this process); a server that ends on its own stops
    the others. Returns 0 when every server, stopped, exited cleanly; else 1."""
    stop_asked: list[int] = []
    previous = {sig: signal.signal(sig, lambda number, _frame: stop_asked.append(number))
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    children: list[tuple[str, subprocess.Popen]] = []
    ended, ready = None, False
    try:
        for name, command, sock, _ in servers:
            with sock:  # the child has its own copy of the socket now
                children.append((name, subprocess.Popen(
                    [sys.executable, "-m", "gateway", *command, "--config", str(config), "--listen-fd", str(sock.fileno())],
                    pass_fds=[sock.fileno()], start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})))
        deadline = time.monotonic() + READY_SECONDS
        while not stop_asked and ended is None:
            ended = next(((name, child) for name, child in children if child.poll() is not None), None)
            if ended is None and not ready:
                ready = all(is_ready() for *_, is_ready in servers)
                if ready:
                    print(ready_text, flush=True)
                elif time.monotonic() > deadline:
                    print(f"cleanroom demo: the servers did not answer within {READY_SECONDS} s; stopping them",
                          file=sys.stderr)
                    break
            time.sleep(0.1 if not ready else 0.5)
    finally:
        statuses = _stop(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if ended is not None:
        name, child = ended
        print(f"cleanroom demo: the {name} ended ({_status(child.returncode)}); the demo stopped", file=sys.stderr)
        return 1
    failed = [f"the {name} {_status(code)}" for (name, _), code in zip(children, statuses) if code != 0]
    if failed:
        print(f"cleanroom demo: on stopping, {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0 if ready or stop_asked else 1


def _stop(children: list[tuple[str, subprocess.Popen]]) -> list[int]:
    for _, child in children:
        if child.poll() is None:
            child.terminate()
    codes = []
    for _, child in children:
        try:
            codes.append(child.wait(60))
        except subprocess.TimeoutExpired:  # a graceful stop takes seconds; this one hangs
            child.kill()
            codes.append(child.wait())
    return codes


def _status(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _http_ready(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def _relocated_config(config: Path, old_data_dir: Path, new_data_dir: Path) -> Path:
    """A copy of the demo config, written into the data dir, whose paths point at
    new_data_dir instead of old_data_dir (the demo config names <repo>/var/demo)."""
    import yaml

    data = yaml.safe_load(config.read_text())

    def move(value: str) -> str:
        path = (config.parent / value).resolve()
        return str(new_data_dir / path.relative_to(old_data_dir)) if path.is_relative_to(old_data_dir) else str(path)

    data["policies"] = [move(p) for p in data.get("policies", [])]
    for source in data.get("sources", {}).values():
        if "path" in source:
            source["path"] = move(source["path"])
    engine = data.setdefault("engine", {})
    engine["data_roots"] = [move(p) for p in engine.get("data_roots", [])]
    if "temp_directory" in engine:
        engine["temp_directory"] = move(engine["temp_directory"])
    data["state_dir"] = str(new_data_dir / "state")
    relocated = new_data_dir / "gateway.yaml"
    relocated.write_text(yaml.safe_dump(data, sort_keys=False))
    return relocated


def _privacy(config: Path) -> str:
    """How the served clean rooms protect results, from their policies."""
    rooms = [load_policy(path) for path in load_config(config).policies]
    return "; ".join(f"{room.name}: differential privacy, {describe(room.privacy)} per analyst, repeats free"
                     if room.privacy else f"{room.name}: k-thresholds only (k={room.min_group_size})"
                     for room in rooms)


def _instructions(http_port: int, pg_port: int, privacy: str) -> str:
    base = f"http://127.0.0.1:{http_port}"
    auth = "-H 'Authorization: Bearer analyst'"
    query = json.dumps({"sql": "SELECT region, COUNT(DISTINCT household_id) AS households, "
                               "SUM(amount) AS revenue FROM purchases GROUP BY region"})
    template = json.dumps({"params": {"campaign": "spring_sale"}})
    return f"""Clean room: demo (a retailer's purchases x a publisher's impressions)
Analyst:    user analyst, bearer token "analyst" (password "analyst" over the wire)
Privacy:    {privacy} (docs/privacy.md)
Console:    {base}/console/ (web console: log in with a user's token or password, e.g. analyst; docs/console.md)

  curl -s {auth} {base}/v1/tables
  curl -s {auth} {base}/v1/budget
  curl -s {auth} -H 'Content-Type: application/json' \\
       -d '{query}' {base}/v1/query
  curl -s {auth} -H 'Content-Type: application/json' \\
       -d '{template}' {base}/v1/templates/campaign_reach/run

Postgres wire protocol (password "analyst"):
  psql "host=127.0.0.1 port={pg_port} dbname=demo user=analyst"
"""
