"""Stage 2: make new pictures with GLIGEN whose objects sit in the original boxes.

Reads the stage-1 records (``blip2_post.json``: caption, labels and normalised boxes per
image) and the original images; writes one PNG per record (``--variants`` K: K of them; without
it, the record's ``variants`` planned by stage 1 ``--balance``, else 1) to
``OUT_DIR/<mode>/<category_id>_<image_id:04d>.png``, each exactly the size of its original so
that the original annotations fit it, and ``OUT_DIR/<mode>/manifest.jsonl`` saying what made
each file. Each PNG also carries its own manifest entry (a PNG text chunk), so the manifest can
always be rebuilt from the images present, whatever was interrupted.

- ``generation`` draws a new picture from the caption, at a working size near the model's
  area with the original's aspect ratio, resized to the original size.
- ``inpainting`` repaints only the boxes of the original: the picture is letterboxed into the
  model's square (diffusers would centre-crop it and move the boxes), and with
  ``--keep-background`` the original pixels outside the boxes are pasted back.

Runs on one GPU, or on several under ``torchrun`` / ``accelerate launch`` (records are split
across processes). Example::

    python generate_image_gligen.py --mode inpainting -i coco/train2017 \\
        -p out/blip2_post.json -o out --batch-size 8
"""

import argparse
import datetime
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from PIL import Image, PngImagePlugin

from cocoaug.atomic import save_image_atomic, write_bytes_atomic
from cocoaug.balance import pictures_by_category
from cocoaug.coco import load_coco
from cocoaug.errors import UserError
from cocoaug.images import image_size, open_rgb
from cocoaug.paths import refuse_same_folder, require_dir, resolve_under
from cocoaug.records import check_records_match_dataset, load_records
from cocoaug.runtime import add_debug_flag, check_model_source, resolve_device, resolve_dtype, run_cli

log = logging.getLogger("cocoaug")

MAX_OBJECTS = 30  # GLIGEN's limit; gligen_sampling.MAX_OBJECTS, repeated to keep torch out of --help
MISSING_LISTED = 10
MANIFEST_KEY = "cocoaug"  # PNG text chunk holding the image's manifest entry
PHRASE_FIELDS = {"label": "dog", "category_id": 18, "caption": "a dog on a lawn"}


# ---------------------------------------------------------------- what a user may edit


def prompt_for(record: dict) -> str:
    """The prompt of a record's images: its stage-1 caption."""
    return record["generated_text"]


def phrases_for(record: dict, template: str) -> list[str]:
    """One grounding phrase per box, from ``--phrase-template`` (fields: label, category_id, caption)."""
    return [
        template.format(label=label, category_id=category_id, caption=record["generated_text"])
        for label, category_id in zip(record["labels"], record["category_ids"])
    ]


# ---------------------------------------------------------------- geometry


def working_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """A size of about ``resolution``² pixels with the aspect ratio of ``width`` x ``height``, sides multiples of 8."""
    aspect = width / height
    return (
        max(8, round(resolution * math.sqrt(aspect) / 8) * 8),
        max(8, round(resolution / math.sqrt(aspect) / 8) * 8),
    )


@dataclass(frozen=True)
class Letterbox:
    """Where a picture sits inside the padded square: its top-left corner and its size, in pixels."""

    size: int
    left: int
    top: int
    width: int
    height: int


def letterbox_to_square(image: Image.Image, size: int) -> tuple[Image.Image, Letterbox]:
    """Scale ``image`` to fit a ``size`` square and pad it there, centred.

    The padding mirrors the picture's edges, so the model sees plausible surroundings and keeps
    them; diffusers' centre crop would instead cut off parts of the picture and its boxes.
    """
    scale = size / max(image.size)
    width = min(size, max(1, round(image.width * scale)))
    height = min(size, max(1, round(image.height * scale)))
    box = Letterbox(size, (size - width) // 2, (size - height) // 2, width, height)
    pixels = np.asarray(image.resize((width, height), Image.LANCZOS))
    padding = ((box.top, size - height - box.top), (box.left, size - width - box.left), (0, 0))
    return Image.fromarray(np.pad(pixels, padding, mode="symmetric")), box


def boxes_to_letterbox(boxes_xyxy_norm, box: Letterbox) -> np.ndarray:
    """Normalised boxes of the picture to normalised boxes of its letterboxed square."""
    scale = np.array([box.width, box.height, box.width, box.height]) / box.size
    offset = np.array([box.left, box.top, box.left, box.top]) / box.size
    return np.asarray(boxes_xyxy_norm, dtype=np.float64).reshape(-1, 4) * scale + offset


def boxes_from_letterbox(boxes_xyxy_norm, box: Letterbox) -> np.ndarray:
    """The inverse of ``boxes_to_letterbox``."""
    scale = np.array([box.width, box.height, box.width, box.height]) / box.size
    offset = np.array([box.left, box.top, box.left, box.top]) / box.size
    return (np.asarray(boxes_xyxy_norm, dtype=np.float64).reshape(-1, 4) - offset) / scale


def crop_letterbox(square: Image.Image, box: Letterbox, size: tuple[int, int]) -> Image.Image:
    """Cut the padding off a generated square and resize the picture to ``size`` (the original's)."""
    if square.size != (box.size, box.size):
        square = square.resize((box.size, box.size), Image.LANCZOS)
    content = square.crop((box.left, box.top, box.left + box.width, box.top + box.height))
    return content.resize(size, Image.LANCZOS)


def paste_background(original: Image.Image, generated: Image.Image, boxes_xyxy_norm, feather_px: float) -> Image.Image:
    """Keep ``generated`` inside the boxes and ``original`` everywhere else.

    The generated part fades in over ``feather_px`` pixels inside each box edge; a pixel whose
    centre lies outside every box is exactly the original's.
    """
    width, height = original.size
    alpha = np.zeros((height, width))
    centres_x, centres_y = np.arange(width) + 0.5, np.arange(height) + 0.5
    for x0, y0, x1, y1 in np.asarray(boxes_xyxy_norm, dtype=np.float64).reshape(-1, 4):
        inside_x = np.minimum(centres_x - x0 * width, x1 * width - centres_x)
        inside_y = np.minimum(centres_y - y0 * height, y1 * height - centres_y)
        depth = np.minimum(inside_y[:, None], inside_x[None, :])  # distance inside the box
        ramp = np.clip(depth / feather_px, 0, 1) if feather_px > 0 else (depth > 0).astype(float)
        alpha = np.maximum(alpha, np.where(depth > 0, ramp, 0.0))
    old, new = np.asarray(original, dtype=np.float64), np.asarray(generated, dtype=np.float64)
    mixed = old + alpha[..., None] * (new - old)
    return Image.fromarray(np.round(mixed).astype(np.uint8))


# ---------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["generation", "inpainting"], required=True, help="draw new pictures, or repaint the boxes of the originals")
    parser.add_argument("-i", "--images", required=True, help="folder of the original images (records' file_name is relative to it)")
    parser.add_argument("-p", "--prompts", required=True, help="stage-1 records, OUT_DIR/blip2_post.json")
    parser.add_argument("-o", "--output", required=True, help="images go to OUTPUT/<mode>/ (not the image folder)")
    parser.add_argument("-a", "--annotations", help="COCO annotation file; if given, every record's image_id must be in it")
    parser.add_argument("--model", help="GLIGEN checkpoint, hub id or local folder (default: masterful/gligen-1-4-<mode>-text-box)")
    parser.add_argument("--scheduler", help="diffusers scheduler class, e.g. DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler (default: the checkpoint's)")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
    parser.add_argument("--guidance-scale", type=float, default=7.5, help="classifier-free guidance; 1 or less turns it off (default 7.5)")
    parser.add_argument("--grounding-beta", type=float, default=1.0, help="scheduled sampling: the fraction of steps, from the first, that use the boxes (default 1.0: all)")
    parser.add_argument("--negative-prompt", default="", help="what the pictures should not show (default: none)")
    parser.add_argument("--phrase-template", default="{label}", help="each box's phrase; fields {label}, {category_id}, {caption} (default \"{label}\")")
    parser.add_argument("--resolution", type=int, help="working side in pixels: inpainting letterboxes into this square, generation uses about this squared area (default: the model's native size, 512 for the hub models)")
    parser.add_argument("--keep-background", action=argparse.BooleanOptionalAction, default=True, help="inpainting: paste the original pixels back outside the boxes (default on)")
    parser.add_argument("--feather", type=float, default=4.0, help="with --keep-background: pixels inside each box edge over which the generated part fades in (default 4)")
    parser.add_argument("--variants", type=int, help="images per record for every record; K > 1 names them <name>_<k>.png "
                        "(default: each record's 'variants' from stage 1 --balance, else 1)")
    parser.add_argument("--seed", type=int, default=0, help="each image's seed comes from (seed, image_id, variant) (default 0)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per sampling batch, per process (default 4)")
    parser.add_argument("--limit", type=int, help="use only the first N records of the prompts file")
    parser.add_argument("--skip-missing", action="store_true", help="skip records whose image file is missing instead of stopping")
    parser.add_argument("--overwrite", action="store_true", help="remake images that exist already")
    parser.add_argument("--device", default="auto", help="auto (default: cuda, then mps, then cpu), cuda, cuda:N, mps or cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"], help="auto: float16 on CUDA, float32 elsewhere")
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format for UNet and VAE (often faster on CUDA)")
    add_debug_flag(parser)
    return parser


def check_args(args):
    """Refuse impossible flag values before anything is read."""
    positive = {"--steps": args.steps, "--variants": args.variants, "--batch-size": args.batch_size}
    positive.update({"--limit": args.limit, "--resolution": args.resolution})
    for flag, value in positive.items():
        if value is not None and value < 1:
            raise UserError("must be a positive integer", f"{flag} {value}")
    if not 0.0 <= args.grounding_beta <= 1.0:
        raise UserError("must be between 0 and 1", f"--grounding-beta {args.grounding_beta}")
    if args.feather < 0:
        raise UserError("must not be negative", f"--feather {args.feather}")
    try:
        args.phrase_template.format(**PHRASE_FIELDS)
    except (KeyError, IndexError, ValueError) as exc:
        raise UserError(f"bad --phrase-template ({exc}); fields are {{label}}, {{category_id}}, {{caption}}", args.phrase_template) from None


# ---------------------------------------------------------------- the stage's steps


@dataclass
class WorkItem:
    """One image to make: which record, which variant, where it goes."""

    record: dict
    variant: int
    file_name: str
    source_path: Path
    seed: int
    size: tuple[int, int] = (0, 0)  # the original file's, read before sampling


def output_name(record: dict, variant: int, variants: int) -> str:
    stem = f"{record['category_id']}_{record['image_id']:04d}"
    return f"{stem}_{variant}.png" if variants > 1 else f"{stem}.png"


def plan_work(records, images_dir: Path, args, image_seed) -> tuple[list[WorkItem], dict]:
    """All images of the run, in a fixed order, and the records skipped with the reason."""
    skipped = {"more than 30 boxes": 0, "image file missing": 0}
    missing, items = [], []
    for record in sorted(records, key=lambda r: r["image_id"]):
        if len(record["bbox"]) > MAX_OBJECTS:
            log.warning("image_id %s has %d boxes; GLIGEN takes at most %d: skipped", record["image_id"], len(record["bbox"]), MAX_OBJECTS)
            skipped["more than 30 boxes"] += 1
            continue
        path = resolve_under(images_dir, record["file_name"])
        if not path.is_file():
            missing.append(record["file_name"])
            continue
        variants = args.variants if args.variants is not None else record.get("variants", 1)
        for k in range(variants):
            name = output_name(record, k, variants)
            items.append(WorkItem(record, k, name, path, image_seed(args.seed, record["image_id"], k)))
    if missing and not args.skip_missing:
        listed = ", ".join(missing[:MISSING_LISTED]) + (f" and {len(missing) - MISSING_LISTED} more" if len(missing) > MISSING_LISTED else "")
        raise UserError(f"{len(missing)} image file(s) missing in {images_dir} (use --skip-missing to go on without them)", listed)
    for name in missing:
        log.warning("image file missing: %s: skipped", name)
    skipped["image file missing"] = len(missing)
    return items, skipped


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) as set by torchrun and accelerate launch; (0, 1) in a plain run."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def pending_items(items: list[WorkItem], out_dir: Path, overwrite: bool) -> list[WorkItem]:
    """This process's images still to make; also removes temp files that a killed run left of them."""
    for item in items:
        for stale in out_dir.glob(f".{item.file_name}.*.tmp"):  # the prefix cocoaug.atomic gives its temp files
            stale.unlink(missing_ok=True)
    return [item for item in items if overwrite or not (out_dir / item.file_name).exists()]


def read_sizes(items: list[WorkItem]):
    """Read each original's size from its file header; a record that disagrees is warned about."""
    for item in items:
        item.size = image_size(item.source_path)
        record_size = (item.record["width"], item.record["height"])
        if item.size != record_size and item.variant == 0:
            log.warning("image_id %s: the record says %dx%d but %s is %dx%d; using the file's size",
                        item.record["image_id"], *record_size, item.source_path, *item.size)


def sample_size(item: WorkItem, args, resolution: int) -> tuple[int, int]:
    if args.mode == "inpainting":
        side = max(8, round(resolution / 8) * 8)
        return side, side
    return working_size(*item.size, resolution)


def manifest_entry(item: WorkItem, args, sampler, prompt, phrases, size) -> dict:
    record = item.record
    return {
        "file_name": item.file_name, "source_image_id": record["image_id"], "source_file_name": record["file_name"],
        "prompt": prompt, "phrases": phrases, "boxes": record["bbox"], "seed": item.seed, "variant": item.variant,
        "mode": args.mode, "model": sampler.c.model, "scheduler": sampler.c.scheduler_name, "steps": args.steps,
        "guidance_scale": args.guidance_scale, "grounding_beta": args.grounding_beta,
        "working_size": list(size), "width": item.size[0], "height": item.size[1],
    }


def make_batch(batch: list[WorkItem], sampler, args, size, out_dir: Path):
    """Sample one batch (one working size) and save each image at its original's size, with its entry."""
    from gligen_sampling import SampleRequest

    requests, originals, frames = [], [], []
    for item in batch:
        original = open_rgb(item.source_path)
        boxes, image, frame = item.record["bbox"], None, None
        if args.mode == "inpainting":
            image, frame = letterbox_to_square(original, size[0])
            boxes = boxes_to_letterbox(boxes, frame).tolist()
        phrases = phrases_for(item.record, args.phrase_template)
        requests.append(SampleRequest(prompt_for(item.record), phrases, boxes, item.seed, image))
        originals.append(original)
        frames.append(frame)
    for item, request, original, frame, picture in zip(batch, requests, originals, frames, sampler(requests, *size)):
        if frame is None:
            picture = picture.resize(original.size, Image.LANCZOS)
        else:
            picture = crop_letterbox(picture, frame, original.size)
            if args.keep_background:
                picture = paste_background(original, picture, item.record["bbox"], args.feather)
        entry = manifest_entry(item, args, sampler, request.prompt, request.phrases, size)
        info = PngImagePlugin.PngInfo()
        info.add_text(MANIFEST_KEY, orjson.dumps(entry).decode())
        save_image_atomic(out_dir / item.file_name, picture, pnginfo=info)


def generate(items: list[WorkItem], sampler, args, resolution: int, out_dir: Path, rank: int):
    """Batch images of equal working size together and make them, with a progress bar."""
    from tqdm import tqdm

    by_size: dict[tuple[int, int], list[WorkItem]] = {}
    for item in items:
        by_size.setdefault(sample_size(item, args, resolution), []).append(item)
    with tqdm(total=len(items), desc=f"{args.mode} (rank {rank})" if rank else args.mode, unit="image") as bar:
        for size, group in sorted(by_size.items()):
            for start in range(0, len(group), args.batch_size):
                batch = group[start:start + args.batch_size]
                make_batch(batch, sampler, args, size, out_dir)
                bar.update(len(batch))


def rebuild_manifest(out_dir: Path) -> int:
    """Write ``manifest.jsonl`` from the entries stored in the PNGs present, sorted by file name."""
    lines = []
    for path in sorted(out_dir.glob("*.png")):
        with Image.open(path) as image:
            entry = image.info.get(MANIFEST_KEY)
        if entry is None:
            log.warning("%s has no manifest entry (not made by this script?): left out of manifest.jsonl", path)
            continue
        lines.append(entry.encode() + b"\n")
    write_bytes_atomic(out_dir / "manifest.jsonl", b"".join(lines))
    return len(lines)


def print_pictures_per_category(items: list[WorkItem], out_dir: Path):
    """Pictures of the run per category, present / planned (a multi-category picture counts for each of its categories)."""
    records = {item.record["image_id"]: item.record for item in items}
    names = {c: label for record in records.values() for c, label in zip(record["category_ids"], record["labels"])}
    planned = pictures_by_category(records, [item.record["image_id"] for item in items])
    present = pictures_by_category(records, [item.record["image_id"] for item in items if (out_dir / item.file_name).exists()])
    print("pictures per category (present / planned): "
          + ", ".join(f"{names[c]} {present[c]}/{planned[c]}" for c in sorted(planned)))


def wait_for_all_processes(world_size: int):
    """Barrier over the processes of a torchrun / accelerate launch, so rank 0 writes the manifest last."""
    if world_size == 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
    dist.barrier()
    dist.destroy_process_group()


def main(args):
    check_args(args)
    rank, world_size = distributed_rank()
    images_dir = require_dir(args.images, "image folder")
    records = load_records(args.prompts)
    if args.annotations:
        check_records_match_dataset(records, load_coco(args.annotations, annotation_dicts=False), args.prompts)
    out_dir = Path(args.output) / args.mode
    refuse_same_folder(args.output, images_dir)
    refuse_same_folder(out_dir, images_dir)
    model = check_model_source(args.model or f"masterful/gligen-1-4-{args.mode}-text-box")

    from gligen_sampling import GligenSampler, check_gligen_model, image_seed, load_components, scheduler_class_for

    check_gligen_model(model, args.mode)
    scheduler_class_for(args.scheduler, model)
    items, skipped = plan_work(records[: args.limit], images_dir, args, image_seed)
    mine = items[rank::world_size]
    todo = pending_items(mine, out_dir, args.overwrite)
    read_sizes(todo)

    if todo:
        device = resolve_device(args.device)
        if device.type == "cuda" and device.index is None:
            device = resolve_device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
        components = load_components(model, device, resolve_dtype(args.dtype, device), args.scheduler)
        if args.channels_last:
            import torch

            components.unet.to(memory_format=torch.channels_last)
            components.vae.to(memory_format=torch.channels_last)
        sampler = GligenSampler(components, args.steps, args.guidance_scale, args.grounding_beta, args.negative_prompt)
        generate(todo, sampler, args, args.resolution or components.native_size, out_dir, rank)

    wait_for_all_processes(world_size)
    listed = None
    if rank == 0:
        for stale in out_dir.glob(".manifest.jsonl.*.tmp"):
            stale.unlink()
        listed = rebuild_manifest(out_dir)
        print_pictures_per_category(items, out_dir)
    prefix = f"rank {rank}: " if world_size > 1 else ""
    print(f"{prefix}generated {len(todo)}, skipped as existing {len(mine) - len(todo)}"
          + "".join(f", skipped ({why}) {n}" for why, n in skipped.items() if n)
          + (f"; manifest.jsonl lists {listed} images" if listed is not None else ""))


if __name__ == "__main__":
    run_cli(main, build_parser())
