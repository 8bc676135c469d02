"""Stage 1 after a kill: a run stopped after blip2.json (killed, or the disk full) finishes when the same
command runs again, without --overwrite, and the temp files the kill left are removed; the copies in
selected/ carry no EXIF Orientation tag. In-process, without a model: every caption comes from the
partial file, as after a kill once captioning has finished."""

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import generate_prompt_blip2 as stage
from cocoaug.runtime import run_cli
from tests.helpers.stage_inputs import write_coco

ORIENTATION, MAKE = 0x0112, 0x010F
DEAD_PID = 4194305  # above any pid Linux gives
FINAL_FILES = ["blip2.json", "blip2.csv", "blip2_post.json", "blip2_post.csv", "selected/selected.json", "selected/rotated.jpg",
               "selected/sub/b.png"]


@pytest.fixture
def inputs(tmp_path) -> list:
    """Stage 1's arguments on two pictures (a JPEG with EXIF Orientation=6, a PNG in a subfolder) with every
    caption in OUT_DIR's partial file, as a run killed after captioning leaves it."""
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    exif = Image.Exif()
    exif[ORIENTATION], exif[MAKE] = 6, "TestCam"
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / "rotated.jpg", exif=exif.tobytes(), quality=90)
    Image.new("RGB", (50, 40), (30, 200, 30)).save(images / "sub" / "b.png")
    annotations = write_coco(tmp_path, images={1: ("rotated.jpg", 64, 48, [(3, [10, 10, 20, 20], 0)]),
                                               2: ("sub/b.png", 50, 40, [(3, [5, 5, 20, 20], 0)])})
    model = tmp_path / "model"
    model.mkdir()  # a local folder passes the check; with every caption reused nothing loads it
    out = tmp_path / "out"
    out.mkdir()
    key = {"model": str(model), "prompt": "", "max_new_tokens": 30}
    partial = [{"image_id": 1, **key, "generated_text": "a cat on a mat", "width": 64, "height": 48},
               {"image_id": 2, **key, "generated_text": "a cat in the grass", "width": 50, "height": 40}]
    (out / stage.PARTIAL_NAME).write_bytes(b"".join(json.dumps(entry).encode() + b"\n" for entry in partial))
    return ["-i", str(images), "-a", str(annotations), "-o", str(out), "--model", str(model), "--num-workers", "0"]


def run_stage1(argv, *flags):
    run_cli(stage.main, stage.build_parser(), [*argv, *flags])


def contents(out: Path) -> dict:
    return {name: (out / name).read_bytes() for name in FINAL_FILES}


def test_a_run_killed_after_blip2_json_finishes_without_overwrite(inputs, capsys):
    out = Path(inputs[inputs.index("-o") + 1])
    run_stage1(inputs)
    finished = contents(out)
    # What a kill after blip2.json leaves: blip2.json, part of selected/, a temp file of each write in flight.
    for name in ("blip2.csv", "blip2_post.json", "blip2_post.csv", "selected/selected.json", "selected/sub/b.png"):
        (out / name).unlink()
    stale = [out / ".blip2.csv.abcd1234.tmp", out / f".blip2_post.json.k3j2h1g9.{DEAD_PID}.tmp",
             out / "selected" / "sub" / f".b.png.zz_9y8x7.{DEAD_PID}.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    capsys.readouterr()

    run_stage1(inputs)
    assert contents(out) == finished
    assert not any(path.exists() for path in stale)
    assert re.search(r"^  captioned +0$", capsys.readouterr().out, re.M)

    # Finished now: the same command is refused, and --overwrite (a successful run) also removes temp files.
    with pytest.raises(SystemExit) as ended:
        run_stage1(inputs)
    assert ended.value.code == 2
    assert capsys.readouterr().err == f"error: output exists; pass --overwrite to replace it ({out / 'blip2.json'})\n"
    stale[0].write_bytes(b"half a file")
    run_stage1(inputs, "--overwrite")
    assert contents(out) == finished and not stale[0].exists()


def test_selected_copies_have_no_exif_orientation_and_the_stored_pixels(inputs):
    """The boxes refer to the stored pixels: the copy keeps them (and the other EXIF tags), without the tag
    that makes a viewer rotate the picture against its boxes."""
    out, images = Path(inputs[inputs.index("-o") + 1]), Path(inputs[inputs.index("-i") + 1])
    run_stage1(inputs)
    with Image.open(images / "rotated.jpg") as original, Image.open(out / "selected" / "rotated.jpg") as copy:
        assert original.getexif()[ORIENTATION] == 6
        assert ORIENTATION not in copy.getexif() and copy.getexif()[MAKE] == "TestCam"
        assert copy.size == original.size == (64, 48)
        assert np.array_equal(np.asarray(copy), np.asarray(original))
    original_bytes, copy_bytes = (images / "rotated.jpg").read_bytes(), (out / "selected" / "rotated.jpg").read_bytes()
    scan = original_bytes.index(b"\xff\xda")  # the compressed pixels, copied byte for byte
    assert copy_bytes.endswith(original_bytes[scan:])
    assert (out / "selected" / "sub" / "b.png").read_bytes() == (images / "sub" / "b.png").read_bytes()
    records = json.loads((out / "blip2_post.json").read_text())
    assert records[0]["bbox"] == [[10 / 64, 10 / 48, 30 / 64, 30 / 48]]


def test_a_jpeg_without_the_tag_and_other_formats_are_copied_as_they_are():
    from cocoaug.images import without_exif_orientation

    plain = io.BytesIO()
    Image.new("RGB", (8, 8)).save(plain, "JPEG")
    assert without_exif_orientation(plain.getvalue()) == plain.getvalue()
    assert without_exif_orientation(b"\x89PNG\r\n\x1a\nrest") == b"\x89PNG\r\n\x1a\nrest"
