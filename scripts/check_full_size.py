"""Run every model step on the full-size random models on CPU and check what each must deliver.

The tiny test models take shortcuts that real ones do not (a few query tokens, one downsampling,
a 32-pixel detector); this check runs the project's own scripts, as a user would, on models of the
real size and structure (scripts/make_full_size_models.py, built first if missing): one 640x480
image with two boxes, one denoising step, stage 1 in bfloat16. For each step it reports the time
and the peak memory (RSS) and checks the contract:

  caption      stage 1 writes a record for the image (32 query tokens, <image> id 50265)
  generation   a picture of the original's size, drawn at 592x440 (odd 74x55 latents)
  inpainting   a picture of the original's size, every pixel outside the boxes the original's
  scoring      a score line per picture; OWLv2's boxes mapped back through its pad-to-square
               (the scorer's boxes equal the raw boxes scaled by the longer side, within 0.5 px)

It took 32 minutes (11 more to build the models) and 15 GiB of memory on 2 shared CPU cores (BENCHMARKS.md); `make check-full-size`
runs it. Not part of `make test`. Writes WORK/report.md and exits 1 when a contract fails.

    python scripts/check_full_size.py --models full_size_models --work full_size_check
"""

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cocoaug import cli  # noqa: E402
from cocoaug.atomic import write_bytes_atomic, write_json_atomic  # noqa: E402
from cocoaug.errors import UserError  # noqa: E402
from cocoaug.runtime import run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIZE = (640, 480)  # generation's working size for it at 512: 592x440, latents 74x55
BOXES_XYWH = [[60, 80, 200, 220], [350, 150, 230, 260]]  # pixels, both "dog"
CATEGORY = {"id": 18, "name": "dog", "supercategory": "animal"}
MODELS = ["blip2", "gligen-generation", "gligen-inpainting", "owlv2", "clip"]
MAX_BOX_ERROR_PX = 0.5


@dataclass
class Step:
    """One measured step: what ran, how long, its peak memory, and what its check found."""

    name: str
    seconds: float
    peak_rss_gb: float
    check: str = ""
    passed: bool = True


def build_parser():
    """The command-line interface."""
    parser = cli.new_parser(__doc__)
    parser.add_argument("--models", type=Path, default=Path("full_size_models"), metavar="DIR",
                        help="the full-size models, built there if missing (default full_size_models; about 13 GB)")
    parser.add_argument("--work", type=Path, default=Path("full_size_check"), metavar="DIR",
                        help="folder for the input image, the stage outputs and report.md (default full_size_check)")
    parser.add_argument("--overwrite", action="store_true", help="empty an existing WORK folder first")
    cli.add_debug(parser)
    return parser


def check_args(args):
    """Refuse a WORK folder that holds an earlier run (without --overwrite) and paths that are files."""
    for path in (args.models, args.work):
        if path.exists() and not path.is_dir():
            raise UserError("exists and is not a folder", path)
    if args.work.exists() and any(args.work.iterdir()) and not args.overwrite:
        raise UserError("holds an earlier check: pass --overwrite to empty it first", args.work)


def run_step(name: str, command: list[str]) -> Step:
    """Run ``command`` as a child process; its wall time and its own peak RSS (os.wait4), or a UserError if it fails."""
    print(f"== {name}: {' '.join(str(part) for part in command)}", flush=True)
    start = time.perf_counter()
    process = subprocess.Popen([str(part) for part in command], cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise UserError(f"step {name} failed with exit code {process.returncode} (its output is above)", command[1])
    return Step(name, seconds, usage.ru_maxrss / 1024 ** 2)  # ru_maxrss is in KiB on Linux: GiB


def make_input(work: Path) -> tuple[Path, Path]:
    """One 640x480 picture with two dog boxes and its COCO annotation file; returns (images folder, annotation file)."""
    images = work / "images"
    images.mkdir(parents=True)
    picture = Image.new("RGB", IMAGE_SIZE, (90, 140, 60))
    draw = ImageDraw.Draw(picture)
    for i, (x, y, w, h) in enumerate(BOXES_XYWH):
        draw.ellipse([x + 10, y + 10, x + w - 10, y + h - 10], fill=(150 + 40 * i, 110, 70))
    for x in range(0, IMAGE_SIZE[0], 40):  # texture, so that a wrong paste shows in the background check
        draw.line([x, 0, x, IMAGE_SIZE[1]], fill=(60, 100 + x % 100, 40))
    picture.save(images / "000000000001.jpg", quality=95)
    annotations = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "width": IMAGE_SIZE[0], "height": IMAGE_SIZE[1]}],
        "annotations": [{"id": i + 1, "image_id": 1, "category_id": CATEGORY["id"], "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
                        for i, box in enumerate(BOXES_XYWH)],
        "categories": [CATEGORY],
    }
    write_json_atomic(work / "annotations.json", annotations)
    return images, work / "annotations.json"


def check_caption(out: Path) -> str:
    """Stage 1 kept the image: one post-processed record with a caption."""
    records = json.loads((out / "blip2_post.json").read_text())
    if [record["image_id"] for record in records] != [1]:
        raise AssertionError(f"expected one record for image 1, got {len(records)}")
    return f"1 record, caption {records[0]['generated_text'][:60]!r}"


def check_picture_size(out: Path, mode: str) -> str:
    """Stage 2 wrote one picture of the original's size."""
    pictures = sorted((out / mode).glob("*.png"))
    if len(pictures) != 1:
        raise AssertionError(f"expected 1 picture in {out / mode}, found {len(pictures)}")
    with Image.open(pictures[0]) as picture:
        if picture.size != IMAGE_SIZE:
            raise AssertionError(f"{pictures[0].name} is {picture.size}, the original {IMAGE_SIZE}")
    return f"{pictures[0].name} {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}"


def check_background_kept(out: Path, images: Path) -> str:
    """Inpainting changed no pixel outside the boxes (a 1-pixel margin around each box for rounding)."""
    picture = np.asarray(Image.open(next((out / "inpainting").glob("*.png"))).convert("RGB")).astype(int)
    original = np.asarray(Image.open(images / "000000000001.jpg").convert("RGB")).astype(int)
    outside = np.ones(picture.shape[:2], dtype=bool)
    for x, y, w, h in BOXES_XYWH:
        outside[max(0, y - 1):y + h + 1, max(0, x - 1):x + w + 1] = False
    changed = int((np.abs(picture - original).max(axis=2)[outside] > 0).sum())
    inside = float(np.abs(picture - original)[~outside].mean())
    if changed:
        raise AssertionError(f"{changed} pixels outside the boxes differ from the original")
    return f"0 of {int(outside.sum())} pixels outside the boxes changed (mean change inside {inside:.1f})"


def check_scores(out: Path) -> str:
    """The scorer wrote one line per picture."""
    lines = {mode: (out / mode / "scores.jsonl").read_text().splitlines() for mode in ("generation", "inpainting")}
    if any(len(mode_lines) != 1 for mode_lines in lines.values()):
        raise AssertionError(f"expected one score line per mode, got {({m: len(v) for m, v in lines.items()})}")
    return "1 score line per mode"


def check_owlv2_box_mapping(out: Path, models: Path) -> str:
    """The scorer's OWLv2 boxes, on a non-square picture, equal the raw boxes (normalised to the padded square) times its longer side."""
    import torch

    from cocoaug.scorer import Scorer, owl_query

    scorer = Scorer.load(str(models / "owlv2"), str(models / "clip"), "cpu", "float32", stored_min_score=0.0, max_detections=10 ** 6)
    picture = Image.open(next((out / "generation").glob("*.png"))).convert("RGB")
    width, height = picture.size
    [(detections, _)] = scorer.detect([picture], [[CATEGORY["name"]]])
    inputs = scorer.detector_processor(text=[[owl_query(CATEGORY["name"])]], images=[picture], return_tensors="pt")
    with torch.no_grad():
        outputs = scorer.detector(**inputs)
    best = int(outputs.logits[0, :, 0].argmax())
    cx, cy, w, h = outputs.pred_boxes[0, best].tolist()
    side = max(width, height)  # OWLv2 pads at the right and bottom to a square of the longer side
    expected = np.clip([(cx - w / 2) * side, (cy - h / 2) * side, (cx + w / 2) * side, (cy + h / 2) * side],
                       0, [width, height, width, height])
    got = np.array(detections[0].box) * [width, height, width, height]
    error = float(np.abs(got - expected).max())
    if error > MAX_BOX_ERROR_PX:
        raise AssertionError(f"the scorer's best box {got.round(1).tolist()} is {error:.1f} px from {expected.round(1).tolist()}")
    return f"best of {len(detections)} boxes within {error:.2f} px of the raw box scaled by {side}"


def write_report(path: Path, steps: list[Step], total_seconds: float):
    """The table of steps as Markdown, printed and written to ``path``."""
    lines = ["| step | time (s) | peak RSS (GiB) | check |", "| --- | ---: | ---: | --- |"]
    lines += [f"| {s.name} | {s.seconds:.0f} | {s.peak_rss_gb:.1f} | {'ok' if s.passed else 'FAILED'}: {s.check} |" for s in steps]
    lines.append(f"| total | {total_seconds:.0f} | {max(s.peak_rss_gb for s in steps):.1f} | |")
    text = "\n".join(lines) + "\n"
    write_bytes_atomic(path, text.encode())
    print(text)


def checked(step: Step, check, *arguments) -> Step:
    """Run one contract check on a step; a failed check is recorded, not raised, so that the later steps still run."""
    try:
        step.check = check(*arguments)
    except AssertionError as exc:
        step.check, step.passed = str(exc), False
    return step


def main(args):
    check_args(args)
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    python, models, out = sys.executable, args.models, args.work / "out"
    start = time.perf_counter()
    steps = []
    if not all((models / name).is_dir() for name in MODELS):
        steps.append(checked(run_step("build models", [python, "scripts/make_full_size_models.py", models]), lambda: "built"))
    images, annotations = make_input(args.work)
    steps.append(checked(run_step("caption (bfloat16)", [
        python, "generate_prompt_blip2.py", "-i", images, "-a", annotations, "-o", out, "--model", models / "blip2",
        "--device", "cpu", "--dtype", "bfloat16", "--batch-size", "1"]), check_caption, out))
    for mode in ("generation", "inpainting"):
        step = checked(run_step(mode, [
            python, "generate_image_gligen.py", "--mode", mode, "-i", images, "-a", annotations, "-p", out / "blip2_post.json",
            "-o", out, "--model", models / f"gligen-{mode}", "--steps", "1", "--device", "cpu", "--batch-size", "1"]),
            check_picture_size, out, mode)
        if mode == "inpainting" and step.passed:
            step = checked(step, lambda: f"{check_picture_size(out, mode)}; {check_background_kept(out, images)}")
        steps.append(step)
    step = checked(run_step("scoring", [
        python, "score_images.py", "-g", out, "-p", out / "blip2_post.json", "--detector", models / "owlv2",
        "--clip-model", models / "clip", "--device", "cpu", "--batch-size", "1"]), check_scores, out)
    if step.passed:
        step = checked(step, lambda: f"{check_scores(out)}; {check_owlv2_box_mapping(out, models)}")
    steps.append(step)
    write_report(args.work / "report.md", steps, time.perf_counter() - start)
    failed = [s.name for s in steps if not s.passed]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)
    print(f"all {len(steps)} steps passed their checks ({args.work / 'report.md'})")


if __name__ == "__main__":
    run_cli(main, build_parser())
