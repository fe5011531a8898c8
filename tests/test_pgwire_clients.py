"""The Postgres wire front end, tested with real clients over real sockets.

Each client lists the demo tables, reads their columns, runs an allowed
aggregate with a bound parameter, and gets SQLSTATE 42501 for a refused query.
Clients from Debian packages (psql, pgbench: postgresql-client and
postgresql-contrib; pgjdbc: libpostgresql-jdbc-java + default-jdk-headless;
psqlodbc: odbc-postgresql + unixodbc) skip when missing.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import os
import shutil
import socket
import struct
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tests.servers import PASSWORD, REPO, PgServer, psql_env, wire_config

DEMO_TABLES = ["impressions", "purchases", "regions"]
PURCHASE_COLUMNS = ["household_id", "region", "category", "amount", "purchased_on"]  # card_last4 is hidden
AGGREGATE = "SELECT region, COUNT(*) AS n FROM purchases WHERE region = {} GROUP BY region"
REFUSED = "SELECT * FROM purchases"
JDBC_JAR = Path("/usr/share/java/postgresql.jar")

pytestmark = pytest.mark.server  # every test talks to a gateway: `pg` (tests/conftest.py) or one of its own


# -- psql ------------------------------------------------------------------------------

needs_psql = pytest.mark.skipif(shutil.which("psql") is None, reason="psql missing (apt install postgresql-client)")


def psql(pg, *commands: str, check=True) -> subprocess.CompletedProcess:
    args = ["psql", "-X", "-v", "VERBOSITY=verbose", pg.dsn(password=None)]
    for command in commands:
        args += ["-c", command]
    result = subprocess.run(args, capture_output=True, text=True, env=psql_env(), timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@needs_psql
def test_psql_lists_tables_columns_databases_schemas(pg):
    out = psql(pg, r"\dt").stdout
    for table in DEMO_TABLES:
        assert f"| {table}" in out
    described = psql(pg, r"\d purchases").stdout
    assert 'Table "public.purchases"' in described
    for column in PURCHASE_COLUMNS:
        assert column in described
    assert "card_last4" not in described  # hidden columns do not exist
    assert "numeric(10,2)" in described
    # each column's role and bounds, under "Policies:" (what the policy says of the column)
    for line in ('POLICY "amount: measure in [0, 500]"', 'POLICY "household_id: privacy unit, join key"',
                 'POLICY "region: dimension, 8 declared values"',
                 'POLICY "purchased_on: dimension, buckets 2026-01-01..2026-12-31"'):
        assert line in described, described
    assert "POLICY" not in psql(pg, r"\d regions").stdout  # a public table: read as it is
    assert " demo " in psql(pg, r"\l").stdout
    assert "public" in psql(pg, r"\dn").stdout
    assert "campaign_reach" in psql(pg, r"\df").stdout  # templates appear as functions


@needs_psql
def test_psql_runs_an_aggregate_and_gets_42501_for_a_refusal(pg):
    result = psql(pg, AGGREGATE.format("'north'"))
    assert "north" in result.stdout and "(1 row)" in result.stdout
    refused = psql(pg, REFUSED, check=False)
    assert refused.returncode != 0
    assert "42501" in refused.stderr


@needs_psql
def test_psql_session_commands(pg):
    out = psql(pg, "BEGIN", "SET application_name = 'x'", "SHOW application_name", "COMMIT",
               "SELECT current_database(), current_user, version()").stdout
    assert "BEGIN" in out and "COMMIT" in out and " x" in out
    assert "demo" in out and "PostgreSQL 16" in out


# -- psycopg ------------------------------------------------------------------------------


def test_psycopg_text_binary_prepared_and_refusal(pg):
    import psycopg

    with psycopg.connect(pg.dsn()) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", ["public"]
        ).fetchall()
        assert [t for (t,) in tables] == DEMO_TABLES
        columns = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
            ["purchases"],
        ).fetchall()
        assert [c for (c,) in columns] == PURCHASE_COLUMNS
        cursor = conn.cursor()
        cursor.execute(AGGREGATE.format("%s"), ["north"])
        assert [d.name for d in cursor.description] == ["region", "n"]
        ((region, n),) = cursor.fetchall()
        assert region == "north" and n >= 10
        binary = conn.cursor(binary=True)
        query = ("SELECT region, purchased_on, COUNT(*), SUM(amount), AVG(amount) FROM purchases "
                 "WHERE purchased_on = %s GROUP BY region, purchased_on ORDER BY region")
        for _ in range(3):  # psycopg prepares server-side from the third run on
            binary.execute(query, [dt.date(2026, 3, 1)], prepare=True)
            rows = binary.fetchall()
        assert len(rows) >= 1
        region, day, count, total, average = rows[0]
        assert isinstance(count, int) and isinstance(total, Decimal) and isinstance(average, float)
        assert day == dt.date(2026, 3, 1)
        text_rows = conn.execute(query, [dt.date(2026, 3, 1)]).fetchall()
        assert text_rows == rows
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
            conn.execute(REFUSED)
        assert refused.value.sqlstate == "42501"
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection stays usable


def test_psycopg_errors_keep_the_connection(pg):
    import psycopg

    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.SyntaxError):
            conn.execute("SELEC 1")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT COUNT(*) FROM nowhere")
        assert conn.execute("SELECT 2").fetchone() == (2,)


def test_bad_password_and_unknown_user_look_the_same(pg):
    import psycopg

    messages = []
    for user, password in (("analyst", "wrong"), ("nobody", "wrong")):
        with pytest.raises(psycopg.OperationalError) as failed:
            psycopg.connect(pg.dsn(user=user, password=password))
        messages.append(str(failed.value).replace(user, "USER"))
    assert messages[0] == messages[1]
    assert "password authentication failed" in messages[0]


def test_unknown_database_is_3d000(pg):
    import psycopg

    with pytest.raises(psycopg.OperationalError) as failed:
        psycopg.connect(pg.dsn(dbname="elsewhere"))
    assert "does not exist" in str(failed.value)


# -- asyncpg ---------------------------------------------------------------------------------


def test_asyncpg(pg):
    asyncpg = pytest.importorskip("asyncpg")

    async def main():
        conn = await asyncpg.connect(host="127.0.0.1", port=pg.port, user="analyst", password=PASSWORD,
                                     database="demo", ssl=False)
        try:
            tables = await conn.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = $1 "
                                      "ORDER BY 1", "public")
            assert [r["table_name"] for r in tables] == DEMO_TABLES
            columns = await conn.fetch("SELECT column_name, data_type FROM information_schema.columns "
                                       "WHERE table_name = $1 ORDER BY ordinal_position", "purchases")
            assert [r["column_name"] for r in columns] == PURCHASE_COLUMNS
            row = await conn.fetchrow(AGGREGATE.format("$1"), "north")
            assert row["region"] == "north" and row["n"] >= 10
            total = await conn.fetchval("SELECT SUM(amount) FROM purchases WHERE purchased_on >= $1",
                                        dt.date(2026, 6, 1))
            assert isinstance(total, Decimal)
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                await conn.fetch(REFUSED)
            # Execute with a row limit: the portal is suspended and resumed.
            async with conn.transaction():
                regions = [r["region"] async for r in conn.cursor(
                    "SELECT region, COUNT(*) FROM purchases GROUP BY region ORDER BY region", prefetch=3)]
            assert len(regions) == 8 and regions == sorted(regions)
        finally:
            await conn.close()

    asyncio.run(main())


# -- pg8000 (pure Python; infers parameter types itself) -------------------------------------


def test_pg8000(pg):
    pg8000 = pytest.importorskip("pg8000.native")

    conn = pg8000.Connection("analyst", host="127.0.0.1", port=pg.port, password=PASSWORD, database="demo")
    try:
        tables = conn.run("SELECT table_name FROM information_schema.tables WHERE table_schema = :s ORDER BY 1",
                          s="public")
        assert [r[0] for r in tables] == DEMO_TABLES
        columns = conn.run("SELECT column_name FROM information_schema.columns WHERE table_name = :t "
                           "ORDER BY ordinal_position", t="purchases")
        assert [r[0] for r in columns] == PURCHASE_COLUMNS
        [(region, n)] = conn.run(AGGREGATE.format(":r"), r="north")
        assert region == "north" and n >= 10
        [(total,)] = conn.run("SELECT SUM(amount) FROM purchases WHERE purchased_on >= :d", d=dt.date(2026, 6, 1))
        assert isinstance(total, Decimal)
        with pytest.raises(pg8000.DatabaseError) as refused:
            conn.run(REFUSED)
        assert refused.value.args[0]["C"] == "42501"
        assert conn.run("SELECT 1") == [[1]]  # the connection is usable after the refusal
    finally:
        conn.close()


# -- node-postgres --------------------------------------------------------------------------------

NODE_CHECK = REPO / "tests" / "node"


@pytest.fixture(scope="module")
def node_postgres():
    """tests/node with its node_modules, installed by `npm ci` from the committed lock file."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm missing (apt install nodejs npm)")
    if not (NODE_CHECK / "node_modules" / "pg").is_dir():
        installed = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_CHECK, capture_output=True,
                                   text=True, timeout=300)
        if installed.returncode != 0:
            pytest.skip(f"npm ci could not install node-postgres (no registry?): {installed.stderr[-500:]}")
    return NODE_CHECK


def test_node_postgres(pg, node_postgres):
    import json

    result = subprocess.run(["node", "wire_check.js"], cwd=node_postgres, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PGPORT": str(pg.port), "PGPASSWORD": PASSWORD})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["tables"] == DEMO_TABLES and out["columns"] == PURCHASE_COLUMNS
    [row] = out["aggregate"]
    assert row["region"] == "north" and int(row["n"]) >= 10  # int8 arrives as a string, as from PostgreSQL
    assert out["fields"] == [["region", 25], ["n", 20]]
    assert out["refused"]["code"] == "42501" and out["refused"]["hint"]
    assert out["after"] == [{"one": 1}]


# -- SQLAlchemy ---------------------------------------------------------------------------------


def test_sqlalchemy_reflection(pg):
    sa = pytest.importorskip("sqlalchemy")

    engine = sa.create_engine(f"postgresql+psycopg://analyst:{PASSWORD}@127.0.0.1:{pg.port}/demo")
    try:
        inspector = sa.inspect(engine)
        assert sorted(inspector.get_table_names()) == DEMO_TABLES
        columns = inspector.get_columns("purchases")
        assert [c["name"] for c in columns] == PURCHASE_COLUMNS
        assert str(columns[3]["type"]) == "NUMERIC(10, 2)"
        with engine.connect() as conn:
            rows = conn.execute(sa.text(AGGREGATE.format(":r")), {"r": "south"}).all()
            assert rows[0][0] == "south"
            with pytest.raises(sa.exc.ProgrammingError) as refused:
                conn.execute(sa.text(REFUSED))
            assert refused.value.orig.sqlstate == "42501"
    finally:
        engine.dispose()


# -- pgjdbc -----------------------------------------------------------------------------------

JAVA_PROGRAM = r"""
import java.sql.*;
import java.util.*;

public class WireCheck {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], "analyst", args[1])) {
            DatabaseMetaData md = c.getMetaData();
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, "public", "%", new String[]{"TABLE"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            System.out.println("tables=" + String.join(",", tables));
            List<String> columns = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "public", "purchases", "%")) {
                while (rs.next()) columns.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME"));
            }
            System.out.println("columns=" + String.join(",", columns));
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT region, COUNT(*) AS n FROM purchases WHERE region = ? GROUP BY region")) {
                ps.setString(1, "north");
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) System.out.println("row=" + rs.getString(1) + ":" + rs.getLong(2));
                }
            }
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT * FROM purchases")) {
                System.out.println("refused=none");
            } catch (SQLException e) {
                System.out.println("refused=" + e.getSQLState());
            }
        }
    }
}
"""


@pytest.mark.skipif(shutil.which("javac") is None or not JDBC_JAR.exists(),
                    reason="javac or pgjdbc missing (apt install default-jdk-headless libpostgresql-jdbc-java)")
def test_pgjdbc_metadata_and_prepared_statement(pg, tmp_path):
    (tmp_path / "WireCheck.java").write_text(JAVA_PROGRAM)
    subprocess.run(["javac", "-cp", str(JDBC_JAR), "WireCheck.java"], cwd=tmp_path, check=True, timeout=120)
    result = subprocess.run(
        ["java", "-cp", f"{JDBC_JAR}:{tmp_path}", "WireCheck", f"jdbc:postgresql://127.0.0.1:{pg.port}/demo", PASSWORD],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert lines["tables"].split(",") == DEMO_TABLES
    assert [c.split(":")[0] for c in lines["columns"].split(",")] == PURCHASE_COLUMNS
    assert "amount:numeric" in lines["columns"]
    assert lines["row"].startswith("north:")
    assert lines["refused"] == "42501"


# -- psqlodbc through pyodbc -----------------------------------------------------------------------


def _odbc_driver() -> bool:
    try:
        import pyodbc
    except ImportError:
        return False
    return "PostgreSQL Unicode" in pyodbc.drivers()


@pytest.mark.skipif(not _odbc_driver(), reason="pyodbc or psqlodbc missing (apt install odbc-postgresql unixodbc)")
def test_psqlodbc_tables_columns_query(pg):
    import pyodbc

    conn = pyodbc.connect(f"DRIVER={{PostgreSQL Unicode}};SERVER=127.0.0.1;PORT={pg.port};DATABASE=demo;"
                          f"UID=analyst;PWD={PASSWORD};SSLmode=disable", timeout=10)
    try:
        cursor = conn.cursor()
        tables = sorted(r.table_name for r in cursor.tables(schema="public", tableType="TABLE"))
        assert tables == DEMO_TABLES
        columns = [r.column_name for r in cursor.columns(table="purchases", schema="public")]
        assert columns == PURCHASE_COLUMNS
        rows = cursor.execute(AGGREGATE.format("?"), "north").fetchall()
        assert rows[0][0] == "north"
        with pytest.raises(pyodbc.Error) as refused:
            cursor.execute(REFUSED).fetchall()
        assert refused.value.args[0] == "42501"
    finally:
        conn.close()


# -- pgbench ------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("pgbench") is None, reason="pgbench missing (apt install postgresql-contrib)")
def test_pgbench_custom_script(pg, tmp_path):
    script = tmp_path / "aggregate.sql"
    script.write_text(
        "\\set r random(1, 2)\n"
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public';\n"
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'purchases';\n"
        "SELECT region, COUNT(*) FROM purchases WHERE region = CASE WHEN :r = 1 THEN 'north' ELSE 'south' END "
        "GROUP BY region;\n"
    )
    base = ["pgbench", "-n", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "analyst"]
    for mode in ("simple", "extended", "prepared"):
        result = subprocess.run(base + ["-M", mode, "-c", "2", "-t", "5", "-f", str(script), "demo"],
                                capture_output=True, text=True, env=psql_env(), timeout=120)
        assert result.returncode == 0, result.stderr
        assert "number of transactions actually processed: 10/10" in result.stdout
    refused = tmp_path / "refused.sql"
    refused.write_text(REFUSED + ";\n")
    result = subprocess.run(base + ["-t", "1", "-f", str(refused), "demo"], capture_output=True, text=True,
                            env=psql_env(), timeout=60)
    assert result.returncode != 0
    assert "raw rows are never released" in result.stderr


# -- robustness ---------------------------------------------------------------------------------


class RawClient:
    """A minimal protocol client (SCRAM included), to send what real clients never would."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def send_startup(self, **params) -> None:
        body = struct.pack("!i", 196608) + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)

    def send(self, kind: bytes, body: bytes) -> None:
        self.sock.sendall(kind + struct.pack("!i", len(body) + 4) + body)

    def read(self) -> tuple[bytes, bytes]:
        while True:
            if len(self.buffer) >= 5:
                (length,) = struct.unpack_from("!i", self.buffer, 1)
                if len(self.buffer) >= 1 + length:
                    kind, body = self.buffer[:1], self.buffer[5 : 1 + length]
                    self.buffer = self.buffer[1 + length :]
                    return kind, body
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk

    def until(self, kind: bytes) -> list[tuple[bytes, bytes]]:
        seen = []
        while True:
            message = self.read()
            seen.append(message)
            if message[0] == kind:
                return seen

    def login(self, user="analyst", password=PASSWORD) -> None:
        self.send_startup(user=user, database="demo")
        kind, body = self.read()
        assert kind == b"R" and struct.unpack_from("!i", body)[0] == 10
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n=,r={nonce}"
        first = ("n,," + first_bare).encode()
        self.send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
        kind, body = self.read()
        server_first = body[4:].decode()
        attrs = dict(part.split("=", 1) for part in server_first.split(","))
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth = f"{first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(hashlib.sha256(client_key).digest(), auth, hashlib.sha256).digest()
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
        self.send(b"p", f"{without_proof},p={proof}".encode())
        self.until(b"Z")

    def close(self) -> None:
        self.sock.close()


def _query_works(pg) -> None:
    import psycopg

    with psycopg.connect(pg.dsn(), connect_timeout=10) as conn:
        assert conn.execute(AGGREGATE.format("%s"), ["north"]).fetchone()[0] == "north"


def _rest(raw: RawClient) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while True:
        chunk = raw.sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_malformed_and_oversized_messages(pg):
    # A startup packet with an impossible length.
    raw = RawClient(pg.port)
    raw.sock.sendall(struct.pack("!i", 3))
    assert _rest(raw).startswith(b"E")  # a FATAL error, then the server hangs up
    raw.close()
    # An oversized startup packet.
    raw = RawClient(pg.port)
    raw.sock.sendall(struct.pack("!ii", 50_000_000, 196608))
    assert _rest(raw).startswith(b"E")
    raw.close()
    # GSSAPI encryption is refused with 'N'; the client may go on without it.
    raw = RawClient(pg.port)
    raw.sock.sendall(struct.pack("!ii", 8, 80877104))
    assert raw.sock.recv(1) == b"N"
    raw.login()
    raw.close()
    # After login: an oversized message ends that session with 54000.
    raw = RawClient(pg.port)
    raw.login()
    raw.sock.sendall(b"Q" + struct.pack("!i", 512 * 1024 * 1024))
    kind, body = raw.read()
    assert kind == b"E" and b"54000" in body
    raw.close()
    # A truncated Parse is a protocol violation (08P01).
    raw = RawClient(pg.port)
    raw.login()
    raw.send(b"P", b"stmt\0SELECT 1")  # no terminator, no parameter count
    kind, body = raw.read()
    assert kind == b"E" and b"08P01" in body
    raw.close()
    # Errors in the extended protocol are skipped until Sync; the session goes on.
    raw = RawClient(pg.port)
    raw.login()
    raw.send(b"B", b"\0missing\0" + struct.pack("!hhh", 0, 0, 0))
    raw.send(b"E", b"\0" + struct.pack("!i", 0))
    raw.send(b"S", b"")
    messages = raw.until(b"Z")
    assert [k for k, _ in messages] == [b"E", b"Z"] and b"26000" in messages[0][1]
    raw.send(b"Q", b"SELECT 1\0")
    assert [k for k, _ in raw.until(b"Z")] == [b"T", b"D", b"C", b"Z"]
    raw.close()
    # An unknown message type is an error, not a crash.
    raw = RawClient(pg.port)
    raw.login()
    raw.send(b"!", b"")
    raw.send(b"S", b"")
    assert raw.until(b"Z")[0][0] == b"E"
    raw.close()
    assert pg.alive()
    _query_works(pg)


def test_client_vanishing_mid_query(pg):
    for _ in range(5):
        raw = RawClient(pg.port)
        raw.login()
        raw.send(b"Q", b"SELECT campaign, COUNT(DISTINCT i.household_id) FROM impressions i JOIN purchases p "
                       b"ON i.household_id = p.household_id GROUP BY campaign\0")
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not FIN
        raw.close()
    time.sleep(0.5)
    assert pg.alive()
    _query_works(pg)


def test_200_idle_connections(pg):
    asyncpg = pytest.importorskip("asyncpg")

    async def main():
        idle = [await asyncpg.connect(host="127.0.0.1", port=pg.port, user="analyst", password=PASSWORD,
                                      database="demo", ssl=False) for _ in range(200)]
        try:
            started = time.monotonic()
            await asyncio.to_thread(_query_works, pg)
            assert time.monotonic() - started < 10
            assert await idle[0].fetchval("SELECT 1") == 1
            assert await idle[-1].fetchval("SELECT 1") == 1
        finally:
            await asyncio.gather(*(c.close() for c in idle))

    asyncio.run(main())
    assert pg.alive()


def test_cancel_request_leaves_session_usable(pg):
    import psycopg

    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.cancel()  # nothing running: a no-op, as in PostgreSQL
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.slow
def test_tls(demo_config_path, tmp_path):
    import psycopg

    if shutil.which("openssl") is None:
        pytest.skip("openssl missing")
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    server = PgServer(wire_config(demo_config_path, tmp_path, tls_cert=str(cert), tls_key=str(key),
                                  allow_cleartext_over_tls=True), tmp_path / "server.log")
    try:
        with psycopg.connect(server.dsn(sslmode="require")) as conn:  # cleartext password, inside TLS
            assert conn.pgconn.ssl_in_use
            assert conn.execute(AGGREGATE.format("%s"), ["north"]).fetchone()[0] == "north"
        with psycopg.connect(server.dsn(sslmode="disable")) as conn:  # no TLS: SCRAM only
            assert not conn.pgconn.ssl_in_use
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(server.dsn(sslmode="require", password="wrong"))
    finally:
        server.stop()


# Fullwidth letters, a no-break space and a soft hyphen: SASLprep makes it "Pass word",
# and every client below prepares it so before hashing, as PostgreSQL does.
PREPARED_PASSWORD = "\uff30\uff41\uff53\uff53\u00a0\uff57\uff4f\uff52\u00add"
LOGIN_JAVA = """import java.sql.*;
public class Login {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], "analyst", "%s");
             ResultSet r = c.createStatement().executeQuery("SELECT 1")) {
            r.next();
            System.out.println("one=" + r.getInt(1));
        }
    }
}
"""


@pytest.mark.slow
def test_a_password_saslprep_changes_logs_in_with_every_client(demo_config_path, tmp_path):
    import psycopg
    from gateway.pgwire.scram import make_verifier

    config_path = wire_config(demo_config_path, tmp_path)
    config = yaml.safe_load(config_path.read_text())
    config["users"]["analyst"]["scram_sha256"] = make_verifier(PREPARED_PASSWORD)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    server = PgServer(config_path, tmp_path / "server.log")
    try:
        with psycopg.connect(server.dsn(password=PREPARED_PASSWORD)) as conn:  # libpq
            assert conn.execute("SELECT 1").fetchone() == (1,)
        login = dict(host="127.0.0.1", port=server.port, dbname="demo", user="analyst", sslmode="disable")
        with psycopg.connect(**login, password="Pass word") as conn:  # what SASLprep makes of it
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(**login, password="Password")
        if shutil.which("psql"):
            result = subprocess.run(["psql", "-X", "-A", "-t", "-c", "SELECT 1", server.dsn(password=None)],
                                    capture_output=True, text=True, timeout=60,
                                    env={**psql_env(), "PGPASSWORD": PREPARED_PASSWORD})
            assert (result.returncode, result.stdout.strip()) == (0, "1"), result.stderr
        pg8000 = pytest.importorskip("pg8000.native")
        conn = pg8000.Connection("analyst", host="127.0.0.1", port=server.port, password=PREPARED_PASSWORD,
                                 database="demo")
        assert conn.run("SELECT 1") == [[1]]
        conn.close()
        asyncpg = pytest.importorskip("asyncpg")

        async def with_asyncpg():
            conn = await asyncpg.connect(host="127.0.0.1", port=server.port, user="analyst",
                                         password=PREPARED_PASSWORD, database="demo", ssl=False)
            try:
                return await conn.fetchval("SELECT 1")
            finally:
                await conn.close()

        assert asyncio.run(with_asyncpg()) == 1
        if shutil.which("javac") and JDBC_JAR.exists():
            escaped = "".join(c if c.isascii() else f"\\u{ord(c):04x}" for c in PREPARED_PASSWORD)
            (tmp_path / "Login.java").write_text(LOGIN_JAVA % escaped)
            subprocess.run(["javac", "-cp", str(JDBC_JAR), "Login.java"], cwd=tmp_path, check=True, timeout=120)
            result = subprocess.run(["java", "-cp", f"{JDBC_JAR}:{tmp_path}", "Login",
                                     f"jdbc:postgresql://127.0.0.1:{server.port}/demo"],
                                    capture_output=True, text=True, timeout=120)
            assert result.stdout.strip() == "one=1", result.stderr
    finally:
        server.stop()


@pytest.mark.slow
def test_workers_share_the_port(demo_config_path, tmp_path):
    import psycopg

    server = PgServer(wire_config(demo_config_path, tmp_path), tmp_path / "server.log", workers=2)
    try:
        dsn = server.dsn()
        for _ in range(6):
            with psycopg.connect(dsn) as conn:
                conn.cancel()  # routed to whichever worker owns the session
                try:
                    row = conn.execute(AGGREGATE.format("%s"), ["north"]).fetchone()
                except psycopg.errors.QueryCanceled:
                    # psycopg's cancel() does not wait: as with PostgreSQL, a cancel still in
                    # flight may hit the next statement. The session must survive it.
                    conn.rollback()
                    row = conn.execute(AGGREGATE.format("%s"), ["north"]).fetchone()
                assert row[0] == "north"
    finally:
        server.stop()


# -- cancellation of a real, slow statement --------------------------------------------------


def slow_room_config(folder: Path) -> Path:
    """A clean room whose declared join explodes to 900M rows: an allowed query
    that runs for many seconds on the real engine, long enough to be cancelled."""
    import duckdb

    from gateway.pgwire.scram import make_verifier

    data = folder / "data"
    data.mkdir()
    with duckdb.connect(str(data / "slow.duckdb")) as con:
        con.execute("CREATE TABLE a AS SELECT 'h1' AS hh FROM range(30000) t(i)")
        con.execute("CREATE TABLE b AS SELECT 'h1' AS hh FROM range(30000) t(i)")
    table = lambda name: {"owner": "x", "source": "slow", "relation": name, "privacy_unit": "hh",  # noqa: E731
                          "columns": {"hh": {"role": "join_key"}}}
    policy = {
        "cleanroom": "slow", "min_group_size": 2, "collaborators": {"x": {}},
        "tables": {"a": table("a"), "b": table("b")},
        "rules": {"r": {"tables": ["a", "b"], "aggregates": ["count"], "joins": [["a.hh", "b.hh"]]}},
        "analysts": {"analyst": {"collaborator": "x", "rules": ["r"]}},
    }
    (folder / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    config = {
        "policies": [str(folder / "policy.yaml")],
        "sources": {"slow": {"kind": "duckdb", "path": str(data / "slow.duckdb")}},
        "engine": {"threads": 2, "memory_limit": "1GB", "query_timeout_seconds": 60, "data_roots": [str(data)]},
        "state_dir": str(folder / "state"),
        "users": {"analyst": {"scram_sha256": make_verifier(PASSWORD)}},
    }
    (folder / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    from tests.roomkit import approve_config

    approve_config(folder / "gateway.yaml")  # the rule's owner approves it, as rules now need
    return folder / "gateway.yaml"


@pytest.mark.slow
def test_cancel_request_interrupts_the_running_statement(tmp_path):
    import threading

    import psycopg

    server = PgServer(slow_room_config(tmp_path), tmp_path / "server.log")
    try:
        with psycopg.connect(server.dsn(dbname="slow"), autocommit=True) as conn:
            threading.Timer(0.5, conn.cancel).start()
            started = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT count(*) FROM a JOIN b ON a.hh = b.hh")
            assert time.monotonic() - started < 10  # interrupted, not left to the 60 s timeout
            assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on
    finally:
        server.stop()


def test_copy_to_stdout_of_an_allowed_query(pg):
    import psycopg

    with psycopg.connect(pg.dsn()) as conn:
        cursor = conn.cursor()
        with cursor.copy("COPY (SELECT region, COUNT(*) AS n FROM purchases GROUP BY region ORDER BY region) "
                         "TO STDOUT") as copy:
            rows = [row for row in copy.rows()]
        assert len(rows) == 8 and rows[0][0] == "central"
        with cursor.copy("COPY (SELECT region, region_name FROM regions ORDER BY region) TO STDOUT "
                         "WITH (FORMAT csv, HEADER)") as copy:
            text = b"".join(bytes(block) for block in copy).decode()
        assert text.splitlines()[0] == "region,region_name" and len(text.splitlines()) == 9
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with cursor.copy("COPY (SELECT * FROM purchases) TO STDOUT") as copy:
                list(copy)


# -- uuid and json ------------------------------------------------------------------------------

UUID_TEXT = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
TYPED = f"""SELECT '{UUID_TEXT}'::uuid AS u, '{{"a": [1, 2]}}'::json AS j, '{{"b": true}}'::jsonb AS jb"""


def test_uuid_and_json_have_their_types_in_text_and_binary(pg):
    import uuid

    import psycopg

    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for binary in (False, True):
            for prepare in (False, True):
                cursor = conn.cursor(binary=binary)
                cursor.execute(TYPED, prepare=prepare)
                assert [d.type_code for d in cursor.description] == [2950, 114, 3802], (binary, prepare)
                assert cursor.fetchall() == [(uuid.UUID(UUID_TEXT), {"a": [1, 2]}, {"b": True})], (binary, prepare)
        # ... and as parameters, typed by the client (psycopg sends uuid, json and jsonb with their OIDs).
        from psycopg.types.json import Json, Jsonb

        for binary in (False, True):
            row = conn.cursor(binary=binary).execute(
                "SELECT %s::uuid AS u, %s::json AS j, %s::jsonb AS jb",
                [uuid.UUID(UUID_TEXT), Json({"x": 1}), Jsonb({"y": 2})]).fetchone()
            assert row == (uuid.UUID(UUID_TEXT), {"x": 1}, {"y": 2})
        types = dict(conn.execute("SELECT typname, oid FROM pg_type WHERE typname IN ('uuid', 'json', 'jsonb')").fetchall())
        assert types == {"uuid": 2950, "json": 114, "jsonb": 3802}


def test_asyncpg_decodes_uuid_and_json(pg):
    asyncpg = pytest.importorskip("asyncpg")
    import json
    import uuid

    async def main():
        conn = await asyncpg.connect(host="127.0.0.1", port=pg.port, user="analyst", password=PASSWORD,
                                     database="demo", ssl=False)
        try:
            row = await conn.fetchrow(TYPED)
            assert row["u"] == uuid.UUID(UUID_TEXT)  # asyncpg decodes uuid in binary
            assert json.loads(row["j"]) == {"a": [1, 2]} and json.loads(row["jb"]) == {"b": True}
            back = await conn.fetchrow("SELECT $1::uuid AS u, $2::jsonb AS jb", uuid.UUID(UUID_TEXT), '{"z": 3}')
            assert back["u"] == uuid.UUID(UUID_TEXT) and json.loads(back["jb"]) == {"z": 3}
        finally:
            await conn.close()

    asyncio.run(main())


# -- templates -----------------------------------------------------------------------------------

TEMPLATE_COLUMNS = ["region", "reach", "frequency", "conversion_rate"]


@needs_psql
def test_psql_runs_a_template_and_is_refused_what_is_not_one(pg):
    out = psql(pg, "SELECT * FROM campaign_reach('spring_sale')",
               "SELECT * FROM campaign_reach(campaign => 'new_year')").stdout
    assert out.count("(8 rows)") == 2 and "conversion_rate" in out and "north" in out
    unknown = psql(pg, "SELECT * FROM no_such_template('x')", check=False)
    assert unknown.returncode != 0 and "42501" in unknown.stderr
    unknown = psql(pg, "SELECT * FROM no_such_template", check=False)
    assert unknown.returncode != 0 and "42P01" in unknown.stderr
    wrapped = psql(pg, "SELECT region FROM campaign_reach('spring_sale') WHERE reach > 1", check=False)
    assert wrapped.returncode != 0 and "42501" in wrapped.stderr and "template.call_shape" in wrapped.stderr
    bad = psql(pg, "SELECT * FROM campaign_reach('black_friday')", check=False)
    assert bad.returncode != 0 and "22023" in bad.stderr and "spring_sale" in bad.stderr  # the hint lists values


def test_psycopg_prepared_template_call(pg):
    import psycopg

    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for binary in (False, True):
            cursor = conn.cursor(binary=binary)
            for _ in range(3):
                cursor.execute("SELECT * FROM campaign_reach(%s)", ["spring_sale"], prepare=True)
                rows = cursor.fetchall()
            assert [d.name for d in cursor.description] == TEMPLATE_COLUMNS
            assert len(rows) == 8 and all(reach >= 10 for _, reach, _, _ in rows)
            named = cursor.execute("SELECT * FROM campaign_reach(campaign => %s)", ["spring_sale"], prepare=True).fetchall()
            assert named == rows
        with pytest.raises(psycopg.Error) as bad:
            conn.execute("SELECT * FROM campaign_reach(%s)", ["black_friday"], prepare=True)
        assert bad.value.sqlstate == "22023"
        with pytest.raises(psycopg.Error) as unknown:
            conn.execute("SELECT * FROM other_template(%s)", ["x"], prepare=True)
        assert unknown.value.sqlstate == "42501"
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_asyncpg_template_call_with_a_parameter(pg):
    asyncpg = pytest.importorskip("asyncpg")

    async def main():
        conn = await asyncpg.connect(host="127.0.0.1", port=pg.port, user="analyst", password=PASSWORD,
                                     database="demo", ssl=False)
        try:
            rows = await conn.fetch("SELECT * FROM campaign_reach($1)", "summer_fresh")
            assert list(rows[0].keys()) == TEMPLATE_COLUMNS and len(rows) == 8
        finally:
            await conn.close()

    asyncio.run(main())


# -- privacy budget and EXPLAIN ------------------------------------------------------------------


def _engine_has(*methods: str) -> bool:
    from gateway.engine.engine import Engine

    return all(hasattr(Engine, name) for name in methods)


needs_budget = pytest.mark.skipif(not _engine_has("budget", "explain"),
                                  reason="Engine.budget / Engine.explain not in this engine yet")
BUDGET_COLUMNS = ["enabled", "epsilon_spent", "epsilon_remaining", "epsilon_budget", "delta_spent", "delta_remaining",
                  "delta_budget", "queries", "refresh", "renews_at", "protection"]


@needs_budget
def test_show_budget_and_explain_with_psycopg(pg):
    import json

    import psycopg

    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for prepare in (False, True):
            cursor = conn.execute("SHOW cleanroom.budget", prepare=prepare)
            assert [d.name for d in cursor.description] == BUDGET_COLUMNS
            (budget,) = cursor.fetchall()
            assert isinstance(budget[0], bool)
        assert conn.execute("SHOW privacy_budget").fetchone() == budget
        for prepare in (False, True):
            cursor = conn.cursor().execute(
                "EXPLAIN SELECT region, COUNT(*) AS n FROM purchases WHERE region = %s GROUP BY region",
                ["north"], prepare=prepare)
            assert [d.name for d in cursor.description] == ["QUERY PLAN"]
            lines = [line for (line,) in cursor.fetchall()]
            assert lines[0].startswith(("cost:", "no differential privacy"))  # the readable head first
            explained = json.loads("\n".join(lines[lines.index("") + 1:]))  # then the whole account
            assert isinstance(explained, dict) and explained
        (plan,) = conn.execute("EXPLAIN (FORMAT JSON) SELECT * FROM campaign_reach('spring_sale')").fetchone()
        assert isinstance(json.loads(plan), dict)
        assert conn.execute("SHOW cleanroom.budget").fetchone() == budget  # EXPLAIN neither runs nor charges
        with pytest.raises(psycopg.Error) as analyze:
            conn.execute("EXPLAIN ANALYZE SELECT region, COUNT(*) FROM purchases GROUP BY region")
        assert analyze.value.sqlstate == "0A000"
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("EXPLAIN " + REFUSED)
        assert conn.execute("SELECT 1").fetchone() == (1,)


@needs_budget
@needs_psql
def test_psql_show_budget_and_explain(pg):
    out = psql(pg, "SHOW cleanroom.budget", "EXPLAIN SELECT region, COUNT(*) FROM purchases GROUP BY region").stdout
    assert "epsilon_remaining" in out and "(1 row)" in out and "QUERY PLAN" in out


# -- repeated constant statements (connection pools' liveness probes) ------------------------


def test_repeated_select_1_from_many_sessions_is_answered_and_audited_each_time(pg, tmp_path):
    import concurrent.futures

    import psycopg

    from gateway.audit_log import read_records, verify_state

    state = Path(yaml.safe_load(Path(pg.process.args[4]).read_text())["state_dir"])
    before = {(r.get("chain"), r.get("seq")) for r in read_records(state)}

    def probe(binary: bool) -> list:
        with psycopg.connect(pg.dsn(), autocommit=True) as conn:
            return [conn.execute("SELECT 1", prepare=True, binary=binary).fetchone()[0] for _ in range(40)]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(probe, [True, False, True, False]))
    assert answers == [[1] * 40] * 4
    # SELECT 1 reads no clean-room data: its answer may leave before its record is written (in
    # order, in its worker's chain, by the end of the loop's turn), so the records are waited for.
    deadline = time.monotonic() + 30
    while True:
        records = [r for r in read_records(state) if (r.get("chain"), r.get("seq")) not in before]
        probes = [r for r in records if r["sql"] == "SELECT 1"]
        if len(probes) >= 160 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(probes) == 160 and {(r["decision"], r["front_end"]) for r in probes} == {("released", "pgwire")}
    assert [report.problems for report in verify_state(state) if report.problems] == []
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:  # and a refusal after them is still a refusal
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(REFUSED)
        assert conn.execute("SELECT 1").fetchone() == (1,)


# -- Npgsql (Power BI, .NET tools): its type-loading batch on every new connection ----------------

# Npgsql (src/Npgsql/PostgresDatabaseInfo.cs) sends this as ONE simple Query right after login,
# before anything else, and refuses the connection unless every part comes back. Written out here
# with the same joins, filters and ordering: arrays are told apart by their receive function and
# carry their element's oid; ranges, multiranges and domains too.
NPGSQL_TYPES_BATCH = """SELECT version();
SELECT ns.nspname, t.oid, t.typname, t.typtype, t.typnotnull, t.elemtypoid
FROM (
    SELECT typ.oid, typ.typnamespace, typ.typname, typ.typtype, typ.typrelid, typ.typnotnull, typ.relkind,
        elemtyp.oid AS elemtypoid, elemtyp.typname AS elemtypname, elemcls.relkind AS elemrelkind,
        CASE WHEN elemproc.proname='array_recv' THEN 'a' ELSE elemtyp.typtype END AS elemtyptype
    FROM (
        SELECT typ.oid, typnamespace, typname, typrelid, typnotnull, relkind, typelem AS elemoid,
            CASE WHEN proc.proname='array_recv' THEN 'a' ELSE typ.typtype END AS typtype,
            CASE
                WHEN proc.proname='array_recv' THEN typ.typelem
                WHEN typ.typtype='r' THEN rngsubtype
                WHEN typ.typtype='m' THEN (SELECT rngtypid FROM pg_range WHERE rngmultitypid = typ.oid)
                WHEN typ.typtype='d' THEN typ.typbasetype
            END AS elemtypoid
        FROM pg_type AS typ
        LEFT JOIN pg_class AS cls ON (cls.oid = typ.typrelid)
        LEFT JOIN pg_proc AS proc ON proc.oid = typ.typreceive
        LEFT JOIN pg_range ON (pg_range.rngtypid = typ.oid)
    ) AS typ
    LEFT JOIN pg_type AS elemtyp ON elemtyp.oid = elemtypoid
    LEFT JOIN pg_class AS elemcls ON (elemcls.oid = elemtyp.typrelid)
    LEFT JOIN pg_proc AS elemproc ON elemproc.oid = elemtyp.typreceive
) AS t
JOIN pg_namespace AS ns ON (ns.oid = typnamespace)
WHERE
    typtype IN ('b', 'r', 'm', 'e', 'd') OR
    (typtype = 'c' AND relkind='c') OR
    (typtype = 'p' AND typname IN ('record', 'void')) OR
    (typtype = 'a' AND (
        elemtyptype IN ('b', 'r', 'm', 'e', 'd') OR
        (elemtyptype = 'p' AND elemtypname IN ('record', 'void')) OR
        (elemtyptype = 'c' AND elemrelkind='c')
    ))
ORDER BY CASE
       WHEN typtype IN ('b', 'e', 'p') THEN 0
       WHEN typtype = 'r' THEN 1
       WHEN typtype = 'm' THEN 2
       WHEN typtype = 'c' THEN 3
       WHEN typtype = 'd' AND elemtyptype <> 'a' THEN 4
       WHEN typtype = 'a' THEN 5
       WHEN typtype = 'd' AND elemtyptype = 'a' THEN 6
END;
-- Load field definitions for (free-standing) composite types
SELECT typ.oid, att.attname, att.atttypid
FROM pg_type AS typ
JOIN pg_namespace AS ns ON (ns.oid = typ.typnamespace)
JOIN pg_class AS cls ON (cls.oid = typ.typrelid)
JOIN pg_attribute AS att ON (att.attrelid = typ.typrelid)
WHERE
  (typ.typtype = 'c' AND cls.relkind='c') AND
  attnum > 0 AND
  NOT attisdropped
ORDER BY typ.oid, att.attnum;
-- Load enum fields
SELECT pg_type.oid, enumlabel
FROM pg_enum
JOIN pg_type ON pg_type.oid=enumtypid
ORDER BY oid, enumsortorder;
"""


def _text_row(body: bytes) -> list[str | None]:
    (count,), at, values = struct.unpack_from("!h", body), 2, []
    for _ in range(count):
        (length,) = struct.unpack_from("!i", body, at)
        at += 4
        values.append(None if length == -1 else body[at : at + length].decode())
        at += max(length, 0)
    return values


def test_npgsql_type_loading_batch(pg):
    raw = RawClient(pg.port)
    try:
        raw.login()
        raw.send(b"Q", NPGSQL_TYPES_BATCH.encode() + b"\0")
        messages = raw.until(b"Z")
    finally:
        raw.close()
    assert [kind for kind, _ in messages if kind == b"E"] == [], [body for kind, body in messages if kind == b"E"]
    results, rows = [], []
    for kind, body in messages:
        if kind == b"D":
            rows.append(_text_row(body))
        elif kind == b"C":
            results.append(rows)
            rows = []
    assert len(results) == 4  # version, types, composite fields, enum labels
    [[version]] = results[0]
    assert version.startswith("PostgreSQL ")
    # Read the types as Npgsql does: every oid an unsigned integer, an array's element loaded before it.
    loaded: dict[int, tuple[str, str]] = {}
    for namespace, oid, name, kind, not_null, element in results[1]:
        assert namespace and int(oid) > 0 and kind in "bpredcam" and not_null in ("t", "f"), (oid, name)
        if kind == "a":
            assert element is not None and int(element) in loaded, (name, element)
        loaded[int(oid)] = (name, kind)
    for oid, name in ((16, "bool"), (20, "int8"), (23, "int4"), (25, "text"), (1700, "numeric"), (1082, "date"),
                      (1114, "timestamp"), (1184, "timestamptz"), (2950, "uuid"), (114, "json"), (3802, "jsonb")):
        assert loaded.get(oid) == (name, "b"), (oid, loaded.get(oid))
    assert loaded.get(1007) == ("_int4", "a") and loaded.get(1009) == ("_text", "a")
    assert results[2] == [] and results[3] == []  # no free-standing composites, no enums
    _query_works(pg)


# -- SQL cursors: psqlODBC's UseDeclareFetch (Tableau), psycopg's named cursors, psql ----------------

BY_REGION = "SELECT region, COUNT(*) AS n FROM purchases WHERE category = {} GROUP BY region ORDER BY region"


@pytest.mark.skipif(not _odbc_driver(), reason="psqlodbc missing (apt install odbc-postgresql unixodbc)")
def test_psqlodbc_reads_through_cursors_with_use_declare_fetch(pg):
    import pyodbc

    base = f"DRIVER={{PostgreSQL Unicode}};SERVER=127.0.0.1;PORT={pg.port};DATABASE=demo;UID=analyst;PWD={PASSWORD};"
    plain = pyodbc.connect(base, timeout=10)
    expected = plain.cursor().execute(BY_REGION.format("?"), "baby").fetchall()
    plain.close()
    # Fetch=3: `declare "SQL_CUR…" cursor with hold for …`, then `fetch 3 in "SQL_CUR…"` until the 8 regions are read.
    conn = pyodbc.connect(base + "UseDeclareFetch=1;Fetch=3", timeout=10)
    try:
        cursor = conn.cursor()
        assert len(expected) == 8 and cursor.execute(BY_REGION.format("?"), "baby").fetchall() == expected
        with pytest.raises(pyodbc.Error) as refused:
            cursor.execute(REFUSED).fetchall()
        assert refused.value.args[0] == "42501"
        assert cursor.execute("SELECT 1").fetchall()[0][0] == 1
    finally:
        conn.close()


def test_psycopg_named_cursor(pg):
    import psycopg

    with psycopg.connect(pg.dsn()) as conn:
        expected = conn.execute(BY_REGION.format("%s"), ["baby"]).fetchall()
        with conn.cursor(name="chunks") as cursor:  # DECLARE, Describe of the cursor's portal, FETCH FORWARD, CLOSE
            cursor.execute(BY_REGION.format("%s"), ["baby"])
            assert [d.name for d in cursor.description] == ["region", "n"]
            assert cursor.fetchmany(3) + cursor.fetchall() == expected
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with conn.cursor(name="refused") as cursor:
                cursor.execute(REFUSED)
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone() == (1,)


@needs_psql
def test_psql_declare_fetch_move_close(pg):
    declare = "DECLARE c CURSOR FOR " + BY_REGION.format("'baby'")
    out = psql(pg, "BEGIN", declare, "FETCH 3 FROM c", "MOVE 2 IN c", "FETCH ALL IN c", "FETCH NEXT FROM c",
               "CLOSE c", "COMMIT").stdout
    assert "DECLARE CURSOR" in out and "MOVE 2" in out and "CLOSE CURSOR" in out
    assert out.count("(3 rows)") == 2 and "(0 rows)" in out  # 3, skip 2, the last 3, then nothing
    for sql, sqlstate in ((["BEGIN", declare, "COMMIT", "FETCH 1 FROM c"], "34000"),  # WITHOUT HOLD ends at COMMIT
                          ([declare, "FETCH BACKWARD 1 FROM c"], "0A000"),
                          (["DECLARE d CURSOR WITH HOLD FOR SELECT * FROM purchases"], "42501"),
                          (["DECLARE e SCROLL CURSOR FOR SELECT 1"], "0A000")):
        failed = psql(pg, *sql, check=False)
        assert f"ERROR:  {sqlstate}" in failed.stderr, (sql, failed.stderr)
