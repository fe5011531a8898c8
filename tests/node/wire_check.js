// node-postgres against the gateway: list the demo tables, read their columns, run an
// allowed aggregate with a bound parameter, get 42501 for a refused query, and go on.
// Prints one JSON object; tests/test_pgwire_clients.py checks it.
const { Client } = require("pg");

async function main() {
  const client = new Client({
    host: "127.0.0.1", port: Number(process.env.PGPORT), user: "analyst",
    password: process.env.PGPASSWORD, database: "demo", ssl: false,
  });
  await client.connect();
  const out = {};
  try {
    const tables = await client.query(
      "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1", ["public"]);
    out.tables = tables.rows.map((r) => r.table_name);
    const columns = await client.query(
      "SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
      ["purchases"]);
    out.columns = columns.rows.map((r) => r.column_name);
    const aggregate = await client.query(
      "SELECT region, COUNT(*) AS n FROM purchases WHERE region = $1 GROUP BY region", ["north"]);
    out.aggregate = aggregate.rows;
    out.fields = aggregate.fields.map((f) => [f.name, f.dataTypeID]);
    try {
      await client.query("SELECT * FROM purchases");
      out.refused = null;
    } catch (error) {
      out.refused = { code: error.code, message: error.message, hint: error.hint };
    }
    out.after = (await client.query("SELECT 1 AS one")).rows;
  } finally {
    await client.end();
  }
  console.log(JSON.stringify(out));
}

main().catch((error) => { console.error(error); process.exit(1); });
