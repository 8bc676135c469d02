"""Failures of the machine, not of the code (issue 18): a read-only output folder, an output path that
is a file, a full disk, an image too large to open, a pass-rates file that is not text. Each ends
with exit code 2 and one ``error:`` line naming the path and what to do, never a traceback. The
file-system failures are real: tmpfs mounts in a private mount namespace (tests/helpers/mounts.py)."""

import shutil
import struct
import zlib
from pathlib import Path

import pytest

from tests.helpers.mounts import full_disk_copy, read_only_copy, read_only_folder, run_script_with_mounts
from tests.helpers.scripts import run_script
from tests.helpers.stage_inputs import STAGE2_FAST, write_coco

pytestmark = pytest.mark.slow
CPU = ["--device", "cpu"]


def assert_one_error_line(result, *expected: str) -> str:
    """Exit code 2, no traceback, and the last line of stderr the only ``error:`` line, holding every EXPECTED text."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [lines[-1]], result.stderr[-3000:]
    for text in expected:
        assert text in lines[-1], (text, lines[-1])
    return lines[-1]


def stage_args(script: str, out: Path, sample: Path, stage_outputs: Path, tiny_models: Path, fid_weights: Path) -> list:
    """The arguments of a run of SCRIPT that writes into OUT (stage 2b: scores into OUT, a copy of stage 2's folder)."""
    return {
        "generate_prompt_blip2.py": ["-i", sample / "images", "-a", sample / "annotations.json", "-o", out, "--select-only"],
        "generate_image_gligen.py": ["--mode", "generation", "-i", sample / "images", "-p", stage_outputs / "blip2_post.json", "-o", out,
                                     "--model", tiny_models / "gligen-generation", *STAGE2_FAST, *CPU, "--dtype", "float32"],
        "score_images.py": ["-g", out, "-p", out / "blip2_post.json", "--mode", "generation", "--detector", tiny_models / "owlv2",
                            "--clip-model", tiny_models / "clip", *CPU],
        "draw_bboxes.py": ["-g", stage_outputs, "-p", stage_outputs / "blip2_post.json", "-o", out, "--no-overview"],
        "finalize_selected_images.py": ["--original_annotation", sample / "annotations.json", "--original_data_root", sample / "images",
                                        "-g", stage_outputs, "-i", picked(stage_outputs, out.parent / "picked"), "-o", out],
        "evaluate_fid.py": ["-r", sample / "images", "-g", stage_outputs / "generation", "--weights", fid_weights, "--dims", "64",
                            *CPU, "-o", out / "fid.json"],
    }[script]


def picked(stage_outputs: Path, folder: Path) -> Path:
    """FOLDER with copies of stage 2's generated pictures, as a user picks them for stage 4."""
    (folder / "generation").mkdir(parents=True, exist_ok=True)
    for path in (stage_outputs / "generation").glob("*.png"):
        shutil.copy(path, folder / "generation" / path.name)
    return folder


@pytest.mark.parametrize("script", ["generate_prompt_blip2.py", "generate_image_gligen.py", "score_images.py", "draw_bboxes.py",
                                    "finalize_selected_images.py", "evaluate_fid.py"])
def test_a_read_only_output_folder_is_one_error_line(script, sample_dataset, stage_outputs, tiny_models, fid_weights, tmp_path):
    out = tmp_path / "out"
    mounts = read_only_copy(stage_outputs, out) if script == "score_images.py" else read_only_folder(out)
    result = run_script_with_mounts(mounts, script, *stage_args(script, out, sample_dataset, stage_outputs, tiny_models, fid_weights))
    assert_one_error_line(result, "error: read-only file system: choose an output folder on a writable disk (", f"{out}/")


@pytest.mark.parametrize("script", ["generate_prompt_blip2.py", "generate_image_gligen.py", "draw_bboxes.py",
                                    "finalize_selected_images.py"])
def test_an_output_path_that_is_a_file_is_one_error_line(script, sample_dataset, stage_outputs, tiny_models, fid_weights, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("not a folder")
    result = run_script(script, *stage_args(script, out, sample_dataset, stage_outputs, tiny_models, fid_weights), timeout=600)
    assert_one_error_line(result, f"error: a file stands where a folder is needed: move it away or choose another output folder ({out})")
    assert out.read_text() == "not a folder"


def test_the_scorer_on_a_full_disk_is_one_error_line_and_resumes(sample_dataset, stage_outputs, tiny_models, fid_weights, tmp_path):
    out = tmp_path / "out"
    result = run_script_with_mounts(full_disk_copy(stage_outputs, out), "score_images.py",
                                    *stage_args("score_images.py", out, sample_dataset, stage_outputs, tiny_models, fid_weights))
    assert_one_error_line(result, "error: no space left on device while writing: free some space, or choose an output folder on "
                                  "another disk, and run the same command again to resume; finished outputs are kept ", f"({out}/generation/scores.partial.0.jsonl)")


def header_only_png(path: Path, width: int, height: int):
    """A PNG of WIDTHxHEIGHT that holds its header and no pixels: PIL refuses it on opening, before decoding anything."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b""))


def test_a_decompression_bomb_in_stage1_is_one_error_line_or_skipped(tiny_models, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    header_only_png(images / "huge.png", 30000, 30000)
    annotations = write_coco(tmp_path, images={1: ("huge.png", 30000, 30000, [(3, [100, 100, 5000, 5000], 0)])})
    flags = ["-i", images, "-a", annotations, "--model", tiny_models / "blip2", "--num-workers", "0", "--max-new-tokens", "4", *CPU]
    result = run_script("generate_prompt_blip2.py", *flags, "-o", tmp_path / "out", timeout=600)
    assert_one_error_line(result, "error: image too large to open (Image size (900000000 pixels) exceeds limit of 800000000 pixels",
                          f"raise Image.MAX_IMAGE_PIXELS in cocoaug/images.py ({images / 'huge.png'}); --skip-missing skips such files (image_id 1)")
    skipped = run_script("generate_prompt_blip2.py", *flags, "-o", tmp_path / "skipped", "--skip-missing", timeout=600)
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert "skipped: unreadable image" in skipped.stdout and "image too large to open" in skipped.stderr


def test_a_pass_rates_file_that_is_not_utf8_is_one_error_line(tmp_path):
    annotations = write_coco(tmp_path)
    (tmp_path / "images").mkdir()
    rates = tmp_path / "score_summary.csv"
    rates.write_bytes("category,pictures,passed,pass_rate\nchat noir \u00e9t\u00e9,4,2,0.5\n".encode("latin-1"))
    result = run_script("generate_prompt_blip2.py", "-i", tmp_path / "images", "-a", annotations, "-o", tmp_path / "out",
                        "--select-only", "--balance", "repeat-factor", "--pass-rates", rates)
    line = assert_one_error_line(result)
    assert line == f"error: the pass-rates file is not UTF-8 text: pass score_images.py's score_summary.csv ({rates})"
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
