"""Hand-edited and hostile input files through the real scripts (issue 18): exit code 2, one `error:` line
naming the file, the entry and the field, no traceback, and nothing written outside -o (nor inside it)."""

import json
import shutil

import orjson
import pytest

from cocoaug.records import MAX_VARIANTS
from tests.helpers.scripts import run_finalize, run_here, tree_hashes
from tests.helpers.stage_inputs import STAGE2_FAST, write_inputs
from tests.helpers.stage_outputs import make_scores


def one_error_line(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def files_under(folder) -> list:
    return sorted(p for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("changes, message", [
    ({"category_id": "../../../ESCAPED"}, "record 1 (image_id 2): category_id must be an integer, got '../../../ESCAPED'"),
    ({"category_id": "3/sub"}, "record 1 (image_id 2): category_id must be an integer, got '3/sub'"),
    ({"category_id": None}, "record 1 (image_id 2): category_id must be an integer, got None"),
    ({"category_ids": ["3", "5"]}, "record 1 (image_id 2): category_ids[0] must be an integer, got '3'"),
    ({"labels": [None, None]}, "record 1 (image_id 2): labels[0] must be a string, got None"),
    ({"variants": 1000000000}, f"record 1 (image_id 2): variants must be an integer <= {MAX_VARIANTS}, got 1000000000"),
    ({"bbox": [["0.1", "0.2", "0.5", "0.6"], [0.5, 0.1, 0.9, 0.9]]}, "record 1 (image_id 2): bbox[0][0] must be a number, got '0.1'"),
])
def test_stage2_refuses_a_hostile_record_before_writing_or_loading_anything(tmp_path, changes, message):
    images, prompts = write_inputs(tmp_path / "in")
    records = json.loads(prompts.read_text())
    records[1].update(changes)
    prompts.write_text(json.dumps(records))
    out = tmp_path / "deep" / "er" / "out"
    before = tree_hashes(tmp_path)
    # --overwrite too: the run that replaced ESCAPED_0101.png three levels above -o; no model exists at --model
    result = run_here("generate_image_gligen.py", "--mode", "generation", "-i", images, "-p", prompts, "-o", out,
                        "--model", tmp_path / "no_model", *STAGE2_FAST, "--overwrite")
    assert one_error_line(result) == f"error: {message} ({prompts})"
    assert tree_hashes(tmp_path) == before and not (tmp_path / "deep").exists()


def test_stage2_variants_flag_is_capped(tmp_path):
    images, prompts = write_inputs(tmp_path / "in")
    result = run_here("generate_image_gligen.py", "--mode", "generation", "-i", images, "-p", prompts, "-o", tmp_path / "out",
                        "--variants", MAX_VARIANTS + 1)
    assert one_error_line(result) == f"error: must be at most {MAX_VARIANTS} (--variants {MAX_VARIANTS + 1})"


def test_stage2_refuses_a_hand_edited_manifest_before_loading_the_model(tmp_path, stage_outputs, sample_dataset, tiny_models):
    out = tmp_path / "out"
    shutil.copytree(stage_outputs, out)
    manifest = out / "generation" / "manifest.jsonl"
    lines = manifest.read_bytes().splitlines()
    entry = orjson.loads(lines[1])
    lines[1] = orjson.dumps({**entry, "source_image_id": "7", "boxes": "x"})
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    before = tree_hashes(out)
    result = run_here("generate_image_gligen.py", "--mode", "generation", "-i", sample_dataset / "images", "-p",
                        out / "blip2_post.json", "-o", out, "--model", tiny_models / "gligen-generation", *STAGE2_FAST)
    assert one_error_line(result) == (f"error: line 2 of the manifest ({entry['file_name']}): source_image_id must be an "
                                      f"integer, got '7' ({manifest})")
    assert tree_hashes(out) == before


def test_stage3_refuses_a_hand_edited_scores_file(tmp_path, stage_outputs):
    out = tmp_path / "out"
    shutil.copytree(stage_outputs, out)
    make_scores(out)
    scores = out / "inpainting" / "scores.jsonl"
    lines = scores.read_bytes().splitlines()
    entry = orjson.loads(lines[0])
    entry["boxes"][0]["region_clip"] = "high"
    lines[0] = orjson.dumps(entry)
    scores.write_bytes(b"\n".join(lines) + b"\n")
    result = run_here("draw_bboxes.py", "-g", out, "-p", out / "blip2_post.json", "-o", tmp_path / "boxes")
    assert one_error_line(result) == (f"error: line 1 of the scores file ({entry['file_name']}): boxes[0].region_clip must "
                                      f"be a number, got 'high' ({scores})")
    assert not (tmp_path / "boxes").exists()


@pytest.mark.parametrize("line, message", [
    ({"caption_clip": "0.3"}, "caption_clip must be a number or null, got '0.3'"),
    ({"file_name": "../../x.png"}, "file_name climbs out of the image folder with '..', got '../../x.png'"),
    ({"detections": [{"label": "dog", "box": [0, 0, 1], "score": 0.2}]}, "detections[0].box must be a list of length 4, got [0, 0, 1]"),
])
def test_scorer_refuses_a_hand_edited_partial_file_before_loading_a_model(tmp_path, stage_outputs, tiny_models, line, message):
    out = tmp_path / "out"
    shutil.copytree(stage_outputs, out)
    make_scores(out)
    entry = {**orjson.loads((out / "generation" / "scores.jsonl").read_bytes().splitlines()[0]), **line}
    partial = out / "generation" / "scores.partial.0.jsonl"
    partial.write_bytes(orjson.dumps(entry) + b"\n")
    before = tree_hashes(out)
    result = run_here("score_images.py", "-g", out, "-p", out / "blip2_post.json", "--detector", tiny_models / "owlv2",
                        "--clip-model", tiny_models / "clip", "--mode", "generation", "--device", "cpu")
    error = one_error_line(result)
    assert error == f"error: line 1 of the partial scores file ({entry['file_name']}): {message} ({partial})", error
    assert tree_hashes(out) == before


@pytest.mark.parametrize("pick, message", [
    ({"mode": "generation", "file_name": "../../../ESCAPED.png"}, "picks[0]: file_name climbs out of the image folder with '..'"),
    ({"mode": "../generation", "file_name": "x.png"}, "picks[0]: mode climbs out of the image folder with '..'"),
    ({"mode": "generation", "file_name": "a\x00.png"}, "picks[0]: file_name holds a NUL byte"),
    ({"mode": "generation", "file_name": None}, "picks[0].file_name must be a string, got None"),
])
def test_stage4_refuses_a_hostile_picks_file(tmp_path, stage_outputs, sample_dataset, pick, message):
    picks = tmp_path / "picks.json"
    picks.write_text(json.dumps({"format": "cocoaug-picks", "version": 1, "picks": [pick]}))
    result = run_finalize(sample_dataset, stage_outputs, None, tmp_path / "final", "--picks", picks)
    error = one_error_line(result)
    assert error.startswith(f"error: {message}") and error.endswith(f"({picks})"), error
    assert files_under(tmp_path / "final") == [] and files_under(tmp_path) == [picks]


def test_stage3_leaves_out_a_hostile_picks_passed_file_with_a_warning(tmp_path, stage_outputs):
    """picks_passed.json only says where the review page starts: one that breaks the schema is warned about, not used."""
    out = tmp_path / "out"
    shutil.copytree(stage_outputs, out)
    (out / "picks_passed.json").write_text(json.dumps({"picks": [{"mode": "..", "file_name": "x.png"}]}))
    result = run_here("draw_bboxes.py", "-g", out, "-p", out / "blip2_post.json", "-o", tmp_path / "boxes")
    assert result.returncode == 0, result.stderr
    assert "the review page does not start from" in result.stderr and "picks[0]: mode climbs out" in result.stderr
    assert (tmp_path / "boxes" / "review.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boxes", "out"]
