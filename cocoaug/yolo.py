"""The Ultralytics (YOLO) dataset that stage 4 writes beside its COCO files (``--yolo``).

Layout, in the dataset root ``FINAL_DIR`` (the folder of ``data.yaml``)::

    images/<file_name>            the COCO files' images (file_name relative to images/)
    labels/<file_name stem>.txt   one line per box: "class cx cy w h", normalized to 0..1
    annotations.txt               one "./images/<file_name>" per image of annotations.json
    train_augmented.txt           the same for train_augmented.json (with --merge)
    data.yaml                     train/val lists and the class names

``labels/`` mirrors ``images/`` because Ultralytics finds an image's label file by replacing the
last ``/images/`` of its path with ``/labels/`` and its suffix with ``.txt``. Class ``k`` is the
``k``-th COCO category in category-id order (``class_indices``); ``data.yaml`` names each class
and gives its ``category_id`` in a comment. Crowd boxes (``iscrowd=1``) are left out, as
Ultralytics' own ``convert_coco`` does: a YOLO label cannot say "ignore this region". Boxes are
clipped to the image; a box with nothing left inside it is left out. An image without boxes gets
an empty label file (a background image).
"""

import json
import os
from collections import Counter
from pathlib import Path, PurePosixPath

from cocoaug.atomic import atomic_folder, write_bytes_atomic
from cocoaug.errors import UserError
from cocoaug.progress import progress

DATA_YAML = "data.yaml"


def class_indices(categories: list[dict]) -> dict[int, int]:
    """COCO category_id -> YOLO class index: the categories sorted by id, numbered from 0."""
    return {category_id: k for k, category_id in enumerate(sorted(c["id"] for c in categories))}


def label_lines(image: dict, annotations: list[dict], class_of: dict[int, int], skipped: Counter) -> list[str]:
    """The YOLO label lines of one image; counts the boxes left out in ``skipped`` ("crowd", "outside")."""
    width, height = image["width"], image["height"]
    lines = []
    for annotation in annotations:
        if annotation.get("iscrowd", 0):
            skipped["crowd"] += 1
            continue
        x, y, w, h = annotation["bbox"]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        if x1 <= x0 or y1 <= y0:
            skipped["outside"] += 1
            continue
        k = class_of[annotation["category_id"]]
        lines.append(f"{k} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
                     f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
    return lines


def label_file_name(file_name: str) -> str:
    """Where Ultralytics looks for the label of ``images/<file_name>``: ``labels/<file_name>`` with suffix .txt."""
    path = PurePosixPath(file_name)
    if "images" in path.parts[:-1]:  # Ultralytics would replace that folder's name, not images/
        raise UserError("an image folder named 'images' inside the image root hides the label files from "
                        "Ultralytics; rename it or leave out --yolo", file_name)
    return path.with_suffix(".txt").as_posix()


def yolo_labels(outputs: dict[str, dict]) -> tuple[dict[str, bytes], dict]:
    """The label file of every image of the COCO files in ``outputs``: {label file name: content}, and counts
    (boxes written, boxes left out by reason). Two images on one label file are an error."""
    categories = next(iter(outputs.values()))["categories"]
    class_of = class_indices(categories)
    image_of_label: dict[str, str] = {}
    contents: dict[str, bytes] = {}
    skipped = Counter()
    boxes = 0
    for data in outputs.values():
        annotations_of: dict[int, list] = {}
        for annotation in data["annotations"]:
            annotations_of.setdefault(annotation["image_id"], []).append(annotation)
        for image in data["images"]:
            label = label_file_name(image["file_name"])
            if image_of_label.setdefault(label, image["file_name"]) != image["file_name"]:
                raise UserError(f"two images would share the label file labels/{label}: {image_of_label[label]} and "
                                f"{image['file_name']}; rename one", image["file_name"])
            if label in contents:  # the same image in both files
                continue
            lines = label_lines(image, annotations_of.get(image["id"], []), class_of, skipped)
            boxes += len(lines)
            contents[label] = "".join(line + "\n" for line in lines).encode()
    return contents, {"label files": len(contents), "boxes": boxes, **{f"{k} boxes left out": v for k, v in skipped.items()}}


def write_yolo_dataset(dataset_root: Path, outputs: dict[str, dict], labels: dict[str, bytes], train: str) -> int:
    """Write labels/, one image list per COCO file of ``outputs`` and data.yaml (training on ``train``'s list).

    labels/ is written whole in a temp folder and renamed into place (``atomic_folder``): at COCO's
    118k label files, one atomic temp file each took minutes; a label file of an earlier run that
    this one does not write goes with the old folder. Returns how many label files were written:
    none when labels/ holds exactly these already.
    """
    dataset_root = Path(dataset_root)
    written = 0
    if not folder_holds(dataset_root / "labels", labels):
        with atomic_folder(dataset_root / "labels") as tmp:
            made = set()
            for label, content in progress(sorted(labels.items()), desc="YOLO labels", unit="file"):
                path = tmp / label
                if path.parent not in made:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    made.add(path.parent)
                with open(path, "wb") as f:
                    f.write(content)
        written = len(labels)
    for name, data in outputs.items():
        listing = "".join(f"./images/{image['file_name']}\n" for image in data["images"])
        write_bytes_atomic(dataset_root / Path(name).with_suffix(".txt"), listing.encode())
    categories = next(iter(outputs.values()))["categories"]
    yaml = data_yaml(categories, class_indices(categories), Path(train).with_suffix(".txt").name)
    write_bytes_atomic(dataset_root / DATA_YAML, yaml.encode())
    return written


def folder_holds(folder: Path, files: dict[str, bytes]) -> bool:
    """Whether ``folder`` holds exactly ``files`` ({relative posix path: content}), nothing more; stops at the first difference."""
    if not folder.is_dir() or folder.is_symlink():
        return False
    found = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            relative = Path(parent, name).relative_to(folder).as_posix()
            content = files.get(relative)
            if content is None or Path(parent, name).read_bytes() != content:
                return False
            found += 1
    return found == len(files)


def data_yaml(categories: list[dict], class_of: dict[int, int], train_list: str) -> str:
    """data.yaml: no ``path`` key, so Ultralytics takes the file's own folder as the dataset root."""
    name_of = {c["id"]: c["name"] for c in categories}
    lines = ["# Ultralytics dataset written by finalize_selected_images.py --yolo.",
             "# Class k is the k-th COCO category in category-id order (its category_id in the comment).",
             "# Crowd boxes (iscrowd=1) are left out. val: put your own validation set there; Ultralytics",
             "# requires one, so it is the training list until you do.",
             f"train: {train_list}", f"val: {train_list}", "names:"]
    lines += [f"  {k}: {json.dumps(name_of[category_id], ensure_ascii=False)}  # category_id {category_id}" for category_id, k in class_of.items()]
    return "\n".join(lines) + "\n"
