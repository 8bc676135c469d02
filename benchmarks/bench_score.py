"""Pictures per second of score_images.py's batched scorer against a straightforward loop, same scores.

Both sides judge the same pictures with the same detector (OWLv2) and CLIP, in one process,
alternating run by run (median of --repeat runs each, after one untimed warm-up call each):
  loop:    for each picture, for each box, one detector call on the picture with its labels and
           one CLIP call on the box's padded crop with "a photo of a {label}"; then one CLIP call
           on the picture with its prompt (no text embedding reused)
  project: ``cocoaug.scorer.Scorer.measure`` as score_images.py calls it: batches of --batch-size
           (OWLv2 takes pictures of any size together), one detector call per batch and one CLIP call on all its crops
           and pictures, text embeddings computed once per text
Pictures: the sample set of scripts/make_sample_dataset.py (12 pictures, 1 to 6 boxes each, their
annotations as boxes and labels), cycled to --images. The run fails unless both sides find the
same detections and CLIP scores (within --tolerance).

Default: the tiny OWLv2 and CLIP of scripts/make_tiny_models.py (built into --workdir, reused),
on the CPU: overhead only. --full-size: OWLv2 base patch16 (960x960 input, 3600 patches) and CLIP
ViT-L/14 from benchmarks/configs/ with random weights (float16 on CUDA); tokenizers are the tiny
models' (ids within both vocabularies; no download).

    python benchmarks/bench_score.py --threads 1 --workdir /tmp/bench_score                 # tiny, CPU
    python benchmarks/bench_score.py --full-size --workdir /tmp/bench_score --images 64    # CUDA GPU
"""

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a file, cocoaug imports from the root

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cocoaug.boxes import xywh_pixels_to_xyxy_norm  # noqa: E402
from cocoaug.cli import finite_float  # noqa: E402
from cocoaug.coco import load_coco  # noqa: E402
from cocoaug.images import open_rgb  # noqa: E402
from cocoaug.quality import padded_crop  # noqa: E402
from cocoaug.runtime import resolve_device, resolve_dtype  # noqa: E402
from cocoaug.scorer import Scorer  # noqa: E402

CONFIGS = ROOT / "benchmarks/configs"
OWL_CONFIG, CLIP_CONFIG = "owlv2-base-patch16-ensemble.json", "clip-vit-large-patch14.json"
STORED_MIN_SCORE, MAX_DETECTIONS = 0.05, 100  # score_images.py's


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full-size", action="store_true", help="random-weight OWLv2 base patch16 and CLIP ViT-L/14 (meant for a CUDA GPU)")
    p.add_argument("--configs", type=Path, default=CONFIGS, help=f"with --full-size: the folder of {OWL_CONFIG} and {CLIP_CONFIG} (default %(default)s)")
    p.add_argument("--images", type=int, help="pictures per run (default 24 tiny, 64 full size)")
    p.add_argument("--batch-size", type=int, default=8, help="the project's pictures per batch (default 8, score_images.py's)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per side; the table shows the median (default 3)")
    p.add_argument("--tolerance", type=finite_float, help="largest score difference allowed between the sides (default 1e-4 float32, 2e-2 half)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, cpu (default auto)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"], help="auto: float16 on CUDA, float32 elsewhere")
    p.add_argument("--threads", type=int, help="torch CPU threads (default torch's: one per core)")
    p.add_argument("--workdir", type=Path, help="sample set and tiny models go here and are reused (default: a temp folder)")
    return p.parse_args(argv)


def build_inputs(workdir: Path):
    """The sample set and the tiny models in ``workdir``; both builders reuse what exists."""
    workdir.mkdir(parents=True, exist_ok=True)
    for script, folder in [("make_sample_dataset.py", "sample"), ("make_tiny_models.py", "models")]:
        subprocess.run([sys.executable, str(ROOT / "scripts" / script), str(workdir / folder)], check=True, capture_output=True)
    return workdir / "sample", workdir / "models"


def sample_pictures(sample: Path, count: int) -> list[tuple]:
    """``count`` (picture, boxes, labels, prompt) from the sample set's images and annotations, cycled."""
    coco = load_coco(sample / "annotations.json")
    pictures = []
    for image in sorted(coco.images, key=lambda i: i["id"]):
        anns = [a for a in coco.annotations if a["image_id"] == image["id"]]
        boxes = xywh_pixels_to_xyxy_norm([a["bbox"] for a in anns], image["width"], image["height"])
        keep = (boxes[:, 2:] > boxes[:, :2]).all(axis=1)
        labels = [coco.category_by_id[a["category_id"]]["name"] for a, k in zip(anns, keep) if k]
        if labels:
            pictures.append((open_rgb(sample / "images" / image["file_name"]), boxes[keep].tolist(), labels, f"a photo of a {labels[0]}"))
    return [pictures[i % len(pictures)] for i in range(count)]


def config_values(path: Path, tokenizer) -> dict:
    """A config file's values, with the special token ids of the tokenizer the benchmark uses."""
    values = json.loads(path.read_text())
    values.pop("_comment", None)
    values["text_config"].update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
    return values


def full_size_scorer(device, dtype, configs: Path) -> Scorer:
    """OWLv2 base patch16 and CLIP ViT-L/14 with random weights from benchmarks/configs, with processors for them."""
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, Owlv2Config, Owlv2ForObjectDetection,
                              Owlv2ImageProcessor, Owlv2Processor)

    tiny = importlib.util.spec_from_file_location("make_tiny_models", ROOT / "scripts/make_tiny_models.py")
    builders = importlib.util.module_from_spec(tiny)
    tiny.loader.exec_module(builders)
    owl_tokenizer, clip_tokenizer = builders.build_clip_tokenizer(model_max_length=16, pad_token="!"), builders.build_clip_tokenizer()
    owl_config = Owlv2Config(**config_values(configs / OWL_CONFIG, owl_tokenizer))
    clip_config = CLIPConfig(**config_values(configs / CLIP_CONFIG, clip_tokenizer))
    torch.manual_seed(0)
    with torch.device(device):
        detector = Owlv2ForObjectDetection._from_config(owl_config, dtype=dtype).eval()
        clip = CLIPModel._from_config(clip_config, dtype=dtype).eval()
    side = owl_config.vision_config.image_size
    owl_processor = Owlv2Processor(Owlv2ImageProcessor(size={"height": side, "width": side}), owl_tokenizer)
    crop = clip_config.vision_config.image_size
    clip_processor = CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": crop}, crop_size={"height": crop, "width": crop}),
                                   clip_tokenizer)
    return Scorer(detector, owl_processor, "owlv2", clip, clip_processor, device, dtype, STORED_MIN_SCORE, MAX_DETECTIONS)


def project_scores(scorer: Scorer, pictures, batch_size: int) -> list:
    """score_images.py's way: batches of pictures with equal ``batch_key``, ``Scorer.measure`` per batch."""
    by_size: dict[tuple, list[int]] = {}
    for index, (image, *_) in enumerate(pictures):
        by_size.setdefault(scorer.batch_key(*image.size), []).append(index)
    results = [None] * len(pictures)
    for indices in by_size.values():
        for start in range(0, len(indices), batch_size):
            batch = indices[start:start + batch_size]
            measured = scorer.measure(*[[pictures[i][k] for i in batch] for k in range(4)])
            for i, result in zip(batch, measured):
                results[i] = result
    return results


def loop_scores(scorer: Scorer, pictures) -> list:
    """The straightforward way: per box, one detector call and one CLIP call; per picture, one CLIP call for its prompt."""
    results = []
    for image, boxes, labels, prompt in pictures:
        region_clips = []
        for box, label in zip(boxes, labels):
            (detections, floor), = scorer.detect([image], [labels])
            scorer.text_features.clear()
            region_clips += scorer.clip_similarities([image.crop(padded_crop(box, *image.size))], [f"a photo of a {label}"])
        scorer.text_features.clear()
        (caption_clip,) = scorer.clip_similarities([image], [prompt])
        results.append((detections, floor, region_clips, caption_clip))
    return results


def same_scores(project, loop, tolerance: float) -> str:
    """Fail unless both sides found the same detections and CLIP scores (within ``tolerance``)."""
    worst = 0.0
    for i, (measured, (detections, floor, region_clips, caption_clip)) in enumerate(zip(project, loop)):
        if [d.label for d in measured.detections] != [d.label for d in detections] or measured.detections_min_score != floor:
            raise SystemExit(f"error: picture {i}: the sides found different detections")
        a = np.array([list(d.box) + [d.score] for d in measured.detections] + [[c] * 5 for c in measured.region_clips + [measured.caption_clip]])
        b = np.array([list(d.box) + [d.score] for d in detections] + [[c] * 5 for c in region_clips + [caption_clip]])
        worst = max(worst, float(np.abs(a - b).max()) if a.size else 0.0)
    if worst > tolerance:
        raise SystemExit(f"error: the sides' scores differ by up to {worst:.2e} (tolerance {tolerance:.0e})")
    return f"yes ({len(project)} pictures, largest difference {worst:.1e})"


def timed(function, device) -> tuple[float, object]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import tempfile

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_score_"))
    sample, models = build_inputs(workdir)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if args.full_size:
        scorer = full_size_scorer(device, dtype, args.configs)
        name = "OWLv2 base patch16 + CLIP ViT-L/14 (random weights)"
    else:
        scorer = Scorer.load(str(models / "owlv2"), str(models / "clip"), str(device), args.dtype, STORED_MIN_SCORE, MAX_DETECTIONS)
        name = "tiny OWLv2 + tiny CLIP"
    pictures = sample_pictures(sample, args.images or (64 if args.full_size else 24))
    boxes = sum(len(p[1]) for p in pictures)
    tolerance = args.tolerance or (1e-4 if dtype == torch.float32 else 2e-2)

    sides = {"loop (1 detector + 1 CLIP call per box)": lambda: loop_scores(scorer, pictures),
             f"project (batches of {args.batch_size})": lambda: project_scores(scorer, pictures, args.batch_size)}
    with torch.no_grad():
        for run in sides.values():  # warm-up: first calls allocate and tune
            run()
        times = {side: [] for side in sides}
        outputs = {}
        for _ in range(args.repeat):
            for side, run in sides.items():
                seconds, outputs[side] = timed(run, device)
                times[side].append(seconds)
    loop_side, project_side = list(sides)
    verdict = same_scores(outputs[project_side], outputs[loop_side], tolerance)

    print(f"bench_score: {name}; {device} {str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} CPU thread(s); "
          f"{len(pictures)} pictures, {boxes} boxes; median of {args.repeat} run(s)")
    print(f"{'side':<44}{'s/run':>8}{'pictures/s':>12}")
    for side in sides:
        median = statistics.median(times[side])
        print(f"{side:<44}{median:>8.2f}{len(pictures) / median:>12.2f}")
    print(f"speed-up {statistics.median(times[loop_side]) / statistics.median(times[project_side]):.2f}x")
    print(f"same scores: {verdict}")


if __name__ == "__main__":
    main()
