"""Write a small, deterministic COCO sample set of drawn shapes, for tests and demos.

Twelve synthetic pictures (gradient and blocky-noise backgrounds, solid shapes) whose boxes
are taken from the drawn pixels, so every bbox is tight. Each feature of real COCO data sits
in a known image (the code's table is ``SAMPLE_IMAGES``):

  id   file_name             size     mode  boxes                              default selection
  101  shape_101.jpg         640x480  RGB   ball x3                            yes (largest)
  102  shape_102.png         320x240  RGB   box x2, one tiny (6x7 = 42 px²)    yes
  105  shape_105.png         240x320  L     kite x2                            yes (portrait)
  106  shape_106.png         256x256  RGBA  star x4                            yes (square)
  110  shape_110.png         300x200  P     ball x5, one ends 4 px past right  yes
  111  shape_111.png         200x160  I;16  box x6                             yes (16-bit gray)
  113  extra/shape_113.jpg   400x150  RGB   kite x1 + ball x1                  no: multi-category (wide)
  117  extra/café photo.jpg  300x200  RGB   star x1                            yes (space, non-ASCII)
  120  shape_120.png         320x240  RGB   ball x10                           no: too many objects
  121  shape_121.jpg         480x360  RGB   ball + box + kite + star           no: multi-category
  130  shape_130.png         360x270  RGB   box x3, one iscrowd=1 (RLE)        no: crowd annotation
  142  extra/shape_142.png   160x120  RGB   none                               no: no annotations

Categories have non-contiguous ids: 3 "ball" (filled circle), 7 "box" (rectangle), 12 "kite"
(triangle), 20 "star"; supercategory "shape". Annotation ids are image_id * 100 + n. The
crowd annotation's segmentation is an uncompressed RLE over a cluster of small boxes, every
other one a polygon. file_names are relative to DIR/images. Stage 1's default selection (one
category, at most 6 boxes, no crowd, every box of positive area after clipping, at least one
box) picks ``DEFAULT_SELECTION``. Files are byte-identical on every run (fixed seeds, no
timestamps). Without --overwrite an existing DIR/annotations.json, which is written last, is
reused and nothing is written.

    python scripts/make_sample_dataset.py sample_data
    python scripts/make_sample_dataset.py sample_data --overwrite
"""

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw
from pycocotools.coco import COCO

# Run as a file (python scripts/...), this script needs the repository root to import cocoaug.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cocoaug.atomic import atomic_path, save_image_atomic  # noqa: E402
from cocoaug.errors import UserError  # noqa: E402
from cocoaug import cli  # noqa: E402
from cocoaug.runtime import run_cli  # noqa: E402

CATEGORIES = {"ball": 3, "box": 7, "kite": 12, "star": 20}
# Every colour has a channel outside the background's 84..176, so shapes stand out from it.
COLOURS = {"ball": (220, 60, 40), "box": (40, 90, 220), "kite": (240, 200, 30), "star": (20, 20, 20)}
BORDER_PAD = 16  # shapes may reach this far past the image border


class Shape(NamedTuple):
    """A shape drawn inside x..x+w-1, y..y+h-1; a crowd shape is a cluster of small boxes."""

    category: str
    x: int
    y: int
    w: int
    h: int
    crowd: bool = False


class SampleImage(NamedTuple):
    id: int
    file_name: str
    width: int
    height: int
    mode: str  # the mode of the saved file
    shapes: list


def _row(category, n, x, y, size, step):
    return [Shape(category, x + step * i, y, size, size) for i in range(n)]


SAMPLE_IMAGES = [
    SampleImage(101, "shape_101.jpg", 640, 480, "RGB", _row("ball", 3, 40, 150, 150, 200)),
    SampleImage(102, "shape_102.png", 320, 240, "RGB", [Shape("box", 40, 50, 120, 90), Shape("box", 250, 180, 6, 7)]),
    SampleImage(105, "shape_105.png", 240, 320, "L", [Shape("kite", 40, 30, 150, 110), Shape("kite", 70, 180, 100, 120)]),
    SampleImage(106, "shape_106.png", 256, 256, "RGBA", _row("star", 2, 20, 20, 100, 120) + _row("star", 2, 20, 140, 90, 120)),
    SampleImage(110, "shape_110.png", 300, 200, "P", _row("ball", 4, 10, 20, 50, 62) + [Shape("ball", 244, 110, 60, 60)]),
    SampleImage(111, "shape_111.png", 200, 160, "I;16", _row("box", 3, 10, 15, 50, 65) + _row("box", 3, 10, 90, 40, 65)),
    SampleImage(113, "extra/shape_113.jpg", 400, 150, "RGB", [Shape("kite", 30, 20, 140, 110), Shape("ball", 250, 30, 90, 90)]),
    SampleImage(117, "extra/caf\u00e9 photo.jpg", 300, 200, "RGB", [Shape("star", 90, 30, 130, 130)]),
    SampleImage(120, "shape_120.png", 320, 240, "RGB", _row("ball", 5, 10, 30, 50, 62) + _row("ball", 5, 10, 140, 50, 62)),
    SampleImage(121, "shape_121.jpg", 480, 360, "RGB", [Shape("ball", 30, 30, 120, 120), Shape("box", 250, 40, 180, 100),
                                                         Shape("kite", 40, 200, 150, 130), Shape("star", 280, 180, 150, 150)]),
    SampleImage(130, "shape_130.png", 360, 270, "RGB", [Shape("box", 20, 20, 100, 80), Shape("box", 20, 150, 80, 100),
                                                         Shape("box", 180, 60, 160, 160, crowd=True)]),
    SampleImage(142, "extra/shape_142.png", 160, 120, "RGB", []),
]
DEFAULT_SELECTION = [101, 102, 105, 106, 110, 111, 117]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = cli.new_parser(__doc__, whole_doc=True)  # the table of images is the reference
    parser.add_argument("output", type=Path, metavar="DIR", help="folder to write DIR/images/ and DIR/annotations.json to")
    cli.add_overwrite(parser, help="rewrite the set even if DIR/annotations.json exists")
    cli.add_debug(parser)
    return parser


def background(width: int, height: int, seed: int) -> np.ndarray:
    """A diagonal colour gradient with 8-pixel blocks of noise (blocks keep the PNGs small)."""
    rng = np.random.default_rng(seed)
    start, end = rng.integers(90, 171, size=(2, 3))
    y, x = np.mgrid[0:height, 0:width]
    t = (0.6 * x / width + 0.4 * y / height)[..., None]
    noise = rng.integers(-6, 7, size=(height // 8 + 1, width // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)
    return np.clip(start + (end - start) * t + noise[:height, :width], 84, 176).astype(np.uint8)


def outline(shape: Shape) -> list[float]:
    """The shape's polygon as [x0, y0, x1, y1, ...] in image pixels (its COCO segmentation)."""
    x, y, w, h = shape.x, shape.y, shape.w, shape.h
    if shape.category == "box":
        return [x, y, x + w, y, x + w, y + h, x, y + h]
    if shape.category == "kite":
        return [x + w / 2, y, x + w - 1, y + h - 1, x, y + h - 1]
    points, radii = (16, [1.0]) if shape.category == "ball" else (10, [1.0, 0.42])
    cx, cy = x + (w - 1) / 2, y + (h - 1) / 2
    angles = -np.pi / 2 + 2 * np.pi * np.arange(points) / points
    scale = np.array([radii[i % len(radii)] for i in range(points)])
    xs, ys = cx + scale * np.cos(angles) * (w - 1) / 2, cy + scale * np.sin(angles) * (h - 1) / 2
    return [round(float(v), 2) for pair in zip(xs, ys) for v in pair]


def shape_mask(shape: Shape, width: int, height: int) -> np.ndarray:
    """Boolean mask of the drawn shape on the image padded by BORDER_PAD on every side."""
    mask = Image.new("L", (width + 2 * BORDER_PAD, height + 2 * BORDER_PAD), 0)
    draw = ImageDraw.Draw(mask)
    x, y = shape.x + BORDER_PAD, shape.y + BORDER_PAD
    if shape.crowd:
        for i in range(12):  # a 4x3 cluster of small touching boxes, annotated as one crowd region
            cx, cy = x + (i % 4) * shape.w // 4, y + (i // 4) * shape.h // 3
            draw.rectangle([cx, cy, cx + shape.w // 4 - 3, cy + shape.h // 3 - 3], fill=255)
    elif shape.category == "box":
        draw.rectangle([x, y, x + shape.w - 1, y + shape.h - 1], fill=255)
    elif shape.category == "ball":
        draw.ellipse([x, y, x + shape.w - 1, y + shape.h - 1], fill=255)
    else:
        draw.polygon([v + BORDER_PAD for v in outline(shape)], fill=255)
    return np.asarray(mask) > 0


def crowd_rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE of a mask: run lengths in column-major order, starting with zeros."""
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"counts": counts, "size": [int(mask.shape[0]), int(mask.shape[1])]}


def annotation(sample: SampleImage, index: int, shape: Shape, padded: np.ndarray) -> dict:
    """The COCO annotation of one drawn shape; the bbox is the tight box of its pixels."""
    rows, cols = np.nonzero(padded)
    x0, y0 = int(cols.min()) - BORDER_PAD, int(rows.min()) - BORDER_PAD
    bbox = [x0, y0, int(cols.max()) - int(cols.min()) + 1, int(rows.max()) - int(rows.min()) + 1]
    visible = padded[BORDER_PAD:-BORDER_PAD, BORDER_PAD:-BORDER_PAD]
    segmentation = crowd_rle(visible) if shape.crowd else [outline(shape)]
    return {"id": sample.id * 100 + index + 1, "image_id": sample.id, "category_id": CATEGORIES[shape.category],
            "bbox": bbox, "area": int(padded.sum()), "iscrowd": int(shape.crowd), "segmentation": segmentation}


def render(sample: SampleImage) -> tuple[Image.Image, list[dict]]:
    """Draw one sample picture in its saved mode and return it with its annotations."""
    pixels = background(sample.width, sample.height, seed=sample.id)
    alpha = np.full((sample.height, sample.width), 255, np.uint8)
    alpha[:, : sample.width // 2] = 128  # half transparent background, opaque shapes
    annotations = []
    for index, shape in enumerate(sample.shapes):
        padded = shape_mask(shape, sample.width, sample.height)
        visible = padded[BORDER_PAD:-BORDER_PAD, BORDER_PAD:-BORDER_PAD]
        pixels[visible] = COLOURS[shape.category]
        alpha[visible] = 255
        annotations.append(annotation(sample, index, shape, padded))
    image = Image.fromarray(pixels)
    if sample.mode == "L":
        image = image.convert("L")
    elif sample.mode == "RGBA":
        image = Image.fromarray(np.dstack([pixels, alpha]))
    elif sample.mode == "P":
        image = image.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    elif sample.mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 257)
    return image, annotations


def coco_file(images: list[dict], annotations: list[dict]) -> dict:
    """The whole COCO dict, keys in COCO's order; fixed text and no timestamps."""
    return {
        "info": {"description": "cocoaug sample set of drawn shapes", "version": "1.0", "year": 2024,
                 "contributor": "cocoaug scripts/make_sample_dataset.py", "url": "", "date_created": "2024-01-01"},
        "licenses": [{"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": "shape"} for name, cid in CATEGORIES.items()],
    }


def check_output_folder(folder: Path):
    """Refuse a DIR, DIR/images or DIR/annotations.json of the wrong kind."""
    for path in (folder, folder / "images"):
        if path.exists() and not path.is_dir():
            raise UserError("output path exists and is not a folder", path)
    if (folder / "annotations.json").is_dir():
        raise UserError("output path exists and is a folder", folder / "annotations.json")


def create_output_folder(folder: Path):
    """Create DIR/images (and DIR)."""
    try:
        (folder / "images").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder: {exc.strerror}", folder) from exc


def write_images(folder: Path) -> tuple[list[dict], list[dict]]:
    """Render and save every picture; return the COCO ``images`` and ``annotations`` lists."""
    images, annotations = [], []
    for sample in SAMPLE_IMAGES:
        image, sample_annotations = render(sample)
        options = {"quality": 90} if sample.file_name.endswith(".jpg") else {}
        save_image_atomic(folder / "images" / sample.file_name, image, **options)
        images.append({"id": sample.id, "file_name": sample.file_name, "width": sample.width,
                       "height": sample.height, "license": 1})
        annotations.extend(sample_annotations)
    return images, annotations


def validate(path: Path, images_folder: Path):
    """Load the annotation file with pycocotools and decode every mask; check every image file.

    A failure here is a bug in this script, so it raises RuntimeError (with a traceback).
    """
    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress lines
        coco = COCO(str(path))
    for ann in coco.loadAnns(coco.getAnnIds()):
        if not coco.annToMask(ann).any():
            raise RuntimeError(f"annotation {ann['id']} has an empty mask")
    for image in coco.loadImgs(coco.getImgIds()):
        with Image.open(images_folder / image["file_name"]) as file:
            if file.size != (image["width"], image["height"]):
                raise RuntimeError(f"{image['file_name']} is {file.size}, not as annotated")


def write_annotations(folder: Path, images: list[dict], annotations: list[dict]):
    """Write DIR/annotations.json last and atomically, after pycocotools has loaded it."""
    text = json.dumps(coco_file(images, annotations), indent=1, ensure_ascii=False)
    with atomic_path(folder / "annotations.json") as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
        validate(tmp, folder / "images")


def main(args):
    folder = args.output
    check_output_folder(folder)
    if (folder / "annotations.json").is_file() and not args.overwrite:
        print(f"reused the existing sample set (pass --overwrite to rewrite it): {folder / 'annotations.json'}")
        return
    create_output_folder(folder)
    images, annotations = write_images(folder)
    write_annotations(folder, images, annotations)
    print(f"wrote {len(images)} images and {len(annotations)} annotations to {folder}")


if __name__ == "__main__":
    run_cli(main, build_parser())
