"""The review page in a real headless Chromium (make test-browser): keys, filters, sorting, pages,
decisions kept in the browser and exported from file://, saved at once through the server, and
stage 4 run on both picks files; a screenshot that is not blank, made by scripts/review_screenshot.py
as docs/review.png is."""

import json
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from cocoaug.picks import REVIEW_PICKS_FILE, read_picks
from cocoaug.review import ReviewPicture, page_data, render_page
from tests.helpers.review_run import start_server, stop_server
from tests.helpers.scripts import ROOT, run_finalize, run_script
from tests.helpers.stage_outputs import make_scores

pytestmark = pytest.mark.browser
sys.path.insert(0, str(ROOT / "scripts"))
from review_screenshot import open_browser, wait_until  # noqa: E402  (scripts/ is not a package)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = open_browser(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def run(tmp_path, stage_outputs, sample_dataset):
    """A scored run drawn with -i: (OUT_DIR, BOXES_DIR, passing pictures)."""
    out, boxes = tmp_path / "out", tmp_path / "boxes"
    shutil.copytree(stage_outputs, out)
    passed = make_scores(out)
    result = run_script("draw_bboxes.py", "-g", out, "-p", out / "blip2_post.json", "-i", sample_dataset / "images", "-o", boxes)
    assert result.returncode == 0, result.stderr
    return out, boxes, passed


def open_page(browser, url, **context_options):
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True, **context_options)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    return page, errors


def decisions(page) -> dict:
    return page.evaluate("Object.fromEntries(decisions)")


def page_keys(page) -> list[str]:
    return page.evaluate("pagePics.map((p) => p.key)")


def focused(page) -> str:
    return page.get_attribute("figure.focused", "data-key")


def picks_pairs(path) -> list[tuple[str, str]]:
    return [(p.mode, p.file_name) for p in read_picks(path).picks]


@pytest.mark.slow  # stage 3, the review in the browser, then stage 4
def test_file_page_keys_decide_undo_export_and_finalize(browser, run, tmp_path, sample_dataset):
    out, boxes, passed = run
    page, errors = open_page(browser, (boxes / "review.html").as_uri())
    assert page.locator("figure.pic").count() == 16 and page.locator("figure.orig").count() == 4
    assert decisions(page) == {f"{m}/{n}": "keep" for m, n in passed}  # starts from picks_passed.json
    assert page.locator("#totals").inner_text().startswith(f"{len(passed)} kept")
    keys = page_keys(page)
    first_card = page.evaluate("pagePics[0].card.pics.map((p) => p.passed)")
    assert 0 in first_card  # worst first: the first card holds a failed picture

    assert focused(page) == keys[0]
    page.keyboard.press("x")  # reject, go to the next
    assert focused(page) == keys[1]
    page.keyboard.press("ArrowRight")
    page.keyboard.press("y")
    page.keyboard.press("ArrowLeft")
    assert focused(page) == keys[2]
    page.keyboard.press("c")  # back to undecided
    state = decisions(page)
    assert state[keys[0]] == "reject" and keys[2] not in state and focused(page) == keys[2]
    page.keyboard.press("u")  # undo the clear
    assert decisions(page)[keys[2]] == "keep"
    assert "rejected" in page.get_attribute(f"figure[data-key='{keys[0]}']", "class")
    assert "kept" in page.get_attribute(f"figure[data-key='{keys[2]}']", "class")

    page.keyboard.press("?")
    assert page.locator("#help.open").is_visible() and "keep every passing picture" in page.locator("#help").inner_text()
    page.keyboard.press("Escape")
    assert not page.locator("#help.open").count()

    # Clear everything on the page that passed, then A keeps every passing picture except rejected ones.
    for key in keys:
        page.evaluate(f"decisions.delete({json.dumps(key)})")
    page.evaluate("decisions.set(pagePics[0].key, 'reject'); save()")
    page.keyboard.press("A")
    passing = {f"{m}/{n}" for m, n in passed}
    assert decisions(page) == {**{k: "keep" for k in passing if k != keys[0]}, keys[0]: "reject"}
    page.keyboard.press("u")
    assert decisions(page) == {keys[0]: "reject"}
    page.keyboard.press("A")

    # Decisions survive a reload (localStorage), then Export downloads them as a picks file.
    expected = decisions(page)
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert decisions(page) == expected
    with page.expect_download() as download:
        page.keyboard.press("e")
    exported = tmp_path / "picks.json"
    download.value.save_as(exported)
    assert download.value.suggested_filename == "picks.json"
    kept = sorted(tuple(k.split("/", 1)) for k, v in expected.items() if v == "keep")
    assert picks_pairs(exported) == kept
    assert read_picks(exported).provenance["rejected"] == [{"mode": keys[0].split("/")[0], "file_name": keys[0].split("/")[1]}]
    assert read_picks(exported).generated_dir == str(out.resolve())
    assert not errors

    result = run_finalize(sample_dataset, out, None, tmp_path / "final", "--picks", exported)
    assert result.returncode == 0, result.stderr
    images = json.loads((tmp_path / "final" / "annotations.json").read_text())["images"]
    assert sorted(tuple(i["file_name"].split("/")[1:]) for i in images if "source_image_id" in i) == [
        (mode, f"{mode}_{name}") for mode, name in kept]


def test_filters_and_sorting(browser, run):
    out, boxes, passed = run
    page, errors = open_page(browser, (boxes / "review.html").as_uri())
    page.select_option("#mode", "inpainting")
    assert page.locator("figure.pic").count() == 8 and all(k.startswith("inpainting/") for k in page_keys(page))
    page.select_option("#mode", "")
    page.select_option("#decision", "failed")
    assert page.locator("figure.pic").count() == 16 - len(passed)
    assert set(page.evaluate("pagePics.map((p) => p.passed)")) == {0}
    page.select_option("#decision", "kept")
    assert sorted(page_keys(page)) == sorted(f"{m}/{n}" for m, n in passed)
    page.select_option("#decision", "")
    categories = page.evaluate("[...document.querySelectorAll('#category option')].map((o) => o.value).filter(Boolean)")
    assert len(categories) == 4
    page.select_option("#category", categories[0])
    assert page.locator("section.card").count() == 1
    page.select_option("#category", "")
    page.select_option("#sort", "id")
    ids = page.evaluate("[...document.querySelectorAll('section.card')].map((s) => Number(s.dataset.id))")
    assert ids == sorted(ids)
    page.select_option("#sort", "best")
    assert page.evaluate("pagePics[0].card.pics.some((p) => p.passed === 1)")
    page.click("#per-category summary")
    table = page.locator("#category-table").inner_text()
    assert "passed" in table and "undecided" in table and "planned" not in table
    assert not errors


@pytest.mark.slow  # stage 3, the review in the browser, then stage 4
def test_served_page_saves_every_decision_and_two_tabs_merge_theirs(browser, run, tmp_path, sample_dataset):
    out, boxes, passed = run
    process, url = start_server("-g", out, "-p", out / "blip2_post.json", "-i", sample_dataset / "images", "-o", boxes,
                                log_path=tmp_path / "server.log")
    try:
        page, errors = open_page(browser, url)
        assert page.locator("#save-state").inner_text() == "no picks.json yet: the first decision writes it"
        page.locator("figure.pic img").first.scroll_into_view_if_needed()
        wait_until(page, "document.querySelector('figure.pic img').complete && document.querySelector('figure.pic img').naturalWidth > 0")
        keys = page_keys(page)
        page.keyboard.press("x")
        page.wait_for_selector("body[data-save-state='saved']")
        saved = read_picks(boxes / REVIEW_PICKS_FILE)
        assert [f"{p['mode']}/{p['file_name']}" for p in saved.provenance["rejected"]] == [keys[0]]
        assert sorted(f"{p.mode}/{p.file_name}" for p in saved.picks) == sorted(f"{m}/{n}" for m, n in passed if f"{m}/{n}" != keys[0])
        page.keyboard.press("y")
        wait_until(page, f"document.body.dataset.saveState === 'saved' && decisions.get({json.dumps(keys[1])}) === 'keep'")
        page.wait_for_timeout(300)
        assert keys[1] in {f"{p.mode}/{p.file_name}" for p in read_picks(boxes / REVIEW_PICKS_FILE).picks}

        # Zoom without boxes shows the clean picture through the server.
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("Enter")
        page.keyboard.press("b")
        wait_until(page, "document.querySelector('#zoom img').complete && document.querySelector('#zoom img').naturalWidth > 0")
        assert page.get_attribute("#zoom img", "src") == "clean/" + keys[1]
        page.keyboard.press("Escape")

        # A second tab starts from the saved file, and its decision is saved over it.
        second, second_errors = open_page(browser, url)
        assert decisions(second) == decisions(page)
        second.keyboard.press("ArrowRight")
        second.keyboard.press("ArrowRight")
        second.keyboard.press("x")
        wait_until(second, f"document.body.dataset.saveState === 'saved' && decisions.get({json.dumps(keys[2])}) === 'reject'")
        second.wait_for_timeout(300)
        saved = read_picks(boxes / REVIEW_PICKS_FILE)
        assert {keys[0], keys[2]} == {f"{p['mode']}/{p['file_name']}" for p in saved.provenance["rejected"]}

        # The first tab, which has not seen that decision, rejects another picture: both stay.
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("x")
        wait_until(page, f"document.body.dataset.saveState === 'saved' && decisions.get({json.dumps(keys[3])}) === 'reject'")
        page.wait_for_timeout(300)
        saved = read_picks(boxes / REVIEW_PICKS_FILE)
        assert {keys[0], keys[2], keys[3]} == {f"{p['mode']}/{p['file_name']}" for p in saved.provenance["rejected"]}
        assert decisions(page)[keys[2]] == "reject"  # the answer brought the other tab's decision
        assert "rejected" in page.get_attribute(f"figure[data-key='{keys[2]}']", "class")
        assert not errors and not second_errors
    finally:
        code, _ = stop_server(process)
    assert code == 0
    result = run_finalize(sample_dataset, out, None, tmp_path / "final", "--picks", boxes / REVIEW_PICKS_FILE)
    assert result.returncode == 0, result.stderr
    images = json.loads((tmp_path / "final" / "annotations.json").read_text())["images"]
    assert len([i for i in images if "source_image_id" in i]) == len(read_picks(boxes / REVIEW_PICKS_FILE).picks)


def test_only_the_current_page_is_rendered_and_the_plan_is_counted(browser, tmp_path):
    """250 source images x 2 modes x 2 variants, records with a plan of 3 variants: pages of 100 cards."""
    records, pictures = {}, []
    for image_id in range(1, 251):
        category_id = 1 + image_id % 5
        records[image_id] = {"image_id": image_id, "file_name": f"{image_id}.jpg", "category_id": category_id,
                             "category_ids": [category_id], "labels": [f"thing{category_id}"], "bbox": [[0.1, 0.1, 0.5, 0.5]],
                             "generated_text": "a thing", "variants": 3}
        for mode in ("generation", "inpainting"):
            for variant in range(2):
                score = {"passed": variant == 0, "reasons": [] if variant == 0 else ["box 0 (thing) not found"],
                         "boxes": [{"found": variant == 0, "region_clip": 0.2}], "box_recall": 1.0 - variant, "min_region_clip": 0.2}
                pictures.append(ReviewPicture(mode, f"{category_id}_{image_id:04d}_{variant}.png", image_id, variant, score))
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    data = page_data(pictures, records, generated_dir=tmp_path, boxes_dir=boxes, clean_dirs={})
    (boxes / "review.html").write_bytes(render_page(data))
    page, errors = open_page(browser, (boxes / "review.html").as_uri())
    assert page.locator("section.card").count() == 100 and page.locator("figure.pic").count() == 400
    assert page.locator("#page-info").inner_text() == "page 1 of 3 (250 cards)"
    assert page.locator("img[loading='lazy']").count() == 400
    page.keyboard.press("]")
    page.keyboard.press("]")
    assert page.locator("section.card").count() == 50 and page.locator("#page-info").inner_text().startswith("page 3 of 3")
    page.keyboard.press("A")
    page.click("#per-category summary")
    row = page.locator("#category-table tr[data-category='1'] td").all_inner_texts()
    # category 1: 50 records x 3 variants x 2 modes planned; 200 pictures, 100 passed; A kept the 20 passing on this page
    assert row == ["thing1 (1)", "300", "200", "100", "20", "0", "180"]
    assert not errors


def test_screenshot_is_not_blank(run, tmp_path):
    _, boxes, _ = run
    shot = tmp_path / "review.png"
    result = run_script("scripts/review_screenshot.py", boxes / "review.html", shot, timeout=300)
    assert result.returncode == 0, result.stderr
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (900, 1400) and pixels.std() > 20
    assert len(np.unique(pixels)) > 100  # pictures, not a flat page


def test_a_copied_boxes_folder_shows_every_picture(browser, run, tmp_path):
    _, boxes, _ = run
    copied = tmp_path / "copied elsewhere" / "boxes"
    shutil.copytree(boxes, copied)
    page, errors = open_page(browser, (copied / "review.html").as_uri())
    page.evaluate("document.querySelectorAll('img').forEach((img) => { img.loading = 'eager'; })")
    wait_until(page, "[...document.images].filter((img) => img.src).every((img) => img.complete)")
    sources = page.evaluate("[...document.images].filter((img) => img.src).map((img) => [img.getAttribute('src'), img.naturalWidth])")
    assert len(sources) == 20  # 4 originals and 16 generated pictures
    assert all(width > 0 for _, width in sources), [src for src, width in sources if not width]
    assert all(not src.startswith(("/", "file:", "http")) for src, _ in sources)
    assert not errors


def test_a_picture_the_safety_checker_flagged_is_blurred_until_clicked(browser, tmp_path):
    record = {"image_id": 7, "file_name": "7.jpg", "category_id": 1, "category_ids": [1], "labels": ["kite"],
              "bbox": [[0.1, 0.1, 0.5, 0.5]], "generated_text": "a kite"}
    scores = {"1_0007_0.png": {"passed": False, "reasons": ["nsfw"], "boxes": [{"found": True, "region_clip": 0.3}], "nsfw": True},
              "1_0007_1.png": {"passed": True, "reasons": [], "boxes": [{"found": True, "region_clip": 0.3}], "nsfw": False}}
    pictures = [ReviewPicture("generation", name, 7, k, score) for k, (name, score) in enumerate(scores.items())]
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    (boxes / "review.html").write_bytes(render_page(page_data(pictures, {7: record}, generated_dir=tmp_path, boxes_dir=boxes, clean_dirs={})))
    page, errors = open_page(browser, (boxes / "review.html").as_uri())
    flagged = page.locator("figure[data-key='generation/1_0007_0.png'] img")
    assert flagged.get_attribute("class") == "nsfw" and "blur" in flagged.evaluate("(img) => getComputedStyle(img).filter")
    assert page.locator("figure[data-key='generation/1_0007_1.png'] img").evaluate("(img) => getComputedStyle(img).filter") == "none"
    flagged.click()
    assert flagged.evaluate("(img) => getComputedStyle(img).filter") == "none"
    assert decisions(page) == {}  # a click shows the picture; it decides nothing
    page.keyboard.press("]")  # a re-render keeps it shown
    assert not page.locator("img.nsfw").count() and not errors
