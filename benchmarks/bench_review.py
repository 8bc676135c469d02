"""Stage 3 at COCO scale: pictures/s of draw_bboxes.py at 1 and N workers, and the review page's size and
time to its first card at 20,000 and 100,000 synthetic pictures.

1. Drawing: a synthetic stage-2 folder (``--pictures`` PNGs of 640x480 with 3 boxes each, named and described
   in a manifest as stage 2 writes them) is drawn by ``draw_bboxes.py`` (boxed copies and overviews, as a user
   runs it) once per worker count, each into a fresh BOXES_DIR, from interpreter start to exit.
2. The page: ``page_data`` + ``write_review_page`` for synthetic records and scores (no picture files: the page
   is measured, not the image decoding), then headless Chromium opens ``review.html`` from ``file://`` and
   the time from navigation to the first card in the DOM is taken (median of ``--repeat``).

    python benchmarks/bench_review.py --workdir /tmp/bench_review                   # 400 pictures; pages of 20k and 100k
    python benchmarks/bench_review.py --pictures 16 --page-sizes 300 --workers 1,2  # a smoke run
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from cocoaug.generated import image_seed, manifest_entry, output_name, rebuild_manifest, save_generated_png  # noqa: E402
from cocoaug.review import DATA_SUBDIR, ReviewPicture, page_data, write_review_page  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pictures", type=int, default=400, help="pictures drawn in part 1 (default 400)")
    parser.add_argument("--workers", default=f"1,{os.cpu_count() or 1}", help="worker counts to draw with (default 1 and the CPU count)")
    parser.add_argument("--page-sizes", default="20000,100000", help="pictures on the synthetic pages of part 2 (default 20000,100000)")
    parser.add_argument("--repeat", type=int, default=3, help="page openings per size; the table shows the median (default 3)")
    parser.add_argument("--workdir", type=Path, help="where the synthetic inputs and outputs go (default: a temp folder)")
    return parser.parse_args(argv)


def synthetic_record(image_id: int) -> dict:
    category_id = 1 + image_id % 80
    return {"image_id": image_id, "file_name": f"{image_id:012d}.jpg", "width": 640, "height": 480, "category_id": category_id,
            "label": f"thing{category_id}", "category_ids": [category_id] * 3, "labels": [f"thing{category_id}"] * 3,
            "bbox": [[0.05, 0.05, 0.45, 0.5], [0.3, 0.3, 0.7, 0.8], [0.55, 0.1, 0.95, 0.9]],
            "annotation_ids": [3 * image_id, 3 * image_id + 1, 3 * image_id + 2], "generated_text": "a photo of a thing on a table"}


def make_stage2_folder(out: Path, pictures: int) -> Path:
    """OUT_DIR with blip2_post.json and generation/ holding ``pictures`` noise PNGs (2 variants per record)."""
    rng = np.random.default_rng(0)
    records = [synthetic_record(image_id) for image_id in range(1, pictures // 2 + 1)]
    (out / "generation").mkdir(parents=True, exist_ok=True)
    (out / "blip2_post.json").write_bytes(orjson.dumps(records))
    settings = {"mode": "generation", "model": "synthetic", "scheduler": "DDIMScheduler", "steps": 1, "guidance_scale": 7.5,
                "grounding_beta": 1.0, "negative_prompt": "", "phrase_template": "{label}", "resolution": 64, "run_seed": 0}
    noise = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    for record in records:
        for k in range(2):
            name = output_name(record["category_id"], record["image_id"], k, 2)
            entry = manifest_entry(name, record, k, image_seed(0, record["image_id"], k), record["generated_text"], record["labels"],
                                   (64, 64), (640, 480), settings)
            save_generated_png(out / "generation" / name, Image.fromarray(np.roll(noise, record["image_id"] * 7 + k, axis=1)), entry)
    rebuild_manifest(out / "generation")
    return out


def time_drawing(out: Path, workers: int, boxes: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (the process and its workers) of one draw_bboxes.py run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(ROOT / "draw_bboxes.py"), "-g", str(out), "-p", str(out / "blip2_post.json"),
                             "-o", str(boxes), "--num-workers", str(workers)], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"error: draw_bboxes.py failed:\n{result.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def synthetic_page(boxes: Path, pictures: int) -> tuple[float, int, int]:
    """Write a page of ``pictures`` (2 modes x 2 variants per record, every third failing); returns the seconds to build
    and write it, the HTML's bytes and the sidecars' bytes."""
    records, rows = {}, []
    for image_id in range(1, pictures // 4 + 1):
        record = synthetic_record(image_id)
        records[image_id] = record
        for mode in ("generation", "inpainting"):
            for k in range(2):
                passed = (image_id + k) % 3 != 0
                score = {"passed": passed, "reasons": [] if passed else ["box 0 (thing) not found", "box 1 (thing) region_clip 0.150 < 0.21"],
                         "box_recall": 1.0 if passed else 2 / 3, "min_region_clip": 0.25 if passed else 0.15, "extra_objects": 0,
                         "boxes": [{"found": passed or b > 0, "region_clip": 0.25 - 0.05 * (b == 1 and not passed)} for b in range(3)]}
                rows.append(ReviewPicture(mode, output_name(record["category_id"], image_id, k, 2), image_id, k, score))
    start = time.perf_counter()
    data = page_data(rows, records, generated_dir=boxes.parent, boxes_dir=boxes, clean_dirs={}, originals=set(records))
    page = write_review_page(boxes, data)
    elapsed = time.perf_counter() - start
    sidecars = sum(p.stat().st_size for p in (boxes / DATA_SUBDIR).glob("cards-*.js"))
    return elapsed, page.stat().st_size, sidecars


def first_card_seconds(page_path: Path, repeat: int) -> list[float]:
    from playwright.sync_api import sync_playwright
    from review_screenshot import open_browser

    times = []
    with sync_playwright() as playwright:
        browser = open_browser(playwright)
        for _ in range(repeat):
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            start = time.perf_counter()
            page.goto(page_path.as_uri(), wait_until="commit")
            page.wait_for_selector("section.card figure.pic", timeout=120_000)
            times.append(time.perf_counter() - start)
            context.close()
        browser.close()
    return times


def main():
    args = parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_review_"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs; workdir {workdir}")

    out = workdir / f"stage2_{args.pictures}"
    if not (out / "generation" / "manifest.jsonl").is_file():
        make_stage2_folder(out, args.pictures)
    print(f"\n1. draw_bboxes.py on {args.pictures} pictures of 640x480 (boxed copies + overviews)")
    print(f"(load average before: {os.getloadavg()[0]:.1f}; CPU s = the run's and its workers' user + system time)")
    print(f"{'workers':>8}  {'seconds':>8}  {'pictures/s':>10}  {'CPU s':>7}")
    for workers in (int(w) for w in args.workers.split(",")):
        boxes = workdir / f"boxes_{args.pictures}_{workers}"
        if boxes.exists():
            subprocess.run(["rm", "-rf", str(boxes)], check=True)
        seconds, cpu = time_drawing(out, workers, boxes)
        print(f"{workers:>8}  {seconds:>8.1f}  {args.pictures / seconds:>10.1f}  {cpu:>7.1f}")

    print("\n2. the review page (file://, headless Chromium, 1400x900)")
    print(f"{'pictures':>9}  {'build s':>7}  {'review.html MB':>14}  {'sidecars MB':>11}  {'first card s (median)':>21}  runs")
    for size in (int(s) for s in args.page_sizes.split(",")):
        boxes = workdir / f"page_{size}" / "boxes"
        build, html, sidecars = synthetic_page(boxes, size)
        times = first_card_seconds(boxes / "review.html", args.repeat)
        print(f"{size:>9}  {build:>7.1f}  {html / 1e6:>14.2f}  {sidecars / 1e6:>11.2f}  {statistics.median(times):>21.2f}  "
              + ", ".join(f"{t:.2f}" for t in times))


if __name__ == "__main__":
    main()
