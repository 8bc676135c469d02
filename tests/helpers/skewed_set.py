"""A COCO set skewed towards one category, for the class-balance tests of stage 1 and of stages
1 to 4, and the plan that stage 1 writes for it, read back per category."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from cocoaug import balance

COMMON, RARE, OTHER = 1, 2, 3
CATEGORIES = [{"id": COMMON, "name": "cat"}, {"id": RARE, "name": "zebra"}, {"id": OTHER, "name": "kite"}]


def write_skewed_set(folder: Path, common: int = 20, rare: int = 2, kites: int = 0) -> Path:
    """A COCO set whose "cat" images are 10x as many as its "zebra" images (one box each); noise pictures."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": CATEGORIES}
    rng = np.random.default_rng(0)
    # The rare category's images come first, so that --limit keeps them.
    layout = [RARE] * rare + [COMMON] * common + [OTHER] * kites
    for image_id, category_id in enumerate(layout, start=1):
        name = f"{image_id:03d}.png"
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(images / name)
        coco["images"].append({"id": image_id, "file_name": name, "width": 64, "height": 48})
        coco["annotations"].append({"id": 100 + image_id, "image_id": image_id, "category_id": category_id,
                                    "bbox": [8, 8, 32, 24], "area": 768, "iscrowd": 0})
    path = folder / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


def plan_rows(out: Path) -> dict[str, balance.CategoryPlan]:
    """OUT_DIR/plan.csv by category name."""
    return {row.category: row for row in balance.read_plan(out / balance.PLAN_FILE)}
