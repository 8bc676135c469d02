"""Step 4's dataset root (and a validation set) as torchvision detection samples.

A training set is ``FINAL_DIR/train_augmented.json`` when step 4 wrote it (``--merge``), else
``FINAL_DIR/annotations.json``; every ``file_name`` is relative to ``FINAL_DIR/images/``. Both
files are read through ``cocoaug.coco.load_coco`` (the one COCO reader and its checks).

- **Labels** are contiguous: the k-th category of the training file by id gets label k + 1, and
  label 0 is the background, as torchvision's detectors count classes. The mapping
  (``CategoryMapping``) is stored in every checkpoint ``finetune_detector.py`` writes.
- **Generated pictures** are those step 4 wrote with their provenance: an image entry with a
  ``source_image_id`` (step 4 gives it to every picked picture and to no original).
- **Crowd boxes** are left out of the targets (a crowd box is a region of many objects, which
  torchvision's detection reference and COCOeval ignore too); an image left without boxes is
  kept as a negative: an image with an empty target teaches the detector the background.
- **Boxes** are clipped to their image; a box left without area after clipping is dropped.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cocoaug.coco import load_coco
from cocoaug.errors import UserError, listed
from cocoaug.paths import require_dir, resolve_under

log = logging.getLogger("cocoaug")
TRAINING_FILES = ("train_augmented.json", "annotations.json")  # the first one present is read


@dataclass(frozen=True)
class CategoryMapping:
    """COCO category ids (sorted) and names; label k + 1 is ``category_ids[k]``."""

    category_ids: tuple[int, ...]
    names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """Classes as torchvision counts them: the categories plus the background."""
        return len(self.category_ids) + 1

    def label_of(self, category_id: int) -> int:
        return self.category_ids.index(category_id) + 1

    def category_of(self, label: int) -> int:
        return self.category_ids[label - 1]

    def as_dict(self) -> dict:
        return {"category_ids": list(self.category_ids), "names": list(self.names)}

    @classmethod
    def from_dict(cls, data: dict) -> "CategoryMapping":
        return cls(tuple(int(i) for i in data["category_ids"]), tuple(str(n) for n in data["names"]))


@dataclass
class DetectionSet:
    """Images of one COCO file with their non-crowd boxes as xyxy pixels and contiguous labels."""

    annotation_path: Path
    images_dir: Path
    images: list  # the COCO image entries
    boxes_xyxy: list  # one float32 (N, 4) array per image
    labels: list  # one int64 (N,) array per image
    is_generated: np.ndarray  # bool, one per image
    categories: CategoryMapping
    coco_data: dict  # the parsed file, the ground truth of an evaluation

    def __len__(self) -> int:
        return len(self.images)

    def image_labels(self) -> list[list[int]]:
        """The labels of each image's boxes, as the samplers take them."""
        return [labels.tolist() for labels in self.labels]

    def boxes_per_category(self, generated: bool) -> dict[int, int]:
        """Non-crowd boxes per COCO category id, in the generated pictures or in the real ones."""
        counts = {category_id: 0 for category_id in self.categories.category_ids}
        for labels, is_generated in zip(self.labels, self.is_generated):
            if bool(is_generated) == generated:
                for label in labels.tolist():
                    counts[self.categories.category_of(label)] += 1
        return counts


def training_file(dataset_root) -> Path:
    """``train_augmented.json`` in the dataset root when present, else ``annotations.json``."""
    root = require_dir(dataset_root, "dataset root (step 4's FINAL_DIR)")
    for name in TRAINING_FILES:
        if (root / name).is_file():
            return root / name
    raise UserError(f"the dataset root holds neither {' nor '.join(TRAINING_FILES)}: pass step 4's FINAL_DIR", root)


def load_training_set(dataset_root) -> DetectionSet:
    """The training set of step 4's dataset root; its categories define the label mapping."""
    path = training_file(dataset_root)
    coco = load_coco(path)
    categories = sorted(coco.categories, key=lambda c: c["id"])
    if not categories:
        raise UserError("the training file has no categories", path)
    mapping = CategoryMapping(tuple(c["id"] for c in categories), tuple(c["name"] for c in categories))
    return _detection_set(coco, Path(dataset_root) / "images", mapping)


def load_validation_set(annotations, images_dir, mapping: CategoryMapping) -> DetectionSet:
    """A validation set of real images labelled with the training set's mapping; every image file
    must exist and every category must be one the detector learns."""
    coco = load_coco(annotations)
    unknown = sorted({int(c) for c in coco.ann_category_id.tolist()} - set(mapping.category_ids))
    if unknown:
        raise UserError(f"the validation annotations use {len(unknown)} category id(s) the training set does not have "
                        f"({listed(unknown)}): the detector cannot learn them", coco.path)
    images_dir = require_dir(images_dir, "validation image folder")
    missing = [image["file_name"] for image in coco.images if not resolve_under(images_dir, image["file_name"]).is_file()]
    if missing:
        raise UserError(f"{len(missing)} validation image(s) not found in {images_dir}", listed(missing))
    generated = [image["id"] for image in coco.images if "source_image_id" in image]
    if generated:
        log.warning("%d validation image(s) carry a source_image_id, as step 4's generated pictures do: measure on "
                    "real images only (%s)", len(generated), listed(generated))
    return _detection_set(coco, images_dir, mapping)


def _detection_set(coco, images_dir: Path, mapping: CategoryMapping) -> DetectionSet:
    row_of = {image["id"]: k for k, image in enumerate(coco.images)}
    boxes = [[] for _ in coco.images]
    labels = [[] for _ in coco.images]
    dropped = 0
    keep = coco.ann_iscrowd == 0
    for image_id, category_id, (x, y, w, h) in zip(coco.ann_image_id[keep].tolist(), coco.ann_category_id[keep].tolist(),
                                                   coco.ann_bbox_xywh[keep].tolist()):
        k = row_of[image_id]
        width, height = coco.images[k]["width"], coco.images[k]["height"]
        x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
        if x1 - x0 < 1e-3 or y1 - y0 < 1e-3:
            dropped += 1
            continue
        boxes[k].append((x0, y0, x1, y1))
        labels[k].append(mapping.label_of(category_id))
    if dropped:
        log.warning("%s: %d box(es) lie outside their image and were left out", coco.path, dropped)
    return DetectionSet(
        annotation_path=coco.path, images_dir=Path(images_dir), images=list(coco.images),
        boxes_xyxy=[np.asarray(b, dtype=np.float32).reshape(-1, 4) for b in boxes],
        labels=[np.asarray(lab, dtype=np.int64) for lab in labels],
        is_generated=np.array(["source_image_id" in image for image in coco.images], dtype=bool),
        categories=mapping, coco_data=coco.data)


def check_training_images(detection_set: DetectionSet, indices) -> None:
    """Every image file the training will open exists (checked before any training starts)."""
    missing = [detection_set.images[k]["file_name"] for k in indices
               if not resolve_under(detection_set.images_dir, detection_set.images[k]["file_name"]).is_file()]
    if missing:
        raise UserError(f"{len(missing)} training image(s) not found in {detection_set.images_dir}", listed(missing))


class DetectionDataset:
    """``dataset[k]`` = (float image tensor C×H×W in 0..1, target dict) of image ``k`` of a DetectionSet.

    With ``flip``, half the samples are mirrored left-right, their boxes with them (the coin is
    torch's global generator, so a run restored with its RNG state flips the same samples).
    ``masks``: each box as a filled mask too, for Mask R-CNN (step 4's generated objects have no
    other outline).
    """

    def __init__(self, detection_set: DetectionSet, flip: bool = False, masks: bool = False):
        self.set = detection_set
        self.flip = flip
        self.masks = masks

    def __len__(self) -> int:
        return len(self.set)

    def __getitem__(self, k: int):
        import torch
        from torchvision.transforms.functional import pil_to_tensor

        from cocoaug.images import open_rgb

        entry = self.set.images[k]
        image = pil_to_tensor(open_rgb(resolve_under(self.set.images_dir, entry["file_name"]))).float().div_(255)
        boxes = torch.from_numpy(self.set.boxes_xyxy[k].copy())
        width = image.shape[-1]
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        target = {"boxes": boxes, "labels": torch.from_numpy(self.set.labels[k].copy()), "image_id": int(entry["id"])}
        if self.masks:
            target["masks"] = box_masks(boxes, image.shape[-2], width)
        return image, target


def box_masks(boxes_xyxy, height: int, width: int):
    """One uint8 mask per box, 1 inside the box."""
    import torch

    masks = torch.zeros((len(boxes_xyxy), height, width), dtype=torch.uint8)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes_xyxy.tolist()):
        mask[int(y0):max(int(y0) + 1, round(y1)), int(x0):max(int(x0) + 1, round(x1))] = 1
    return masks


def collate(batch):
    """A detection batch: a tuple of images and a tuple of targets (sizes differ)."""
    return tuple(zip(*batch))
