"""Class balance: how many pictures stage 2 makes of each stage-1 record, and the plan file.

Stage 1 (``--balance``) writes the plan into every record as ``variants``: the number of
pictures stage 2 makes of that record *in each mode it runs* (generation and inpainting are
separate runs, each making ``variants`` pictures of the record). Two ways to plan:

- ``repeat-factor`` (LVIS, detectron2's ``RepeatFactorTrainingSampler``): for each category c,
  ``f_c`` = fraction of the annotation file's images that contain c and
  ``r_c = max(1, sqrt(t / f_c))``. A record's factor is the largest ``r_c`` of its categories;
  its count is ``floor(r) + (u < r - floor(r))`` where ``u`` in [0, 1) is a hash of
  (seed, image_id), so the plan is the same on every run.
- ``target``: each category is topped up toward N boxes. Its deficit ``max(0, N - boxes of c
  in the file)`` is covered by pictures of its selected records, one more picture at a time to
  the record with the fewest so far (ties broken by the same hash), each picture adding that
  record's boxes of c. Categories are served from the rarest (fewest boxes) up, and pictures
  already planned for a record count toward its other categories.

A pass rate p_c (the share of pictures of c that pass ``score_images.py``) raises the plan by
1 / p_c: ``r_c / p_c``, and in ``target`` a picture adds only ``p_c`` times its boxes. Every
count is capped by ``max_variants``. ``OUT_DIR/plan.csv`` (``PLAN_COLUMNS``) shows the plan per
category; "expected after" is the file's boxes plus the planned boxes of one mode run times the
pass rate (1 without one): the merged set if every passing picture of one mode is kept.
"""

import csv
import hashlib
import heapq
import math
from collections import Counter
from dataclasses import dataclass, field, fields

import logging

import numpy as np

from cocoaug.atomic import write_csv_atomic
from cocoaug.errors import UserError, listed
from cocoaug.paths import require_file

log = logging.getLogger("cocoaug")
METHODS = ("repeat-factor", "target")
PLAN_FILE = "plan.csv"


@dataclass(frozen=True)
class BalanceSettings:
    """The flags of stage 1's "class balance" group; ``pass_rates`` is keyed by category id."""

    method: str
    threshold: float = 0.001
    target_boxes: int | None = None
    max_variants: int = 8
    seed: int = 0
    pass_rates: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FileCounts:
    """Per category id, the boxes and the images that contain it in the whole annotation file."""

    n_images: int
    boxes: dict[int, int]
    images: dict[int, int]


@dataclass
class CategoryPlan:
    """One row of ``plan.csv``; fields that do not apply to the method are None (empty cells)."""

    category_id: int
    category: str
    boxes_in_file: int
    images_in_file: int
    repeat_factor: float | None
    pass_rate: float | None
    selected_records: int
    planned_pictures: int
    planned_boxes: int
    expected_boxes_after: int
    target_boxes: int | None
    shortfall: int | None


PLAN_COLUMNS = [f.name for f in fields(CategoryPlan)]


def file_counts(ann_image_id, ann_category_id, n_images: int) -> FileCounts:
    """Count boxes and images per category from the file's annotation columns (numpy arrays)."""
    ann_image_id, ann_category_id = np.asarray(ann_image_id, np.int64), np.asarray(ann_category_id, np.int64)
    categories, boxes = np.unique(ann_category_id, return_counts=True)
    # Distinct (category, image) pairs by sorting one int64 key: np.unique(axis=1) takes seconds on COCO.
    base = int(ann_image_id.max()) + 1 if len(ann_image_id) else 1
    keys = np.sort(ann_category_id * base + ann_image_id)
    pair_categories = keys[np.diff(keys, prepend=-1) != 0] // base
    with_images, counts = np.unique(pair_categories, return_counts=True)
    return FileCounts(n_images, dict(zip(categories.tolist(), boxes.tolist())), dict(zip(with_images.tolist(), counts.tolist())))


def unit_hash(seed: int, image_id: int) -> float:
    """A number in [0, 1) fixed by (seed, image_id): the plan's only source of chance."""
    digest = hashlib.sha256(f"balance/{seed}/{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def repeat_factor(images_with_category: int, n_images: int, threshold: float) -> float:
    """LVIS' r_c = max(1, sqrt(t / f_c)), f_c the fraction of images containing the category."""
    return max(1.0, math.sqrt(threshold * n_images / images_with_category))


def rounded_count(factor: float, seed: int, image_id: int, cap: int) -> int:
    """``floor(factor)`` plus one with probability ``factor - floor(factor)``, decided by the hash; at most ``cap``."""
    if factor >= cap:
        return cap
    whole = math.floor(factor)
    return min(cap, whole + (unit_hash(seed, image_id) < factor - whole))


def record_boxes(record: dict, category_id: int) -> int:
    """Boxes of ``category_id`` in a record."""
    return record["category_ids"].count(category_id)


def plan_variants(records: list[dict], counts: FileCounts, settings: BalanceSettings, categories) -> dict[int, int]:
    """Pictures per mode of each record, by image_id; only the ``categories`` (ids) are balanced."""
    categories = set(categories)
    if settings.method == "repeat-factor":
        factors = category_factors(counts, settings, categories)
        plan = {}
        for record in records:
            factor = max((factors[c] for c in set(record["category_ids"]) if c in factors), default=1.0)
            plan[record["image_id"]] = rounded_count(factor, settings.seed, record["image_id"], settings.max_variants)
        return plan
    return target_variants(records, counts, settings, categories)


def category_factors(counts: FileCounts, settings: BalanceSettings, categories) -> dict[int, float]:
    """r_c raised by 1 / pass rate (infinite for a rate of 0: the cap decides)."""
    factors = {}
    for c in categories:
        if counts.images.get(c, 0) == 0:
            continue
        rate = settings.pass_rates.get(c, 1.0)
        factor = repeat_factor(counts.images[c], counts.n_images, settings.threshold)
        factors[c] = factor / rate if rate > 0 else math.inf
    return factors


def target_variants(records: list[dict], counts: FileCounts, settings: BalanceSettings, categories) -> dict[int, int]:
    """Top each category up toward ``target_boxes``, rarest first, one picture at a time to the least-served record."""
    plan = {record["image_id"]: 0 for record in records}
    by_category: dict[int, list[dict]] = {}
    for record in records:
        for c in set(record["category_ids"]) & categories:
            by_category.setdefault(c, []).append(record)
    for c in sorted(by_category, key=lambda c: (counts.boxes.get(c, 0), c)):
        rate = settings.pass_rates.get(c, 1.0)
        members = [(r["image_id"], record_boxes(r, c) * rate) for r in by_category[c]]
        remaining = max(0, settings.target_boxes - counts.boxes.get(c, 0)) - sum(plan[i] * gain for i, gain in members)
        gain_of = dict(members)
        heap = [(plan[i], unit_hash(settings.seed, i), i) for i, _ in members if plan[i] < settings.max_variants]
        heapq.heapify(heap)
        while remaining > 1e-9 and heap:
            pictures, u, image_id = heapq.heappop(heap)
            plan[image_id] = pictures + 1
            remaining -= gain_of[image_id]
            if pictures + 1 < settings.max_variants:
                heapq.heappush(heap, (pictures + 1, u, image_id))
    return plan


def plan_table(records: list[dict], counts: FileCounts, settings: BalanceSettings, names: dict[int, str], categories) -> list[CategoryPlan]:
    """The plan per category of ``categories`` (ids) and of every category in the records, from their ``variants``."""
    members, pictures, boxes = Counter(), Counter(), Counter()
    for record in records:
        for c, n in Counter(record["category_ids"]).items():
            members[c] += 1
            pictures[c] += record["variants"]
            boxes[c] += record["variants"] * n
    shown = sorted(set(categories) | set(members))
    factors = category_factors(counts, settings, categories) if settings.method == "repeat-factor" else {}
    rows = []
    for c in shown:
        rate = settings.pass_rates.get(c)
        expected = counts.boxes.get(c, 0) + round(boxes[c] * (1.0 if rate is None else rate))
        balanced = c in categories
        target = settings.target_boxes if settings.method == "target" and balanced else None
        factor = None
        if c in factors and counts.images.get(c):
            factor = round(repeat_factor(counts.images[c], counts.n_images, settings.threshold), 4)
        rows.append(CategoryPlan(
            c, names.get(c, str(c)), counts.boxes.get(c, 0), counts.images.get(c, 0), factor, rate, members[c],
            pictures[c], boxes[c], expected, target, max(0, target - expected) if target is not None else None,
        ))
    return rows


def pass_rates_by_id(rates_by_name: dict[str, float], names: dict[int, str], source) -> dict[int, float]:
    """Pass rates (``cocoaug.scores.read_pass_rates``) keyed by category id, names matched case-insensitively;
    a name the annotation file lacks is a UserError naming ``source``, a rate of 0 a warning."""
    ids = {name.lower(): cid for cid, name in names.items()}
    unknown = [name for name in rates_by_name if name.lower() not in ids]
    if unknown:
        raise UserError(f"the pass-rates file names {len(unknown)} category(ies) the annotation file lacks: {listed(unknown)}", source)
    for name, rate in rates_by_name.items():
        if rate == 0:
            log.warning("category %r has a pass rate of 0: each of its records gets the most pictures (--max-variants)", name)
    return {ids[name.lower()]: rate for name, rate in rates_by_name.items()}


def plan_lines(rows: list[CategoryPlan]) -> list[str]:
    """The plan as an aligned text table; the repeat-factor and pass-rate columns only where they apply."""
    header = ["category", "id", "boxes", "images", "r_c", "pass", "records", "pictures", "new boxes", "expected"]
    table = [[row.category, row.category_id, row.boxes_in_file, row.images_in_file,
              "" if row.repeat_factor is None else f"{row.repeat_factor:.2f}",
              "" if row.pass_rate is None else f"{row.pass_rate:.2f}", row.selected_records,
              row.planned_pictures, row.planned_boxes, row.expected_boxes_after] for row in rows]
    shown = [k for k in range(len(header)) if k < 4 or k > 5 or any(line[k] != "" for line in table)]
    header, table = [header[k] for k in shown], [[line[k] for k in shown] for line in table]
    width = max(len(str(line[0])) for line in [header, *table])
    return [f"{line[0]:<{width}}" + "".join(f"{cell:>10}" for cell in line[1:]) for line in [header, *table]]


def shortfalls(rows: list[CategoryPlan]) -> list[CategoryPlan]:
    """The rows of categories that the plan leaves short of their target."""
    return [row for row in rows if row.shortfall]


def write_plan(path, rows: list[CategoryPlan]):
    """Write ``plan.csv`` (``PLAN_COLUMNS``; empty cells where a field does not apply)."""
    write_csv_atomic(path, [{k: v for k, v in vars(row).items() if v is not None} for row in rows], PLAN_COLUMNS)


def read_plan(path) -> list[CategoryPlan]:
    """Read ``plan.csv`` back; a missing column or a non-number is a UserError naming the line."""
    path = require_file(path, "plan file")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in PLAN_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"plan file lacks the column(s) {', '.join(missing)}", path)
        rows = []
        for number, row in enumerate(reader, start=2):
            try:
                rows.append(CategoryPlan(**{f.name: _cell(row[f.name], f.type) for f in fields(CategoryPlan)}))
            except ValueError:
                raise UserError(f"line {number} of the plan file has a cell that is not a number", path) from None
    return rows


def _cell(text: str, kind):
    if kind is str:
        return text
    if text == "":
        if kind in (int, float):
            raise ValueError(text)
        return None
    return float(text) if kind in (float, float | None) else int(text)


def pictures_by_category(records_by_id: dict[int, dict], source_image_ids) -> Counter:
    """Pictures per category id, from each picture's source image id: a picture counts once for each
    category of its record (source ids without a record are not counted)."""
    counts = Counter()
    for image_id in source_image_ids:
        record = records_by_id.get(image_id)
        if record is not None:
            counts.update(set(record["category_ids"]))
    return counts


def planned_by_category(records: list[dict]) -> Counter:
    """Planned pictures per category id (one mode run) from records' ``variants`` (1 without it)."""
    counts = Counter()
    for record in records:
        for c in set(record["category_ids"]):
            counts[c] += record.get("variants", 1)
    return counts
