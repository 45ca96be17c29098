"""The catalogue in a real browser: Debian's chromium (`make browser`), headless, through its chromedriver.

The site is built from a small registry with two releases (tests/test_catalog.py's generator) and
served over HTTP from 127.0.0.1, as a bucket or GitHub Pages would serve it. Checked: the index loads
with no console error; typing in the filter narrows the table; sorting a column reorders it; a
model's link opens its page; every local link of every page resolves (no 404); screenshots of the
index and of one model page are written to the test's temp folder.
"""

from __future__ import annotations

import shutil
import threading
from functools import partial
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from stages.catalog import build
from tests.support.catalog_zoo import two_releases

pytestmark = pytest.mark.e2e
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (stdlib signature)
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = two_releases(tmp_path_factory.mktemp("catalog-browser"))
    index = build(root, None, root / "catalog")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(index.parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", index.parent
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("Debian's chromium and chromium-driver are not installed: run `make browser` (apt, as root)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # no driver download: Debian's
    yield driver
    driver.quit()


def rows(driver) -> list[str]:
    """The names of the index's visible rows, in order."""
    from selenium.webdriver.common.by import By

    return [r.get_attribute("data-name") for r in driver.find_elements(By.CSS_SELECTOR, "#models tbody tr")
            if r.is_displayed()]


def test_index_loads_without_console_errors_and_the_filter_narrows_the_table(site, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, _ = site
    browser.get(url + "index.html")
    everything = rows(browser)
    assert len(everything) >= 3, everything
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    box = browser.find_element(By.ID, "filter")
    box.send_keys(everything[1])
    narrowed = rows(browser)
    assert everything[1] in narrowed and len(narrowed) < len(everything), narrowed
    box.send_keys(" no-such-model-anywhere")
    assert rows(browser) == []
    box.clear()
    browser.execute_script("document.getElementById('filter').dispatchEvent(new Event('input'))")  # clear() may not
    assert rows(browser) == everything
    browser.save_screenshot(str(tmp_path / "index.png"))
    assert (tmp_path / "index.png").stat().st_size > 10_000


def test_sorting_a_column_reorders_the_rows(site, browser):
    from selenium.webdriver.common.by import By

    url, _ = site
    browser.get(url + "index.html")
    before = rows(browser)
    header = browser.find_elements(By.CSS_SELECTOR, "#models thead th")[0]
    header.click()
    once = rows(browser)
    header.click()
    twice = rows(browser)
    assert sorted(once) == sorted(before) and once != twice and list(reversed(once)) == twice


def test_a_model_link_opens_its_page(site, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, _ = site
    browser.get(url + "index.html")
    name = rows(browser)[0]
    browser.find_element(By.CSS_SELECTOR, f'#models tbody tr[data-name="{name}"] a').click()
    assert browser.current_url.endswith(f"models/{name}.html"), browser.current_url
    assert name in browser.find_element(By.TAG_NAME, "h1").text
    assert "sha256" in browser.page_source
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    browser.save_screenshot(str(tmp_path / "model.png"))
    assert (tmp_path / "model.png").stat().st_size > 10_000


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("href", "src") and value:
                self.found.append(value)


def test_every_local_link_resolves(site):
    url, folder = site
    pages = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.html"))
    checked, broken = set(), []
    for page in pages:
        parser = _Links()
        parser.feed((folder / page).read_text(encoding="utf-8"))
        for link in parser.found:
            target = urljoin(url + page, link)
            parts = urlsplit(target)
            if parts.netloc != urlsplit(url).netloc or parts.scheme not in ("http", "https"):
                continue  # upstream links (hub pages) are not the site's to serve
            target = target.split("#")[0]
            if target in checked:
                continue
            checked.add(target)
            if requests.get(target, timeout=10).status_code != 200:
                broken.append(f"{page} -> {link}")
    assert not broken, broken
    assert len(checked) > len(pages)  # pages link to each other and to the assets
