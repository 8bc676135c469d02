"""Resume and step 4 at COCO scale: the cost of a rerun that finds its work done, per picture.

1. Stage 2 resume: ``generate_image_gligen.py`` run (a subprocess, interpreter start to exit) on
   a folder that already holds every picture of its records, at each ``--pictures`` count (10k and
   40k by default). Everything it does before a model would load is timed: records, plan, the
   settings of every existing picture, the temp-file sweep, the manifest rebuilt from the PNGs.
   A resume that grows linearly keeps its milliseconds per picture flat across the sizes. The
   model is a folder of configs only (no weights): a run that tried to load one would fail.
2. Step 4's YOLO labels: ``--labels`` label files (COCO train's 118,287 by default) written as
   ``cocoaug.yolo.write_yolo_dataset`` writes them (the folder whole, renamed into place) against
   the earlier way (one atomic temp file and rename per label, kept below as ``labels_one_by_one``).
   Both must write the same files; the run fails otherwise.

    python benchmarks/bench_resume.py                                   # 10k and 40k pictures, 118,287 labels
    python benchmarks/bench_resume.py --pictures 100,200 --labels 500   # a smoke run
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, PngImagePlugin

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import generate_image_gligen as stage2  # noqa: E402 - the stage's own settings and names
from cocoaug.atomic import atomic_path, write_bytes_atomic  # noqa: E402
from cocoaug.generated import PNG_ENTRY_KEY, manifest_entry, output_name  # noqa: E402
from cocoaug.yolo import write_yolo_dataset, yolo_labels  # noqa: E402

SOURCE_SIZE = (64, 48)  # every record's original (a few files, shared: only their names are read on a resume)
SOURCES = 16
BOXES = [[0.1, 0.2, 0.5, 0.6], [0.55, 0.1, 0.9, 0.95]]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pictures", default="10000,40000", help="existing pictures of each stage-2 resume, comma-separated (default 10000,40000)")
    parser.add_argument("--labels", type=int, default=118_287, help="YOLO label files to write (default COCO train's images)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the table shows the median (default 3)")
    parser.add_argument("--workdir", type=Path, help="where the folders go (default: a temp folder)")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- 1. stage 2 resume


def write_config_only_model(folder: Path) -> Path:
    """A GLIGEN generation checkpoint's configs without weights: what stage 2 reads before it loads a model."""
    configs = {
        "unet/config.json": {"attention_type": "gated", "in_channels": 4, "sample_size": 32},
        "vae/config.json": {"block_out_channels": [32, 64]},
        "scheduler/scheduler_config.json": {"_class_name": "PNDMScheduler"},
    }
    for name, config in configs.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(config))
    return folder


def record(image_id: int) -> dict:
    return {"image_id": image_id, "file_name": f"source_{image_id % SOURCES}.png", "width": SOURCE_SIZE[0],
            "height": SOURCE_SIZE[1], "category_id": 3, "label": "ball", "bbox": BOXES,
            "annotation_ids": [2 * image_id, 2 * image_id + 1], "category_ids": [3, 5], "labels": ["ball", "dog"],
            "generated_text": f"a ball and a dog, picture {image_id}"}


def write_finished_run(folder: Path, pictures: int) -> list[str]:
    """Records, originals and a generation/ folder holding every picture of the records; returns the stage-2 command."""
    images, out = folder / "images", folder / "out"
    images.mkdir(parents=True)
    for k in range(SOURCES):
        Image.new("RGB", SOURCE_SIZE, (k * 10, 0, 0)).save(images / f"source_{k}.png")
    model = write_config_only_model(folder / "model")
    records = [record(image_id) for image_id in range(1, pictures + 1)]
    (folder / "blip2_post.json").write_text(json.dumps(records))
    command = ["--mode", "generation", "-i", str(images), "-p", str(folder / "blip2_post.json"), "-o", str(out),
               "--model", str(model), "--steps", "4", "--resolution", "64", "--device", "cpu"]
    args = stage2.build_parser().parse_args(command)
    settings = stage2.run_settings(args, str(model), "PNDMScheduler", 64)
    (out / "generation").mkdir(parents=True)
    picture = Image.new("RGB", SOURCE_SIZE, (0, 128, 0))
    for item in records:
        name = output_name(item["category_id"], item["image_id"])
        entry = manifest_entry(name, item, 0, stage2.image_seed(0, item["image_id"], 0), item["generated_text"],
                               item["labels"], (64, 48), SOURCE_SIZE, settings)
        info = PngImagePlugin.PngInfo()
        info.add_text(PNG_ENTRY_KEY, json.dumps(entry))
        picture.save(out / "generation" / name, pnginfo=info)
    return [sys.executable, str(ROOT / "generate_image_gligen.py"), *command]


def run_timed(command: list[str]) -> tuple[float, str]:
    """Wall seconds and stdout of ``command``, which must succeed."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed with exit code {result.returncode}:\n{result.stderr}")
    return elapsed, result.stdout


def bench_resume(workdir: Path, sizes: list[int], repeat: int) -> list[tuple[int, float]]:
    rows = []
    for pictures in sizes:
        folder = workdir / f"resume_{pictures}"
        shutil.rmtree(folder, ignore_errors=True)
        start = time.perf_counter()
        command = write_finished_run(folder, pictures)
        print(f"wrote {pictures} finished pictures in {time.perf_counter() - start:.0f} s: {folder}", flush=True)
        times = []
        for _ in range(repeat):
            seconds, stdout = run_timed(command)
            if f"generated 0, skipped as existing {pictures}" not in stdout:
                raise SystemExit(f"error: the resume made pictures or missed some:\n{stdout}")
            times.append(seconds)
        rows.append((pictures, statistics.median(times)))
    return rows


def print_resume(rows: list[tuple[int, float]], repeat: int):
    """The table; the first row (1 picture) is the fixed cost of a run: start-up, imports, config reads."""
    fixed = rows[0][1]
    print(f"\nstage-2 resume of a finished run (generate_image_gligen.py, interpreter start to exit; median of {repeat})")
    print(f"{'existing pictures':>18}{'time (s)':>10}{'ms per picture beyond the 1-picture run':>42}")
    for pictures, seconds in rows:
        per_picture = f"{1000 * (seconds - fixed) / (pictures - 1):.3f}" if pictures > 1 else "-"
        print(f"{pictures:>18}{seconds:>10.2f}{per_picture:>42}")
    (small, t_small), (large, t_large) = rows[1], rows[-1]
    print(f"growth beyond the fixed cost: {large / small:.1f}x the pictures took {(t_large - fixed) / (t_small - fixed):.1f}x the time")


# ---------------------------------------------------------------- 2. step 4's YOLO labels


def labels_one_by_one(dataset_root: Path, labels: dict[str, bytes]) -> int:
    """The earlier way (before the whole-folder write): one atomic temp file and rename per label file."""
    written = 0
    for label, content in sorted(labels.items()):
        path = dataset_root / "labels" / label
        if not (path.is_file() and path.read_bytes() == content):
            with atomic_path(path) as tmp:
                tmp.write_bytes(content)
            written += 1
    return written


def coco_outputs(count: int) -> dict[str, dict]:
    """A final annotations.json of ``count`` images (originals in a few subfolders, generated pictures), 3 boxes each."""
    images, annotations = [], []
    for image_id in range(1, count + 1):
        folder = f"original/part{image_id % 4}" if image_id % 6 else "generated/inpainting"
        images.append({"id": image_id, "file_name": f"{folder}/{image_id:012d}.jpg", "width": 640, "height": 480})
        for k in range(3):
            annotations.append({"id": 3 * image_id + k, "image_id": image_id, "category_id": 1 + (image_id + k) % 80,
                                "bbox": [10.0 * k, 20.0, 100.0, 50.0 + k], "iscrowd": 0})
    categories = [{"id": c, "name": f"class {c}"} for c in range(1, 81)]
    return {"annotations.json": {"images": images, "annotations": annotations, "categories": categories}}


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def bench_labels(workdir: Path, count: int, repeat: int) -> dict[str, float]:
    outputs = coco_outputs(count)
    labels, _ = yolo_labels(outputs)
    sides = {"one temp file per label (before)": lambda root: labels_one_by_one(root, labels),
             "labels/ whole, renamed (now)": lambda root: write_yolo_dataset(root, outputs, labels, "annotations.json")}
    times = {name: [] for name in sides}
    for run in range(repeat):
        for k, (name, write) in enumerate(sides.items()):
            root = workdir / f"labels_{k}"
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            start = time.perf_counter()
            written = write(root)
            times[name].append(time.perf_counter() - start)
            if written != len(labels):
                raise SystemExit(f"error: {name} wrote {written} of {len(labels)} label files")
    if tree(workdir / "labels_0" / "labels") != tree(workdir / "labels_1" / "labels"):
        raise SystemExit("error: the two ways wrote different label files")
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def main(argv=None):
    args = parse_args(argv)
    os.environ["TQDM_DISABLE"] = "1"  # the label writer's bar: the table is the output
    sizes = [int(size) for size in args.pictures.split(",")]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_resume_"))
    workdir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(workdir / "README.txt", b"bench_resume.py's folders: delete freely\n")

    rows = bench_resume(workdir, [1, *sizes], args.repeat)
    print_resume(rows, args.repeat)

    times = bench_labels(workdir, args.labels, args.repeat)
    print(f"\nstep 4's YOLO labels: {args.labels} label files (median of {args.repeat})")
    print(f"{'side':<36}{'time (s)':>10}{'ms per file':>13}")
    for name, seconds in times.items():
        print(f"{name:<36}{seconds:>10.2f}{1000 * seconds / args.labels:>13.3f}")
    before, now = times.values()
    print(f"speed-up {before / now:.1f}x")
    print("same label files: yes")


if __name__ == "__main__":
    main()
