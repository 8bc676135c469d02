"""Stage 1 post-processing: tidying, --rules, --missing-label, --forbid, drop reasons.

Unit tests call `post_process` as a user-edited script would; the end-to-end tests feed known
captions through a run of the script via its resume file, so no model is needed.
"""

import csv
import json

import orjson
import pytest
from PIL import Image

from cocoaug import captions
import generate_prompt_blip2 as stage
from cocoaug.records import RECORD_FIELDS, load_records
from tests.helpers.scripts import run_script
from tests.helpers.stage_inputs import write_coco

SCRIPT = "generate_prompt_blip2.py"


def args_for(*flags, tmp_path=None, rules=None):
    args = stage.parse_args(["-i", ".", "-a", "a.json", "-o", "out", *flags])
    if rules is not None:
        path = tmp_path / "rules.json"
        path.write_text(json.dumps(rules))
        args.rules = str(path)
    args.rules = captions.load_rules(args.rules)
    args.forbid = stage.split_list(args.forbid)
    return args


def record(labels):
    return {"labels": labels, "label": labels[0]}


@pytest.mark.parametrize("raw, tidy", [
    ("  a  cat\n sitting on a sofa  ", "a cat sitting on a sofa"),
    ("a cat sitting on a sofa with a", "a cat sitting on a sofa"),
    ("a dog on the grass. the dog is", "a dog on the grass."),
    ("two birds on a branch,", "two birds on a branch"),
    ("a kite in the sky and", "a kite in the sky"),
    ("", ""),
])
def test_tidy_caption(raw, tidy):
    assert captions.tidy_caption(raw) == tidy


@pytest.mark.parametrize("noun, plural", [
    ("cat", "cats"), ("bus", "buses"), ("box", "boxes"), ("couch", "couches"), ("brush", "brushes"),
    ("puppy", "puppies"), ("toy", "toys"), ("teddy bear", "teddy bears"), ("sports ball", "sports balls"),
])
def test_plural(noun, plural):
    assert captions.plural(noun) == plural


@pytest.mark.parametrize("count, label, phrase", [
    (1, "cat", "a cat"), (1, "apple", "an apple"), (2, "ball", "two balls"), (3, "bus", "three buses"),
    (10, "puppy", "ten puppies"), (12, "box", "12 boxes"),
])
def test_count_phrase(count, label, phrase):
    assert captions.count_phrase(count, label) == phrase


def test_label_matching_is_whole_word_case_insensitive_and_accepts_plurals():
    assert captions.word_pattern("cat").search("Two CATS on a bed")
    assert captions.word_pattern("bus").search("buses in a row")
    assert captions.word_pattern("teddy bear").search("a teddy\nbear on a chair")
    assert not captions.word_pattern("cat").search("a catalogue on a table")
    assert not captions.word_pattern("man").search("a woman walking")


@pytest.mark.parametrize("mode, expected", [
    ("prepend", ("two balls, a red toy on the grass", "")),
    ("keep", ("a red toy on the grass", "")),
    ("drop", (None, "label not mentioned")),
])
def test_missing_label_modes(mode, expected):
    args = args_for("--missing-label", mode)
    assert stage.post_process("a red toy on the grass with", record(["ball", "ball"]), args) == expected


def test_prepend_names_only_the_missing_labels_with_their_counts():
    args = args_for()
    text, _ = stage.post_process("a cat on a sofa", record(["cat", "dog", "dog", "apple"]), args)
    assert text == "two dogs and an apple, a cat on a sofa"
    assert stage.post_process("Two dogs play", record(["dog", "dog"]), args) == ("Two dogs play", "")


def test_rules_apply_in_order_literal_regex_and_per_label(tmp_path):
    rules = [
        {"pattern": "sting ray", "replacement": "stingray"},
        {"pattern": "bird", "replacement": "puffin", "labels": ["Puffin"]},
        {"pattern": r"\s*\bin the (background|foreground)\b", "replacement": "", "regex": True},
        {"pattern": "stingray", "replacement": "manta ray", "labels": ["manta ray"]},
    ]
    args = args_for("--missing-label", "keep", tmp_path=tmp_path, rules=rules)
    assert stage.post_process("a Sting Ray in the background", record(["fish"]), args) == ("a stingray", "")
    assert stage.post_process("a bird on a rock", record(["puffin"]), args) == ("a puffin on a rock", "")
    assert stage.post_process("a bird on a rock", record(["gull"]), args) == ("a bird on a rock", "")
    assert stage.post_process("a birdhouse", record(["puffin"]), args) == ("a birdhouse", "")
    assert stage.post_process("a sting ray", record(["manta ray"]), args) == ("a manta ray", "")


def test_forbid_and_empty_captions_are_dropped_with_a_reason():
    args = args_for("--forbid", "person, man")
    assert stage.post_process("a Man holding a kite", record(["kite"]), args) == (None, "forbidden word")
    assert stage.post_process("two persons and a kite", record(["kite"]), args) == (None, "forbidden word")
    assert stage.post_process("a woman holding a kite", record(["kite"]), args)[1] == ""
    assert stage.post_process("  with a ", record(["kite"]), args) == (None, "empty caption")


@pytest.mark.parametrize("rules, message", [
    ({"pattern": "x"}, "rules file must be a JSON list"),
    ([{"replacement": "y"}], "a rule needs a non-empty string 'pattern'"),
    ([{"pattern": "(", "regex": True}], "invalid regular expression"),
    ([{"pattern": "a", "labels": "cat"}], "'labels' must be a list"),
    ([{"pattern": "a", "replace": "b"}], "unknown key(s) ['replace']"),
])
def test_bad_rules_file_is_refused_before_anything_runs(tmp_path, rules, message):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    images = tmp_path / "images"
    images.mkdir()
    result = run_script(SCRIPT, "-i", images, "-a", write_coco(tmp_path), "-o", tmp_path / "out", "--rules", path)
    assert result.returncode == 2 and result.stderr.startswith("error: " + message), result.stderr
    assert str(path) in result.stderr


CAPTIONS = {  # image_id -> raw caption, fed through the resume file
    1: "a cat and a person on a sofa with",
    7: "a small dog",
    8: "some animals on a field",
    9: "a sting ray toy on a bed",
}


@pytest.fixture
def captioned_toy(tmp_path):
    """The toy set with real image files and a resume file that already holds every caption."""
    annotations = write_coco(tmp_path / "ann")
    coco = json.loads(annotations.read_text())
    images = tmp_path / "images"
    for image in coco["images"]:
        (images / image["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (image["width"], image["height"]), (200, 100, 50)).save(images / image["file_name"])
    out = tmp_path / "out"
    out.mkdir()
    sizes = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    lines = [
        orjson.dumps({"image_id": i, "model": "tiny-model", "prompt": "", "max_new_tokens": 30,
                      "generated_text": text, "width": sizes[i][0], "height": sizes[i][1]})
        for i, text in CAPTIONS.items()
    ]
    (out / stage.PARTIAL_NAME).write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "tiny-model").mkdir()  # exists, so it is a local folder; never loaded: every caption is cached
    return images, annotations, out


def test_end_to_end_post_processing_counts_drops_and_writes_json_and_csv(tmp_path, captioned_toy):
    images, annotations, out = captioned_toy
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"pattern": "sting ray", "replacement": "stingray"}]))
    result = run_script(SCRIPT, "-i", images, "-a", annotations, "-o", out, "--model", "tiny-model",
                        "--forbid", "person", "--missing-label", "drop", "--rules", rules, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    raw = load_records(out / "blip2.json")
    final = load_records(out / "blip2_post.json")
    assert {r["image_id"]: r["generated_text"] for r in raw} == CAPTIONS
    assert {r["image_id"]: r["generated_text"] for r in final} == {7: "a small dog"}
    assert "dropped: forbidden word" in result.stdout and "dropped: label not mentioned" in result.stdout
    counts = {name.strip(): n for name, n in (line.rsplit(None, 1) for line in result.stdout.splitlines()[1:])}
    assert counts["dropped: forbidden word"] == "1" and counts["dropped: label not mentioned"] == "2"
    assert counts["captions reused from blip2.partial.jsonl"] == "4"
    assert counts["written to blip2_post.json"] == "1"
    for name, records in (("blip2", raw), ("blip2_post", final)):
        with open(out / f"{name}.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == len(records) and list(rows[0]) == list(RECORD_FIELDS)
        for row, rec in zip(rows, records):
            for key in RECORD_FIELDS:
                value = rec[key]
                expected = json.dumps(value, separators=(",", ":")) if isinstance(value, list) else str(value)
                assert json.loads(row[key]) == value if isinstance(value, list) else row[key] == expected, key


def test_prepend_mode_end_to_end_and_selected_originals(tmp_path, captioned_toy):
    images, annotations, out = captioned_toy
    result = run_script(SCRIPT, "-i", images, "-a", annotations, "-o", out, "--model", "tiny-model", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    final = {r["image_id"]: r["generated_text"] for r in load_records(out / "blip2_post.json")}
    assert final == {
        1: "a cat and a person on a sofa",  # the label is there: nothing is prepended
        7: "a small dog",
        8: "six dogs, some animals on a field",
        9: "a teddy bear, a sting ray toy on a bed",
    }
    assert (out / "selected" / "sub" / "a.jpg").read_bytes() == (images / "sub" / "a.jpg").read_bytes()
    assert (out / "selected" / "six.jpg").exists() and not (out / "selected" / "mixed.jpg").exists()
    selected = json.loads((out / "selected" / "selected.json").read_text())
    assert [i["id"] for i in selected["images"]] == [1, 7, 8, 9]
    assert sorted(a["image_id"] for a in selected["annotations"]) == [1, 1, 7] + [8] * 6 + [9]
    assert selected["categories"] == json.loads(annotations.read_text())["categories"]
    again = run_script(SCRIPT, "-i", images, "-a", annotations, "-o", out, "--model", "tiny-model", cwd=tmp_path)
    assert again.returncode == 2 and "output exists; pass --overwrite" in again.stderr
