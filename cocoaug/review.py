"""The review page of stage 3: ``BOXES_DIR/review.html``, one self-contained file in which a user
keeps or rejects the generated pictures.

The page is ``review_page.html`` (vanilla JS and CSS, no network) with the run's data embedded as
JSON. It loads its pictures by paths relative to BOXES_DIR, so that it works from ``file://``,
from a copied BOXES_DIR and through ``cocoaug.review_server``:

- ``<mode>/<file_name>``: the boxed copy of a generated picture (stage 3 draws it there);
- ``original/<image_id>.jpg``: the original with its boxes (drawn when stage 3 gets ``-i``).

The clean pictures (zoomed view, key ``b``) come from the server's ``clean/`` and ``source/``
routes when served, and from relative paths to GENERATED_DIR and IMAGES_DIR from ``file://``.

Each picture of the embedded data is a list, to keep 50,000 pictures to a few megabytes::

    [mode index, file_name, variant, passed (1, 0 or null), reasons, boxes, quality, kept at start (1/0)]

where ``boxes`` is ``[[found (1, 0 or null), region_clip or null], ...]`` and ``quality`` sorts the
pictures (null without scores): 1 for passed, plus the share of boxes found, plus the lowest
region score.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from cocoaug.atomic import write_bytes_atomic

REVIEW_PAGE = "review.html"
ORIGINALS_SUBDIR = "original"  # BOXES_DIR/original/<image_id>.jpg: the originals with their boxes
CARDS_PER_PAGE = 100
TEMPLATE = Path(__file__).with_name("review_page.html")
DATA_MARKER = "__REVIEW_DATA__"


@dataclass(frozen=True)
class ReviewPicture:
    """One generated picture as the page shows it (``score`` is its scores.jsonl line, or None)."""

    mode: str
    file_name: str
    source_image_id: int
    variant: int
    score: dict | None


def original_name(image_id: int) -> str:
    """Where the original with its boxes lies, relative to BOXES_DIR."""
    return f"{ORIGINALS_SUBDIR}/{image_id}.jpg"


def picture_quality(score: dict | None) -> float | None:
    """The number the page sorts by: passed (1/0) + share of boxes found + lowest region score."""
    if score is None:
        return None
    # ``score`` was read through cocoaug.scores.JudgedScoreEntry: every box has a finite region_clip.
    boxes = score["boxes"]
    recall = score.get("box_recall")
    if recall is None:
        recall = sum(1 for box in boxes if box.get("found")) / len(boxes) if boxes else 0.0
    lowest = score.get("min_region_clip")
    if lowest is None:
        lowest = min((box["region_clip"] for box in boxes), default=0.0)
    return round(float(bool(score.get("passed"))) + float(recall) + float(lowest), 4)


def _flag(value) -> int | None:
    return None if value is None else int(bool(value))


def _picture_row(picture: ReviewPicture, mode_index: int, kept: bool) -> list:
    score = picture.score
    if score is None:
        return [mode_index, picture.file_name, picture.variant, None, [], [], None, int(kept)]
    boxes = [[_flag(box.get("found")), round(box["region_clip"], 3)] for box in score["boxes"]]
    return [mode_index, picture.file_name, picture.variant, _flag(score.get("passed")), [str(r) for r in score.get("reasons") or []],
            boxes, picture_quality(score), int(kept)]


def relative_url(target, boxes_dir) -> str:
    """``target`` as a relative URL from BOXES_DIR (for the clean pictures seen from ``file://``)."""
    return Path(os.path.relpath(os.path.abspath(target), os.path.abspath(boxes_dir))).as_posix()


def page_data(pictures: list[ReviewPicture], records_by_id: dict, *, generated_dir, boxes_dir, clean_dirs: dict,
              images_dir=None, originals: set = frozenset(), kept_at_start: set = frozenset(),
              categories: dict | None = None) -> dict:
    """The JSON object embedded in the page: one card per source image, its pictures in (mode, name) order.

    ``kept_at_start`` holds the (mode, file_name) pairs of picks_passed.json; ``originals`` the image
    ids whose original with boxes was drawn; ``categories`` maps category ids to names.
    """
    modes = sorted({picture.mode for picture in pictures})
    mode_index = {mode: k for k, mode in enumerate(modes)}
    by_source: dict[int, list] = {}
    for picture in sorted(pictures, key=lambda p: (p.mode, p.file_name)):
        by_source.setdefault(picture.source_image_id, []).append(picture)
    names = dict(categories or {})
    cards = []
    for image_id in sorted(by_source):
        record = records_by_id[image_id]
        for category_id, label in zip(record["category_ids"], record["labels"]):
            names.setdefault(category_id, label)
        cards.append({
            "id": image_id,
            "file": record["file_name"],
            "width": record.get("width"),
            "height": record.get("height"),
            "original": original_name(image_id) if image_id in originals else None,
            "prompt": record.get("generated_text") or record.get("prompt") or "",
            "category_id": record.get("category_id", record["category_ids"][0] if record["category_ids"] else None),
            "labels": record["labels"],
            "variants": record.get("variants"),  # an int: the records were read through cocoaug.records.Record
            "pictures": [_picture_row(p, mode_index[p.mode], (p.mode, p.file_name) in kept_at_start) for p in by_source[image_id]],
        })
    return {
        "version": 1,
        "generated_dir": os.path.realpath(generated_dir),
        "page_size": CARDS_PER_PAGE,
        "modes": modes,
        "categories": {str(k): v for k, v in sorted(names.items())},
        "clean_dirs": {mode: relative_url(folder, boxes_dir) for mode, folder in clean_dirs.items() if mode in mode_index},
        "images_dir": relative_url(images_dir, boxes_dir) if images_dir is not None else None,
        "has_scores": any(p.score is not None for p in pictures),
        "has_plan": any(card["variants"] is not None for card in cards),
        "passed_picks": bool(kept_at_start),
        "cards": cards,
    }


def render_page(data: dict) -> bytes:
    """The page's HTML with ``data`` embedded; every ``<`` of the JSON is escaped so no text ends the script."""
    template = TEMPLATE.read_text(encoding="utf-8")
    before, after = template.split(DATA_MARKER)
    payload = orjson.dumps(data).replace(b"<", b"\\u003c")
    return before.encode("utf-8") + payload + after.encode("utf-8")


def write_review_page(boxes_dir, data: dict) -> Path:
    """Write BOXES_DIR/review.html atomically; a page that would not change is left as it is (a rerun remakes nothing)."""
    path = Path(boxes_dir) / REVIEW_PAGE
    html = render_page(data)
    if not (path.is_file() and path.read_bytes() == html):
        write_bytes_atomic(path, html)
    return path


def read_page_data(page_path) -> dict:
    """The JSON embedded in a review page (for the server and the tests)."""
    html = Path(page_path).read_bytes()
    start = html.index(b'<script type="application/json" id="review-data">') + len(b'<script type="application/json" id="review-data">')
    end = html.index(b"</script>", start)
    return orjson.loads(html[start:end])
