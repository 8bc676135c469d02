"""The quality scores of ``score_images.py``: ``OUT_DIR/<mode>/scores.jsonl`` and
``OUT_DIR/score_summary.csv``, with their writers and readers.

``scores.jsonl`` holds one JSON object per picture listed in the mode folder's manifest::

    {"file_name": "18_0042_1.png", "mode": "generation", "source_image_id": 42,
     "category_id": 18, "label": "dog",             # the record's (first) category
     "sha256": "<hex of the PNG's bytes>",        # a changed picture is scored again
     "boxes": [{"label": "dog", "category_id": 18, "box": [x0, y0, x1, y1],   # normalised
                "found": true, "best_iou": 0.81, "detector_score": 0.42,
                "region_clip": 0.27, "region_clip_percentile": 0.64}, ...],
     "box_recall": 1.0, "min_region_clip": 0.27, "caption_clip": 0.31,
     "extra_objects": 0, "region_clip_percentile": 0.64,
     "passed": true, "reasons": [],                 # e.g. ["box 2 (dog) not found"]
     "detections": [{"label": "dog", "box": [x0, y0, x1, y1], "score": 0.42}, ...],
     "detections_min_score": 0.05,                  # every detection scoring above it is listed
     "detector": "google/owlv2-base-patch16-ensemble",
     "clip_model": "openai/clip-vit-large-patch14",
     "safety_checker": "masterful/gligen-1-4-generation-text-box",   # absent when none ran
     "nsfw": false}                                 # true: the safety checker flagged it (reason "nsfw")

``region_clip``, ``caption_clip``, ``detections`` and ``nsfw`` are what the models measured; the other
fields are judged from them (``cocoaug.quality``), so new thresholds re-judge a file with no
model. A run that is killed leaves the pictures it finished in ``<mode>/scores.partial.<rank>.jsonl``
(same lines, not judged), which the next run folds into ``scores.jsonl``.

Types (``ScoreEntry``; field types of ``cocoaug/schema.py``): ``file_name`` a plain name (no folder,
``..`` or NUL); ``source_image_id`` and ``category_id`` ints >= 0; ``label`` a non-empty string; each
box's ``box`` normalised to [0, 1]; detection boxes four finite numbers; every score a finite number
(NaN and infinity are refused); ``extra_objects`` an int >= 0; ``passed`` true or false. A partial
file's lines lack the judged fields (``found``, ``passed``, ...); ``scores.jsonl``'s have them.

``score_summary.csv`` has one row per (category, mode) with ``SUMMARY_COLUMNS``; stage 1's
``--pass-rates`` reads it back with ``read_pass_rates``.
"""

import csv
import math
from pathlib import Path

import msgspec
import orjson

from cocoaug.atomic import write_bytes_atomic, write_csv_atomic
from cocoaug.errors import UserError
from cocoaug.jsonl import read_jsonl
from cocoaug.paths import require_file
from cocoaug.schema import BoxXYXYNorm, FiniteBox, FiniteFloat, Id, Label, check_name

SCORES_FILE = "scores.jsonl"
SCORES_CSV = "scores.csv"
SUMMARY_FILE = "score_summary.csv"
SUMMARY_COLUMNS = ["category_id", "category", "mode", "pictures", "passed", "pass_rate", "median_region_clip"]


class ScoredBox(msgspec.Struct, omit_defaults=True):
    """One box of a scores line: what it holds, what the models measured, and (judged) the verdict."""

    label: Label
    category_id: Id
    box: BoxXYXYNorm
    region_clip: FiniteFloat
    found: bool = msgspec.UNSET
    best_iou: FiniteFloat | None = msgspec.UNSET
    detector_score: FiniteFloat | None = msgspec.UNSET
    region_clip_percentile: FiniteFloat | None = msgspec.UNSET


class DetectionEntry(msgspec.Struct):
    """One detection the detector made, as stored for re-judging."""

    label: str
    box: FiniteBox
    score: FiniteFloat


class ScoreEntry(msgspec.Struct, omit_defaults=True):
    """The schema of one line of a partial scores file: what the models measured of one picture."""

    file_name: str
    mode: str
    source_image_id: Id
    category_id: Id
    label: Label
    sha256: str
    boxes: list[ScoredBox]
    caption_clip: FiniteFloat | None
    detections: list[DetectionEntry]
    detections_min_score: FiniteFloat = msgspec.UNSET
    detector: str = msgspec.UNSET
    clip_model: str = msgspec.UNSET
    safety_checker: str = msgspec.UNSET
    nsfw: bool = msgspec.UNSET
    box_recall: FiniteFloat = msgspec.UNSET
    min_region_clip: FiniteFloat | None = msgspec.UNSET
    extra_objects: Id = msgspec.UNSET
    region_clip_percentile: FiniteFloat | None = msgspec.UNSET
    passed: bool = msgspec.UNSET
    reasons: list[str] = msgspec.UNSET

    def __post_init__(self):
        check_name(self.file_name, plain=True)


class JudgedScoreEntry(ScoreEntry, kw_only=True):
    """The schema of one line of ``scores.jsonl``: a ScoreEntry with its verdict."""

    passed: bool
    reasons: list[str]


def scores_path(mode_dir) -> Path:
    """Where the scores of one stage-2 mode folder live."""
    return Path(mode_dir) / SCORES_FILE


def read_scores(mode_dir) -> dict[str, dict]:
    """The scores of one mode folder keyed by file name, each line checked by ``JudgedScoreEntry``;
    {} when it has no ``scores.jsonl``."""
    path = scores_path(mode_dir)
    if not path.is_file():
        return {}
    entries = read_jsonl(path, "the scores file", JudgedScoreEntry)
    return {entry["file_name"]: entry for entry in entries}


def write_scores(mode_dir, entries) -> Path:
    """Write one mode folder's scores atomically, one line per picture, sorted by file name."""
    path = scores_path(mode_dir)
    lines = [orjson.dumps(entry, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for entry in sorted(entries, key=lambda e: e["file_name"])]
    write_bytes_atomic(path, b"".join(lines))
    return path


def write_summary(path, rows: list[dict]):
    """Write ``score_summary.csv`` (rows keyed by ``SUMMARY_COLUMNS``)."""
    write_csv_atomic(path, rows, SUMMARY_COLUMNS)


def read_pass_rates(path) -> dict[str, float]:
    """Each category's pass rate over both modes, keyed by category name, from ``score_summary.csv``.

    A rate outside [0, 1], a missing column or a non-numeric count is a UserError naming the row.
    """
    path = require_file(path, "pass-rates file")
    try:
        return _read_pass_rates(path)
    except UnicodeDecodeError:
        raise UserError(f"the pass-rates file is not UTF-8 text: pass score_images.py's {SUMMARY_FILE}",
                        path) from None


def _read_pass_rates(path) -> dict[str, float]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("category", "pictures", "passed", "pass_rate") if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"pass-rates file lacks the column(s) {', '.join(missing)}; expected score_images.py's {SUMMARY_FILE}", path)
        totals: dict[str, list[int]] = {}
        for number, row in enumerate(reader, start=2):
            try:
                pictures, passed, rate = int(row["pictures"]), int(row["passed"]), float(row["pass_rate"])
            except (TypeError, ValueError):
                raise UserError(f"line {number} of the pass-rates file has a count or rate that is not a number", path) from None
            if not (0.0 <= rate <= 1.0) or math.isnan(rate) or not 0 <= passed <= pictures:
                raise UserError(f"line {number} of the pass-rates file has a pass rate outside [0, 1] ({row['pass_rate']})", path)
            total = totals.setdefault(row["category"], [0, 0])
            total[0] += pictures
            total[1] += passed
    return {name: passed / pictures for name, (pictures, passed) in totals.items() if pictures}
