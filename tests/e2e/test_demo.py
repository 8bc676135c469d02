"""scripts/demo.sh (make demo): the whole pipeline runs on the sample set with the tiny models and
leaves a COCO dataset that pycocotools loads, pictures of their originals' sizes with their boxes,
a merged training file and a FID figure; a rerun remakes nothing, and after the picked pictures
change it redoes only stage 4 and the FID."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cocoaug.review import read_page_data
from tests.helpers.scripts import run_script

pytestmark = pytest.mark.slow
MODES = ("generation", "inpainting")
SELECTED_IDS = [101, 102, 105, 106, 110, 111, 117]  # the sample set's default selection (make_sample_dataset.py)


def run_demo(demo_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "DEMO_DIR": str(demo_dir)}
    result = run_script("scripts/demo.sh", env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def mtimes(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory, sample_dataset, tiny_models):
    """DEMO_DIR after one run, and that run. The session's sample set and tiny models are copied in
    first, so the demo must reuse them; the FID weights it builds itself."""
    demo_dir = tmp_path_factory.mktemp("demo") / "demo dir"  # a space, to catch unquoted paths
    shutil.copytree(sample_dataset, demo_dir / "sample")
    shutil.copytree(tiny_models, demo_dir / "models")
    return demo_dir, run_demo(demo_dir)


def test_every_stage_ran_and_reused_the_sample_set_and_models(demo):
    demo_dir, run = demo
    assert "reused the existing sample set" in run.stdout
    assert run.stdout.count("reused ") >= 4 and "wrote " + str(demo_dir / "random_fid_inception.pth") in run.stdout
    assert "written to blip2_post.json" in run.stdout
    assert run.stdout.count("generated 7, skipped as existing 0") == 2
    assert "drawn 14, skipped as existing 0" in run.stdout
    assert "scored 14, reused 0 unchanged" in run.stdout and "pictures pass the demo-only thresholds" in run.stdout
    assert (demo_dir / "out" / "score_summary.csv").is_file() and (demo_dir / "out" / "picks_passed.json").is_file()
    assert f"review page: open {demo_dir / 'out' / 'boxes' / 'review.html'} in a browser" in run.stdout
    assert "selected 14 generated images (generation 7, inpainting 7) from 7 originals" in run.stdout
    assert "stage 4  annotations.json: 7 originals + 14 generated images" in run.stdout


def test_some_demo_pictures_pass_and_some_fail(demo):
    """The demo scores with demo-only thresholds the random models can meet, so its review page shows both cases."""
    demo_dir, run = demo
    assert "DEMO-ONLY THRESHOLDS" in (Path(__file__).parents[2] / "scripts" / "demo.sh").read_text()
    verdicts = [json.loads(line)["passed"] for mode in MODES for line in (demo_dir / "out" / mode / "scores.jsonl").read_text().splitlines()]
    assert len(verdicts) == 14 and 0 < sum(verdicts) < 14, verdicts
    page = read_page_data(demo_dir / "out" / "boxes" / "review.html")
    assert {p[3] for card in page["cards"] for p in card["pictures"]} == {0, 1} and page["passed_picks"]


def test_generated_pictures_have_their_originals_sizes_and_boxes(demo):
    demo_dir, _ = demo
    out, original = demo_dir / "out", json.loads((demo_dir / "sample" / "annotations.json").read_text())
    size_of = {image["id"]: (image["width"], image["height"]) for image in original["images"]}
    records = {r["image_id"]: r for r in json.loads((out / "blip2_post.json").read_text())}
    assert sorted(records) == SELECTED_IDS
    for mode in MODES:
        manifest = [json.loads(line) for line in (out / mode / "manifest.jsonl").read_text().splitlines()]
        assert sorted(e["source_image_id"] for e in manifest) == SELECTED_IDS
        for entry in manifest:
            source = entry["source_image_id"]
            assert entry["mode"] == mode and entry["boxes"] == records[source]["bbox"]
            with Image.open(out / mode / entry["file_name"]) as picture:
                assert picture.size == size_of[source], (mode, entry["file_name"])
            assert (out / "boxes" / mode / entry["file_name"]).is_file()
    assert sorted(p.stem for p in (out / "boxes" / "overview").glob("*.png")) == sorted(map(str, SELECTED_IDS))
    page = read_page_data(out / "boxes" / "review.html")
    assert [card["id"] for card in page["cards"]] == SELECTED_IDS and all((out / "boxes" / card["original"]).is_file() for card in page["cards"])


def test_final_annotations_load_in_pycocotools_with_the_originals_boxes(demo):
    from pycocotools.coco import COCO

    demo_dir, _ = demo
    final, original = demo_dir / "out" / "final", json.loads((demo_dir / "sample" / "annotations.json").read_text())
    coco = COCO(str(final / "annotations.json"))
    generated = [image for image in coco.dataset["images"] if "source_image_id" in image]
    assert len(generated) == 14 and len(coco.dataset["images"]) == 21
    assert sorted({image["generation_mode"] for image in generated}) == list(MODES)
    boxes_of = {}
    for ann in original["annotations"]:
        boxes_of.setdefault(ann["image_id"], []).append((ann["category_id"], ann["bbox"]))
    for image in generated:
        source = coco.imgs[image["source_image_id"]]
        assert (image["width"], image["height"]) == (source["width"], source["height"])
        with Image.open(final / "images" / image["file_name"]) as picture:
            assert picture.size == (image["width"], image["height"])
        copied = [(a["category_id"], a["bbox"]) for a in coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))]
        assert sorted(copied) == sorted(boxes_of[image["source_image_id"]])


def test_train_augmented_holds_the_whole_original_file_plus_the_generated_images(demo):
    from pycocotools.coco import COCO

    demo_dir, _ = demo
    sample = demo_dir / "sample"
    original = json.loads((sample / "annotations.json").read_text())
    merged = COCO(str(demo_dir / "out" / "final" / "train_augmented.json")).dataset
    assert merged["images"][: len(original["images"])] == \
           [{**image, "file_name": f"original/{image['file_name']}"} for image in original["images"]]
    assert merged["annotations"][: len(original["annotations"])] == original["annotations"]
    added = merged["images"][len(original["images"]):]
    assert len(added) == 14 and all("source_image_id" in image for image in added)
    final = demo_dir / "out" / "final"
    for image in merged["images"]:  # one image root for both files, as the user trains with it
        with Image.open(final / "images" / image["file_name"]) as picture:
            assert picture.size == (image["width"], image["height"])
    assert (final / "data.yaml").is_file() and len((final / "train_augmented.txt").read_text().splitlines()) == 26


def test_a_fid_figure_is_printed_and_written(demo):
    demo_dir, run = demo
    printed = re.search(r"^FID (\S+) \(dims 64; 12 real, 14 generated images\)$", run.stdout, re.MULTILINE)
    saved = json.loads((demo_dir / "out" / "fid.json").read_text())
    assert printed and math.isfinite(saved["fid"]) and saved["fid"] >= 0
    assert float(printed.group(1)) == pytest.approx(saved["fid"], abs=1e-4)
    assert saved["n_real"] == 12 and saved["n_generated"] == 14 and saved["dims"] == 64


def test_a_rerun_remakes_nothing_and_a_new_pick_remakes_only_stage_4_and_the_fid(demo):
    demo_dir, _ = demo
    before = mtimes(demo_dir)
    rerun = run_demo(demo_dir)
    assert rerun.stdout.count("generated 0, skipped as existing 7") == 2
    assert "drawn 0, skipped as existing 14" in rerun.stdout and "copied 0 pictures" in rerun.stdout
    assert "scored 0, reused 14 unchanged" in rerun.stdout
    assert "reusing" in rerun.stdout and "stage 4  annotations.json: 7 originals + 14 generated images" in rerun.stdout
    changed = {p for p, t in mtimes(demo_dir).items() if before.get(p) != t}
    assert {p.name for p in changed} <= {"manifest.jsonl"}  # stage 2 rebuilds it, with the same content

    deleted = demo_dir / "out" / "picked" / "generation" / "3_0101.png"  # the demo picks it again
    deleted.unlink()
    again = run_demo(demo_dir)
    assert "copied 1 pictures" in again.stdout and deleted.is_file()
    assert again.stdout.count("generated 0, skipped as existing 7") == 2
    assert "selected 14 generated images" in again.stdout and re.search(r"^FID \S+ ", again.stdout, re.MULTILINE)
    remade = {p.relative_to(demo_dir).as_posix() for p, t in mtimes(demo_dir).items()
              if before.get(p) != t and p.name != "manifest.jsonl"}
    assert {"out/picked/generation/3_0101.png", "out/final/annotations.json", "out/fid.json"} <= remade
    assert not any(p.startswith(("out/boxes/", "out/generation/", "out/inpainting/", "sample/", "models/")) for p in remade)
