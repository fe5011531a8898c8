#!/usr/bin/env bash
# Reproduces the console's vendored browser libraries from the npm registry:
# npm ci installs exactly what gateway/http/console/static/vendor/package-lock.json pins,
# then the two UMD builds the console serves are copied beside it. Run after editing
# package.json (then `npm install` there first, to update the lock file), and commit the result.
set -euo pipefail
vendor="$(cd "$(dirname "$0")/.." && pwd)/gateway/http/console/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$vendor/package.json" "$vendor/package-lock.json" "$work/"
(cd "$work" && npm ci --no-audit --no-fund --ignore-scripts >/dev/null)
cp "$work/node_modules/chart.js/dist/chart.umd.min.js" "$vendor/chart.umd.min.js"
cp "$work/node_modules/chartjs-chart-error-bars/build/index.umd.min.js" "$vendor/chartjs-chart-error-bars.umd.min.js"
cp "$work/node_modules/chart.js/LICENSE.md" "$vendor/chart.js.LICENSE.md"
cp "$work/node_modules/chartjs-chart-error-bars/LICENSE" "$vendor/chartjs-chart-error-bars.LICENSE"
echo "vendored into $vendor:"
(cd "$vendor" && sha256sum chart.umd.min.js chartjs-chart-error-bars.umd.min.js)
