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
from cocoaug.review import ReviewPicture, page_data, write_review_page
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


@pytest.fixture(scope="module")
def run(tmp_path_factory, stage_outputs, sample_dataset):
    """A scored run drawn with -i, shared by the module's tests (each opens its own browser context): (OUT_DIR, BOXES_DIR,
    passing pictures). The server test writes BOXES_DIR/picks.json, which no file:// page reads."""
    root = tmp_path_factory.mktemp("review")
    out, boxes = root / "out", root / "boxes"
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
    assert page.locator("#totals").inner_text().startswith(f"{len(passed)} / 16 decided ({100 * len(passed) // 16}%): {len(passed)} kept")
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
    data = page_data(pictures, records, generated_dir=tmp_path, boxes_dir=boxes, clean_dirs={})
    write_review_page(boxes, data)
    page, errors = open_page(browser, (boxes / "review.html").as_uri())
    assert page.locator("section.card").count() == 100 and page.locator("figure.pic").count() == 400
    assert page.locator("#page-info").inner_text() == "page 1 of 3 (250 cards)"
    assert page.locator("img[loading='lazy']").count() == 400
    sidecars = "[...document.scripts].filter((s) => s.src.includes('review_data/cards-')).length"
    assert page.evaluate(sidecars) == 1  # one page of cards, one sidecar
    page.keyboard.press("]")
    page.wait_for_selector("body[data-ready='1']")
    page.keyboard.press("]")
    page.wait_for_selector("body[data-ready='1']")
    assert page.evaluate(sidecars) == 3
    assert page.locator("section.card").count() == 50 and page.locator("#page-info").inner_text().startswith("page 3 of 3")
    page.keyboard.press("A")
    page.click("#per-category summary")
    row = page.locator("#category-table tr[data-category='1'] td").all_inner_texts()
    # category 1: 200 pictures, 100 passed; A kept the 20 passing on this page; 50 records x 3 variants x 2 modes planned
    assert [row[k] for k in (0, 1, 3, 4, 5, 6, 7, 8)] == ["thing1 (1)", "20 / 200", "200", "100", "20", "0", "180", "300"]
    assert row[9].strip() == "20 / 300"
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


# ---------------------------------------------------------------- issue 21: one shared synthetic page


def synthetic_scores(image_id: int, variant: int, label: str) -> dict:
    """Variant 0 passes; variant 1 fails for one reason chosen by the image id: a missed box, three low region
    scores, ten extra objects or the safety checker."""
    boxes = [{"found": True, "region_clip": 0.30} for _ in range(3)]
    score = {"passed": True, "reasons": [], "boxes": boxes, "box_recall": 1.0, "min_region_clip": 0.30, "extra_objects": 0}
    if variant == 0:
        return score
    kind = image_id % 4
    clip = round(0.02 + 0.03 * (image_id % 10), 3)
    boxes = [{"found": not (kind == 0 and b == 0), "region_clip": clip + 0.01 * b} for b in range(3)]
    reasons = {0: [f"box 0 ({label}) not found"],
               1: [f"box {b} ({label}) region_clip {clip + 0.01 * b:.3f} < 0.21" for b in range(3)],
               2: ["10 extra object(s) > 0"],
               3: ["nsfw: the safety checker flagged the picture"]}[kind]
    return {"passed": False, "reasons": reasons, "boxes": boxes, "box_recall": 2 / 3 if kind == 0 else 1.0,
            "min_region_clip": clip, "extra_objects": 10 if kind == 2 else 0}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, browser):
    """250 source images (5 categories) x 2 modes x 2 variants = 1,000 pictures on 3 pages, with a plan of 120 pictures
    per category: one page opened once for the module (the pictures are not drawn: these tests are about the page)."""
    root = tmp_path_factory.mktemp("synthetic")
    records, pictures = {}, []
    for image_id in range(1, 251):
        category_id = 1 + image_id % 5
        records[image_id] = {"image_id": image_id, "file_name": f"{image_id:012d}.jpg", "category_id": category_id,
                             "category_ids": [category_id] * 3, "labels": [f"thing{category_id}"] * 3, "bbox": [[0.1, 0.1, 0.5, 0.5]] * 3,
                             "generated_text": f"a photo of thing {image_id}"}
        for mode in ("generation", "inpainting"):
            for variant in range(2):
                pictures.append(ReviewPicture(mode, f"{category_id}_{image_id:012d}_{variant}.png", image_id, variant,
                                              synthetic_scores(image_id, variant, f"thing{category_id}")))
    boxes = root / "boxes"
    data = page_data(pictures, records, generated_dir=root, boxes_dir=boxes, clean_dirs={}, plan={c: 120 for c in range(1, 6)})
    write_review_page(boxes, data)
    page, errors = open_page(browser, (boxes / "review.html").as_uri())
    yield page
    assert not errors


@pytest.fixture
def fresh(synthetic):
    """The shared page with every decision, filter and selection cleared."""
    page = synthetic
    page.evaluate("""() => {
      decisions = new Map(); undoStack.length = 0; selected = new Set(); save();
      for (const id of ["search", "clip-min", "clip-max", "recall-min", "recall-max"]) document.getElementById(id).value = "";
      for (const id of ["mode", "category", "decision", "reason"]) document.getElementById(id).value = "";
      Object.assign(view, {sort: "worst", mode: "", category: "", decision: "", reason: "", search: "",
                           clipMin: null, clipMax: null, recallMin: null, recallMax: null});
      document.getElementById("sort").value = "worst";
      closeOverlays(); changed(); window.scrollTo(0, 0);
    }""")
    page.wait_for_selector("body[data-ready='1']")
    return page


def shown_pictures(page) -> list:
    return page.evaluate("shown.flatMap((e) => e.pics.map((p) => ({key: p.key, chips: p.chips, passed: p.passed, id: p.card.id})))")


def test_reasons_are_short_chips_with_the_full_detail_in_the_tooltip(fresh):
    page = fresh
    chips = set(page.evaluate("[...document.querySelectorAll('.chip')].map((c) => c.textContent)"))
    assert {"2/3 found", "CLIP low \u00d73", "+10 objects", "nsfw", "passed"} <= chips
    tile = page.locator("figure.pic", has=page.locator(".chip", has_text="CLIP low")).first
    title = tile.get_attribute("title")
    assert title.count(") region_clip 0.") == 3 and title.count("< 0.21") == 3  # every reason in full
    assert "boxes: thing" in title and "| thing" in title  # every box with its label and score
    assert not page.locator(".reasons").count()  # no raw reason list on the card


def test_filter_by_reason_score_range_histogram_and_search(fresh):
    page = fresh
    page.select_option("#reason", "extra")
    pictures = shown_pictures(page)
    assert len(pictures) == 2 * 63 and all(p["chips"][5] == 10 for p in pictures)  # ids 2, 6, ..., 250: 63 images x 2 modes
    page.select_option("#reason", "nsfw")
    assert {p["id"] % 4 for p in shown_pictures(page)} == {3}
    page.select_option("#reason", "")

    page.fill("#clip-min", "0.1")
    page.fill("#clip-max", "0.2")
    page.press("#clip-max", "Enter")
    page.locator("#clip-max").dispatch_event("change")
    pictures = shown_pictures(page)
    assert pictures and all(0.1 <= p["chips"][1] <= 0.2 for p in pictures)
    assert len(pictures) == sum(1 for i in range(1, 251) for _ in range(2) if 0.1 <= round(0.02 + 0.03 * (i % 10), 3) <= 0.2)
    page.fill("#clip-min", "")
    page.locator("#clip-min").dispatch_event("change")
    page.fill("#clip-max", "")
    page.locator("#clip-max").dispatch_event("change")

    # The histograms count every scored picture; a bar filters to its range, a second click clears it.
    bars = page.evaluate("[...document.querySelectorAll('#recall-hist i')].map((b) => b.title)")
    assert len(bars) == 10 and "0.9 to 1: " + str(1000 - 2 * 62) + " pictures" in bars[-1]  # 62 images (4, 8, ..., 248) miss a box
    page.click("#recall-hist i[data-bin='6']")  # 0.6 to 0.7: the pictures with 2 of 3 boxes found
    pictures = shown_pictures(page)
    assert len(pictures) == 2 * 62 and all(p["chips"][2] == 2 for p in pictures)
    assert page.input_value("#recall-min") == "0.6" and "on" in page.get_attribute("#recall-hist i[data-bin='6']", "class")
    page.click("#recall-hist i[data-bin='6']")
    assert len(shown_pictures(page)) == 1000 and page.input_value("#recall-min") == ""
    clip_bars = page.locator("#clip-hist i")
    assert clip_bars.count() == 10
    clip_bars.first.click()
    lowest = shown_pictures(page)
    assert lowest and all(p["chips"][1] <= page.evaluate("binEdges(HIST.clip, 0)[1]") for p in lowest)
    clip_bars.first.click()

    page.fill("#search", "117")
    assert {p["id"] for p in shown_pictures(page)} == {117} and page.locator("section.card").count() == 1
    page.fill("#search", "000000000042.jpg")
    assert {p["id"] for p in shown_pictures(page)} == {42}
    page.fill("#search", "_000000000042_1.png")
    assert [p["key"] for p in shown_pictures(page)] == ["generation/3_000000000042_1.png", "inpainting/3_000000000042_1.png"]
    page.fill("#search", "")


def test_bulk_actions_cover_every_page_of_the_filter_ask_first_and_undo_in_one_step(fresh):
    page = fresh
    page.select_option("#decision", "failed")
    assert page.locator("#page-info").inner_text() == "page 1 of 3 (250 cards)"
    messages = []
    page.once("dialog", lambda dialog: (messages.append(dialog.message), dialog.dismiss()))
    page.click("#bulk-reject")
    assert messages == ["Reject all 500 pictures the current filter shows (all 3 pages)? u undoes it."] and decisions(page) == {}
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#bulk-reject")
    state = decisions(page)
    assert len(state) == 500 and set(state.values()) == {"reject"} and all(k.endswith("_1.png") for k in state)
    page.select_option("#decision", "passed")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#bulk-keep")
    assert list(decisions(page).values()).count("keep") == 500
    page.keyboard.press("u")  # one step: the whole keep
    assert set(decisions(page).values()) == {"reject"} and len(decisions(page)) == 500
    page.select_option("#decision", "")
    page.select_option("#category", "2")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#bulk-clear")
    assert len(decisions(page)) == 400 and not any(k.startswith(("generation/2_", "inpainting/2_")) for k in decisions(page))
    page.click("#undo")
    assert len(decisions(page)) == 500
    assert "500 / 1000 decided (50%)" in page.locator("#totals").inner_text()


def test_shift_click_selects_a_range_that_one_key_decides(fresh):
    page = fresh
    keys = page_keys(page)
    tiles = page.locator("figure.pic img")
    tiles.nth(2).click()
    tiles.nth(6).click(modifiers=["Shift"])
    assert page.locator("figure.pic.selected").count() == 5
    assert sorted(page.evaluate("[...selected]")) == sorted(keys[2:7])
    page.keyboard.press("x")
    assert decisions(page) == {k: "reject" for k in keys[2:7]} and not page.locator("figure.pic.selected").count()
    page.keyboard.press("u")
    assert decisions(page) == {}


def test_progress_bars_overall_and_per_category_against_the_plan(fresh):
    page = fresh
    assert page.locator("#totals").inner_text().startswith("0 / 1000 decided (0%)")
    page.select_option("#category", "1")
    page.select_option("#decision", "passed")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#bulk-keep")
    assert page.locator("#totals").inner_text().startswith("100 / 1000 decided (10%): 100 kept")
    assert page.evaluate("document.querySelector('#progress .fill').style.width") == "10%"
    page.click("#per-category summary")
    row = page.locator("#category-table tr[data-category='1'] td").all_inner_texts()
    assert row[1] == "100 / 200" and row[8] == "120" and row[9].strip() == "100 / 120"  # planned: plan.csv's figure
    header = page.locator("#category-table tr").first.inner_text()
    assert "planned" in header and "kept of planned" in header
    assert page.evaluate("document.querySelector('#category-table tr[data-category=\"1\"] .kept-fill').style.width").startswith("83.3")
    page.click("#per-category summary")


def test_the_sticky_header_never_covers_the_focused_picture(fresh):
    page = fresh
    page.click("#per-category summary")  # the header grows
    for _ in range(25):
        page.keyboard.press("j")
    for _ in range(12):
        page.keyboard.press("k")
    header = page.evaluate("document.querySelector('header').getBoundingClientRect().bottom")
    tile = page.evaluate("document.querySelector('figure.focused').getBoundingClientRect().top")
    assert page.evaluate("window.scrollY") > 0 and tile >= header, (tile, header)
    assert header < 0.6 * 900  # the per-category table scrolls inside the header
    page.click("#per-category summary")


def test_dense_grid_full_width_and_a_remembered_size(browser, run):
    _, boxes, _ = run
    page, errors = open_page(browser, (boxes / "review.html").as_uri())
    visible = "[...document.querySelectorAll('figure.pic')].filter((f) => { const r = f.getBoundingClientRect(); " \
              "return r.top >= 0 && r.bottom <= innerHeight && r.right <= innerWidth; }).length"
    assert page.evaluate(visible) >= 8
    # The cards flow over the full width: one starts a new row only when it does not fit beside the one before.
    cards = page.evaluate("[...document.querySelectorAll('section.card')].map((c) => c.getBoundingClientRect().toJSON())")
    right = page.evaluate("document.getElementById('cards').getBoundingClientRect().right")
    assert right > 1350 and any(b["top"] == a["top"] for a, b in zip(cards, cards[1:]))
    assert all(b["top"] == a["top"] or a["right"] + b["width"] > right for a, b in zip(cards, cards[1:]))
    width = lambda: page.evaluate("document.querySelector('figure.pic').getBoundingClientRect().width")
    before = width()
    page.keyboard.press("+")
    page.keyboard.press("+")
    larger = width()
    assert larger > before * 1.3
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    assert width() == larger  # remembered
    page.keyboard.press("-")
    page.keyboard.press("-")
    page.keyboard.press("-")
    assert width() < before
    page.click("#larger")
    assert width() == before
    assert not errors


def test_zoom_magnifies_pans_and_flips_to_the_original_in_place(browser, run):
    _, boxes, _ = run
    page, errors = open_page(browser, (boxes / "review.html").as_uri())
    page.evaluate("focus = pagePics.findIndex((p) => p.passed === 0); paintFocus(false)")  # a failed picture
    key = focused(page)
    page.keyboard.press("Enter")
    image = page.locator("#zoom-stage img")
    assert image.get_attribute("src") == key and "why it failed" in page.locator("#zoom-caption").inner_text()
    transform = lambda: page.evaluate("zoomView.scale + ',' + zoomView.x + ',' + zoomView.y")
    page.mouse.move(700, 400)
    page.mouse.wheel(0, -600)
    scale = page.evaluate("zoomView.scale")
    assert scale > 2 and page.evaluate("getComputedStyle(document.querySelector('#zoom-stage img')).transform") != "none"
    x = page.evaluate("zoomView.x")
    page.mouse.down()
    page.mouse.move(600, 350, steps=4)
    page.mouse.up()
    assert page.evaluate("zoomView.x") == pytest.approx(x - 100) and page.locator("#zoom.open").count() == 1  # a drag does not close
    before = transform()
    card = page.evaluate("pagePics[focus].card.id")
    page.keyboard.press("o")
    assert image.get_attribute("src") == f"original/{card}.jpg" and transform() == before  # in place: same magnification
    assert page.locator("#zoom-caption").inner_text().startswith("ORIGINAL of")
    wait_until(page, "document.querySelector('#zoom-stage img').complete && document.querySelector('#zoom-stage img').naturalWidth > 0")
    page.keyboard.press("o")
    assert image.get_attribute("src") == key and transform() == before
    page.keyboard.press("Escape")
    assert not page.locator("#zoom.open").count()
    assert not errors


@pytest.mark.slow  # starts stage 3 with --serve
def test_serve_prints_only_its_address_and_the_file_page_points_there(browser, run, tmp_path, sample_dataset):
    out, boxes, _ = run
    process, url = start_server("-g", out, "-p", out / "blip2_post.json", "-i", sample_dataset / "images", "-o", boxes,
                                log_path=tmp_path / "server.log")
    try:
        printed = "".join(process.printed_before_serving)
        assert "file://" not in printed and printed.count("http://") == 1
        page, errors = open_page(browser, (boxes / "review.html").as_uri())
        wait_until(page, "!document.getElementById('banner').hidden")
        banner = page.locator("#banner")
        assert url in banner.inner_text() and banner.locator("a").get_attribute("href") == url
        assert not errors
    finally:
        code, _ = stop_server(process)
    assert code == 0 and not (boxes / "review_data" / "server.js").exists()
    page, _ = open_page(browser, (boxes / "review.html").as_uri())
    page.wait_for_timeout(200)
    assert page.locator("#banner").is_hidden()


def test_a_picture_the_safety_checker_flagged_is_blurred_until_clicked(browser, tmp_path):
    record = {"image_id": 7, "file_name": "7.jpg", "category_id": 1, "category_ids": [1], "labels": ["kite"],
              "bbox": [[0.1, 0.1, 0.5, 0.5]], "generated_text": "a kite"}
    scores = {"1_0007_0.png": {"passed": False, "reasons": ["nsfw"], "boxes": [{"found": True, "region_clip": 0.3}], "nsfw": True},
              "1_0007_1.png": {"passed": True, "reasons": [], "boxes": [{"found": True, "region_clip": 0.3}], "nsfw": False}}
    pictures = [ReviewPicture("generation", name, 7, k, score) for k, (name, score) in enumerate(scores.items())]
    boxes = tmp_path / "boxes"
    write_review_page(boxes, page_data(pictures, {7: record}, generated_dir=tmp_path, boxes_dir=boxes, clean_dirs={}))
    page, errors = open_page(browser, (boxes / "review.html").as_uri())
    flagged = page.locator("figure[data-key='generation/1_0007_0.png'] img")
    # The zoom view blurs it too, until a click there.
    page.evaluate("focus = pagePics.findIndex((p) => p.key === 'generation/1_0007_0.png'); paintFocus(false)")
    page.keyboard.press("Enter")
    zoomed = page.locator("#zoom-stage img")
    assert zoomed.get_attribute("class") == "nsfw" and "blur" in zoomed.evaluate("(img) => getComputedStyle(img).filter")
    page.keyboard.press("o")  # the original was never flagged
    assert zoomed.evaluate("(img) => getComputedStyle(img).filter") == "none"
    page.keyboard.press("o")
    assert "blur" in zoomed.evaluate("(img) => getComputedStyle(img).filter")
    page.keyboard.press("Escape")
    assert flagged.get_attribute("class") == "nsfw" and "blur" in flagged.evaluate("(img) => getComputedStyle(img).filter")
    assert page.locator("figure[data-key='generation/1_0007_1.png'] img").evaluate("(img) => getComputedStyle(img).filter") == "none"
    flagged.click()
    assert flagged.evaluate("(img) => getComputedStyle(img).filter") == "none"
    assert decisions(page) == {}  # a click shows the picture; it decides nothing
    page.keyboard.press("]")  # a re-render keeps it shown
    assert not page.locator("figure img.nsfw").count() and not errors
    # After a reload it is blurred again; a click in the zoom view shows it there and on its card.
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    page.evaluate("focus = pagePics.findIndex((p) => p.key === 'generation/1_0007_0.png'); paintFocus(false)")
    page.keyboard.press("Enter")
    page.locator("#zoom-stage img").click()
    assert page.locator("#zoom.open").count() == 1 and not page.locator("img.nsfw").count()
    assert decisions(page) == {} and not errors
