"""The suite's HTML report in a real browser (headless Chromium through Selenium): the tables
are there, every figure decodes and is displayed, and nothing is fetched from the network.

Needs Debian's `chromium` and `chromium-driver` and the `selenium` package (test extra).
Skipped without them, except where MIA_TUNER_REQUIRE_BROWSER=1 (CI installs them): there a
missing browser is a failure, so CI cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil

import pytest
from helpers import make_tiny_model_dir

from mia_tuner.suite import benchmark

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000")


def _browser(tmp_path):
    missing = [name for name, found in (("chromium", CHROMIUM), ("chromedriver", DRIVER)) if not found]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium")
    if missing:
        if os.environ.get("MIA_TUNER_REQUIRE_BROWSER") == "1":
            pytest.fail(f"MIA_TUNER_REQUIRE_BROWSER=1 but {', '.join(missing)} not installed")
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser-suite")
    models = [str(make_tiny_model_dir(root / "chat", with_chat_template=True, seed=1)),
              str(make_tiny_model_dir(root / "base", seed=2))]
    _, paths = benchmark("smoke", root / "out", overrides={"models": models, "seeds": [1]},
                         cache_dir=root / "cache")
    return paths["html"]


def test_the_report_renders_in_a_browser_offline(smoke_report, tmp_path):
    driver = _browser(tmp_path)
    try:
        driver.get(smoke_report.resolve().as_uri())
        assert driver.title == "mia-tuner: smoke"
        tables = driver.execute_script(
            "return [...document.querySelectorAll('table')].map(t => t.innerText)")
        detection = [t for t in tables if "mia-tuner" in t and "blind" in t]
        assert len(detection) == 2  # one per training size
        assert all("aligned models" in t and "base models" in t for t in detection)
        images = driver.execute_script("""
            return [...document.images].map(img => ({
                complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
                shown: img.getBoundingClientRect().width > 0 && getComputedStyle(img).display !== 'none',
                inline: img.src.startsWith('data:image/png;base64,')}))""")
        # training curves + an ablation per model + ROC and histograms per cell (2 models x 2 sizes)
        assert len(images) == 1 + 2 + 2 * 4
        for image in images:
            assert image["complete"] and image["width"] > 100 and image["height"] > 100, image
            assert image["shown"] and image["inline"], image
        fetched = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".filter(name => !name.startsWith('data:'))")
        assert fetched == []
        driver.save_screenshot(str(os.environ.get("MIA_TUNER_SCREENSHOT", tmp_path / "report.png")))
    finally:
        driver.quit()
    html = smoke_report.read_text(encoding="utf-8")
    for attribute in ('src="http', "src='http", 'href="http', "url(http", "<script", "<link"):
        assert attribute not in html, attribute
