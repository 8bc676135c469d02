"""Write a synthetic COCO annotation file the size of COCO train2017, for benchmarks.

118,287 images (a COCO-like mix of 640-pixel sizes, about 1% without annotations), about
750k boxes over COCO's 80 categories (non-contiguous ids 1..90, "person" the most common), a
realistic mix of one- and many-category images, about 1% crowd annotations and polygon
segmentations, so the file has COCO's shape and a comparable size. Deterministic for a seed.
No image files are written: stage 1's ``--select-only`` reads none.

    python benchmarks/make_synthetic_coco.py /tmp/bench/train.json
    python benchmarks/make_synthetic_coco.py /tmp/bench/small.json --images 200
"""

import argparse
from pathlib import Path

import numpy as np
import orjson

COCO_NAMES = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign "
    "parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella "
    "handbag tie suitcase frisbee skis snowboard sports_ball kite baseball_bat baseball_glove skateboard "
    "surfboard tennis_racket bottle wine_glass cup fork knife spoon bowl banana apple sandwich orange "
    "broccoli carrot hot_dog pizza donut cake chair couch potted_plant bed dining_table toilet tv laptop "
    "mouse remote keyboard cell_phone microwave oven toaster sink refrigerator book clock vase scissors "
    "teddy_bear hair_drier toothbrush"
).split()
# COCO's category ids skip 12, 26, 29, 30, 45, 66, 68, 69, 71 and 83.
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
SIZES = np.array([(640, 480), (640, 427), (480, 640), (427, 640), (640, 424), (500, 375), (640, 360), (640, 640)])
SIZE_WEIGHTS = np.array([0.38, 0.2, 0.12, 0.08, 0.07, 0.06, 0.05, 0.04])
POLYGON_POINTS = 12


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="the annotation file to write")
    parser.add_argument("--images", type=int, default=118_287, help="number of images (default: COCO train2017's)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return parser.parse_args(argv)


def make_images(rng, n_images):
    """Image ids (shuffled, non-contiguous like COCO's), sizes and entries."""
    ids = np.sort(rng.choice(np.arange(1, n_images * 5), size=n_images, replace=False))
    sizes = SIZES[rng.choice(len(SIZES), size=n_images, p=SIZE_WEIGHTS)]
    images = [
        {"license": 1, "file_name": f"{i:012d}.jpg", "coco_url": f"http://example.org/{i:012d}.jpg",
         "height": int(h), "width": int(w), "date_captured": "2013-11-14 11:18:45",
         "flickr_url": f"http://example.org/f/{i}.jpg", "id": int(i)}
        for i, (w, h) in zip(ids.tolist(), sizes.tolist())
    ]
    return ids, sizes, images


def make_box_counts(rng, n_images):
    """Boxes per image (mean about 6.3, long tail, about 1% none) and categories per image."""
    counts = 1 + rng.negative_binomial(1.2, 0.18, size=n_images)
    counts = np.minimum(counts, 60)
    counts[rng.random(n_images) < 0.01] = 0
    # About a third of COCO's images show a single category; the rest two to six.
    n_cats = np.where(rng.random(n_images) < 0.35, 1, rng.integers(2, 7, size=n_images))
    return counts, np.minimum(n_cats, np.maximum(counts, 1))


def make_categories(rng, counts, n_cats):
    """One category index per box: each image draws its categories, then each box one of them."""
    popularity = np.ones(len(COCO_IDS))
    popularity[0] = 25.0  # person
    popularity /= popularity.sum()
    palette = rng.choice(len(COCO_IDS), size=(len(counts), 6), p=popularity)
    image_of_box = np.repeat(np.arange(len(counts)), counts)
    slot = rng.integers(0, 1 << 30, size=len(image_of_box)) % n_cats[image_of_box]
    return image_of_box, palette[image_of_box, slot]


def make_boxes(rng, image_sizes):
    """Pixel ``[x, y, w, h]`` boxes inside their images; about 2% reach past the edge a little."""
    wh = image_sizes.astype(np.float64)
    frac = np.clip(rng.beta(1.3, 5.0, size=(len(wh), 2)), 0.01, 0.95)
    box_wh = np.maximum(frac * wh, 1.0)
    xy = rng.random((len(wh), 2)) * (wh - box_wh)
    past = rng.random(len(wh)) < 0.02
    box_wh[past] += 3.0
    return np.round(np.concatenate([xy, box_wh], axis=1), 2)


def make_polygons(rng, boxes):
    """An ellipse-like polygon inside each box, as COCO's ``segmentation`` lists."""
    angles = np.linspace(0, 2 * np.pi, POLYGON_POINTS, endpoint=False)
    radius = 0.5 * (0.7 + 0.3 * rng.random((len(boxes), POLYGON_POINTS)))
    cx = boxes[:, 0:1] + boxes[:, 2:3] / 2
    cy = boxes[:, 1:2] + boxes[:, 3:4] / 2
    xs = cx + radius * boxes[:, 2:3] * np.cos(angles)
    ys = cy + radius * boxes[:, 3:4] * np.sin(angles)
    return np.round(np.stack([xs, ys], axis=2).reshape(len(boxes), -1), 2)


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    image_ids, image_sizes, images = make_images(rng, args.images)
    counts, n_cats = make_box_counts(rng, args.images)
    image_of_box, category_index = make_categories(rng, counts, n_cats)
    boxes = make_boxes(rng, image_sizes[image_of_box])
    polygons = make_polygons(rng, boxes)
    crowd = rng.random(len(boxes)) < 0.01
    areas = np.round(boxes[:, 2] * boxes[:, 3] * 0.7, 2)
    category_ids = np.array(COCO_IDS)[category_index]
    annotations = []
    columns = zip(
        image_ids[image_of_box].tolist(), category_ids.tolist(), boxes.tolist(), polygons.tolist(),
        crowd.tolist(), areas.tolist(), image_sizes[image_of_box].tolist(),
    )
    for ann_id, (image_id, category_id, box, polygon, is_crowd, area, (w, h)) in enumerate(columns, start=1):
        segmentation = {"counts": [int(w * h * 0.3), 40, int(w * h * 0.7) - 40], "size": [h, w]} if is_crowd else [polygon]
        annotations.append({
            "segmentation": segmentation, "area": area, "iscrowd": int(is_crowd), "image_id": image_id,
            "bbox": box, "category_id": category_id, "id": ann_id,
        })
    categories = [
        {"supercategory": "thing", "id": cid, "name": name.replace("_", " ")} for cid, name in zip(COCO_IDS, COCO_NAMES)
    ]
    data = {
        "info": {"description": f"synthetic COCO-like benchmark file (seed {args.seed})", "version": "1.0"},
        "licenses": [{"id": 1, "name": "synthetic", "url": ""}],
        "images": images, "annotations": annotations, "categories": categories,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(orjson.dumps(data))
    print(f"wrote {args.output}: {len(images)} images, {len(annotations)} boxes, {args.output.stat().st_size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
