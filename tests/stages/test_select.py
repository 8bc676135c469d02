"""Stage 1 selection (generate_prompt_blip2.py --select-only): exact selections, records, errors.

No model is needed: --select-only loads none and reads no image.
"""

import json
import re

import numpy as np
import pytest

import generate_prompt_blip2 as stage
from cocoaug.coco import load_coco
from cocoaug.records import load_records
from tests.helpers.scripts import ROOT, run_python, run_here
from tests.helpers.stage_inputs import TOY, write_coco

SCRIPT = "generate_prompt_blip2.py"
DEFAULT = [1, 7, 8, 9]
FLAG_CASES = [
    ([], DEFAULT),
    (["--max-objects", "2"], [1, 7, 9]),
    (["--allow-multi-category"], [1, 3, 7, 8, 9]),
    (["--categories", "dog"], [7, 8]),
    (["--categories", "Dog, teddy bear"], [7, 8, 9]),
    (["--categories", "dog", "--allow-multi-category"], [3, 7, 8]),
    (["--min-box-area", "10"], [1, 8, 9]),
    (["--limit", "2"], [1, 7]),
    (["--allow-multi-category", "--max-objects", "7", "--limit", "3"], [1, 3, 4]),
]


def select(tmp_path, annotations, images_dir, *flags) -> tuple[list[dict], str]:
    out = tmp_path / "out"
    result = run_here(SCRIPT, "-i", images_dir, "-a", annotations, "-o", out, "--select-only", "--overwrite", *flags)
    assert result.returncode == 0, result.stderr
    return load_records(out / "selection.json", require_text=False), result.stdout


@pytest.fixture
def toy(tmp_path):
    images = tmp_path / "images"
    images.mkdir()  # stays empty: --select-only reads no image
    return write_coco(tmp_path / "ann"), images


@pytest.mark.parametrize("flags, expected", FLAG_CASES, ids=[" ".join(f) or "default" for f, _ in FLAG_CASES])
def test_selection_is_exact_for_each_flag(tmp_path, toy, flags, expected):
    records, _ = select(tmp_path, *toy, *flags)
    assert [r["image_id"] for r in records] == expected


def test_summary_counts_each_skip_reason(tmp_path, toy):
    _, stdout = select(tmp_path, *toy)
    counts = {name.strip(): int(n) for name, n in re.findall(r"^\s+(.+?)\s+(\d+)$", stdout, re.MULTILINE)}
    assert counts == {
        "images in annotation file": 9, "skipped: no annotations": 1, "skipped: multi-category": 1,
        "skipped: too many objects": 1, "skipped: crowd annotation": 1, "skipped: degenerate box": 1,
        "selected": 4, "written to selection.json": 4,
    }


def test_records_hold_clipped_normalised_boxes_and_per_box_fields(tmp_path, toy):
    records, _ = select(tmp_path, *toy, "--categories", "dog,teddy bear", "--allow-multi-category")
    by_id = {r["image_id"]: r for r in records}
    six = by_id[8]
    assert (six["width"], six["height"], six["file_name"]) == (80, 40, "six.jpg")
    assert six["bbox"][0] == [0.0, 0.0, 0.125, 0.25]
    assert six["bbox"][5] == [70 / 80, 30 / 40, 1.0, 1.0]  # reached past the image: clipped
    assert six["annotation_ids"] == sorted(six["annotation_ids"]) and len(six["annotation_ids"]) == 6
    assert six["labels"] == ["dog"] * 6 and six["category_ids"] == [17] * 6 and six["label"] == "dog"
    mixed = by_id[3]
    assert mixed["category_ids"] == [3, 17] and mixed["labels"] == ["cat", "dog"]
    assert mixed["category_id"] == 3 and mixed["label"] == "cat"
    assert by_id[9]["file_name"] == "sub/a.jpg" and by_id[9]["bbox"] == [[0.0, 0.0, 0.5, 0.5]]
    assert "generated_text" not in mixed


def reference_selection(coco: dict, max_objects=6, multi=False, categories=None, min_area=0.0, limit=None) -> list[int]:
    """A plain per-image loop: what the vectorised selection must equal."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    boxes = {image["id"]: [] for image in coco["images"]}
    for ann in coco["annotations"]:
        boxes[ann["image_id"]].append(ann)
    chosen = []
    for image in sorted(coco["images"], key=lambda i: i["id"]):
        anns = boxes[image["id"]]
        areas = []
        for ann in anns:
            x, y, w, h = ann["bbox"]
            cw = min(x + w, image["width"]) - max(x, 0)
            ch = min(y + h, image["height"]) - max(y, 0)
            areas.append(max(cw, 0) * max(ch, 0))
        ok = bool(anns) and len(anns) <= max_objects and not any(a.get("iscrowd", 0) for a in anns)
        ok = ok and min(areas, default=0) > 0 and min(areas, default=0) >= min_area
        ok = ok and (multi or len({a["category_id"] for a in anns}) == 1)
        ok = ok and (categories is None or any(names[a["category_id"]] in categories for a in anns))
        if ok:
            chosen.append(image["id"])
    return chosen[:limit] if limit else chosen


def test_sample_set_selection_matches_a_plain_loop(tmp_path, sample_dataset):
    coco = json.loads((sample_dataset / "annotations.json").read_text())
    names = sorted({c["name"] for c in coco["categories"]})
    cases = [
        ([], {}),
        (["--max-objects", "2"], {"max_objects": 2}),
        (["--allow-multi-category", "--max-objects", "10"], {"multi": True, "max_objects": 10}),
        (["--categories", names[0]], {"categories": {names[0]}}),
        (["--min-box-area", "500"], {"min_area": 500}),
        (["--allow-multi-category", "--limit", "3"], {"multi": True, "limit": 3}),
    ]
    for flags, kwargs in cases:
        records, _ = select(tmp_path, sample_dataset / "annotations.json", sample_dataset / "images", *flags)
        assert [r["image_id"] for r in records] == reference_selection(coco, **kwargs), flags
    assert reference_selection(coco), "the sample set should have images the default selects"
    assert reference_selection(coco, multi=True, max_objects=10) != reference_selection(coco)


def test_sample_set_default_selection_is_the_documented_one(tmp_path, sample_dataset):
    annotations, images = sample_dataset / "annotations.json", sample_dataset / "images"
    records, _ = select(tmp_path, annotations, images)
    assert [r["image_id"] for r in records] == [101, 102, 105, 106, 110, 111, 117]
    by_id = {r["image_id"]: r for r in records}
    assert max(box[2] for box in by_id[110]["bbox"]) == 1.0  # the ball reaching past the border is clipped
    assert by_id[117]["file_name"] == "extra/café photo.jpg"
    records, _ = select(tmp_path, annotations, images, "--min-box-area", "50")
    assert [r["image_id"] for r in records] == [101, 105, 106, 110, 111, 117]  # 102's box is 42 px


def test_select_only_imports_no_model_library(tmp_path, toy):
    code = (
        "import sys, generate_prompt_blip2 as s\n"
        f"s.main(s.parse_args(['-i', {str(toy[1])!r}, '-a', {str(toy[0])!r}, '-o', {str(tmp_path / 'o')!r},"
        " '--select-only', '--model', '/no/such/model']))\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'a model library was imported'\n"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o" / "selection.json").exists()
    assert not (tmp_path / "o" / "blip2.json").exists()


def test_image_table_counts_per_image(tmp_path):
    dataset = load_coco(write_coco(tmp_path))
    table = stage.image_table(dataset, [])
    assert np.array_equal(table.index.to_numpy(), np.arange(1, 10))
    assert table.loc[8, "n_boxes"] == 6 and table.loc[3, "n_categories"] == 2 and table.loc[5, "n_crowd"] == 1
    assert table.loc[6, "min_box_area"] == 0 and table.loc[7, "min_box_area"] == 4 and table.loc[2, "n_boxes"] == 0
    assert table.loc[8, "min_box_area"] == 100  # the box past the edge keeps 10 x 10 inside
    assert stage.image_table(dataset, ["teddy bear"])["n_wanted"].tolist() == [0] * 8 + [1]


@pytest.mark.parametrize("flags, message", [
    (["--categories", "unicorn"], "error: unknown category 'unicorn'"),
    (["--max-objects", "0"], "error: must be at least 1 (--max-objects 0)"),
    (["--limit", "-1"], "error: must be at least 1 (--limit -1)"),
    (["--min-box-area", "-5"], "error: must not be negative"),
])
def test_bad_flags_end_with_one_error_line(tmp_path, toy, flags, message):
    result = run_here(SCRIPT, "-i", toy[1], "-a", toy[0], "-o", tmp_path / "out", "--select-only", *flags)
    assert result.returncode == 2
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "out" / "selection.json").exists()


def test_bad_inputs_end_with_one_error_line(tmp_path, toy):
    annotations, images = toy
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    cases = [
        (["-i", images, "-a", tmp_path / "nope.json"], "annotation file does not exist"),
        (["-i", tmp_path / "no_dir", "-a", annotations], "image folder does not exist"),
        (["-i", images, "-a", broken], "annotation file is not valid JSON"),
    ]
    for args, message in cases:
        result = run_here(SCRIPT, *args, "-o", tmp_path / "out", "--select-only")
        assert result.returncode == 2 and result.stderr.startswith("error: " + message), result.stderr
        assert "Traceback" not in result.stderr
    same = run_here(SCRIPT, "-i", images, "-a", annotations, "-o", images, "--select-only")
    assert same.returncode == 2 and f"the output folder {images} is the image folder {images}" in same.stderr


@pytest.mark.parametrize("file_name, message", [
    ("../../x.png", "error: image 1: file_name climbs out of the image folder with '..', got '../../x.png' ({})"),
    ("/etc/x.png", "error: image 1: file_name is an absolute path; it must be relative to the image folder, got '/etc/x.png' ({})"),
    ("a\x00.png", "error: image 1: file_name holds a NUL byte, got 'a\\x00.png' ({})"),  # issue 18: --select-only took it
])
def test_select_only_refuses_a_file_name_outside_the_image_folder(tmp_path, file_name, message):
    """The same line as the full run (tests/stages/test_caption.py): the annotation file's schema refuses the name."""
    annotations = write_coco(tmp_path / "ann", {1: (file_name, 64, 48, [(3, [5, 5, 20, 20], 0)]), **{9: TOY[9]}})
    (tmp_path / "images").mkdir()
    result = run_here(SCRIPT, "-i", tmp_path / "images", "-a", annotations, "-o", tmp_path / "out", "--select-only")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [message.format(annotations)], result.stderr
    assert not (tmp_path / "out").exists()


def test_string_boxes_are_refused_when_the_annotation_file_is_read(tmp_path, tiny_models):
    """Issue 18: stage 1 took ["48", "150", ...], and stages 2 and 4 then died with a traceback."""
    annotations = write_coco(tmp_path / "ann", {1: ("a.png", 64, 48, [(3, [5, 5, 20, 20], 0)])})
    coco = json.loads(annotations.read_text())
    coco["annotations"][0]["bbox"] = ["5", "5", "20", "20"]
    annotations.write_text(json.dumps(coco))
    (tmp_path / "images").mkdir()
    for flags in (["--select-only"], ["--model", tiny_models / "blip2"]):  # the full run: before the model is loaded
        result = run_here(SCRIPT, "-i", tmp_path / "images", "-a", annotations, "-o", tmp_path / "out", *flags)
        assert result.returncode == 2 and result.stderr.strip().splitlines() == [
            f"error: annotation 101 has a 'bbox' that is not [x, y, w, h]: ['5', '5', '20', '20'] ({annotations})"], result.stderr
        assert not (tmp_path / "out").exists()


def test_existing_selection_needs_overwrite(tmp_path, toy):
    out = tmp_path / "out"
    assert run_here(SCRIPT, "-i", toy[1], "-a", toy[0], "-o", out, "--select-only").returncode == 0
    again = run_here(SCRIPT, "-i", toy[1], "-a", toy[0], "-o", out, "--select-only", "--limit", "1")
    assert again.returncode == 2 and "output exists; pass --overwrite" in again.stderr
    assert str(out / "selection.json") in again.stderr
    assert len(json.loads((out / "selection.json").read_text())) == len(DEFAULT)
    assert run_here(SCRIPT, "-i", toy[1], "-a", toy[0], "-o", out, "--select-only", "--limit", "1", "--overwrite").returncode == 0
    assert len(json.loads((out / "selection.json").read_text())) == 1


def test_help_and_stage1_docs_name_every_flag():
    help_text = run_here(SCRIPT, "--help").stdout
    docs = "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    flags = [o for action in stage.build_parser()._actions for o in action.option_strings if o.startswith("--")]
    assert len(flags) > 20
    for flag in flags:
        assert flag in help_text, flag
        assert f"`{flag}" in docs, f"neither README.md nor docs/ documents {flag}"
