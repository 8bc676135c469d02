"""Stage 2's output as the later stages read it: the mode folders, the generated files, and
which source image, seed and boxes made each file.

Stage 2 writes ``OUT_DIR/<mode>/<category_id>_<image_id:04d>[_<k>].png`` plus
``OUT_DIR/<mode>/manifest.jsonl``; each PNG also carries its own manifest entry in a text chunk.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
from PIL import Image

from cocoaug.errors import UserError
from cocoaug.paths import require_dir
from cocoaug.records import read_manifest

MODES = ("generation", "inpainting")
PNG_ENTRY_KEY = "cocoaug"  # the text chunk in which stage 2 stores each PNG's manifest entry
GENERATED_NAME = re.compile(r"^(?P<category_id>\d+)_(?P<image_id>\d{4,})(?:_(?P<variant>\d+))?\.png$")


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


def parse_generated_name(file_name: str) -> tuple[int, int, int] | None:
    """``3_0101.png`` -> (3, 101, 0), ``3_0101_2.png`` -> (3, 101, 2); None for other names."""
    match = GENERATED_NAME.match(file_name)
    if match is None:
        return None
    return int(match["category_id"]), int(match["image_id"]), int(match["variant"] or 0)


def list_generated(folder, mode: str) -> tuple[list[GeneratedImage], list[str]]:
    """The PNGs in one mode folder, sorted by name, and the names that stage 2 did not make.

    What made a file comes from ``manifest.jsonl``, else the PNG's own entry, else its name.
    """
    folder = Path(folder)
    manifest = read_manifest(folder) if (folder / "manifest.jsonl").is_file() else {}
    images, unknown = [], []
    for path in sorted(folder.iterdir()):
        if not _is_visible_png(path):
            continue
        entry = manifest.get(path.name) or _png_entry(path)
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
    _check_entry(entry, path)
    return GeneratedImage(
        mode, path.name, path, entry["source_image_id"],
        parsed[0] if parsed else None, int(entry.get("variant", 0)), entry,
    )


def _check_entry(entry: dict, path: Path):
    image_id = entry.get("source_image_id")
    if isinstance(image_id, bool) or not isinstance(image_id, int):
        raise UserError("manifest entry has no integer 'source_image_id'", path)
    variant = entry.get("variant", 0)
    if isinstance(variant, bool) or not isinstance(variant, int):
        raise UserError("manifest entry has a 'variant' that is not an integer", path)
    if "boxes" in entry:
        try:
            boxes = np.asarray(entry["boxes"], dtype=np.float64)
        except (TypeError, ValueError):
            boxes = np.zeros((0, 0))
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all():
            raise UserError("manifest entry has 'boxes' that are not a list of [x0, y0, x1, y1]", path)


def _png_entry(path: Path) -> dict | None:
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
    return entry if isinstance(entry, dict) else None


def _is_visible_png(path: Path) -> bool:
    return path.suffix.lower() == ".png" and not path.name.startswith(".") and path.is_file()
