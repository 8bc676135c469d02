"""scripts/make_sample_dataset.py: the sample set has every feature its docstring promises,
loads with pycocotools, is byte-identical on every run, is reused without --overwrite, and
a bad DIR is a one-line error."""

import contextlib
import importlib.util
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from tests.helpers.scripts import ROOT, run_script

SCRIPT = "scripts/make_sample_dataset.py"
_spec = importlib.util.spec_from_file_location("make_sample_dataset", ROOT / SCRIPT)
sample = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sample)


def all_files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def coco(sample_dataset) -> dict:
    return json.loads((sample_dataset / "annotations.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def boxes_by_image(coco) -> dict:
    by_image = {image["id"]: [] for image in coco["images"]}
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(ann)
    return by_image


def test_loads_with_pycocotools_and_every_mask_decodes(sample_dataset, coco):
    with contextlib.redirect_stdout(io.StringIO()):
        api = COCO(str(sample_dataset / "annotations.json"))
    assert len(api.getImgIds()) == 12
    assert len(api.getAnnIds()) == len(coco["annotations"]) == 42
    for ann in api.loadAnns(api.getAnnIds()):
        mask = api.annToMask(ann)
        image = api.imgs[ann["image_id"]]
        assert mask.shape == (image["height"], image["width"])
        # A 16-point polygon covers a few percent less than the drawn ball (and the ball past the border less).
        assert abs(int(mask.sum()) - ann["area"]) <= 0.1 * ann["area"]
    assert list(coco) == ["info", "licenses", "images", "annotations", "categories"]


def test_ids_are_non_contiguous_and_unique(coco):
    categories = {c["id"]: c["name"] for c in coco["categories"]}
    assert categories == {3: "ball", 7: "box", 12: "kite", 20: "star"}
    assert all(c["supercategory"] for c in coco["categories"])
    image_ids = [image["id"] for image in coco["images"]]
    ann_ids = [ann["id"] for ann in coco["annotations"]]
    for ids in (image_ids, ann_ids):
        assert len(set(ids)) == len(ids)
        assert min(ids) > 1 and max(ids) - min(ids) + 1 > len(ids)
    assert image_ids == [s.id for s in sample.SAMPLE_IMAGES]


def test_files_modes_and_sizes(sample_dataset, coco):
    modes = Counter()
    for image, spec in zip(coco["images"], sample.SAMPLE_IMAGES):
        assert (image["file_name"], image["width"], image["height"]) == (spec.file_name, spec.width, spec.height)
        with Image.open(sample_dataset / "images" / image["file_name"]) as file:
            assert file.size == (image["width"], image["height"])
            assert file.mode == spec.mode
            modes[(file.format, file.mode)] += 1
    assert {("PNG", "L"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "I;16"), ("PNG", "RGB"), ("JPEG", "RGB")} <= set(modes)
    sizes = {(image["width"], image["height"]) for image in coco["images"]}
    assert (640, 480) in sizes
    assert any(w == h for w, h in sizes), "a square image"
    assert any(h > w for w, h in sizes), "a portrait image"
    assert any(w / h > 2 for w, h in sizes), "a very wide image"
    assert sum(len(data) for data in all_files(sample_dataset).values()) < 1_000_000


def test_file_names_with_subfolder_space_and_non_ascii(sample_dataset, coco):
    names = [image["file_name"] for image in coco["images"]]
    assert "extra/caf\u00e9 photo.jpg" in names
    assert sum(name.startswith("extra/") for name in names) == 3
    assert (sample_dataset / "images" / "extra" / "caf\u00e9 photo.jpg").is_file()
    assert not [p for p in sample_dataset.rglob(".*")], "no temp files left behind"


def test_box_counts_crowd_empty_border_and_tiny(coco, boxes_by_image):
    counts = {image_id: len(anns) for image_id, anns in boxes_by_image.items()}
    assert sorted(counts.values()) == [0, 1, 2, 2, 2, 3, 3, 4, 4, 5, 6, 10]
    assert [i for i, n in counts.items() if n == 0] == [142]
    multi = [i for i, anns in boxes_by_image.items() if len({a["category_id"] for a in anns}) > 1]
    assert multi == [113, 121]
    crowd = [a for a in coco["annotations"] if a["iscrowd"]]
    assert [(a["image_id"], a["iscrowd"]) for a in crowd] == [(130, 1)]
    assert set(crowd[0]["segmentation"]) == {"counts", "size"} and crowd[0]["segmentation"]["size"] == [270, 360]
    for ann in coco["annotations"]:
        assert ann["bbox"][2] > 0 and ann["bbox"][3] > 0
        if not ann["iscrowd"]:
            assert isinstance(ann["segmentation"], list) and len(ann["segmentation"][0]) >= 6
    sizes = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    past_border = [a for a in coco["annotations"] if a["bbox"][0] + a["bbox"][2] > sizes[a["image_id"]][0]]
    assert [(a["image_id"], a["bbox"][0] + a["bbox"][2] - sizes[110][0]) for a in past_border] == [(110, 4)]
    tiny = [a for a in coco["annotations"] if a["bbox"][2] * a["bbox"][3] < 50]
    assert [(a["image_id"], a["area"]) for a in tiny] == [(102, 42)]


def test_default_selection_is_documented(coco, boxes_by_image):
    sizes = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}

    def clipped_area(ann):
        x, y, w, h = ann["bbox"]
        width, height = sizes[ann["image_id"]]
        return max(0, min(x + w, width) - max(x, 0)) * max(0, min(y + h, height) - max(y, 0))

    selected = [image_id for image_id, anns in boxes_by_image.items()
                if 1 <= len(anns) <= 6 and len({a["category_id"] for a in anns}) == 1
                and not any(a["iscrowd"] for a in anns) and all(clipped_area(a) > 0 for a in anns)]
    assert selected == sample.DEFAULT_SELECTION == [101, 102, 105, 106, 110, 111, 117]


@pytest.mark.parametrize("image_id", [102, 120, 130])
def test_boxes_are_tight_around_the_drawn_pixels(sample_dataset, coco, boxes_by_image, image_id):
    image = next(i for i in coco["images"] if i["id"] == image_id)
    pixels = np.asarray(Image.open(sample_dataset / "images" / image["file_name"]).convert("RGB"))
    colour_by_category = {sample.CATEGORIES[name]: colour for name, colour in sample.COLOURS.items()}
    for ann in boxes_by_image[image_id]:
        x, y, w, h = ann["bbox"]
        region = pixels[max(y - 3, 0): y + h + 3, max(x - 3, 0): x + w + 3]
        rows, cols = np.nonzero((region == colour_by_category[ann["category_id"]]).all(axis=2))
        x0, y0 = max(x - 3, 0), max(y - 3, 0)
        assert [x0 + cols.min(), y0 + rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1] == ann["bbox"]
        if ann["iscrowd"]:
            with contextlib.redirect_stdout(io.StringIO()):
                api = COCO(str(sample_dataset / "annotations.json"))
            drawn = np.zeros(pixels.shape[:2], bool)
            drawn[y: y + h, x: x + w] = (pixels[y: y + h, x: x + w] == colour_by_category[ann["category_id"]]).all(axis=2)
            assert np.array_equal(api.annToMask(ann).astype(bool), drawn)


def test_two_runs_are_byte_identical(sample_dataset, tmp_path):
    result = run_script(SCRIPT, tmp_path / "again")
    assert result.returncode == 0, result.stderr
    first, second = all_files(sample_dataset), all_files(tmp_path / "again")
    assert sorted(first) == sorted(second) and len(first) == 13
    assert [name for name in first if first[name] != second[name]] == []


def test_existing_set_is_reused_unless_overwrite(sample_dataset, tmp_path):
    folder = tmp_path / "set"
    assert run_script(SCRIPT, folder).returncode == 0
    (folder / "annotations.json").write_text("{}")
    (folder / "images" / "shape_101.jpg").unlink()
    reused = run_script(SCRIPT, folder)
    assert reused.returncode == 0 and "reused" in reused.stdout
    assert (folder / "annotations.json").read_text() == "{}"
    assert not (folder / "images" / "shape_101.jpg").exists()
    rewritten = run_script(SCRIPT, folder, "--overwrite")
    assert rewritten.returncode == 0 and "wrote 12 images" in rewritten.stdout
    assert all_files(folder) == all_files(sample_dataset)


@pytest.mark.parametrize("make_bad", ["dir_is_file", "images_is_file"])
def test_bad_output_folder_is_a_one_line_error(tmp_path, make_bad):
    folder = tmp_path / "out"
    if make_bad == "dir_is_file":
        folder.write_text("not a folder")
        culprit = folder
    else:
        folder.mkdir()
        (folder / "images").write_text("not a folder")
        culprit = folder / "images"
    result = run_script(SCRIPT, folder)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert f"({culprit})" in result.stderr and "Traceback" not in result.stderr


def test_help_lists_the_flags():
    result = run_script(SCRIPT, "--help")
    assert result.returncode == 0
    assert "--overwrite" in result.stdout and "DEFAULT_SELECTION" in result.stdout
