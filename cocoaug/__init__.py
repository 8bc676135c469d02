"""Shared pieces of the pipeline: the error type, COCO and stage-record I/O, box geometry,
image opening, path checks and atomic writes. Each stage script imports what it needs."""

from cocoaug.errors import UserError

__all__ = ["UserError"]
