"""The command-line vocabulary every script shares: one long name for one thing, defined once.

docs/cli.md has the table of every flag, the scripts that take it and the old spellings kept.
Each ``add_*`` function takes a parser or an argument group.
"""

import argparse
import math
import re

DEVICE_HELP = "auto (default: cuda, then mps, then cpu), cuda, cuda:N, mps or cpu"
DEVICE_NAME = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DTYPES = ["auto", "float16", "bfloat16", "float32"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The one help layout of every script: the description as written, defaults stated in each help text."""


def new_parser(doc: str, epilog: str | None = None, whole_doc: bool = False) -> argparse.ArgumentParser:
    """A parser whose description is the first paragraph of the script's docstring (``whole_doc``: all of it)."""
    description = doc.strip() if whole_doc else doc.strip().split("\n\n")[0]
    return argparse.ArgumentParser(description=description, epilog=epilog, formatter_class=HelpFormatter)


def add_images(parser, required: bool = True, help: str = "folder of the original images (records' file_name is relative to it)",
               short: bool = True, aliases=()):
    """``-i/--images IMAGES_DIR``; ``short=False`` leaves ``-i`` to a script that gave it another meaning."""
    names = (["-i"] if short else []) + ["--images", *aliases]
    parser.add_argument(*names, dest="images", required=required, metavar="IMAGES_DIR", help=help)


def add_annotations(parser, required: bool = True, help: str = "the original COCO annotation file", aliases=()):
    """``-a/--annotations ANNOTATIONS.json``."""
    parser.add_argument("-a", "--annotations", *aliases, dest="annotations", required=required, metavar="ANNOTATIONS.json", help=help)


def add_records(parser, required: bool = True, help: str = "stage-1 records, OUT_DIR/blip2_post.json"):
    """``-p/--records RECORDS.json`` (``--prompts`` is the old spelling)."""
    parser.add_argument("-p", "--records", "--prompts", dest="records", required=required, metavar="RECORDS.json", help=help)


def add_generated(parser, required: bool = True, help: str = "stage 2's OUT_DIR (holding generation/ and/or inpainting/), or one of those folders"):
    """``-g/--generated GENERATED_DIR``."""
    parser.add_argument("-g", "--generated", dest="generated", required=required, metavar="GENERATED_DIR", help=help)


def add_picked(parser, help: str, aliases=(), required: bool = True):
    """``--picked PICKED_DIR``: the generated images the user chose to keep."""
    parser.add_argument("--picked", *aliases, dest="picked", required=required, metavar="PICKED_DIR", help=help)


def add_output(parser, help: str, required: bool = True, metavar: str = "OUT_DIR"):
    """``-o/--output``."""
    parser.add_argument("-o", "--output", dest="output", required=required, metavar=metavar, help=help)


def add_model(parser, help: str, default=None):
    """``--model``: a hub id or a local folder."""
    parser.add_argument("--model", default=default, metavar="ID_OR_FOLDER", help=help)


def device_name(text: str) -> str:
    """argparse type of ``--device``: refuse a name torch would not take, at parse time."""
    if not DEVICE_NAME.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use {DEVICE_HELP}")
    return text


def finite_float(text: str) -> float:
    """argparse type of every float flag: a number, and neither NaN nor infinite (``nan`` would pass every comparison)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def port_number(text: str) -> int:
    """argparse type of ``--port``: 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port: use 1 to 65535, or 0 for any free port")
    return value


def add_device(parser, dtype: bool = True):
    """``--device`` and (unless ``dtype=False``) ``--dtype``."""
    parser.add_argument("--device", default="auto", type=device_name, help=DEVICE_HELP)
    if dtype:
        parser.add_argument("--dtype", default="auto", choices=DTYPES, help="auto (default): float16 on CUDA, float32 elsewhere")


def add_batch_size(parser, default: int, help: str):
    """``--batch-size N``."""
    parser.add_argument("--batch-size", type=int, default=default, metavar="N", help=f"{help} (default {default})")


def add_num_workers(parser, default: int, default_text: str | None = None):
    """``--num-workers N``: processes that decode images."""
    parser.add_argument("--num-workers", type=int, default=default, metavar="N",
                        help=f"processes that decode images (default {default_text or default})")


def add_limit(parser, help: str):
    """``--limit N``."""
    parser.add_argument("--limit", type=int, metavar="N", help=help)


def add_skip_missing(parser, help: str):
    """``--skip-missing``: warn about and count missing images instead of stopping."""
    parser.add_argument("--skip-missing", action="store_true", help=help)


def add_overwrite(parser, help: str = "replace outputs of an earlier run instead of keeping them"):
    """``--overwrite``."""
    parser.add_argument("--overwrite", action="store_true", help=help)


def add_debug(parser):
    """``--debug``: tracebacks of user errors and debug logging."""
    parser.add_argument("--debug", action="store_true", help="show the full traceback of errors and debug logs")
