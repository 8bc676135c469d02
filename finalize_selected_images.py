"""Stage 4: turn the generated images you picked into a COCO dataset ready to train on.

You copied the images worth keeping into ``SELECTED_DIR``: clean files or the boxed copies of
stage 3, names unchanged, either inside their mode folder (``SELECTED_DIR/generation/3_0101.png``,
always unambiguous) or bare (``SELECTED_DIR/3_0101.png``, accepted when only one mode folder of
``GENERATED_DIR`` has that name). Only the names are read: the images written are always the
clean files of ``GENERATED_DIR``. Writes

- ``FINAL_DIR/images/``: the originals of the picked images (their relative paths kept) and the
  picked images under ``generated/<mode>/<name>``;
- ``FINAL_DIR/annotations.json``: COCO with the original categories, the originals with their
  own ids and annotations, and each generated image under a new id (above every image id of the
  original file) with its source image's annotations copied under new ids, plus its provenance
  (``source_image_id``, ``generation_mode``, ``seed``, ``variant``, ``prompt``);
- with ``--merge``, ``FINAL_DIR/train_augmented.json``: the whole original file plus the
  generated images, whose file names are relative to ``--original_data_root`` like the others.

Example::

    python finalize_selected_images.py --original_annotation coco/annotations/instances_train2017.json \\
        --original_data_root coco/train2017 -g out -i out/selected -o out/final --merge
"""

import argparse
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

from cocoaug.atomic import atomic_path, write_json_atomic
from cocoaug.balance import pictures_by_category, planned_by_category
from cocoaug.coco import load_coco
from cocoaug.errors import UserError
from cocoaug.generated import list_generated, mode_folders
from cocoaug.images import image_size
from cocoaug.paths import refuse_same_folder, require_dir, resolve_under
from cocoaug.records import check_records_match_dataset, load_records
from cocoaug.runtime import add_debug_flag, run_cli

log = logging.getLogger("cocoaug")
LISTED = 10  # names shown in an error about the selection
GENERATED_SUBDIR = "generated"  # under FINAL_DIR/images/


# ---------------------------------------------------------------- what a user may edit


def provenance(image, record) -> dict:
    """The extra keys of a generated image's entry in annotations.json (unknown ones left out)."""
    entry = image.entry or {}
    prompt = entry.get("prompt", (record or {}).get("generated_text"))
    keys = {"source_image_id": image.source_image_id, "generation_mode": entry.get("mode", image.mode),
            "seed": entry.get("seed"), "variant": image.variant, "prompt": prompt}
    return {key: value for key, value in keys.items() if value is not None}


def copied_annotation(annotation: dict, new_id: int, image_id: int) -> dict:
    """A source annotation for a generated image: same category, bbox, area and iscrowd.

    The object's outline in the new picture is not known, so ``segmentation`` is the box as a polygon.
    """
    x, y, w, h = annotation["bbox"]
    return {"id": new_id, "image_id": image_id, "category_id": annotation["category_id"], "bbox": annotation["bbox"],
            "area": annotation.get("area", w * h), "iscrowd": annotation.get("iscrowd", 0),
            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}


# ---------------------------------------------------------------- arguments


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     epilog="Selected names: SELECTED_DIR/<mode>/<name> always works; a bare SELECTED_DIR/<name> "
                                            "only when one mode folder has that name (generation/ and inpainting/ use the same names).")
    parser.add_argument("--original_annotation", required=True, help="the COCO annotation file the records came from")
    parser.add_argument("--original_data_root", required=True, help="folder of the original images (file_name is relative to it)")
    parser.add_argument("-g", "--generated", required=True, help="stage 2's OUT_DIR (holding generation/ and/or inpainting/), or one of those folders")
    parser.add_argument("-i", "--selected", required=True, help="SELECTED_DIR: the images you picked, bare or in <mode>/ folders, names unchanged")
    parser.add_argument("-o", "--output", required=True, help="FINAL_DIR: images/ and annotations.json go there")
    parser.add_argument("-p", "--prompts", help="stage-1 records (blip2_post.json); if given, a generated image gets only the annotations of the boxes it was made from")
    parser.add_argument("--merge", action="store_true", help="also write FINAL_DIR/train_augmented.json: the whole original file plus the generated images")
    parser.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run")
    add_debug_flag(parser)
    return parser


# ---------------------------------------------------------------- the stage's steps


def read_selection(selected_dir: Path, folders: dict[str, Path]) -> list:
    """The generated images named in SELECTED_DIR, sorted by (mode, name); unknown or ambiguous names are an error."""
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
                        _listed(unknown))
    if ambiguous:
        raise UserError(f"{len(ambiguous)} selected name(s) exist in several mode folders ({', '.join(catalogue)}); "
                        f"put each in SELECTED_DIR/<mode>/ as in the boxes folder", _listed(ambiguous))
    if not chosen:
        raise UserError("no selected images: copy the images to keep into this folder", selected_dir)
    return [chosen[key] for key in sorted(chosen)]


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - LISTED} more" if len(names) > LISTED else ""
    return ", ".join(names[:LISTED]) + more


def check_selection(selection, coco, records_by_id, prompts):
    """Each picked image must come from an image of the annotation file and have its size."""
    for image in selection:
        name = f"{image.mode}/{image.file_name}"
        source = coco.image_by_id.get(image.source_image_id)
        if source is None:
            raise UserError(f"{name} was made from image_id {image.source_image_id}, which is not in the annotation file", coco.path)
        record = records_by_id.get(image.source_image_id)
        if records_by_id and record is None:
            raise UserError(f"{name} was made from image_id {image.source_image_id}, which is not in the prompts file", prompts)
        if image.entry is None:  # known from its name only: its category must be the source's
            categories = {record["category_id"]} if record else set(coco.ann_category_id[coco.ann_image_id == image.source_image_id].tolist())
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
        entry = {"id": next_image_id, "file_name": f"{GENERATED_SUBDIR}/{image.mode}/{image.file_name}",
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
    originals = [image for image in coco.images if image["id"] in source_ids]
    final = {key: value for key, value in coco.data.items() if key not in ("images", "annotations", "categories")}
    final["images"] = originals + new_images
    final["annotations"] = [a for a in coco.annotations if a["image_id"] in source_ids] + new_annotations
    final["categories"] = coco.categories
    return final, new_images, new_annotations


def merged_file(coco, new_images, new_annotations, images_root: Path, final_images: Path) -> dict:
    """The whole original file plus the generated images, their file names relative to the original image root."""
    merged = dict(coco.data)
    rebased = []
    for entry in new_images:
        target = final_images / entry["file_name"]
        try:
            file_name = Path(os.path.relpath(target.resolve(), images_root.resolve())).as_posix()
        except ValueError:  # another drive on Windows: no relative path exists
            file_name = str(target.resolve())
        rebased.append({**entry, "file_name": file_name})
    merged["images"] = coco.images + rebased
    merged["annotations"] = coco.annotations + new_annotations
    return merged


def plan_copies(selection, coco, images_dir: Path, final_images: Path) -> list[tuple[Path, Path]]:
    """(source file, target) for every original and generated image; missing originals are an error."""
    copies = []
    for image_id in sorted({image.source_image_id for image in selection}):
        file_name = coco.image_by_id[image_id]["file_name"]
        source = resolve_under(images_dir, file_name)
        if not source.is_file():
            raise UserError(f"original image of image_id {image_id} not found", source)
        copies.append((source, resolve_under(final_images, file_name)))
    for image in selection:
        copies.append((image.path, final_images / GENERATED_SUBDIR / image.mode / image.file_name))
    targets = [target for _, target in copies]
    if len(set(targets)) != len(targets):
        raise UserError(f"an original image's file_name starts with '{GENERATED_SUBDIR}/' like the generated ones; "
                        "rename that folder in the annotation file", coco.path)
    return copies


def copy_images(copies, overwrite: bool) -> int:
    """Copy each file atomically; a target already equal in size and time is kept (resume). Returns how many were copied."""
    from tqdm import tqdm

    copied = 0
    for source, target in tqdm(copies, desc="copy", unit="image"):
        if target.exists() and not overwrite:
            s, t = source.stat(), target.stat()
            if s.st_size == t.st_size and int(s.st_mtime) == int(t.st_mtime):
                continue
        with atomic_path(target) as tmp:
            shutil.copy2(source, tmp)
        copied += 1
    return copied


def warn_stale_files(final_images: Path, final: dict):
    listed = {entry["file_name"] for entry in final["images"]}
    stale = [p.relative_to(final_images).as_posix() for p in sorted(final_images.rglob("*"))
             if p.is_file() and not p.name.startswith(".") and p.relative_to(final_images).as_posix() not in listed]
    if stale:
        log.warning("%d file(s) in %s are not in annotations.json (left from an earlier selection?); remove them "
                    "before training on the folder: %s", len(stale), final_images, _listed(stale))


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


def print_summary(coco, outputs: dict[str, dict], selection, copied: int, progress: dict[str, Counter] | None = None):
    """Per category: pictures planned, generated and picked (with a plan), boxes in the original file and
    in each output; then the counts."""
    columns = {"original file": coco.annotations, **{name: data["annotations"] for name, data in outputs.items()}}
    counts = {name: {} for name in columns}
    for name, annotations in columns.items():
        for annotation in annotations:
            counts[name][annotation["category_id"]] = counts[name].get(annotation["category_id"], 0) + 1
    counts = {**(progress or {}), **counts}
    width = max([len("category")] + [len(c["name"]) for c in coco.categories])
    print(f"{'category':<{width}}  {'id':>6}  " + "  ".join(f"{name:>20}" for name in counts))
    for category in coco.categories:
        cells = "  ".join(f"{counts[name].get(category['id'], 0):>20}" for name in counts)
        print(f"{category['name']:<{width}}  {category['id']:>6}  {cells}")
    modes = sorted({image.mode for image in selection})
    per_mode = ", ".join(f"{mode} {sum(1 for image in selection if image.mode == mode)}" for mode in modes)
    print(f"selected {len(selection)} generated images ({per_mode}) from {len({i.source_image_id for i in selection})} "
          f"originals; files copied {copied}; wrote {', '.join(outputs)}")


def main(args):
    final_dir = Path(args.output)
    annotations_path = final_dir / "annotations.json"
    if annotations_path.exists() and not args.overwrite:
        raise UserError("the output folder holds an earlier result; use --overwrite to replace it", annotations_path)
    coco = load_coco(args.original_annotation)
    images_dir = require_dir(args.original_data_root, "image folder")
    selected_dir = require_dir(args.selected, "folder of selected images")
    folders = mode_folders(args.generated)
    final_images = final_dir / "images"
    refuse_same_folder(final_dir, images_dir, selected_dir, args.generated, *folders.values())
    refuse_same_folder(final_images, images_dir)
    for mode, folder in folders.items():
        refuse_same_folder(final_images / GENERATED_SUBDIR / mode, folder)
    records_by_id = {}
    if args.prompts:
        records = load_records(args.prompts, require_text=False)
        check_records_match_dataset(records, coco, args.prompts)
        records_by_id = {record["image_id"]: record for record in records}

    selection = read_selection(selected_dir, folders)
    check_selection(selection, coco, records_by_id, args.prompts)
    copies = plan_copies(selection, coco, images_dir, final_images)
    final, new_images, new_annotations = build_annotations(selection, coco, records_by_id)

    copied = copy_images(copies, args.overwrite)
    outputs = {"annotations.json": final}
    if args.merge:
        merged = merged_file(coco, new_images, new_annotations, images_dir, final_images)
        write_json_atomic(final_dir / "train_augmented.json", merged)
        outputs["train_augmented.json"] = merged
    write_json_atomic(annotations_path, final)  # last: its presence marks a finished run
    warn_stale_files(final_images, final)
    progress = plan_progress(records_by_id, folders, selection) if any("variants" in r for r in records_by_id.values()) else None
    print_summary(coco, outputs, selection, copied, progress)


if __name__ == "__main__":
    run_cli(main, build_parser())
