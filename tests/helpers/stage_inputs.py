"""Small hand-made inputs for the stage tests: a toy COCO annotation file whose selection is known
for every stage-1 flag, and noise pictures with their stage-1 records for stage 2."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = [{"id": 3, "name": "cat"}, {"id": 17, "name": "dog"}, {"id": 40, "name": "teddy bear"}]
# image_id: (file_name, width, height, [(category_id, bbox_xywh, iscrowd), ...])
TOY = {
    1: ("a.jpg", 100, 50, [(3, [10, 10, 20, 20], 0), (3, [50, 5, 30, 40], 0)]),  # selected
    2: ("empty.jpg", 100, 50, []),  # no annotations
    3: ("mixed.jpg", 100, 50, [(3, [0, 0, 10, 10], 0), (17, [20, 20, 10, 10], 0)]),  # multi-category
    4: ("crowd7.jpg", 100, 50, [(3, [i * 10, 0, 5, 5], 0) for i in range(7)]),  # too many objects
    5: ("crowd.jpg", 100, 50, [(17, [0, 0, 30, 30], 1)]),  # crowd annotation
    6: ("outside.jpg", 100, 50, [(3, [200, 10, 20, 20], 0)]),  # degenerate after clipping
    7: ("tiny.jpg", 100, 50, [(17, [5, 5, 2, 2], 0)]),  # 4 px box: selected unless --min-box-area > 4
    8: ("six.jpg", 80, 40, [(17, [i * 10, 0, 10, 10], 0) for i in range(5)] + [(17, [70, 30, 20, 20], 0)]),
    9: ("sub/a.jpg", 60, 90, [(40, [0, 0, 30, 45], 0)]),
}

BOXES = [[0.1, 0.2, 0.5, 0.6], [0.55, 0.1, 0.9, 0.95]]
# image_id: (file_name, width, height): landscape, portrait in a subfolder, square, very wide.
PICTURES = {1: ("land.jpg", 64, 48), 2: ("sub/portrait.png", 40, 90), 3: ("square.png", 50, 50), 4: ("wide.png", 300, 30)}
STAGE2_FAST = ["--steps", "2", "--resolution", "64"]


def write_coco(folder: Path, images=TOY, categories=CATEGORIES) -> Path:
    """FOLDER/annotations.json holding ``images`` (the toy set by default); no picture is written."""
    coco = {"images": [], "annotations": [], "categories": categories}
    ann_id = 100
    for image_id, (file_name, width, height, boxes) in images.items():
        coco["images"].append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for category_id, bbox, crowd in boxes:
            ann_id += 1
            coco["annotations"].append({"id": ann_id, "image_id": image_id, "category_id": category_id,
                                        "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": crowd})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


def write_inputs(folder: Path, pictures=PICTURES, extra_records=()) -> tuple[Path, Path]:
    """Write noise pictures and their stage-1 records; return (images folder, prompts file)."""
    images = folder / "images"
    rng = np.random.default_rng(0)
    records = []
    for image_id, (file_name, width, height) in pictures.items():
        (images / file_name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(images / file_name)
        records.append(stage1_record(image_id, file_name, width, height))
    records.extend(extra_records)
    prompts = folder / "blip2_post.json"
    prompts.write_text(json.dumps(records))
    return images, prompts


def stage1_record(image_id, file_name, width, height, boxes=BOXES) -> dict:
    """The stage-1 record of one picture with ``boxes``, labelled ball and red dog in turn."""
    n = len(boxes)
    return {
        "image_id": image_id, "file_name": file_name, "width": width, "height": height,
        "category_id": 3, "label": "ball", "bbox": boxes, "annotation_ids": list(range(100 * image_id, 100 * image_id + n)),
        "category_ids": [3, 5] * (n // 2) + [3] * (n % 2), "labels": ["ball", "red dog"] * (n // 2) + ["ball"] * (n % 2),
        "generated_text": f"a ball and a dog, picture {image_id}",
    }
