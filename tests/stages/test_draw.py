"""Stage 3 (draw_bboxes.py): boxed copies under the same names per mode, stable colours, sizes
that scale, overviews, resume, and one-line errors; the inputs are never modified."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

import draw_bboxes as stage
from cocoaug.generated import MODES, parse_generated_name
from tests.helpers.scripts import ROOT, run_python, run_here, tree_hashes

SCRIPT = "draw_bboxes.py"


def records_of(out: Path) -> dict:
    return {r["image_id"]: r for r in json.loads((out / "blip2_post.json").read_text())}


def colour_pixels(image: Image.Image, colour) -> int:
    return int((np.asarray(image) == np.array(colour, dtype=np.uint8)).all(axis=2).sum())


# ---------------------------------------------------------------- drawing, exactly


def test_box_edge_has_the_category_colour_and_the_rest_is_untouched():
    grey = Image.new("RGB", (300, 200), (128, 128, 128))
    drawn = stage.draw_boxes(grey, [[0.2, 0.5, 0.6, 0.9]], [18], ["dog"])
    colour = stage.category_colour(18)
    line = stage.line_width_for(300, 200)
    assert drawn.getpixel((60, 150)) == colour  # left edge, x0 = 0.2 * 300
    assert drawn.getpixel((60 + line + 1, 150)) == (128, 128, 128)  # just inside the line
    assert drawn.getpixel((120, 150)) == (128, 128, 128)  # box centre
    assert drawn.getpixel((290, 10)) == (128, 128, 128)  # far away
    assert drawn.getpixel((61, 99)) == colour  # label band above the box
    assert grey.getpixel((60, 150)) == (128, 128, 128)  # the input image is not drawn on


def test_label_goes_inside_a_box_that_touches_the_top():
    drawn = stage.draw_boxes(Image.new("RGB", (300, 200), "black"), [[0.1, 0.0, 0.5, 0.5]], [3], ["ball"])
    band = np.asarray(drawn)[2:8, 40:60]
    assert (band == np.array(stage.category_colour(3))).all(axis=2).any()


def test_colours_are_stable_per_category_id_not_per_order():
    first = [stage.category_colour(c) for c in (1, 3, 18, 90)]
    again = [stage.category_colour(c) for c in (90, 18, 3, 1)][::-1]
    assert first == again
    assert len(set(stage.category_colour(c) for c in range(1, 91))) > 10
    # A child process (another hash seed) gives the same colours.
    code = "import draw_bboxes as s; print([s.category_colour(c) for c in (1, 3, 18, 90)])"
    out = run_python("-c", code, check=True).stdout
    assert out.strip() == str(first)


def test_the_band_writes_the_box_scores_after_the_label():
    grey = Image.new("RGB", (400, 200), (128, 128, 128))
    box, colour = [[0.05, 0.5, 0.95, 0.9]], stage.category_colour(3)

    def columns_of(drawn: Image.Image, of_band: bool) -> np.ndarray:
        """Columns above the box (rows 0..99) holding band-coloured pixels, or text pixels (neither band nor background)."""
        pixels = np.asarray(drawn)[:100].astype(int)
        band = (pixels == colour).all(axis=2)
        mask = band if of_band else ~band & ~(pixels == 128).all(axis=2)
        return np.flatnonzero(mask.any(axis=0))

    plain = stage.draw_boxes(grey, box, [3], ["ball"])
    scored = stage.draw_boxes(grey, box, [3], ["ball"], [{"region_clip": 0.25, "found": False}])
    # " 0.25 not found" is written after "ball", to the end of the longer band.
    assert columns_of(scored, of_band=False).max() > columns_of(plain, of_band=False).max() + 40
    assert columns_of(scored, of_band=True).max() - columns_of(scored, of_band=False).max() < 10


def test_text_colour_contrasts_with_the_band():
    assert stage.text_colour_on((255, 225, 25)) == (0, 0, 0)
    assert stage.text_colour_on((0, 0, 128)) == (255, 255, 255)


def test_line_width_and_font_grow_with_the_picture():
    assert stage.line_width_for(64, 48) == 2 and stage.line_width_for(3000, 1500) == 10
    assert stage.font_size_for(64, 48) == 11 and stage.font_size_for(4000, 3000) == 120
    small = stage.draw_boxes(Image.new("RGB", (100, 100)), [[0.3, 0.5, 0.7, 0.9]], [3], ["ball"])
    large = stage.draw_boxes(Image.new("RGB", (2000, 2000)), [[0.3, 0.5, 0.7, 0.9]], [3], ["ball"])
    colour = stage.category_colour(3)
    band_rows = lambda image, x: int((np.asarray(image)[:, x] == np.array(colour)).all(axis=1).sum())
    assert band_rows(large, 602) > 10 * band_rows(small, 31) / 2  # label band scaled with the picture


# ---------------------------------------------------------------- the script


def test_every_generated_image_gets_a_boxed_copy_under_its_name(tmp_path, stage_outputs, sample_dataset):
    before = tree_hashes(stage_outputs, sample_dataset)
    boxes = tmp_path / "boxes"
    result = run_here(SCRIPT, "-g", stage_outputs, "-p", stage_outputs / "blip2_post.json", "-i", sample_dataset / "images", "-o", boxes)
    assert result.returncode == 0, result.stderr
    records = records_of(stage_outputs)
    generated = sorted(p.relative_to(stage_outputs).as_posix() for m in MODES for p in (stage_outputs / m).glob("*.png"))
    assert sorted(p.relative_to(boxes).as_posix() for m in MODES for p in (boxes / m).glob("*.png")) == generated
    for name in generated:
        clean, copy = Image.open(stage_outputs / name).convert("RGB"), Image.open(boxes / name).convert("RGB")
        assert copy.size == clean.size and copy.tobytes() != clean.tobytes()
        record = records[parse_generated_name(Path(name).name)[1]]
        for category_id in set(record["category_ids"]):
            assert colour_pixels(copy, stage.category_colour(category_id)) >= 8
    assert sorted(p.name for p in (boxes / "overview").iterdir()) == sorted(f"{i}.png" for i in records)
    assert re.search(rf"drawn {len(generated)}, skipped as existing 0", result.stdout)
    assert tree_hashes(stage_outputs, sample_dataset) == before


def test_overview_shows_the_original_then_every_generated_image(tmp_path, stage_outputs, sample_dataset):
    with_original, without = tmp_path / "a", tmp_path / "b"
    prompts = stage_outputs / "blip2_post.json"
    assert run_here(SCRIPT, "-g", stage_outputs, "-p", prompts, "-i", sample_dataset / "images", "-o", with_original).returncode == 0
    assert run_here(SCRIPT, "-g", stage_outputs, "-p", prompts, "-o", without).returncode == 0
    for image_id, record in records_of(stage_outputs).items():
        panel = max(1, round(record["width"] * stage.OVERVIEW_HEIGHT / record["height"]))
        a, b = Image.open(with_original / "overview" / f"{image_id}.png"), Image.open(without / "overview" / f"{image_id}.png")
        assert a.height == b.height == stage.OVERVIEW_HEIGHT + 24
        assert a.width - b.width >= panel + 8  # one more panel: the original
        assert b.width >= 4 * panel  # 2 modes x 2 variants


def test_no_overview_flag(tmp_path, stage_outputs):
    boxes = tmp_path / "boxes"
    assert run_here(SCRIPT, "-g", stage_outputs, "-p", stage_outputs / "blip2_post.json", "-o", boxes, "--no-overview").returncode == 0
    assert not (boxes / "overview").exists() and any((boxes / "generation").iterdir())


def test_resume_keeps_existing_copies_and_overwrite_redraws(tmp_path, stage_outputs):
    boxes = tmp_path / "boxes"
    args = ["-g", stage_outputs, "-p", stage_outputs / "blip2_post.json", "-o", boxes]
    assert run_here(SCRIPT, *args).returncode == 0
    marked = next((boxes / "inpainting").glob("*.png"))
    Image.new("RGB", (3, 3), "white").save(marked)
    result = run_here(SCRIPT, *args)
    assert result.returncode == 0 and "drawn 0, skipped as existing 16" in result.stdout
    assert "overviews written 0" in result.stdout and Image.open(marked).size == (3, 3)
    assert "overviews:" not in result.stderr and "boxes:" not in result.stderr, result.stderr  # no empty progress bars
    result = run_here(SCRIPT, *args, "--overwrite")
    assert result.returncode == 0 and "drawn 16" in result.stdout and Image.open(marked).size != (3, 3)
    # Not on a terminal: no bar, one line per loop.
    assert "overviews: 4 images in" in result.stderr and "boxes: 16 images in" in result.stderr, result.stderr
    assert "\r" not in result.stderr and "%|" not in result.stderr


def test_one_mode_folder_boxes_from_manifest_and_any_image_mode(tmp_path, stage_outputs):
    out = tmp_path / "out"
    shutil.copytree(stage_outputs, out)
    folder = out / "generation"
    lines = [orjson.loads(line) for line in (folder / "manifest.jsonl").read_bytes().splitlines()]
    moved = lines[0]
    moved["boxes"] = [[0.5, 0.5, 0.95, 0.95]] * len(moved["boxes"])  # not where the record says
    (folder / "manifest.jsonl").write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    Image.open(folder / lines[1]["file_name"]).convert("P").save(folder / lines[1]["file_name"])
    Image.open(folder / lines[2]["file_name"]).convert("LA").save(folder / lines[2]["file_name"])
    Image.open(folder / lines[3]["file_name"]).save(folder / "notes.png")  # a PNG without an entry
    boxes = tmp_path / "boxes"
    result = run_here(SCRIPT, "-g", folder, "-p", out / "blip2_post.json", "-o", boxes)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in boxes.iterdir()) == ["generation", "overview", "review.html", "review_data"]
    assert "skipped (not made by stage 2) 1" in result.stdout and "notes.png" in result.stderr
    drawn = Image.open(boxes / "generation" / moved["file_name"])
    w, h = drawn.size
    category_id = records_of(out)[moved["source_image_id"]]["category_ids"][0]
    edge = drawn.getpixel((round(0.5 * w), round(0.75 * h)))
    assert edge == stage.category_colour(category_id)


def test_without_manifest_boxes_come_from_the_records(tmp_path, stage_outputs):
    out = tmp_path / "out"
    shutil.copytree(stage_outputs, out)
    for mode in MODES:
        (out / mode / "manifest.jsonl").unlink()
        for path in (out / mode).glob("*.png"):  # saved again without their entries: known by name only
            with Image.open(path) as image:
                image.load()
            image.save(path)
    boxes = tmp_path / "boxes"
    result = run_here(SCRIPT, "-g", out, "-p", out / "blip2_post.json", "-o", boxes, "--no-overview")
    assert result.returncode == 0 and "drawn 16" in result.stdout
    record = next(iter(records_of(out).values()))
    name = f"{record['category_id']}_{record['image_id']:04d}_0.png"
    drawn = Image.open(boxes / "inpainting" / name)
    x0, y0, x1, y1 = record["bbox"][0]
    assert drawn.getpixel((int(x0 * drawn.width), int((y0 + y1) / 2 * drawn.height))) == stage.category_colour(record["category_ids"][0])


@pytest.mark.parametrize("case, message", [
    ("bad json", "prompts file is not valid JSON"),
    ("not a list", "must be a JSON list of stage-1 records"),
    ("unknown id", "which is not in the prompts file"),
    ("output is input", "/out/generation is the generation folder"),
    ("output over a mode folder", "/out/generation is the generation folder"),
    ("no generated images", "no generated images"),
    ("missing original", "original image of image_id"),
])
def test_bad_inputs_end_with_one_error_line(tmp_path, stage_outputs, sample_dataset, case, message):
    out = tmp_path / "out"
    shutil.copytree(stage_outputs, out)
    prompts, generated, boxes, images = out / "blip2_post.json", out, tmp_path / "boxes", sample_dataset / "images"
    records = json.loads(prompts.read_text())
    if case == "bad json":
        prompts.write_text('[{"image_id": 1,')
    elif case == "not a list":
        prompts.write_text('{"images": []}')
    elif case == "unknown id":
        prompts.write_text(json.dumps(records[1:]))
    elif case == "output is input":
        boxes = out
    elif case == "output over a mode folder":
        generated, boxes = out / "generation", out
    elif case == "no generated images":
        generated = tmp_path / "empty"
        generated.mkdir()
    elif case == "missing original":
        images = tmp_path / "images"
        shutil.copytree(sample_dataset / "images", images)
        (images / records[0]["file_name"]).unlink()
    before = tree_hashes(out)
    result = run_here(SCRIPT, "-g", generated, "-p", prompts, "-i", images, "-o", boxes)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr
    assert tree_hashes(out) == before
    assert not (boxes / "generation").exists() or boxes == out


def test_help_and_docs_name_every_flag():
    help_text = run_here(SCRIPT, "--help").stdout
    docs = (ROOT / "docs" / "steps.md").read_text()
    for flag in ["--generated", "--prompts", "--output", "--images", "--overview", "--no-overview", "--overwrite", "--debug"]:
        assert flag in help_text and flag in docs, flag


def test_a_killed_runs_temp_files_are_removed_by_the_rerun(stage_outputs, tmp_path):
    """A kill leaves hidden temp files beside the copies being written; the rerun removes them in every folder it writes."""
    boxes = tmp_path / "boxes"
    args = ["-g", stage_outputs, "-p", stage_outputs / "blip2_post.json", "-o", boxes, "--no-overview"]
    assert run_here(SCRIPT, *args).returncode == 0
    dead_pid = 4194305  # above any pid Linux gives
    copy = next((boxes / "generation").glob("*.png"))
    copy.unlink()
    stale = [copy.with_name(f".{copy.name}.abcd1234.{dead_pid}.tmp"), boxes / ".review.html.k3j2h1g9.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    result = run_here(SCRIPT, *args)
    assert result.returncode == 0, result.stderr
    assert copy.is_file() and not any(path.exists() for path in stale)
    assert [p for p in boxes.rglob("*") if p.name.endswith(".tmp")] == []


def test_workers_draw_the_same_files_and_default_to_every_cpu(tmp_path, stage_outputs, sample_dataset):
    import os

    assert stage.build_parser().parse_args(["-g", "x", "-p", "y", "-o", "z"]).num_workers == len(os.sched_getaffinity(0))
    drawn = {}
    for workers in (1, 3):
        boxes = tmp_path / f"boxes_{workers}"
        result = run_here(SCRIPT, "-g", stage_outputs, "-p", stage_outputs / "blip2_post.json", "-i", sample_dataset / "images",
                            "-o", boxes, "--num-workers", workers)
        assert result.returncode == 0 and "drawn 16" in result.stdout and "originals drawn 4" in result.stdout, result.stderr
        drawn[workers] = {p.relative_to(boxes): p.read_bytes() for p in boxes.rglob("*") if p.is_file()}
    assert drawn[1] == drawn[3] and len(drawn[1]) == 16 + 4 + 4 + 2  # copies, overviews, originals, page + its sidecar
    result = run_here(SCRIPT, "-g", stage_outputs, "-p", stage_outputs / "blip2_post.json", "-o", tmp_path / "b", "--num-workers", -1)
    assert result.returncode == 2 and result.stderr == "error: must not be negative (--num-workers -1)\n"
