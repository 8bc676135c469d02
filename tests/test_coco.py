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


@pytest.mark.parametrize(
    "change, message",
    [
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
    ],
)
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
