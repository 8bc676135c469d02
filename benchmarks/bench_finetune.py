"""Training images/s of step 5 (finetune_detector.py) at --batch-size 1 against --batch-size 8.

Runs the script itself, as a user does, on the sample set (scripts/make_sample_dataset.py) with a
small torchvision detector built without weights, for ``--iters`` iterations at each batch size,
and reads the images/s of every iteration from its ``train_log.csv`` (loading included; the first
iteration, which starts the loader, left out). The validation set is one picture, so the
evaluations around each run cost little; they are not timed.

    python benchmarks/bench_finetune.py --threads 1 --workdir /tmp/bench_finetune            # CPU, tiny model
    python benchmarks/bench_finetune.py --device cuda --model fasterrcnn_resnet50_fpn_v2 --min-size 800 \\
        --max-size 1333 --iters 20 --workdir /tmp/bench_finetune                              # a GPU
"""

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY_OPTIONS = ["box_batch_size_per_image=64", "rpn_pre_nms_top_n_train=300", "rpn_post_nms_top_n_train=300"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="where the sample set and the runs go")
    parser.add_argument("--model", default="fasterrcnn_mobilenet_v3_large_320_fpn", help="torchvision builder (default: the tiny one)")
    parser.add_argument("--min-size", type=int, default=128, help="the model's resize (default 128)")
    parser.add_argument("--max-size", type=int, default=160, help="default 160")
    parser.add_argument("--iters", type=int, default=6, help="iterations per batch size (default 6)")
    parser.add_argument("--batch-sizes", default="1,8", help="comma-separated (default 1,8)")
    parser.add_argument("--device", default="cpu", help="default cpu")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the runs (default: torch's choice)")
    return parser.parse_args(argv)


def images_per_s(args, workdir: Path, sample: Path, batch_size: int) -> list[float]:
    out = workdir / f"batch{batch_size}"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    options = [flag for option in TINY_OPTIONS for flag in ("--model-option", option)] if "320" in args.model else []
    command = [sys.executable, str(ROOT / "finetune_detector.py"), "-d", str(sample), "--val-annotations",
               str(workdir / "val.json"), "--val-images", str(sample / "images"), "-o", str(out), "--model", args.model,
               "--min-size", str(args.min_size), "--max-size", str(args.max_size), *options, "--max-iters", str(args.iters),
               "--epoch-size", str(args.iters * batch_size), "--batch-size", str(batch_size), "--warmup-iters", "1",
               "--num-workers", "0", "--device", args.device]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    if result.returncode != 0:
        sys.exit(f"the run at --batch-size {batch_size} failed:\n{result.stderr[-3000:]}")
    with open(out / "runs" / "augmented-seed0" / "train_log.csv") as f:
        return [float(row["images_per_s"]) for row in csv.DictReader(f)][1:]


def main(argv=None):
    args = parse_args(argv)
    workdir = Path(args.workdir)
    sample = workdir / "sample"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_sample_dataset.py"), str(sample)], check=True, capture_output=True)
    data = json.loads((sample / "annotations.json").read_text())
    first = data["images"][0]
    val = {**data, "images": [first], "annotations": [a for a in data["annotations"] if a["image_id"] == first["id"]]}
    (workdir / "val.json").write_text(json.dumps(val))
    rates = {}
    for batch_size in map(int, args.batch_sizes.split(",")):
        rates[batch_size] = statistics.median(images_per_s(args, workdir, sample, batch_size))
    print(f"{args.model} at {args.min_size}-{args.max_size} px on {args.device}, {args.iters} iterations each, "
          f"OMP_NUM_THREADS={args.threads or 'default'}")
    for batch_size, rate in rates.items():
        print(f"--batch-size {batch_size:>3}: {rate:8.2f} training images/s (median over iterations)")
    sizes = sorted(rates)
    print(f"batch {sizes[-1]} vs {sizes[0]}: x{rates[sizes[-1]] / rates[sizes[0]]:.2f} images/s")


if __name__ == "__main__":
    main()
