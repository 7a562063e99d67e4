"""The storefront page when reads need the API key: it asks for the key before any
request fails, then sends it as X-API-Key (images too, through fetch)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from bench._browser import chromium_available, serve
from tests.test_browser import browser, build_home, cards, wait  # noqa: F401 - fixture

# Skipped only outside CI: in CI (.ci/run installs Chromium) a missing browser must fail.
pytestmark = pytest.mark.skipif(not chromium_available() and not os.environ.get("CI"), reason=(
    "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"))


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = build_home(tmp_path_factory.mktemp("guarded") / "home")
    env = {"SEMREC_API_KEY": "k3y", "SEMREC_API__READ_REQUIRES_KEY": "true"}
    with serve(home, env=env, warm=False) as url:
        yield url


def test_the_page_asks_for_the_key_and_then_works(browser: Any, guarded: str) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get_log("browser")
    browser.get(f"{guarded}/#/?q=a%20garden%20spade")
    dialog = wait(browser, lambda: browser.find_element(By.ID, "key-dialog").get_attribute("open")
                  is not None and browser.find_element(By.ID, "key-dialog"))
    assert "API key" in dialog.text
    assert not browser.find_elements(By.CSS_SELECTOR, ".results .card")
    browser.find_element(By.ID, "key-input").send_keys("wrong", Keys.ENTER)
    wait(browser, lambda: "refused" in browser.find_element(By.ID, "key-error").text)
    browser.find_element(By.ID, "key-input").send_keys("k3y", Keys.ENTER)
    found = cards(browser, ".results")
    assert found and {c["category"] for c in found[:3]} == {"garden tools"}
    assert all(img["w"] > 0 for c in found for img in c["images"])
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert all("401" in e["message"] for e in errors), errors  # only the wrong key's answer
    browser.execute_script("sessionStorage.clear()")
