// The analyst page: sends statements to /console/api (the engine answers exactly as
// the HTTP API does) and shows the answer. Nothing here decides policy: refusals
// are shown with the rule id and hint the engine gave.
import { drawChart, numericColumns } from "./result-chart.js";

const page = document.getElementById("analyst");
const csrf = page.dataset.csrf;
const $ = (id) => document.getElementById(id);

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

async function call(method, path, body) {
  const options = { method, headers: { "X-CSRF-Token": csrf, Accept: "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let payload = null;
  try { payload = await response.json(); } catch { payload = { title: "Unreadable answer", detail: `HTTP ${response.status}` }; }
  return { ok: response.ok, payload };
}

function showProblem(problem) {
  const box = $("problem");
  box.replaceChildren();
  box.append(element("strong", problem.title || "Refused"), element("p", problem.detail, "detail"));
  if (problem.rule) {
    const rule = element("p", "Rule: ");
    rule.append(element("code", problem.rule, "rule"));
    box.append(rule);
  }
  if (problem.hint) box.append(element("p", `Hint: ${problem.hint}`, "hint"));
  if (problem.request_id) box.append(element("p", `Request id ${problem.request_id}`, "muted"));
  box.hidden = false;
}

function clearMessages() {
  $("problem").hidden = true;
  $("explain").hidden = true;
}

function showExplain(explained) {
  const box = $("explain");
  box.replaceChildren(element("strong", "Preview: nothing ran, nothing was charged"));
  const list = element("ul");
  const cost = explained.cost || {};
  list.append(element("li", `authorised by ${explained.authorised_by}` +
    (explained.min_group_size ? `, every released row from at least ${explained.min_group_size} units` : "")));
  list.append(element("li", `cost: ε ${cost.epsilon}, δ ${cost.delta}` +
    (explained.answered_before ? " (asked before: the same answer again, free)" : "")));
  const dp = explained.differential_privacy;
  if (dp) {
    for (const aggregate of dp.aggregates || []) {
      const interval = aggregate.interval ? aggregate.interval.text : "";
      list.append(element("li", `${aggregate.sql}: 95% interval (noise only) ${interval}`));
    }
    const needed = dp.groups && dp.groups.to_be_released;
    if (needed && needed.summary) list.append(element("li", needed.summary));
  } else {
    list.append(element("li", "no noise: k-thresholds only"));
  }
  if (explained.budget && explained.budget.remaining) {
    list.append(element("li", `budget left before running: ε ${explained.budget.remaining.epsilon}`));
  }
  const raw = element("details");
  raw.append(element("summary", "everything EXPLAIN returned"), element("pre", JSON.stringify(explained, null, 2)));
  box.append(list, raw);
  box.hidden = false;
}

function showRelease(release) {
  $("result-meta").textContent = `${release.row_count} row(s), authorised by ${release.authorised_by}` +
    (release.min_group_size ? `, k = ${release.min_group_size}` : "") + `, request id ${release.request_id}`;
  const table = $("result-table");
  const head = element("tr");
  for (const column of release.columns) {
    const cell = element("th", column.name);
    cell.title = column.type;
    head.append(cell);
  }
  const thead = element("thead");
  thead.append(head);
  const tbody = element("tbody");
  const intervals = (release.protection && release.protection.columns) || {};
  release.rows.forEach((row, i) => {
    const tr = element("tr");
    row.forEach((value, j) => {
      const interval = intervals[release.columns[j].name];
      const cell = element("td", value === null ? "NULL" : value);
      const range = interval && interval.intervals && interval.intervals[i];
      if (range) cell.title = `95% interval (noise only): [${range[0]}, ${range[1]}]`;
      tr.append(cell);
    });
    tbody.append(tr);
  });
  table.replaceChildren(thead, tbody);
  const notices = $("notices");
  notices.replaceChildren(...(release.notices.length ? release.notices : ["no notices: public data or k-thresholds only"])
    .map((notice) => element("li", notice)));
  const chooser = $("chart-column");
  chooser.replaceChildren(...numericColumns(release).map((name) => element("option", name)));
  chooser.hidden = chooser.options.length < 2;
  chooser.onchange = () => { $("chart-note").textContent = drawChart($("chart"), release, chooser.value); };
  $("chart-note").textContent = drawChart($("chart"), release);
  $("result").hidden = false;
}

async function refreshSidebar() {
  const budget = await call("GET", "/console/api/budget");
  const meter = $("budget-meter");
  if (budget.ok && meter && budget.payload.remaining && budget.payload.remaining.epsilon !== null) {
    const b = budget.payload;
    meter.value = b.remaining.epsilon;
    $("budget-text").textContent = `ε ${Number(b.remaining.epsilon.toPrecision(4))} of ${b.budget.epsilon}, ` +
      `${b.queries} charged quer${b.queries === 1 ? "y" : "ies"}`;
  }
  const history = await call("GET", "/console/api/history");
  if (history.ok) renderHistory(history.payload.history);
}

function renderHistory(items) {
  const list = $("history");
  list.replaceChildren(...items.map((item) => {
    const li = element("li");
    const button = element("button", (item.kind === "template" ? "template " : "") + item.text.slice(0, 160), "load");
    button.type = "button";
    button.dataset.kind = item.kind;
    button.dataset.text = item.text;
    button.dataset.params = JSON.stringify(item.params);
    li.append(button, " ", element("span", item.outcome, "muted outcome"));
    return li;
  }));
}

function templateStatement(form) {
  const params = {};
  for (const field of form.querySelectorAll("[name]")) {
    if (field.value === "") continue; // the template's default applies
    const type = field.dataset.type;
    params[field.name] = (type === "integer" || type === "number") && !Number.isNaN(Number(field.value))
      ? Number(field.value) : field.value;
  }
  return { template: form.dataset.template, params };
}

async function explain(statement) {
  clearMessages();
  const answer = await call("POST", "/console/api/explain", statement);
  answer.ok ? showExplain(answer.payload) : showProblem(answer.payload);
}

async function run(statement) {
  clearMessages();
  $("result").hidden = true;
  const answer = await call("POST", "/console/api/run", statement);
  if (answer.ok) {
    $("download-statement").value = JSON.stringify(statement);
    showRelease(answer.payload);
  } else {
    showProblem(answer.payload);
  }
  await refreshSidebar();
}

const sqlStatement = () => ({ sql: $("sql").value });
$("explain-sql").addEventListener("click", () => explain(sqlStatement()));
$("sql-form").addEventListener("submit", (event) => { event.preventDefault(); run(sqlStatement()); });
for (const form of document.querySelectorAll(".template-form")) {
  form.querySelector(".explain-template").addEventListener("click", () => explain(templateStatement(form)));
  form.addEventListener("submit", (event) => { event.preventDefault(); run(templateStatement(form)); });
}

// Schema browser: a name clicked goes into the editor at the cursor.
$("schema").addEventListener("click", (event) => {
  const name = event.target.dataset && event.target.dataset.insert;
  if (!name) return;
  event.preventDefault();
  const editor = $("sql");
  const at = editor.selectionStart;
  editor.setRangeText(name, at, editor.selectionEnd, "end");
  editor.focus();
});

// History: an entry clicked goes back into the editor (or its template's form).
$("history").addEventListener("click", (event) => {
  const button = event.target.closest("button.load");
  if (!button) return;
  if (button.dataset.kind === "sql") {
    $("sql").value = button.dataset.text;
    $("sql").focus();
    return;
  }
  const form = document.querySelector(`.template-form[data-template="${CSS.escape(button.dataset.text)}"]`);
  if (!form) return;
  const params = JSON.parse(button.dataset.params || "{}");
  for (const [name, value] of Object.entries(params)) {
    const field = form.querySelector(`[name="${CSS.escape(name)}"]`);
    if (field) field.value = value;
  }
  form.scrollIntoView();
});
