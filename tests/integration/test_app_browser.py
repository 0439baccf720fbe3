"""The lake browser in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium).

Each page of the app is loaded on the demo-like lake, its thumbnails must have rendered
(natural width > 0), and a screenshot of it is saved under the test's temp folder; the grid
sorted by uniqueness shows the highest first; a box dragged on the map with the mouse fills
the selection grid; the static report opens from disk with no console errors.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail(f"the browser tests need {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver "
                    "(.ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(condition, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _open(browser, url: str, shots: Path, name: str) -> None:
    """Load a page, wait until its view has rendered and every thumbnail has loaded, save a screenshot."""
    browser.get(url)
    browser.refresh()  # a hash change alone keeps the page: reload so each view starts from a fresh document
    _wait(lambda: browser.execute_script("return document.getElementById('view').dataset.ready") == "true",
          what=f"{name} to render")
    _images_loaded(browser, name)
    error = browser.execute_script("const e = document.querySelector('#view .error'); return e && e.textContent")
    assert not error or name == "search", f"{name}: {error}"
    shots.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(shots / f"{name}.png"))


def _images_loaded(browser, name: str) -> int:
    browser.execute_script("document.querySelectorAll('#view img').forEach(i => { i.loading = 'eager'; });")
    _wait(lambda: browser.execute_script("return [...document.querySelectorAll('#view img')].every(i => i.complete)"),
          what=f"{name}'s images to load")
    widths = browser.execute_script("return [...document.querySelectorAll('#view img')].map(i => i.naturalWidth)")
    assert all(w > 0 for w in widths), f"{name}: images that did not render: {widths}"
    return len(widths)


def _severe(browser) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_every_page_renders_with_thumbnails(browser, app_url, app_lake, tmp_path):
    shots = tmp_path / "screenshots"
    some_sample = app_lake.detection_samples["missing"]
    pages = {"overview": "#/", "grid": "#/grid?sort=uniqueness", "sample": f"#/sample/{some_sample}",
             "duplicates": "#/duplicates", "leaks": "#/leaks", "mistakes": "#/mistakes?key=mistakenness",
             "detection-mistakes": "#/mistakes?key=detection_mistakenness", "map": "#/map?color=label",
             "similar": f"#/similar/{app_lake.missing_sample}", "search": "#/search?text=a%20cat"}
    for name, route in pages.items():
        _open(browser, f"{app_url}/{route}", shots, name)
    assert sorted(p.stem for p in shots.glob("*.png")) == sorted(pages)
    assert all((shots / f"{name}.png").stat().st_size > 5_000 for name in pages)

    _open(browser, f"{app_url}/#/", shots, "overview")
    assert browser.execute_script("return document.querySelectorAll('#runs tr').length") > 10
    _open(browser, f"{app_url}/#/duplicates", shots, "duplicates")
    assert browser.execute_script("return document.querySelectorAll('.group .card.kept').length") == \
        browser.execute_script("return document.querySelectorAll('.group').length") > 0
    _open(browser, f"{app_url}/#/mistakes?key=detection_mistakenness", shots, "detection-mistakes")
    assert browser.execute_script("return document.querySelectorAll('rect.box-missing').length") >= 1
    assert browser.execute_script("return document.querySelectorAll('rect.box-spurious').length") >= 1
    _open(browser, f"{app_url}/#/search?text=a%20cat", shots, "search")
    error = browser.execute_script("return document.querySelector('#results .error').textContent")
    assert "needs a model with a text tower" in error
    _open(browser, f"{app_url}/#/sample/{app_lake.missing_sample}", shots, "missing-image")  # a placeholder renders


def test_sorting_by_uniqueness_puts_the_highest_first(browser, app_url, tmp_path):
    from selenium.webdriver.support.ui import Select

    _open(browser, f"{app_url}/#/grid", tmp_path, "grid-by-id")
    Select(browser.find_element("id", "sort")).select_by_value("uniqueness")
    _wait(lambda: "sort=uniqueness" in browser.current_url, what="the sort to apply")
    _wait(lambda: browser.execute_script("return document.getElementById('view').dataset.ready") == "true")
    _images_loaded(browser, "grid by uniqueness")
    scores = [float(v) for v in browser.execute_script(
        "return [...document.querySelectorAll('#grid .card')].map(c => c.dataset.score)")]
    highest = browser.execute_async_script(
        "const done = arguments[0]; fetch('api/samples?per_page=500').then(r => r.json())"
        ".then(d => done(Math.max(...d.items.map(i => i.uniqueness ?? -1))));")
    assert scores[0] == pytest.approx(highest) and scores == sorted(scores, reverse=True) and len(scores) == 48


def test_a_where_filter_typed_in_the_grid_filters_and_a_bad_one_is_explained(browser, app_url, tmp_path):
    _open(browser, f"{app_url}/#/grid", tmp_path, "grid")
    box = browser.find_element("id", "where")
    box.send_keys("split = 'test' AND label = 'dog'\n")
    _wait(lambda: "where=" in browser.current_url, what="the filter to apply")
    _wait(lambda: browser.execute_script("return document.getElementById('view').dataset.ready") == "true")
    metas = browser.execute_script("return [...document.querySelectorAll('#grid .card .meta')].map(m => m.textContent)")
    assert metas and all(m == "dog · test" for m in metas)
    box = browser.find_element("id", "where")
    box.clear()
    box.send_keys("no_such_column > 1\n")
    error = _wait(lambda: browser.execute_script("const e = document.getElementById('grid-error'); "
                                                 "return e && e.textContent"), what="the error")
    assert "no_such_column" in error and browser.find_element("id", "where").get_attribute("value") == "no_such_column > 1"


def test_a_box_dragged_on_the_map_fills_the_grid(browser, app_url, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    _open(browser, f"{app_url}/#/map?color=uniqueness", tmp_path, "map")
    area = browser.find_element("css selector", "#map .nsewdrag")
    width, height = area.size["width"], area.size["height"]
    (ActionChains(browser).move_to_element_with_offset(area, -width // 2 + 5, -height // 2 + 5).click_and_hold()
     .move_by_offset(width // 3, height // 3).move_by_offset(width // 3, height // 3)
     .move_to_element_with_offset(area, width // 2 - 5, height // 2 - 5).release().perform())
    cards = _wait(lambda: browser.execute_script("return document.querySelectorAll('#selection .card').length"),
                  what="the selection grid to fill")
    selected = browser.execute_script("return document.getElementById('map').data"
                                      ".reduce((n, t) => n + (t.selectedpoints || []).length, 0)")
    assert cards == selected > 0
    _images_loaded(browser, "map selection")
    browser.save_screenshot(str(tmp_path / "map-selection.png"))


def test_hovering_a_point_shows_its_thumbnail(browser, app_url, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    _open(browser, f"{app_url}/#/map?color=label", tmp_path, "map-hover")
    area = browser.find_element("css selector", "#map .nsewdrag")
    x, y = browser.execute_script("""
        const plot = document.getElementById('map'), layout = plot._fullLayout;
        return [layout.xaxis.l2p(plot.data[0].x[0]), layout.yaxis.l2p(plot.data[0].y[0])];""")
    offset = (round(x - area.size["width"] / 2), round(y - area.size["height"] / 2))  # Selenium: from the centre
    ActionChains(browser).move_to_element_with_offset(area, *offset).pause(0.2).move_by_offset(1, 0).perform()
    _wait(lambda: browser.execute_script("return !document.getElementById('hover-thumb').hidden"), what="hover")
    _wait(lambda: browser.execute_script("const i = document.querySelector('#hover-thumb img'); "
                                         "return i.complete && i.naturalWidth > 0"), what="the hover thumbnail")
    browser.save_screenshot(str(tmp_path / "map-hover.png"))


def test_the_static_report_opens_with_no_console_errors(browser, app_lake, tmp_path):
    from brain.app import write_report

    index = write_report(app_lake.lake.uri, tmp_path / "report", cache_dir=tmp_path / "thumbs")
    browser.get_log("browser")  # drop earlier pages' messages
    shots = tmp_path / "report-screenshots"
    for name, route in {"overview": "#/", "grid": "#/grid?sort=uniqueness", "duplicates": "#/duplicates",
                        "leaks": "#/leaks", "mistakes": "#/mistakes?key=mistakenness",
                        "detection-mistakes": "#/mistakes?key=detection_mistakenness", "map": "#/map?color=label",
                        "sample": f"#/sample/{app_lake.detection_samples['missing']}"}.items():
        _open(browser, index.as_uri() + route, shots, name)
    assert browser.execute_script("return document.body.classList.contains('report')")
    _open(browser, index.as_uri() + "#/grid?sort=uniqueness", shots, "grid")
    scores = [float(v) for v in browser.execute_script(
        "return [...document.querySelectorAll('#grid .card')].map(c => c.dataset.score)")]
    assert len(scores) == 48 and scores == sorted(scores, reverse=True)
    assert _severe(browser) == []
