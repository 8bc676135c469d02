"""The review page of stage 3: ``BOXES_DIR/review.html`` and its data in ``BOXES_DIR/review_data/``,
in which a user keeps or rejects the generated pictures.

The page is ``review_page.html`` (vanilla JS and CSS, no network). It loads its pictures by paths
relative to BOXES_DIR, so that it works from ``file://``, from a copied BOXES_DIR and through
``cocoaug.review_server``:

- ``<mode>/<file_name>``: the boxed copy of a generated picture (stage 3 draws it there);
- ``original/<image_id>.jpg``: the original with its boxes (drawn when stage 3 gets ``-i``).

The clean pictures (zoom view, key ``b``) come from the server's ``clean/`` and ``source/``
routes when served, and from relative paths to GENERATED_DIR and IMAGES_DIR from ``file://``.

So that the first card shows at once at 100,000 pictures, the page embeds only an index (what
filters, sorts, counts and bulk decisions need) and loads the rest one page of cards at a time
from ``review_data/cards-NNNN.js`` (a script calling ``cocoaugCards(NNNN, [...])``: ``<script src>``
works from ``file://``, where ``fetch`` does not). ``page_data`` builds the whole object below;
``write_review_page`` splits it into the embedded index and the sidecars and ``read_page_data``
joins them again. Each picture is a list, to keep the index small::

    [mode index, file_name, variant, passed (1, 0 or null), reasons, boxes, quality, kept at start (1/0), chips]

where ``boxes`` is ``[[found (1, 0 or null), region_clip or null], ...]``, ``quality`` sorts the
pictures (null without scores: 1 for passed, plus the share of boxes found, plus the lowest region
score) and ``chips`` is ``[box_recall, min_region_clip, boxes found, boxes, boxes under the CLIP
threshold, extra objects, nsfw (1/0)]`` (null without scores): the short reasons the page shows.
In the index a card is ``[id, category_id, variants, file, pictures]`` and a picture keeps every field but
``reasons`` and ``boxes``, which its card's sidecar holds with the card's other fields.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

import orjson

from cocoaug.atomic import write_bytes_atomic
from cocoaug.errors import UserError

REVIEW_PAGE = "review.html"
DATA_SUBDIR = "review_data"  # BOXES_DIR/review_data/cards-NNNN.js: one page of cards each
ORIGINALS_SUBDIR = "original"  # BOXES_DIR/original/<image_id>.jpg: the originals with their boxes
CARDS_PER_PAGE = 100
TEMPLATE = Path(__file__).with_name("review_page.html")
DATA_MARKER = "__REVIEW_DATA__"
DETAIL_FIELDS = ("width", "height", "original", "prompt", "labels")  # a card's fields that live in its sidecar
SIDECAR_CALL = re.compile(rb"^cocoaugCards\((\d+), (.*)\);\n$", re.DOTALL)


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


def sidecar_name(chunk: int) -> str:
    """Where the cards ``chunk * CARDS_PER_PAGE`` to ``(chunk + 1) * CARDS_PER_PAGE - 1`` lie, relative to BOXES_DIR."""
    return f"{DATA_SUBDIR}/cards-{chunk:04d}.js"


def box_recall(score: dict) -> float:
    recall = score.get("box_recall")
    if recall is None:
        boxes = score["boxes"]
        recall = sum(1 for box in boxes if box.get("found")) / len(boxes) if boxes else 0.0
    return float(recall)


def lowest_region_clip(score: dict) -> float:
    lowest = score.get("min_region_clip")
    if lowest is None:
        lowest = min((box["region_clip"] for box in score["boxes"]), default=0.0)
    return float(lowest)


def picture_quality(score: dict | None) -> float | None:
    """The number the page sorts by: passed (1/0) + share of boxes found + lowest region score."""
    if score is None:
        return None
    # ``score`` was read through cocoaug.scores.JudgedScoreEntry: every box has a finite region_clip.
    return round(float(bool(score.get("passed"))) + box_recall(score) + lowest_region_clip(score), 4)


def reason_chips(score: dict | None) -> list | None:
    """``[box_recall, min_region_clip, found, boxes, CLIP low, extra objects, nsfw]`` of a scores line (see the module doc).

    The CLIP threshold is not stored per line, so "CLIP low" counts the reasons that name a box's region_clip
    (cocoaug.quality.judge writes one per box under the threshold).
    """
    if score is None:
        return None
    reasons = [str(r) for r in score.get("reasons") or []]
    boxes = score["boxes"]
    clip_low = sum(1 for r in reasons if "region_clip" in r)
    extra = int(score.get("extra_objects") or 0) if any("extra object" in r for r in reasons) else 0
    nsfw = int(any("nsfw" in r.lower() for r in reasons))
    return [round(box_recall(score), 3), round(lowest_region_clip(score), 3), sum(1 for b in boxes if b.get("found")),
            len(boxes), clip_low, extra, nsfw]


def _flag(value) -> int | None:
    return None if value is None else int(bool(value))


def _picture_row(picture: ReviewPicture, mode_index: int, kept: bool) -> list:
    score = picture.score
    if score is None:
        return [mode_index, picture.file_name, picture.variant, None, [], [], None, int(kept), None]
    boxes = [[_flag(box.get("found")), round(box["region_clip"], 3)] for box in score["boxes"]]
    return [mode_index, picture.file_name, picture.variant, _flag(score.get("passed")), [str(r) for r in score.get("reasons") or []],
            boxes, picture_quality(score), int(kept), reason_chips(score)]


def relative_url(target, boxes_dir) -> str:
    """``target`` as a relative URL from BOXES_DIR (for the clean pictures seen from ``file://``)."""
    return Path(os.path.relpath(os.path.abspath(target), os.path.abspath(boxes_dir))).as_posix()


def page_data(pictures: list[ReviewPicture], records_by_id: dict, *, generated_dir, boxes_dir, clean_dirs: dict,
              images_dir=None, originals: set = frozenset(), kept_at_start: set = frozenset(),
              categories: dict | None = None, plan: dict | None = None) -> dict:
    """The page's data: one card per source image, its pictures in (mode, name) order.

    ``kept_at_start`` holds the (mode, file_name) pairs of picks_passed.json; ``originals`` the image
    ids whose original with boxes was drawn; ``categories`` maps category ids to names; ``plan`` the
    planned pictures per category id of stage 1's plan.csv (for every mode together).
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
        "version": 2,
        "generated_dir": os.path.realpath(generated_dir),
        "page_size": CARDS_PER_PAGE,
        "modes": modes,
        "categories": {str(k): v for k, v in sorted(names.items())},
        "clean_dirs": {mode: relative_url(folder, boxes_dir) for mode, folder in clean_dirs.items() if mode in mode_index},
        "images_dir": relative_url(images_dir, boxes_dir) if images_dir is not None else None,
        "has_scores": any(p.score is not None for p in pictures),
        "has_plan": bool(plan) or any(card["variants"] is not None for card in cards),
        "plan": {str(k): v for k, v in sorted((plan or {}).items())} or None,
        "passed_picks": bool(kept_at_start),
        "cards": cards,
    }


def split_page_data(data: dict) -> tuple[dict, list[list[dict]]]:
    """(the index the page embeds, the sidecar chunks): each card's detail fields and its pictures' reasons
    and boxes go to chunk ``card index // page_size``."""
    size = data["page_size"]
    index = {k: v for k, v in data.items() if k != "cards"}
    index["cards"] = [[c["id"], c["category_id"], c["variants"], c["file"], [p[:4] + p[6:] for p in c["pictures"]]]
                      for c in data["cards"]]
    chunks = []
    for start in range(0, len(data["cards"]), size):
        chunks.append([{**{k: c[k] for k in DETAIL_FIELDS}, "details": [[p[4], p[5]] for p in c["pictures"]]}
                       for c in data["cards"][start:start + size]])
    index["chunks"] = len(chunks)
    return index, chunks


def render_page(index: dict) -> bytes:
    """The page's HTML with ``index`` embedded; every ``<`` of the JSON is escaped so no text ends the script."""
    template = TEMPLATE.read_text(encoding="utf-8")
    before, after = template.split(DATA_MARKER)
    payload = orjson.dumps(index).replace(b"<", b"\\u003c")
    return before.encode("utf-8") + payload + after.encode("utf-8")


def render_sidecar(chunk: int, cards: list[dict]) -> bytes:
    """One sidecar script: JSON is valid JavaScript, and a separate file has no ``</script>`` to fear."""
    return b"cocoaugCards(%d, " % chunk + orjson.dumps(cards) + b");\n"


def _write_if_changed(path: Path, content: bytes):
    if not (path.is_file() and path.read_bytes() == content):
        write_bytes_atomic(path, content)


def write_review_page(boxes_dir, data: dict) -> Path:
    """Write BOXES_DIR/review.html and its sidecars atomically; files that would not change are left as they are
    (a rerun remakes nothing), sidecars of pages that no longer exist are removed."""
    boxes_dir = Path(boxes_dir)
    index, chunks = split_page_data(data)
    (boxes_dir / DATA_SUBDIR).mkdir(parents=True, exist_ok=True)
    for chunk, cards in enumerate(chunks):
        _write_if_changed(boxes_dir / sidecar_name(chunk), render_sidecar(chunk, cards))
    wanted = {Path(sidecar_name(k)).name for k in range(len(chunks))}
    for stale in (boxes_dir / DATA_SUBDIR).glob("cards-*.js"):
        if stale.name not in wanted:
            stale.unlink()
    path = boxes_dir / REVIEW_PAGE
    _write_if_changed(path, render_page(index))
    return path


def read_page_index(page_path) -> dict:
    """The index embedded in a review page."""
    html = Path(page_path).read_bytes()
    start = html.index(b'<script type="application/json" id="review-data">') + len(b'<script type="application/json" id="review-data">')
    end = html.index(b"</script>", start)
    return orjson.loads(html[start:end])


def read_page_data(page_path) -> dict:
    """The data of a review page, index and sidecars joined again as ``page_data`` made it (for the server and the tests)."""
    index = read_page_index(page_path)
    details = []
    for chunk in range(index.pop("chunks")):
        path = Path(page_path).parent / sidecar_name(chunk)
        match = SIDECAR_CALL.match(path.read_bytes())
        if not match or int(match.group(1)) != chunk:
            raise UserError(f"not the page's sidecar number {chunk}: run draw_bboxes.py again", path)
        details += orjson.loads(match.group(2))
    cards = []
    for (card_id, category_id, variants, file_name, pictures), detail in zip(index["cards"], details):
        rows = [p[:4] + d + p[4:] for p, d in zip(pictures, detail["details"])]
        cards.append({"id": card_id, "file": file_name, **{k: detail[k] for k in DETAIL_FIELDS}, "category_id": category_id,
                      "variants": variants, "pictures": rows})
    index["cards"] = cards
    return index
