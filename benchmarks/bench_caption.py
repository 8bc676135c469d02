"""Images per second of stage 1's batched captioning against the seed's loop, same captions.

Both sides caption the same images with the same weights, greedy, in one process, alternating
run by run (median of --repeat runs each, after one untimed warm-up call each):
  seed:    one image per ``model.generate`` call with ``Blip2Processor`` + ``Blip2ForConditionalGeneration``,
           each image decoded in the loop
  project: generate_prompt_blip2.py's own code: its ``ImageFiles`` decoded by a DataLoader with
           workers (``collate_images``), batches of --batch-size through ``caption_batch``
           (left padding, new tokens only); the loop of ``caption_records`` without its resume file
Images: the sample set of scripts/make_sample_dataset.py (12 pictures, cycled to --images),
opened by the project's ``open_rgb`` on both sides so both see the same pixels (PIL's own
``convert("RGB")`` clips 16-bit pictures). The run fails unless both sides give the same
captions, up to greedy near-ties in half precision (see ``check_captions``).

Default: the tiny BLIP-2 of scripts/make_tiny_models.py (built into --workdir, reused), loaded by
stage 1's ``load_model`` and, for the seed, by ``from_pretrained``, on the CPU: overhead only.
--full-size: the BLIP-2 OPT-2.7b architecture from benchmarks/configs/blip2-opt-2.7b.json with
random weights (float16 on CUDA), every caption forced to exactly --max-new-tokens tokens so both
sides do equal work; its tokenizer is a synthetic one of the model's vocabulary size (no download).

    python benchmarks/bench_caption.py --workdir /tmp/bench_caption               # tiny, CPU
    python benchmarks/bench_caption.py --full-size --workdir /tmp/bench_caption   # CUDA GPU
"""

import argparse
import json
import statistics
import string
import subprocess
import sys
import tempfile
import time
from itertools import product
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a file, the stage script and cocoaug import from the root

import torch  # noqa: E402

import generate_prompt_blip2 as stage1  # noqa: E402
from cocoaug.images import open_rgb  # noqa: E402
from cocoaug.runtime import resolve_device, resolve_dtype  # noqa: E402

FULL_SIZE_CONFIG = ROOT / "benchmarks/configs/blip2-opt-2.7b.json"
# Largest gap between two tokens' scores (the seed's own) at which greedy paths may part, per dtype.
TIE_TOLERANCE = {torch.float32: 1e-3, torch.float16: 0.1, torch.bfloat16: 0.5}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full-size", action="store_true", help="random-weight BLIP-2 OPT-2.7b from --config (meant for a CUDA GPU)")
    p.add_argument("--config", type=Path, default=FULL_SIZE_CONFIG, help="with --full-size: the Blip2Config JSON (default %(default)s)")
    p.add_argument("--images", type=int, help="images per run (default 48 tiny, 64 full size)")
    p.add_argument("--batch-size", type=int, default=8, help="the project's batch size (default 8, stage 1's)")
    p.add_argument("--max-new-tokens", type=int, default=30, help="caption length in tokens (default 30, stage 1's)")
    p.add_argument("--num-workers", type=int, help="the project's DataLoader workers (default stage 1's: min(4, CPUs))")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per side; the table shows the median (default 3)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, cpu (default auto)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"],
                   help="auto: float16 on CUDA, float32 elsewhere")
    p.add_argument("--threads", type=int, help="torch CPU threads of both sides (default torch's: one per core)")
    p.add_argument("--workdir", type=Path, help="sample set and tiny model go here and are reused (default: a temp folder)")
    return p.parse_args(argv)


def build_inputs(workdir: Path, full_size: bool) -> tuple[Path, Path | None]:
    """The sample set and (unless full size) the tiny models in ``workdir``; both scripts reuse what exists."""
    workdir.mkdir(parents=True, exist_ok=True)
    builders = [("make_sample_dataset.py", "sample")] + ([] if full_size else [("make_tiny_models.py", "models")])
    for script, folder in builders:
        subprocess.run([sys.executable, str(ROOT / "scripts" / script), str(workdir / folder)], check=True, capture_output=True)
    return workdir / "sample", None if full_size else workdir / "models/blip2"


def image_paths(sample: Path, count: int) -> list[Path]:
    """``count`` image files of the sample set, its 12 pictures in a fixed order, cycled."""
    files = sorted(p for p in (sample / "images").rglob("*") if p.is_file())
    return [files[i % len(files)] for i in range(count)]


def synthetic_opt_tokenizer(image_token_index: int):
    """A byte-level BPE with ``image_token_index`` tokens (OPT's specials first), every other token a distinct word.

    The full-size model's random weights choose any id of its vocabulary; each must decode to
    its own text for two captions to be compared. The words are "a".."zz..", space-prefixed.
    """
    from tokenizers import pre_tokenizers
    from transformers import GPT2TokenizerFast

    tokens = ["<s>", "<pad>", "</s>", "<unk>"] + sorted(pre_tokenizers.ByteLevel.alphabet())
    merges, previous = [], ["\u0120"]  # "\u0120": a space in GPT-2's byte alphabet
    while len(tokens) < image_token_index:
        current = []
        for stem, letter in product(previous, string.ascii_lowercase):
            merges.append((stem, letter))
            current.append(stem + letter)
        tokens += current[: image_token_index - len(tokens)]
        previous = current
    vocab = {token: i for i, token in enumerate(tokens)}
    merges = [m for m in merges if "".join(m) in vocab]
    return GPT2TokenizerFast(vocab=vocab, merges=merges, bos_token="</s>", eos_token="</s>", unk_token="</s>",
                             pad_token="<pad>", add_bos_token=True, model_max_length=2048)


def full_size_model(config_path: Path, device, dtype):
    """BLIP-2 built from ``config_path`` with random weights on ``device``, and a processor for it."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

    values = json.loads(config_path.read_text())
    values.pop("_comment", None)
    config = Blip2Config(**values)
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: 3.7e9 random numbers are slow on a CPU
        model = Blip2ForConditionalGeneration._from_config(config, dtype=dtype).eval()
    side = config.vision_config.image_size
    image_processor = BlipImageProcessor(size={"height": side, "width": side}, resample=PILImageResampling.BICUBIC,
                                         image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
    processor = Blip2Processor(image_processor, synthetic_opt_tokenizer(config.image_token_index),
                               num_query_tokens=config.num_query_tokens)
    return processor, model


def seed_captions(processor, model, paths, prompt, max_new_tokens, device, dtype) -> list[str]:
    """The seed's loop: open an image, process it, one ``generate`` call, decode; next image."""
    captions = []
    for path in paths:
        inputs = processor(images=open_rgb(path), text=prompt, return_tensors="pt").to(device, dtype)
        output = model.generate(**inputs, max_new_tokens=max_new_tokens)
        captions.append(processor.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
    return captions


def project_captions(processor, model, paths, args1, device, dtype) -> list[str]:
    """Stage 1's loop: DataLoader workers decode the images, ``caption_batch`` captions each batch."""
    from torch.utils.data import DataLoader

    files = stage1.ImageFiles(paths, list(range(len(paths))))
    loader = DataLoader(files, batch_size=args1.batch_size, num_workers=args1.num_workers, collate_fn=stage1.collate_images)
    captions = []
    for _, images, errors in loader:
        assert not any(errors), errors
        captions += stage1.caption_batch(processor, model, images, args1, device, dtype)
    return captions


def timed(function, device) -> tuple[float, list[str]]:
    """Seconds ``function()`` takes, and its result."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def greedy_paths(processor, model, images, prompt, max_new_tokens, device, dtype):
    """New token ids and the scores they were picked from, for one ``generate`` call on ``images``."""
    inputs = processor(images=images, text=[prompt] * len(images), return_tensors="pt", padding=True)
    inputs = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()}
    out = model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                         output_scores=True, return_dict_in_generate=True)
    new = out.sequences[:, inputs["input_ids"].shape[1]:].cpu()
    scores = torch.stack(out.scores, dim=1).float().cpu()  # (images, steps, vocabulary)
    return new, scores


def check_captions(seed, project, paths, seed_side, project_side, args1, device, dtype) -> str:
    """Fail unless every caption agrees, or (half precision) parts from the other only at a near-tie.

    With random weights the best two next tokens are often within float16 rounding of each
    other, and a batched matrix product rounds differently from a single one, so two greedy
    paths may part there and never meet again. Each differing image is replayed, untimed, on
    both sides with its scores: the paths must part at a step where the seed's own scores of
    the two tokens differ by at most TIE_TOLERANCE[dtype]; any other difference is a failure.
    """
    differing = [i for i, (a, b) in enumerate(zip(seed, project)) if a != b]
    if not differing:
        return f"yes ({len(seed)}/{len(seed)} identical)"
    tolerance = TIE_TOLERANCE[dtype]
    gaps = []
    for i in differing:
        first = i - i % args1.batch_size  # the project's batch that held image i
        batch = [open_rgb(path) for path in paths[first:first + args1.batch_size]]
        seed_ids, seed_scores = greedy_paths(*seed_side, batch[i - first:i - first + 1], args1.prompt, args1.max_new_tokens, device, dtype)
        project_ids, _ = greedy_paths(*project_side, batch, args1.prompt, args1.max_new_tokens, device, dtype)
        seed_ids, seed_scores, project_ids = seed_ids[0], seed_scores[0], project_ids[i - first]
        if seed_side[0].decode(seed_ids, skip_special_tokens=True) != seed[i] or \
                project_side[0].decode(project_ids, skip_special_tokens=True) != project[i]:
            raise SystemExit(f"error: the replay of image {i} ({paths[i].name}) does not reproduce the timed captions")
        length = min(len(seed_ids), len(project_ids))
        parted = (seed_ids[:length] != project_ids[:length]).nonzero()
        if len(parted) == 0:
            raise SystemExit(f"error: captions of image {i} ({paths[i].name}) differ in length:\n"
                             f"  seed:    {seed[i]!r}\n  project: {project[i]!r}")
        step = int(parted[0])
        gap = float(seed_scores[step, seed_ids[step]] - seed_scores[step, project_ids[step]])
        gaps.append(gap)
        if gap > tolerance:
            raise SystemExit(f"error: captions differ for image {i} ({paths[i].name}) from token {step}, where the seed's "
                             f"best token leads the project's by {gap:.4f} > {tolerance} (not a near-tie):\n"
                             f"  seed:    {seed[i]!r}\n  project: {project[i]!r}")
    return (f"yes up to near-ties: {len(seed) - len(differing)}/{len(seed)} identical, {len(differing)} part at a "
            f"near-tie (logit gap at most {max(gaps):.4f} <= {tolerance})")


def load_sides(args, args1, tiny_model, device, dtype):
    """(processor, model) of the seed and of the project, and the model's name for the table."""
    import transformers
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars
    if args.full_size:
        processor, model = full_size_model(args.config, device, dtype)
        # Random weights may end a caption at any step; equal work needs equal lengths on both sides.
        model.generation_config.min_new_tokens = args.max_new_tokens
        processor.tokenizer.padding_side = "left"  # as stage 1's load_model; one prompt for all, so no padding anyway
        return (processor, model), (processor, model), f"BLIP-2 from {args.config.name}, random weights"
    project_side = stage1.load_model(args1)[:2]
    seed_side = (Blip2Processor.from_pretrained(tiny_model),
                 Blip2ForConditionalGeneration.from_pretrained(tiny_model, dtype=dtype).to(device).eval())
    return seed_side, project_side, f"tiny BLIP-2 ({tiny_model})"


def main(argv=None):
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_caption_"))
    sample, tiny_model = build_inputs(workdir, args.full_size)
    count = args.images or (64 if args.full_size else 48)
    paths = image_paths(sample, count)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    # The project's settings are stage 1's own parser's defaults, with the flags given here.
    flags = ["-i", str(sample / "images"), "-a", str(sample / "annotations.json"), "-o", str(workdir / "out"),
             "--batch-size", str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens),
             "--device", args.device, "--dtype", args.dtype, "--model", str(tiny_model or args.config)]
    if args.num_workers is not None:
        flags += ["--num-workers", str(args.num_workers)]
    args1 = stage1.parse_args(flags)
    seed_side, project_side, model_name = load_sides(args, args1, tiny_model, device, dtype)
    torch.set_grad_enabled(False)

    # Warm-up, untimed: first-call allocations and kernel choices.
    seed_captions(*seed_side, paths[:1], args1.prompt, args1.max_new_tokens, device, dtype)
    stage1.caption_batch(*project_side, [open_rgb(p) for p in paths[: args.batch_size]], args1, device, dtype)
    runs = {"seed": lambda: seed_captions(*seed_side, paths, args1.prompt, args1.max_new_tokens, device, dtype),
            "project": lambda: project_captions(*project_side, paths, args1, device, dtype)}
    times, peaks, captions = {"seed": [], "project": []}, {"seed": 0.0, "project": 0.0}, {}
    for _ in range(args.repeat):  # the sides take turns, so a change in the machine's load hits both
        for side, run in runs.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds, captions[side] = timed(run, device)
            times[side].append(seconds)
            if device.type == "cuda":
                peaks[side] = max(peaks[side], torch.cuda.max_memory_allocated(device) / 2**20)
    (workdir / "captions.json").write_text(json.dumps({"images": [str(p.relative_to(sample)) for p in paths], **captions}, indent=1))

    print(f"bench_caption: {model_name}; {device} {str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} CPU thread(s); "
          f"{count} images, {args1.max_new_tokens} new tokens{' (forced)' if args.full_size else ''}, "
          f"median of {args.repeat} run(s) per side")
    cuda = device.type == "cuda"
    print(f"{'side':<44}{'s/run':>8}{'images/s':>10}{'range':>14}{'peak CUDA MiB' if cuda else '':>15}")
    names = {"seed": "seed (1 image per generate call)",
             "project": f"project (DataLoader {args1.num_workers} workers, batch {args1.batch_size})"}
    for side, name in names.items():
        rates = sorted(count / t for t in times[side])
        print(f"{name:<44}{statistics.median(times[side]):>8.2f}{count / statistics.median(times[side]):>10.2f}"
              f"{f'{rates[0]:.2f}-{rates[-1]:.2f}':>14}{f'{peaks[side]:.0f}' if cuda else '':>15}")
    print(f"speed-up {statistics.median(times['seed']) / statistics.median(times['project']):.2f}x")
    verdict = check_captions(captions["seed"], captions["project"], paths, seed_side, project_side, args1, device, dtype)
    print(f"same captions: {verdict}")


if __name__ == "__main__":
    main()
