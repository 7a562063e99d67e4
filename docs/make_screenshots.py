"""Screenshots of each storefront view, for the README: ``docs/img/storefront-*.png``.

Builds the fixture home if ``--home`` has no index yet (fixtures/catalog.csv with its PNG
images, fixtures/events.csv), runs ``semrec serve`` on it and drives a headless Chromium
through Search, a product page, the shopper view, an ad slate and the Overview, at desktop
width, plus the search at phone width. Run from the repository root::

    python docs/make_screenshots.py --home /tmp/semrec-shots
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._browser import SEMREC, chromium, serve  # noqa: E402

VIEWS = [  # (name, URL hash, what to wait for)
    ("search", "#/?q=a%20quiet%20espresso%20machine&in_stock=1", ".results .card"),
    ("product", "#/product/P0003?diversity=0.3", ".similar-list .card"),
    ("shopper", "#/shopper/U001", ".because"),
    ("ads", "#/ads?user=U004&slots=4&kind=category&category=laptops&max_price=800",
     ".slate .card"),
    ("overview", "#/overview", ".tiles"),
]


def prepare(home: Path) -> None:
    if (home / "models" / "CURRENT").exists():
        return
    for args in (["ingest", str(ROOT / "fixtures/catalog.csv")],
                 ["events", str(ROOT / "fixtures/events.csv")]):
        subprocess.run([*SEMREC, "--home", str(home), *args], check=True,
                       stdout=subprocess.DEVNULL)


def settle(driver, selector: str, timeout_s: float = 20) -> None:  # noqa: ANN001
    """Wait until ``selector`` is in the DOM and every image has finished loading."""
    deadline = time.monotonic() + timeout_s
    script = ("return document.querySelector(arguments[0]) !== null && "
              "[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    while not driver.execute_script(script, selector):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{selector} never appeared")
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    prepare(args.home)
    args.out.mkdir(parents=True, exist_ok=True)
    with serve(args.home) as url:
        for width, height, views in ((1280, 900, VIEWS), (390, 844, VIEWS[:3])):
            driver = chromium(width, height)
            try:
                for name, hash_, selector in views:
                    driver.get(f"{url}/{hash_}")
                    settle(driver, selector)
                    suffix = "" if width > 700 else "-phone"
                    path = args.out / f"storefront-{name}{suffix}.png"
                    full = driver.execute_script("return document.body.scrollHeight")
                    driver.set_window_size(width, min(max(full, height), 2400))
                    settle(driver, selector)
                    driver.save_screenshot(str(path))
                    driver.set_window_size(width, height)
                    print(path)
            finally:
                driver.quit()


if __name__ == "__main__":
    main()
