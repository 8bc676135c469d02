"""Stage 3 with scores and the review page: found boxes solid and missed ones dashed, region
scores in the bands, passed/failed on the overview panels, review.html self-contained with the
run's data embedded, and a page of 50,000 pictures that stays a few megabytes."""

import json
import re
import shutil
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

import draw_bboxes as stage
from cocoaug.picks import PASSED_PICKS_FILE, read_picks, write_picks
from cocoaug.review import (CARDS_PER_PAGE, ReviewPicture, page_data, read_page_data, render_page, sidecar_name, split_page_data,
                            write_review_page)
from cocoaug.scores import read_scores, write_scores
from tests.helpers.scripts import run_here
from tests.helpers.stage_outputs import make_scores

SCRIPT = "draw_bboxes.py"
GREY = (128, 128, 128)


def edge_rows(image: Image.Image, x: int, y0: int, y1: int, colour) -> int:
    """How many pixels of column ``x`` between rows y0 and y1 have ``colour``."""
    column = np.asarray(image)[y0:y1, x]
    return int((column == np.array(colour, dtype=np.uint8)).all(axis=1).sum())


# ---------------------------------------------------------------- drawing the scores, exactly


def test_a_found_box_is_solid_and_a_missed_box_is_dashed():
    grey = Image.new("RGB", (400, 300), GREY)
    boxes = [[0.1, 0.3, 0.4, 0.9], [0.6, 0.3, 0.9, 0.9]]
    drawn = stage.draw_boxes(grey, boxes, [18, 18], ["dog", "dog"],
                             [{"found": True, "region_clip": 0.31}, {"found": False, "region_clip": 0.12}])
    colour = stage.category_colour(18)
    span = (100, 260)  # rows inside both boxes, below the label bands
    assert edge_rows(drawn, 40, *span, colour) == span[1] - span[0]  # solid left edge, x0 = 0.1 * 400
    dashed = edge_rows(drawn, 240, *span, colour)  # left edge of the missed box, x0 = 0.6 * 400
    assert 0.4 * (span[1] - span[0]) < dashed < 0.8 * (span[1] - span[0])
    assert drawn.getpixel((150, 200)) == GREY and drawn.getpixel((330, 200)) == GREY  # insides untouched


def test_the_band_carries_the_region_score_and_says_not_found():
    assert stage.score_text({"found": True, "region_clip": 0.2749}) == " 0.27"
    assert stage.score_text({"found": False, "region_clip": 0.1}) == " 0.10 not found"
    colour = stage.category_colour(3)
    plain = stage.draw_boxes(Image.new("RGB", (400, 300), GREY), [[0.1, 0.5, 0.9, 0.9]], [3], ["ball"])
    scored = stage.draw_boxes(Image.new("RGB", (400, 300), GREY), [[0.1, 0.5, 0.9, 0.9]], [3], ["ball"],
                              [{"found": False, "region_clip": 0.12}])
    band_row = 150 - 5  # inside the label band above the box (y0 = 150)
    width = lambda image: int((np.asarray(image)[band_row] == np.array(colour, dtype=np.uint8)).all(axis=1).sum())
    assert width(scored) > 3 * width(plain)  # "ball 0.12 not found" is a longer band than "ball"


def test_box_labels_never_overlap_go_inside_when_there_is_no_room_above_and_are_shortened():
    """Four overlapping boxes at the top edge of a small picture, long labels and scores: the bands the issue showed
    overlapping ("box -0.16 notbox -0.18 not...")."""
    size, line = (200, 150), stage.line_width_for(200, 150)
    font = ImageFont.load_default(size=stage.font_size_for(*size))
    measure = lambda text: ImageDraw.Draw(Image.new("RGB", size)).textbbox((0, 0), text, font=font)
    boxes = np.array([[0, 0, 120, 90], [10, 5, 130, 100], [20, 10, 140, 110], [30, 40, 190, 148]], dtype=float)
    scores = [{"found": False, "region_clip": -0.16 - 0.01 * k} for k in range(4)]
    texts = [stage.label_texts("potted plant", score) for score in scores]
    assert texts[0] == ["potted plant -0.16 not found", "potted pl. -0.16", "potted pl.", "p"]
    spots = stage.label_spots(boxes, texts, measure, size, line)
    rects = [spot[0] for spot in spots if spot is not None]
    assert len(rects) >= 3
    for k, a in enumerate(rects):
        assert 0 <= a[0] and 0 <= a[1] and a[2] <= size[0] and a[3] <= size[1]
        for b in rects[k + 1:]:
            assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], (a, b)  # no two bands touch
    (first, text), box = spots[0], boxes[0]
    assert first[1] >= box[1] and first[3] <= box[3] and first[2] <= box[2]  # no room above the first box: inside it
    assert text != texts[0][0]  # and shortened to fit its width
    # With room above, the band goes there with the full text.
    (rect, text), = stage.label_spots(np.array([[20, 80, 190, 140]], dtype=float), [texts[0]], measure, size, line)
    assert rect[3] <= 80 and text == texts[0][0]
    drawn = stage.draw_boxes(Image.new("RGB", size, GREY), boxes / [200, 150, 200, 150], [1, 2, 3, 4], ["potted plant"] * 4, scores)
    assert drawn.size == size


def test_overview_panels_say_passed_in_green_and_failed_in_red():
    image = Image.new("RGB", (200, 100), GREY)
    boxes, categories, labels = [[0.1, 0.1, 0.5, 0.9]], [3], ["ball"]
    passed = stage.overview_panel(image, "generation #0", boxes, categories, labels,
                                  {"passed": True, "reasons": [], "boxes": [{"found": True, "region_clip": 0.3}]})
    failed = stage.overview_panel(image, "generation #1", boxes, categories, labels,
                                  {"passed": False, "reasons": ["box 0 (ball) not found"], "boxes": [{"found": False, "region_clip": 0.1}]})
    unscored = stage.overview_panel(image, "original", boxes, categories, labels, band_lines=2)
    assert passed.height == failed.height == unscored.height == stage.OVERVIEW_HEIGHT + 48
    verdict_line = lambda panel, colour: int((np.asarray(panel)[24:48] == np.array(colour, dtype=np.uint8)).all(axis=2).sum())
    assert verdict_line(passed, stage.PASSED_COLOUR) > 20 and verdict_line(passed, stage.FAILED_COLOUR) == 0
    assert verdict_line(failed, stage.FAILED_COLOUR) > 100 and verdict_line(failed, stage.PASSED_COLOUR) == 0
    assert verdict_line(unscored, stage.FAILED_COLOUR) == verdict_line(unscored, stage.PASSED_COLOUR) == 0
    assert stage.verdict_text({"passed": False, "reasons": ["a", "b"]}) == "failed: a; b"
    assert stage.verdict_text(None) is None


# ---------------------------------------------------------------- the script with scores


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory, stage_outputs, sample_dataset):
    """OUT_DIR with scores.jsonl and picks_passed.json, and BOXES_DIR drawn from it with -i."""
    root = tmp_path_factory.mktemp("scored")
    out = root / "out"
    shutil.copytree(stage_outputs, out)
    passed = make_scores(out)
    boxes = root / "boxes"
    result = run_here(SCRIPT, "-g", out, "-p", out / "blip2_post.json", "-i", sample_dataset / "images", "-o", boxes)
    assert result.returncode == 0, result.stderr
    return out, boxes, passed, result


def test_scored_copies_and_overviews_show_the_verdicts(scored_run, sample_dataset):
    out, boxes, passed, result = scored_run
    assert "scored 16 of 16" in result.stdout and "originals drawn 4" in result.stdout
    failing = [(m, n) for m in ("generation", "inpainting") for n in read_scores(out / m) if (m, n) not in passed]
    assert len(failing) == 4
    mode, name = failing[0]
    source = read_scores(out / mode)[name]["source_image_id"]
    overview = np.asarray(Image.open(boxes / "overview" / f"{source}.png").convert("RGB"))
    assert (overview[24:48] == np.array(stage.FAILED_COLOUR, dtype=np.uint8)).all(axis=2).sum() > 100
    assert (overview[24:48] == np.array(stage.PASSED_COLOUR, dtype=np.uint8)).all(axis=2).sum() > 20
    assert Image.open(boxes / mode / name).info[stage.DRAWN_KEY] == stage.drawn_key(
        json.loads(next(line for line in (out / mode / "manifest.jsonl").read_text().splitlines() if name in line))["boxes"],
        read_scores(out / mode)[name])
    for record in json.loads((out / "blip2_post.json").read_text()):
        original = Image.open(boxes / "original" / f"{record['image_id']}.jpg")
        assert original.size == Image.open(sample_dataset / "images" / record["file_name"]).size
        assert original.tobytes() != Image.open(sample_dataset / "images" / record["file_name"]).convert("RGB").tobytes()


def test_a_copy_is_redrawn_when_its_scores_change_and_kept_otherwise(tmp_path, scored_run, sample_dataset):
    out_before, boxes_before, _, _ = scored_run
    out, boxes = tmp_path / "out", tmp_path / "boxes"
    shutil.copytree(out_before, out)
    shutil.copytree(boxes_before, boxes)
    args = ["-g", out, "-p", out / "blip2_post.json", "-i", sample_dataset / "images", "-o", boxes]
    result = run_here(SCRIPT, *args)
    assert result.returncode == 0 and "drawn 0, skipped as existing 16" in result.stdout and "overviews written 0" in result.stdout
    sidecar = boxes / "review_data" / "cards-0000.js"
    page_written, sidecar_written = (boxes / "review.html").stat().st_mtime_ns, sidecar.stat().st_mtime_ns  # rewritten once: this OUT_DIR is elsewhere
    assert run_here(SCRIPT, *args).returncode == 0
    assert (boxes / "review.html").stat().st_mtime_ns == page_written  # the same page is not rewritten
    assert sidecar.stat().st_mtime_ns == sidecar_written
    scores = read_scores(out / "inpainting")
    name = sorted(scores)[0]
    scores[name]["boxes"][0]["region_clip"] = 0.99
    write_scores(out / "inpainting", scores.values())
    before = (boxes / "inpainting" / name).read_bytes()
    result = run_here(SCRIPT, *args)
    assert result.returncode == 0 and "drawn 1, skipped as existing 15" in result.stdout and "overviews written 1" in result.stdout
    assert (boxes / "inpainting" / name).read_bytes() != before
    assert sidecar.stat().st_mtime_ns != sidecar_written and "0.99" in sidecar.read_text()  # the box scores live in the sidecar


def test_the_page_embeds_every_picture_its_scores_and_the_passed_picks(scored_run):
    out, boxes, passed, _ = scored_run
    html = (boxes / "review.html").read_text()
    data = read_page_data(boxes / "review.html")
    assert data["generated_dir"] == str(out.resolve()) and data["modes"] == ["generation", "inpainting"]
    assert data["has_scores"] and data["passed_picks"] and not data["has_plan"] and data["page_size"] == CARDS_PER_PAGE
    pictures = {(data["modes"][p[0]], p[1]): p for card in data["cards"] for p in card["pictures"]}
    assert len(pictures) == 16 and len(data["cards"]) == 4
    for (mode, name), row in pictures.items():
        score = read_scores(out / mode)[name]
        assert row[3] == int(score["passed"]) and row[4] == score["reasons"]
        assert [b[0] for b in row[5]] == [int(b["found"]) for b in score["boxes"]]
        assert row[7] == int((mode, name) in passed)
        assert (boxes / mode / name).is_file()
    for card in data["cards"]:
        assert card["original"] == f"original/{card['id']}.jpg" and (boxes / card["original"]).is_file()
    worst = min(pictures.values(), key=lambda p: p[6])
    assert worst[3] == 0  # failed pictures sort first
    # Self-contained: no network, no external script or style, nothing absolute.
    assert not re.search(r"https?://|<link|<script[^>]+src=|@import", html)
    assert 'loading="lazy"' in html and "localStorage" in html and 'fetch("picks"' in html


def test_page_data_escapes_what_would_end_the_script(tmp_path):
    records = {7: {"image_id": 7, "file_name": "a.jpg", "category_id": 1, "category_ids": [1], "labels": ["cat"],
                   "bbox": [[0, 0, 1, 1]], "generated_text": "a </script><script>alert(1)</script> <!-- cat"}}
    data = page_data([ReviewPicture("generation", "1_0007.png", 7, 0, None)], records, generated_dir=tmp_path,
                     boxes_dir=tmp_path / "boxes", clean_dirs={"generation": tmp_path / "generation"})
    html = render_page(split_page_data(data)[0])
    assert b"</script><script>alert" not in html and b"<!-- cat" not in html
    page = write_review_page(tmp_path / "boxes", data)
    assert b"</script><script>alert" not in page.read_bytes() and "alert(1)" in (tmp_path / "boxes" / sidecar_name(0)).read_text()
    assert read_page_data(page) == json.loads(json.dumps(data))
    assert data["clean_dirs"] == {"generation": "../generation"} and not data["has_scores"]


def test_a_picks_passed_file_for_another_folder_is_left_out_with_a_warning(tmp_path, stage_outputs):
    out = tmp_path / "out"
    shutil.copytree(stage_outputs, out)
    write_picks(out / PASSED_PICKS_FILE, [("generation", "1_0001.png")], tmp_path / "elsewhere")
    result = run_here(SCRIPT, "-g", out, "-p", out / "blip2_post.json", "-o", tmp_path / "boxes", "--no-overview")
    assert result.returncode == 0, result.stderr
    assert "does not start from" in result.stderr and "made for the stage-2 folder" in result.stderr
    data = read_page_data(tmp_path / "boxes" / "review.html")
    assert not data["passed_picks"] and all(p[7] == 0 for card in data["cards"] for p in card["pictures"])
    assert read_picks(out / PASSED_PICKS_FILE).picks  # the input is left as it was


def test_records_with_variants_give_the_plan_per_category(tmp_path, stage_outputs):
    out = tmp_path / "out"
    shutil.copytree(stage_outputs, out)
    records = json.loads((out / "blip2_post.json").read_text())
    for k, record in enumerate(records):
        record["variants"] = k + 1
    (out / "blip2_post.json").write_text(json.dumps(records))
    result = run_here(SCRIPT, "-g", out, "-p", out / "blip2_post.json", "-o", tmp_path / "boxes", "--no-overview")
    assert result.returncode == 0, result.stderr
    data = read_page_data(tmp_path / "boxes" / "review.html")
    assert data["has_plan"] and [card["variants"] for card in data["cards"]] == [k + 1 for k in range(len(records))]


def test_a_plan_csv_beside_the_records_gives_the_planned_pictures(tmp_path, stage_outputs):
    from cocoaug.balance import PLAN_FILE, CategoryPlan, write_plan

    out = tmp_path / "out"
    shutil.copytree(stage_outputs, out)
    categories = sorted({r["category_id"] for r in json.loads((out / "blip2_post.json").read_text())})
    write_plan(out / PLAN_FILE, [CategoryPlan(c, f"c{c}", 10, 5, 1.5, None, 1, 3 + c, 6, 16, None, None) for c in categories])
    result = run_here(SCRIPT, "-g", out, "-p", out / "blip2_post.json", "-o", tmp_path / "boxes", "--no-overview")
    assert result.returncode == 0, result.stderr
    data = read_page_data(tmp_path / "boxes" / "review.html")
    assert data["has_plan"] and data["plan"] == {str(c): 2 * (3 + c) for c in categories}  # per mode run, times the 2 modes
    (out / PLAN_FILE).write_text("category_id\n1\n")
    result = run_here(SCRIPT, "-g", out, "-p", out / "blip2_post.json", "-o", tmp_path / "boxes", "--no-overview")
    assert result.returncode == 0 and "the review page shows no plan" in result.stderr and "lacks the column" in result.stderr
    assert read_page_data(tmp_path / "boxes" / "review.html")["plan"] is None


def test_a_page_of_50000_pictures_stays_a_few_megabytes_and_its_details_go_to_sidecars(tmp_path):
    """12,500 source images x 2 modes x 2 variants, every picture scored with 3 boxes."""
    records, pictures = {}, []
    for image_id in range(1, 12_501):
        category_id = 1 + image_id % 80
        records[image_id] = {"image_id": image_id, "file_name": f"{image_id:012d}.jpg", "width": 640, "height": 480,
                             "category_id": category_id, "category_ids": [category_id] * 3, "labels": ["thing"] * 3,
                             "bbox": [[0.1, 0.1, 0.5, 0.5]] * 3, "generated_text": "a photo of a thing on a table in a room",
                             "variants": 2}
        for mode in ("generation", "inpainting"):
            for variant in range(2):
                passed = (image_id + variant) % 3 != 0
                score = {"passed": passed, "reasons": [] if passed else ["box 0 (thing) not found"], "box_recall": 1.0 if passed else 0.67,
                         "min_region_clip": 0.2, "boxes": [{"found": passed or b > 0, "region_clip": 0.2 + 0.01 * b} for b in range(3)]}
                pictures.append(ReviewPicture(mode, f"{category_id}_{image_id:04d}_{variant}.png", image_id, variant, score))
    started = time.perf_counter()
    data = page_data(pictures, records, generated_dir=tmp_path, boxes_dir=tmp_path / "boxes",
                     clean_dirs={"generation": tmp_path / "generation", "inpainting": tmp_path / "inpainting"},
                     images_dir=tmp_path / "images", originals=set(records))
    index, chunks = split_page_data(data)
    html = render_page(index)
    seconds = time.perf_counter() - started
    print(f"50,000 pictures: page {len(html) / 1e6:.1f} MB + {len(chunks)} sidecars in {seconds:.1f} s")
    assert sum(len(card["pictures"]) for card in data["cards"]) == 50_000
    assert len(chunks) == 125 and all(len(chunk) == CARDS_PER_PAGE for chunk in chunks)
    assert len(html) < 5_000_000  # the page holds the index; prompts, labels, reasons and box scores are in the sidecars
