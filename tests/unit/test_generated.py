"""cocoaug.generated, stage 2's output contract: names, seeds, manifest entries written and read
back, the settings comparison; and it imports without torch."""

import orjson
import pytest
from PIL import Image

from cocoaug.errors import UserError
from cocoaug.generated import (
    PNG_ENTRY_KEY, image_seed, manifest_entry, output_name, parse_generated_name, read_manifest, read_png_entry,
    rebuild_manifest, save_generated_png, settings_differences,
)
from tests.helpers.scripts import run_python

RECORD = {"image_id": 7, "file_name": "sub/a.jpg", "bbox": [[0.1, 0.2, 0.5, 0.6]]}
SETTINGS = {"mode": "inpainting", "model": "m", "steps": 50, "resolution": 512, "negative_prompt": "", "keep_background": True}


def test_imports_without_torch():
    code = "import sys, cocoaug.generated; print('torch' in sys.modules)"
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("args,name,parsed", [
    ((3, 101), "3_0101.png", (3, 101, 0)),
    ((3, 101, 0, 1), "3_0101.png", (3, 101, 0)),
    ((18, 123456, 2, 3), "18_123456_2.png", (18, 123456, 2)),
])
def test_output_names_parse_back(args, name, parsed):
    assert output_name(*args) == name
    assert parse_generated_name(name) == parsed


def test_names_stage2_does_not_write_are_not_parsed():
    assert parse_generated_name("3_101.png") is None and parse_generated_name("notes.png") is None


def test_image_seed_is_stable_and_separates_images_and_variants():
    assert image_seed(0, 101, 0) == 7379761344921417885  # the same on every machine and in every version
    seeds = {image_seed(s, i, k) for s in (0, 1) for i in (1, 2, 3) for k in (0, 1)}
    assert len(seeds) == 12 and all(0 <= s < 2**63 for s in seeds)


def test_entries_written_into_pngs_rebuild_the_manifest(tmp_path):
    entries = []
    for k in (1, 0):
        name = output_name(3, 7, k, 2)
        entry = manifest_entry(name, RECORD, k, image_seed(0, 7, k), "a cat", ["cat"], (64, 48), (640, 480), SETTINGS)
        save_generated_png(tmp_path / name, Image.new("RGB", (640, 480)), entry)
        entries.append(entry)
    Image.new("RGB", (4, 4)).save(tmp_path / "3_0008.png")  # no entry: left out
    assert entries[0] == {
        "file_name": "3_0007_1.png", "source_image_id": 7, "source_file_name": "sub/a.jpg", "prompt": "a cat",
        "phrases": ["cat"], "boxes": RECORD["bbox"], "seed": image_seed(0, 7, 1), "variant": 1,
        "working_size": [64, 48], "width": 640, "height": 480, **SETTINGS,
    }
    with Image.open(tmp_path / "3_0007_1.png") as image:
        assert orjson.loads(image.info[PNG_ENTRY_KEY]) == entries[0]
    assert read_png_entry(tmp_path / "3_0007_0.png") == entries[1]
    assert read_png_entry(tmp_path / "3_0008.png") is None
    assert rebuild_manifest(tmp_path) == 2
    lines = (tmp_path / "manifest.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["file_name"] for line in lines] == ["3_0007_0.png", "3_0007_1.png"]
    assert read_manifest(tmp_path) == {entry["file_name"]: entry for entry in entries}


def test_manifest_entries_are_keyed_by_file_name(tmp_path):
    (tmp_path / "manifest.jsonl").write_text(
        '{"file_name": "3_0001.png", "source_image_id": 1, "seed": 5}\n\n'
        '{"file_name": "3_0002_1.png", "source_image_id": 2, "variant": 1}\n'
    )
    assert read_manifest(tmp_path) == {
        "3_0001.png": {"file_name": "3_0001.png", "source_image_id": 1, "seed": 5},
        "3_0002_1.png": {"file_name": "3_0002_1.png", "source_image_id": 2, "variant": 1},
    }


@pytest.mark.parametrize("text,message", [
    (None, "no manifest.jsonl"),
    ('{"file_name": "a.png", "source_image_id": 1}\n{not json\n', "line 2 of the manifest is not valid JSON"),
    ('["a.png"]\n', "line 1 of the manifest is not a JSON object"),
    ('{"file_name": "a.png"}\n', r"line 1 of the manifest \(a.png\): source_image_id is missing"),
])
def test_a_missing_or_bad_manifest_is_a_user_error(tmp_path, text, message):
    if text is not None:
        (tmp_path / "manifest.jsonl").write_text(text)
    with pytest.raises(UserError, match=message):
        read_manifest(tmp_path)


def test_settings_differences_list_each_key_once_with_every_old_value():
    entries = [{**SETTINGS, "steps": 4}, {**SETTINGS, "steps": 8, "negative_prompt": "blurry"}, {**SETTINGS, "steps": 4}]
    assert settings_differences(entries, SETTINGS) == [
        "steps: 4, 8 in existing pictures, 50 now",
        'negative_prompt: "blurry" in existing pictures, "" now',
    ]
    assert settings_differences([SETTINGS], SETTINGS) == []
    assert settings_differences([], SETTINGS) == []


def test_a_key_an_older_entry_lacks_is_unknown_not_a_difference():
    old = {key: value for key, value in SETTINGS.items() if key not in ("resolution", "keep_background")}
    assert settings_differences([old], {**SETTINGS, "resolution": 64, "keep_background": False}) == []
    assert settings_differences([old], {**SETTINGS, "steps": 2}) == ["steps: 50 in existing pictures, 2 now"]


def test_settings_differences_compare_nan_safely():
    """NaN != NaN, and a NaN setting was stored as null: an identical rerun must not count as other settings."""
    nan = float("nan")
    assert settings_differences([{**SETTINGS, "guidance_scale": nan}], {**SETTINGS, "guidance_scale": nan}) == []
    assert settings_differences([{**SETTINGS, "guidance_scale": None}], {**SETTINGS, "guidance_scale": nan}) == []
    assert settings_differences([{**SETTINGS, "guidance_scale": 7.5}], {**SETTINGS, "guidance_scale": nan}) == [
        "guidance_scale: 7.5 in existing pictures, null now"]
