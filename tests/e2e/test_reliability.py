"""Across the whole pipeline: awkward real-world files go through every stage, inputs are never
modified, and no script writes into a folder it reads from."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers.scripts import run_here

pytestmark = pytest.mark.slow
TINY_RUN = ["--device", "cpu", "--dtype", "float32"]
# Above PIL's default decompression-bomb limit (89.5 million pixels), which would refuse it.
LARGE_SIZE = (10_000, 9_000)


def tree_digest(folder: Path) -> dict:
    """Every file under ``folder`` with its size, modification time and content hash."""
    digest = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
    return digest


@pytest.fixture(scope="module")
def awkward_dataset(tmp_path_factory) -> Path:
    """A COCO set of the files real datasets hold: CMYK JPEG, 16-bit, palette, a name with spaces
    and non-ASCII letters in a subfolder, and one very large picture."""
    root = tmp_path_factory.mktemp("awkward") / "dataset"
    images = root / "images"
    (images / "sub dir").mkdir(parents=True)
    files = [
        ("cmyk.jpg", Image.new("CMYK", (96, 64), (0, 200, 200, 0)), [[10, 10, 30, 20]]),
        ("depth16.png", Image.new("I;16", (64, 80), 40000), [[5, 5, 20, 40]]),
        ("palette.png", Image.new("P", (120, 40), 3), [[60, 2, 50, 30], [2, 2, 20, 20]]),
        ("sub dir/Café au lait ü.png", Image.new("RGB", (70, 70), (120, 80, 40)), [[20, 20, 30, 30]]),
        ("large.png", Image.new("RGB", LARGE_SIZE, (30, 120, 30)), [[2000, 1500, 4000, 3000]]),
    ]
    coco = {"images": [], "annotations": [], "categories": [{"id": 4, "name": "cup"}]}
    for image_id, (name, image, boxes) in enumerate(files, start=1):
        image.save(images / name, compress_level=1)  # PNG: the large one saves in a second, not ten
        coco["images"].append({"id": image_id, "file_name": name, "width": image.width, "height": image.height})
        for box in boxes:
            coco["annotations"].append({"id": 100 * image_id + len(coco["annotations"]), "image_id": image_id, "category_id": 4,
                                        "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    (root / "annotations.json").write_text(json.dumps(coco, ensure_ascii=False), encoding="utf-8")
    return root


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the test's own look at the large output
def test_awkward_files_go_through_every_stage_and_inputs_stay_untouched(awkward_dataset, tiny_models, tmp_path):
    from pycocotools.coco import COCO

    images, annotations = awkward_dataset / "images", awkward_dataset / "annotations.json"
    before = tree_digest(awkward_dataset)
    out, boxes, final = tmp_path / "out", tmp_path / "boxes", tmp_path / "final"

    result = run_here("generate_prompt_blip2.py", "-i", images, "-a", annotations, "-o", out, "--model", tiny_models / "blip2",
                        "--max-new-tokens", "6", "--missing-label", "prepend", *TINY_RUN)
    assert result.returncode == 0, result.stderr
    records = json.loads((out / "blip2_post.json").read_text(encoding="utf-8"))
    assert sorted(r["image_id"] for r in records) == [1, 2, 3, 4, 5]

    result = run_here("generate_image_gligen.py", "--mode", "inpainting", "-i", images, "-p", out / "blip2_post.json", "-o", out,
                        "--model", tiny_models / "gligen-inpainting", "--steps", "2", "--resolution", "64", "--batch-size", "5", *TINY_RUN)
    assert result.returncode == 0, result.stderr
    made = sorted((out / "inpainting").glob("*.png"))
    assert len(made) == 5
    with Image.open(out / "inpainting" / "4_0005.png") as large:
        assert large.size == LARGE_SIZE
        # Only the box is redrawn: a corner of the large picture keeps the original colour.
        assert large.getpixel((100, 100)) == (30, 120, 30)

    result = run_here("draw_bboxes.py", "-g", out, "-p", out / "blip2_post.json", "-o", boxes, "-i", images)
    assert result.returncode == 0, result.stderr
    selected = tmp_path / "selected"
    selected.mkdir()
    for path in made:
        shutil.copy(path, selected / path.name)
    result = run_here("finalize_selected_images.py", "--original_annotation", annotations, "--original_data_root", images,
                        "-g", out, "-i", selected, "-o", final, "--merge")
    assert result.returncode == 0, result.stderr
    coco = COCO(str(final / "annotations.json"))
    names = {image["file_name"] for image in coco.dataset["images"]}
    assert "original/sub dir/Café au lait ü.png" in names and len(names) == 10
    for image in coco.dataset["images"]:
        with Image.open(final / "images" / image["file_name"]) as picture:
            assert picture.size == (image["width"], image["height"])

    assert tree_digest(awkward_dataset) == before


def test_no_script_writes_into_a_folder_it_reads(awkward_dataset, stage_outputs, tiny_models, tmp_path):
    images, annotations = awkward_dataset / "images", awkward_dataset / "annotations.json"
    before = tree_digest(awkward_dataset)
    cases = [
        ("generate_prompt_blip2.py", ["-i", images, "-a", annotations, "-o", images, "--select-only"], images),
        ("generate_image_gligen.py", ["--mode", "generation", "-i", images, "-p", stage_outputs / "blip2_post.json", "-o", images,
                                      "--model", tiny_models / "gligen-generation"], images),
        ("draw_bboxes.py", ["-g", stage_outputs, "-p", stage_outputs / "blip2_post.json", "-o", stage_outputs], stage_outputs),
        ("finalize_selected_images.py", ["--original_annotation", annotations, "--original_data_root", images, "-g", stage_outputs,
                                         "-i", stage_outputs / "generation", "-o", images], images),
    ]
    for script, args, culprit in cases:
        result = run_here(script, *args)
        assert result.returncode == 2, (script, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(culprit) in lines[0], (script, result.stderr)
    assert tree_digest(awkward_dataset) == before
