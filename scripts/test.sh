#!/usr/bin/env bash
# Installs everything the tests need from the project's own files, then runs them.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# Real Postgres clients the wire-protocol tests drive (psql, pgbench, pgjdbc, psqlodbc).
APT_PACKAGES=(postgresql-client postgresql-contrib libpostgresql-jdbc-java odbc-postgresql unixodbc default-jdk-headless chromium chromium-driver
              libmariadb-java)  # libmariadb-java: the MariaDB JDBC driver for the Spark tests
missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: not root, so not installing ${missing[*]}; tests needing them will skip" >&2
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e ".[test,spark,models]"
# Apache Superset, pinned, in a venv of its own (it pins SQLAlchemy 1.4): tests/test_superset.py builds
# charts with it on a running demo, and skips with the reason when this install failed.
SUPERSET_PACKAGES=(apache-superset==6.1.0 rich==15.0.0 cachetools==8.0.2 flask-caching==2.3.1 psycopg2-binary==2.9.13)
if [ "$(cat .venv-superset/installed 2>/dev/null)" != "${SUPERSET_PACKAGES[*]}" ]; then
  { [ -x .venv-superset/bin/python ] || python3 -m venv .venv-superset; } &&
    .venv-superset/bin/pip install -q --disable-pip-version-check "${SUPERSET_PACKAGES[@]}" &&
    echo "${SUPERSET_PACKAGES[*]}" > .venv-superset/installed ||
    echo "note: Apache Superset did not install; tests/test_superset.py will skip" >&2
fi
.venv/bin/lint-imports --no-cache  # the layer contract in pyproject.toml: imports point one way
exec .venv/bin/pytest -q "$@"
