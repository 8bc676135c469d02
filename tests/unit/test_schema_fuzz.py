"""Fuzz tests, one per on-disk format (issue 18): records, manifest entries, score entries (scores.jsonl
and the partial files), picks and COCO files full of wrong types, NaN, huge numbers, path-like strings
and NUL bytes. Each reader accepts the data or raises UserError (never another exception); what it
accepts has the schema's types and ranges; and the names the scripts build from accepted data stay
inside -o. A few hundred examples per format keep the file to seconds."""

import json
import math
import os
import tempfile
from argparse import Namespace
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from cocoaug.coco import load_coco
from cocoaug.errors import UserError
from cocoaug.generated import MAX_OBJECTS, output_name, read_manifest
from cocoaug.paths import check_inside, name_problem, plain_name_problem
from cocoaug.picks import parse_picks
from cocoaug.records import MAX_VARIANTS, load_records
from cocoaug.runtime import run_cli
from cocoaug.scores import read_scores
import generate_image_gligen as stage2
import generate_prompt_blip2 as stage1
import score_images as scorer

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PATHS = ["../../../ESCAPED", "3/sub", "/etc/passwd", "C:\\x.png", "a\x00b.png", "..", ".", "", " ", "sub/../../x", "\\\\srv\\x",
         "ok.png", "sub/ok.png", "48"]
hostile = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.integers(-(2**70), 2**70), st.sampled_from([1e308, -0.0, 0.5, 1.5]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(PATHS), st.text(max_size=4), st.lists(st.integers(-1, 3), max_size=5),
)


def sometimes(valid):
    """Mostly the valid value, now and then a hostile one, so that both sides are reached."""
    return st.integers(0, 15).flatmap(lambda k: hostile if k == 7 else valid)  # not 0: hypothesis favours the ends


unit = st.floats(0, 0.5)
box = st.integers(0, 15).flatmap(lambda k: st.lists(hostile, min_size=3, max_size=5) if k == 7 else hostile if k == 8 else st.builds(
    lambda x, y, w, h: [x, y, x + w, y + h], unit, unit, st.floats(0.01, 0.5), st.floats(0.01, 0.5)))
ids = sometimes(st.integers(0, 400))
labels = sometimes(st.sampled_from(["cat", "dog", "red dog"]))


def not_bool_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@st.composite
def records(draw):
    n = draw(st.integers(1, 3))
    out = []
    for k in range(n):
        boxes = draw(st.lists(box, min_size=1, max_size=2))
        m = len(boxes) + (draw(st.integers(0, 15)) == 7)
        record = {"image_id": draw(sometimes(st.just(100 + k))), "file_name": draw(sometimes(st.sampled_from(["a.jpg", "s/b.png"]))),
                  "width": draw(sometimes(st.integers(1, 90))), "height": draw(sometimes(st.integers(1, 90))),
                  "category_id": draw(ids), "label": draw(labels), "bbox": boxes,
                  "annotation_ids": [draw(ids) for _ in range(m)], "category_ids": [draw(ids) for _ in range(len(boxes))],
                  "labels": [draw(labels) for _ in range(len(boxes))], "generated_text": draw(sometimes(st.just("a cat")))}
        if draw(st.booleans()):
            record["variants"] = draw(sometimes(st.integers(0, MAX_VARIANTS)))
        if draw(st.integers(0, 15)) == 7:
            del record[draw(st.sampled_from(sorted(record)))]
        out.append(record)
    return out


@FUZZ
@given(data=records())
def test_records_load_with_their_types_or_raise_user_error_and_names_stay_inside_out(tmp_path, data):
    path = tmp_path / "records.json"
    path.write_text(json.dumps(data))  # NaN and Infinity as Python writes them
    try:
        loaded = load_records(path)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    out = tmp_path / "out" / "generation"
    for r in loaded:
        assert all(not_bool_int(r[key]) and r[key] >= 0 for key in ("image_id", "category_id"))
        assert name_problem(r["file_name"]) is None and r["width"] > 0 and r["height"] > 0
        assert all(isinstance(label, str) and label.strip() for label in [r["label"], *r["labels"]])
        assert all(not_bool_int(c) and c >= 0 for c in r["category_ids"] + r["annotation_ids"])
        assert all(0 <= v <= 1 and math.isfinite(v) for b in r["bbox"] for v in b)
        assert all(b[2] > b[0] and b[3] > b[1] for b in r["bbox"])
        variants = r.get("variants", 1)
        assert not_bool_int(variants) and 0 <= variants <= MAX_VARIANTS
        for k in range(min(variants, 3)):
            name = output_name(r["category_id"], r["image_id"], k, variants)
            assert plain_name_problem(name) is None and check_inside(out, out / name)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=records(), variants=st.one_of(st.none(), st.integers(1, 3)))
def test_stage2_plans_only_names_inside_its_output_folder(tmp_path, data, variants):
    """Stage 2's own planning (no model) on fuzzed records: every file it would write lies in OUT_DIR/<mode>."""
    path = tmp_path / "records.json"
    path.write_text(json.dumps(data))
    try:
        loaded = load_records(path)
    except UserError:
        return
    images = tmp_path / "images"
    for r in loaded:
        (images / r["file_name"]).parent.mkdir(parents=True, exist_ok=True)
        (images / r["file_name"]).write_bytes(b"")
    out_dir = tmp_path / "out" / "generation"
    items, _ = stage2.plan_work(loaded, images, out_dir, Namespace(variants=variants, seed=0, skip_missing=True))
    assert all(len(item.record["bbox"]) <= MAX_OBJECTS and check_inside(out_dir, out_dir / item.file_name) for item in items)


manifest_entry = st.fixed_dictionaries(
    {"file_name": sometimes(st.sampled_from(["3_0101.png", "3_0102_1.png"])), "source_image_id": ids},
    optional={"source_file_name": sometimes(st.just("a.jpg")), "prompt": sometimes(st.just("a cat")),
              "phrases": sometimes(st.just(["cat"])), "boxes": st.lists(box, max_size=2), "seed": ids,
              "variant": sometimes(st.integers(0, 5)), "working_size": sometimes(st.just([64, 48])),
              "width": sometimes(st.integers(1, 90)), "height": sometimes(st.integers(1, 90)),
              "steps": sometimes(st.integers(1, 50)), "guidance_scale": sometimes(st.floats(1, 9)),
              "keep_background": sometimes(st.booleans()), "feather": sometimes(st.floats(0, 8))},
)


def write_jsonl(path: Path, entries, torn: bool):
    text = b"".join(json.dumps(entry).encode() + b"\n" for entry in entries)  # big ints and NaN as Python writes them
    path.write_bytes(text[:-len(text) // 3] if torn and text else text)


@FUZZ
@given(entries=st.lists(manifest_entry, max_size=3), torn=st.booleans())
def test_manifest_entries_load_with_their_types_or_raise_user_error(tmp_path, entries, torn):
    write_jsonl(tmp_path / "manifest.jsonl", entries, torn)
    try:
        manifest = read_manifest(tmp_path)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    for name, entry in manifest.items():
        assert plain_name_problem(name) is None and check_inside(tmp_path, tmp_path / name)
        assert not_bool_int(entry["source_image_id"]) and entry["source_image_id"] >= 0
        assert 0 <= entry.get("variant", 0) < MAX_VARIANTS
        assert all(0 <= v <= 1 for b in entry.get("boxes", []) for v in b)


score_box = st.fixed_dictionaries({"label": labels, "category_id": ids, "box": box, "region_clip": sometimes(st.floats(-1, 1))},
                                  optional={"found": sometimes(st.booleans()), "detector_score": sometimes(st.floats(0, 1))})
detection = st.fixed_dictionaries({"label": sometimes(st.just("cat")), "box": box, "score": sometimes(st.floats(0, 1))})
score_entry = st.fixed_dictionaries(
    {"file_name": sometimes(st.sampled_from(["3_0101.png", "3_0102.png"])), "mode": sometimes(st.just("generation")),
     "source_image_id": ids, "category_id": ids, "label": labels, "sha256": sometimes(st.just("0" * 64)),
     "boxes": sometimes(st.lists(score_box, max_size=2)), "caption_clip": sometimes(st.floats(-1, 1)),
     "detections": sometimes(st.lists(detection, max_size=2)), "passed": sometimes(st.booleans()), "reasons": sometimes(st.just([]))},
    optional={"extra_objects": ids,
              "detections_min_score": sometimes(st.floats(0, 1)), "box_recall": sometimes(st.floats(0, 1))},
)


@FUZZ
@given(entries=st.lists(score_entry, max_size=3), torn=st.booleans(), partial=st.booleans())
def test_score_entries_load_with_their_types_or_raise_user_error(tmp_path, entries, torn, partial):
    for old in tmp_path.glob("*.jsonl"):
        old.unlink()
    write_jsonl(tmp_path / ("scores.partial.0.jsonl" if partial else "scores.jsonl"), entries, torn)
    try:
        scores = scorer.read_partial_scores(tmp_path) if partial else read_scores(tmp_path)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    for name, entry in scores.items():
        assert plain_name_problem(name) is None and check_inside(tmp_path, tmp_path / name)
        assert all(math.isfinite(b["region_clip"]) and 0 <= min(b["box"]) <= max(b["box"]) <= 1 for b in entry["boxes"])
        assert all(math.isfinite(d["score"]) and len(d["box"]) == 4 for d in entry["detections"])
        assert partial or isinstance(entry["passed"], bool)


pick = st.fixed_dictionaries({"mode": sometimes(st.sampled_from(["generation", "inpainting"])),
                              "file_name": sometimes(st.sampled_from(["3_0101.png", "3_0102_1.png"]))})


@FUZZ
@given(document=st.one_of(
    st.fixed_dictionaries({"picks": sometimes(st.lists(pick, max_size=3))},
                          optional={"format": sometimes(st.just("cocoaug-picks")), "version": sometimes(st.just(1)),
                                    "generated_dir": sometimes(st.just("/tmp/out")), "source": hostile}),
    hostile))
def test_picks_load_with_their_types_or_raise_user_error(tmp_path, document):
    path = tmp_path / "picks.json"
    path.write_text(json.dumps(document))
    try:
        picks_file = parse_picks(json.loads(path.read_text()), path)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    final = tmp_path / "final" / "images" / "generated"
    for p in picks_file.picks:
        assert plain_name_problem(p.mode) is None and plain_name_problem(p.file_name) is None
        assert check_inside(final, final / p.mode / f"{p.mode}_{p.file_name}")


@st.composite
def coco_files(draw):
    n_images = draw(st.integers(1, 3))
    images = [{"id": draw(sometimes(st.just(10 + i))), "file_name": draw(sometimes(st.sampled_from(["a.jpg", "b/c.png"]))),
               "width": draw(sometimes(st.integers(1, 60))), "height": draw(sometimes(st.integers(1, 60)))} for i in range(n_images)]
    categories = [{"id": draw(sometimes(st.just(3))), "name": draw(sometimes(st.just("cat")))}]
    xywh = st.builds(lambda x, y, w, h: [x, y, w, h], st.floats(0, 20), st.floats(0, 20), st.floats(0.5, 20), st.floats(0.5, 20))
    annotations = [{"id": draw(sometimes(st.just(100 + a))), "image_id": draw(sometimes(st.sampled_from([i["id"] for i in images]))),
                    "category_id": draw(sometimes(st.just(3))), "bbox": draw(st.integers(0, 15).flatmap(lambda k: st.lists(hostile, min_size=4, max_size=4) if k == 7 else sometimes(xywh))),
                    "iscrowd": draw(sometimes(st.just(0)))} for a in range(draw(st.integers(0, 3)))]
    return {"images": images, "annotations": annotations, "categories": categories}


@FUZZ
@given(data=coco_files())
def test_coco_files_load_with_their_types_or_raise_user_error(tmp_path, data):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    for annotation_dicts in (True, False):
        try:
            coco = load_coco(path, annotation_dicts=annotation_dicts)
        except UserError as exc:
            assert "\n" not in str(exc)
            continue
        assert (coco.ann_id >= 0).all() and (coco.ann_image_id >= 0).all() and (coco.ann_category_id >= 0).all()
        assert all(math.isfinite(v) for v in coco.ann_bbox_xywh.ravel()) and (coco.ann_bbox_xywh[:, 2:] > 0).all()
        for image_id, image in coco.image_by_id.items():
            assert not_bool_int(image_id) and image_id >= 0 and name_problem(image["file_name"]) is None
            assert not_bool_int(image["width"]) and image["width"] > 0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=coco_files())
def test_stage1_select_only_on_fuzzed_coco_exits_0_or_2_and_writes_only_inside_out(data):
    """Through the real stage 1 (in process): exit 0 or 2, and no file appears outside -o."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "images").mkdir()
        (root / "ann.json").write_text(json.dumps(data))
        before = set(root.rglob("*"))
        try:
            run_cli(stage1.main, stage1.build_parser(),
                    ["-i", str(root / "images"), "-a", str(root / "ann.json"), "-o", str(root / "out"), "--select-only"])
            code = 0
        except SystemExit as exc:
            code = exc.code
        assert code in (0, 2)
        new = {p for p in set(root.rglob("*")) - before if os.path.commonpath([p, root / "out"]) != str(root / "out")}
        assert new == set()


def test_the_strategies_reach_data_that_loads(tmp_path):
    """Guards the properties above: their inputs must include data every reader accepts, not only refusals."""
    from hypothesis import find

    def accepted(load, write):
        def check(data) -> bool:
            write(data)
            try:
                return bool(load())
            except UserError:
                return False
        return check

    records_path, coco_path = tmp_path / "records.json", tmp_path / "ann.json"
    few = settings(max_examples=1000, database=None, phases=[Phase.generate])  # the first found: no shrinking
    find(records(), accepted(lambda: load_records(records_path), lambda d: records_path.write_text(json.dumps(d))), settings=few)
    find(coco_files(), accepted(lambda: len(load_coco(coco_path).ann_id), lambda d: coco_path.write_text(json.dumps(d))), settings=few)
    write = lambda entries: write_jsonl(tmp_path / "scores.jsonl", entries, False)  # noqa: E731
    find(st.lists(score_entry, min_size=1, max_size=3), accepted(lambda: read_scores(tmp_path), write), settings=few)
    write = lambda entries: write_jsonl(tmp_path / "manifest.jsonl", entries, False)  # noqa: E731
    find(st.lists(manifest_entry, min_size=1, max_size=3), accepted(lambda: read_manifest(tmp_path), write), settings=few)
