"""Stage 2's output contract, its writer's and its readers' one home: the mode folders, the
file names, the manifest entries (in ``manifest.jsonl`` and in each PNG) and the settings
recorded in them.

Stage 2 writes ``OUT_DIR/<mode>/<category_id>_<image_id:04d>[_<k>].png`` plus
``OUT_DIR/<mode>/manifest.jsonl``; each PNG also carries its own manifest entry in a text chunk,
so the manifest can be rebuilt from the PNGs present. An entry (``ManifestEntry``; field types of
``cocoaug/schema.py``)::

    {"file_name": "3_0101.png",        # required: a plain name in the mode folder (no folder, "..", NUL)
     "source_image_id": 101,           # required: int >= 0, the stage-1 record's image_id
     "source_file_name": "a.jpg",      # a relative path (the record's file_name)
     "prompt": "...", "phrases": [...],            # strings
     "boxes": [[x0, y0, x1, y1], ...],             # normalised to [0, 1], x1 > x0, y1 > y0
     "seed": 123..., "variant": 0,     # ints: seed >= 0, variant from 0 to MAX_VARIANTS - 1 (default 0)
     "working_size": [512, 384], "width": 640, "height": 480,   # ints > 0
     # the run's settings (SETTINGS_KEYS), the same for every image of a run:
     "mode": "inpainting", "model": "...", "scheduler": "PNDMScheduler", "steps": 50, ...}

Every key but the first two is optional (entries of older versions lack some); one that is
present must have its type. Other keys are kept as they are.

Nothing here imports torch: stage 2 plans its work and checks existing outputs before loading
a model, and ``--help`` stays fast.
"""

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec
import orjson
from PIL import Image, PngImagePlugin

from cocoaug.atomic import save_image_atomic, write_bytes_atomic
from cocoaug.errors import UserError, listed
from cocoaug.jsonl import read_jsonl
from cocoaug.paths import require_dir
from cocoaug.records import MAX_VARIANTS
from cocoaug.schema import BoxXYXYNorm, FiniteFloat, Id, PositiveInt, check_box_xyxy, check_name, convert

log = logging.getLogger("cocoaug")

MODES = ("generation", "inpainting")
MAX_OBJECTS = 30  # GLIGEN's grounding tokens per image: a record with more boxes cannot be made
MANIFEST = "manifest.jsonl"
PNG_ENTRY_KEY = "cocoaug"  # the text chunk in which stage 2 stores each PNG's manifest entry
GENERATED_NAME = re.compile(r"^(?P<category_id>\d+)_(?P<image_id>\d{4,})(?:_(?P<variant>\d+))?\.png$")
# Every setting of a run that changes its pictures, recorded in each entry. Entries written
# before a key was added lack it; keep_background and feather are recorded in inpainting only.
SETTINGS_KEYS = (
    "mode", "model", "scheduler", "steps", "guidance_scale", "grounding_beta", "negative_prompt",
    "phrase_template", "resolution", "run_seed", "keep_background", "feather",
)


class ManifestEntry(msgspec.Struct, omit_defaults=True):
    """The schema of one manifest entry (see the module's docstring); UNSET: the entry lacks the key."""

    file_name: str
    source_image_id: Id
    source_file_name: str = msgspec.UNSET
    prompt: str = msgspec.UNSET
    phrases: list[str] = msgspec.UNSET
    boxes: list[BoxXYXYNorm] = msgspec.UNSET
    seed: Id = msgspec.UNSET
    variant: Annotated[int, msgspec.Meta(ge=0, lt=MAX_VARIANTS)] = 0
    working_size: tuple[PositiveInt, PositiveInt] = msgspec.UNSET
    width: PositiveInt = msgspec.UNSET
    height: PositiveInt = msgspec.UNSET
    mode: str = msgspec.UNSET
    model: str = msgspec.UNSET
    scheduler: str = msgspec.UNSET
    steps: PositiveInt = msgspec.UNSET
    guidance_scale: FiniteFloat = msgspec.UNSET
    grounding_beta: FiniteFloat = msgspec.UNSET
    negative_prompt: str | None = msgspec.UNSET
    phrase_template: str = msgspec.UNSET
    resolution: PositiveInt = msgspec.UNSET
    run_seed: int | None = msgspec.UNSET
    keep_background: bool = msgspec.UNSET
    feather: FiniteFloat = msgspec.UNSET

    def __post_init__(self):
        check_name(self.file_name, plain=True)
        if self.source_file_name is not msgspec.UNSET:
            check_name(self.source_file_name, "source_file_name")
        for k, box in enumerate(self.boxes or ()):
            check_box_xyxy(box, f"boxes[{k}]")


# ---------------------------------------------------------------- names and seeds


def output_name(category_id: int, image_id: int, variant: int = 0, variants: int = 1) -> str:
    """``3_0101.png``, or ``3_0101_<variant>.png`` when a run makes several variants per record."""
    stem = f"{category_id}_{image_id:04d}"
    return f"{stem}_{variant}.png" if variants > 1 else f"{stem}.png"


def parse_generated_name(file_name: str) -> tuple[int, int, int] | None:
    """``3_0101.png`` -> (3, 101, 0), ``3_0101_2.png`` -> (3, 101, 2); None for other names."""
    match = GENERATED_NAME.match(file_name)
    if match is None:
        return None
    return int(match["category_id"]), int(match["image_id"]), int(match["variant"] or 0)


def image_seed(seed: int, image_id: int, variant: int) -> int:
    """A 63-bit seed for one image from (run seed, image id, variant), stable across runs and machines."""
    digest = hashlib.sha256(f"{seed}/{image_id}/{variant}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# ---------------------------------------------------------------- manifest entries: writing


def manifest_entry(file_name: str, record: dict, variant: int, seed: int, prompt: str, phrases: list[str],
                   working_size, size, settings: dict) -> dict:
    """The entry of one generated image: what it was made from (``record``, a stage-1 record),
    its seed, its working and final ``size`` (width, height), and the run's ``settings``."""
    entry = {
        "file_name": file_name, "source_image_id": record["image_id"], "source_file_name": record["file_name"],
        "prompt": prompt, "phrases": phrases, "boxes": record["bbox"], "seed": seed, "variant": variant,
        "working_size": list(working_size), "width": size[0], "height": size[1],
    }
    entry.update(settings)
    return entry


def save_generated_png(path, picture: Image.Image, entry: dict):
    """Write ``picture`` to ``path`` atomically as a PNG carrying its manifest ``entry``."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_ENTRY_KEY, orjson.dumps(entry).decode())
    save_image_atomic(path, picture, pnginfo=info)


def rebuild_manifest(folder) -> int:
    """Write ``folder/manifest.jsonl`` from the entries stored in the PNGs present, sorted by file name.

    Returns how many images it lists; a PNG without an entry is left out with a warning.
    """
    folder = Path(folder)
    lines = []
    for path in sorted(folder.glob("*.png")):
        entry = read_png_entry(path)
        if entry is None:
            log.warning("%s has no manifest entry (not made by stage 2?): left out of %s", path, MANIFEST)
            continue
        lines.append(orjson.dumps(entry) + b"\n")
    write_bytes_atomic(folder / MANIFEST, b"".join(lines))
    return len(lines)


# ---------------------------------------------------------------- manifest entries: reading


def read_manifest(folder) -> dict[str, dict]:
    """Read ``folder/manifest.jsonl`` keyed by file name, each line decoded through ``ManifestEntry``.

    A last line cut short (a run killed mid-write) is dropped with a warning: the PNG keeps its entry.
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserError(f"no {MANIFEST} in the folder of generated images (made by generate_image_gligen.py)", folder)
    return {entry["file_name"]: entry for entry in read_jsonl(path, "the manifest", ManifestEntry)}


def read_png_entry(path) -> dict | None:
    """The manifest entry stored in a generated PNG (checked by ``ManifestEntry``), or None when it has none."""
    try:
        with Image.open(path) as image:
            text = image.info.get(PNG_ENTRY_KEY)
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"cannot read image: {exc}", path) from exc
    if text is None:
        return None
    try:
        entry = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise UserError(f"the PNG's '{PNG_ENTRY_KEY}' text is not valid JSON", path) from None
    if not isinstance(entry, dict):
        return None
    convert(entry, ManifestEntry, path, f"the PNG's '{PNG_ENTRY_KEY}' entry")
    return entry


# ---------------------------------------------------------------- settings


def settings_differences(entries, settings: dict) -> list[str]:
    """How the settings recorded in ``entries`` differ from ``settings`` (a run's), one line per key:
    ``steps: 50 in existing pictures, 4 now``. Empty when they agree.

    A key that an entry lacks (written by an older version, or not applying to its mode) counts
    as unknown, not as a difference: refusing every older picture would force a remake for
    nothing, and the keys that are there still catch what changed.
    """
    found: dict[str, list] = {}
    for entry in entries:
        for key, now in settings.items():
            if key in entry and not _same_setting(entry[key], now) and entry[key] not in found.setdefault(key, []):
                found[key].append(entry[key])
    return [f"{key}: {listed(_shown(v) for v in values)} in existing pictures, {_shown(settings[key])} now"
            for key, values in found.items() if values]


def _same_setting(stored, now) -> bool:
    # As JSON text too: NaN != NaN, and a NaN setting is stored as null; 7.5 == 7.5 either way.
    return stored == now or _shown(stored) == _shown(now)


def _shown(value) -> str:
    return orjson.dumps(value).decode()


# ---------------------------------------------------------------- the generated images, for the later stages


@dataclass(frozen=True)
class GeneratedImage:
    """One file made by stage 2 and what made it (``entry`` is its manifest entry, or None)."""

    mode: str
    file_name: str
    path: Path
    source_image_id: int
    category_id: int | None
    variant: int
    entry: dict | None


def mode_folders(generated_dir) -> dict[str, Path]:
    """The folders of generated images: ``generation/`` and ``inpainting/`` under stage 2's
    OUT_DIR, or GENERATED_DIR itself when it holds the PNGs (named by its folder name)."""
    generated_dir = require_dir(generated_dir, "folder of generated images")
    found = {mode: generated_dir / mode for mode in MODES if (generated_dir / mode).is_dir()}
    if found:
        return found
    if any(_is_visible_png(path) for path in generated_dir.iterdir()):
        return {generated_dir.resolve().name: generated_dir}
    raise UserError(
        "no generated images: expected stage 2's OUT_DIR (with generation/ or inpainting/) or a folder of its PNGs",
        generated_dir,
    )


def list_generated(folder, mode: str) -> tuple[list[GeneratedImage], list[str]]:
    """The PNGs in one mode folder, sorted by name, and the names that stage 2 did not make.

    What made a file comes from ``manifest.jsonl``, else the PNG's own entry, else its name.
    """
    folder = Path(folder)
    manifest = read_manifest(folder) if (folder / MANIFEST).is_file() else {}
    images, unknown = [], []
    for path in sorted(folder.iterdir()):
        if not _is_visible_png(path):
            continue
        entry = manifest.get(path.name) or read_png_entry(path)
        image = generated_image(mode, path, entry)
        if image is None:
            unknown.append(path.name)
        else:
            images.append(image)
    return images, unknown


def generated_image(mode: str, path: Path, entry: dict | None) -> GeneratedImage | None:
    """Describe ``path`` from its manifest ``entry`` or, without one, from its name."""
    parsed = parse_generated_name(path.name)
    if entry is None:
        if parsed is None:
            return None
        category_id, image_id, variant = parsed
        return GeneratedImage(mode, path.name, path, image_id, category_id, variant, None)
    return GeneratedImage(
        mode, path.name, path, entry["source_image_id"],
        parsed[0] if parsed else None, int(entry.get("variant", 0)), entry,
    )


def _is_visible_png(path: Path) -> bool:
    return path.suffix.lower() == ".png" and not path.name.startswith(".") and path.is_file()
