"""Per-epoch overhead of step 5's sampler at COCO train size, against PyTorch's WeightedRandomSampler.

The training set: 118,287 images with COCO-like box counts and categories (``make_synthetic_coco.py``'s
generators, ~750k boxes, 80 categories, "person" the most common), a share of them generated.
For each curriculum, one epoch's work in the training process: the image weights
(``sampling.image_weights`` on a LabelTable built once), the epoch-wide draw, and this rank's
share as Python ints (``DistributedWeightedSampler``), for one process and for one of 8. The
reference is ``torch.utils.data.WeightedRandomSampler`` over the same weights (one process, no
sharding), iterated once. Also timed once: building the LabelTable, and the sampling plan of a
12-epoch DCL run (``--sampling-plan-only``). Both samplers must draw each category's boxes in
the shares the weights give (to 2 / sqrt(images)).

    python benchmarks/bench_sampler.py                              # 118,287 images
    python benchmarks/bench_sampler.py --images 2000 --repeat 1     # a smoke run
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import make_synthetic_coco as synthetic  # noqa: E402

from cocoaug import sampling  # noqa: E402

EPOCHS = 12


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=118_287, help="training images (default COCO train2017's)")
    parser.add_argument("--generated-share", type=float, default=0.1, help="share of generated pictures (default 0.1)")
    parser.add_argument("--repeat", type=int, default=5, help="epochs timed per row; the table shows the median (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic set (default 0)")
    return parser.parse_args(argv)


def synthetic_labels(n_images: int, seed: int) -> list[list[int]]:
    """The category ids of every image's boxes, COCO-train-like."""
    rng = np.random.default_rng(seed)
    counts, n_cats = synthetic.make_box_counts(rng, n_images)
    image_of_box, category_index = synthetic.make_categories(rng, counts, n_cats)
    labels = np.array(synthetic.COCO_IDS)[category_index].tolist()
    ends = np.cumsum(counts).tolist()
    return [labels[end - count:end] for end, count in zip(ends, counts.tolist())]


def timed(function, repeat: int) -> tuple[float, object]:
    """Median seconds of ``repeat`` calls, and the last call's result."""
    seconds = []
    for _ in range(repeat):
        begin = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - begin)
    return statistics.median(seconds), result


def box_shares(table: sampling.LabelTable, indices) -> np.ndarray:
    """Share of each category among the boxes of the drawn images."""
    drawn = np.bincount(np.asarray(indices), minlength=table.n_images)
    boxes = np.bincount(table.box_class, weights=drawn[table.box_image], minlength=len(table.classes))
    return boxes / boxes.sum()


def main(argv=None):
    args = parse_args(argv)
    import torch

    labels = synthetic_labels(args.images, args.seed)
    generated = np.random.default_rng(args.seed + 1).random(args.images) < args.generated_share
    start = time.perf_counter()
    table = sampling.LabelTable.from_lists(labels)
    build_seconds = time.perf_counter() - start
    print(f"synthetic training set: {table.n_images} images, {len(table.box_image)} boxes, {len(table.classes)} categories, "
          f"{int(generated.sum())} generated; LabelTable built once in {1000 * build_seconds:.0f} ms")
    print(f"median of {args.repeat} epoch(s), ms per epoch; draw = {args.images} images per epoch, all ranks together")
    print(f"{'curriculum':<16}{'weights':>10}{'draw, 1 rank':>15}{'draw, rank 0 of 8':>20}{'WeightedRandomSampler':>24}")
    epoch = EPOCHS // 2
    tolerance = 2 / np.sqrt(args.images)  # several standard errors of a category's share of the drawn boxes
    for curriculum in sampling.CURRICULA:
        def weights(_epoch=epoch, curriculum=curriculum):
            return sampling.image_weights(table, generated, curriculum=curriculum, epoch=_epoch, epochs=EPOCHS, schedule="convex")

        weight_seconds, epoch_weights = timed(weights, args.repeat)
        row = [weight_seconds]
        for world_size in (1, 8):
            sampler = sampling.DistributedWeightedSampler(weights, args.images, seed=0, rank=0, world_size=world_size)
            sampler.set_epoch(epoch)
            seconds, ours = timed(lambda: list(sampler), args.repeat)
            row.append(seconds)
            if world_size == 1:
                our_indices = ours
        reference = torch.utils.data.WeightedRandomSampler(torch.from_numpy(epoch_weights), args.images, replacement=True,
                                                           generator=torch.Generator().manual_seed(0))
        seconds, theirs = timed(lambda: list(reference), args.repeat)
        row.append(seconds)
        print(f"{curriculum:<16}" + "".join(f"{1000 * s:>{w}.1f}" for s, w in zip(row, (10, 15, 20, 24))))
        p = epoch_weights / epoch_weights.sum()
        expected = np.bincount(table.box_class, weights=p[table.box_image], minlength=len(table.classes))
        expected /= expected.sum()
        for name, indices in (("ours", our_indices), ("WeightedRandomSampler", theirs)):
            gap = np.abs(box_shares(table, indices) - expected).max()
            if gap > tolerance:
                raise SystemExit(f"error: {curriculum}: {name}'s category shares differ from the weights' by {gap:.4f}")
    print("the 'draw' columns include the weights: the sampler computes them each epoch")
    plan_seconds, rows = timed(lambda: sampling.sampling_plan(table, generated, curriculum="dcl", epochs=EPOCHS,
                                                              epoch_size=args.images, schedule="convex"), 1)
    print(f"sampling plan, dcl, {EPOCHS} epochs ({len(rows)} rows): {1000 * plan_seconds:.0f} ms")
    print(f"same category shares: yes (both samplers draw each category's boxes as the weights say, to {tolerance:.4f})")


if __name__ == "__main__":
    main()
