"""Stage 2: make new pictures with GLIGEN whose objects sit in the original boxes.

Reads the stage-1 records (``blip2_post.json``: caption, labels and normalised boxes per
image) and the original images; writes one PNG per record (``--variants`` K: K of them; without
it, the record's ``variants`` planned by stage 1 ``--balance``, else 1) to
``OUT_DIR/<mode>/<category_id>_<image_id:04d>.png``, each exactly the size of its original so
that the original annotations fit it, and ``OUT_DIR/<mode>/manifest.jsonl`` saying what made
each file. Each PNG also carries its own manifest entry (a PNG text chunk), so the manifest can
always be rebuilt from the images present, whatever was interrupted. A rerun keeps the images
that exist (it resumes) if they were made with this run's settings; if not, it stops and lists
the differences: ``--overwrite`` remakes them, ``--keep-existing`` keeps them as they are.

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
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cocoaug import cli
from cocoaug.atomic import remove_stale_temp_files, remove_temp_files
from cocoaug.balance import pictures_by_category
from cocoaug.coco import load_coco
from cocoaug.errors import UserError, listed
from cocoaug.generated import (
    MANIFEST, MAX_OBJECTS, image_seed, manifest_entry, output_name, read_manifest, read_png_entry, rebuild_manifest,
    save_generated_png, settings_differences,
)
from cocoaug.images import image_size, open_rgb
from cocoaug.paths import check_inside, refuse_output_inside, require_dir, resolve_under
from cocoaug.progress import progress
from cocoaug.records import MAX_VARIANTS, check_records_match_dataset, load_records
from cocoaug.runtime import (
    check_model_source, distributed_rank, model_load_errors, resolve_device, resolve_dtype, run_cli, texts_over_token_limit,
    wait_for_all_processes,
)

log = logging.getLogger("cocoaug")

PHRASE_FIELDS = {"label": "dog", "category_id": 18, "caption": "a dog on a lawn"}
INPAINTING_CHANNELS = 9  # noisy latents (4) + masked image latents (4) + mask (1)
MIX_BAND_PIXELS = 1 << 22  # paste_background mixes about this many pixels at a time


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


def crop_letterbox(square: Image.Image, box: Letterbox, size: tuple[int, int]) -> Image.Image:
    """Cut the padding off a generated square and resize the picture to ``size`` (the original's)."""
    if square.size != (box.size, box.size):
        square = square.resize((box.size, box.size), Image.LANCZOS)
    content = square.crop((box.left, box.top, box.left + box.width, box.top + box.height))
    return content.resize(size, Image.LANCZOS)


def paste_background(original: Image.Image, generated: Image.Image, boxes_xyxy_norm, feather_px: float) -> Image.Image:
    """Keep ``generated`` inside the boxes and ``original`` everywhere else.

    The generated part fades in over ``feather_px`` pixels inside each box edge; a pixel whose
    centre lies outside every box is exactly the original's. Mixed a band of rows at a time, and
    only bands that a box touches: a 90-megapixel picture needs no 10 GB of float arrays.
    """
    width, height = original.size
    boxes = np.asarray(boxes_xyxy_norm, dtype=np.float64).reshape(-1, 4) * np.array([width, height, width, height])
    result, new = np.array(original), np.asarray(generated)
    centres_x = np.arange(width) + 0.5
    band = max(1, MIX_BAND_PIXELS // width)
    for top in range(0, height, band):
        rows = slice(top, min(height, top + band))
        centres_y = np.arange(rows.start, rows.stop) + 0.5
        alpha = np.zeros((len(centres_y), width))
        for x0, y0, x1, y1 in boxes:
            if y1 <= rows.start or y0 >= rows.stop:
                continue
            inside_x = np.minimum(centres_x - x0, x1 - centres_x)
            inside_y = np.minimum(centres_y - y0, y1 - centres_y)
            depth = np.minimum(inside_y[:, None], inside_x[None, :])  # distance inside the box
            ramp = np.clip(depth / feather_px, 0, 1) if feather_px > 0 else (depth > 0).astype(float)
            alpha = np.maximum(alpha, np.where(depth > 0, ramp, 0.0))
        if not alpha.any():
            continue
        old = result[rows].astype(np.float64)
        mixed = old + alpha[..., None] * (new[rows].astype(np.float64) - old)
        result[rows] = np.round(mixed).astype(np.uint8)
    return Image.fromarray(result)


# ---------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser(__doc__)
    parser.add_argument("--mode", choices=["generation", "inpainting"], required=True, help="draw new pictures, or repaint the boxes of the originals")
    cli.add_images(parser)
    cli.add_records(parser)
    cli.add_output(parser, help="images go to OUT_DIR/<mode>/ (not inside the image folder)")
    cli.add_annotations(parser, required=False, help="COCO annotation file; if given, every record's image_id must be in it")
    cli.add_model(parser, help="GLIGEN checkpoint, hub id or local folder (default: masterful/gligen-1-4-<mode>-text-box)")
    parser.add_argument("--scheduler", help="diffusers scheduler class, e.g. DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler (default: the checkpoint's)")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
    parser.add_argument("--guidance-scale", type=cli.finite_float, default=7.5, help="classifier-free guidance; 1 or less turns it off (default 7.5)")
    parser.add_argument("--grounding-beta", type=cli.finite_float, default=1.0, help="scheduled sampling: the fraction of steps, from the first, that use the boxes (default 1.0: all)")
    parser.add_argument("--negative-prompt", default="", help="what the pictures should not show (default: none)")
    parser.add_argument("--phrase-template", default="{label}", help="each box's phrase; fields {label}, {category_id}, {caption} (default \"{label}\")")
    parser.add_argument("--resolution", type=int, help="working side in pixels: inpainting letterboxes into this square, generation uses about this squared area (default: the model's native size, 512 for the hub models)")
    parser.add_argument("--keep-background", action=argparse.BooleanOptionalAction, default=True, help="inpainting: paste the original pixels back outside the boxes (default on)")
    parser.add_argument("--feather", type=cli.finite_float, default=4.0, help="with --keep-background: pixels inside each box edge over which the generated part fades in (default 4)")
    parser.add_argument("--variants", type=int, help="images per record for every record; K > 1 names them <name>_<k>.png "
                        "(default: each record's 'variants' from stage 1 --balance, else 1)")
    parser.add_argument("--seed", type=int, default=0, help="each image's seed comes from (seed, image_id, variant) (default 0)")
    cli.add_batch_size(parser, default=4, help="images per sampling batch, per process")
    cli.add_limit(parser, help="use only the first N records of the records file")
    cli.add_skip_missing(parser, help="skip records whose image file is missing instead of stopping")
    parser.add_argument("--overwrite", action="store_true", help="remake images that exist already")
    parser.add_argument("--keep-existing", action="store_true", help="keep existing images made with other settings as they are and make only the missing ones (without it, a run stops on them)")
    cli.add_device(parser)
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format for UNet and VAE (often faster on CUDA)")
    cli.add_debug(parser)
    return parser


def check_args(args):
    """Refuse impossible flag values before anything is read."""
    positive = {"--steps": args.steps, "--variants": args.variants, "--batch-size": args.batch_size}
    positive.update({"--limit": args.limit, "--resolution": args.resolution})
    for flag, value in positive.items():
        if value is not None and value < 1:
            raise UserError("must be a positive integer", f"{flag} {value}")
    if args.variants is not None and args.variants > MAX_VARIANTS:
        raise UserError(f"must be at most {MAX_VARIANTS}", f"--variants {args.variants}")
    if not 0.0 <= args.grounding_beta <= 1.0:
        raise UserError("must be between 0 and 1", f"--grounding-beta {args.grounding_beta}")
    if args.feather < 0:
        raise UserError("must not be negative", f"--feather {args.feather}")
    if args.overwrite and args.keep_existing:
        raise UserError("--overwrite remakes existing images and --keep-existing keeps them: give one", "--overwrite --keep-existing")
    try:
        args.phrase_template.format(**PHRASE_FIELDS)
    except (KeyError, IndexError, ValueError) as exc:
        raise UserError(f"bad --phrase-template ({exc}); fields are {{label}}, {{category_id}}, {{caption}}", args.phrase_template) from None


# ---------------------------------------------------------------- the checkpoint's configs
# Read as plain JSON, without diffusers: a rerun with nothing left to make never imports torch.


def model_config(model: str, subfolder: str, file_name: str = "config.json") -> dict:
    """One config file of a diffusers checkpoint (a local folder, or a hub id through the hub's cache)."""
    with model_load_errors(model):
        if Path(model).is_dir():
            path = Path(model) / subfolder / file_name
        else:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(model, file_name, subfolder=subfolder)
        config = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError(f"{subfolder}/{file_name} is not a JSON object")
        return config


def check_gligen_model(model: str, mode: str):
    """Refuse a model that is not a GLIGEN text-box model for ``mode``, reading only its UNet config."""
    config = model_config(model, "unet")
    if config.get("attention_type") != "gated":
        raise UserError("not a GLIGEN text-box model (its UNet has no gated self-attention)", model)
    inpainting = config.get("in_channels") == INPAINTING_CHANNELS
    if inpainting != (mode == "inpainting"):
        kind = "an inpainting" if inpainting else "a generation"
        raise UserError(f"{kind} GLIGEN model cannot run --mode {mode}", model)


def native_size_of(model: str) -> int:
    """The square size a checkpoint was trained at, from its UNet and VAE configs (no weights loaded)."""
    unet_config, vae_config = model_config(model, "unet"), model_config(model, "vae")
    with model_load_errors(model):
        return unet_config["sample_size"] * 2 ** (len(vae_config["block_out_channels"]) - 1)


def checkpoint_scheduler(model: str) -> str:
    """The name of the scheduler class a checkpoint comes with."""
    config = model_config(model, "scheduler", "scheduler_config.json")
    with model_load_errors(model):
        return config["_class_name"]


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


def run_settings(args, model: str, scheduler: str, resolution: int) -> dict:
    """This run's settings that change its pictures, as each manifest entry records them."""
    settings = {
        "mode": args.mode, "model": model, "scheduler": scheduler, "steps": args.steps,
        "guidance_scale": args.guidance_scale, "grounding_beta": args.grounding_beta,
        "negative_prompt": args.negative_prompt, "phrase_template": args.phrase_template,
        "resolution": resolution, "run_seed": args.seed,
    }
    if args.mode == "inpainting":  # generation draws the whole picture: these do not apply
        settings["keep_background"] = args.keep_background
        if args.keep_background:
            settings["feather"] = args.feather
    return settings


def plan_work(records, images_dir: Path, out_dir: Path, args) -> tuple[list[WorkItem], dict]:
    """All images of the run, in a fixed order, and the records skipped with the reason; every name
    must land inside ``out_dir``."""
    too_many = f"more than {MAX_OBJECTS} boxes"
    skipped = {too_many: 0, "image file missing": 0}
    missing, items = [], []
    for record in sorted(records, key=lambda r: r["image_id"]):
        if len(record["bbox"]) > MAX_OBJECTS:
            log.warning("image_id %s has %d boxes; GLIGEN takes at most %d: skipped", record["image_id"], len(record["bbox"]), MAX_OBJECTS)
            skipped[too_many] += 1
            continue
        path = resolve_under(images_dir, record["file_name"])
        if not path.is_file():
            missing.append(record["file_name"])
            continue
        variants = args.variants if args.variants is not None else record.get("variants", 1)
        for k in range(variants):
            name = output_name(record["category_id"], record["image_id"], k, variants)
            check_inside(out_dir, out_dir / name)
            items.append(WorkItem(record, k, name, path, image_seed(args.seed, record["image_id"], k)))
    if missing and not args.skip_missing:
        raise UserError(f"{len(missing)} image file(s) missing in {images_dir} (use --skip-missing to go on without them)", listed(missing))
    for name in missing:
        log.warning("image file missing: %s: skipped", name)
    skipped["image file missing"] = len(missing)
    return items, skipped


def check_existing_settings(items: list[WorkItem], out_dir: Path, settings: dict, args) -> int:
    """Refuse to resume over existing images made with other settings than ``settings``, unless
    --overwrite remakes them or --keep-existing keeps them; returns how many were kept so.

    Every process checks all the run's images, so that all stop or none does.
    """
    if args.overwrite:
        return 0
    manifest = read_manifest(out_dir) if (out_dir / MANIFEST).is_file() else {}
    entries = []
    for item in items:
        path = out_dir / item.file_name
        if path.is_file():
            entry = read_png_entry(path) or manifest.get(item.file_name)
            if entry is not None:
                entries.append(entry)
    differences = settings_differences(entries, settings)
    if not differences:
        return 0
    count = sum(1 for entry in entries if settings_differences([entry], settings))
    if args.keep_existing:
        log.warning("keeping %d existing image(s) made with other settings (--keep-existing): %s", count, "; ".join(differences))
        return count
    raise UserError(f"{count} existing image(s) were made with other settings: {'; '.join(differences)}; use --overwrite "
                    "to remake them, or --keep-existing to keep them as they are and make only the missing ones", out_dir)


def pending_items(items: list[WorkItem], out_dir: Path, overwrite: bool) -> list[WorkItem]:
    """This process's images still to make; also removes temp files that a killed run left of them
    (the folder is listed once: other processes of a distributed run keep theirs)."""
    remove_stale_temp_files(out_dir, {item.file_name for item in items})
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


def make_batch(batch: list[WorkItem], sampler, args, settings: dict, size, out_dir: Path):
    """Sample one batch (one working size) and save each image at its original's size, with its entry."""
    from cocoaug.gligen_sampler import SampleRequest

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
        entry = manifest_entry(item.file_name, item.record, item.variant, item.seed, request.prompt, request.phrases,
                               size, item.size, settings)
        save_generated_png(out_dir / item.file_name, picture, entry)


def generate(items: list[WorkItem], sampler, args, settings: dict, out_dir: Path, rank: int):
    """Batch images of equal working size together and make them, with a progress bar."""
    by_size: dict[tuple[int, int], list[WorkItem]] = {}
    for item in items:
        by_size.setdefault(sample_size(item, args, settings["resolution"]), []).append(item)
    with progress(total=len(items), desc=f"{args.mode} (rank {rank})" if rank else args.mode, unit="image") as bar:
        for size, group in sorted(by_size.items()):
            for start in range(0, len(group), args.batch_size):
                batch = group[start:start + args.batch_size]
                make_batch(batch, sampler, args, settings, size, out_dir)
                bar.update(len(batch))


def warn_truncated_texts(items: list[WorkItem], model: str, phrase_template: str):
    """Say, before any model loads, which prompts and phrases are longer than CLIP's token limit: they are truncated."""
    records = {item.record["image_id"]: item.record for item in items}.values()
    for kind, texts in (("prompt", [prompt_for(r) for r in records]),
                        ("phrase", [p for r in records for p in phrases_for(r, phrase_template)])):
        overlong, limit = texts_over_token_limit(model, texts, subfolder="tokenizer")
        if overlong:
            log.warning("%d %s(s) are longer than the text encoder's %d tokens and are truncated to them, e.g. %r",
                        len(overlong), kind, limit, overlong[0][:120])


def print_pictures_per_category(items: list[WorkItem], out_dir: Path):
    """Pictures of the run per category, present / planned (a multi-category picture counts for each of its categories)."""
    records = {item.record["image_id"]: item.record for item in items}
    names = {c: label for record in records.values() for c, label in zip(record["category_ids"], record["labels"])}
    planned = pictures_by_category(records, [item.record["image_id"] for item in items])
    present = pictures_by_category(records, [item.record["image_id"] for item in items if (out_dir / item.file_name).exists()])
    print("pictures per category (present / planned): "
          + ", ".join(f"{names[c]} {present[c]}/{planned[c]}" for c in sorted(planned)))


def main(args):
    check_args(args)
    rank, world_size = distributed_rank()
    images_dir = require_dir(args.images, "image folder")
    records = load_records(args.records)
    if args.annotations:
        check_records_match_dataset(records, load_coco(args.annotations, annotation_dicts=False), args.records)
    out_dir = Path(args.output) / args.mode
    refuse_output_inside([args.output, out_dir], {"image folder": images_dir})
    model = check_model_source(args.model or f"masterful/gligen-1-4-{args.mode}-text-box")
    check_gligen_model(model, args.mode)
    scheduler = args.scheduler or checkpoint_scheduler(model)
    settings = run_settings(args, model, scheduler, args.resolution or native_size_of(model))
    items, skipped = plan_work(records[: args.limit], images_dir, out_dir, args)
    kept_other_settings = check_existing_settings(items, out_dir, settings, args)
    mine = items[rank::world_size]
    todo = pending_items(mine, out_dir, args.overwrite)
    read_sizes(todo)

    if todo:
        warn_truncated_texts(todo, model, args.phrase_template)
        from cocoaug.gligen_sampler import GligenSampler, load_components

        device = resolve_device(args.device)
        if device.type == "cuda" and device.index is None:
            device = resolve_device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
        components = load_components(model, device, resolve_dtype(args.dtype, device), args.scheduler)
        if args.channels_last:
            import torch

            components.unet.to(memory_format=torch.channels_last)
            components.vae.to(memory_format=torch.channels_last)
        sampler = GligenSampler(components, args.steps, args.guidance_scale, args.grounding_beta, args.negative_prompt)
        generate(todo, sampler, args, settings, out_dir, rank)
    else:
        # torch and diffusers load above, and only there: a rerun with nothing left to make exits in a second.
        if kept_other_settings:
            from cocoaug.gligen_sampler import scheduler_class_for

            scheduler_class_for(args.scheduler, model)  # a bad --scheduler is an error even with nothing to make
        log.info("every picture of this run exists: nothing to make, no model loaded")

    wait_for_all_processes(world_size)
    manifest_count = None
    if rank == 0:
        remove_temp_files(out_dir / MANIFEST)
        manifest_count = rebuild_manifest(out_dir)
        print_pictures_per_category(items, out_dir)
    prefix = f"rank {rank}: " if world_size > 1 else ""
    print(f"{prefix}generated {len(todo)}, skipped as existing {len(mine) - len(todo)}"
          + "".join(f", skipped ({why}) {n}" for why, n in skipped.items() if n)
          + (f"; {MANIFEST} lists {manifest_count} images" if manifest_count is not None else ""))


if __name__ == "__main__":
    run_cli(main, build_parser())
