"""Loading and validating COCO annotation files.

Validation is vectorised over the annotation list (numpy), so a COCO-train-sized file costs
about as much as parsing it. Every message names the id at fault.
"""

import gc
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from cocoaug.errors import UserError
from cocoaug.paths import require_file


def read_json(path, what: str = "JSON file"):
    """Parse a JSON file; a missing, empty or malformed file raises UserError naming it.

    ``NaN`` and ``Infinity`` (which Python's json module writes) are accepted here so that
    validation can name the record that holds them.
    """
    path = require_file(path, what)
    raw = path.read_bytes()
    if not raw.strip():
        raise UserError(f"{what} is empty", path)
    # A COCO file parses into millions of lists and dicts; the cyclic garbage collector would
    # rescan them over and over while they are created (two thirds of the parse time on a
    # COCO-train-sized file) and finds nothing to free, since parsed JSON has no cycles.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as fast_error:
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise UserError(f"{what} is not valid JSON: {fast_error}", path) from None
    finally:
        if gc_was_enabled:
            gc.enable()


@dataclass
class CocoDataset:
    """A validated COCO file: the parsed dict plus numpy columns of the annotations."""

    path: Path
    data: dict
    image_by_id: dict
    category_by_id: dict
    ann_id: np.ndarray = field(repr=False)
    ann_image_id: np.ndarray = field(repr=False)
    ann_category_id: np.ndarray = field(repr=False)
    ann_bbox_xywh: np.ndarray = field(repr=False)
    ann_iscrowd: np.ndarray = field(repr=False)

    @property
    def images(self) -> list:
        return self.data["images"]

    @property
    def annotations(self) -> list:
        return self.data["annotations"]

    @property
    def categories(self) -> list:
        return self.data["categories"]


def load_coco(path) -> CocoDataset:
    """Read and validate a COCO annotation file."""
    path = Path(path)
    data = read_json(path, "annotation file")
    return validate_coco(data, path)


def validate_coco(data, source) -> CocoDataset:
    """Check the structure and references of parsed COCO ``data``; ``source`` names it in errors."""
    if not isinstance(data, dict):
        raise UserError("not a COCO annotation file: the top level must be an object", source)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise UserError(f"not a COCO annotation file: missing top-level key '{key}'", source)
        if not isinstance(data[key], list):
            raise UserError(f"not a COCO annotation file: '{key}' must be a list", source)

    images, annotations, categories = data["images"], data["annotations"], data["categories"]
    image_ids = _int_column(images, "id", "image", source)
    _check_unique(image_ids, "image", source)
    for image in images:
        _check_image(image, source)
    category_ids = _int_column(categories, "id", "category", source)
    _check_unique(category_ids, "category", source)
    for category in categories:
        if not isinstance(category.get("name"), str) or not category["name"].strip():
            raise UserError(f"category {category['id']} has no name", source)

    ann_ids = _int_column(annotations, "id", "annotation", source)
    _check_unique(ann_ids, "annotation", source)
    ann_image_ids = _int_column(annotations, "image_id", "annotation", source, ann_ids)
    ann_category_ids = _int_column(annotations, "category_id", "annotation", source, ann_ids)
    _check_references(ann_ids, ann_image_ids, image_ids, "image_id", "image", source)
    _check_references(ann_ids, ann_category_ids, category_ids, "category_id", "category", source)
    bboxes = _bbox_column(annotations, ann_ids, source)
    iscrowd = _iscrowd_column(annotations, ann_ids, source)

    return CocoDataset(
        path=Path(source),
        data=data,
        image_by_id=dict(zip(image_ids.tolist(), images)),
        category_by_id=dict(zip(category_ids.tolist(), categories)),
        ann_id=ann_ids,
        ann_image_id=ann_image_ids,
        ann_category_id=ann_category_ids,
        ann_bbox_xywh=bboxes,
        ann_iscrowd=iscrowd,
    )


def _int_column(items, key, kind, source, ids=None) -> np.ndarray:
    """Return ``item[key]`` of every item as int64; name the first item where it is not an int."""
    try:
        values = [item[key] for item in items]
        column = np.array(values)
        if len(values) == 0:
            return np.zeros(0, dtype=np.int64)
        if column.dtype.kind in "iu" and column.ndim == 1:
            return column.astype(np.int64)
    except (KeyError, TypeError, ValueError, OverflowError):
        pass
    for index, item in enumerate(items):
        name = _describe(kind, index, item, ids)
        if not isinstance(item, dict):
            raise UserError(f"{name} is not an object", source)
        value = item.get(key)
        if key not in item:
            raise UserError(f"{name} has no '{key}'", source)
        if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
            raise UserError(f"{name} has a '{key}' that is not an integer: {value!r}", source)
    raise AssertionError("unreachable: a column failed to convert but every item is valid")


def _describe(kind, index, item, ids) -> str:
    if ids is not None:
        return f"{kind} {ids[index]}"
    if isinstance(item, dict) and isinstance(item.get("id"), int):
        return f"{kind} {item['id']}"
    return f"{kind} at index {index}"


def _check_unique(ids: np.ndarray, kind: str, source):
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise UserError(f"duplicate {kind} id {int(values[counts > 1][0])}", source)


def _check_image(image: dict, source):
    name = f"image {image['id']}"
    file_name = image.get("file_name")
    if not isinstance(file_name, str) or not file_name:
        raise UserError(f"{name} has no 'file_name'", source)
    for key in ("width", "height"):
        value = image.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UserError(f"{name} has a '{key}' that is not a positive integer: {value!r}", source)


def _check_references(ann_ids, refs, known, key, kind, source):
    unknown = ~np.isin(refs, known)
    if unknown.any():
        first = int(np.argmax(unknown))
        raise UserError(
            f"annotation {int(ann_ids[first])} points to unknown {kind} ({key} {int(refs[first])})", source
        )


def _bbox_column(annotations, ann_ids, source) -> np.ndarray:
    try:
        boxes = np.array([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4)
        if len(boxes) != len(annotations):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        for index, annotation in enumerate(annotations):
            bbox = annotation.get("bbox")
            ok = isinstance(bbox, list) and len(bbox) == 4
            ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
            if not ok:
                raise UserError(
                    f"annotation {int(ann_ids[index])} has a 'bbox' that is not [x, y, w, h]: {bbox!r}", source
                ) from None
        raise
    bad = ~np.isfinite(boxes).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        raise UserError(f"annotation {int(ann_ids[first])} has a bbox with NaN or infinity", source)
    bad = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0)
    if bad.any():
        first = int(np.argmax(bad))
        w, h = boxes[first, 2], boxes[first, 3]
        kind = "negative" if min(w, h) < 0 else "zero"
        raise UserError(
            f"annotation {int(ann_ids[first])} has a bbox of {kind} size (w={_num(w)}, h={_num(h)})", source
        )
    return boxes


def _num(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and value == int(value) else str(value)


def _iscrowd_column(annotations, ann_ids, source) -> np.ndarray:
    values = [a.get("iscrowd", 0) for a in annotations]
    try:
        column = np.array(values, dtype=np.int64)
        if ((column == 0) | (column == 1)).all():
            return column.astype(bool)
    except (TypeError, ValueError, OverflowError):
        pass
    for index, value in enumerate(values):
        if value not in (0, 1) or isinstance(value, float):
            raise UserError(f"annotation {int(ann_ids[index])} has an 'iscrowd' that is not 0 or 1: {value!r}", source)
    return np.array(values, dtype=bool)
