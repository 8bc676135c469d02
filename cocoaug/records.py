"""Stage-1 records (``blip2_post.json``): one object per selected image, read by every later stage.

A record::

    {"image_id": 101, "file_name": "extra/a.png", "width": 640, "height": 480,
     "category_id": 3, "label": "ball",            # the image's (first) category
     "bbox": [[x0, y0, x1, y1], ...],               # normalised to [0, 1], clipped
     "annotation_ids": [...], "category_ids": [...], "labels": [...],   # one per box
     "generated_text": "a red ball on the grass",
     "variants": 3}                                 # optional (stage 1 --balance): pictures per mode
"""

import numpy as np

from cocoaug.coco import read_json
from cocoaug.errors import UserError

RECORD_FIELDS = (
    "image_id", "file_name", "width", "height", "category_id", "label",
    "bbox", "annotation_ids", "category_ids", "labels", "generated_text",
)
PER_BOX_FIELDS = ("annotation_ids", "category_ids", "labels")


def load_records(path, require_text: bool = True) -> list[dict]:
    """Read and validate a stage-1 records file (``blip2_post.json`` or ``selection.json``)."""
    records = read_json(path, "prompts file")
    if not isinstance(records, list):
        raise UserError("prompts file must be a JSON list of stage-1 records", path)
    seen = set()
    for index, record in enumerate(records):
        validate_record(record, index, path, require_text)
        if record["image_id"] in seen:
            raise UserError(f"duplicate record for image_id {record['image_id']}", path)
        seen.add(record["image_id"])
    return records


def validate_record(record, index: int, source, require_text: bool = True):
    """Check one record's fields, types and box geometry; errors name its image_id."""
    if not isinstance(record, dict):
        raise UserError(f"record at index {index} is not an object", source)
    image_id = record.get("image_id")
    if isinstance(image_id, bool) or not isinstance(image_id, int):
        raise UserError(f"record at index {index} has no integer 'image_id'", source)
    name = f"record for image_id {image_id}"
    fields = RECORD_FIELDS if require_text else RECORD_FIELDS[:-1]
    missing = [key for key in fields if key not in record]
    if missing:
        raise UserError(f"{name} lacks {', '.join(missing)}; is this a stage-1 file?", source)
    for key in ("width", "height"):
        if isinstance(record[key], bool) or not isinstance(record[key], int) or record[key] <= 0:
            raise UserError(f"{name} has a '{key}' that is not a positive integer", source)
    if not isinstance(record["file_name"], str) or not record["file_name"]:
        raise UserError(f"{name} has no 'file_name'", source)
    if require_text and not isinstance(record["generated_text"], str):
        raise UserError(f"{name} has a 'generated_text' that is not a string", source)
    boxes = record["bbox"]
    if not isinstance(boxes, list) or not boxes:
        raise UserError(f"{name} has no boxes", source)
    try:
        array = np.array(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{name} has a 'bbox' that is not a list of [x0, y0, x1, y1]", source) from None
    if array.ndim != 2 or array.shape[1] != 4 or not np.isfinite(array).all():
        raise UserError(f"{name} has a 'bbox' that is not a list of [x0, y0, x1, y1]", source)
    if (array < 0).any() or (array > 1).any() or (array[:, 2:] <= array[:, :2]).any():
        raise UserError(f"{name} has a box outside [0, 1] or of zero size", source)
    for key in PER_BOX_FIELDS:
        if not isinstance(record[key], list) or len(record[key]) != len(boxes):
            raise UserError(f"{name} has a '{key}' that does not list one entry per box", source)
    variants = record.get("variants", 1)
    if isinstance(variants, bool) or not isinstance(variants, int) or variants < 1:
        raise UserError(f"{name} has a 'variants' that is not a positive integer", source)


def check_records_match_dataset(records: list[dict], dataset, source):
    """Refuse records whose image ids are not in the COCO ``dataset`` (a CocoDataset)."""
    for record in records:
        if record["image_id"] not in dataset.image_by_id:
            raise UserError(
                f"image_id {record['image_id']} of the prompts file is not in {dataset.path}", source
            )
