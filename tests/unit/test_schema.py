"""Every on-disk format is read through its typed schema (issue 18): each hostile value of the issue is
one UserError naming the file, the entry and the field; torn JSON Lines are dropped and cut off; the
check_inside guard refuses any path outside its output folder."""

import copy
import json
import os

import orjson
import pytest

from cocoaug.errors import UserError
from cocoaug.generated import read_manifest, read_png_entry, save_generated_png
from cocoaug.jsonl import open_for_append, read_jsonl
from cocoaug.paths import check_inside
from cocoaug.picks import parse_picks
from cocoaug.records import MAX_VARIANTS, load_records
from cocoaug.scores import ScoreEntry, read_scores
from tests.helpers.stage_inputs import stage1_record

RECORDS = [stage1_record(100 + k, f"img{k}.jpg", 64, 48) for k in range(4)]
ENTRY = {"file_name": "3_0101.png", "source_image_id": 101, "source_file_name": "a.jpg", "prompt": "a ball",
         "phrases": ["ball"], "boxes": [[0.1, 0.2, 0.5, 0.6]], "seed": 5, "variant": 0, "working_size": [64, 48],
         "width": 64, "height": 48, "mode": "generation", "steps": 2, "guidance_scale": 7.5}
SCORE = {"file_name": "3_0101.png", "mode": "generation", "source_image_id": 101, "category_id": 3, "label": "ball",
         "sha256": "0" * 64, "boxes": [{"label": "ball", "category_id": 3, "box": [0.1, 0.2, 0.5, 0.6], "region_clip": 0.2}],
         "caption_clip": 0.3, "detections": [{"label": "ball", "box": [0.1, 0.2, 0.5, 0.6], "score": 0.4}],
         "detections_min_score": 0.05, "detector": "tiny", "clip_model": "tiny"}
JUDGED = {**SCORE, "passed": True, "reasons": [], "box_recall": 1.0, "min_region_clip": 0.2, "extra_objects": 0}


def records_error(tmp_path, index: int, **changes) -> str:
    records = copy.deepcopy(RECORDS)
    records[index].update(changes)
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    with pytest.raises(UserError) as info:
        load_records(path)
    assert info.value.culprit == path
    return info.value.message


@pytest.mark.parametrize("changes, message", [
    ({"category_id": "../../../ESCAPED"}, "record 3 (image_id 103): category_id must be an integer, got '../../../ESCAPED'"),
    ({"category_id": "3/sub"}, "record 3 (image_id 103): category_id must be an integer, got '3/sub'"),
    ({"category_id": None}, "record 3 (image_id 103): category_id must be an integer, got None"),
    ({"category_id": True}, "record 3 (image_id 103): category_id must be an integer, got True"),
    ({"category_id": -1}, "record 3 (image_id 103): category_id must be an integer >= 0, got -1"),
    ({"category_ids": ["3", "5"]}, "record 3 (image_id 103): category_ids[0] must be an integer, got '3'"),
    ({"labels": [None, "dog"]}, "record 3 (image_id 103): labels[0] must be a string, got None"),
    ({"labels": ["ball", " "]}, "record 3 (image_id 103): labels[1] must be a non-empty string, got ' '"),
    ({"label": None}, "record 3 (image_id 103): label must be a string, got None"),
    ({"variants": 1000000000}, f"record 3 (image_id 103): variants must be an integer <= {MAX_VARIANTS}, got 1000000000"),
    ({"variants": -1}, "record 3 (image_id 103): variants must be an integer >= 0, got -1"),
    ({"file_name": "a\x00.jpg"}, "record 3 (image_id 103): file_name holds a NUL byte, got 'a\\x00.jpg'"),
    ({"file_name": "../../x.jpg"}, "record 3 (image_id 103): file_name climbs out of the image folder with '..', got '../../x.jpg'"),
    ({"file_name": "/etc/x.jpg"}, "record 3 (image_id 103): file_name is an absolute path; it must be relative to the image folder, got '/etc/x.jpg'"),
    ({"file_name": "C:\\x.jpg"}, "record 3 (image_id 103): file_name is an absolute path; it must be relative to the image folder, got 'C:\\\\x.jpg'"),
    ({"bbox": [["48", "150", "0.5", "0.6"], [0.1, 0.1, 0.2, 0.2]]}, "record 3 (image_id 103): bbox[0][0] must be a number, got '48'"),
    ({"bbox": [[0.1, 0.2, 0.5, float("nan")], [0.1, 0.1, 0.2, 0.2]]}, "record 3 (image_id 103): bbox[0][3] must be a number >= 0.0, got nan"),
    ({"bbox": [[0.5, 0.2, 0.5, 0.6], [0.1, 0.1, 0.2, 0.2]]}, "record 3 (image_id 103): bbox[0] must have x1 > x0 and y1 > y0, got [0.5, 0.2, 0.5, 0.6]"),
    ({"bbox": [[0.1, 0.2, 0.5, 1.5], [0.1, 0.1, 0.2, 0.2]]}, "record 3 (image_id 103): bbox[0][3] must be a number <= 1.0, got 1.5"),
    ({"annotation_ids": [1]}, "record 3 (image_id 103): annotation_ids must list one entry per box (2), got 1"),
    ({"generated_text": None}, "record 3 (image_id 103): generated_text must be a string, got None; is this stage 1's blip2_post.json?"),
])
def test_each_hostile_record_is_one_line_naming_the_record_and_the_field(tmp_path, changes, message):
    assert records_error(tmp_path, 3, **changes) == message


def test_a_record_whose_id_is_not_an_int_is_named_by_its_index(tmp_path):
    assert records_error(tmp_path, 1, image_id="7") == "record 1: image_id must be an integer, got '7'"
    assert records_error(tmp_path, 1, image_id=100) == "duplicate record for image_id 100"


def test_valid_records_are_returned_as_they_are_with_variants_up_to_the_maximum(tmp_path):
    records = [dict(RECORDS[0], variants=MAX_VARIANTS, note="kept"), dict(RECORDS[1], variants=0)]
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    assert load_records(path) == records


def write_lines(path, *entries, tail: bytes = b""):
    path.write_bytes(b"".join(orjson.dumps(entry) + b"\n" for entry in entries) + tail)
    return path


@pytest.mark.parametrize("changes, message", [
    ({"source_image_id": "101"}, "line 2 of the manifest (3_0101.png): source_image_id must be an integer, got '101'"),
    ({"file_name": "../../x.png"}, "line 2 of the manifest (../../x.png): file_name climbs out of the image folder with '..'"),
    ({"file_name": "sub/x.png"}, "line 2 of the manifest (sub/x.png): file_name must be a plain name, with no folder in it"),
    ({"boxes": [["0", 0, 1, 1]]}, "line 2 of the manifest (3_0101.png): boxes[0][0] must be a number, got '0'"),
    ({"variant": 10**9}, f"line 2 of the manifest (3_0101.png): variant must be an integer <= {MAX_VARIANTS - 1}, got 1000000000"),
    ({"width": "64"}, "line 2 of the manifest (3_0101.png): width must be an integer, got '64'"),
    ({"guidance_scale": None}, "line 2 of the manifest (3_0101.png): guidance_scale must be a number, got None"),
])
def test_a_hand_edited_manifest_line_is_one_error_naming_the_line_and_field(tmp_path, changes, message):
    write_lines(tmp_path / "manifest.jsonl", dict(ENTRY, file_name="3_0100.png", source_image_id=100), {**ENTRY, **changes})
    with pytest.raises(UserError) as info:
        read_manifest(tmp_path)
    assert info.value.message.startswith(message) and info.value.culprit == tmp_path / "manifest.jsonl"


def test_a_png_entry_of_the_wrong_types_is_refused(tmp_path):
    from PIL import Image

    save_generated_png(tmp_path / "3_0101.png", Image.new("RGB", (4, 4)), {**ENTRY, "source_image_id": None})
    with pytest.raises(UserError, match=r"the PNG's 'cocoaug' entry: source_image_id must be an integer, got None"):
        read_png_entry(tmp_path / "3_0101.png")


@pytest.mark.parametrize("changes, message", [
    ({"boxes": "oops"}, "boxes must be a list, got 'oops'"),
    ({"boxes": [{**SCORE["boxes"][0], "region_clip": "0.2"}]}, "boxes[0].region_clip must be a number, got '0.2'"),
    ({"boxes": [{**SCORE["boxes"][0], "region_clip": None}]}, "boxes[0].region_clip must be a number, got None"),  # NaN as orjson writes it
    ({"detections": [{"label": "ball", "box": [0, 0, 1], "score": 0.4}]}, "detections[0].box must be a list of length 4"),
    ({"passed": "yes"}, "passed must be true or false, got 'yes'"),
    ({"passed": None}, "passed must be true or false, got None"),
    ({"category_id": 3.5}, "category_id must be an integer, got 3.5"),
])
def test_a_hand_edited_scores_line_is_one_error_naming_the_line_and_field(tmp_path, changes, message):
    write_lines(tmp_path / "scores.jsonl", {**JUDGED, **changes})
    with pytest.raises(UserError) as info:
        read_scores(tmp_path)
    assert info.value.message.startswith(f"line 1 of the scores file (3_0101.png): {message}"), info.value.message


def test_scores_lines_need_their_verdict_and_partial_lines_do_not(tmp_path):
    write_lines(tmp_path / "scores.jsonl", SCORE)
    with pytest.raises(UserError, match=r"line 1 of the scores file \(3_0101.png\): passed is missing"):
        read_scores(tmp_path)
    assert read_jsonl(write_lines(tmp_path / "partial.jsonl", SCORE), "partial", ScoreEntry) == [SCORE]


@pytest.mark.parametrize("document, message", [
    ({"picks": [{"mode": "generation", "file_name": "../x.png"}]}, "picks[0]: file_name climbs out"),
    ({"picks": [{"mode": "../..", "file_name": "x.png"}]}, "picks[0]: mode climbs out"),
    ({"picks": [{"mode": "generation", "file_name": "a\x00.png"}]}, "picks[0]: file_name holds a NUL byte"),
    ({"picks": [{"mode": "generation", "file_name": 3}]}, "picks[0].file_name must be a string, got 3"),
    ({"picks": [{"mode": "generation"}]}, "picks[0].file_name is missing"),
    ({"picks": [], "generated_dir": 5}, "generated_dir must be a string or null, got 5"),
    ({"picks": [], "version": "1"}, "version must be an integer, got '1'"),
])
def test_a_hostile_picks_file_is_one_error_naming_the_pick_and_field(document, message):
    with pytest.raises(UserError) as info:
        parse_picks(document, "picks.json")
    assert info.value.message.startswith(message), info.value.message


# ---------------------------------------------------------------- torn JSON Lines


def test_a_torn_last_line_is_dropped_and_cut_off_before_appending(tmp_path, caplog):
    """Issue case 4: 42 pictures, the 42nd line cut short by a kill; the rerun's line is not glued onto it."""
    entries = [dict(SCORE, file_name=f"3_{k:04d}.png") for k in range(42)]
    last = orjson.dumps(entries[-1])
    path = write_lines(tmp_path / "scores.partial.0.jsonl", *entries[:-1], tail=last[: len(last) // 2])
    assert [e["file_name"] for e in read_jsonl(path, "partial", ScoreEntry)] == [e["file_name"] for e in entries[:-1]]
    assert "cut short by an interrupted run" in caplog.text
    with open_for_append(path) as sink:
        sink.write(last + b"\n")
    assert read_jsonl(path, "partial", ScoreEntry) == entries
    assert path.read_bytes().count(b"\n") == 42


def test_a_complete_last_line_without_its_newline_is_kept_and_ended(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", SCORE, tail=orjson.dumps(dict(SCORE, file_name="b.png")))
    assert len(read_jsonl(path, "partial", ScoreEntry)) == 2
    with open_for_append(path) as sink:
        sink.write(orjson.dumps(dict(SCORE, file_name="c.png")) + b"\n")
    assert [e["file_name"] for e in read_jsonl(path, "partial", ScoreEntry)] == ["3_0101.png", "b.png", "c.png"]


def test_a_torn_line_that_is_not_the_last_is_an_error_naming_it(tmp_path):
    path = tmp_path / "scores.partial.0.jsonl"
    path.write_bytes(orjson.dumps(SCORE) + b"\n" + orjson.dumps(SCORE)[:20] + b"\n" + orjson.dumps(SCORE) + b"\n")
    with pytest.raises(UserError, match="line 2 of partial is not valid JSON") as info:
        read_jsonl(path, "partial", ScoreEntry)
    assert info.value.culprit == path


def test_open_for_append_creates_and_cuts_a_file_of_one_fragment(tmp_path):
    with open_for_append(tmp_path / "new.jsonl") as sink:
        sink.write(b"{}\n")
    assert (tmp_path / "new.jsonl").read_bytes() == b"{}\n"
    (tmp_path / "torn.jsonl").write_bytes(b'{"file_na')
    open_for_append(tmp_path / "torn.jsonl").close()
    assert (tmp_path / "torn.jsonl").read_bytes() == b""


# ---------------------------------------------------------------- the output guard


def test_check_inside_refuses_every_path_outside_the_output_folder(tmp_path):
    out = tmp_path / "out"
    (out / "generation").mkdir(parents=True)
    assert check_inside(out, out / "generation" / "3_0101.png") == out / "generation" / "3_0101.png"
    os.symlink(tmp_path, out / "link")
    for path in (out / ".." / "ESCAPED_0101.png", out / "generation" / ".." / ".." / "x.png", tmp_path / "x.png",
                 out / "link" / "x.png", out, out / "a\x00.png"):
        with pytest.raises(UserError, match="refusing to write"):
            check_inside(out, path)
