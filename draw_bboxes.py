"""Stage 3: draw the boxes and labels on copies of the generated images, for review.

Reads stage 2's output (``GENERATED_DIR``: its OUT_DIR holding ``generation/`` and/or
``inpainting/``, or one of those folders) and the stage-1 records; writes

- ``BOXES_DIR/<mode>/<file name>``: each generated image with its boxes and labels drawn,
  under the same name as the clean file, so that you can pick from these copies and
  ``finalize_selected_images.py`` still finds the clean ones;
- ``BOXES_DIR/overview/<image_id>.png``: per source image, the original (with ``-i``) and
  all its generated images side by side with their boxes, to judge them at a glance;
- ``BOXES_DIR/original/<image_id>.jpg`` (with ``-i``): the original with its boxes;
- ``BOXES_DIR/review.html``: the review page (docs/review.md), one card per source image, in
  which you keep or reject pictures with the keyboard and export ``picks.json`` for stage 4;
  its data, one page of cards per file, in ``BOXES_DIR/review_data/``.

The boxes of a generated image are those of its manifest entry (what GLIGEN was given), else
its record's. When ``score_images.py`` left ``<mode>/scores.jsonl``, a found box is outlined
solid and a missed one dashed, each band carries the box's region score, and each overview
panel says passed or failed and why. The pictures are drawn on ``--num-workers`` processes
(default: every CPU). With stage 1's ``plan.csv`` beside the records, the page shows each
category's progress against it. Existing copies are kept (an interrupted run resumes)
unless ``--overwrite`` or their scores changed; an overview is remade when a copy of its source
image was drawn in this run. ``--serve`` then serves the page and saves every decision to
``BOXES_DIR/picks.json``. Example::

    python draw_bboxes.py -g out -p out/blip2_post.json -i coco/train2017 -o out/boxes [--serve]
"""

import argparse
import logging
import os
import zlib
from pathlib import Path

import numpy as np
import orjson
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from cocoaug import cli
from cocoaug.atomic import remove_stale_temp_files, save_image_atomic
from cocoaug.balance import PLAN_FILE, read_plan
from cocoaug.errors import UserError
from cocoaug.generated import list_generated, mode_folders
from cocoaug.images import open_rgb
from cocoaug.paths import check_inside, refuse_output_inside, require_dir, resolve_under
from cocoaug.picks import PASSED_PICKS_FILE, check_picks, read_picks
from cocoaug.progress import progress
from cocoaug.records import load_records
from cocoaug.review import ReviewPicture, original_name, page_data, write_review_page
from cocoaug.review_server import ReviewSite, make_server, serve
from cocoaug.runtime import run_cli
from cocoaug.scores import SCORES_FILE, read_scores

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
DRAWN_KEY = "cocoaug-drawn"  # PNG text of a boxed copy: the boxes and scores it shows
PASSED_COLOUR, FAILED_COLOUR = (0, 120, 40), (200, 0, 0)  # the verdict line of a scored overview panel


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


def draw_boxes(image: Image.Image, boxes_xyxy_norm, category_ids, labels, box_scores=None) -> Image.Image:
    """A copy of ``image`` with each box outlined in its category's colour and labelled on a filled band.

    With ``box_scores`` (the ``boxes`` of a scores.jsonl line), a box the detector found has a solid
    outline and one it did not find a dashed outline and "not found" in its band; the band also
    carries the box's region score. Bands never overlap (``label_spots``).
    """
    image = image.copy()
    width, height = image.size
    line = line_width_for(width, height)
    font = ImageFont.load_default(size=font_size_for(width, height))
    draw = ImageDraw.Draw(image)
    boxes = np.asarray(boxes_xyxy_norm, dtype=np.float64).reshape(-1, 4) * [width, height, width, height]
    scores = [box_scores[k] if box_scores is not None and k < len(box_scores) else None for k in range(len(boxes))]
    for (x0, y0, x1, y1), category_id, score in zip(boxes, category_ids, scores):
        if score is not None and score.get("found") is False:
            draw_dashed_rectangle(draw, (x0, y0, x1, y1), category_colour(category_id), line)
        else:
            draw.rectangle([x0, y0, x1, y1], outline=category_colour(category_id), width=line)
    texts = [label_texts(label, score) for label, score in zip(labels, scores)]
    for k, spot in enumerate(label_spots(boxes, texts, lambda text: draw.textbbox((0, 0), text, font=font), (width, height), line)):
        if spot is None:
            continue  # no free place, even shortened: the outline alone, the review page has the details
        (bx, by, bx1, by1), text = spot
        colour = category_colour(category_ids[k])
        left, top, _, _ = draw.textbbox((0, 0), text, font=font)
        pad = max(1, line // 2)
        draw.rectangle([bx, by, bx1, by1], fill=colour)
        draw.text((bx + pad - left, by + pad - top), text, font=font, fill=text_colour_on(colour))
    return image


def score_text(box_score: dict) -> str:
    """What a box's band adds to its label: the region score, and "not found" when the detector missed it."""
    text = f" {box_score['region_clip']:.2f}"  # a finite number: scores.jsonl is read through cocoaug.scores.JudgedScoreEntry
    return text + (" not found" if box_score.get("found") is False else "")


def label_texts(label: str, score: dict | None) -> list[str]:
    """A box's band text from the longest to the shortest form ("dog 0.31 not found", "dog 0.31", "dog", "d")."""
    short = label if len(label) <= 10 else label[:9] + "."
    texts = [label + (score_text(score) if score is not None else "")]
    if score is not None:
        texts.append(f"{short} {score['region_clip']:.2f}")
    texts += [short, label[:1]]
    return list(dict.fromkeys(texts))


def label_spots(boxes_xyxy_pixels, texts: list[list[str]], measure, size, line: int) -> list:
    """Where each box's band goes: ``((x0, y0, x1, y1), text)`` or None, no two bands overlapping.

    A band goes above its box; where there is no room (the image's edge, another band), inside the box
    at its top, then at its bottom, then below it; in each place with the longest text that fits (inside
    the box: within its width). ``measure(text)`` is the text's bounding box.
    """
    width, height = size
    pad = max(1, line // 2)
    placed, spots = [], []
    for (x0, y0, x1, y1), candidates in zip(boxes_xyxy_pixels, texts):
        spot = None
        for where in ("above", "inside top", "inside bottom", "below"):
            for text in candidates:
                left, top, right, bottom = measure(text)
                band_w, band_h = right - left + 2 * pad, bottom - top + 2 * pad
                bx = x0 + line if where.startswith("inside") else min(max(0.0, x0), max(0.0, width - band_w))
                by = {"above": y0 - band_h, "inside top": y0 + line, "inside bottom": y1 - line - band_h, "below": y1 + 1}[where]
                rect = (bx, by, bx + band_w, by + band_h)
                if where.startswith("inside") and band_w > x1 - x0 - 2 * line:
                    continue
                if rect[0] < 0 or rect[1] < 0 or rect[2] > width or rect[3] > height:
                    continue
                if any(rect[0] <= o[2] and o[0] <= rect[2] and rect[1] <= o[3] and o[1] <= rect[3] for o in placed):
                    continue
                spot = (rect, text)
                break
            if spot is not None:
                break
        if spot is not None:
            placed.append(spot[0])
        spots.append(spot)
    return spots


def draw_dashed_rectangle(draw: ImageDraw.ImageDraw, box, colour, line: int):
    """A rectangle outline of dashes ``line`` pixels thick, inside ``box`` as ``draw.rectangle``'s outline is."""
    x0, y0, x1, y1 = box
    dash, gap = 3 * line, 2 * line
    for start in np.arange(x0, x1, dash + gap):
        end = min(start + dash, x1)
        draw.rectangle([start, y0, end, y0 + line - 1], fill=colour)
        draw.rectangle([start, y1 - line + 1, end, y1], fill=colour)
    for start in np.arange(y0, y1, dash + gap):
        end = min(start + dash, y1)
        draw.rectangle([x0, start, x0 + line - 1, end], fill=colour)
        draw.rectangle([x1 - line + 1, start, x1, end], fill=colour)


def verdict_text(score: dict | None) -> str | None:
    """"passed" or "failed: <reasons>" for an overview panel; None for a picture without scores."""
    if score is None or "passed" not in score:
        return None
    if score["passed"]:
        return "passed"
    reasons = "; ".join(map(str, score.get("reasons") or [])) or "no reason given"
    return "failed: " + (reasons if len(reasons) <= 80 else reasons[:77] + "...")


def overview_panel(image: Image.Image, title: str, boxes_xyxy_norm, category_ids, labels, score: dict | None = None,
                   band_lines: int = 1) -> Image.Image:
    """``image`` scaled to the overview's height, boxes drawn at that scale, under a white band with
    ``title`` and, for a scored picture, a second line saying passed (green) or failed and why (red).
    The band is at least ``band_lines`` lines high, so that the panels of one overview line up."""
    width = max(1, round(image.width * OVERVIEW_HEIGHT / image.height))
    box_scores = score.get("boxes") if score else None
    scaled = draw_boxes(image.resize((width, OVERVIEW_HEIGHT), Image.BILINEAR), boxes_xyxy_norm, category_ids, labels, box_scores)
    font = ImageFont.load_default(size=16)
    verdict = verdict_text(score)
    lines = [(title, (0, 0, 0))] + ([(verdict, PASSED_COLOUR if score["passed"] else FAILED_COLOUR)] if verdict else [])
    band = 24 * max(band_lines, len(lines))
    panel = Image.new("RGB", (max([width] + [round(font.getlength(text)) + 8 for text, _ in lines]), OVERVIEW_HEIGHT + band), "white")
    panel.paste(scaled, (0, band))
    draw = ImageDraw.Draw(panel)
    for k, (text, colour) in enumerate(lines):
        draw.text((4, 3 + 24 * k), text, font=font, fill=colour)
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


def cpu_count() -> int:
    """The CPUs this process may run on (a container's or taskset's limit, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser(__doc__)
    cli.add_generated(parser)
    cli.add_records(parser, help="stage-1 records, OUT_DIR/blip2_post.json (or selection.json)")
    cli.add_output(parser, metavar="BOXES_DIR", help="copies go to BOXES_DIR/<mode>/<same name>, overviews to BOXES_DIR/overview/")
    cli.add_images(parser, required=False, help="folder of the original images; if given, each overview starts with the original")
    parser.add_argument("--overview", action=argparse.BooleanOptionalAction, default=True, help="write BOXES_DIR/overview/<image_id>.png (default on)")
    cli.add_overwrite(parser, help="redraw copies and overviews that exist already")
    parser.add_argument("--serve", action="store_true", help="after drawing, serve BOXES_DIR/review.html and save every decision to BOXES_DIR/picks.json")
    parser.add_argument("--host", default="127.0.0.1", help="with --serve: the address to listen on (default 127.0.0.1; anything but localhost lets others reach the page)")
    parser.add_argument("--port", type=cli.port_number, default=8765, help="with --serve: the port (default 8765; 0: any free port)")
    cli.add_num_workers(parser, default=cpu_count(), default_text="the CPU count")
    cli.add_debug(parser)
    return parser


# ---------------------------------------------------------------- the stage's steps


def plan_drawing(folders: dict[str, Path], records_by_id: dict, prompts) -> tuple[list, int]:
    """(generated image, boxes, category ids, labels, scores or None) for every generated PNG, and how
    many were not made by stage 2. Scores come from the mode folder's scores.jsonl when it exists."""
    items, unknown_count = [], 0
    for mode, folder in folders.items():
        images, unknown = list_generated(folder, mode)
        scores = read_scores(folder)
        for name in unknown:
            log.warning("%s/%s: not a name stage 2 writes and no manifest entry: skipped", mode, name)
        unknown_count += len(unknown)
        unscored = 0
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
            score = scores.get(image.file_name)
            unscored += bool(scores) and score is None
            items.append((image, boxes, record["category_ids"], record["labels"], score))
        if unscored:
            log.warning("%s: %d picture(s) have no line in %s: drawn without scores (run score_images.py again)",
                        mode, unscored, folder / SCORES_FILE)
    return items, unknown_count


def drawn_key(boxes, score: dict | None) -> str:
    """What a boxed copy shows, stored in its PNG: a copy whose scores changed since is drawn again."""
    shown = [[box.get("found"), box.get("region_clip")] for box in score.get("boxes") or []] if score else None
    return orjson.dumps({"boxes": boxes, "scores": shown}, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def copy_is_current(target: Path, key: str) -> bool:
    """An existing copy is kept unless it records that it shows other scores (copies without a record are kept)."""
    try:
        with Image.open(target) as image:
            recorded = image.info.get(DRAWN_KEY)
    except (OSError, SyntaxError, ValueError):
        return True  # not ours to judge: --overwrite redraws it
    return recorded is None or recorded == key


def run_tasks(function, tasks: list, workers: int, desc: str):
    """``function(task)`` for every task, on ``workers`` processes (in this one for one worker or one task), with progress."""
    if workers <= 1 or len(tasks) <= 1:
        for task in progress(tasks, desc=desc, unit="image", disable=not tasks):
            function(task)
        return
    from concurrent.futures import ProcessPoolExecutor

    chunksize = max(1, min(16, len(tasks) // (4 * workers)))
    with ProcessPoolExecutor(min(workers, len(tasks))) as pool, progress(total=len(tasks), desc=desc, unit="image") as bar:
        for _ in pool.map(function, tasks, chunksize=chunksize):
            bar.update(1)


def draw_copy(task):
    """One boxed copy (a task of ``draw_copies``, run in a worker process)."""
    path, boxes, category_ids, labels, box_scores, target, key = task
    info = PngImagePlugin.PngInfo()
    info.add_text(DRAWN_KEY, key)
    save_image_atomic(target, draw_boxes(open_rgb(path), boxes, category_ids, labels, box_scores), pnginfo=info)


def draw_copies(items, boxes_dir: Path, overwrite: bool, workers: int = 1) -> tuple[set, int]:
    """Write the boxed copies; return the source image ids that got a new copy, and how many existed."""
    todo, drawn_sources = [], set()
    for image, boxes, category_ids, labels, score in items:
        target = check_inside(boxes_dir, boxes_dir / image.mode / image.file_name)
        key = drawn_key(boxes, score)
        if overwrite or not target.exists() or not copy_is_current(target, key):
            todo.append((image.path, boxes, category_ids, labels, score.get("boxes") if score else None, target, key))
            drawn_sources.add(image.source_image_id)
    run_tasks(draw_copy, todo, workers, "boxes")
    return drawn_sources, len(items) - len(todo)


def draw_original(task):
    """One original with its boxes (a task of ``draw_originals``)."""
    path, bbox, category_ids, labels, target = task
    save_image_atomic(target, draw_boxes(open_rgb(path), bbox, category_ids, labels), quality=90)


def draw_originals(sources, records_by_id, images_dir: Path, boxes_dir: Path, overwrite: bool, workers: int = 1) -> int:
    """BOXES_DIR/original/<image_id>.jpg: each original with its boxes, for the review page."""
    todo = []
    for image_id in sorted(sources):
        target = check_inside(boxes_dir, boxes_dir / original_name(image_id))
        if overwrite or not target.exists():
            record = records_by_id[image_id]
            todo.append((resolve_under(images_dir, record["file_name"]), record["bbox"], record["category_ids"], record["labels"], target))
    run_tasks(draw_original, todo, workers, "originals")
    return len(todo)


def draw_overview(task):
    """One overview (a task of ``draw_overviews``): the original, if given, then every generated picture."""
    original, pictures, band_lines, target = task
    panels = []
    if original is not None:
        path, title, bbox, category_ids, labels = original
        panels.append(overview_panel(open_rgb(path), title, bbox, category_ids, labels, band_lines=band_lines))
    for path, title, boxes, category_ids, labels, score in pictures:
        panels.append(overview_panel(open_rgb(path), title, boxes, category_ids, labels, score, band_lines))
    save_image_atomic(target, side_by_side(panels))


def draw_overviews(items, records_by_id, images_dir, overview_dir: Path, todo: set, workers: int = 1) -> int:
    """One picture per source image in ``todo``: original (if known) then every generated image, with boxes."""
    by_source: dict[int, list] = {}
    for item in items:
        by_source.setdefault(item[0].source_image_id, []).append(item)
    tasks = []
    for image_id in sorted(todo):
        record = records_by_id[image_id]
        band_lines = 2 if any(item[4] is not None for item in by_source[image_id]) else 1
        original = None
        if images_dir is not None:
            original = (resolve_under(images_dir, record["file_name"]), f"original, image_id {image_id}",
                        record["bbox"], record["category_ids"], record["labels"])
        pictures = [(image.path, f"{image.mode} #{image.variant}: {image.file_name}", boxes, category_ids, labels, score)
                    for image, boxes, category_ids, labels, score in sorted(by_source[image_id], key=lambda i: (i[0].mode, i[0].file_name))]
        tasks.append((original, pictures, band_lines, check_inside(overview_dir, overview_dir / f"{image_id}.png")))
    run_tasks(draw_overview, tasks, workers, "overviews")
    return len(tasks)


def check_originals(items, records_by_id, images_dir: Path):
    """Refuse missing originals before anything is drawn."""
    for image_id in sorted({item[0].source_image_id for item in items}):
        path = resolve_under(images_dir, records_by_id[image_id]["file_name"])
        if not path.is_file():
            raise UserError(f"original image of image_id {image_id} not found", path)


def passed_picks(generated, items) -> set:
    """The (mode, file_name) pairs of score_images.py's picks_passed.json, where the review page starts from.

    A picks_passed.json made for another stage-2 folder, naming pictures not here, or breaking the picks
    schema (cocoaug.picks) is left out with a warning.
    """
    generated = Path(generated)
    path = next((c for c in (generated / PASSED_PICKS_FILE, generated.parent / PASSED_PICKS_FILE) if c.is_file()), None)
    if path is None:
        return set()
    here = generated.parent if path.parent == generated.parent else generated
    try:
        picks_file = read_picks(path)
        check_picks(picks_file, here, {(i[0].mode, i[0].file_name) for i in items}, path)
    except UserError as exc:
        log.warning("the review page does not start from %s: %s", path, exc.message)
        return set()
    return {(pick.mode, pick.file_name) for pick in picks_file.picks}


def planned_pictures(plan_path: Path, modes: int) -> dict | None:
    """Pictures planned per category id in stage 1's plan.csv beside the records, for ``modes`` mode runs; None without one
    (an unreadable plan is warned about and left out)."""
    if not plan_path.is_file():
        return None
    try:
        return {row.category_id: row.planned_pictures * modes for row in read_plan(plan_path)}
    except UserError as exc:
        log.warning("the review page shows no plan: %s", exc)
        return None


def write_page(items, records_by_id, args, folders, images_dir, boxes_dir: Path) -> Path:
    """BOXES_DIR/review.html with every picture, its scores and picks_passed.json's picks embedded."""
    pictures = [ReviewPicture(i[0].mode, i[0].file_name, i[0].source_image_id, i[0].variant, i[4]) for i in items]
    originals = {i[0].source_image_id for i in items} if images_dir is not None else set()
    data = page_data(pictures, records_by_id, generated_dir=args.generated, boxes_dir=boxes_dir, clean_dirs=folders,
                     images_dir=images_dir, originals=originals, kept_at_start=passed_picks(args.generated, items),
                     plan=planned_pictures(Path(args.records).parent / PLAN_FILE, len(folders)))
    return write_review_page(boxes_dir, data)


def main(args):
    # 1. Check inputs
    folders = mode_folders(args.generated)
    records_by_id = {r["image_id"]: r for r in load_records(args.records, require_text=False)}
    images_dir = require_dir(args.images, "image folder") if args.images else None
    if args.num_workers < 0:
        raise UserError("must not be negative", f"--num-workers {args.num_workers}")
    boxes_dir = Path(args.output)
    written = [boxes_dir, boxes_dir / "overview", boxes_dir / "original", boxes_dir / "review_data", *(boxes_dir / mode for mode in folders)]
    refuse_output_inside(written, {"image folder": images_dir, **{f"{mode} folder": folder for mode, folder in folders.items()}})
    items, unknown = plan_drawing(folders, records_by_id, args.records)
    if removed := remove_stale_temp_files(boxes_dir, recursive=True):
        log.info("removed %d temp file(s) left by an interrupted run", removed)
    if images_dir is not None:
        check_originals(items, records_by_id, images_dir)
    server = None
    if args.serve:  # take the port before drawing, so that a port in use is said at once
        site = ReviewSite.for_stage3(boxes_dir, args.generated, folders, images_dir, items, records_by_id)
        server = make_server(site, args.host, args.port)

    # 2. Draw what is missing, then the review page
    drawn_sources, kept = draw_copies(items, boxes_dir, args.overwrite, args.num_workers)
    sources = {item[0].source_image_id for item in items}
    originals = draw_originals(sources, records_by_id, images_dir, boxes_dir, args.overwrite, args.num_workers) if images_dir is not None else 0
    overviews = 0
    if args.overview:
        overview_dir = boxes_dir / "overview"
        todo = {i for i in sources if args.overwrite or i in drawn_sources or not (overview_dir / f"{i}.png").exists()}
        overviews = draw_overviews(items, records_by_id, images_dir, overview_dir, todo, args.num_workers)
    if images_dir is None:
        log.info("the overviews and the review page show the generated images only; pass -i IMAGES_DIR to add the originals")
    page = write_page(items, records_by_id, args, folders, images_dir, boxes_dir)

    per_mode = {mode: sum(1 for item in items if item[0].mode == mode) for mode in folders}
    scored = sum(1 for item in items if item[4] is not None)
    print(f"drawn {len(items) - kept}, skipped as existing {kept}, skipped (not made by stage 2) {unknown}; "
          f"overviews written {overviews}, originals drawn {originals}; scored {scored} of {len(items)}; "
          + ", ".join(f"{mode}: {n} images" for mode, n in per_mode.items()) + f" -> {boxes_dir}")
    # 3. Serve the page, saving every decision to BOXES_DIR/picks.json (its address is the one to open: the
    # file:// page does not save there), or say where the page is
    if server is not None:
        serve(server)
    else:
        print(f"review page: {page.resolve().as_uri()}")


if __name__ == "__main__":
    run_cli(main, build_parser())
