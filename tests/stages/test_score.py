"""score_images.py on the tiny models with both detectors: the files it writes, resume after
SIGKILL, batch size and process count that do not change the scores, thresholds that re-judge
with no model, and one-line errors for bad input."""

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from PIL import Image

from cocoaug.picks import read_picks
from cocoaug.quality import Detection, Thresholds, judge
from cocoaug.scores import read_scores
from tests.helpers.scripts import ROOT, run_here, run_python, run_script

SCRIPT = "score_images.py"
DETECTORS = ["owlv2", "grounding-dino"]
LENIENT = ["--min-iou", "0", "--min-detector-score", "0.05", "--min-region-clip", "-1", "--max-extra-objects", "1000"]
LONG_LABEL = "very large brown and white spotted dog with a red collar sitting quietly"  # 13 words: over 16 tokens


def score_flags(out: Path, models: Path, detector: str, *extra) -> list[str]:
    return ["-g", str(out), "-p", str(out / "blip2_post.json"), "--detector", str(models / detector),
            "--clip-model", str(models / "clip"), "--device", "cpu", *map(str, extra)]


def run_score(*flags) -> subprocess.CompletedProcess:
    """The stage in this process: only the tests about a child (SIGKILL, torchrun, its environment) start one."""
    return run_here(SCRIPT, *flags)


def copy_outputs(stage_outputs: Path, target: Path) -> Path:
    shutil.copytree(stage_outputs, target)
    return target


def measured(mode_dir: Path) -> dict:
    """What the models measured per picture: region clips, caption clip, detections."""
    return {name: (np.array([b["region_clip"] for b in e["boxes"]] + [e["caption_clip"]]),
                   [d["label"] for d in e["detections"]],
                   np.array([d["box"] + [d["score"]] for d in e["detections"]]).reshape(-1, 5))
            for name, e in read_scores(mode_dir).items()}


def assert_same_measures(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for name in a:
        assert np.allclose(a[name][0], b[name][0], atol=1e-4), name
        assert a[name][1] == b[name][1], name
        assert np.allclose(a[name][2], b[name][2], atol=1e-4), name


def rejudged(entry: dict, thresholds: Thresholds) -> dict:
    detections = [Detection(d["label"], tuple(d["box"]), d["score"]) for d in entry["detections"]]
    return judge([b["box"] for b in entry["boxes"]], [b["label"] for b in entry["boxes"]], detections,
                 [b["region_clip"] for b in entry["boxes"]], thresholds)


@pytest.fixture(scope="module")
def references(stage_outputs, tiny_models, tmp_path_factory):
    """``get(detector)``: one uninterrupted run per detector, one picture per batch, made once: (OUT_DIR, its output)."""
    made = {}

    def get(detector: str):
        if detector not in made:
            out = copy_outputs(stage_outputs, tmp_path_factory.mktemp("reference") / "out")
            result = run_score(*score_flags(out, tiny_models, detector, "--mode", "generation", "--batch-size", "1"))
            assert result.returncode == 0, result.stderr
            made[detector] = out, result
        return made[detector]

    return get


@pytest.fixture(params=DETECTORS)
def reference(request, references):
    """(detector, OUT_DIR, its output) of the reference run, for each detector."""
    return (request.param, *references(request.param))


def test_every_picture_gets_judged_scores_csv_summary_and_picks(reference):
    detector, out, result = reference
    manifest = [orjson.loads(line) for line in (out / "generation" / "manifest.jsonl").read_bytes().splitlines()]
    scores = read_scores(out / "generation")
    assert sorted(scores) == sorted(e["file_name"] for e in manifest)
    assert not (out / "inpainting" / "scores.jsonl").exists()  # --mode generation
    assert not list((out / "generation").glob("scores.partial.*"))
    records = {r["image_id"]: r for r in orjson.loads((out / "blip2_post.json").read_bytes())}
    thresholds = Thresholds(0.5, 0.1 if detector == "owlv2" else 0.3, 0.21, 0)
    for name, entry in scores.items():
        record = records[entry["source_image_id"]]
        assert [b["box"] for b in entry["boxes"]] == record["bbox"] and [b["label"] for b in entry["boxes"]] == record["labels"]
        assert all(-1 <= b["region_clip"] <= 1 for b in entry["boxes"]) and -1 <= entry["caption_clip"] <= 1
        verdict = rejudged(entry, thresholds)
        assert [{k: b[k] for k in ("found", "best_iou", "detector_score")} for b in entry["boxes"]] == verdict["boxes"]
        assert (entry["passed"], entry["reasons"], entry["extra_objects"]) == (verdict["passed"], verdict["reasons"], verdict["extra_objects"])
        assert entry["region_clip_percentile"] == min(b["region_clip_percentile"] for b in entry["boxes"])
        assert Path(entry["detector"]).name == detector and Path(entry["clip_model"]).name == "clip"
        assert all(d["score"] >= 0.05 for d in entry["detections"])
    # Percentiles rank each box among the boxes of its category in this mode.
    for category in {b["category_id"] for e in scores.values() for b in e["boxes"]}:
        boxes = sorted((b for e in scores.values() for b in e["boxes"] if b["category_id"] == category), key=lambda b: b["region_clip"])
        assert boxes[-1]["region_clip_percentile"] == 1.0
        assert boxes[0]["region_clip_percentile"] == pytest.approx(1 / len(boxes)) or boxes[0]["region_clip"] == boxes[1]["region_clip"]

    rows = (out / "scores.csv").read_text().splitlines()
    assert len(rows) == 1 + len(scores) and rows[0].startswith("mode,file_name,source_image_id")
    summary = (out / "score_summary.csv").read_text().splitlines()
    assert summary[0] == "category_id,category,mode,pictures,passed,pass_rate,median_region_clip"
    assert sum(int(line.split(",")[3]) for line in summary[1:]) == len(scores)
    assert "pass rate" in result.stdout and f"scored {len(scores)}, reused 0" in result.stdout
    picks = read_picks(out / "picks_passed.json")
    assert [(p.mode, p.file_name) for p in picks.picks] == sorted(("generation", n) for n, e in scores.items() if e["passed"])
    assert picks.provenance["source"] == "score_images.py"
    assert picks.provenance["thresholds"]["min_detector_score"] == thresholds.min_detector_score


def test_resume_after_sigkill_with_another_batch_size_then_new_thresholds_without_models(reference, tiny_models, stage_outputs, tmp_path):
    detector, reference_out, _ = reference
    out = copy_outputs(stage_outputs, tmp_path / "out")
    models = tmp_path / "models"
    for name in (detector, "clip"):
        shutil.copytree(tiny_models / name, models / name)
    flags = score_flags(out, models, detector, "--mode", "generation")

    # 1. Kill a run (SIGKILL: no clean-up) once it has finished its first picture.
    process = subprocess.Popen([sys.executable, str(ROOT / SCRIPT), *flags, "--batch-size", "1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    partial = out / "generation" / "scores.partial.0.jsonl"
    deadline = time.monotonic() + 300
    while not (partial.is_file() and partial.read_bytes().count(b"\n") >= 1) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "generation" / "scores.jsonl").exists(), "the run ended before it could be killed"
    done = partial.read_bytes().count(b"\n")
    assert done >= 1

    # 2. The rerun scores only the rest, three pictures per batch, and ends with the same scores.
    result = run_score(*flags, "--batch-size", "3")
    assert result.returncode == 0, result.stderr
    total = len(read_scores(reference_out / "generation"))
    assert f"scored {total - done}, reused {done} unchanged" in result.stdout
    assert not partial.exists()
    assert_same_measures(measured(out / "generation"), measured(reference_out / "generation"))

    # 3. New thresholds: nothing is measured again (the weights are gone), only the verdicts change.
    before = read_scores(out / "generation")
    for name in (detector, "clip"):
        (models / name / "model.safetensors").unlink()
    result = run_score(*flags, *LENIENT)
    assert result.returncode == 0, result.stderr
    assert f"scored 0, reused {total} unchanged" in result.stdout
    after = read_scores(out / "generation")
    lenient = Thresholds(0.0, 0.05, -1.0, 1000)
    for name, entry in after.items():
        old = before[name]
        for key in ("sha256", "caption_clip", "detections", "detections_min_score"):
            assert entry[key] == old[key], key
        assert [b["region_clip"] for b in entry["boxes"]] == [b["region_clip"] for b in old["boxes"]]
        assert entry["passed"] == rejudged(entry, lenient)["passed"]
    assert sum(e["passed"] for e in after.values()) > sum(e["passed"] for e in before.values())
    assert read_picks(out / "picks_passed.json").provenance["thresholds"]["min_region_clip"] == -1.0

    # 4. A threshold below the detections kept cannot be judged from the file: the models are needed.
    result = run_score(*flags, "--min-detector-score", "0.01")
    assert result.returncode == 2 and "cannot load the model" in result.stderr


def test_a_changed_picture_is_scored_again_and_overwrite_rescores_all(references, tiny_models, tmp_path):
    detector = "owlv2"  # the resume rule does not depend on the detector
    reference_out, _ = references(detector)
    out = copy_outputs(reference_out, tmp_path / "out")
    flags = score_flags(out, tiny_models, detector, "--mode", "generation")
    written = [out / "generation" / "scores.jsonl", out / "scores.csv", out / "score_summary.csv", out / "picks_passed.json"]
    result = run_score(*flags)  # the copy's picks file still names the reference's folder: rewritten
    assert result.returncode == 0 and "scored 0, reused 8 unchanged" in result.stdout, result.stderr
    assert read_picks(out / "picks_passed.json").generated_dir == str(out.resolve())
    stamps = [path.stat().st_mtime_ns for path in written]
    result = run_score(*flags)
    assert result.returncode == 0 and "scored 0, reused 8 unchanged" in result.stdout, result.stderr
    assert [path.stat().st_mtime_ns for path in written] == stamps  # nothing new: nothing rewritten

    changed = sorted((out / "generation").glob("*.png"))[0]
    Image.new("RGB", Image.open(changed).size, (255, 0, 0)).save(changed)
    result = run_score(*flags)
    assert result.returncode == 0, result.stderr
    total = len(read_scores(out / "generation"))
    assert f"scored 1, reused {total - 1} unchanged" in result.stdout
    assert read_scores(out / "generation")[changed.name]["sha256"] != read_scores(reference_out / "generation")[changed.name]["sha256"]
    result = run_score(*flags, "--overwrite")
    assert f"scored {total}, reused 0" in result.stdout


def test_a_torn_last_partial_line_is_scored_again_and_nothing_is_lost(references, tiny_models, tmp_path):
    """Issue 18 case 4: a kill in mid-write leaves the partial file's last line cut short. The rerun drops
    that line with a note, scores its picture again, and does not glue its first new line onto the
    fragment: every picture ends scored (it was 42 pictures, 41 scored)."""
    reference_out, _ = references("owlv2")
    out = copy_outputs(reference_out, tmp_path / "out")
    scores = out / "generation" / "scores.jsonl"
    lines = scores.read_bytes().splitlines()
    scores.unlink()
    partial = out / "generation" / "scores.partial.0.jsonl"
    partial.write_bytes(b"".join(line + b"\n" for line in lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    result = run_score(*score_flags(out, tiny_models, "owlv2", "--mode", "generation"))
    assert result.returncode == 0, result.stderr
    assert f"scored 1, reused {len(lines) - 1} unchanged" in result.stdout
    assert "cut short by an interrupted run" in result.stderr
    assert sorted(read_scores(out / "generation")) == sorted(read_scores(reference_out / "generation"))
    assert_same_measures(measured(out / "generation"), measured(reference_out / "generation"))
    assert not partial.exists()


def test_two_processes_give_the_scores_of_one(references, stage_outputs, tiny_models, tmp_path):
    detector = "owlv2"  # the split does not depend on the detector
    reference_out, _ = references(detector)
    out = copy_outputs(stage_outputs, tmp_path / "out")
    flags = score_flags(out, tiny_models, detector, "--mode", "generation", "--batch-size", "1")
    result = run_python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", ROOT / SCRIPT, *flags, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "rank 0: scored 4" in result.stdout and "rank 1: scored 4" in result.stdout
    assert_same_measures(measured(out / "generation"), measured(reference_out / "generation"))
    ours, theirs = read_scores(out / "generation"), read_scores(reference_out / "generation")
    assert {n: e["passed"] for n, e in ours.items()} == {n: e["passed"] for n, e in theirs.items()}
    assert (out / "picks_passed.json").is_file() and len((out / "scores.csv").read_text().splitlines()) == 1 + len(ours)


# ---------------------------------------------------------------- bad input


def test_bad_input_is_one_error_line(stage_outputs, tiny_models, tmp_path):
    def expect_error(out, *extra, message, detector="owlv2", records=None):
        flags = score_flags(out, tiny_models, detector, "--mode", "generation", *extra)
        if records is not None:
            flags[flags.index("-p") + 1] = str(records)
        result = run_score(*flags)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and message in lines[-1], lines
        assert "Traceback" not in result.stderr

    no_manifest = copy_outputs(stage_outputs, tmp_path / "no_manifest")
    (no_manifest / "generation" / "manifest.jsonl").unlink()
    expect_error(no_manifest, message="no manifest.jsonl")

    other_records = copy_outputs(stage_outputs, tmp_path / "other_records")
    records = orjson.loads((other_records / "blip2_post.json").read_bytes())
    (tmp_path / "fewer.json").write_bytes(orjson.dumps(records[1:]))
    expect_error(other_records, records=tmp_path / "fewer.json", message="has no record")
    moved = [{**r, "bbox": [[x0, y0, (x0 + x1) / 2, y1] for x0, y0, x1, y1 in r["bbox"]]} for r in records]
    (tmp_path / "moved.json").write_bytes(orjson.dumps(moved))
    expect_error(other_records, records=tmp_path / "moved.json", message="differ from those of the record")

    expect_error(other_records, detector="clip", message="not a zero-shot object detector (model_type 'clip')")
    expect_error(other_records, detector="no-such-model", message="model folder does not exist")

    pictures = tmp_path / "picked"
    pictures.mkdir()
    for png in (stage_outputs / "generation").glob("*.png"):
        shutil.copy(png, pictures)
    flags = score_flags(other_records, tiny_models, "owlv2")
    flags[flags.index("-g") + 1] = str(pictures)
    result = run_score(*flags)
    assert result.returncode == 2 and "not stage 2's OUT_DIR" in result.stderr
    assert sorted(p.name for p in pictures.iterdir()) == sorted(p.name for p in (stage_outputs / "generation").glob("*.png"))
    expect_error(other_records, records=other_records / "picks_passed.json", message="is one of the files score_images.py writes")

    broken = copy_outputs(stage_outputs, tmp_path / "broken")
    png = sorted((broken / "generation").glob("*.png"))[0]
    png.write_bytes(b"not a png")
    expect_error(broken, message="cannot read image")
    assert not (broken / "generation" / "scores.jsonl").exists()


def test_a_hub_model_offline_is_one_error_line(stage_outputs, tiny_models, tmp_path):
    out = copy_outputs(stage_outputs, tmp_path / "out")
    flags = ["-g", str(out), "-p", str(out / "blip2_post.json"), "--mode", "generation",
             "--clip-model", str(tiny_models / "clip"), "--device", "cpu"]  # the default detector, a hub id
    result = run_script(SCRIPT, *flags, timeout=600,
                        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty_cache")})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot load the model") and last.endswith("(google/owlv2-base-patch16-ensemble)")
    assert not (out / "generation" / "scores.jsonl").exists()


# ---------------------------------------------------------------- safety checker and long texts


def set_manifest_model(mode_dir: Path, model):
    """Say in the manifest that ``model`` made the pictures, as stage 2 records it."""
    path = mode_dir / "manifest.jsonl"
    entries = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    path.write_bytes(b"".join(orjson.dumps({**entry, "model": str(model)}) + b"\n" for entry in entries))


def test_the_generators_safety_checker_runs_and_a_flagged_picture_fails_with_nsfw(stage_outputs, tiny_models, tmp_path):
    out = copy_outputs(stage_outputs, tmp_path / "out")
    generator = tiny_models / "gligen-generation"
    set_manifest_model(out / "generation", generator)
    flags = score_flags(out, tiny_models, "owlv2", "--mode", "generation", "--limit", "3", *LENIENT)  # 3 pictures: flagged or not, all alike

    result = run_score(*flags)  # the generator's own checker, which flags nothing
    assert result.returncode == 0, result.stderr
    scores = read_scores(out / "generation")
    assert len(scores) == 3 and all(e["nsfw"] is False and e["safety_checker"] == str(generator) for e in scores.values())
    assert "safety checker: 0 of 3 checked pictures flagged" in result.stdout
    passed = {name for name, e in scores.items() if e["passed"]}
    assert passed

    result = run_score(*flags, "--safety-checker", tiny_models / "safety-checker-flags-all")
    assert result.returncode == 0, result.stderr
    assert "scored 3, reused 0" in result.stdout  # another checker: measured again
    assert "safety checker: 3 of 3 checked pictures flagged" in result.stdout
    flagged = read_scores(out / "generation")
    assert all(e["nsfw"] is True and e["reasons"][0] == "nsfw" and not e["passed"] for e in flagged.values())
    assert read_picks(out / "picks_passed.json").picks == []
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(row["passed"] == "False" and orjson.loads(row["reasons"])[0] == "nsfw" for row in rows)

    result = run_score(*flags, "--no-safety-checker")
    assert result.returncode == 0, result.stderr
    unchecked = read_scores(out / "generation")
    assert not any("nsfw" in e or "safety_checker" in e for e in unchecked.values())
    assert {name for name, e in unchecked.items() if e["passed"]} == passed and "safety checker" not in result.stdout

    result = run_score(*flags, "--safety-checker", tmp_path / "no-such-checker")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == f"error: model folder does not exist ({tmp_path / 'no-such-checker'})"


@pytest.fixture(scope="module")
def unchecked_long_labels(stage_outputs, tiny_models, tmp_path_factory):
    """(OUT_DIR, its output) of one run on two pictures whose generator, "tiny" in the manifest, is no folder
    here, and whose labels are all one label too long for OWLv2's 16 tokens."""
    out = copy_outputs(stage_outputs, tmp_path_factory.mktemp("unchecked") / "out")
    records = orjson.loads((out / "blip2_post.json").read_bytes())
    records = [{**r, "labels": [LONG_LABEL] * len(r["labels"]), "label": LONG_LABEL} for r in records]
    (out / "blip2_post.json").write_bytes(orjson.dumps(records))
    result = run_score(*score_flags(out, tiny_models, "owlv2", "--mode", "generation", "--limit", "2"))
    assert result.returncode == 0, result.stderr
    return out, result


def test_a_generator_without_a_safety_checker_is_said_once(unchecked_long_labels):
    out, result = unchecked_long_labels
    assert result.stderr.count("the generator model(s) tiny: not found here or without a safety_checker") == 1
    scores = read_scores(out / "generation")
    assert len(scores) == 2 and not any("nsfw" in e or "safety_checker" in e for e in scores.values())


def test_an_owlv2_query_over_16_tokens_is_truncated_with_a_note(unchecked_long_labels):
    out, result = unchecked_long_labels
    assert "Traceback" not in result.stderr
    assert "1 OWLv2 query(s) are longer than the model's 16 tokens and are truncated" in result.stderr
    scores = read_scores(out / "generation")
    assert len(scores) == 2 and all(b["label"] == LONG_LABEL for e in scores.values() for b in e["boxes"])


def test_a_hub_generator_offline_is_one_error_line_naming_the_safety_checker_flags(stage_outputs, tiny_models, tmp_path):
    out = copy_outputs(stage_outputs, tmp_path / "out")
    set_manifest_model(out / "generation", "masterful/gligen-1-4-generation-text-box")
    result = run_script(SCRIPT, *score_flags(out, tiny_models, "owlv2", "--mode", "generation"), timeout=600,
                        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty_cache")})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot look for the generator's safety checker") and "--no-safety-checker" in last
    assert last.endswith("(masterful/gligen-1-4-generation-text-box)")
    assert not (out / "generation" / "scores.jsonl").exists()
