"""The picks file: which generated pictures a user keeps, read by stage 4.

Written by ``score_images.py`` (``picks_passed.json``), by the review page ("Export") and by
its server (``BOXES_DIR/picks.json``); read by the review page and by
``finalize_selected_images.py --picks``. One JSON object::

    {"format": "cocoaug-picks", "version": 1,
     "generated_dir": "/abs/path/out",          # stage 2's OUT_DIR the picks belong to
     "source": "score_images.py",               # who wrote it, plus any provenance keys
     "picks": [{"mode": "generation", "file_name": "18_0042.png"}, ...]}

``picks`` is sorted by (mode, file_name) and holds each picture once. Types (``PicksDocument``):
``format`` the string above (optional), ``version`` an int, ``generated_dir`` a string with no NUL
byte, each pick's ``mode`` and ``file_name`` plain names (no folder, ``..`` or NUL byte). Provenance
keys (the scores file, the thresholds, ...) are free-form and kept as they are.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from cocoaug.atomic import write_json_atomic
from cocoaug.coco import read_json
from cocoaug.errors import UserError, listed
from cocoaug.schema import check_name, convert

PICKS_FORMAT = "cocoaug-picks"
PICKS_VERSION = 1
PASSED_PICKS_FILE = "picks_passed.json"  # score_images.py's, in stage 2's OUT_DIR
REVIEW_PICKS_FILE = "picks.json"  # the review server's, in BOXES_DIR


@dataclass(frozen=True, order=True)
class Pick:
    """One kept picture: its stage-2 mode folder and its file name there."""

    mode: str
    file_name: str


class PickEntry(msgspec.Struct):
    """The schema of one entry of ``picks``."""

    mode: str
    file_name: str

    def __post_init__(self):
        check_name(self.mode, "mode", plain=True)
        check_name(self.file_name, plain=True)


class PicksDocument(msgspec.Struct):
    """The schema of a picks file (see the module's docstring); other keys are provenance."""

    picks: list[PickEntry]
    format: Literal["cocoaug-picks"] = PICKS_FORMAT
    version: int = PICKS_VERSION
    generated_dir: str | None = None

    def __post_init__(self):
        if self.generated_dir is not None and "\0" in self.generated_dir:
            raise ValueError(f"generated_dir holds a NUL byte, got {self.generated_dir!r}")


@dataclass
class PicksFile:
    """A parsed picks file."""

    generated_dir: str
    picks: list[Pick]
    provenance: dict


def picks_document(picks, generated_dir, **provenance) -> dict:
    """The JSON object of a picks file (``picks`` are Pick objects or (mode, file_name) pairs)."""
    unique = sorted({Pick(*pick) if not isinstance(pick, Pick) else pick for pick in picks})
    return {
        "format": PICKS_FORMAT,
        "version": PICKS_VERSION,
        "generated_dir": os.path.realpath(generated_dir),
        **provenance,
        "picks": [{"mode": pick.mode, "file_name": pick.file_name} for pick in unique],
    }


def write_picks(path, picks, generated_dir, **provenance) -> dict:
    """Write a picks file atomically; returns the object written."""
    document = picks_document(picks, generated_dir, **provenance)
    write_json_atomic(path, document)
    return document


def parse_picks(data, source) -> PicksFile:
    """Check a picks object (parsed JSON) through ``PicksDocument``; errors name ``source``, the pick and the field."""
    if not isinstance(data, dict) or not isinstance(data.get("picks"), list):
        raise UserError('not a picks file: expected a JSON object {"picks": [{"mode", "file_name"}, ...]}', source)
    if data.get("format", PICKS_FORMAT) != PICKS_FORMAT:
        raise UserError(f"not a picks file: format is {data.get('format')!r}, expected {PICKS_FORMAT!r}", source)
    document = convert(data, PicksDocument, source)
    picks = [Pick(entry.mode, entry.file_name) for entry in document.picks]
    provenance = {key: value for key, value in data.items() if key not in ("format", "version", "generated_dir", "picks")}
    return PicksFile(document.generated_dir or "", sorted(set(picks)), provenance)


def read_picks(path) -> PicksFile:
    """Read and validate a picks file."""
    return parse_picks(read_json(path, "picks file"), Path(path))


def check_picks(picks_file: PicksFile, generated_dir, available, source):
    """Refuse picks made for another stage-2 folder, or naming pictures that are not in ``available``.

    ``available`` is the set of (mode, file_name) pairs stage 2 made in ``generated_dir``.
    """
    here = os.path.realpath(generated_dir)
    if picks_file.generated_dir and os.path.realpath(picks_file.generated_dir) != here:
        raise UserError(
            f"the picks file was made for the stage-2 folder {picks_file.generated_dir}, not {here}", source
        )
    unknown = [f"{pick.mode}/{pick.file_name}" for pick in picks_file.picks if (pick.mode, pick.file_name) not in available]
    if unknown:
        raise UserError(f"{len(unknown)} pick(s) name pictures that stage 2 did not make: {listed(unknown)}", source)
