"""COCO loading and validation: each bad input raises UserError naming the id at fault."""

import copy
import json

import numpy as np
import pytest

from cocoaug.coco import load_coco, read_json, validate_coco
from cocoaug.errors import UserError

GOOD = {
    "images": [
        {"id": 10, "file_name": "a.jpg", "width": 100, "height": 50},
        {"id": 11, "file_name": "sub/b.png", "width": 40, "height": 80},
    ],
    "annotations": [
        {"id": 1, "image_id": 10, "category_id": 3, "bbox": [10, 5, 20, 10], "area": 200, "iscrowd": 0},
        {"id": 2, "image_id": 11, "category_id": 7, "bbox": [0, 0, 40.5, 80], "area": 3240, "iscrowd": 1},
    ],
    "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
}


def mutated(change):
    data = copy.deepcopy(GOOD)
    change(data)
    return data


def test_valid_file_loads_with_columns(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(GOOD))
    coco = load_coco(path)
    assert coco.ann_id.tolist() == [1, 2]
    assert coco.ann_image_id.tolist() == [10, 11]
    assert coco.ann_category_id.tolist() == [3, 7]
    np.testing.assert_array_equal(coco.ann_bbox_xywh, [[10, 5, 20, 10], [0, 0, 40.5, 80]])
    assert coco.ann_iscrowd.tolist() == [False, True]
    assert coco.image_by_id[11]["file_name"] == "sub/b.png"
    assert coco.category_by_id[7]["name"] == "dog"


def test_empty_lists_are_valid():
    coco = validate_coco({"images": [], "annotations": [], "categories": []}, "x.json")
    assert coco.ann_bbox_xywh.shape == (0, 4)


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key(key):
    with pytest.raises(UserError, match=f"missing top-level key '{key}'"):
        validate_coco(mutated(lambda d: d.pop(key)), "x.json")


OFFENDERS = [
    (lambda d: d["images"].append({"id": 10, "file_name": "c.jpg", "width": 1, "height": 1}), "duplicate image id 10"),
    (lambda d: d["annotations"].append(dict(d["annotations"][0])), "duplicate annotation id 1"),
    (lambda d: d["categories"].append({"id": 7, "name": "x"}), "duplicate category id 7"),
    (lambda d: d["annotations"][1].update(image_id=99), r"annotation 2 points to unknown image \(image_id 99\)"),
    (lambda d: d["annotations"][0].update(category_id=5), r"annotation 1 points to unknown category \(category_id 5\)"),
    (lambda d: d["annotations"][1].update(bbox=[0, 0, float("nan"), 3]), "annotation 2 has a bbox with NaN"),
    (lambda d: d["annotations"][0].update(bbox=[0, 0, -4, 3]), "annotation 1 has a bbox of negative size"),
    (lambda d: d["annotations"][1].update(bbox=[0, 0, 5, 0]), "annotation 2 has a bbox of zero size"),
    (lambda d: d["annotations"][1].update(bbox=[0, 0, 5]), "annotation 2 has a 'bbox' that is not"),
    (lambda d: d["annotations"][0].pop("image_id"), "annotation 1 has no 'image_id'"),
    (lambda d: d["annotations"][1].update(id="2"), "annotation at index 1 has a 'id' that is not an integer"),
    (lambda d: d["images"][1].update(width=0), "image 11 has a 'width' that is not a positive integer"),
    (lambda d: d["images"][0].pop("file_name"), "image 10 has no 'file_name'"),
    (lambda d: d["categories"][0].update(name=""), "category 3 has no name"),
    (lambda d: d["annotations"][0].update(iscrowd=2), "annotation 1 has an 'iscrowd' that is not 0 or 1"),
    (lambda d: d["images"].append("oops"), "image at index 2 is not an object"),
    (lambda d: d["annotations"][0].update(id=2**63), "annotation 9223372036854775808 has a 'id' that is not an integer"),
    # Alone, 2**63 makes numpy build a uint64 column, which must not wrap round to -2**63.
    (lambda d: d.update(annotations=[dict(d["annotations"][0], id=2**63)]), "annotation 9223372036854775808 has a 'id'"),
]


@pytest.mark.parametrize("change, message", OFFENDERS)
def test_validation_names_the_offender(change, message):
    with pytest.raises(UserError, match=message) as info:
        validate_coco(mutated(change), "ann.json")
    assert info.value.culprit == "ann.json"


def test_nan_written_by_python_json_is_named(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(mutated(lambda d: d["annotations"][0].update(bbox=[1, 1, float("nan"), 2]))))
    with pytest.raises(UserError, match="annotation 1 has a bbox with NaN"):
        load_coco(path)


@pytest.mark.parametrize(
    "content, message",
    [(b"", "is empty"), (b"  \n", "is empty"), (b'{"images": [', "not valid JSON"), (b"\xff\xfe", "not valid JSON")],
)
def test_bad_json_files(tmp_path, content, message):
    path = tmp_path / "ann.json"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as info:
        read_json(path)
    assert str(path) in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_coco(tmp_path / "nope.json")
    with pytest.raises(UserError, match="is not a file"):
        load_coco(tmp_path)


def test_top_level_list_is_refused():
    with pytest.raises(UserError, match="top level must be an object"):
        validate_coco([], "x.json")


# load_coco(path, annotation_dicts=False) decodes only what selection needs (msgspec); on any
# problem it parses the file in full, so each message must be the one validate_coco gives.

@pytest.mark.parametrize("change, message", OFFENDERS)
def test_columns_only_load_gives_the_same_messages(tmp_path, change, message):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(mutated(change)))
    with pytest.raises(UserError, match=message) as fast:
        load_coco(path, annotation_dicts=False)
    with pytest.raises(UserError) as full:
        load_coco(path)
    assert str(fast.value) == str(full.value) and fast.value.culprit == path


def assert_same_columns(fast, full):
    for name in ("ann_id", "ann_image_id", "ann_category_id", "ann_bbox_xywh", "ann_iscrowd"):
        a, b = getattr(fast, name), getattr(full, name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert list(fast.image_by_id) == list(full.image_by_id) and list(fast.category_by_id) == list(full.category_by_id)
    for image_id, image in full.image_by_id.items():
        assert fast.image_by_id[image_id] == {key: image[key] for key in ("id", "file_name", "width", "height")}
    for category_id, category in full.category_by_id.items():
        assert fast.category_by_id[category_id] == {"id": category["id"], "name": category["name"]}


def test_columns_only_load_equals_the_full_load(tmp_path):
    data = mutated(lambda d: d["images"][0].update(file_name="café/日本.jpg", license=3, coco_url="http://x"))
    data["annotations"][0]["segmentation"] = [[1.5, 2, 3, 4, 5, 6]]
    data["annotations"][1]["segmentation"] = {"counts": "abc", "size": [80, 40]}
    del data["annotations"][0]["iscrowd"]
    data["info"] = {"description": "日" * 400_000}  # over 1 MiB of 3-byte characters: the UTF-8 check goes by chunks
    path = tmp_path / "ann.json"
    path.write_bytes(json.dumps(data, ensure_ascii=False).encode())
    fast, full = load_coco(path, annotation_dicts=False), load_coco(path)
    assert fast.data is None and full.data is not None
    assert_same_columns(fast, full)
    assert [c["name"] for c in fast.categories] == ["cat", "dog"] and fast.images[1]["file_name"] == "sub/b.png"
    with pytest.raises(ValueError, match="annotation_dicts=False"):
        fast.annotations


@pytest.mark.parametrize("change", [
    lambda d: d["annotations"][0].update(iscrowd=False),  # the full load takes a bool here, msgspec's int does not
])
def test_columns_only_load_parses_in_full_what_msgspec_does_not_take(tmp_path, change):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(mutated(change)))
    fast = load_coco(path, annotation_dicts=False)
    assert fast.data is not None  # parsed in full
    assert_same_columns(fast, load_coco(path))


@pytest.mark.parametrize("change, message", [
    # numpy would read the strings as numbers, and True as 1 (issue 18: stage 1 accepted string boxes)
    (lambda d: d["annotations"][1].update(bbox=["48", "150", "40.5", "80"]), "annotation 2 has a 'bbox' that is not"),
    (lambda d: d["annotations"][1].update(bbox=[0, 0, True, 80]), "annotation 2 has a 'bbox' that is not"),
    (lambda d: d["annotations"][1].update(category_id=True), "annotation 2 has a 'category_id' that is not an integer"),
    (lambda d: d["annotations"][1].update(image_id=-11), "annotation 2 has a 'image_id' that is negative"),
    (lambda d: d["images"][0].update(id=-1), "image at index 0 has a 'id' that is negative"),
    (lambda d: d["images"][1].update(file_name="a\x00b.png"), r"image 11: file_name holds a NUL byte, got 'a\\x00b.png'"),
    (lambda d: d["images"][1].update(file_name="../../x.png"), "image 11: file_name climbs out of the image folder"),
    (lambda d: d["images"][1].update(file_name="C:\\x.png"), "image 11: file_name is an absolute path"),
])
def test_both_loads_refuse_what_the_schema_refuses(tmp_path, change, message):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(mutated(change)))
    for annotation_dicts in (True, False):
        with pytest.raises(UserError, match=message):
            load_coco(path, annotation_dicts=annotation_dicts)


@pytest.mark.parametrize("skipped", [b'"\xff\xfe"', b'"\xed\xa0"', b"[" * 1100 + b"]" * 1100])
def test_columns_only_load_refuses_what_the_full_load_refuses(tmp_path, skipped):
    """Invalid UTF-8 or too deep nesting in a field msgspec skips: the file is still not valid JSON."""
    path = tmp_path / "ann.json"
    text = json.dumps(GOOD).encode()
    path.write_bytes(text[:-1] + b', "extra": ' + skipped + b"}")
    for annotation_dicts in (True, False):
        with pytest.raises(UserError, match="not valid JSON"):
            load_coco(path, annotation_dicts=annotation_dicts)


@pytest.mark.parametrize("content, message", [(b"", "is empty"), (b" \n", "is empty"), (b'{"images": [', "not valid JSON")])
def test_columns_only_load_of_an_empty_or_cut_file(tmp_path, content, message):
    path = tmp_path / "ann.json"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_coco(path, annotation_dicts=False)
