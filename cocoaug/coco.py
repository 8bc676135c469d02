"""Loading and validating COCO annotation files.

Validation is vectorised over the annotation list (numpy), so a COCO-train-sized file costs
about as much as parsing it. Every message names the id at fault.

Every field the scripts use has its type and range: image, annotation and category ids are ints
from 0 to 2**63 - 1 (bools refused); image ``width`` and ``height`` ints > 0; ``file_name`` a
relative path with no ``..``, NUL byte, absolute or drive part (``cocoaug.paths.name_problem``);
category ``name`` a non-empty string; ``bbox`` four finite numbers ``[x, y, w, h]`` (not strings)
with w, h > 0; ``iscrowd`` 0 or 1.

``load_coco(path, annotation_dicts=False)`` is the fast way to get the columns alone (stage
1's selection): msgspec decodes only the fields they need and skips the rest of the file
(segmentations, areas, URLs) without building Python objects for it.
"""

import codecs
import gc
import json
import logging
import math
import mmap
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Annotated, TypedDict

import msgspec
import numpy as np
import orjson

from cocoaug.errors import UserError
from cocoaug.paths import name_problem, require_file

log = logging.getLogger(__name__)


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
    """A validated COCO file: the parsed dict plus numpy columns of the annotations.

    Loaded with ``annotation_dicts=False``, ``data`` is None, there are no annotation dicts
    (only the columns), and images and categories hold only the keys selection reads:
    ``id, file_name, width, height`` and ``id, name``.
    """

    path: Path
    data: dict | None
    image_by_id: dict
    category_by_id: dict
    ann_id: np.ndarray = field(repr=False)
    ann_image_id: np.ndarray = field(repr=False)
    ann_category_id: np.ndarray = field(repr=False)
    ann_bbox_xywh: np.ndarray = field(repr=False)
    ann_iscrowd: np.ndarray = field(repr=False)

    @property
    def images(self) -> list:
        return self.data["images"] if self.data is not None else list(self.image_by_id.values())

    @property
    def annotations(self) -> list:
        if self.data is None:
            raise ValueError(f"{self.path} was loaded with annotation_dicts=False: only the annotation columns exist")
        return self.data["annotations"]

    @property
    def categories(self) -> list:
        return self.data["categories"] if self.data is not None else list(self.category_by_id.values())


def load_coco(path, annotation_dicts: bool = True) -> CocoDataset:
    """Read and validate a COCO annotation file.

    ``annotation_dicts=False`` keeps only what selection needs (see CocoDataset), decoded by
    msgspec without building the rest of the file (BENCHMARKS.md). A file the fast decoder
    refuses (an error, or a form it does not take, such as ``"iscrowd": false``) is parsed in
    full instead, so the checks and messages are those of ``validate_coco`` either way.
    """
    path = require_file(path, "annotation file")
    if not annotation_dicts:
        # ValueError: invalid UTF-8 or an empty file (mmap); OverflowError: an integer beyond int64;
        # OSError: a file system that cannot map files. The full parse says what is wrong, if anything.
        try:
            return _load_columns(path)
        except (msgspec.DecodeError, ValueError, OverflowError, RecursionError, OSError, UserError) as exc:
            log.debug("%s: the fast decoder refused the file (%s); parsing it in full", path, exc)
    return validate_coco(read_json(path, "annotation file"), path)


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
    _check_file_names(images, source)
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


_Id = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_Size = Annotated[int, msgspec.Meta(gt=0)]


class _Image(TypedDict):
    id: _Id
    file_name: str
    width: _Size
    height: _Size


class _Category(TypedDict):
    id: _Id
    name: str


class _Annotation(msgspec.Struct, gc=False):  # gc=False: 750k plain records, no cycles to look for
    id: _Id
    image_id: _Id
    category_id: _Id
    bbox: tuple[float, float, float, float]
    iscrowd: int = 0


class _SelectionFields(msgspec.Struct):
    images: list[_Image]
    annotations: list[_Annotation]
    categories: list[_Category]


# msgspec checks types as it decodes (no bool for an int, exactly four numbers in a bbox) and
# skips every field not named above; it refuses NaN, which validate_coco then names.
_decode_selection_fields = msgspec.json.Decoder(_SelectionFields).decode


def _load_columns(path: Path) -> CocoDataset:
    """The checks of ``validate_coco`` on the fields selection needs, decoded by msgspec.

    Raises on the first problem (its messages are not shown); ``load_coco`` then parses the
    file in full for validate_coco's own message. One difference is left: an integer of more
    than 4,300 digits in a field selection does not read passes here, while Python's json
    module (the full parse's last resort) refuses the file.
    """
    # Mapped rather than read: msgspec decodes straight from the page cache, with no copy of
    # the whole file in memory. Decoded strings are copies, so the map can close right after.
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as raw:
        _check_utf8(raw)
        parsed = _decode_selection_fields(raw)
    images, annotations, categories = parsed.images, parsed.annotations, parsed.categories
    image_ids = np.fromiter((image["id"] for image in images), np.int64, len(images))
    sizes = np.fromiter((image[key] for image in images for key in ("width", "height")), np.int64, 2 * len(images))
    _check_unique(image_ids, "image", path)
    if not all(image["file_name"] for image in images) or (sizes <= 0).any():
        raise UserError("an image has no file_name or a size that is not positive", path)
    _check_file_names(images, path)
    category_ids = np.fromiter((category["id"] for category in categories), np.int64, len(categories))
    _check_unique(category_ids, "category", path)
    if not all(category["name"].strip() for category in categories):
        raise UserError("a category has no name", path)

    n = len(annotations)
    ann_ids, ann_image_ids, ann_category_ids, iscrowd = (
        np.fromiter(map(attrgetter(name), annotations), np.int64, n) for name in ("id", "image_id", "category_id", "iscrowd")
    )
    _check_unique(ann_ids, "annotation", path)
    _check_references(ann_ids, ann_image_ids, image_ids, "image_id", "image", path)
    _check_references(ann_ids, ann_category_ids, category_ids, "category_id", "category", path)
    bbox_values = chain.from_iterable(map(attrgetter("bbox"), annotations))
    bboxes = _check_bboxes(np.fromiter(bbox_values, np.float64, 4 * n).reshape(n, 4), ann_ids, path)
    if not ((iscrowd == 0) | (iscrowd == 1)).all():
        raise UserError("an annotation has an 'iscrowd' that is not 0 or 1", path)

    return CocoDataset(
        path=path,
        data=None,
        image_by_id=dict(zip(image_ids.tolist(), images)),
        category_by_id=dict(zip(category_ids.tolist(), categories)),
        ann_id=ann_ids,
        ann_image_id=ann_image_ids,
        ann_category_id=ann_category_ids,
        ann_bbox_xywh=bboxes,
        ann_iscrowd=iscrowd.astype(bool),
    )


def _check_utf8(raw, chunk: int = 1 << 20):
    """Raise UnicodeDecodeError unless ``raw`` (bytes-like) is UTF-8, decoding one chunk at a time.

    msgspec skips the strings of fields it does not decode without checking them, while the
    full parse refuses a file with invalid UTF-8 anywhere. ``chunk`` must hold a character
    (4 bytes or more).
    """
    with memoryview(raw) as view:
        start = 0
        while start < len(view):
            # Not final: a character cut at the chunk's end is left for the next chunk.
            _, consumed = codecs.utf_8_decode(view[start:start + chunk], "strict", start + chunk >= len(view))
            start += consumed


def _int_column(items, key, kind, source, ids=None) -> np.ndarray:
    """Return ``item[key]`` of every item as int64; name the first item where it is not an int."""
    try:
        values = [item[key] for item in items]
        column = np.array(values)
        if len(values) == 0:
            return np.zeros(0, dtype=np.int64)
        # A uint64 column holds a value of at least 2**63: beyond int64, so not taken.
        if column.dtype.kind == "i" and column.ndim == 1 and (column >= 0).all() and not _bools_at(values, column):
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
        if value < 0:
            raise UserError(f"{name} has a '{key}' that is negative: {value!r}; ids are integers >= 0", source)
    raise AssertionError("unreachable: a column failed to convert but every item is valid")


def _bools_at(items, column: np.ndarray) -> bool:
    """Whether a bool hides among ``items`` (numpy reads True as 1): only where ``column`` holds 0 or 1."""
    suspects = np.flatnonzero(((column == 0) | (column == 1)).reshape(len(column), -1).any(axis=1)).tolist()
    return any(type(value) is bool for i in suspects for value in (items[i] if column.ndim > 1 else (items[i],)))


def _describe(kind, index, item, ids) -> str:
    if ids is not None:
        return f"{kind} {ids[index]}"
    if isinstance(item, dict) and isinstance(item.get("id"), int) and not isinstance(item["id"], bool) and item["id"] >= 0:
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


def _check_file_names(images, source):
    """Refuse an image whose ``file_name`` is not a relative path inside the image folder (name_problem).

    A few scans in C over all the names find any that could be refused (a NUL byte, "..", ":", a
    leading slash, a blank name); only then is each name checked exactly.
    """
    names = [image["file_name"] for image in images]
    joined = "\n".join(names)
    if not ("\0" in joined or ".." in joined or ":" in joined or "\n/" in joined or "\n\\" in joined
            or joined.startswith(("/", "\\")) or not all(map(str.strip, names))):
        return
    for image in images:
        problem = name_problem(image["file_name"])
        if problem is not None:
            raise UserError(f"image {image['id']}: file_name {problem}, got {image['file_name']!r}", source)


def _check_references(ann_ids, refs, known, key, kind, source):
    unknown = ~np.isin(refs, known)
    if unknown.any():
        first = int(np.argmax(unknown))
        raise UserError(
            f"annotation {int(ann_ids[first])} points to unknown {kind} ({key} {int(refs[first])})", source
        )


def _bbox_column(annotations, ann_ids, source) -> np.ndarray:
    try:
        bboxes = [a["bbox"] for a in annotations]
        # No dtype first: numpy would read "48" as 48.0; strings and None make a column of another kind.
        column = np.array(bboxes)
        if column.dtype.kind not in "if" or column.shape != (len(annotations), 4) or _bools_at(bboxes, column):
            raise TypeError
        boxes = column.astype(np.float64, copy=False)
    except (KeyError, TypeError, ValueError, OverflowError):
        for index, annotation in enumerate(annotations):
            bbox = annotation.get("bbox")
            ok = isinstance(bbox, list) and len(bbox) == 4
            ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
            if not ok:
                raise UserError(
                    f"annotation {int(ann_ids[index])} has a 'bbox' that is not [x, y, w, h]: {bbox!r}", source
                ) from None
        boxes = np.array([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4)  # integers beyond int64
    return _check_bboxes(boxes, ann_ids, source)


def _check_bboxes(boxes: np.ndarray, ann_ids, source) -> np.ndarray:
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
