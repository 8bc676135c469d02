"""Screenshot of a review page (BOXES_DIR/review.html) in headless Chromium, as docs/review.png is made.

docs/review.png is made from ``make demo``'s page, so that it shows what a user sees first::

    make demo && python scripts/review_screenshot.py demo_output/out/boxes/review.html docs/review.png

Needs Debian's ``chromium`` (``apt-get install chromium``) and Playwright for Python
(``pip install playwright``; its own browser download is not needed). The browser tests call
``open_browser`` and ``screenshot`` from here. Example::

    python scripts/review_screenshot.py out/boxes/review.html docs/review.png
"""

import argparse
import os
import shutil
import time
from pathlib import Path

from PIL import Image

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 900}


def chromium_path() -> str:
    """The system Chromium (``COCOAUG_CHROMIUM`` overrides); its absence is an error that says what to install."""
    path = os.environ.get("COCOAUG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise SystemExit("error: chromium not found: apt-get install chromium (or set COCOAUG_CHROMIUM)")
    return path


def open_browser(playwright):
    """Headless system Chromium through Playwright."""
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)


def wait_until(page, expression: str, timeout: float = 30.0):
    """Poll a JS expression until it is true. (Playwright's wait_for_function evaluates strings inside the
    page, which the page's Content-Security-Policy forbids; page.evaluate goes through the debugger.)"""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout} s: {expression}")
        time.sleep(0.05)


def wait_ready(page):
    """Wait until the page has read its data and drawn its first page of cards."""
    page.wait_for_selector("body[data-ready='1']")


def screenshot(page, png_path, keys=("l", "x", "j")):
    """Press a few keys (a failed picture rejected, focus on the next card), open the per-category counts, wait for the images, save a PNG."""
    wait_ready(page)
    for key in keys:
        page.keyboard.press(key)
    page.click("#per-category summary")
    page.evaluate("window.scrollTo(0, 0)")
    wait_until(page, "[...document.images].slice(0, 8).every((img) => img.complete)")
    page.screenshot(path=str(png_path))
    # 256 colours keep the text sharp and make the committed file a third of the size.
    with Image.open(png_path) as shot:
        palette = shot.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette.save(png_path, optimize=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", help="BOXES_DIR/review.html, or the URL of a served page")
    parser.add_argument("output", help="the PNG to write")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    url = args.page if "://" in args.page else Path(args.page).resolve().as_uri()
    with sync_playwright() as playwright:
        browser = open_browser(playwright)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        screenshot(page, args.output)
        browser.close()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
