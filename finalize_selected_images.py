"""Stage 4: turn the generated images you picked into a COCO dataset ready to train on.

You copied the images worth keeping into ``PICKED_DIR``: clean files or the boxed copies of
stage 3, names unchanged, either inside their mode folder (``PICKED_DIR/generation/3_0101.png``,
always unambiguous) or bare (``PICKED_DIR/3_0101.png``, accepted when only one mode folder of
``GENERATED_DIR`` has that name). Only the names are read: the images written are always the
clean files of ``GENERATED_DIR``. ``FINAL_DIR`` is a dataset root: every ``file_name`` of its
COCO files is relative to ``FINAL_DIR/images/``, without ``..``. Writes

- ``FINAL_DIR/images/original/``: the originals, their relative paths kept (``--originals``:
  hard links by default, or copies, or one symbolic link to the original image folder);
- ``FINAL_DIR/images/generated/<mode>/<mode>_<name>``: the picked images, copied; the mode
  prefix makes every base name unique, for converters that name label files by base name;
- ``FINAL_DIR/annotations.json``: COCO with the original categories, the originals of the picked
  images with their own ids and annotations, and each generated image under a new id (above
  every image id of the original file) with its source image's annotations copied under new
  ids (``area`` = box area, ``segmentation`` = the box as a polygon, ``iscrowd`` kept), plus its
  provenance (``source_image_id``, ``generation_mode``, ``seed``, ``variant``, ``prompt``);
- with ``--merge``, ``FINAL_DIR/train_augmented.json``: the whole original file (file names
  under ``original/``) plus the generated images;
- with ``--yolo``, an Ultralytics dataset beside it: ``FINAL_DIR/labels/`` mirroring
  ``images/``, one image list per COCO file (``annotations.txt``, ``train_augmented.txt``) and
  ``data.yaml`` (class k = the k-th category by id; crowd boxes left out).

Example::

    python finalize_selected_images.py -a coco/annotations/instances_train2017.json \\
        --images coco/train2017 -g out --picked out/picked -o out/final --merge --yolo

Instead of ``--picked PICKED_DIR``, ``--picks PICKS.json`` takes a picks file: the review page's
export, the review server's ``BOXES_DIR/picks.json`` or ``score_images.py``'s ``picks_passed.json``.
"""

import argparse
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

from cocoaug import cli
from cocoaug.atomic import atomic_path, remove_stale_temp_files, write_json_atomic
from cocoaug.balance import pictures_by_category, planned_by_category
from cocoaug.coco import load_coco
from cocoaug.errors import UserError, listed
from cocoaug.generated import list_generated, mode_folders
from cocoaug.images import image_size
from cocoaug.paths import check_inside, refuse_output_inside, require_dir, resolve_under
from cocoaug.picks import check_picks, read_picks
from cocoaug.progress import progress
from cocoaug.records import check_records_match_dataset, load_records
from cocoaug.runtime import run_cli
from cocoaug.yolo import DATA_YAML, write_yolo_dataset, yolo_labels

log = logging.getLogger("cocoaug")
ORIGINAL_SUBDIR = "original"  # under FINAL_DIR/images/
GENERATED_SUBDIR = "generated"  # under FINAL_DIR/images/
ORIGINALS_CHOICES = ("hardlink", "copy", "symlink")


# ---------------------------------------------------------------- what a user may edit


def provenance(image, record) -> dict:
    """The extra keys of a generated image's entry in annotations.json (unknown ones left out)."""
    entry = image.entry or {}
    prompt = entry.get("prompt", (record or {}).get("generated_text"))
    keys = {"source_image_id": image.source_image_id, "generation_mode": entry.get("mode", image.mode),
            "seed": entry.get("seed"), "variant": image.variant, "prompt": prompt}
    return {key: value for key, value in keys.items() if value is not None}


def copied_annotation(annotation: dict, new_id: int, image_id: int) -> dict:
    """A source annotation for a generated image: same category, bbox and iscrowd.

    The object's outline in the new picture is not known: ``segmentation`` is the box as a polygon
    and ``area`` the box's area (the source's ``area`` is its mask's, which the new picture does
    not have). A crowd box stays a crowd box: a region trainers and COCOeval ignore.
    """
    x, y, w, h = annotation["bbox"]
    return {"id": new_id, "image_id": image_id, "category_id": annotation["category_id"], "bbox": annotation["bbox"],
            "area": w * h, "iscrowd": annotation.get("iscrowd", 0),
            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}


# ---------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    parser = cli.new_parser(__doc__, epilog="Picked names: PICKED_DIR/<mode>/<name> always works; a bare PICKED_DIR/<name> "
                                            "only when one mode folder has that name (generation/ and inpainting/ use the same names).")
    cli.add_annotations(parser, help="the COCO annotation file the records came from",
                        aliases=("--original_annotation", "--original-annotation"))
    # -i stays the picked folder here (see --picked): giving it a new meaning would silently break old commands.
    cli.add_images(parser, short=False, aliases=("--original_data_root", "--original-data-root"),
                   help="folder of the original images (file_name is relative to it)")
    cli.add_generated(parser)
    cli.add_picked(parser, aliases=("-i", "--selected"),
                   required=False,
                   help="the images you picked, bare or in <mode>/ folders, names unchanged "
                        "(-i and --selected: the old spellings, kept for old commands)")
    parser.add_argument("--picks", metavar="PICKS.json", help="instead of --picked: a picks file (the review page's picks.json, "
                        "BOXES_DIR/picks.json or score_images.py's picks_passed.json)")
    cli.add_output(parser, metavar="FINAL_DIR", help="images/ and annotations.json go there")
    cli.add_records(parser, required=False,
                    help="stage-1 records (blip2_post.json); if given, a generated image gets only the annotations of the boxes it was made from")
    parser.add_argument("--merge", action="store_true", help="also write FINAL_DIR/train_augmented.json: the whole original file plus the generated images")
    cli.add_overwrite(parser, help="replace the outputs of an earlier run")
    parser.add_argument("--originals", choices=ORIGINALS_CHOICES, default="hardlink",
                        help="how FINAL_DIR/images/original/ holds the originals: hard links (no extra disk; same file "
                             "system), copies, or one symbolic link to the original image folder (Windows: admin or "
                             "Developer Mode; supervision refuses it)")
    parser.add_argument("--yolo", action="store_true", help="also write an Ultralytics dataset: FINAL_DIR/labels/, the "
                                                             "image lists and FINAL_DIR/data.yaml")
    cli.add_debug(parser)
    return parser


# ---------------------------------------------------------------- the stage's steps


def read_selection(selected_dir: Path, folders: dict[str, Path]) -> list:
    """The generated images named in PICKED_DIR, sorted by (mode, name); unknown or ambiguous names are an error."""
    catalogue = {mode: {image.file_name: image for image in list_generated(folder, mode)[0]} for mode, folder in folders.items()}
    chosen, unknown, ambiguous = {}, [], []
    for path in sorted(selected_dir.rglob("*")):
        relative = path.relative_to(selected_dir)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue  # hidden files (.DS_Store) and folders
        parts = relative.parts
        if len(parts) == 2 and parts[1] in catalogue.get(parts[0], {}):
            modes = [parts[0]]
        elif len(parts) == 1:
            modes = [mode for mode in catalogue if parts[0] in catalogue[mode]]
        else:
            modes = []
        if not modes:
            unknown.append(relative.as_posix())
        elif len(modes) > 1:
            ambiguous.append(relative.as_posix())
        else:
            chosen[(modes[0], parts[-1])] = catalogue[modes[0]][parts[-1]]
    if unknown:
        raise UserError(f"{len(unknown)} selected file(s) are not images stage 2 made in {', '.join(map(str, folders.values()))}",
                        listed(unknown))
    if ambiguous:
        raise UserError(f"{len(ambiguous)} selected name(s) exist in several mode folders ({', '.join(catalogue)}); "
                        f"put each in PICKED_DIR/<mode>/ as in the boxes folder", listed(ambiguous))
    if not chosen:
        raise UserError("no selected images: copy the images to keep into this folder", selected_dir)
    return [chosen[key] for key in sorted(chosen)]


def read_picks_selection(picks_path, generated_dir, folders: dict[str, Path]) -> list:
    """The generated images a picks file names, sorted by (mode, name); a picks file made for another
    stage-2 folder, or naming pictures stage 2 did not make, is an error."""
    picks_file = read_picks(picks_path)
    catalogue = {(mode, image.file_name): image for mode, folder in folders.items() for image in list_generated(folder, mode)[0]}
    check_picks(picks_file, generated_dir, set(catalogue), picks_path)
    if not picks_file.picks:
        raise UserError("the picks file keeps no picture", picks_path)
    return [catalogue[(pick.mode, pick.file_name)] for pick in picks_file.picks]


def check_selection(selection, coco, records_by_id, prompts):
    """Each picked image must come from an image of the annotation file and have its size."""
    categories_of = None  # image id -> its annotations' category ids, built once if a pick needs it
    for image in selection:
        name = f"{image.mode}/{image.file_name}"
        source = coco.image_by_id.get(image.source_image_id)
        if source is None:
            raise UserError(f"{name} was made from image_id {image.source_image_id}, which is not in the annotation file", coco.path)
        record = records_by_id.get(image.source_image_id)
        if records_by_id and record is None:
            raise UserError(f"{name} was made from image_id {image.source_image_id}, which is not in the prompts file", prompts)
        if image.entry is None:  # known from its name only: its category must be the source's
            if record is not None:
                categories = {record["category_id"]}
            else:
                if categories_of is None:
                    categories_of = {}
                    for image_id, category_id in zip(coco.ann_image_id.tolist(), coco.ann_category_id.tolist()):
                        categories_of.setdefault(image_id, set()).add(category_id)
                categories = categories_of.get(image.source_image_id, set())
            if image.category_id not in categories:
                raise UserError(f"{name} names category {image.category_id}, which image_id {image.source_image_id} does not have", coco.path)
        size = image_size(image.path)
        if size != (source["width"], source["height"]):
            raise UserError(f"generated image is {size[0]}x{size[1]} but image_id {image.source_image_id} is "
                            f"{source['width']}x{source['height']}: its boxes would not fit", image.path)


def build_annotations(selection, coco, records_by_id) -> tuple[dict, list, list]:
    """annotations.json, the generated images' entries and their annotations."""
    annotations_of: dict[int, list] = {}
    for annotation in coco.annotations:
        annotations_of.setdefault(annotation["image_id"], []).append(annotation)
    next_image_id = int(max(coco.image_by_id)) + 1 if coco.image_by_id else 1
    next_ann_id = int(coco.ann_id.max()) + 1 if len(coco.ann_id) else 1
    new_images, new_annotations, fewer_boxes = [], [], 0
    for image in selection:
        source = coco.image_by_id[image.source_image_id]
        record = records_by_id.get(image.source_image_id)
        sources = annotations_of.get(image.source_image_id, [])
        if record is not None:
            used = set(record["annotation_ids"])
            sources = [a for a in sources if a["id"] in used]
        elif image.entry and "boxes" in image.entry and len(image.entry["boxes"]) < len(sources):
            fewer_boxes += 1
        entry = {"id": next_image_id, "file_name": generated_file_name(image),
                 "width": source["width"], "height": source["height"]}
        entry.update(provenance(image, record))
        new_images.append(entry)
        for annotation in sources:
            new_annotations.append(copied_annotation(annotation, next_ann_id, next_image_id))
            next_ann_id += 1
        next_image_id += 1
    if fewer_boxes:
        log.warning("%d generated image(s) were made from fewer boxes than their source image has annotations; all "
                    "were copied: pass -p OUT_DIR/blip2_post.json to copy only the boxes each was made from", fewer_boxes)

    source_ids = {image.source_image_id for image in selection}
    originals = [with_original_file_name(image) for image in coco.images if image["id"] in source_ids]
    final = {key: value for key, value in coco.data.items() if key not in ("images", "annotations", "categories")}
    final["images"] = originals + new_images
    final["annotations"] = [a for a in coco.annotations if a["image_id"] in source_ids] + new_annotations
    final["categories"] = coco.categories
    return final, new_images, new_annotations


def generated_file_name(image) -> str:
    """Where a picked image goes under FINAL_DIR/images/: its mode folder, its name prefixed by the mode."""
    return f"{GENERATED_SUBDIR}/{image.mode}/{image.mode}_{image.file_name}"


def with_original_file_name(image: dict) -> dict:
    """An original image's entry with its file_name under FINAL_DIR/images/original/."""
    file_name = image["file_name"].replace("\\", "/")
    return {**image, "file_name": f"{ORIGINAL_SUBDIR}/{file_name}"}


def merged_file(coco, new_images, new_annotations) -> dict:
    """The whole original file plus the generated images, every file name relative to FINAL_DIR/images/."""
    merged = dict(coco.data)
    merged["images"] = [with_original_file_name(image) for image in coco.images] + new_images
    merged["annotations"] = coco.annotations + new_annotations
    return merged


def plan_originals(image_ids, coco, images_dir: Path, final_images: Path, check_ids) -> list[tuple[Path, Path]]:
    """(original file, its place under FINAL_DIR/images/original/) for each image id; one of ``check_ids`` missing is an error."""
    pairs = []
    for image_id in sorted(image_ids):
        file_name = coco.image_by_id[image_id]["file_name"]
        source = resolve_under(images_dir, file_name)
        if image_id in check_ids and not source.is_file():
            raise UserError(f"original image of image_id {image_id} not found", source)
        target = final_images / ORIGINAL_SUBDIR / file_name.replace("\\", "/")
        pairs.append((source, check_inside(final_images / ORIGINAL_SUBDIR, target)))
    return pairs


def place_originals(pairs, images_dir: Path, final_images: Path, how: str) -> int:
    """Hard-link, copy or symlink the originals into FINAL_DIR/images/original/. Returns how many files were written."""
    link = final_images / ORIGINAL_SUBDIR
    if how == "symlink":
        target = os.path.abspath(images_dir)
        if link.is_symlink() and os.readlink(link) == target:
            return 0
        if link.exists() and not link.is_symlink():
            raise UserError("holds the files of a run with --originals hardlink or copy; remove it to link the "
                            "original image folder instead", link)
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.tmp")
        if tmp.is_symlink():
            tmp.unlink()
        try:
            os.symlink(target, tmp, target_is_directory=True)
        except OSError as exc:  # Windows without admin rights or Developer Mode
            raise UserError(f"cannot create a symbolic link ({exc.strerror}); use --originals hardlink or copy", link) from None
        os.replace(tmp, link)
        return 1
    if link.is_symlink():
        link.unlink()  # left by --originals symlink: removing the link leaves the originals untouched
    return copy_images(pairs, overwrite=False, hardlink=how == "hardlink", desc=f"{how} originals")


def copy_images(copies, overwrite: bool, hardlink: bool = False, desc: str = "copy pictures") -> int:
    """Copy (or hard-link) each file atomically; a target already in place is kept (resume). Returns how many were written."""
    written = 0
    for source, target in progress(copies, desc=desc, unit="image"):
        if target.exists() and not overwrite:
            if hardlink and os.path.samefile(source, target):
                continue
            s, t = source.stat(), target.stat()
            if not hardlink and s.st_size == t.st_size and int(s.st_mtime) == int(t.st_mtime):
                continue
        with atomic_path(target) as tmp:
            if hardlink:
                tmp.unlink()  # os.link makes the name itself
                try:
                    os.link(source, tmp)
                except OSError as exc:
                    raise UserError(f"cannot hard-link the originals into FINAL_DIR ({exc.strerror}): they must be on "
                                    "the same file system; use --originals copy or symlink", target) from None
            else:
                shutil.copy2(source, tmp)
        written += 1
    return written


def warn_stale_files(final_images: Path, outputs: dict[str, dict]):
    """Warn about files under FINAL_DIR/images/ that no output file lists (a linked original folder is not searched)."""
    in_outputs = {entry["file_name"] for data in outputs.values() for entry in data["images"]}
    stale = []
    for folder, subfolders, files in os.walk(final_images):  # os.walk does not enter a symbolic link
        for name in sorted(files):
            relative = (Path(folder) / name).relative_to(final_images).as_posix()
            if not name.startswith(".") and relative not in in_outputs:
                stale.append(relative)
    if stale:
        log.warning("%d file(s) in %s are not in %s (left from an earlier selection?); remove them before training "
                    "on the folder: %s", len(stale), final_images, " or ".join(outputs), listed(sorted(stale)))


def plan_progress(records_by_id: dict[int, dict], folders: dict[str, Path], selection) -> dict[str, Counter]:
    """Pictures per category id: planned by the records' ``variants`` (times the mode folders present),
    generated in those folders and picked; a picture counts for each category of its record."""
    planned = planned_by_category(list(records_by_id.values()))
    generated = Counter()
    for mode, folder in folders.items():
        generated.update(pictures_by_category(records_by_id, [image.source_image_id for image in list_generated(folder, mode)[0]]))
    picked = pictures_by_category(records_by_id, [image.source_image_id for image in selection])
    return {"planned pictures": Counter({c: n * len(folders) for c, n in planned.items()}),
            "generated pictures": generated, "picked pictures": picked}


def print_summary(coco, outputs: dict[str, dict], selection, placed: dict[str, int], plan_counts: dict[str, Counter] | None = None):
    """Per category: pictures planned, generated and picked (with a plan), then boxes in the original file and
    in each output, each column saying what it counts; then the pictures copied and the originals placed."""
    columns = {"original file": coco.annotations, **{name: data["annotations"] for name, data in outputs.items()}}
    counts = {}
    for name, annotations in columns.items():
        counts[f"boxes in {name}"] = Counter(annotation["category_id"] for annotation in annotations)
    counts = {**(plan_counts or {}), **counts}
    width = max([len("category")] + [len(c["name"]) for c in coco.categories])
    cell = {name: max(len(name), 7) for name in counts}
    print(f"{'category':<{width}}  {'id':>6}  " + "  ".join(f"{name:>{cell[name]}}" for name in counts))
    for category in coco.categories:
        cells = "  ".join(f"{counts[name].get(category['id'], 0):>{cell[name]}}" for name in counts)
        print(f"{category['name']:<{width}}  {category['id']:>6}  {cells}")
    modes = sorted({image.mode for image in selection})
    per_mode = ", ".join(f"{mode} {sum(1 for image in selection if image.mode == mode)}" for mode in modes)
    print(f"selected {len(selection)} generated images ({per_mode}) from {len({i.source_image_id for i in selection})} "
          f"originals; wrote {', '.join(outputs)}")
    if placed["how"] == "linked":  # --originals symlink: one link to the whole folder
        originals = f"images/original/ is a symbolic link to the image folder ({placed['originals_needed']} originals)"
    else:
        originals = f"originals {placed['how']} {placed['originals']} (of {placed['originals_needed']})"
    print(f"files: pictures copied {placed['pictures']} (of {len(selection)}); {originals}; the others were in place already")


def main(args):
    final_dir = Path(args.output)
    annotations_path = final_dir / "annotations.json"
    if annotations_path.exists() and not args.overwrite:
        raise UserError("the output folder holds an earlier result; use --overwrite to replace it", annotations_path)
    coco = load_coco(args.annotations)
    images_dir = require_dir(args.images, "image folder")
    if (args.picked is None) == (args.picks is None):
        raise UserError("pass either --picked PICKED_DIR or --picks PICKS.json", "--picked/--picks")
    selected_dir = require_dir(args.picked, "folder of picked images") if args.picked else None
    folders = mode_folders(args.generated)
    final_images = final_dir / "images"
    written = [final_dir, final_images, *(final_images / GENERATED_SUBDIR / mode for mode in folders)]
    if not (final_images / ORIGINAL_SUBDIR).is_symlink():  # our own link to the image folder (--originals symlink) is no clash
        written.append(final_images / ORIGINAL_SUBDIR)
    refuse_output_inside(written, {"image folder": images_dir, "folder of picked images": selected_dir,
                                   **{f"{mode} folder": folder for mode, folder in folders.items()}})
    # images/original/ included; not through the symbolic link of --originals symlink to the user's image folder.
    if removed := remove_stale_temp_files(final_dir, recursive=True):
        log.info("removed %d temp file(s) left by an interrupted run", removed)
    records_by_id = {}
    if args.records:
        records = load_records(args.records, require_text=False)
        check_records_match_dataset(records, coco, args.records)
        records_by_id = {record["image_id"]: record for record in records}

    if args.picks:
        selection = read_picks_selection(args.picks, args.generated, folders)
    else:
        selection = read_selection(selected_dir, folders)
    check_selection(selection, coco, records_by_id, args.records)
    final, new_images, new_annotations = build_annotations(selection, coco, records_by_id)
    outputs = {"annotations.json": final}
    if args.merge:
        outputs["train_augmented.json"] = merged_file(coco, new_images, new_annotations)
    # The originals FINAL_DIR/images/original/ must hold: those of the picked images, or all with --merge.
    original_ids = set(coco.image_by_id) if args.merge else {image.source_image_id for image in selection}
    must_exist = {image.source_image_id for image in selection} if args.originals == "symlink" else original_ids
    originals = plan_originals(original_ids, coco, images_dir, final_images, must_exist)
    generated = [(image.path, check_inside(final_images, final_images / entry["file_name"])) for image, entry in zip(selection, new_images)]

    if args.yolo:
        labels, yolo_counts = yolo_labels(outputs)

    placed = {"how": {"hardlink": "hard-linked", "symlink": "linked", "copy": "copied"}.get(args.originals, args.originals),
              "originals": place_originals(originals, images_dir, final_images, args.originals), "originals_needed": len(originals),
              "pictures": copy_images(generated, args.overwrite)}
    if args.yolo:
        write_yolo_dataset(final_dir, outputs, labels, train=list(outputs)[-1])
    for name, data in reversed(outputs.items()):  # annotations.json last: its presence marks a finished run
        write_json_atomic(final_dir / name, data)
    warn_stale_files(final_images, outputs)
    plan_counts = plan_progress(records_by_id, folders, selection) if any("variants" in r for r in records_by_id.values()) else None
    print_summary(coco, outputs, selection, placed, plan_counts)
    if args.yolo:
        print(f"YOLO dataset {final_dir / DATA_YAML}: " + ", ".join(f"{key} {value}" for key, value in yolo_counts.items()))


if __name__ == "__main__":
    run_cli(main, build_parser())
