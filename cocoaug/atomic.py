"""Atomic writes: a temp file in the destination folder, flushed, then renamed over the target.

A reader never sees a half-written file, and an interrupted write leaves only the old file
(or none), never a truncated one.
"""

import csv
import errno
import glob
import io
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import orjson

from cocoaug.errors import UserError

# mkstemp creates files readable by their owner only; outputs get the permissions a plain
# open() would give them (0o666 less the umask), so a team sharing a dataset can read them.
UMASK = os.umask(0)
os.umask(UMASK)
FILE_MODE = 0o666 & ~UMASK
TEMP_SUFFIX = ".tmp"


@contextmanager
def atomic_path(path):
    """Yield a temp path beside ``path``; on success rename it to ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=TEMP_SUFFIX, dir=path.parent)
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError("no space left on device while writing", path) from exc
        raise
    except BaseException:
        # KeyboardInterrupt and SystemExit included: never leave the temp file behind.
        _remove_quietly(tmp)
        raise


def remove_temp_files(path) -> int:
    """Remove the temp files that interrupted writes to ``path`` left beside it (a killed process
    cannot clean up); returns how many. Call it only when no other process is writing ``path``."""
    path = Path(path)
    stale = list(path.parent.glob(f"{glob.escape(_temp_prefix(path))}*{TEMP_SUFFIX}"))
    for temp in stale:
        _remove_quietly(temp)
    return len(stale)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _remove_quietly(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def write_bytes_atomic(path, data: bytes):
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(path, obj, indent: bool = True):
    """Write ``obj`` as UTF-8 JSON (numpy scalars and arrays allowed)."""
    option = orjson.OPT_SERIALIZE_NUMPY | (orjson.OPT_INDENT_2 if indent else 0)
    write_bytes_atomic(path, orjson.dumps(obj, option=option) + b"\n")


def write_csv_atomic(path, rows: list[dict], columns: list[str]):
    """Write ``rows`` as CSV with a header; list values are written as JSON text."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(row.get(k)) for k in columns})
    write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))


def _csv_cell(value):
    if isinstance(value, (list, tuple, dict)):
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    return value


def save_image_atomic(path, image, **save_kwargs):
    """Save a PIL image atomically; the format comes from the target's extension."""
    path = Path(path)
    fmt = save_kwargs.pop("format", None) or _format_for(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            image.save(f, format=fmt, **save_kwargs)
            f.flush()
            os.fsync(f.fileno())


def _format_for(path: Path) -> str:
    ext = path.suffix.lower()
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}
    if ext not in formats:
        raise UserError("unsupported image extension", path)
    return formats[ext]
