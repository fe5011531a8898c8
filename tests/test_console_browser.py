"""Each role's main flow through the console in headless Chromium (Debian's
chromium and chromium-driver, driven by Selenium), against a real gateway
serving the demo with differential privacy. Assertions are on what the page
shows. With CONSOLE_SCREENSHOTS=<dir> each page's screenshot is saved there
(docs/console.md uses them)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests import consolekit
from tests.consolekit import POLICIES
from tests.servers import bearer

console_server = consolekit.console_server  # a module-scoped fixture: its own gateway

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.expected_conditions import staleness_of  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="chromium and chromium-driver are not installed (scripts/test.sh installs them)")
WAIT_SECONDS = 60  # how long a page may take to show an answer on a loaded machine (not a timing assertion)
SQL = "SELECT region, COUNT(DISTINCT household_id) AS households, AVG(amount) AS basket FROM purchases GROUP BY region"


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    yield driver
    driver.quit()


def wait(driver, condition):
    return WebDriverWait(driver, WAIT_SECONDS).until(condition)


def shown(driver, element_id: str):
    return wait(driver, lambda d: d.find_element(By.ID, element_id).is_displayed() and d.find_element(By.ID, element_id))


def screenshot(driver, name: str) -> None:
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))


def log_in(driver, base: str, secret: str, user: str = "") -> None:
    driver.delete_all_cookies()
    driver.get(base + "/console/")
    assert driver.current_url.endswith("/console/login")
    if user:
        driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "secret").send_keys(secret)
    if secret == "analyst":
        screenshot(driver, "login")
    driver.find_element(By.ID, "login").click()
    wait(driver, lambda d: d.find_elements(By.ID, "logout"))


def problems_in_console(driver) -> list[str]:
    """Errors the page's scripts met (a CSP violation is one), not refusals the network tab lists."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE" and e["source"] != "network"]


def run_sql(driver, sql: str) -> None:
    editor = driver.find_element(By.ID, "sql")
    editor.clear()
    editor.send_keys(sql)
    driver.find_element(By.ID, "run-sql").click()


def epsilon_left(driver) -> float:
    return float(driver.find_element(By.ID, "budget-meter").get_attribute("value"))


def test_analyst_previews_runs_charts_and_downloads(browser, console_server, downloads):
    log_in(browser, console_server, "analyst")
    assert browser.current_url.endswith("/console/analyst")
    schema = browser.find_element(By.ID, "schema").text
    for shown_text in ("purchases", "impressions", "regions", "join_key", "measure", "bounds [0.0, 500.0]",
                       "values: north, south", "day / week / month from 2026-01-01", "campaign_reach"):
        assert shown_text in schema, shown_text
    assert "card_last4" not in schema  # hidden columns are not shown, as /v1/tables does not list them
    before = epsilon_left(browser)

    browser.find_element(By.ID, "explain-sql").click()
    explain = shown(browser, "explain").text
    assert "authorised by rule:cross_party_aggregates" in explain and "cost: ε 0.1" in explain
    assert "count(DISTINCT household_id): 95% interval (noise only) ±" in explain
    assert epsilon_left(browser) == before  # a preview is free
    screenshot(browser, "analyst-explain")

    browser.find_element(By.ID, "run-sql").click()
    shown(browser, "result")
    rows = browser.find_elements(By.CSS_SELECTOR, "#result-table tbody tr")
    meta = browser.find_element(By.ID, "result-meta").text
    assert f"{len(rows)} row(s), authorised by rule:cross_party_aggregates, k = 10" in meta and 1 <= len(rows) <= 8
    chart = browser.find_element(By.ID, "chart")
    assert chart.get_attribute("data-chart-type") == "bar" and chart.get_attribute("data-column") == "households"
    assert chart.get_attribute("data-error-bars") == str(len(rows))  # one released interval per bar
    assert "error bars: the released 95% interval" in browser.find_element(By.ID, "chart-note").text
    cell = browser.find_element(By.CSS_SELECTOR, "#result-table tbody tr td:nth-child(2)")
    assert cell.get_attribute("title").startswith("95% interval (noise only): [")
    notices = browser.find_element(By.ID, "notices").text
    assert "differential privacy: laplace, epsilon 0.1 per household_id" in notices
    wait(browser, lambda d: abs(epsilon_left(d) - (before - 0.1)) < 1e-9)  # the meter follows the ledger
    Select(browser.find_element(By.ID, "chart-column")).select_by_visible_text("basket")
    assert chart.get_attribute("data-column") == "basket"
    Select(browser.find_element(By.ID, "chart-column")).select_by_visible_text("households")
    screenshot(browser, "analyst-result")
    wait(browser, lambda d: SQL.split(" FROM")[0] in d.find_element(By.ID, "history").text.replace("\n", " "))

    browser.find_element(By.ID, "download").click()  # the last statement again, as CSV: free under DP
    wait(browser, lambda d: [p for p in downloads.glob("*.csv")])
    (csv_file,) = downloads.glob("*.csv")
    assert csv_file.read_text().splitlines()[0] == "region,households,basket"
    assert epsilon_left(browser) == pytest.approx(before - 0.1)
    assert problems_in_console(browser) == []


def test_analyst_sees_refusals_with_the_apis_rule_and_hint(browser, console_server):
    log_in(browser, console_server, "analyst")
    sql = "SELECT regon, count(DISTINCT household_id) FROM purchases GROUP BY regon"
    run_sql(browser, sql)
    problem = shown(browser, "problem")
    status, api = bearer(console_server, "/v1/query", "analyst", {"sql": sql})
    assert status == 400
    assert browser.find_element(By.CSS_SELECTOR, "#problem code.rule").text == api["rule"]
    assert f"Hint: {api['hint']}" in problem.text and api["detail"] in problem.text
    screenshot(browser, "analyst-refusal")
    run_sql(browser, "SELECT card_last4 FROM purchases")
    wait(browser, lambda d: "card_last4" in d.find_element(By.ID, "problem").text)
    _, api = bearer(console_server, "/v1/query", "analyst", {"sql": "SELECT card_last4 FROM purchases"})
    assert browser.find_element(By.CSS_SELECTOR, "#problem code.rule").text == api["rule"]
    assert browser.find_element(By.ID, "result").is_displayed() is False
    assert problems_in_console(browser) == []


def test_analyst_time_series_is_a_line_and_templates_run(browser, console_server):
    log_in(browser, console_server, "analyst")
    run_sql(browser, "SELECT date_trunc('month', purchased_on) AS month, count(DISTINCT household_id) AS buyers "
                     "FROM purchases GROUP BY 1")
    shown(browser, "result")
    chart = browser.find_element(By.ID, "chart")
    assert chart.get_attribute("data-chart-type") == "line" and chart.get_attribute("data-column") == "buyers"
    assert int(chart.get_attribute("data-error-bars")) == len(browser.find_elements(By.CSS_SELECTOR,
                                                                                     "#result-table tbody tr")) == 12
    screenshot(browser, "analyst-line")
    form = browser.find_element(By.ID, "template-campaign_reach")
    Select(form.find_element(By.NAME, "campaign")).select_by_visible_text("summer_fresh")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, lambda d: "template:campaign_reach" in d.find_element(By.ID, "result-meta").text)
    assert [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#result-table th")] == \
        ["region", "reach", "frequency", "conversion_rate"]
    wait(browser, lambda d: "template campaign_reach" in d.find_element(By.ID, "history").text)
    assert problems_in_console(browser) == []


def test_auditor_sees_the_verified_log_and_filters_it(browser, console_server):
    status, _ = bearer(console_server, "/v1/query", "analyst", {"sql": SQL})  # at least one analyst record
    assert status == 200
    log_in(browser, console_server, "auditor", user="auditor")  # the password, as psql would send it
    assert browser.current_url.endswith("/console/auditor")
    verify = browser.find_element(By.ID, "verify")
    assert "intact" in verify.get_attribute("class") and "Audit log verified" in verify.text
    assert "hash chain intact" in verify.text
    browser.find_element(By.ID, "filter-user").send_keys("analyst")
    unfiltered = browser.find_element(By.ID, "audit")
    browser.find_element(By.ID, "filter").click()
    wait(browser, staleness_of(unfiltered))  # the filtered page replaced it
    users = [row.find_elements(By.TAG_NAME, "td")[2].text for row in browser.find_elements(By.CSS_SELECTOR, "#audit tbody tr")]
    assert users and set(users) == {"analyst"}
    screenshot(browser, "auditor")
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, "nav a")] == ["Audit log", "Outputs"]
    browser.get(console_server + "/console/analyst")  # another role's page
    assert "console.role" in browser.find_element(By.ID, "problem").text
    assert problems_in_console(browser) == []


def approve_or_revoke(driver, action: str, kind: str, name: str) -> str:
    driver.find_element(By.ID, f"{action}-{kind}-{name}").click()
    confirm = shown(driver, "confirm")
    assert f"{action.capitalize()} {kind} {name}?" in confirm.text
    driver.find_element(By.ID, f"confirm-{action}").click()
    return shown(driver, "done").text


def run_reach(base: str) -> tuple[int, dict]:
    """The demo template, run by the analyst through the HTTP API."""
    return bearer(base, "/v1/templates/campaign_reach/run", "analyst", {"params": {"campaign": "spring_sale"}})


def test_approver_revokes_and_approves_with_a_diff(browser, console_server):
    log_in(browser, console_server, "retailer_approver")
    assert browser.current_url.endswith("/console/approver")
    approved = browser.find_element(By.ID, "approved").text
    assert "Template campaign_reach" in approved and "Rule cross_party_aggregates" in approved

    done = approve_or_revoke(browser, "revoke", "template", "campaign_reach")
    assert "revoked 1 approval(s)" in done and "still to approve: retailer" in done
    status, refused = run_reach(console_server)
    assert status == 403 and refused["rule"] == "template.not_approved"
    browser.find_element(By.ID, "back").click()
    pending = browser.find_element(By.ID, "pending").text
    assert "Template campaign_reach" in pending and "Still to approve: retailer" in pending
    done = approve_or_revoke(browser, "approve", "template", "campaign_reach")
    assert "approved (approval " in done and "approved by every owner" in done
    assert run_reach(console_server)[0] == 200

    # The rule is loosened in the policy file: the inbox shows what changed since it was approved.
    policy = POLICIES[console_server]
    text = policy.read_text()
    policy.write_text(text.replace("aggregates: [count, count_distinct, sum, avg]",
                                   "aggregates: [count, count_distinct, sum, avg, min]"))
    browser.find_element(By.ID, "nav-approver").click()

    def rule_pending(driver):
        driver.refresh()  # each worker re-reads the policy on a request after it changed
        return "Rule cross_party_aggregates" in driver.find_element(By.ID, "pending").text

    wait(browser, rule_pending)
    card = browser.find_element(By.ID, "rule-cross_party_aggregates")
    assert re.search(r"Changes since the version (publisher|retailer) approved", card.text)
    added = [e.text.strip() for e in card.find_elements(By.CSS_SELECTOR, ".diff-add") if not e.text.startswith("+++")]
    assert added == ['+      "min",'.strip()]
    assert "Loosens:" in card.text and "Still to approve: publisher, retailer" in card.text
    screenshot(browser, "approver")
    # Every worker re-reads the policy within a second of a request after it changed: the one
    # serving this query may not have looked yet. Refused four times in a row: every worker has.
    wait(browser, lambda d: all(bearer(console_server, "/v1/query", "analyst", {"sql": SQL})[0] == 403
                                for _ in range(4)))
    status, refused = bearer(console_server, "/v1/query", "analyst", {"sql": SQL})
    assert status == 403 and refused["rule"] == "rule.not_approved"
    done = approve_or_revoke(browser, "approve", "rule", "cross_party_aggregates")
    assert "still to approve: publisher" in done
    policy.write_text(text)  # back as it was: the earlier approvals count again
    wait(browser, lambda d: bearer(console_server, "/v1/query", "analyst", {"sql": SQL})[0] == 200)
    assert problems_in_console(browser) == []


def test_data_owner_sees_outputs_and_their_retention(browser, console_server, downloads):
    status, receipt = bearer(console_server, "/v1/templates/baskets_for_retailer/run", "analyst", {})
    assert status == 200 and receipt["columns"][0]["name"] == "output", receipt
    log_in(browser, console_server, "analyst")  # the publisher's analyst ran it, but the output is the retailer's
    browser.find_element(By.ID, "nav-outputs").click()
    assert "No output has been delivered to publisher." in browser.find_element(By.ID, "outputs").text

    log_in(browser, console_server, "retailer_approver")
    browser.find_element(By.ID, "nav-outputs").click()
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "Outputs delivered to retailer in demo" in page
    assert re.search(r"deleted 720\.0 hours after it is written", page)
    (row,) = browser.find_elements(By.CSS_SELECTOR, "#outputs tbody tr")
    cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
    written = dict(zip([c["name"] for c in receipt["columns"]], receipt["rows"][0]))  # the run's receipt
    assert cells[0] == written["output"] == "baskets_by_region" and cells[1].startswith("baskets_for_retailer")
    assert cells[2] == str(written["rows"]) and cells[3] == written["receivers"] == "retailer"
    assert cells[5] > cells[4]  # kept until after it was written (ISO times compare as text)
    screenshot(browser, "outputs")
    row.find_element(By.TAG_NAME, "button").click()
    wait(browser, lambda d: list(downloads.glob("baskets_by_region-*.csv")))
    (csv_file,) = downloads.glob("baskets_by_region-*.csv")
    assert csv_file.read_text().splitlines()[0] == "region,households,basket"

    browser.find_element(By.ID, "logout").click()
    wait(browser, lambda d: d.current_url.endswith("/console/login"))
    browser.get(console_server + "/console/approver")
    assert browser.current_url.endswith("/console/login")
