"""The command-line vocabulary every script shares: one long name for one thing, defined once.

| flag | meaning |
|---|---|
| ``-i/--images`` | folder of the original images (COCO ``file_name`` is relative to it) |
| ``-a/--annotations`` | the original COCO annotation file |
| ``-p/--records`` | stage-1 records, ``OUT_DIR/blip2_post.json`` (old spelling ``--prompts``) |
| ``-g/--generated`` | stage 2's OUT_DIR (holding ``generation/`` and/or ``inpainting/``) |
| ``-o/--output`` | where this script writes (never inside a folder it reads pictures from) |
| ``--model``, ``--device``, ``--dtype``, ``--batch-size``, ``--num-workers`` | models and hardware |
| ``--limit``, ``--seed``, ``--skip-missing``, ``--overwrite``, ``--debug`` | how the run goes |
"""

import argparse

DEVICE_HELP = "auto (default: cuda, then mps, then cpu), cuda, cuda:N, mps or cpu"
DTYPES = ["auto", "float16", "bfloat16", "float32"]


def new_parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose description is the first paragraph of the script's docstring."""
    return argparse.ArgumentParser(
        description=doc.strip().split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )


def add_images(parser, required: bool = True, help: str = "folder of the original images (records' file_name is relative to it)", short: bool = True, aliases=()):
    """``-i/--images IMAGES_DIR``."""
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


def add_output(parser, help: str, required: bool = True, metavar: str = "OUT_DIR"):
    """``-o/--output``."""
    parser.add_argument("-o", "--output", dest="output", required=required, metavar=metavar, help=help)


def add_model(parser, help: str, default=None):
    """``--model``: a hub id or a local folder."""
    parser.add_argument("--model", default=default, metavar="ID_OR_FOLDER", help=help)


def add_device(parser):
    """``--device`` and ``--dtype``."""
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="auto: float16 on CUDA, float32 elsewhere")


def add_batch_size(parser, default: int, help: str):
    """``--batch-size N``."""
    parser.add_argument("--batch-size", type=int, default=default, metavar="N", help=f"{help} (default {default})")


def add_num_workers(parser, default: int):
    """``--num-workers N``: processes that decode images."""
    parser.add_argument("--num-workers", type=int, default=default, metavar="N", help=f"processes that decode images (default {default})")


def add_limit(parser, help: str):
    """``--limit N``."""
    parser.add_argument("--limit", type=int, metavar="N", help=help)


def add_overwrite(parser, help: str = "replace outputs of an earlier run instead of keeping them"):
    """``--overwrite``."""
    parser.add_argument("--overwrite", action="store_true", help=help)


def add_debug(parser):
    """``--debug``: tracebacks of user errors and debug logging."""
    parser.add_argument("--debug", action="store_true", help="show the full traceback of errors and debug logs")
