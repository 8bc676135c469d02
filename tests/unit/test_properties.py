"""Property tests: any input to the COCO loader and record reader either loads to valid data
or raises the project's one error type; box geometry keeps its invariants."""

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cocoaug.boxes import clip_xywh, xywh_pixels_to_xyxy_norm
from cocoaug.coco import load_coco, validate_coco
from cocoaug.errors import UserError
from cocoaug.records import load_records

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner, max_size=4), max_leaves=12)
ids = st.one_of(st.integers(0, 4), scalars)
bbox = st.one_of(st.lists(st.one_of(st.floats(-5, 50), st.integers(-5, 50), scalars), min_size=3, max_size=5), scalars)


@st.composite
def coco_like(draw):
    """Mostly well-formed COCO dicts with small id ranges (so duplicates and dangling references
    happen), then, a third of the time, one field anywhere replaced by an arbitrary value."""
    # Ids mostly unique and references mostly valid, so that many examples load; a draw of
    # "dup"/"dangling" breaks them now and then.
    n_images, n_categories = draw(st.integers(0, 4)), draw(st.integers(0, 3))
    image_ids = [i + 10 for i in range(n_images)] + ([10] if draw(st.integers(0, 5)) == 0 else [])
    category_ids = [c * 3 + 1 for c in range(n_categories)] + ([1] if draw(st.integers(0, 5)) == 0 else [])
    images = [
        {"id": i, "file_name": draw(st.sampled_from(["a.jpg", "b/c.png", "d e/é.jpg", "f.png", "g.png", ""])),
         "width": draw(st.integers(0, 60)), "height": draw(st.integers(1, 60))}
        for i in image_ids
    ]
    categories = [{"id": c, "name": draw(st.sampled_from(["cat", "dog", "bird", "car", "bus", ""]))} for c in category_ids]
    size = st.sampled_from([0, -3, float("nan")]) if draw(st.integers(0, 9)) == 0 else st.integers(1, 60) | st.floats(0.5, 60)
    refs_images = st.sampled_from(image_ids * 4 + [97]) if image_ids else st.just(97)
    refs_categories = st.sampled_from(category_ids * 4 + [96]) if category_ids else st.just(96)
    annotations = [
        {"id": draw(st.sampled_from([a] * 8 + [1])), "image_id": draw(refs_images), "category_id": draw(refs_categories),
         "bbox": [draw(st.floats(-5, 60)), draw(st.floats(-5, 60)), draw(size), draw(size)],
         "iscrowd": draw(st.integers(0, 1))}
        for a in range(1, draw(st.integers(0, 6)) + 1)
    ]
    data = {"images": images, "annotations": annotations, "categories": categories}
    if draw(st.integers(0, 2)) == 0:
        section = draw(st.sampled_from(sorted(data)))
        items = data[section]
        if items and draw(st.booleans()):
            item = items[draw(st.integers(0, len(items) - 1))]
            item[draw(st.sampled_from(sorted(item)))] = draw(values)
        elif draw(st.booleans()):
            del data[section]
        else:
            data[section] = draw(values)
    return data


@settings(max_examples=400, deadline=None)
@given(data=st.one_of(coco_like(), values))
def test_coco_loader_loads_valid_data_or_raises_user_error(data):
    try:
        coco = validate_coco(data, "x.json")
    except UserError:
        return
    image_ids = set(coco.image_by_id)
    assert all(int(i) in image_ids for i in coco.ann_image_id)
    assert all(int(c) in coco.category_by_id for c in coco.ann_category_id)
    assert len(set(coco.ann_id.tolist())) == len(coco.ann_id)
    assert np.isfinite(coco.ann_bbox_xywh).all() and (coco.ann_bbox_xywh[:, 2:] > 0).all()
    for img in coco.images:
        assert img["width"] > 0 and img["height"] > 0 and isinstance(img["file_name"], str)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_any_bytes_on_disk_load_or_raise_user_error(tmp_path, raw):
    path = tmp_path / "ann.json"
    path.write_bytes(raw)
    for loader in (load_coco, load_records, lambda p: load_coco(p, annotation_dicts=False)):
        try:
            loader(path)
        except UserError:
            pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(coco_like(), values))
def test_columns_only_load_agrees_with_the_full_load(tmp_path, data):
    """The msgspec fast path gives the full load's columns, or its very error message."""
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    outcomes = []
    for annotation_dicts in (True, False):
        try:
            outcomes.append(load_coco(path, annotation_dicts=annotation_dicts))
        except UserError as exc:
            outcomes.append(str(exc))
    full, fast = outcomes
    if isinstance(full, str):
        assert fast == full
        return
    for name in ("ann_id", "ann_image_id", "ann_category_id", "ann_bbox_xywh", "ann_iscrowd"):
        assert getattr(fast, name).dtype == getattr(full, name).dtype
        assert np.array_equal(getattr(fast, name), getattr(full, name)), name
    assert list(fast.image_by_id) == list(full.image_by_id) and list(fast.category_by_id) == list(full.category_by_id)
    for image_id, image in fast.image_by_id.items():
        assert all(image[key] == full.image_by_id[image_id][key] for key in ("file_name", "width", "height"))


record = st.fixed_dictionaries(
    {"image_id": ids},
    optional={
        "file_name": st.one_of(st.text(max_size=4), scalars), "width": st.one_of(st.integers(-1, 9), scalars),
        "height": st.one_of(st.integers(-1, 9), scalars), "category_id": ids, "label": scalars,
        "bbox": st.one_of(st.lists(bbox, max_size=3), scalars), "annotation_ids": values, "category_ids": values,
        "labels": values, "generated_text": st.one_of(st.text(max_size=4), scalars),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.one_of(st.lists(record, max_size=3), values))
def test_records_reader_loads_valid_records_or_raises_user_error(tmp_path, records):
    path = tmp_path / "blip2_post.json"
    path.write_text(json.dumps(records))
    try:
        loaded = load_records(path)
    except UserError:
        return
    for r in loaded:
        boxes = np.array(r["bbox"], dtype=float)
        assert ((boxes >= 0) & (boxes <= 1)).all() and (boxes[:, 2:] > boxes[:, :2]).all()
        assert len(r["labels"]) == len(r["bbox"])


finite = st.floats(-1e4, 1e4, allow_nan=False)


@given(x=finite, y=finite, w=st.floats(0, 1e4), h=st.floats(0, 1e4), width=st.integers(1, 5000), height=st.integers(1, 5000))
def test_clipped_boxes_stay_inside_the_image(x, y, w, h, width, height):
    clipped = clip_xywh([[x, y, w, h]], width, height)[0]
    assert clipped[0] >= 0 and clipped[1] >= 0 and clipped[2] >= 0 and clipped[3] >= 0
    assert clipped[0] + clipped[2] <= width + 1e-9 and clipped[1] + clipped[3] <= height + 1e-9
    assert clipped[2] <= w + 1e-9 and clipped[3] <= h + 1e-9
    norm = xywh_pixels_to_xyxy_norm([[x, y, w, h]], width, height)[0]
    assert ((norm >= 0) & (norm <= 1)).all() and norm[2] >= norm[0] and norm[3] >= norm[1]


def test_the_coco_strategy_reaches_valid_files_with_annotations():
    """Guards the property above: its inputs must include files that load, not only broken ones."""
    from hypothesis import find

    def loads_with_annotations(data):
        try:
            coco = validate_coco(data, "x.json")
        except UserError:
            return False
        return len(coco.ann_id) >= 3 and len(coco.image_by_id) >= 2

    assert loads_with_annotations(find(coco_like(), loads_with_annotations, settings=settings(max_examples=2000)))
