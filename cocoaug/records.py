"""Stage-1 records (``blip2_post.json``, ``selection.json``): one object per selected image, read by every later stage.

A record (``Record``; the field types of ``cocoaug/schema.py``)::

    {"image_id": 101,                  # int >= 0, unique in the file
     "file_name": "extra/a.png",       # relative to the image folder: no "..", NUL, absolute or drive part
     "width": 640, "height": 480,      # ints > 0
     "category_id": 3, "label": "ball",             # the image's (first) category: int >= 0, non-empty string
     "bbox": [[x0, y0, x1, y1], ...],               # at least one; normalised to [0, 1], x1 > x0, y1 > y0
     "annotation_ids": [...], "category_ids": [...], "labels": [...],   # one per box: ints >= 0, non-empty strings
     "generated_text": "a red ball on the grass",   # a string (not in selection.json)
     "variants": 3}                    # optional (stage 1 --balance), default 1: pictures per mode, 0 to MAX_VARIANTS

Stage 2 builds its file names from ``category_id`` and ``image_id``: they are ints here, so a
name cannot hold a folder or ``..``. Any other key is kept as it is.
"""

from typing import Annotated

import msgspec

from cocoaug.coco import read_json
from cocoaug.errors import UserError
from cocoaug.schema import BoxXYXYNorm, Id, Label, PositiveInt, check_box_xyxy, check_name, convert, item_namer

RECORD_FIELDS = (
    "image_id", "file_name", "width", "height", "category_id", "label",
    "bbox", "annotation_ids", "category_ids", "labels", "generated_text",
)
PER_BOX_FIELDS = ("annotation_ids", "category_ids", "labels")
MAX_VARIANTS = 100  # pictures per record and mode: stage 1's --max-variants and stage 2's --variants stop here too


class Record(msgspec.Struct):
    """The schema of one stage-1 record (see the module's docstring)."""

    image_id: Id
    file_name: str
    width: PositiveInt
    height: PositiveInt
    category_id: Id
    label: Label
    bbox: Annotated[list[BoxXYXYNorm], msgspec.Meta(min_length=1)]
    annotation_ids: list[Id]
    category_ids: list[Id]
    labels: list[Label]
    generated_text: str | None = None
    variants: Annotated[int, msgspec.Meta(ge=0, le=MAX_VARIANTS)] = 1

    def __post_init__(self):
        check_name(self.file_name)
        for k, box in enumerate(self.bbox):
            check_box_xyxy(box, f"bbox[{k}]")
        for key in PER_BOX_FIELDS:
            if len(getattr(self, key)) != len(self.bbox):
                raise ValueError(f"{key} must list one entry per box ({len(self.bbox)}), got {len(getattr(self, key))}")


def load_records(path, require_text: bool = True) -> list[dict]:
    """Read a stage-1 records file (``blip2_post.json``, or ``selection.json`` with ``require_text=False``)
    through ``Record``; the first violation is a UserError naming the file, the record and the field."""
    records = read_json(path, "prompts file")
    if not isinstance(records, list):
        raise UserError("prompts file must be a JSON list of stage-1 records", path)
    where = item_namer("record", "image_id")
    typed = convert(records, list[Record], path, where)
    seen = set()
    for index, record in enumerate(typed):
        if require_text and record.generated_text is None:
            raise UserError(f"{where(index, records[index])}: generated_text must be a string, got "
                            f"{records[index].get('generated_text')!r}; is this stage 1's blip2_post.json?", path)
        if record.image_id in seen:
            raise UserError(f"duplicate record for image_id {record.image_id}", path)
        seen.add(record.image_id)
    return records


def check_records_match_dataset(records: list[dict], dataset, source):
    """Refuse records whose image ids are not in the COCO ``dataset`` (a CocoDataset)."""
    for record in records:
        if record["image_id"] not in dataset.image_by_id:
            raise UserError(
                f"image_id {record['image_id']} of the prompts file is not in {dataset.path}", source
            )
