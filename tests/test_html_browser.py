"""The report's index.html in a real headless Chromium: no errors, no network, sorting, filtering, plots, escaping."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
_spec = importlib.util.spec_from_file_location(
    "report_fixture", Path(__file__).parent / "fixtures" / "report_fixture.py"
)
report_fixture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report_fixture)


def _require_browser() -> None:
    if importlib.util.find_spec("selenium") is None:
        pytest.skip("selenium is not installed (pip install selenium)")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            pytest.skip(f"{path} is missing (apt-get install -y chromium chromium-driver)")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory):
    """A driver with the fixture report's index.html loaded from file://."""
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from icon_bench.report.commands import write_report

    tmp = tmp_path_factory.mktemp("browser")
    results = report_fixture.make_results(tmp / "results")
    out = write_report(results, tmp / "report")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={tmp / 'profile'}", "--window-size=1300,1800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get((out / "index.html").as_uri())
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp / "profile", ignore_errors=True)


def _first_table_labels(driver) -> list[str]:
    table = driver.find_elements("css selector", "table.sortable")[0]
    return [td.text for td in table.find_elements("css selector", "tbody tr td.cfg")]


def test_no_console_errors_and_no_network(page) -> None:
    import json

    errors = [e for e in page.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    resources = page.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return e.name; });"
    )
    assert [r for r in resources if not r.startswith("data:")] == []
    requests = []
    for entry in page.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            params = message["params"]
            requests.append((params.get("documentURL", ""), params["request"]["url"]))
    # Nothing anywhere goes out to a network (chrome:// pages of the blank tab are browser internals).
    assert [u for _, u in requests if u.split(":", 1)[0] in ("http", "https", "ws", "wss", "ftp")] == []
    # The page's own requests: itself from file://, images as data: URLs, nothing else.
    ours = [u for doc, u in requests if doc.startswith("file://")]
    assert ours and all(u.startswith(("file://", "data:")) for u in ours), ours


def test_sorting_a_column_reorders_rows(page) -> None:
    before = _first_table_labels(page)
    assert before[0].startswith("debiased_infonce_clustering")  # best hungarian first
    header = page.find_elements("css selector", "table.sortable")[0].find_elements("css selector", "thead th")[3]
    assert header.text.startswith("hungarian")
    header.click()  # ascending: the worst first
    ascending = _first_table_labels(page)
    assert ascending == before[::-1]
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert _first_table_labels(page) == before
    config_header = page.find_elements("css selector", "table.sortable")[0].find_elements("css selector", "thead th")[1]
    config_header.click()
    by_name = _first_table_labels(page)
    assert by_name == sorted(by_name, key=str.lower)


def test_filter_hides_rows(page) -> None:
    box = page.find_element("id", "filter")
    visible = lambda: [r for r in page.find_elements("css selector", "table.filterable tbody tr") if r.is_displayed()]
    total = len(visible())
    box.send_keys("kmeans")
    shown = visible()
    assert 0 < len(shown) < total
    assert all("kmeans" in r.text for r in shown)
    assert "of" in page.find_element("id", "filter-count").text
    box.clear()
    box.send_keys(" ")  # an input event with an empty query shows everything again
    assert len(visible()) == total


def test_plot_images_are_visible(page) -> None:
    images = page.find_elements("css selector", ".plots img")
    assert len(images) >= 4
    for img in images:
        assert img.get_attribute("src").startswith("data:image/png;base64,")
    first = images[0]
    page.execute_script("arguments[0].scrollIntoView();", first)
    assert page.execute_script("return arguments[0].complete && arguments[0].naturalWidth;", first) > 0
    assert first.is_displayed()


def test_script_in_a_method_name_stays_text(page) -> None:
    assert "<script>alert(1)</script>" in page.find_element("tag name", "body").text
    scripts = page.find_elements("css selector", "script")
    assert len(scripts) == 1  # only the page's own code
    assert "alert(1)" not in scripts[0].get_attribute("innerHTML")


def test_config_links_point_at_config_sections(page) -> None:
    link = page.find_elements("css selector", "td.cfg a")[0]
    target = link.get_attribute("href").split("#", 1)[1]
    section = page.find_element("id", target)
    assert '"method"' in section.text
    page.save_screenshot("/tmp/icon_bench_report.png")  # for a human look at the layout
