"""How ``score_images.py`` judges a picture, without any model: box overlap, matching detections
to boxes, the padded crop each box's CLIP score sees, per-category percentiles and the pass rule.

Boxes are normalised ``[x0, y0, x1, y1]`` (stage 1's ``bbox``); detections are the detector's
boxes of the record's labels, in the same frame, with their scores. Everything here is plain
numpy and Python so that a change of thresholds re-judges stored scores with no model loaded.
"""

from dataclasses import dataclass

import numpy as np

CROP_PADDING = 0.10  # each side of a box grows by this fraction of the box's width / height


@dataclass(frozen=True)
class Detection:
    """One detector output: the label it was queried with, its normalised xyxy box and its score."""

    label: str
    box: tuple[float, float, float, float]
    score: float


@dataclass(frozen=True)
class Thresholds:
    """The flags of the pass rule."""

    min_iou: float = 0.5
    min_detector_score: float = 0.1
    min_region_clip: float = 0.21
    max_extra_objects: int = 0


@dataclass(frozen=True)
class BoxMatch:
    """What the detector says about one box: ``found``, and the detection that decided it.

    For a found box, ``best_iou`` and ``detector_score`` are those of its matched detection; for
    a box not found, those of the detection of its label that overlaps it most, at any score
    (0 and 0 when there is none), so a reader sees whether the place or the confidence failed.
    """

    found: bool
    best_iou: float
    detector_score: float


def box_iou(boxes_a, boxes_b) -> np.ndarray:
    """Intersection over union of every box of ``boxes_a`` (N x 4, xyxy) with every box of ``boxes_b`` (M x 4): N x M."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    left_top = np.maximum(a[:, None, :2], b[None, :, :2])
    right_bottom = np.minimum(a[:, None, 2:], b[None, :, 2:])
    intersection = np.clip(right_bottom - left_top, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).clip(0, None).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def match_boxes(boxes, labels: list[str], detections: list[Detection], min_iou: float, min_score: float) -> tuple[list[BoxMatch], int]:
    """Match detections to boxes one-to-one, greedily by score; return each box's match and the extra objects.

    Detections scoring at least ``min_score`` are taken from the most confident down (ties in
    list order); each takes the unmatched box of its label it overlaps most, if that IoU is at
    least ``min_iou`` (ties: the first box). Extra objects are confident detections that overlap
    no box of their label by ``min_iou`` (so a second detection of a boxed object is not one),
    counted once per object: among themselves they are merged greedily at IoU ``min_iou``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    iou = box_iou(boxes, [d.box for d in detections]) if detections else np.zeros((len(boxes), 0))
    same_label = np.array([[d.label == label for d in detections] for label in labels], dtype=bool).reshape(len(boxes), len(detections))
    iou = np.where(same_label, iou, 0.0)

    confident = [j for j in sorted(range(len(detections)), key=lambda j: -detections[j].score) if detections[j].score >= min_score]
    matched: dict[int, int] = {}  # box index -> detection index
    for j in confident:
        free = [i for i in range(len(boxes)) if i not in matched and same_label[i, j] and iou[i, j] >= min_iou]
        if free:
            matched[max(free, key=lambda i: (iou[i, j], -i))] = j

    matches = []
    for i in range(len(boxes)):
        if i in matched:
            j = matched[i]
            matches.append(BoxMatch(True, float(iou[i, j]), float(detections[j].score)))
        elif same_label[i].any():
            j = max(np.flatnonzero(same_label[i]), key=lambda j: (iou[i, j], detections[j].score))
            matches.append(BoxMatch(False, float(iou[i, j]), float(detections[j].score)))
        else:
            matches.append(BoxMatch(False, 0.0, 0.0))

    unboxed = [j for j in confident if j not in matched.values() and not (iou[:, j] >= min_iou).any() and detections[j].label in labels]
    extra_objects: list[int] = []
    for j in unboxed:
        seen = any(detections[k].label == detections[j].label and box_iou([detections[j].box], [detections[k].box])[0, 0] >= min_iou
                   for k in extra_objects)
        if not seen:
            extra_objects.append(j)
    return matches, len(extra_objects)


def padded_crop(box_xyxy_norm, width: int, height: int, padding: float = CROP_PADDING) -> tuple[int, int, int, int]:
    """The pixel rectangle (left, top, right, bottom) CLIP sees for a box: the box grown on each side
    by ``padding`` of its size, clipped to the picture, rounded outwards, at least one pixel wide and high."""
    x0, y0, x1, y1 = (float(v) for v in box_xyxy_norm)
    pad_x, pad_y = padding * (x1 - x0) * width, padding * (y1 - y0) * height
    left = int(np.floor(max(0.0, x0 * width - pad_x)))
    top = int(np.floor(max(0.0, y0 * height - pad_y)))
    right = int(np.ceil(min(float(width), x1 * width + pad_x)))
    bottom = int(np.ceil(min(float(height), y1 * height + pad_y)))
    left, top = min(left, width - 1), min(top, height - 1)
    return left, top, max(right, left + 1), max(bottom, top + 1)


def percentiles(values) -> np.ndarray:
    """Each value's percentile among ``values``: the fraction of them that are less than or equal to it.

    The highest gets 1.0 and the lowest of n distinct values 1/n; equal values share a percentile.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    ordered = np.sort(values)
    return np.searchsorted(ordered, values, side="right") / values.size


NSFW_REASON = "nsfw"  # the reason of a picture the generator's safety checker flagged


def judge(boxes, labels: list[str], detections: list[Detection], region_clips: list[float], thresholds: Thresholds,
          nsfw: bool = False) -> dict:
    """The per-box and per-picture verdict of one picture (everything except the percentiles); a picture
    the safety checker flagged (``nsfw``) fails, with the reason "nsfw" first.

    Returns ``{"boxes": [{"found", "best_iou", "detector_score"}, ...], "box_recall",
    "min_region_clip", "extra_objects", "passed", "reasons"}``.
    """
    matches, extra_objects = match_boxes(boxes, labels, detections, thresholds.min_iou, thresholds.min_detector_score)
    reasons = [NSFW_REASON] if nsfw else []
    reasons += [f"box {i} ({label}) not found" for i, (label, match) in enumerate(zip(labels, matches)) if not match.found]
    reasons += [f"box {i} ({label}) region_clip {clip:.3f} < {thresholds.min_region_clip}"
                for i, (label, clip) in enumerate(zip(labels, region_clips)) if clip < thresholds.min_region_clip]
    if extra_objects > thresholds.max_extra_objects:
        reasons.append(f"{extra_objects} extra object(s) > {thresholds.max_extra_objects}")
    return {
        "boxes": [{"found": m.found, "best_iou": m.best_iou, "detector_score": m.detector_score} for m in matches],
        "box_recall": sum(m.found for m in matches) / len(matches) if matches else 1.0,
        "min_region_clip": float(min(region_clips)) if len(region_clips) else None,
        "extra_objects": extra_objects,
        "passed": not reasons,
        "reasons": reasons,
    }
