"""Time of step 5's COCO evaluation with faster-coco-eval against pycocotools' COCOeval, same numbers.

A synthetic validation set the size of COCO val2017 (5,000 images, about 6 boxes each over COCO's
80 categories, 1% crowd, from ``make_synthetic_coco.py``'s generators) and 100 detections per image:
each true box found once with jitter (or missed), the rest false positives, scores lower on
average. Both sides run ``cocoaug.detection_eval.evaluate`` (indexing, matching, accumulation,
summary, per-category AP) in this process, taking turns; the run fails unless both give the same
AP, AP50, AP75, APs/m/l and per-category AP (to 1e-9).

    python benchmarks/bench_coco_eval.py                          # 5,000 images x 100 detections
    python benchmarks/bench_coco_eval.py --images 50 --repeat 1   # a smoke run
"""

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import make_synthetic_coco as synthetic  # noqa: E402

from cocoaug import detection_eval  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000, help="validation images (default COCO val2017's)")
    parser.add_argument("--detections-per-image", type=int, default=100, help="detections per image (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; the table shows the median (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic set (default 0)")
    return parser.parse_args(argv)


def synthetic_val_set(n_images: int, per_image: int, seed: int) -> tuple[dict, list[dict]]:
    """A COCO ground-truth dict and ``per_image`` detections per image."""
    rng = np.random.default_rng(seed)
    image_ids, image_sizes, images = synthetic.make_images(rng, n_images)
    counts, n_cats = synthetic.make_box_counts(rng, n_images)
    image_of_box, category_index = synthetic.make_categories(rng, counts, n_cats)
    boxes = synthetic.make_boxes(rng, image_sizes[image_of_box])
    category_ids = np.array(synthetic.COCO_IDS)[category_index]
    crowd = rng.random(len(boxes)) < 0.01
    columns = zip(image_ids[image_of_box].tolist(), category_ids.tolist(), boxes.tolist(), crowd.tolist())
    annotations = [{"id": k + 1, "image_id": image_id, "category_id": category_id, "bbox": box, "area": box[2] * box[3] * 0.7,
                    "iscrowd": int(is_crowd)} for k, (image_id, category_id, box, is_crowd) in enumerate(columns)]
    categories = [{"id": cid, "name": name.replace("_", " ")} for cid, name in zip(synthetic.COCO_IDS, synthetic.COCO_NAMES)]

    # True positives: each box found once (85%) with a jitter of ~8% of its size, at most per_image per image.
    found = (rng.random(len(boxes)) < 0.85) & (np.arange(len(boxes)) - np.searchsorted(image_of_box, image_of_box) < per_image)
    jitter = rng.normal(0, 0.08, size=(int(found.sum()), 4)) * boxes[found][:, [2, 3, 2, 3]]
    true_boxes = boxes[found] + jitter
    true_boxes[:, 2:] = np.maximum(true_boxes[:, 2:], 1.0)
    # False positives fill each image up to per_image detections.
    fill = per_image - np.bincount(image_of_box[found], minlength=n_images)
    false_image = np.repeat(np.arange(n_images), fill)
    sizes = image_sizes[false_image].astype(np.float64)
    false_wh = np.maximum(rng.beta(1.3, 5.0, size=(len(false_image), 2)) * sizes, 2.0)
    false_boxes = np.concatenate([rng.random((len(false_image), 2)) * (sizes - false_wh), false_wh], axis=1)
    detection_image = np.concatenate([image_of_box[found], false_image])
    detection_category = np.concatenate([category_ids[found], rng.choice(synthetic.COCO_IDS, size=len(false_image))])
    detection_boxes = np.round(np.concatenate([true_boxes, false_boxes]), 2)
    scores = np.round(np.concatenate([rng.beta(4, 2, size=int(found.sum())), rng.beta(1, 4, size=len(false_image))]), 4)
    detections = [{"image_id": image_id, "category_id": category_id, "bbox": box, "score": score}
                  for image_id, category_id, box, score in zip(image_ids[detection_image].tolist(), detection_category.tolist(),
                                                               detection_boxes.tolist(), scores.tolist())]
    return {"images": images, "annotations": annotations, "categories": categories}, detections


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    gt, detections = synthetic_val_set(args.images, args.detections_per_image, args.seed)
    print(f"synthetic set: {len(gt['images'])} images, {len(gt['annotations'])} boxes, {len(detections)} detections "
          f"(built in {time.perf_counter() - start:.1f} s)")
    seconds = {backend: [] for backend in detection_eval.BACKENDS}
    cpu_seconds = {backend: [] for backend in detection_eval.BACKENDS}
    results = {}
    # The sides take turns, so that both see the same load from whatever else runs on the machine.
    for _ in range(args.repeat):
        for backend in detection_eval.BACKENDS:
            begin, cpu_begin = time.perf_counter(), time.process_time()
            results[backend] = detection_eval.evaluate(gt, detections, backend=backend)
            seconds[backend].append(time.perf_counter() - begin)
            cpu_seconds[backend].append(time.process_time() - cpu_begin)
    median = {backend: statistics.median(times) for backend, times in seconds.items()}
    cpu = {backend: statistics.median(times) for backend, times in cpu_seconds.items()}
    # CPU time (this process, all threads) is the steadier figure on a machine shared with other jobs.
    print(f"median of {args.repeat} run(s) per side (taking turns); wall and CPU seconds")
    print(f"{'backend':<14}{'wall (s)':>10}{'CPU (s)':>10}   wall of each run")
    for backend in detection_eval.BACKENDS:
        print(f"{backend:<14}{median[backend]:>10.2f}{cpu[backend]:>10.2f}   {', '.join(f'{t:.2f}' for t in seconds[backend])}")
    print(f"speed-up {median['pycocotools'] / median['faster']:.1f}x wall, {cpu['pycocotools'] / cpu['faster']:.1f}x CPU "
          "(pycocotools / faster-coco-eval)")
    faster, reference = results["faster"], results["pycocotools"]
    print("faster-coco-eval: " + ", ".join(f"{key} {100 * value:.2f}" for key, value in faster.summary.items()))
    differ = [key for key in faster.summary if not same(faster.summary[key], reference.summary[key])]
    differ += [f"category {c}" for c in faster.per_class if not same(faster.per_class[c], reference.per_class.get(c, math.nan))]
    if differ:
        raise SystemExit(f"error: the two backends differ on {', '.join(differ[:10])}")
    print(f"same results: yes (6 summary values and {len(faster.per_class)} per-category APs, to 1e-9)")


if __name__ == "__main__":
    main()
