"""Stage 3: draw the boxes and labels on copies of the generated images, for review.

Reads stage 2's output (``GENERATED_DIR``: its OUT_DIR holding ``generation/`` and/or
``inpainting/``, or one of those folders) and the stage-1 records; writes

- ``BOXES_DIR/<mode>/<file name>``: each generated image with its boxes and labels drawn,
  under the same name as the clean file, so that you can pick from these copies and
  ``finalize_selected_images.py`` still finds the clean ones;
- ``BOXES_DIR/overview/<image_id>.png``: per source image, the original (with ``-i``) and
  all its generated images side by side with their boxes, to judge them at a glance.

The boxes of a generated image are those of its manifest entry (what GLIGEN was given), else
its record's. Existing copies are kept (an interrupted run resumes) unless ``--overwrite``; an
overview is remade when a copy of its source image was drawn in this run. Example::

    python draw_bboxes.py -g out -p out/blip2_post.json -i coco/train2017 -o out/boxes
"""

import argparse
import logging
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cocoaug import cli
from cocoaug.atomic import save_image_atomic
from cocoaug.errors import UserError
from cocoaug.generated import list_generated, mode_folders
from cocoaug.images import open_rgb
from cocoaug.paths import refuse_output_inside, require_dir, resolve_under
from cocoaug.records import load_records
from cocoaug.runtime import run_cli

log = logging.getLogger("cocoaug")

# ---------------------------------------------------------------- what a user may edit

# 20 colours that stay apart from each other (Kelly's list without the greys).
PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (255, 105, 180),
]
OVERVIEW_HEIGHT = 320  # pixels; every panel of an overview is scaled to this height


def category_colour(category_id: int) -> tuple[int, int, int]:
    """The colour of a category, the same in every image and every run (a hash of the id, not its rank)."""
    return PALETTE[zlib.crc32(str(category_id).encode()) % len(PALETTE)]


# ---------------------------------------------------------------- drawing


def line_width_for(width: int, height: int) -> int:
    return max(2, round(min(width, height) / 150))


def font_size_for(width: int, height: int) -> int:
    return max(11, round(min(width, height) / 25))


def text_colour_on(colour) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``colour`` (relative luminance)."""
    r, g, b = colour
    return (0, 0, 0) if 0.2126 * r + 0.7152 * g + 0.0722 * b > 140 else (255, 255, 255)


def draw_boxes(image: Image.Image, boxes_xyxy_norm, category_ids, labels) -> Image.Image:
    """A copy of ``image`` with each box outlined in its category's colour and labelled on a filled band."""
    image = image.copy()
    width, height = image.size
    line = line_width_for(width, height)
    font = ImageFont.load_default(size=font_size_for(width, height))
    draw = ImageDraw.Draw(image)
    boxes = np.asarray(boxes_xyxy_norm, dtype=np.float64).reshape(-1, 4) * [width, height, width, height]
    for (x0, y0, x1, y1), category_id, label in zip(boxes, category_ids, labels):
        colour = category_colour(category_id)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=line)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        pad = max(1, line // 2)
        band_w, band_h = right - left + 2 * pad, bottom - top + 2 * pad
        bx = min(max(0.0, x0), max(0.0, width - band_w))
        by = y0 - band_h if y0 - band_h >= 0 else y0  # above the box, or inside it at the top edge
        draw.rectangle([bx, by, bx + band_w, by + band_h], fill=colour)
        draw.text((bx + pad - left, by + pad - top), label, font=font, fill=text_colour_on(colour))
    return image


def overview_panel(image: Image.Image, title: str, boxes_xyxy_norm, category_ids, labels) -> Image.Image:
    """``image`` scaled to the overview's height, boxes drawn at that scale, under a white band with ``title``."""
    width = max(1, round(image.width * OVERVIEW_HEIGHT / image.height))
    scaled = draw_boxes(image.resize((width, OVERVIEW_HEIGHT), Image.BILINEAR), boxes_xyxy_norm, category_ids, labels)
    font = ImageFont.load_default(size=16)
    band = 24
    panel = Image.new("RGB", (max(width, round(font.getlength(title)) + 8), OVERVIEW_HEIGHT + band), "white")
    panel.paste(scaled, (0, band))
    ImageDraw.Draw(panel).text((4, 3), title, font=font, fill=(0, 0, 0))
    return panel


def side_by_side(panels: list[Image.Image], gap: int = 8) -> Image.Image:
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in panels)), "white")
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + gap
    return canvas


# ---------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser(__doc__)
    cli.add_generated(parser)
    cli.add_records(parser, help="stage-1 records, OUT_DIR/blip2_post.json (or selection.json)")
    cli.add_output(parser, metavar="BOXES_DIR", help="copies go to BOXES_DIR/<mode>/<same name>, overviews to BOXES_DIR/overview/")
    cli.add_images(parser, required=False, help="folder of the original images; if given, each overview starts with the original")
    parser.add_argument("--overview", action=argparse.BooleanOptionalAction, default=True, help="write BOXES_DIR/overview/<image_id>.png (default on)")
    cli.add_overwrite(parser, help="redraw copies and overviews that exist already")
    cli.add_debug(parser)
    return parser


# ---------------------------------------------------------------- the stage's steps


def plan_drawing(folders: dict[str, Path], records_by_id: dict, prompts) -> tuple[list, int]:
    """(generated image, boxes, category ids, labels) for every generated PNG, and how many were not made by stage 2."""
    items, unknown_count = [], 0
    for mode, folder in folders.items():
        images, unknown = list_generated(folder, mode)
        for name in unknown:
            log.warning("%s/%s: not a name stage 2 writes and no manifest entry: skipped", mode, name)
        unknown_count += len(unknown)
        for image in images:
            record = records_by_id.get(image.source_image_id)
            if record is None:
                raise UserError(
                    f"{mode}/{image.file_name} was made from image_id {image.source_image_id}, "
                    "which is not in the prompts file; pass the records stage 2 used", prompts)
            boxes = image.entry["boxes"] if image.entry and "boxes" in image.entry else record["bbox"]
            if len(boxes) != len(record["category_ids"]):
                raise UserError(
                    f"{mode}/{image.file_name} has {len(boxes)} boxes but the record of image_id "
                    f"{record['image_id']} has {len(record['category_ids'])}; pass the records stage 2 used", prompts)
            items.append((image, boxes, record["category_ids"], record["labels"]))
    return items, unknown_count


def draw_copies(items, boxes_dir: Path, overwrite: bool) -> tuple[set, int]:
    """Write the boxed copies; return the source image ids that got a new copy, and how many existed."""
    from tqdm import tqdm

    todo = [item for item in items if overwrite or not (boxes_dir / item[0].mode / item[0].file_name).exists()]
    drawn_sources = set()
    for image, boxes, category_ids, labels in tqdm(todo, desc="boxes", unit="image", disable=not todo):  # no empty bar on a rerun
        save_image_atomic(boxes_dir / image.mode / image.file_name, draw_boxes(open_rgb(image.path), boxes, category_ids, labels))
        drawn_sources.add(image.source_image_id)
    return drawn_sources, len(items) - len(todo)


def draw_overviews(items, records_by_id, images_dir, overview_dir: Path, todo: set) -> int:
    """One picture per source image in ``todo``: original (if known) then every generated image, with boxes."""
    from tqdm import tqdm

    by_source: dict[int, list] = {}
    for item in items:
        by_source.setdefault(item[0].source_image_id, []).append(item)
    for image_id in tqdm(sorted(todo), desc="overviews", unit="image", disable=not todo):
        record = records_by_id[image_id]
        panels = []
        if images_dir is not None:
            original = open_rgb(resolve_under(images_dir, record["file_name"]))
            panels.append(overview_panel(original, f"original, image_id {image_id}",
                                         record["bbox"], record["category_ids"], record["labels"]))
        for image, boxes, category_ids, labels in sorted(by_source[image_id], key=lambda i: (i[0].mode, i[0].file_name)):
            title = f"{image.mode} #{image.variant}: {image.file_name}"
            panels.append(overview_panel(open_rgb(image.path), title, boxes, category_ids, labels))
        save_image_atomic(overview_dir / f"{image_id}.png", side_by_side(panels))
    return len(todo)


def check_originals(items, records_by_id, images_dir: Path):
    """Refuse missing originals before anything is drawn."""
    for image_id in sorted({item[0].source_image_id for item in items}):
        path = resolve_under(images_dir, records_by_id[image_id]["file_name"])
        if not path.is_file():
            raise UserError(f"original image of image_id {image_id} not found", path)


def main(args):
    folders = mode_folders(args.generated)
    records_by_id = {r["image_id"]: r for r in load_records(args.records, require_text=False)}
    images_dir = require_dir(args.images, "image folder") if args.images else None
    boxes_dir = Path(args.output)
    written = [boxes_dir, boxes_dir / "overview", *(boxes_dir / mode for mode in folders)]
    refuse_output_inside(written, {"image folder": images_dir, **{f"{mode} folder": folder for mode, folder in folders.items()}})

    items, unknown = plan_drawing(folders, records_by_id, args.records)
    if images_dir is not None and args.overview:
        check_originals(items, records_by_id, images_dir)
    drawn_sources, kept = draw_copies(items, boxes_dir, args.overwrite)

    overviews = 0
    if args.overview:
        overview_dir = boxes_dir / "overview"
        sources = {item[0].source_image_id for item in items}
        todo = {i for i in sources if args.overwrite or i in drawn_sources or not (overview_dir / f"{i}.png").exists()}
        overviews = draw_overviews(items, records_by_id, images_dir, overview_dir, todo)
        if images_dir is None:
            log.info("overviews show the generated images only; pass -i IMAGES_DIR to put the original first")

    per_mode = {mode: sum(1 for item in items if item[0].mode == mode) for mode in folders}
    print(f"drawn {len(items) - kept}, skipped as existing {kept}, skipped (not made by stage 2) {unknown}; "
          f"overviews written {overviews}; "
          + ", ".join(f"{mode}: {n} images" for mode, n in per_mode.items()) + f" -> {boxes_dir}")


if __name__ == "__main__":
    run_cli(main, build_parser())
