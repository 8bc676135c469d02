"""Quality scores: check every picture stage 2 made against the boxes it was asked to fill.

Reads stage 2's OUT_DIR (``generation/`` and/or ``inpainting/``, each with ``manifest.jsonl``)
and the stage-1 records; for each picture an open-vocabulary detector (OWLv2 or Grounding DINO),
queried with the record's labels, says whether each box holds its object (``found``) and whether
objects of those labels were drawn outside every box (``extra_objects``), and CLIP scores each
box's crop against "a photo of a {label}" (``region_clip``) and the picture against its prompt
(``caption_clip``). A picture passes when every box is found, every ``region_clip`` reaches
``--min-region-clip`` and there are at most ``--max-extra-objects`` extra objects. When the
generator's model (the manifest's ``model``) has a ``safety_checker``, as the GLIGEN repositories
do, it runs on every picture as diffusers' pipeline would; a flagged picture fails with the
reason ``nsfw`` (``--safety-checker PATH`` names another checker, ``--no-safety-checker`` runs none). Writes

- ``OUT_DIR/<mode>/scores.jsonl``: one line per picture (format: ``cocoaug/scores.py``);
- ``OUT_DIR/scores.csv``: one row per picture; ``OUT_DIR/score_summary.csv``: per category and mode;
- ``OUT_DIR/picks_passed.json``: the passing pictures, a picks file (``cocoaug/picks.py``).

A rerun scores only pictures that are new or changed; new thresholds re-judge the stored scores
with no model loaded. Runs on one GPU, or several under ``torchrun`` / ``accelerate launch``.
Example::

    python score_images.py -g out -p out/blip2_post.json --batch-size 8
"""

import hashlib
import logging
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import orjson

from cocoaug.atomic import naming_os_errors, remove_stale_temp_files, write_csv_atomic, write_json_atomic
from cocoaug.cli import (add_batch_size, add_debug, add_device, add_generated, add_limit, add_overwrite, add_records,
                         finite_float, new_parser)
from cocoaug.errors import UserError, listed
from cocoaug.generated import MODES, mode_folders
from cocoaug.picks import PASSED_PICKS_FILE, picks_document
from cocoaug.quality import Detection, Thresholds, judge, percentiles
from cocoaug.generated import read_manifest
from cocoaug.jsonl import open_for_append, read_jsonl
from cocoaug.paths import check_inside
from cocoaug.progress import progress
from cocoaug.records import load_records
from cocoaug.runtime import barrier, check_model_source, distributed_rank, run_cli, texts_over_token_limit, wait_for_all_processes
from cocoaug.scorer import detector_family, model_type
from cocoaug.scores import SCORES_CSV, SUMMARY_FILE, ScoreEntry, read_scores, scores_path, write_scores, write_summary

log = logging.getLogger("cocoaug")

DEFAULT_DETECTOR = "google/owlv2-base-patch16-ensemble"
DEFAULT_CLIP = "openai/clip-vit-large-patch14"
# The default --min-detector-score of each detector family (see docs/scoring.md for why).
MIN_DETECTOR_SCORE = {"owlv2": 0.1, "grounding-dino": 0.3}
STORED_MIN_SCORE = 0.05  # detections down to this score are kept in scores.jsonl, for re-judging
STORED_DETECTIONS = 100  # at most this many per picture, the most confident
PARTIAL_GLOB = "scores.partial.*.jsonl"  # finished pictures of an unfinished run, one file per process
CSV_COLUMNS = ["mode", "file_name", "source_image_id", "category_id", "label", "passed", "reasons", "box_recall",
               "min_region_clip", "caption_clip", "extra_objects", "region_clip_percentile", "boxes"]


# ---------------------------------------------------------------- what a user may edit


def region_text(label: str) -> str:
    """What CLIP compares each box's crop with (X-Paste's and Fang et al.'s prompt)."""
    return f"a photo of a {label}"


def caption_text(entry: dict) -> str:
    """What CLIP compares the whole picture with: the prompt stage 2 drew it from."""
    return entry["prompt"]


# ---------------------------------------------------------------- arguments


def build_parser():
    parser = new_parser(__doc__)
    add_generated(parser, help="stage 2's OUT_DIR (holding generation/ and/or inpainting/); scores are written there")
    add_records(parser)
    parser.add_argument("--mode", choices=["generation", "inpainting", "both"], help="which mode folders to score (default: every one present)")
    parser.add_argument("--detector", default=DEFAULT_DETECTOR, metavar="ID_OR_FOLDER",
                        help=f"open-vocabulary detector: OWLv2 or Grounding DINO, hub id or local folder (default {DEFAULT_DETECTOR})")
    parser.add_argument("--clip-model", default=DEFAULT_CLIP, metavar="ID_OR_FOLDER", help=f"CLIP model, hub id or local folder (default {DEFAULT_CLIP})")
    parser.add_argument("--min-iou", type=finite_float, default=0.5, help="a box is found by a detection of its label overlapping it this much (default 0.5)")
    parser.add_argument("--min-detector-score", type=finite_float,
                        help="... and scoring at least this; also what counts as an extra object (default: 0.1 for OWLv2, 0.3 for Grounding DINO)")
    parser.add_argument("--min-region-clip", type=finite_float, default=0.21, help="lowest CLIP similarity of a box's crop to 'a photo of a {label}' (default 0.21)")
    parser.add_argument("--max-extra-objects", type=int, default=0, help="detections of the record's labels outside every box a picture may have (default 0)")
    safety = parser.add_mutually_exclusive_group()
    safety.add_argument("--safety-checker", metavar="ID_OR_FOLDER",
                        help="Stable Diffusion safety checker to run on every picture: a pipeline (with safety_checker/ and "
                             "feature_extractor/) or a folder of the checker and its preprocessor_config.json "
                             "(default: the generator model's own, if it has one)")
    safety.add_argument("--no-safety-checker", action="store_true", help="run no safety checker")
    add_batch_size(parser, 8, "pictures per detector batch, per process")
    add_device(parser)
    add_limit(parser, "score only the first N pictures (by file name) of each mode folder")
    add_overwrite(parser, "score every picture again, even unchanged ones")
    add_debug(parser)
    return parser


def check_args(args) -> Thresholds:
    """Refuse impossible flag values before anything is read; the thresholds of the pass rule."""
    if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        raise UserError("must be a positive integer", f"--batch-size {args.batch_size}" if args.batch_size < 1 else f"--limit {args.limit}")
    if not 0.0 <= args.min_iou <= 1.0:
        raise UserError("must be between 0 and 1", f"--min-iou {args.min_iou}")
    if args.max_extra_objects < 0:
        raise UserError("must not be negative", f"--max-extra-objects {args.max_extra_objects}")
    for model in (args.detector, args.clip_model) + ((args.safety_checker,) if args.safety_checker else ()):
        check_model_source(model)
    family = detector_family(args.detector)
    if family is None and (Path(args.detector) / "config.json").is_file():
        raise UserError(f"not a zero-shot object detector (model_type {model_type(args.detector)!r}); --detector takes OWLv2 or "
                        "Grounding DINO", args.detector)
    min_score = args.min_detector_score
    if min_score is None:
        if family is None:
            raise UserError("no default --min-detector-score for this detector: give one", args.detector)
        min_score = MIN_DETECTOR_SCORE[family]
    if not 0.0 <= min_score <= 1.0:
        raise UserError("must be between 0 and 1", f"--min-detector-score {min_score}")
    return Thresholds(args.min_iou, min_score, args.min_region_clip, args.max_extra_objects)


# ---------------------------------------------------------------- the stage's steps


@dataclass
class Picture:
    """One picture to judge: where it is, its manifest entry and its record."""

    mode: str
    path: Path
    entry: dict
    record: dict
    sha256: str = ""
    safety_checker: str | None = None  # what judges it NSFW or not (see assign_safety_checkers)

    @property
    def file_name(self) -> str:
        return self.path.name


def scoring_folders(generated, mode: str | None) -> tuple[Path, dict[str, Path]]:
    """Stage 2's OUT_DIR (where the run-wide outputs go) and the mode folders to score.

    A mode folder given as ``-g`` stands for itself inside its OUT_DIR. A folder of pictures that
    is not stage 2's is refused: the scores would be written among the pictures they judge.
    """
    folders = mode_folders(generated)
    given = Path(generated)
    if set(folders) <= set(MODES) and all(folder.parent == given for folder in folders.values()):
        out_dir = given
    elif len(folders) == 1 and next(iter(folders)) in MODES:
        out_dir = given.resolve().parent
    else:
        raise UserError("not stage 2's OUT_DIR (no generation/ or inpainting/ folder): scores.csv and picks would be "
                        "written into the folder of input pictures", generated)
    wanted = MODES if mode in (None, "both") else (mode,)
    chosen = {name: folder for name, folder in folders.items() if name in wanted}
    if not chosen:
        raise UserError(f"no {mode}/ folder of generated pictures", generated)
    return out_dir, chosen


def refuse_outputs_over_inputs(out_dir: Path, folders: dict[str, Path], records_path):
    """The records file must not be one of the files this run writes."""
    outputs = [out_dir / name for name in (SCORES_CSV, SUMMARY_FILE, PASSED_PICKS_FILE)]
    outputs += [scores_path(folder) for folder in folders.values()]
    records = os.path.realpath(records_path)
    for output in outputs:
        if os.path.realpath(output) == records:
            raise UserError("the records file is one of the files score_images.py writes: give stage 1's blip2_post.json", records_path)


def plan_pictures(mode: str, folder: Path, records_by_id: dict, limit: int | None) -> list[Picture]:
    """The pictures of one mode folder's manifest with their records; mismatches are UserErrors."""
    manifest = read_manifest(folder)
    names = sorted(manifest)[:limit]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{len(missing)} picture(s) of manifest.jsonl are missing: {listed(missing)}", folder)
    pictures = []
    for name in names:
        entry = manifest[name]
        record = records_by_id.get(entry.get("source_image_id"))
        if record is None:
            raise UserError(f"{name}: its source_image_id {entry.get('source_image_id')!r} has no record; "
                            "are these stage 1's records for this stage-2 folder?", folder / "manifest.jsonl")
        boxes = entry.get("boxes", record["bbox"])
        if len(boxes) != len(record["bbox"]) or any(abs(a - b) > 1e-6 for box, rec in zip(boxes, record["bbox"]) for a, b in zip(box, rec)):
            raise UserError(f"{name}: its boxes differ from those of the record for image_id {record['image_id']}; "
                            "are these stage 1's records for this stage-2 folder?", folder / "manifest.jsonl")
        pictures.append(Picture(mode, folder / name, {**entry, "prompt": entry.get("prompt", record["generated_text"])}, record))
    return pictures


def assign_safety_checkers(pictures: list[Picture], args) -> list[str]:
    """Give each picture its safety checker: --safety-checker, else its generator's own (the manifest's
    ``model``), else none; --no-safety-checker: none. Returns the generator models without one."""
    from cocoaug.scorer import safety_checker_of

    if args.no_safety_checker:
        return []
    found: dict[str | None, str | None] = {}
    for picture in pictures:
        model = picture.entry.get("model")
        if args.safety_checker:
            picture.safety_checker = args.safety_checker
            continue
        if model not in found:
            found[model] = safety_checker_of(model) if model else None
        picture.safety_checker = found[model]
    return [model or "(not in the manifest)" for model, checker in found.items() if checker is None]


def read_partial_scores(folder: Path) -> dict[str, dict]:
    """The pictures an interrupted run finished (its partial files, lines checked by ``ScoreEntry``);
    a last line cut short by a kill is dropped with a warning, and its picture is scored again."""
    scores = {}
    for path in sorted(folder.glob(PARTIAL_GLOB)):
        for entry in read_jsonl(path, "the partial scores file", ScoreEntry):
            scores[entry["file_name"]] = entry
    return scores


def stored_scores(folder: Path) -> dict[str, dict]:
    """The scores of a mode folder: ``scores.jsonl`` and, over it, what an interrupted run finished."""
    return {**read_scores(folder), **read_partial_scores(folder)}


def is_current(stored: dict | None, picture: Picture, args, thresholds: Thresholds) -> bool:
    """Whether a stored score still describes ``picture`` as this run would measure it."""
    if stored is None or args.overwrite:
        return False
    same_boxes = [(b["label"], b["box"]) for b in stored["boxes"]] == list(zip(picture.record["labels"], picture.record["bbox"]))
    return (stored.get("sha256") == picture.sha256 and same_boxes and stored.get("detector") == args.detector
            and stored.get("clip_model") == args.clip_model and stored.get("safety_checker") == picture.safety_checker
            and stored.get("detections_min_score", 1.0) <= thresholds.min_detector_score)


def warn_truncated_texts(pictures: list[Picture], args):
    """Say, before any model loads, which OWLv2 queries and CLIP texts are longer than their model takes: they are truncated."""
    from cocoaug.scorer import owl_query

    labels = [label for picture in pictures for label in picture.record["labels"]]
    checks = [("CLIP text", args.clip_model, [region_text(label) for label in labels] + [caption_text(p.entry) for p in pictures])]
    if detector_family(args.detector) == "owlv2":
        checks.insert(0, ("OWLv2 query", args.detector, [owl_query(label) for label in labels]))
    for kind, model, texts in checks:
        overlong, limit = texts_over_token_limit(model, texts)
        if overlong:
            log.warning("%d %s(s) are longer than the model's %d tokens and are truncated to them, e.g. %r",
                        len(overlong), kind, limit, overlong[0][:120])


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def measure(pictures: list[Picture], scorer, safety_checkers: dict, args, partial_path: Path, rank: int):
    """Run the models on ``pictures`` batch by batch, appending each finished picture to ``partial_path``;
    ``safety_checkers`` holds a loaded SafetyChecker for each picture's ``safety_checker``."""
    from cocoaug.images import image_size, open_rgb

    by_size: dict[tuple[int, int], list[Picture]] = {}
    for picture in pictures:
        size = (picture.entry["width"], picture.entry["height"]) if "width" in picture.entry else image_size(picture.path)
        by_size.setdefault(scorer.batch_key(*size), []).append(picture)
    desc = f"scoring {pictures[0].mode}" + (f" (rank {rank})" if rank else "")
    # A write to an open file (or its flush at close) names no path: naming_os_errors has a full disk name the file.
    with naming_os_errors(partial_path), progress(total=len(pictures), desc=desc, unit="picture") as bar, \
            open_for_append(partial_path) as partial:
        for group in by_size.values():
            for start in range(0, len(group), args.batch_size):
                batch = group[start:start + args.batch_size]
                images = [open_rgb(picture.path) for picture in batch]
                measured = scorer.measure(images, [p.record["bbox"] for p in batch], [p.record["labels"] for p in batch],
                                          [caption_text(p.entry) for p in batch])
                nsfw = {}
                for source in {p.safety_checker for p in batch} - {None}:
                    mine = [k for k, p in enumerate(batch) if p.safety_checker == source]
                    nsfw.update(zip(mine, safety_checkers[source].flags([images[k] for k in mine])))
                for k, (picture, result) in enumerate(zip(batch, measured)):
                    entry = raw_entry(picture, result, args.detector, args.clip_model, nsfw.get(k))
                    partial.write(orjson.dumps(entry) + b"\n")
                partial.flush()
                os.fsync(partial.fileno())
                bar.update(len(batch))


def raw_entry(picture: Picture, result, detector: str, clip_model: str, nsfw: bool | None) -> dict:
    """A scores.jsonl line before judging: what the models measured (``nsfw``: None when no safety checker ran)."""
    record = picture.record
    boxes = [{"label": label, "category_id": category_id, "box": box, "region_clip": clip}
             for label, category_id, box, clip in zip(record["labels"], record["category_ids"], record["bbox"], result.region_clips)]
    return {
        "file_name": picture.file_name, "mode": picture.mode, "source_image_id": record["image_id"],
        "category_id": record["category_id"], "label": record["label"], "sha256": picture.sha256,
        "boxes": boxes, "caption_clip": result.caption_clip,
        "detections": [{"label": d.label, "box": list(d.box), "score": d.score} for d in result.detections],
        "detections_min_score": result.detections_min_score,
        "detector": detector, "clip_model": clip_model,
        **({"safety_checker": picture.safety_checker, "nsfw": nsfw} if nsfw is not None else {}),
    }


def judge_entries(entries: list[dict], thresholds: Thresholds) -> list[dict]:
    """Judge every stored picture with ``thresholds``, then rank each box among its category's in this mode."""
    for entry in entries:
        detections = [Detection(d["label"], tuple(d["box"]), d["score"]) for d in entry["detections"]]
        verdict = judge([b["box"] for b in entry["boxes"]], [b["label"] for b in entry["boxes"]], detections,
                        [b["region_clip"] for b in entry["boxes"]], thresholds, nsfw=entry.get("nsfw", False))
        for box, judged in zip(entry["boxes"], verdict.pop("boxes")):
            box.update(judged)
        entry.update(verdict)
    by_category: dict[int, list[dict]] = {}
    for entry in entries:
        for box in entry["boxes"]:
            by_category.setdefault(box["category_id"], []).append(box)
    for boxes in by_category.values():
        for box, rank in zip(boxes, percentiles([b["region_clip"] for b in boxes])):
            box["region_clip_percentile"] = float(rank)
    for entry in entries:
        entry["region_clip_percentile"] = min((b["region_clip_percentile"] for b in entry["boxes"]), default=None)
    return entries


def summary_rows(entries_by_mode: dict[str, list[dict]]) -> list[dict]:
    """Per (category, mode): pictures, how many passed, the pass rate, the median region_clip of its boxes."""
    rows = []
    for mode, entries in entries_by_mode.items():
        by_category: dict[int, list[dict]] = {}
        for entry in entries:
            by_category.setdefault(entry["category_id"], []).append(entry)
        for category_id, group in sorted(by_category.items()):
            clips = [b["region_clip"] for e in group for b in e["boxes"] if b["category_id"] == category_id]
            passed = sum(e["passed"] for e in group)
            rows.append({"category_id": category_id, "category": group[0]["label"], "mode": mode, "pictures": len(group),
                         "passed": passed, "pass_rate": round(passed / len(group), 4),
                         "median_region_clip": round(statistics.median(clips), 4) if clips else ""})
    return rows


def print_summary(rows: list[dict]):
    header = f"{'category':<20} {'mode':<11} {'pictures':>8} {'passed':>7} {'pass rate':>9} {'median region_clip':>18}"
    print(header)
    for row in rows:
        print(f"{row['category'][:20]:<20} {row['mode']:<11} {row['pictures']:>8} {row['passed']:>7} "
              f"{row['pass_rate']:>9.2f} {row['median_region_clip']:>18}")


def write_outputs(out_dir: Path, folders: dict[str, Path], thresholds: Thresholds, args) -> dict:
    """Fold every process's partial scores into scores.jsonl, judge, and write the run-wide files.

    Files whose content would not change are left alone, so a rerun with nothing new touches nothing.
    """
    entries_by_mode, unchanged = {}, True
    for mode, folder in folders.items():
        listed_names = set(read_manifest(folder))
        before = read_scores(folder)
        entries = [entry for name, entry in stored_scores(folder).items() if name in listed_names]  # fresh objects: judged in place
        entries_by_mode[mode] = judge_entries(sorted(entries, key=lambda e: e["file_name"]), thresholds)
        if before != {entry["file_name"]: entry for entry in entries_by_mode[mode]}:
            write_scores(folder, entries_by_mode[mode])
            unchanged = False
        for partial in folder.glob(PARTIAL_GLOB):
            partial.unlink()
    every = [entry for entries in entries_by_mode.values() for entry in entries]
    rows = summary_rows(entries_by_mode)
    picks = picks_document(
        [(e["mode"], e["file_name"]) for e in every if e["passed"]], out_dir, source="score_images.py", modes=sorted(folders),
        scores=[str(scores_path(folder)) for folder in folders.values()],
        thresholds={"min_iou": thresholds.min_iou, "min_detector_score": thresholds.min_detector_score,
                    "min_region_clip": thresholds.min_region_clip, "max_extra_objects": thresholds.max_extra_objects},
        detector=args.detector, clip_model=args.clip_model)
    picks_path = out_dir / PASSED_PICKS_FILE
    unchanged = unchanged and picks_path.is_file() and orjson.loads(picks_path.read_bytes()) == picks
    if not (unchanged and (out_dir / SCORES_CSV).is_file() and (out_dir / SUMMARY_FILE).is_file()):
        csv_rows = [{**e, "boxes": [{k: b[k] for k in ("label", "found", "region_clip")} for b in e["boxes"]]} for e in every]
        write_csv_atomic(out_dir / SCORES_CSV, csv_rows, CSV_COLUMNS)
        write_summary(out_dir / SUMMARY_FILE, rows)
        write_json_atomic(picks_path, picks)
    else:
        log.info("scores, summary and picks are up to date: nothing rewritten")
    print_summary(rows)
    return {"pictures": len(every), "passed": sum(e["passed"] for e in every), "checked": sum("nsfw" in e for e in every),
            "nsfw": sum(bool(e.get("nsfw")) for e in every)}


def remove_own_temp_files(out_dir: Path, folders: dict[str, Path]):
    """Remove the temp files a killed run left of this stage's outputs (stage 2's files beside them are not ours)."""
    removed = remove_stale_temp_files(out_dir, {SCORES_CSV, SUMMARY_FILE, PASSED_PICKS_FILE})
    removed += sum(remove_stale_temp_files(folder, {scores_path(folder).name}) for folder in folders.values())
    if removed:
        log.info("removed %d temp file(s) left by an interrupted run", removed)


def main(args):
    # 1. Check inputs
    thresholds = check_args(args)
    rank, world_size = distributed_rank()
    out_dir, folders = scoring_folders(args.generated, args.mode)
    refuse_outputs_over_inputs(out_dir, folders, args.records)
    records = load_records(args.records)
    records_by_id = {record["image_id"]: record for record in records}
    pictures_by_mode = {mode: plan_pictures(mode, folder, records_by_id, args.limit) for mode, folder in folders.items()}
    unchecked = assign_safety_checkers([picture for pictures in pictures_by_mode.values() for picture in pictures], args)

    # 2. Find what needs the models: new or changed pictures, or all with --overwrite
    todo = {}
    for mode, pictures in pictures_by_mode.items():
        stored = stored_scores(folders[mode])
        for picture in pictures:
            picture.sha256 = sha256_of(picture.path)
        todo[mode] = [p for p in pictures if not is_current(stored.get(p.file_name), p, args, thresholds)][rank::world_size]

    barrier(world_size)  # every process has read the stored scores before any writes to them

    # 3. Measure them, appending each batch to this process's partial file
    if any(todo.values()):
        from cocoaug.scorer import SafetyChecker, Scorer

        warn_truncated_texts([picture for pictures in todo.values() for picture in pictures], args)
        if unchecked and rank == 0:
            log.warning("the generator model(s) %s: not found here or without a safety_checker; their pictures are not checked "
                        "for NSFW content (--safety-checker names a checker)", ", ".join(unchecked))
        scorer = Scorer.load(args.detector, args.clip_model, args.device, args.dtype,
                             stored_min_score=min(STORED_MIN_SCORE, thresholds.min_detector_score), max_detections=STORED_DETECTIONS)
        sources = {picture.safety_checker for pictures in todo.values() for picture in pictures} - {None}
        safety_checkers = {source: SafetyChecker(source, scorer.device, scorer.dtype) for source in sorted(sources)}
        for mode, pictures in todo.items():
            if pictures:
                partial_path = check_inside(out_dir, folders[mode] / f"scores.partial.{rank}.jsonl")
                measure(pictures, scorer, safety_checkers, args, partial_path, rank)

    # 4. Judge everything stored with this run's thresholds and write the outputs (rank 0, after the others)
    wait_for_all_processes(world_size)
    if rank == 0:
        remove_own_temp_files(out_dir, folders)
    scored = sum(len(p) for p in todo.values())
    prefix = f"rank {rank}: " if world_size > 1 else ""
    if rank != 0:
        print(f"{prefix}scored {scored}")
        return
    totals = write_outputs(out_dir, folders, thresholds, args)
    planned = sum(len(p) for p in pictures_by_mode.values())
    print(f"{prefix}scored {scored}" + (f", reused {planned - scored} unchanged" if world_size == 1 else "")
          + f"; {totals['passed']} of {totals['pictures']} pictures passed -> {out_dir / PASSED_PICKS_FILE}")
    if totals["checked"]:
        print(f"safety checker: {totals['nsfw']} of {totals['checked']} checked pictures flagged (reason nsfw)")


if __name__ == "__main__":
    run_cli(main, build_parser())
