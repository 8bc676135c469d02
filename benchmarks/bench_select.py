"""Time and peak memory of stage 1's selection against the seed's, on a COCO-train-sized file.

Both sides run as separate subprocesses, from interpreter start to their selection file on
disk (JSON parse included), so each one's peak RSS is its own (``os.wait4``):
  project: ``generate_prompt_blip2.py --select-only`` (no model, no image read)
  seed:    ``benchmarks/seed_select.py`` (json.load, pandas groupby().filter with lambdas, row-wise apply)
Both must agree: the project selects the seed's images minus those the seed wrongly keeps
(a crowd annotation, or a box with no area inside the image); the run fails otherwise.

    python benchmarks/bench_select.py                 # full size: 118,287 images, ~750k boxes
    python benchmarks/bench_select.py --images 200    # a smoke run
    python benchmarks/bench_select.py --steps         # also: where the project's time goes (one run)
"""

import argparse
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=118_287, help="images in the synthetic file (default COCO train's)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side; the table shows the median (default 3)")
    parser.add_argument("--workdir", type=Path, help="where the synthetic file and outputs go (default: a temp folder)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic file (default 0)")
    parser.add_argument("--steps", action="store_true", help="then time each step of one project run in a fresh process")
    return parser.parse_args(argv)


def run_measured(command: list[str]) -> tuple[float, float]:
    """Run ``command``; return its wall time in seconds and its own peak RSS in MiB."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    if process.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed with exit code {process.returncode}:\n{stderr}")
    return elapsed, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def project_steps(annotations: Path, images_dir: Path, output: Path):
    """Print the seconds of each step of one ``--select-only`` run; the steps are those of its main().

    Runs in a fresh interpreter (``--project-steps``) so that the import time is the stage's own.
    """
    start = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    import cocoaug.coco
    import generate_prompt_blip2 as stage

    seconds = {"imports": time.perf_counter() - start}

    def timed(name, function, *args):
        begin = time.perf_counter()
        result = function(*args)
        seconds[name] = time.perf_counter() - begin
        return result

    args = stage.parse_args(["-i", str(images_dir), "-a", str(annotations), "-o", str(output), "--select-only", "--overwrite"])
    stage.check_arguments(args)
    with open(annotations, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as raw:
        timed("  of which: UTF-8 check", cocoaug.coco._check_utf8, raw)
        timed("  of which: msgspec decode", cocoaug.coco._decode_selection_fields, raw)
    dataset = timed("load and validate (decode, columns, checks)", stage.load_annotations, annotations, False)
    table = timed("per-image statistics (image_table)", stage.image_table, dataset, args.categories)
    reasons = timed("rules (select_images, apply_limit)", lambda: stage.apply_limit(stage.select_images(table, args), args.limit))
    selected_ids = reasons.index[reasons == ""].to_numpy()
    records, _ = timed("records (build_records)", stage.build_records, dataset, table, selected_ids)
    timed("write selection.json", stage.write_records, output / "selection.json", records, False)
    # The two "of which" lines are separate passes, measured before the load they are part of.
    order = ["imports", "load and validate (decode, columns, checks)", "  of which: UTF-8 check", "  of which: msgspec decode"]
    for name in order + [name for name in seconds if name not in order]:
        print(f"  {name:<44}{seconds[name]:>6.2f} s")


def ids_the_seed_wrongly_keeps(annotation_path: Path) -> set[int]:
    """Images with a crowd annotation or a box with no area after clipping: the seed does not look."""
    coco = orjson.loads(annotation_path.read_bytes())
    sizes = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    bad = set()
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        width, height = sizes[ann["image_id"]]
        clipped_w = min(x + w, width) - max(x, 0)
        clipped_h = min(y + h, height) - max(y, 0)
        if ann.get("iscrowd", 0) or clipped_w <= 0 or clipped_h <= 0:
            bad.add(ann["image_id"])
    return bad


def main(argv=None):
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_select_"))
    workdir.mkdir(parents=True, exist_ok=True)
    annotations = workdir / f"synthetic_{args.images}_{args.seed}.json"
    if not annotations.exists():
        subprocess.run([sys.executable, str(ROOT / "benchmarks/make_synthetic_coco.py"), str(annotations),
                        "--images", str(args.images), "--seed", str(args.seed)], check=True)
    images_dir = workdir / "images"  # --select-only reads no image: an empty folder will do
    images_dir.mkdir(exist_ok=True)
    sides = {
        "project (--select-only)": [sys.executable, str(ROOT / "generate_prompt_blip2.py"), "-i", str(images_dir),
                                    "-a", str(annotations), "-o", str(workdir / "project"), "--select-only", "--overwrite"],
        "seed (pandas filter+apply)": [sys.executable, str(ROOT / "benchmarks/seed_select.py"), str(annotations),
                                       str(workdir / "seed.json")],
    }
    # The sides take turns, so that both see the same load from whatever else runs on the machine.
    runs = {name: [] for name in sides}
    for _ in range(args.repeat):
        for name, command in sides.items():
            runs[name].append(run_measured(command))
    results = {name: (statistics.median(t for t, _ in side), max(m for _, m in side)) for name, side in runs.items()}

    project_ids = {r["image_id"] for r in orjson.loads((workdir / "project/selection.json").read_bytes())}
    seed_ids = {r["image_id"] for r in orjson.loads((workdir / "seed.json").read_bytes())}
    expected = seed_ids - ids_the_seed_wrongly_keeps(annotations)
    (project_time, project_rss), (seed_time, seed_rss) = results.values()
    print(f"{annotations.name}: {args.images} images; median time of {args.repeat} run(s) per side (taking turns), "
          "highest peak RSS")
    print(f"{'side':<28}{'time (s)':>10}{'peak RSS (MiB)':>16}")
    for name, (seconds, rss) in results.items():
        print(f"{name:<28}{seconds:>10.2f}{rss:>16.0f}")
    print(f"speed-up {seed_time / project_time:.1f}x, peak memory ratio (project/seed) {project_rss / seed_rss:.2f}")
    print(f"selected: project {len(project_ids)}, seed {len(seed_ids)} "
          f"(of which {len(seed_ids) - len(expected)} with a crowd annotation or an empty box)")
    if project_ids != expected:
        raise SystemExit(f"error: the selections differ on {len(project_ids ^ expected)} image(s), "
                         f"e.g. {sorted(project_ids ^ expected)[:10]}")
    print("same selection: yes")
    if args.steps:
        print("project, one run, seconds per step:")
        sys.stdout.flush()
        subprocess.run([sys.executable, __file__, "--project-steps", str(annotations), str(images_dir),
                        str(workdir / "project_steps")], check=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--project-steps"]:
        project_steps(*map(Path, sys.argv[2:5]))
    else:
        main()
