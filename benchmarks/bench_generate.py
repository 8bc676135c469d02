"""Images per second and peak memory of stage 2's batched GLIGEN sampling against the seed's pipeline.

Every variant runs in its own subprocess (so each one's peak memory is its own, and a compiled
UNet does not leak into the next row), on the same weights and the same --images requests
(prompt, grounding phrases and boxes, seed), generation mode, square --size pictures, guidance 7.5,
grounding on at every step (stage 2's --grounding-beta 1.0):
  seed                   diffusers' StableDiffusionGLIGENPipeline, one image per call (its default SDPA attention)
  project-b1             cocoaug.gligen_sampler.GligenSampler, the loop of stage 2, one image per batch
  project                the same, --batch-size images per batch (default stage 2's 4)
  project-no-sdpa        the same with diffusers' classic attention (AttnProcessor): what SDPA, the default, gives
  project-channels-last  the same with UNet and VAE in channels-last memory format (stage 2's --channels-last)
  project-compile        the same with ``unet.compile()`` (torch.compile; not a stage 2 flag: see BENCHMARKS.md)
  project-dpm            the same with DPMSolverMultistepScheduler (DPM-Solver++) at --fast-steps steps
Time: median of --repeat runs over all images, after an untimed warm-up (a 3-step call per batch
shape; for project-compile that is where compilation happens, reported as "warm-up s").
Memory: on CUDA the peak of torch.cuda.max_memory_allocated (weights included); on the CPU the
process's peak RSS (imports and weights included). The run fails unless every variant with the
seed's scheduler and steps makes the seed's images, within --tolerance (mean absolute difference
in 8-bit levels). The random weights open GLIGEN's gates (0.5, as tests/unit/test_gligen_equivalence.py)
so the boxes count.

Default: the tiny GLIGEN of scripts/make_tiny_models.py on the CPU (64x64 pictures): overhead only.
--full-size: Stable Diffusion 1.4's UNet with gated attention, VAE and CLIP ViT-L/14 text encoder
built with random weights from benchmarks/configs/gligen-1-4-generation-text-box/ (float16 on
CUDA), 512x512, 50 steps; the tiny model's CLIP tokenizer gives the token ids.

    python benchmarks/bench_generate.py --workdir /tmp/bench_generate              # tiny, CPU
    python benchmarks/bench_generate.py --full-size --workdir /tmp/bench_generate  # CUDA GPU
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a file, the stage modules and cocoaug import from the root

from cocoaug.cli import finite_float  # noqa: E402

FULL_SIZE_CONFIGS = ROOT / "benchmarks/configs/gligen-1-4-generation-text-box"
VARIANTS = ["seed", "project-b1", "project", "project-no-sdpa", "project-channels-last", "project-compile", "project-dpm"]
FAST_SCHEDULER = "DPMSolverMultistepScheduler"  # algorithm_type "dpmsolver++" by default
PROMPTS = ["a dog plays with a red ball on the grass", "two cats sleeping on a sofa", "a kite flying over the beach",
           "a red car parked in front of a house", "a bird sitting on a fence", "a pizza and a bottle on a table"]
PHRASES = ["a dog", "a cat", "a kite", "a car", "a bird", "a pizza", "a ball", "a bottle"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full-size", action="store_true", help="random-weight SD 1.4 GLIGEN at 512x512, 50 steps (meant for a CUDA GPU)")
    p.add_argument("--configs", type=Path, default=FULL_SIZE_CONFIGS, help="with --full-size: the model folder of configs (default %(default)s)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated rows to run; the seed always runs (default all)")
    p.add_argument("--images", type=int, default=8, help="images per run (default 8)")
    p.add_argument("--batch-size", type=int, default=4, help="the project's batch size (default 4, stage 2's)")
    p.add_argument("--steps", type=int, default=50, help="denoising steps of the seed and the project (default 50, stage 2's)")
    p.add_argument("--fast-steps", type=int, default=20, help=f"steps of project-dpm ({FAST_SCHEDULER}) (default 20)")
    p.add_argument("--size", type=int, help="picture side in pixels (default the model's: 64 tiny, 512 full size)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per variant; the table shows the median (default 3)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, cpu (default auto)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"], help="auto: float16 on CUDA, float32 elsewhere")
    p.add_argument("--tolerance", type=finite_float, default=1.0, help="largest mean |difference| to the seed's images, 8-bit levels (default 1)")
    p.add_argument("--threads", type=int, help="torch CPU threads of both sides (default torch's: one per core)")
    p.add_argument("--workdir", type=Path, help="tiny models and results go here (default: a temp folder)")
    p.add_argument("--run-variant", help=argparse.SUPPRESS)  # internal: the subprocess of one row
    return p.parse_args(argv)


# ---------------------------------------------------------------- one variant (the subprocess)


def random_components(configs: Path, tokenizer_folder: Path, device, dtype, scheduler_name: str | None):
    """GligenComponents built from the config folder with random weights, initialised on ``device``."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from cocoaug.gligen_sampler import GligenComponents, scheduler_class_for

    scheduler_class, scheduler_config = scheduler_class_for(scheduler_name, str(configs))
    modules = {}
    for name, build in [("unet", lambda: UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / "unet"))),
                        ("vae", lambda: AutoencoderKL.from_config(AutoencoderKL.load_config(configs / "vae"))),
                        ("text_encoder", lambda: CLIPTextModel(CLIPTextConfig.from_json_file(configs / "text_encoder/config.json")))]:
        torch.manual_seed(0)
        with torch.device(device):
            modules[name] = build().to(dtype).eval().requires_grad_(False)
    return GligenComponents(
        model=str(configs), tokenizer=CLIPTokenizer.from_pretrained(tokenizer_folder), scheduler_class=scheduler_class,
        scheduler_config=scheduler_config, vae_scale_factor=2 ** (len(modules["vae"].config.block_out_channels) - 1), **modules,
    )


def make_requests(count: int):
    """``count`` different layouts: a prompt, 1 to 3 boxes with their phrases, and the seed stage 2 would give."""
    from cocoaug.generated import image_seed
    from cocoaug.gligen_sampler import SampleRequest

    requests = []
    for i in range(count):
        n = 1 + i % 3
        boxes = [[0.1 + 0.25 * k, 0.15 + 0.05 * (i % 4), 0.3 + 0.25 * k + 0.05 * (i % 2), 0.6 + 0.1 * (k % 2)] for k in range(n)]
        phrases = [PHRASES[(i + k) % len(PHRASES)] for k in range(n)]
        requests.append(SampleRequest(PROMPTS[i % len(PROMPTS)], phrases, boxes, image_seed(0, i, 0)))
    return requests


def run_variant(args, name: str) -> dict:
    """Load the models, warm up, time --repeat runs of variant ``name``; its images go to a .npy file."""
    import torch
    from diffusers import StableDiffusionGLIGENPipeline
    from diffusers.models.attention_processor import AttnProcessor

    from cocoaug.runtime import resolve_device, resolve_dtype
    from cocoaug.gligen_sampler import GligenSampler, load_components

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    fast = name == "project-dpm"
    scheduler = FAST_SCHEDULER if fast else None
    if args.full_size:
        c = random_components(args.configs, args.workdir / "models/gligen-generation/tokenizer", device, dtype, scheduler)
    else:
        c = load_components(str(args.workdir / "models/gligen-generation"), device, dtype, scheduler)
    for parameter_name, parameter in c.unet.named_parameters():
        if parameter_name.endswith(("alpha_attn", "alpha_dense")):
            parameter.data.fill_(0.5)  # random weights start with closed gates (tanh(0) = 0)
    if name == "project-no-sdpa":
        c.unet.set_attn_processor(AttnProcessor())
        c.vae.set_attn_processor(AttnProcessor())
    if name == "project-channels-last":
        c.unet.to(memory_format=torch.channels_last)  # as stage 2's main() does for --channels-last
        c.vae.to(memory_format=torch.channels_last)
    if name == "project-compile":
        c.unet.compile()

    size = args.size or c.native_size
    requests = make_requests(args.images)
    steps = args.fast_steps if fast else args.steps
    if name == "seed":
        pipe = StableDiffusionGLIGENPipeline(vae=c.vae, text_encoder=c.text_encoder, tokenizer=c.tokenizer, unet=c.unet,
                                             scheduler=c.scheduler_class.from_config(c.scheduler_config), safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)

        def sample(reqs, n_steps):
            return [pipe(prompt=r.prompt, gligen_phrases=r.phrases, gligen_boxes=r.boxes, gligen_scheduled_sampling_beta=1.0,
                         num_inference_steps=n_steps, guidance_scale=7.5, height=size, width=size,
                         generator=torch.Generator("cpu").manual_seed(r.seed)).images[0] for r in reqs]
        batch_size = 1
    else:
        def sample(reqs, n_steps):
            return GligenSampler(c, n_steps, guidance_scale=7.5, grounding_beta=1.0)(reqs, size, size)
        batch_size = 1 if name == "project-b1" else args.batch_size

    def run(reqs, n_steps):
        images = []
        for start in range(0, len(reqs), batch_size):
            images += sample(reqs[start:start + batch_size], n_steps)
        return images

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    run(requests[:batch_size], 3)  # every batch shape once: first-call costs and compilation stay out of the timing
    if args.images % batch_size:
        run(requests[: args.images % batch_size], 3)
    sync()
    warmup = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.repeat):
        sync()
        start = time.perf_counter()
        images = run(requests, steps)
        sync()
        times.append(time.perf_counter() - start)
    np.save(args.workdir / f"results/{name}.npy", np.stack([np.asarray(image) for image in images]))
    return {
        "variant": name, "times": times, "warmup_s": warmup, "batch_size": batch_size, "steps": steps, "size": size,
        "scheduler": c.scheduler_class.__name__, "device": str(device), "dtype": str(dtype).removeprefix("torch."),
        "peak_cuda_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    }


# ---------------------------------------------------------------- the parent: every variant, then the table


def run_measured(command: list[str]) -> float:
    """Run ``command``; fail with its stderr if it fails; return its own peak RSS in MiB."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read().decode(errors="replace")  # read before waiting: a full pipe would block the child
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"error: {' '.join(command)} failed:\n{stderr}")
    return usage.ru_maxrss / 1024  # KiB on Linux


def compare(images: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Mean and largest absolute difference between two image stacks, in 8-bit levels."""
    difference = np.abs(images.astype(np.int16) - reference.astype(np.int16))
    return float(difference.mean()), float(difference.max())


def main(argv=None):
    args = parse_args(argv)
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_generate_"))
    if args.run_variant:
        result = run_variant(args, args.run_variant)
        (args.workdir / f"results/{args.run_variant}.json").write_text(json.dumps(result))
        return
    names = ["seed"] + [v for v in args.variants.split(",") if v and v != "seed"]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    (args.workdir / "results").mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(ROOT / "scripts/make_tiny_models.py"), str(args.workdir / "models")],
                   check=True, capture_output=True)
    passed = list(argv if argv is not None else sys.argv[1:])
    results = {}
    for name in names:
        (args.workdir / f"results/{name}.json").unlink(missing_ok=True)
        command = [sys.executable, str(Path(__file__).resolve()), *passed, "--workdir", str(args.workdir), "--run-variant", name]
        rss = run_measured(command)
        results[name] = {**json.loads((args.workdir / f"results/{name}.json").read_text()), "peak_rss_mib": rss}
    print_table(args, results)


def print_table(args, results: dict):
    """The measured rows, each compared with the seed; fail if a comparable row's images differ."""
    seed = results["seed"]
    seed_images = np.load(args.workdir / "results/seed.npy")
    seed_rate = args.images / statistics.median(seed["times"])
    cuda = seed["peak_cuda_mib"] is not None
    memory = "peak CUDA MiB" if cuda else "peak RSS MiB"
    print(f"bench_generate: {f'GLIGEN from {args.configs.name}, random weights' if args.full_size else 'tiny GLIGEN'}; "
          f"{seed['device']} {seed['dtype']}; {args.images} images of {seed['size']}x{seed['size']}, generation, guidance 7.5; "
          f"median of {args.repeat} run(s) per row; std of the seed's pixels {seed_images.std():.1f}")
    print(f"{'variant':<23}{'scheduler':>30}{'steps':>6}{'batch':>6}{'s/run':>8}{'images/s':>9}{'x seed':>7}"
          f"{memory:>14}{'warm-up s':>10}{'vs seed: mean/max |diff|':>26}")
    failures = []
    for name, r in results.items():
        seconds = statistics.median(r["times"])
        peak = r["peak_cuda_mib"] if cuda else r["peak_rss_mib"]
        same_work = (r["scheduler"], r["steps"]) == (seed["scheduler"], seed["steps"])
        verdict = "n/a (other sampler)"
        if same_work and name != "seed":
            mean, largest = compare(np.load(args.workdir / f"results/{name}.npy"), seed_images)
            verdict = f"{mean:.3f} / {largest:.0f}"
            if mean > args.tolerance:
                failures.append(f"{name}: mean |difference| {mean:.3f} > --tolerance {args.tolerance}")
        elif name == "seed":
            verdict = "-"
        print(f"{name:<23}{r['scheduler']:>30}{r['steps']:>6}{r['batch_size']:>6}{seconds:>8.2f}{args.images / seconds:>9.2f}"
              f"{args.images / seconds / seed_rate:>7.2f}{peak:>14.0f}{r['warmup_s']:>10.1f}{verdict:>26}")
    if failures:
        raise SystemExit("error: images differ from the seed's: " + "; ".join(failures))
    print("same images as the seed (rows with its scheduler and steps): yes")


if __name__ == "__main__":
    main()
