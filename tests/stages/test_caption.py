"""Stage 1 captioning with the tiny random-weight BLIP-2 on the sample set: batching, resume,
outputs, sizes, missing and corrupt files, model errors."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cocoaug.records import load_records
from tests.helpers.scripts import run_here
from tests.helpers.stage_inputs import write_coco

SCRIPT = "generate_prompt_blip2.py"
FAST = ["--max-new-tokens", "8", "--device", "cpu", "--dtype", "float32"]
MANY = ["--allow-multi-category", "--max-objects", "10"]  # most of the sample set, every image mode


@pytest.fixture(scope="module")
def blip2(tiny_models) -> Path:
    return tiny_models / "blip2"


def caption(sample, out, model, *flags):
    result = run_here(SCRIPT, "-i", sample / "images", "-a", sample / "annotations.json", "-o", out, "--model", model, *FAST, *flags)
    assert result.returncode == 0, result.stderr
    return result


def texts(path) -> dict:
    return {r["image_id"]: r["generated_text"] for r in load_records(path)}


@pytest.fixture(scope="module")
def batched_run(sample_dataset, blip2, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("caption") / "batched"
    caption(sample_dataset, out, blip2, *MANY, "--batch-size", "4", "--num-workers", "2")
    return out


def test_batched_captions_equal_one_by_one(sample_dataset, blip2, batched_run, tmp_path):
    caption(sample_dataset, tmp_path / "single", blip2, *MANY, "--batch-size", "1", "--num-workers", "0")
    batched, single = texts(batched_run / "blip2.json"), texts(tmp_path / "single" / "blip2.json")
    assert len(batched) >= 9 and batched == single
    assert any(text.strip() for text in batched.values()), "the tiny model should say something"


def test_full_run_writes_valid_records_selected_originals_and_coco(sample_dataset, batched_run):
    from pycocotools.coco import COCO

    final = load_records(batched_run / "blip2_post.json")
    raw = load_records(batched_run / "blip2.json")
    assert [r["image_id"] for r in final] == sorted(r["image_id"] for r in final)
    assert {r["image_id"] for r in final} <= {r["image_id"] for r in raw}
    for record in final:
        original = sample_dataset / "images" / record["file_name"]
        copy = batched_run / "selected" / record["file_name"]
        assert copy.read_bytes() == original.read_bytes()
        with Image.open(original) as image:
            assert image.size == (record["width"], record["height"])
    coco = COCO(str(batched_run / "selected" / "selected.json"))
    assert sorted(coco.getImgIds()) == [r["image_id"] for r in final]
    source = json.loads((sample_dataset / "annotations.json").read_text())
    expected = [a for a in source["annotations"] if a["image_id"] in coco.getImgIds()]
    assert sorted(coco.getAnnIds()) == sorted(a["id"] for a in expected)
    assert coco.loadCats(coco.getCatIds()) == source["categories"]


def test_interrupted_run_resumes_from_the_partial_file(sample_dataset, blip2, batched_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    lines = (batched_run / "blip2.partial.jsonl").read_bytes().splitlines()
    first = [json.loads(line) for line in lines[:3]]
    first[0]["generated_text"] = "a cached caption"  # proves that it is reused, not made again
    # A run killed mid-write leaves a cut last line: it is ignored.
    (out / "blip2.partial.jsonl").write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in first) + lines[3][:20])
    result = caption(sample_dataset, out, blip2, *MANY, "--batch-size", "4")
    assert "captions reused from blip2.partial.jsonl         3" in result.stdout
    made = len(texts(batched_run / "blip2.json")) - 3
    assert re.search(rf"^  captioned +{made}$", result.stdout, re.M), result.stdout
    expected = texts(batched_run / "blip2.json")
    expected[first[0]["image_id"]] = "a cached caption"
    assert texts(out / "blip2.json") == expected
    # Captions made with another prompt are not reused.
    (tmp_path / "other").mkdir()
    shutil.copy(out / "blip2.partial.jsonl", tmp_path / "other")
    other = caption(sample_dataset, tmp_path / "other", blip2, *MANY, "--prompt", "a photo of", "--limit", "2")
    assert "reused from blip2.partial.jsonl         0" in other.stdout


def test_size_in_annotations_that_disagrees_with_the_file_is_corrected(sample_dataset, blip2, tmp_path):
    coco = json.loads((sample_dataset / "annotations.json").read_text())
    image = next(i for i in coco["images"] if i["id"] == 106)  # 256 x 256 on disk
    image["width"], image["height"] = 512, 384
    annotations = tmp_path / "annotations.json"
    annotations.write_text(json.dumps(coco))
    result = run_here(SCRIPT, "-i", sample_dataset / "images", "-a", annotations, "-o", tmp_path / "out",
                        "--model", blip2, *FAST, "--missing-label", "keep")
    assert result.returncode == 0, result.stderr
    assert "the annotation file says 512x384, the file is 256x256" in result.stderr
    record = next(r for r in load_records(tmp_path / "out" / "blip2_post.json") if r["image_id"] == 106)
    assert (record["width"], record["height"]) == (256, 256)
    boxes = np.array([a["bbox"] for a in coco["annotations"] if a["image_id"] == 106], dtype=float)
    expected = np.clip(np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1) / 256, 0, 1)
    assert np.allclose(record["bbox"], expected)


def test_missing_files_are_listed_in_one_error_or_skipped(blip2, tmp_path):
    pictures = {i: (f"missing_{i:02d}.jpg", 64, 48, [(3, [5, 5, 20, 20], 0)]) for i in range(1, 26)}
    annotations = write_coco(tmp_path, pictures)
    images = tmp_path / "images"
    images.mkdir()
    result = run_here(SCRIPT, "-i", images, "-a", annotations, "-o", tmp_path / "out", "--model", blip2, *FAST)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: 25 image file(s) not found")
    assert "missing_01.jpg" in result.stderr and "missing_10.jpg" in result.stderr
    assert "missing_11.jpg" not in result.stderr and "and 15 more" in result.stderr
    skipped = run_here(SCRIPT, "-i", images, "-a", annotations, "-o", tmp_path / "out", "--model", blip2, *FAST, "--skip-missing")
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped: missing image file" in skipped.stdout and "25" in skipped.stdout
    assert json.loads((tmp_path / "out" / "blip2_post.json").read_text()) == []


def test_corrupt_image_stops_with_its_name_or_is_skipped(sample_dataset, blip2, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(sample_dataset / "images", images)
    coco = json.loads((sample_dataset / "annotations.json").read_text())
    target = images / next(i["file_name"] for i in coco["images"] if i["id"] == 101)
    target.write_bytes(target.read_bytes()[:300])  # a truncated JPEG
    result = run_here(SCRIPT, "-i", images, "-a", sample_dataset / "annotations.json", "-o", tmp_path / "out", "--model", blip2, *FAST)
    assert result.returncode == 2 and "cannot read image" in result.stderr and target.name in result.stderr
    assert "Traceback" not in result.stderr
    skipped = run_here(SCRIPT, "-i", images, "-a", sample_dataset / "annotations.json", "-o", tmp_path / "out",
                         "--model", blip2, *FAST, "--skip-missing")
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped: unreadable image" in skipped.stdout
    assert 101 not in texts(tmp_path / "out" / "blip2.json")


@pytest.mark.parametrize("file_name, message", [
    ("../outside.jpg", "climbs out of the image folder"),
    ("/etc/passwd", "is an absolute path"),
])
def test_file_names_escaping_the_image_folder_are_refused(blip2, tmp_path, file_name, message):
    annotations = write_coco(tmp_path, {1: (file_name, 64, 48, [(3, [5, 5, 20, 20], 0)])})
    images = tmp_path / "images"
    images.mkdir()
    result = run_here(SCRIPT, "-i", images, "-a", annotations, "-o", tmp_path / "out", "--model", blip2, *FAST)
    assert result.returncode == 2 and message in result.stderr and file_name in result.stderr


def test_model_errors_are_user_errors(sample_dataset, tiny_models, tmp_path):
    base = ["-i", sample_dataset / "images", "-a", sample_dataset / "annotations.json", "-o", tmp_path / "out"]
    cases = [
        (["--model", tmp_path / "no_such_model"], "error: model folder does not exist"),
        (["--model", tiny_models / "gligen-generation"], "error: "),
        (["--model", tiny_models / "blip2", "--load-in-8bit"], "error: --load-in-8bit needs the bitsandbytes package"),
    ]
    for flags, message in cases:
        result = run_here(SCRIPT, *base, *flags)
        assert result.returncode == 2 and result.stderr.startswith(message), result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "blip2.json").exists()


def test_dtype_and_device_flags(sample_dataset, blip2, tmp_path):
    base = ["-i", sample_dataset / "images", "-a", sample_dataset / "annotations.json", "--model", blip2,
            "--max-new-tokens", "4", "--limit", "2"]
    result = run_here(SCRIPT, *base, "-o", tmp_path / "bf16", "--dtype", "bfloat16", "--device", "auto", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert len(load_records(tmp_path / "bf16" / "blip2.json")) == 2
    import torch

    if not torch.cuda.is_available():
        missing = run_here(SCRIPT, *base, "-o", tmp_path / "cuda", "--device", "cuda")
        assert missing.returncode == 2 and missing.stderr.startswith("error: CUDA is not available"), missing.stderr
