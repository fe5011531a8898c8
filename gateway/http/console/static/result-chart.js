// A chart of a released result: a line over a date or time column, bars over any other
// label column, one numeric column at a time, with the 95% interval the engine released
// for each value (protection.columns[name].intervals) drawn as error bars.
// Chart.js and its error-bars plugin are vendored UMD builds (static/vendor, from npm).

const NUMERIC = /^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|FLOAT|DOUBLE|DECIMAL)/;
const TEMPORAL = /^(DATE|TIMESTAMP)/;
const MAX_POINTS = 500;
let chart = null;
let registered = false;

function register() {
  if (registered) return;
  const bars = window.ChartErrorBars;
  window.Chart.register(bars.BarWithErrorBarsController, bars.BarWithErrorBar,
    bars.LineWithErrorBarsController, bars.PointWithErrorBar);
  registered = true;
}

function number(value) {
  if (value === null || value === undefined) return null;
  const n = Number(value); // DECIMAL values arrive as strings, so no digit is lost in the table
  return Number.isFinite(n) ? n : null;
}

export function numericColumns(release) {
  return release.columns.filter((c) => NUMERIC.test(c.type)).map((c) => c.name);
}

// Returns a sentence saying what is drawn (or why nothing is).
export function drawChart(canvas, release, columnName) {
  if (chart) { chart.destroy(); chart = null; }
  const numeric = release.columns.filter((c) => NUMERIC.test(c.type));
  const labelColumn = release.columns.find((c) => !NUMERIC.test(c.type));
  canvas.hidden = true;
  if (!numeric.length || !release.rows.length) return "nothing to chart: no numeric column or no rows";
  if (!window.Chart || !window.ChartErrorBars) return "the chart library did not load";
  register();
  const valueColumn = numeric.find((c) => c.name === columnName) || numeric[0];
  const valueIndex = release.columns.indexOf(valueColumn);
  const labelIndex = labelColumn ? release.columns.indexOf(labelColumn) : -1;
  const temporal = labelColumn && TEMPORAL.test(labelColumn.type);
  let rows = release.rows.map((row, i) => ({ row, i }));
  if (temporal) rows.sort((a, b) => String(a.row[labelIndex]).localeCompare(String(b.row[labelIndex])));
  rows = rows.slice(0, MAX_POINTS);
  const protection = release.protection && release.protection.columns && release.protection.columns[valueColumn.name];
  const intervals = protection && protection.intervals;
  const data = rows.map(({ row, i }) => {
    const point = { y: number(row[valueIndex]) };
    const range = intervals && intervals[i];
    if (range && range[0] !== null && range[1] !== null) {
      point.yMin = number(range[0]);
      point.yMax = number(range[1]);
    }
    return point;
  });
  const labels = rows.map(({ row }) => (labelIndex >= 0 ? String(row[labelIndex]) : "all rows"));
  canvas.hidden = false;
  chart = new window.Chart(canvas, {
    type: temporal ? "lineWithErrorBars" : "barWithErrorBars",
    data: { labels, datasets: [{ label: valueColumn.name, data, borderColor: "#2f5d8a", backgroundColor: "#7ea6cf" }] },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      plugins: { legend: { display: true } },
      scales: { y: { beginAtZero: !temporal } },
    },
  });
  canvas.dataset.chartType = temporal ? "line" : "bar";
  canvas.dataset.column = valueColumn.name;
  canvas.dataset.errorBars = String(data.filter((p) => p.yMin !== undefined).length);
  const bars = intervals ? "error bars: the released 95% interval of each value (noise only)"
    : "no error bars: these values carry no noise";
  const cut = release.rows.length > MAX_POINTS ? `; first ${MAX_POINTS} rows` : "";
  return `${temporal ? "line" : "bars"} of ${valueColumn.name} by ${labelColumn ? labelColumn.name : "row"}; ${bars}${cut}`;
}
