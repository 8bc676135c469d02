"""Stage 2 (generate_image_gligen.py): sizes, boxes, backgrounds, seeds, resume, manifest, errors.

Runs the script on tiny random-weight GLIGEN models with a few steps at 64 pixels.
"""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import generate_image_gligen as stage
from cocoaug.generated import MAX_OBJECTS, image_seed, read_manifest, read_png_entry, save_generated_png
from tests.helpers import scripts
from tests.helpers.scripts import ROOT, default_sigint, run_python, run_script
from tests.helpers.stage_inputs import BOXES, PICTURES, STAGE2_FAST, stage1_record, write_inputs

SCRIPT = "generate_image_gligen.py"


def run_here(argv) -> tuple[int, str, str]:
    """Run the stage in this process (faster than a subprocess); return (exit code, stdout, stderr)."""
    result = scripts.run_here(SCRIPT, *argv)
    return result.returncode, result.stdout, result.stderr


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    many_boxes = stage1_record(5, "square.png", 50, 50, boxes=[[0.01 * i, 0.0, 0.01 * i + 0.5, 0.5] for i in range(MAX_OBJECTS + 1)])
    return write_inputs(tmp_path_factory.mktemp("inputs"), extra_records=[many_boxes])


@pytest.fixture(scope="module")
def inpainted(inputs, tiny_models, tmp_path_factory):
    images, prompts = inputs
    out = tmp_path_factory.mktemp("out")
    result = run_script(SCRIPT, "--mode", "inpainting", "-i", images, "-p", prompts, "-o", out,
                        "--model", tiny_models / "gligen-inpainting", *STAGE2_FAST, "--batch-size", "3", "--feather", "2")
    assert result.returncode == 0, result.stderr
    return out / "inpainting", result


@pytest.fixture(scope="module")
def generated(inputs, tiny_models, tmp_path_factory):
    images, prompts = inputs
    out = tmp_path_factory.mktemp("out")
    result = run_script(SCRIPT, "--mode", "generation", "-i", images, "-p", prompts, "-o", out,
                        "--model", tiny_models / "gligen-generation", *STAGE2_FAST, "--batch-size", "3", "--variants", "2", "--seed", "7")
    assert result.returncode == 0, result.stderr
    return out / "generation", result


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize("width,height", [(640, 480), (480, 640), (500, 500), (2000, 100), (7, 3000)])
def test_working_size_is_a_multiple_of_8_near_the_area_with_the_aspect_ratio(width, height):
    w, h = stage.working_size(width, height, 512)
    assert w % 8 == 0 and h % 8 == 0 and w >= 8 and h >= 8
    if min(w, h) > 64:
        assert abs(w * h / 512**2 - 1) < 0.1
        assert abs((w / h) / (width / height) - 1) < 0.1
    assert stage.working_size(640, 640, 512) == (512, 512)


@pytest.mark.parametrize("size", [(64, 48), (40, 90), (300, 30), (50, 50)])
def test_letterbox_maps_boxes_with_the_picture_and_crops_back(size):
    picture = Image.new("RGB", size, (200, 10, 10))
    square, frame = stage.letterbox_to_square(picture, 64)
    assert square.size == (64, 64)
    assert frame.width == 64 or frame.height == 64
    boxes = np.array(BOXES)
    there = stage.boxes_to_letterbox(boxes, frame)
    # Every box corner lands where the picture's content is: the picture fills [left, left + width).
    offset, scale = np.array([frame.left, frame.top] * 2), np.array([frame.width, frame.height] * 2)
    assert np.allclose(there * 64, offset + boxes * scale, atol=1e-9)
    back = stage.crop_letterbox(square, frame, size)
    assert back.size == size and np.abs(pixels_of(back) - [200, 10, 10]).max() <= 2


def pixels_of(image):
    return np.asarray(image, dtype=np.int16)


def test_letterbox_pads_a_marked_picture_centred():
    picture = Image.new("RGB", (32, 16), (0, 0, 0))
    picture.putpixel((0, 0), (255, 255, 255))
    square, frame = stage.letterbox_to_square(picture, 64)
    assert (frame.left, frame.top, frame.width, frame.height) == (0, 16, 64, 32)
    assert square.getpixel((0, 16)) == (255, 255, 255) or sum(square.getpixel((0, 16))) > 300


def test_paste_background_keeps_the_outside_and_fades_in_the_inside():
    original = Image.new("RGB", (40, 20), (10, 20, 30))
    generated = Image.new("RGB", (40, 20), (250, 240, 230))
    out = pixels_of(stage.paste_background(original, generated, [[0.25, 0.25, 0.75, 0.75]], feather_px=3))
    assert (out[:5] == [10, 20, 30]).all() and (out[15:] == [10, 20, 30]).all()
    assert (out[:, :10] == [10, 20, 30]).all() and (out[:, 30:] == [10, 20, 30]).all()
    assert (out[8:12, 13:27] == [250, 240, 230]).all()  # deeper than the feather inside the box
    assert 10 < out[5, 20, 0] < 250  # the box's edge row is a blend
    hard = pixels_of(stage.paste_background(original, generated, [[0.25, 0.25, 0.75, 0.75]], feather_px=0))
    assert (hard[5:15, 10:30] == [250, 240, 230]).all() and (hard[:5] == [10, 20, 30]).all()


def test_keep_mask_covers_every_latent_cell_a_box_touches():
    from cocoaug.gligen_sampler import keep_mask_from_boxes  # imports torch: not at collection

    mask = keep_mask_from_boxes([[0.1, 0.25, 0.5, 0.5]], 8, 8)
    assert mask[2:4, 0:4].eq(0).all() and mask.sum() == 64 - 8
    assert keep_mask_from_boxes([[0.0, 0.0, 1.0, 1.0]], 4, 6).sum() == 0


def test_phrases_come_from_the_template():
    rec = stage1_record(1, "a.png", 10, 10)
    assert stage.phrases_for(rec, "{label}") == ["ball", "red dog"]
    assert stage.phrases_for(rec, "a photo of a {label} ({category_id})") == ["a photo of a ball (3)", "a photo of a red dog (5)"]


# ---------------------------------------------------------------- runs


def test_inpainting_outputs_have_the_original_sizes(inpainted, inputs):
    folder, result = inpainted
    for image_id, (file_name, width, height) in PICTURES.items():
        with Image.open(folder / f"3_{image_id:04d}.png") as image:
            assert image.size == (width, height)
    assert not (folder / "3_0005.png").exists()
    assert "generated 4, skipped as existing 0, skipped (more than 30 boxes) 1" in result.stdout
    assert "image_id 5 has 31 boxes" in result.stderr


def test_inpainting_keeps_the_original_outside_the_boxes(inpainted, inputs):
    folder, _ = inpainted
    images, _ = inputs
    for image_id, (file_name, width, height) in PICTURES.items():
        original, made = pixels(images / file_name), pixels(folder / f"3_{image_id:04d}.png")
        x, y = np.arange(width) + 0.5, np.arange(height) + 0.5
        inside = np.zeros((height, width), dtype=bool)
        for x0, y0, x1, y1 in BOXES:
            inside |= ((y > y0 * height) & (y < y1 * height))[:, None] & ((x > x0 * width) & (x < x1 * width))[None, :]
        assert (made[~inside] == original[~inside]).all()
        assert (made[inside] != original[inside]).any(axis=-1).mean() > 0.5


def test_manifest_lists_every_image_with_what_made_it(inpainted, inputs):
    folder, _ = inpainted
    manifest = read_manifest(folder)
    assert sorted(manifest) == sorted(p.name for p in folder.glob("*.png"))
    entry = manifest["3_0002.png"]
    assert entry == {
        "file_name": "3_0002.png", "source_image_id": 2, "source_file_name": "sub/portrait.png",
        "prompt": "a ball and a dog, picture 2", "phrases": ["ball", "red dog"], "boxes": BOXES,
        "seed": image_seed(0, 2, 0), "variant": 0, "mode": "inpainting", "model": entry["model"],
        "scheduler": "PNDMScheduler", "steps": 2, "guidance_scale": 7.5, "grounding_beta": 1.0,
        "working_size": [64, 64], "width": 40, "height": 90, "negative_prompt": "", "phrase_template": "{label}",
        "resolution": 64, "run_seed": 0, "keep_background": True, "feather": 2.0,
    }
    assert entry["model"].endswith("gligen-inpainting")


def test_a_rerun_with_every_picture_made_says_so_without_importing_torch(inpainted, inputs, tiny_models):
    """The rerun of a finished run ends in a second: no torch, no diffusers (python -X importtime lists what loads)."""
    folder, _ = inpainted
    images, prompts = inputs
    before = {p.name: p.read_bytes() for p in folder.glob("*.png")}
    result = run_python("-X", "importtime", ROOT / SCRIPT, "--mode", "inpainting", "-i", images, "-p", prompts, "-o", folder.parent,
                        "--model", tiny_models / "gligen-inpainting", *STAGE2_FAST, "--batch-size", "3", "--feather", "2")
    assert result.returncode == 0, result.stderr
    assert "every picture of this run exists: nothing to make, no model loaded" in result.stderr
    assert "generated 0, skipped as existing 4" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert {"PIL.Image", "cocoaug.generated"} <= imported  # the import log is complete
    assert not imported & {"torch", "diffusers", "transformers"}
    assert before == {p.name: p.read_bytes() for p in folder.glob("*.png")}


def test_a_rerun_keeps_existing_images_and_overwrite_remakes_them(inpainted, inputs, tiny_models):
    folder, _ = inpainted
    images, prompts = inputs
    before = {p.name: p.read_bytes() for p in folder.glob("*.png")}
    argv = ["--mode", "inpainting", "-i", images, "-p", prompts, "-o", folder.parent, "--model", tiny_models / "gligen-inpainting",
            *STAGE2_FAST, "--batch-size", "3", "--feather", "2"]
    code, out, _ = run_here(argv)
    assert code == 0 and "generated 0, skipped as existing 4" in out
    assert before == {p.name: p.read_bytes() for p in folder.glob("*.png")}
    code, out, _ = run_here(argv + ["--overwrite", "--limit", "1"])
    assert code == 0 and "generated 1, skipped as existing 0" in out
    assert len(read_manifest(folder)) == 4


def test_generation_makes_variants_at_the_original_sizes(generated):
    folder, result = generated
    manifest = read_manifest(folder)
    assert sorted(manifest) == sorted(f"3_{i:04d}_{k}.png" for i in PICTURES for k in (0, 1))
    for image_id, (_, width, height) in PICTURES.items():
        entry = manifest[f"3_{image_id:04d}_1.png"]
        assert entry["working_size"] == list(stage.working_size(width, height, 64))
        assert (entry["width"], entry["height"], entry["seed"]) == (width, height, image_seed(7, image_id, 1))
        first, second = pixels(folder / f"3_{image_id:04d}_0.png"), pixels(folder / f"3_{image_id:04d}_1.png")
        assert first.shape == second.shape == (height, width, 3)
        assert np.abs(first - second).mean() > 1  # different seeds, different pictures
    assert "generated 8" in result.stdout


def test_same_seed_same_image_at_batch_sizes_1_and_3(inputs, tiny_models, tmp_path):
    images, prompts = inputs
    made = []
    for batch_size in (1, 3):
        out = tmp_path / f"b{batch_size}"
        code, _, err = run_here(["--mode", "generation", "-i", images, "-p", prompts, "-o", out, "--model", tiny_models / "gligen-generation",
                                 *STAGE2_FAST, "--batch-size", batch_size, "--scheduler", "EulerAncestralDiscreteScheduler"])
        assert code == 0, err
        made.append({p.name: pixels(p) for p in sorted((out / "generation").glob("*.png"))})
    assert made[0].keys() == made[1].keys() and len(made[0]) == 4
    for name in made[0]:
        assert np.abs(made[0][name] - made[1][name]).max() <= 1, name


def test_flags_reach_the_manifest(inputs, tiny_models, tmp_path):
    images, prompts = inputs
    code, out, err = run_here(["--mode", "inpainting", "-i", images, "-p", prompts, "-o", tmp_path, "--model", tiny_models / "gligen-inpainting",
                               "--steps", "3", "--resolution", "48", "--limit", "2", "--phrase-template", "a photo of a {label}",
                               "--negative-prompt", "blurry", "--guidance-scale", "3", "--grounding-beta", "0.5",
                               "--scheduler", "DDIMScheduler", "--channels-last", "--no-keep-background", "--device", "cpu",
                               "--dtype", "float32", "--debug"])
    assert code == 0, err
    manifest = read_manifest(tmp_path / "inpainting")
    assert sorted(manifest) == ["3_0001.png", "3_0002.png"]
    entry = manifest["3_0001.png"]
    assert entry["phrases"] == ["a photo of a ball", "a photo of a red dog"]
    assert (entry["scheduler"], entry["steps"], entry["guidance_scale"], entry["grounding_beta"]) == ("DDIMScheduler", 3, 3.0, 0.5)
    assert entry["working_size"] == [48, 48]
    assert (entry["negative_prompt"], entry["phrase_template"], entry["resolution"]) == ("blurry", "a photo of a {label}", 48)
    assert entry["keep_background"] is False and "feather" not in entry  # no feathering without the background
    # Without --keep-background the whole picture is the model's.
    original, made = pixels(images / "land.jpg"), pixels(tmp_path / "inpainting" / "3_0001.png")
    assert (made[:5] != original[:5]).any()


def test_help_documents_every_flag():
    result = run_script(SCRIPT, "--help")
    assert result.returncode == 0
    for action in stage.build_parser()._actions:
        for option in action.option_strings:
            assert option in result.stdout


# ---------------------------------------------------------------- bad input


@pytest.fixture()
def bad_inputs(tmp_path):
    images, prompts = write_inputs(tmp_path, {1: ("land.jpg", 64, 48), 2: ("square.png", 50, 50)})
    return tmp_path, images, prompts


def stage_args(images, prompts, out, model, *more):
    return ["--mode", "inpainting", "-i", images, "-p", prompts, "-o", out, "--model", model, *STAGE2_FAST, *more]


def test_prompts_that_are_not_stage1_records_are_refused(bad_inputs, tiny_models):
    folder, images, prompts = bad_inputs
    prompts.write_text(json.dumps({"images": []}))
    code, _, err = run_here(stage_args(images, prompts, folder / "out", tiny_models / "gligen-inpainting"))
    assert code == 2 and err.strip() == f"error: prompts file must be a JSON list of stage-1 records ({prompts})"


def test_missing_images_are_listed_in_one_error_unless_skipped(bad_inputs, tiny_models, caplog):
    folder, images, prompts = bad_inputs
    records = json.loads(prompts.read_text())
    records += [stage1_record(10 + i, f"gone{i}.png", 10, 10) for i in range(12)]
    prompts.write_text(json.dumps(records))
    argv = stage_args(images, prompts, folder / "out", tiny_models / "gligen-inpainting")
    code, _, err = run_here(argv)
    assert code == 2 and "12 image file(s) missing" in err and "gone0.png, gone1.png" in err and "and 2 more" in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = run_here(argv + ["--skip-missing"])
    assert code == 0 and "generated 2" in out and "skipped (image file missing) 12" in out
    assert "image file missing: gone11.png: skipped" in caplog.text


@pytest.mark.parametrize("file_name", ["../land.jpg", "/etc/passwd"])
def test_file_names_escaping_the_image_folder_are_refused(bad_inputs, tiny_models, file_name):
    folder, images, prompts = bad_inputs
    prompts.write_text(json.dumps([stage1_record(1, file_name, 64, 48)]))
    code, _, err = run_here(stage_args(images, prompts, folder / "out", tiny_models / "gligen-inpainting"))
    assert code == 2 and err.startswith("error: record 0 (image_id 1): file_name ") and f"got {file_name!r} ({prompts})" in err
    assert not (folder / "out").exists()  # refused when the records are read, before any name is planned


def test_output_folder_equal_to_the_image_folder_is_refused(bad_inputs, tiny_models):
    folder, images, prompts = bad_inputs
    code, _, err = run_here(stage_args(images, prompts, images, tiny_models / "gligen-inpainting"))
    assert code == 2 and f"the output folder {images} is the image folder {images}" in err


def test_models_that_do_not_exist_or_are_not_gligen_are_refused(bad_inputs, tiny_models):
    folder, images, prompts = bad_inputs
    out = folder / "out"
    code, _, err = run_here(stage_args(images, prompts, out, folder / "no-such-model"))
    assert code == 2 and "model folder does not exist" in err
    code, _, err = run_here(stage_args(images, prompts, out, images))  # a folder without a UNet
    assert code == 2 and "cannot load the model" in err
    code, _, err = run_here(stage_args(images, prompts, out, tiny_models / "gligen-generation"))
    assert code == 2 and "a generation GLIGEN model cannot run --mode inpainting" in err
    code, _, err = run_here(stage_args(images, prompts, out, tiny_models / "gligen-inpainting", "--scheduler", "NoSuchScheduler"))
    assert code == 2 and "not a diffusers scheduler" in err
    assert not out.exists()


def test_bad_flag_values_and_unknown_ids_are_refused(bad_inputs, tiny_models):
    folder, images, prompts = bad_inputs
    model = tiny_models / "gligen-inpainting"
    for flags, message in [
        (["--phrase-template", "{name}"], "bad --phrase-template"),
        (["--grounding-beta", "1.5"], "must be between 0 and 1"),
        (["--batch-size", "0"], "must be a positive integer"),
    ]:
        code, _, err = run_here(stage_args(images, prompts, folder / "out", model, *flags))
        assert code == 2 and message in err, err
    annotations = folder / "annotations.json"
    annotations.write_text(json.dumps({"images": [{"id": 1, "file_name": "land.jpg", "width": 64, "height": 48}],
                                       "annotations": [], "categories": [{"id": 3, "name": "ball"}]}))
    code, _, err = run_here(stage_args(images, prompts, folder / "out", model, "-a", annotations))
    assert code == 2 and "image_id 2 of the prompts file is not in" in err


def test_a_record_size_that_disagrees_with_the_file_is_warned_about(bad_inputs, tiny_models, caplog):
    folder, images, prompts = bad_inputs
    records = json.loads(prompts.read_text())
    records[0]["width"] = 640
    prompts.write_text(json.dumps(records))
    code, _, err = run_here(stage_args(images, prompts, folder / "out", tiny_models / "gligen-inpainting"))
    assert code == 0, err
    assert "the record says 640x48" in caplog.text and "using the file's size" in caplog.text
    with Image.open(folder / "out" / "inpainting" / "3_0001.png") as image:
        assert image.size == (64, 48)


def test_a_full_disk_is_a_clear_error_and_keeps_finished_images(bad_inputs, tiny_models, monkeypatch):
    folder, images, prompts = bad_inputs
    real_fsync, calls = os.fsync, []

    def fsync_then_full(fd):  # the second image's write finds the disk full
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_then_full)
    code, _, err = run_here(stage_args(images, prompts, folder / "out", tiny_models / "gligen-inpainting", "--batch-size", "1"))
    assert code == 2 and "error: no space left on device while writing" in err and "3_0002.png" in err
    assert sorted(os.listdir(folder / "out" / "inpainting")) == ["3_0001.png"]
    assert pixels(folder / "out" / "inpainting" / "3_0001.png").shape == (48, 64, 3)


# ---------------------------------------------------------------- existing images made with other settings


def test_a_rerun_with_other_settings_stops_keeps_or_remakes_as_asked(bad_inputs, tiny_models, caplog):
    folder, images, prompts = bad_inputs
    out, model = folder / "out", tiny_models / "gligen-inpainting"
    made = out / "inpainting"
    code, out_text, err = run_here(stage_args(images, prompts, out, model))
    assert code == 0 and "generated 2" in out_text, err
    first = {p.name: p.read_bytes() for p in made.glob("*.png")}
    other = stage_args(images, prompts, out, model, "--steps", "3", "--resolution", "48")

    code, _, err = run_here(other)
    assert code == 2 and err.strip() == (
        "error: 2 existing image(s) were made with other settings: steps: 2 in existing pictures, 3 now; "
        "resolution: 64 in existing pictures, 48 now; use --overwrite to remake them, or --keep-existing to keep "
        f"them as they are and make only the missing ones ({made})")
    assert {p.name: p.read_bytes() for p in made.glob("*.png")} == first

    (made / "3_0002.png").unlink()
    code, out_text, err = run_here(other + ["--keep-existing"])
    assert code == 0 and "generated 1, skipped as existing 1" in out_text, err
    assert "keeping 1 existing image(s) made with other settings (--keep-existing): steps: 2" in caplog.text
    assert (made / "3_0001.png").read_bytes() == first["3_0001.png"]
    manifest = read_manifest(made)
    assert (manifest["3_0001.png"]["steps"], manifest["3_0002.png"]["steps"]) == (2, 3)
    assert (manifest["3_0001.png"]["working_size"], manifest["3_0002.png"]["working_size"]) == ([64, 64], [48, 48])

    code, out_text, err = run_here(other + ["--overwrite"])
    assert code == 0 and "generated 2, skipped as existing 0" in out_text, err
    assert {entry["steps"] for entry in read_manifest(made).values()} == {3}
    assert (made / "3_0001.png").read_bytes() != first["3_0001.png"]
    code, _, err = run_here(other + ["--overwrite", "--keep-existing"])
    assert code == 2 and "give one" in err


def test_settings_that_older_entries_lack_are_not_differences(bad_inputs, tiny_models):
    folder, images, prompts = bad_inputs
    out, model = folder / "out", tiny_models / "gligen-inpainting"
    code, _, err = run_here(stage_args(images, prompts, out, model))
    assert code == 0, err
    made = out / "inpainting"
    for path in made.glob("*.png"):  # as an older version wrote them: no resolution, no feather
        entry = read_png_entry(path)
        del entry["resolution"], entry["feather"]
        with Image.open(path) as image:
            save_generated_png(path, image.copy(), entry)
    (made / "manifest.jsonl").unlink()
    code, out_text, err = run_here(stage_args(images, prompts, out, model, "--resolution", "48", "--feather", "1"))
    assert code == 0 and "generated 0, skipped as existing 2" in out_text, err
    code, _, err = run_here(stage_args(images, prompts, out, model, "--steps", "3"))
    assert code == 2 and "steps: 2 in existing pictures, 3 now" in err and "resolution" not in err


# ---------------------------------------------------------------- interruptions


def interrupt_after_next_picture(args, folder, sig) -> tuple[subprocess.Popen, str, list]:
    """Start stage 2, send ``sig`` once a picture more than before is on disk; the process, its stderr and the pictures."""
    before = len(list(folder.glob("*.png"))) if folder.is_dir() else 0
    proc = subprocess.Popen(list(map(str, args)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    deadline = time.monotonic() + 300
    while (len(list(folder.glob("*.png"))) if folder.is_dir() else 0) <= before and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    done = sorted(folder.glob("*.png"))
    assert before < len(done), "the run was not interrupted after a new picture"
    for path in done:
        assert pixels(path).shape == (64, 96, 3)  # every file is whole
    return proc, stderr, done


def test_an_interrupted_run_leaves_whole_files_and_resumes(tmp_path, tiny_models):
    """Ctrl-C (SIGINT) says how to resume and cleans up; a SIGKILL leaves whole files; the rerun makes only the rest."""
    pictures = {i: (f"p{i}.png", 96, 64) for i in range(1, 11)}
    images, prompts = write_inputs(tmp_path, pictures)
    out = tmp_path / "out"
    args = [sys.executable, str(ROOT / SCRIPT), "--mode", "generation", "-i", images, "-p", prompts, "-o", out,
            "--model", tiny_models / "gligen-generation", "--steps", "3", "--resolution", "64", "--batch-size", "1"]
    folder = out / "generation"
    proc, stderr, _ = interrupt_after_next_picture(args, folder, signal.SIGINT)
    assert proc.returncode == 130 and "run the same command again to resume" in stderr
    assert not [p for p in os.listdir(folder) if p.endswith(".tmp")]
    proc, _, done = interrupt_after_next_picture(args, folder, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL and len(done) < len(pictures), "the run was not interrupted in the middle"
    code, out_text, err = run_here(args[2:])
    assert code == 0, err
    assert f"generated {len(pictures) - len(done)}, skipped as existing {len(done)}" in out_text
    assert sorted(os.listdir(folder)) == sorted([f"3_{i:04d}.png" for i in pictures] + ["manifest.jsonl"])
    assert len(read_manifest(folder)) == len(pictures)


def test_a_phrase_over_77_clip_tokens_is_truncated_with_a_note(tiny_models, tmp_path, caplog):
    images, prompts = write_inputs(tmp_path, {1: ("land.jpg", 56, 40)})
    caption = "a brown dog lying on the floor next to a cat looking out of a window while a person throws a red ball to a dog in a park"
    records = json.loads(prompts.read_text())
    prompts.write_text(json.dumps([{**records[0], "generated_text": caption}]))
    code, _, err = run_here(["--mode", "generation", "-i", images, "-p", prompts, "-o", tmp_path / "out", "--model",
                             tiny_models / "gligen-generation", *STAGE2_FAST, "--phrase-template", "{caption} {caption} {caption}"])
    assert code == 0, err
    assert "1 phrase(s) are longer than the text encoder's 77 tokens and are truncated to them" in caplog.text
    assert "prompt(s)" not in caplog.text  # the caption alone fits
    entry = read_manifest(tmp_path / "out" / "generation")["3_0001.png"]
    assert entry["phrases"] == [f"{caption} {caption} {caption}"] * 2  # the manifest keeps what was asked
    with Image.open(tmp_path / "out" / "generation" / "3_0001.png") as image:
        assert image.size == (56, 40)
    assert entry["working_size"] == [72, 56]  # 9x7 latents: odd sizes, the UNet's resize path
