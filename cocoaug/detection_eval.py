"""COCO box evaluation of a detector's detections: AP, AP50, AP75, APs/m/l and AP per category.

Two backends give the same numbers (tests/unit/test_detection_eval.py checks it on several sets):
``faster`` (the faster-coco-eval package, C++ matching and accumulation; the default) and
``pycocotools`` (the reference COCOeval). Both run on copies: the ground truth and the
detections passed in are left as they were (both libraries add keys to the dicts they index).
A ground-truth box without ``iscrowd`` counts as not crowd, one without ``area`` takes its
box's w * h (COCOeval sorts boxes into small / medium / large by ``area``), as the project's
COCO reader allows both to be missing and pycocotools would fail on them.

Values are fractions (0 to 1). Where COCOeval has nothing to measure (no ground-truth box in an
area range, or a category with no ground-truth box) it writes -1; here that is NaN, so that a
mean over categories or seeds cannot take it for a score (``nanmean`` leaves it out).
"""

import contextlib
import io
import math
from dataclasses import dataclass

import numpy as np

BACKENDS = ("faster", "pycocotools")
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@dataclass
class EvalResult:
    """``summary``: SUMMARY_KEYS -> value; ``per_class``: COCO category id -> AP@[.5:.95] (NaN without ground truth)."""

    summary: dict[str, float]
    per_class: dict[int, float]

    def to_json(self) -> dict:
        """As plain JSON: NaN as null, category ids as strings (JSON keys)."""
        return {"summary": {key: _json_number(value) for key, value in self.summary.items()},
                "per_class": {str(cat): _json_number(value) for cat, value in self.per_class.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "EvalResult":
        """Read back what ``to_json`` wrote (null as NaN)."""
        return cls({key: _from_json_number(value) for key, value in data["summary"].items()},
                   {int(cat): _from_json_number(value) for cat, value in data["per_class"].items()})


def evaluate(gt: dict, detections: list[dict], *, backend: str = "faster") -> EvalResult:
    """Evaluate ``detections`` (dicts with image_id, category_id, bbox [x, y, w, h] in pixels, score)
    against the COCO annotations dict ``gt``. No detection at all gives AP 0 for every category
    with ground truth."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown evaluation backend {backend!r}, expected one of {BACKENDS}")
    image_ids = {image["id"] for image in gt["images"]}
    strays = {d["image_id"] for d in detections} - image_ids
    if strays:
        raise ValueError(f"detections for image ids not in the ground truth: {sorted(strays)[:10]}")
    # Both libraries write into the dicts they are given: hand them copies.
    gt = {**gt, "annotations": [{"iscrowd": 0, "area": ann["bbox"][2] * ann["bbox"][3], **ann} for ann in gt["annotations"]]}
    detections = [dict(d) for d in detections]
    if backend == "faster":
        from faster_coco_eval import COCO, COCOeval_faster

        def quiet(*args, **kwargs):
            pass

        coco_gt = COCO(gt, print_function=quiet)
        coco_dt = coco_gt.loadRes(detections) if detections else _empty_results(COCO(print_function=quiet), gt)
        coco_eval = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=quiet)
        coco_eval.run()
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            coco_gt = COCO()
            coco_gt.dataset = gt
            coco_gt.createIndex()
            # pycocotools' loadRes fails on an empty list.
            coco_dt = coco_gt.loadRes(detections) if detections else _empty_results(COCO(), gt)
            coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
    summary = {key: _score(value) for key, value in zip(SUMMARY_KEYS, coco_eval.stats[:len(SUMMARY_KEYS)])}
    return EvalResult(summary, per_class_ap(coco_eval.eval["precision"], coco_eval.params.catIds))


def per_class_ap(precision: np.ndarray, category_ids) -> dict[int, float]:
    """AP@[.5:.95] of each category from COCOeval's precision array [iou, recall, category, area, max dets]:
    the mean over IoU thresholds and recall points, all areas, 100 detections per image."""
    result = {}
    for k, category_id in enumerate(category_ids):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        result[int(category_id)] = float(values.mean()) if values.size else math.nan
    return result


def _empty_results(coco, gt: dict):
    """A results object with no detection, for the images and categories of ``gt``."""
    coco.dataset = {"images": list(gt["images"]), "categories": list(gt["categories"]), "annotations": []}
    coco.createIndex()
    return coco


def _score(value) -> float:
    return math.nan if value < 0 else float(value)


def _json_number(value: float):
    return None if math.isnan(value) else value


def _from_json_number(value):
    return math.nan if value is None else float(value)
