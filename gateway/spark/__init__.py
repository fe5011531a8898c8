"""The Spark engine (`engine: {kind: spark, remote: "sc://host:15002"}`): the generated DuckDB SQL
written for Spark (sql.py), and the Spark Connect session an executor process holds (session.py)."""
