"""COCO box evaluation (cocoaug/detection_eval.py): faster-coco-eval gives pycocotools' numbers,
on synthetic sets with crowd boxes, every area range, false positives, empty detections and a
category with no ground truth; plus values checked by hand."""

import copy
import math

import numpy as np
import pytest

from cocoaug import detection_eval
from cocoaug.detection_eval import EvalResult

# Category 4 has no ground-truth box (the detector still finds "it" now and then).
CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "zebra"}, {"id": 4, "name": "kite"}]


def synthetic_set(seed: int, n_images: int = 40, crowd_share: float = 0.05):
    """Ground truth with boxes from 8 to 300 pixels, and detections: jittered true boxes with scores,
    missed boxes, duplicates and false positives in every category."""
    rng = np.random.default_rng(seed)
    gt = {"images": [], "annotations": [], "categories": CATEGORIES}
    detections = []
    for image_id in range(1, n_images + 1):
        gt["images"].append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 640, "height": 480})
        for _ in range(rng.integers(0, 7)):
            w, h = rng.uniform(8, 300, size=2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            category_id = int(rng.choice([1, 1, 1, 2, 2, 3]))
            ann_id = len(gt["annotations"]) + 1
            gt["annotations"].append({"id": ann_id, "image_id": image_id, "category_id": category_id,
                                      "bbox": [x, y, w, h], "area": w * h * rng.uniform(0.6, 1.0),
                                      "iscrowd": int(rng.random() < crowd_share)})
            for _ in range(rng.choice([0, 1, 1, 1, 2])):  # missed, found, or found twice
                jitter = rng.normal(0, 0.08, size=4) * [w, h, w, h]
                box = [x + jitter[0], y + jitter[1], max(1.0, w + jitter[2]), max(1.0, h + jitter[3])]
                detections.append({"image_id": image_id, "category_id": category_id, "bbox": box, "score": float(rng.random())})
        for _ in range(rng.integers(0, 4)):  # false positives, category 4 among them
            w, h = rng.uniform(5, 200, size=2)
            detections.append({"image_id": image_id, "category_id": int(rng.integers(1, 5)),
                               "bbox": [float(rng.uniform(0, 400)), float(rng.uniform(0, 300)), w, h],
                               "score": float(rng.random())})
    return gt, detections


def assert_same_result(a: EvalResult, b: EvalResult):
    assert a.summary.keys() == b.summary.keys() and a.per_class.keys() == b.per_class.keys()
    for key in a.summary:
        assert a.summary[key] == pytest.approx(b.summary[key], abs=1e-9, nan_ok=True), key
    for category_id in a.per_class:
        assert a.per_class[category_id] == pytest.approx(b.per_class[category_id], abs=1e-9, nan_ok=True), category_id


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_faster_coco_eval_equals_pycocotools(seed):
    gt, detections = synthetic_set(seed, crowd_share=0.1 if seed % 2 else 0.0)
    faster = detection_eval.evaluate(gt, detections, backend="faster")
    reference = detection_eval.evaluate(gt, detections, backend="pycocotools")
    assert_same_result(faster, reference)
    # A real measurement: neither perfect nor zero, and every size range has boxes to measure.
    assert 0.1 < faster.summary["AP"] < 0.95 and not any(math.isnan(v) for v in faster.summary.values())
    assert all(0 < faster.per_class[c] < 1 for c in (1, 2, 3))
    assert math.isnan(faster.per_class[4]) and math.isnan(reference.per_class[4])  # no ground truth: nothing to measure


def test_faster_coco_eval_equals_pycocotools_on_a_larger_set():
    gt, detections = synthetic_set(7, n_images=300, crowd_share=0.03)
    assert_same_result(detection_eval.evaluate(gt, detections), detection_eval.evaluate(gt, detections, backend="pycocotools"))


@pytest.mark.parametrize("backend", detection_eval.BACKENDS)
def test_no_detection_gives_zero_ap(backend):
    gt, _ = synthetic_set(0)
    result = detection_eval.evaluate(gt, [], backend=backend)
    assert all(value == 0 for value in result.summary.values())
    assert [result.per_class[c] for c in (1, 2, 3)] == [0, 0, 0] and math.isnan(result.per_class[4])


@pytest.mark.parametrize("backend", detection_eval.BACKENDS)
def test_perfect_detections_score_one_and_inputs_are_left_alone(backend):
    gt, _ = synthetic_set(5)
    detections = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
                  for a in gt["annotations"] if not a["iscrowd"]]
    before = copy.deepcopy((gt, detections))
    result = detection_eval.evaluate(gt, detections, backend=backend)
    assert result.summary["AP"] == pytest.approx(1.0) and result.per_class[1] == pytest.approx(1.0)
    assert (gt, detections) == before


@pytest.mark.parametrize("backend", detection_eval.BACKENDS)
def test_one_box_at_iou_062_is_found_at_three_thresholds_of_ten(backend):
    gt = {"images": [{"id": 1, "width": 200, "height": 200, "file_name": "a.jpg"}], "categories": CATEGORIES[:2],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "area": 10_000, "iscrowd": 0}]}
    # IoU 6200 / 10000 = 0.62: a match at the thresholds 0.5, 0.55 and 0.6 only.
    detection = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 62], "score": 0.5}
    result = detection_eval.evaluate(gt, [detection], backend=backend)
    assert result.summary["AP"] == pytest.approx(0.3) and result.summary["AP50"] == pytest.approx(1.0)
    assert result.summary["AP75"] == 0 and result.per_class[1] == pytest.approx(0.3)
    assert math.isnan(result.summary["APs"]) and math.isnan(result.summary["APm"])  # no small or medium box
    assert math.isnan(result.per_class[2])


def test_missing_iscrowd_and_area_take_their_defaults():
    gt, detections = synthetic_set(2, crowd_share=0.0)
    for ann in gt["annotations"]:
        ann["area"] = ann["bbox"][2] * ann["bbox"][3]
    expected = detection_eval.evaluate(gt, detections, backend="pycocotools")
    for ann in gt["annotations"]:
        del ann["iscrowd"], ann["area"]
    for backend in detection_eval.BACKENDS:
        assert_same_result(detection_eval.evaluate(gt, detections, backend=backend), expected)
    assert "area" not in gt["annotations"][0]  # the caller's dicts are left alone


def test_detections_on_unknown_images_are_refused():
    gt, detections = synthetic_set(0, n_images=3)
    with pytest.raises(ValueError, match=r"\[99\]"):
        detection_eval.evaluate(gt, detections + [{"image_id": 99, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1.0}])


def test_result_round_trips_through_json():
    result = EvalResult({"AP": 0.25, "APs": math.nan}, {1: 0.5, 4: math.nan})
    data = result.to_json()
    assert data == {"summary": {"AP": 0.25, "APs": None}, "per_class": {"1": 0.5, "4": None}}
    back = EvalResult.from_json(data)
    assert back.summary["AP"] == 0.25 and math.isnan(back.summary["APs"])
    assert back.per_class[1] == 0.5 and math.isnan(back.per_class[4])
