"""Stage 1: pick the COCO images that suit generation, caption them with BLIP-2, clean the captions.

Reads IMAGES_DIR and a COCO annotation file. Writes into OUT_DIR:
  blip2.json / blip2.csv            one record per selected image with its raw caption
  blip2_post.json / blip2_post.csv  the post-processed captions: what stage 2 reads
  selected/                         the originals of those records (relative paths kept) and
                                    selected/selected.json, a COCO file with their annotations
  blip2.partial.jsonl               captions as they are made: a rerun reuses them (resume)
  selection.json                    with --select-only: the selected records, no captions
  plan.csv                          with --balance: pictures planned per category (docs/balance.md)

    python generate_prompt_blip2.py -i coco/train2017 -a coco/annotations/instances_train2017.json \\
        -o out --categories "kite,sports ball" --prompt "a photo of"

To change which images are picked, edit `select_images`; to change how captions are cleaned,
edit `post_process`. Both sit right below; most choices are also flags (--help). With
--balance, each record's `variants` says how many pictures stage 2 makes of it (cocoaug/balance.py).
"""

import argparse
import gc
import importlib.util
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Callable

import msgspec
import numpy as np
import orjson
import pandas as pd

from cocoaug import cli
from cocoaug.captions import apply_rules, count_phrase, load_rules, tidy_caption, word_pattern
from cocoaug import balance
from cocoaug.atomic import atomic_path, naming_os_errors, remove_stale_temp_files, write_csv_atomic, write_json_atomic
from cocoaug.boxes import clip_xywh, xywh_pixels_to_xyxy_norm
from cocoaug.coco import load_coco
from cocoaug.errors import UserError, listed
from cocoaug.images import open_rgb, without_exif_orientation
from cocoaug.jsonl import open_for_append, read_jsonl
from cocoaug.paths import check_inside, check_relative_name, refuse_output_inside, require_dir, resolve_under
from cocoaug.progress import progress
from cocoaug.records import MAX_VARIANTS, RECORD_FIELDS
from cocoaug.schema import Id, PositiveInt
from cocoaug.runtime import check_model_source, model_load_errors, resolve_device, resolve_dtype, run_cli
from cocoaug.scores import read_pass_rates

log = logging.getLogger("generate_prompt_blip2")
PARTIAL_NAME = "blip2.partial.jsonl"


def select_images(images: pd.DataFrame, args) -> pd.Series:
    """Say for every image why it is skipped; "" means it is selected (--limit applies after).

    ``images`` has one row per image of the annotation file (index ``image_id``) and these
    columns, computed from the image's boxes: ``n_boxes``, ``n_categories``, ``n_crowd``,
    ``n_wanted`` (boxes of a --categories category; all boxes without that flag),
    ``min_box_area`` (smallest box area in pixels after clipping to the image; 0 without
    boxes), ``width``, ``height``.
    To change the rule, edit a condition or add a ``(reason, condition)`` pair: an image is
    skipped for the first condition that holds. Keep conditions as column arithmetic (not a
    Python function per image) so that a COCO-sized file still takes seconds.
    """
    rules = [
        ("no annotations", images.n_boxes == 0),
        ("category filter", images.n_wanted == 0),
        ("crowd annotation", images.n_crowd > 0),
        ("degenerate box", images.min_box_area <= 0),
        ("small box", images.min_box_area < args.min_box_area),
        ("multi-category", (images.n_categories > 1) & (not args.allow_multi_category)),
        ("too many objects", images.n_boxes > args.max_objects),
    ]
    reasons = np.select([condition.to_numpy() for _, condition in rules], [reason for reason, _ in rules], default="")
    return pd.Series(reasons, index=images.index, name="skip_reason")


def post_process(text: str, record: dict, args) -> tuple[str | None, str]:
    """Clean one raw caption: return ``(caption, "")`` to keep the record, ``(None, reason)`` to drop it.

    In order: tidy the text (trim, one space between words, drop a trailing fragment), apply
    the --rules file, drop empty captions and those with a --forbid word, then handle a caption
    that does not name the record's labels as --missing-label says. Add your own dataset's
    fixes here, or better in a --rules file, which needs no code.
    """
    text = apply_rules(tidy_caption(text), record, args.rules)
    if not text:
        return None, "empty caption"
    if args.forbid and any(word_pattern(word).search(text) for word in args.forbid):
        return None, "forbidden word"
    missing = [label for label in dict.fromkeys(record["labels"]) if not word_pattern(label).search(text)]
    if missing and args.missing_label == "drop":
        return None, "label not mentioned"
    if missing and args.missing_label == "prepend":
        text = " and ".join(count_phrase(record["labels"].count(label), label) for label in missing) + ", " + text
    return text, ""


def parse_args(argv=None):
    """Parse the command line (``argv``, default sys.argv)."""
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface; every default is here."""
    p = cli.new_parser(__doc__)
    cli.add_images(p, help="folder the COCO file_names are relative to")
    cli.add_annotations(p, help="COCO annotation file")
    cli.add_output(p, help="output folder (not inside the image folder)")
    g = p.add_argument_group("selection (see select_images)")
    g.add_argument("--max-objects", type=int, default=6, metavar="N", help="skip images with more than N boxes (default 6)")
    g.add_argument("--allow-multi-category", action="store_true", help="also select images whose boxes are of several categories")
    g.add_argument("--categories", metavar="NAME[,NAME...]", help="select only images with a box of one of these categories")
    g.add_argument("--min-box-area", type=cli.finite_float, default=0.0, metavar="PIXELS",
                   help="skip images with a box smaller than PIXELS after clipping to the image (default 0: "
                        "every box must keep a positive area)")
    cli.add_limit(g, help="keep only the first N selected images by image_id")
    g.add_argument("--select-only", action="store_true",
                   help="write OUT_DIR/selection.json and the summary, then stop: no model is loaded, no image is read "
                        "(sizes come from the annotation file; missing files are found by the full run)")
    g = p.add_argument_group("class balance (see docs/balance.md)")
    g.add_argument("--balance", choices=balance.METHODS,
                   help="give each record a number of pictures (its 'variants') that favours rare categories: "
                        "repeat-factor (LVIS) or target (top each category up toward --target-boxes)")
    g.add_argument("--balance-threshold", type=cli.finite_float, default=0.001, metavar="T",
                   help="repeat-factor: r_c = max(1, sqrt(T / f_c)), f_c the fraction of images with category c (default 0.001)")
    g.add_argument("--target-boxes", type=int, metavar="N", help="--balance target: boxes per category wanted in the merged set")
    g.add_argument("--max-variants", type=int, default=8, metavar="K", help="at most K pictures per record and mode (default 8)")
    g.add_argument("--pass-rates", metavar="score_summary.csv",
                   help="pass rates of an earlier run (score_images.py): each category's plan is raised by 1 / its rate")
    g.add_argument("--seed", type=int, default=0, help="decides the plan's rounding and ties: same inputs and seed, same plan (default 0)")
    g = p.add_argument_group("captioning")
    cli.add_model(g, default="Salesforce/blip2-opt-2.7b", help="BLIP-2 hub id or local folder (default %(default)s)")
    cli.add_device(g)
    g.add_argument("--load-in-8bit", action="store_true", help="load the model in 8 bits (needs the bitsandbytes package)")
    cli.add_batch_size(g, default=8, help="images per generate call")
    g.add_argument("--max-new-tokens", type=int, default=30, metavar="N", help="caption length limit in tokens (default 30)")
    g.add_argument("--prompt", default="", metavar="TEXT", help='text the caption continues, e.g. "a photo of" (not part of the caption)')
    cli.add_num_workers(g, default=min(4, os.cpu_count() or 1), default_text="min(4, CPUs)")
    cli.add_skip_missing(g, help="skip (warn and count) missing or unreadable images instead of stopping")
    g = p.add_argument_group("post-processing (see post_process)")
    g.add_argument("--rules", metavar="FILE", help='JSON list of {"pattern", "replacement", "regex": bool, "labels": [...]}, applied in order')
    g.add_argument("--missing-label", default="prepend", choices=["drop", "prepend", "keep"],
                   help='caption not naming the label: drop the record, prepend e.g. "two cats, " (default), or keep it')
    g.add_argument("--forbid", metavar="WORD[,WORD...]", help="drop captions containing one of these words (whole word or plural)")
    cli.add_overwrite(p)
    cli.add_debug(p)
    return p


def check_arguments(args):
    """Refuse bad arguments and existing outputs before anything slow happens."""
    for name in ("max_objects", "batch_size", "max_new_tokens", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError("must be at least 1", f"--{name.replace('_', '-')} {value}")
    if args.num_workers < 0 or args.min_box_area < 0:
        raise UserError("must not be negative", "--num-workers / --min-box-area")
    args.images, args.output = require_dir(args.images, "image folder"), Path(args.output)
    refuse_output_inside([args.output, args.output / "selected"], {"image folder": args.images})
    args.categories = split_list(args.categories)
    args.forbid = split_list(args.forbid)
    args.rules = load_rules(args.rules)
    check_balance_arguments(args)
    names = ["selection.json"] if args.select_only else ["blip2.json", "blip2.csv", "blip2_post.json", "blip2_post.csv", "selected"]
    # A full run replaces the plan.csv of a --select-only preview: the plan belongs with blip2_post.json.
    names += [balance.PLAN_FILE] if args.balance and args.select_only else []
    args.resume = not args.select_only and resumable(args.output)
    for name in names:
        if (args.output / name).exists() and not (args.overwrite or args.resume):
            raise UserError("output exists; pass --overwrite to replace it", args.output / name)
    if not args.select_only:
        args.model = check_model_source(args.model)
        if args.load_in_8bit and importlib.util.find_spec("bitsandbytes") is None:
            raise UserError("--load-in-8bit needs the bitsandbytes package (pip install bitsandbytes)", "--load-in-8bit")


def resumable(output: Path) -> bool:
    """Whether OUT_DIR holds a full run that stopped before its last file (blip2_post.csv): its
    captions are in the partial file, and a rerun writes the other files again from them."""
    return (output / PARTIAL_NAME).is_file() and not (output / "blip2_post.csv").exists()


def remove_stale_temp_files_of_stage(args):
    """Remove the temp files that a killed run left in OUT_DIR and selected/."""
    removed = remove_stale_temp_files(args.output) + remove_stale_temp_files(args.output / "selected", recursive=True)
    if removed:
        log.info("removed %d temp file(s) left by an interrupted run", removed)


def check_balance_arguments(args):
    """Refuse class-balance flags that cannot make a plan; read the pass-rates file (by category name)."""
    if not args.balance_threshold > 0:
        raise UserError("must be greater than 0", f"--balance-threshold {args.balance_threshold}")
    if not 1 <= args.max_variants <= MAX_VARIANTS:
        raise UserError(f"must be from 1 to {MAX_VARIANTS}", f"--max-variants {args.max_variants}")
    if args.target_boxes is not None and args.balance != "target":
        raise UserError("--target-boxes needs --balance target", f"--target-boxes {args.target_boxes}")
    if args.balance == "target" and args.target_boxes is None:
        raise UserError("--balance target needs --target-boxes N", "--balance target")
    if args.target_boxes is not None and args.target_boxes < 1:
        raise UserError("must be at least 1", f"--target-boxes {args.target_boxes}")
    if args.pass_rates and not args.balance:
        raise UserError("--pass-rates needs --balance", f"--pass-rates {args.pass_rates}")
    args.pass_rates_by_name = read_pass_rates(args.pass_rates) if args.pass_rates else {}


def split_list(text):
    """``"a, b,"`` -> ``["a", "b"]``; None -> ``[]``."""
    return [item.strip() for item in text.split(",") if item.strip()] if text else []


# --- selection ------------------------------------------------------------------------------

def load_annotations(path, annotation_dicts: bool = True):
    """Load and validate the COCO file with the garbage collector held off.

    ``annotation_dicts=False`` (--select-only) decodes only the columns selection reads; the
    full run keeps the whole file, whose entries go into selected/selected.json.
    The parsed file holds millions of objects, lives until the end and has no reference
    cycles; left alone, the collector rescans all of it at every full collection, which on a
    COCO-train-sized file costs more than the rest of the selection.
    """
    gc.disable()
    try:
        dataset = load_coco(path, annotation_dicts=annotation_dicts)
        gc.freeze()
    finally:
        gc.enable()
    return dataset


def image_table(dataset, categories: list[str]) -> pd.DataFrame:
    """One row per image with the per-image box statistics `select_images` reads (vectorised)."""
    image_ids = np.array([image["id"] for image in dataset.images], dtype=np.int64)
    order = np.argsort(image_ids)
    image_ids = image_ids[order]
    width = np.array([image["width"] for image in dataset.images], dtype=np.int64)[order]
    height = np.array([image["height"] for image in dataset.images], dtype=np.int64)[order]
    row = np.searchsorted(image_ids, dataset.ann_image_id)
    n = len(image_ids)
    clipped = clip_xywh(dataset.ann_bbox_xywh, width[row], height[row])
    min_area = np.full(n, np.inf)
    np.minimum.at(min_area, row, clipped[:, 2] * clipped[:, 3])
    category_ids = np.array(sorted(dataset.category_by_id), dtype=np.int64)
    category_row = np.searchsorted(category_ids, dataset.ann_category_id)
    # Distinct (image, category) pairs by sorting: numpy 2's plain np.unique hashes, much slower here.
    pairs = np.sort(row * len(category_ids) + category_row)
    image_category_pairs = pairs[np.diff(pairs, prepend=-1) != 0]
    wanted = np.isin(dataset.ann_category_id, category_ids_for(dataset, categories)) if categories else np.ones(len(row), bool)
    n_boxes = np.bincount(row, minlength=n)
    return pd.DataFrame({
        "width": width, "height": height, "n_boxes": n_boxes,
        "n_categories": np.bincount(image_category_pairs // len(category_ids), minlength=n),
        "n_crowd": np.bincount(row, weights=dataset.ann_iscrowd, minlength=n).astype(np.int64),
        "n_wanted": np.bincount(row, weights=wanted, minlength=n).astype(np.int64),
        "min_box_area": np.where(n_boxes > 0, min_area, 0.0),
    }, index=pd.Index(image_ids, name="image_id"))


def category_ids_for(dataset, names: list[str]) -> list[int]:
    """Category ids of --categories names (case-insensitive); an unknown name is a UserError."""
    by_name = {c["name"].lower(): cid for cid, c in dataset.category_by_id.items()}
    unknown = [name for name in names if name.lower() not in by_name]
    if unknown:
        known = listed(sorted(c["name"] for c in dataset.categories))
        raise UserError(f"unknown category {unknown[0]!r}; the file has: {known}", "--categories")
    return [by_name[name.lower()] for name in names]


def apply_limit(reasons: pd.Series, limit) -> pd.Series:
    """Mark every selected image after the first ``limit`` (by image_id) as skipped by "limit"."""
    selected = reasons.index[reasons == ""]
    if limit is not None and len(selected) > limit:
        reasons = reasons.copy()
        reasons[selected[limit:]] = "limit"
    return reasons


def build_records(dataset, table: pd.DataFrame, selected_ids: np.ndarray) -> tuple[list[dict], dict]:
    """Stage-1 records (no caption yet) of ``selected_ids`` (ascending), and each one's pixel boxes."""
    keep = np.isin(dataset.ann_image_id, selected_ids)
    index = np.flatnonzero(keep)[np.argsort(dataset.ann_image_id[keep], kind="stable")]
    image_ids = dataset.ann_image_id[index]
    sizes = table.loc[image_ids, ["width", "height"]].to_numpy()
    bbox_xywh = dataset.ann_bbox_xywh[index]
    boxes = xywh_pixels_to_xyxy_norm(bbox_xywh, sizes[:, 0], sizes[:, 1]).tolist()
    ann_ids, cat_ids = dataset.ann_id[index].tolist(), dataset.ann_category_id[index].tolist()
    names = {cid: c["name"] for cid, c in dataset.category_by_id.items()}
    starts = np.searchsorted(image_ids, selected_ids).tolist() + [len(index)]
    records, pixel_boxes = [], {}
    for k, image_id in enumerate(selected_ids.tolist()):
        a, b = starts[k], starts[k + 1]
        image = dataset.image_by_id[image_id]
        labels = [names[c] for c in cat_ids[a:b]]
        records.append({
            "image_id": image_id, "file_name": image["file_name"], "width": image["width"], "height": image["height"],
            "category_id": cat_ids[a], "label": labels[0], "bbox": boxes[a:b],
            "annotation_ids": ann_ids[a:b], "category_ids": cat_ids[a:b], "labels": labels,
        })
        pixel_boxes[image_id] = bbox_xywh[a:b]
    return records, pixel_boxes


# --- class balance -------------------------------------------------------------------------

def plan_balance(records, dataset, args, summary) -> tuple[list[dict], Callable]:
    """Give each record its ``variants`` (pictures per mode) and return the records that get some,
    with the function that tabulates the plan of the records kept (see cocoaug/balance.py).

    Records planned 0 pictures (``--balance target``, all their categories at target) are dropped
    here, before captioning; the table still counts them among the selected records.
    """
    names = {cid: c["name"] for cid, c in dataset.category_by_id.items()}
    categories = category_ids_for(dataset, args.categories) if args.categories else sorted(names)
    settings = balance.BalanceSettings(args.balance, args.balance_threshold, args.target_boxes, args.max_variants,
                                       args.seed, balance.pass_rates_by_id(args.pass_rates_by_name, names, args.pass_rates))
    counts = balance.file_counts(dataset.ann_image_id, dataset.ann_category_id, len(dataset.images))
    plan = balance.plan_variants(records, counts, settings, categories)
    planned = [{**record, "variants": plan[record["image_id"]]} for record in records]
    kept = [record for record in planned if record["variants"] > 0]
    if len(kept) < len(planned):
        summary["skipped: categories at target (no picture planned)"] = len(planned) - len(kept)
    unplanned = [record for record in planned if record["variants"] == 0]

    def plan_rows(kept_records):
        return balance.plan_table(kept_records + unplanned, counts, settings, names, categories)
    return kept, plan_rows


def report_plan(records, plan_rows, args):
    """Write OUT_DIR/plan.csv for ``records`` and print it, with the categories left short of their target."""
    rows = plan_rows(records)
    balance.write_plan(args.output / balance.PLAN_FILE, rows)
    method = (f"repeat-factor, t={args.balance_threshold:g}" if args.balance == "repeat-factor"
              else f"target {args.target_boxes} boxes")
    print(f"class-balance plan ({method}; at most {args.max_variants} pictures per record and mode; "
          f"{balance.PLAN_FILE}); pictures and boxes are per mode run")
    for line in balance.plan_lines(rows):
        print(f"  {line}")
    print(f"  total pictures per mode run: {sum(record['variants'] for record in records)} for {len(records)} records")
    for row in balance.shortfalls(rows):
        print(f"  short of target: {row.category} reaches {row.expected_boxes_after} of {row.target_boxes} boxes "
              f"(shortfall {row.shortfall}; raise --max-variants or select more of its images)")


# --- captioning -----------------------------------------------------------------------------

class ImageFiles:
    """Map-style dataset for torch's DataLoader: decodes one image in a worker process."""

    def __init__(self, paths: list[Path], image_ids: list[int]):
        self.paths, self.image_ids = paths, image_ids

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            return self.image_ids[i], open_rgb(self.paths[i]), ""
        except UserError as exc:  # passed on as data: the main process decides to stop or skip
            return self.image_ids[i], None, str(exc)


def collate_images(batch):
    """Keep PIL images as a list: the processor resizes them in the main process."""
    return [list(column) for column in zip(*batch)]


def image_paths(records, args, summary) -> tuple[list[dict], list[Path]]:
    """Resolve every record's file; missing files stop the run (one error listing them) or are skipped."""
    paths = [resolve_under(args.images, record["file_name"]) for record in records]
    missing = [i for i, path in enumerate(paths) if not path.is_file()]
    if missing:
        names = [records[i]["file_name"] for i in missing]
        if not args.skip_missing:
            raise UserError(f"{len(names)} image file(s) not found under {args.images} (--skip-missing skips them)", listed(names))
        log.warning("skipping %d missing image file(s): %s", len(names), listed(names))
        summary["skipped: missing image file"] += len(names)
        gone = set(missing)
        records = [r for i, r in enumerate(records) if i not in gone]
        paths = [p for i, p in enumerate(paths) if i not in gone]
    return records, paths


def load_model(args):
    """Load the BLIP-2 processor and model; every failure is a UserError naming the model."""
    import torch
    from transformers import AutoConfig, Blip2ForConditionalGeneration, Blip2Processor

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    with model_load_errors(args.model):
        config = AutoConfig.from_pretrained(args.model)
        if config.model_type != "blip-2":
            raise UserError(f"not a BLIP-2 model (model_type {config.model_type!r})", args.model)
        processor = Blip2Processor.from_pretrained(args.model)
        extra = {}
        if args.load_in_8bit:
            from transformers import BitsAndBytesConfig
            extra = {"quantization_config": BitsAndBytesConfig(load_in_8bit=True), "device_map": {"": str(device)}}
        model = Blip2ForConditionalGeneration.from_pretrained(args.model, dtype=dtype, **extra)
    if not args.load_in_8bit:
        model = model.to(device)
    # OPT continues the last token of each row, so a batch must be padded on the left.
    processor.tokenizer.padding_side = "left"
    torch.set_grad_enabled(False)
    return processor, model.eval(), device, dtype


def caption_batch(processor, model, images, args, device, dtype) -> list[str]:
    """Greedy captions of a list of PIL images; the prompt is not part of them."""
    inputs = processor(images=images, text=[args.prompt] * len(images), return_tensors="pt", padding=True)
    inputs = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()}
    output = model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=args.max_new_tokens)
    if not model.config.text_config.is_encoder_decoder:  # OPT returns the prompt too; Flan-T5 only new tokens
        output = output[:, inputs["input_ids"].shape[1]:]
    return processor.tokenizer.batch_decode(output, skip_special_tokens=True)


class PartialCaption(msgspec.Struct):
    """The schema of one line of ``blip2.partial.jsonl``: a caption and what made it."""

    image_id: Id
    generated_text: str
    width: PositiveInt
    height: PositiveInt
    model: str
    prompt: str
    max_new_tokens: int


def read_partial(path: Path, key: dict) -> dict:
    """Captions of an interrupted run made with the same model, prompt and length, by image id
    (a last line cut short by a kill is dropped with a warning)."""
    if not path.exists():
        return {}
    entries = read_jsonl(path, PARTIAL_NAME, PartialCaption, id_key="image_id")
    return {entry["image_id"]: entry for entry in entries if all(entry[k] == v for k, v in key.items())}


def caption_records(records, paths, args, summary) -> dict:
    """Caption every record (reusing the partial file), appending each batch to it as it is made."""
    from torch.utils.data import DataLoader
    partial = args.output / PARTIAL_NAME
    key = {"model": args.model, "prompt": args.prompt, "max_new_tokens": args.max_new_tokens}
    done = read_partial(partial, key)
    todo = [i for i, record in enumerate(records) if record["image_id"] not in done]
    summary["captions reused from " + PARTIAL_NAME] += len(records) - len(todo)
    summary.setdefault("captioned", 0)  # listed even when every caption is reused
    if todo:
        processor, model, device, dtype = load_model(args)
        files = ImageFiles([paths[i] for i in todo], [records[i]["image_id"] for i in todo])
        loader = DataLoader(files, batch_size=args.batch_size, num_workers=args.num_workers, collate_fn=collate_images)
        args.output.mkdir(parents=True, exist_ok=True)
        # A write to an open file (or its flush at close) names no path: naming_os_errors has a full disk name the file.
        with naming_os_errors(partial), open_for_append(partial) as sink, progress(total=len(todo), desc="captioning", unit="image") as bar:
            for ids, images, errors in loader:
                for image_id, error in zip(ids, errors):
                    if error and not args.skip_missing:
                        raise UserError(f"{error}; --skip-missing skips such files", f"image_id {image_id}")
                    if error:
                        log.warning("skipping image_id %s: %s", image_id, error)
                        summary["skipped: unreadable image"] += 1
                ok = [k for k, error in enumerate(errors) if not error]
                texts = caption_batch(processor, model, [images[k] for k in ok], args, device, dtype) if ok else []
                summary["captioned"] += len(texts)
                for k, text in zip(ok, texts):
                    entry = {"image_id": ids[k], **key, "generated_text": text, "width": images[k].width, "height": images[k].height}
                    done[ids[k]] = entry
                    sink.write(orjson.dumps(entry) + b"\n")
                sink.flush()
                os.fsync(sink.fileno())
                bar.update(len(ids))
    return done


def attach_captions(records, pixel_boxes, captions, summary) -> list[dict]:
    """Records with their raw caption; a size that differs from the file's is corrected from the file."""
    captioned = []
    for record in records:
        entry = captions.get(record["image_id"])
        if entry is None:
            continue
        record = {**record, "generated_text": entry["generated_text"]}
        size = (entry["width"], entry["height"])
        if size != (record["width"], record["height"]):
            log.warning("image_id %s: the annotation file says %dx%d, the file is %dx%d; using the file's size (%s)",
                        record["image_id"], record["width"], record["height"], *size, record["file_name"])
            clipped = clip_xywh(pixel_boxes[record["image_id"]], *size)
            if (clipped[:, 2:] <= 0).any():
                summary["skipped: box outside the image file"] += 1
                continue
            record.update(width=size[0], height=size[1],
                          bbox=xywh_pixels_to_xyxy_norm(pixel_boxes[record["image_id"]], *size).tolist())
        captioned.append(record)
    return captioned


# --- outputs --------------------------------------------------------------------------------

def write_records(path: Path, records: list[dict], csv: bool = True):
    """Write records as JSON and, for review in a spreadsheet, as CSV beside it."""
    write_json_atomic(path, records)
    if csv:
        planned = ["variants"] if records and "variants" in records[0] else []
        write_csv_atomic(path.with_suffix(".csv"), records, list(RECORD_FIELDS) + planned)


def copy_selected(records, paths_by_id, dataset, args):
    """Copy the originals to OUT_DIR/selected/ (relative paths kept) with a COCO file of them.

    A JPEG's EXIF Orientation tag is left out of its copy (docs/troubleshooting.md): the boxes refer
    to the stored pixels, which are copied unchanged.
    """
    folder = args.output / "selected"
    for record in records:
        with atomic_path(check_inside(folder, resolve_under(folder, record["file_name"]))) as tmp:
            tmp.write_bytes(without_exif_orientation(paths_by_id[record["image_id"]].read_bytes()))
    ids = {record["image_id"] for record in records}
    coco = {key: value for key, value in dataset.data.items() if key not in ("images", "annotations")}
    coco["images"] = [dataset.image_by_id[i] for i in sorted(ids)]
    coco["annotations"] = [a for a in dataset.annotations if a["image_id"] in ids]
    write_json_atomic(folder / "selected.json", coco)


def print_summary(summary: Counter):
    """Print the counts of the run, one per line."""
    width = max(map(len, summary)) + 2
    print("stage 1 summary")
    for name, count in summary.items():
        print(f"  {name:<{width}}{count:>8}")


def main(args):
    """Select, caption, clean and write; --select-only stops after the selection."""
    check_arguments(args)
    if args.resume and not args.select_only:
        log.info("%s holds an unfinished run: its captions are reused and its files written again", args.output)
    remove_stale_temp_files_of_stage(args)
    dataset = load_annotations(args.annotations, annotation_dicts=not args.select_only)
    table = image_table(dataset, args.categories)
    reasons = apply_limit(select_images(table, args), args.limit)
    summary = Counter({"images in annotation file": len(table)})
    for reason, count in reasons[reasons != ""].value_counts().items():
        summary[f"skipped: {reason}"] = int(count)
    selected_ids = reasons.index[reasons == ""].to_numpy()
    summary["selected"] = len(selected_ids)
    records, pixel_boxes = build_records(dataset, table, selected_ids)
    if args.balance:
        records, plan_rows = plan_balance(records, dataset, args, summary)
    if args.select_only:
        for record in records:  # as the full run would refuse them, without reading a file
            check_relative_name(record["file_name"])
        write_records(args.output / "selection.json", records, csv=False)
        summary["written to selection.json"] = len(records)
        print_summary(summary)
        if args.balance:
            report_plan(records, plan_rows, args)
        return
    records, paths = image_paths(records, args, summary)
    paths_by_id = {record["image_id"]: path for record, path in zip(records, paths)}
    captions = caption_records(records, paths, args, summary)
    raw = attach_captions(records, pixel_boxes, captions, summary)
    write_records(args.output / "blip2.json", raw)
    summary["written to blip2.json"] = len(raw)
    final = []
    for record in raw:
        text, reason = post_process(record["generated_text"], record, args)
        if text is None:
            summary[f"dropped: {reason}"] += 1
        else:
            final.append({**record, "generated_text": text})
    copy_selected(final, paths_by_id, dataset, args)
    write_records(args.output / "blip2_post.json", final)
    summary["written to blip2_post.json"] = len(final)
    print_summary(summary)
    if args.balance:
        report_plan(final, plan_rows, args)


if __name__ == "__main__":
    run_cli(main, build_parser())
