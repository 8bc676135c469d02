"""Atomic writes: a temp file in the destination folder, flushed, then renamed over the target.

A reader never sees a half-written file, and an interrupted write leaves only the old file
(or none), never a truncated one. A folder of many small files (stage 4's YOLO labels) is
written whole in a temp folder and renamed into place the same way (``atomic_folder``).
"""

import csv
import errno
import io
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

import shutil

import orjson

from cocoaug.errors import UserError

# mkstemp creates files readable by their owner only; outputs get the permissions a plain
# open() would give them (0o666 less the umask), so a team sharing a dataset can read them.
UMASK = os.umask(0)
os.umask(UMASK)
FILE_MODE = 0o666 & ~UMASK
TEMP_SUFFIX = ".tmp"
NO_SPACE_MESSAGE = ("no space left on device while writing: free some space, or choose an output folder on another disk, and run "
                    "the same command again to resume; finished outputs are kept")
# ".<target name>.<mkstemp's 8 random characters>.<writer's pid>.tmp"; files of older versions lack the pid.
TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}(?:\.(?P<pid>\d+))?" + re.escape(TEMP_SUFFIX) + "$")


@contextmanager
def atomic_path(path):
    """Yield a temp path beside ``path``; on success rename it to ``path``, else delete it.

    An OSError of the write names ``path`` (not the hidden temp file) for the ``error:`` line of
    cocoaug.runtime.run_cli.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=f".{os.getpid()}{TEMP_SUFFIX}", dir=path.parent)
    except OSError as exc:
        exc.filename = str(path)
        raise
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        _remove_quietly(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(NO_SPACE_MESSAGE, path) from exc
        if exc.filename in (None, tmp):
            exc.filename, exc.filename2 = str(path), None
        raise
    except BaseException:
        # KeyboardInterrupt and SystemExit included: never leave the temp file behind.
        _remove_quietly(tmp)
        raise


@contextmanager
def atomic_folder(path):
    """Yield a new temp folder beside ``path``; on success it takes the place of ``path`` (a folder, or
    nothing), else it is deleted.

    One rename per folder instead of one temp file per file: 100k small files are written in
    seconds, not minutes. The old folder is moved aside and deleted after the swap; a kill between
    the two renames leaves no ``path`` (a rerun writes it again) and temp folders that
    ``remove_stale_temp_files`` deletes. Files inside are not fsynced one by one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".{os.getpid()}{TEMP_SUFFIX}"
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=suffix, dir=path.parent))
        os.chmod(tmp, 0o777 & ~UMASK)
    except OSError as exc:
        exc.filename = str(path)
        raise
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=suffix, dir=path.parent))
            os.rmdir(old)  # a free name in the temp files' pattern, for the old folder
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UserError(NO_SPACE_MESSAGE, path) from exc
        if exc.filename is None or str(exc.filename).startswith(str(tmp)):
            exc.filename, exc.filename2 = str(path), None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def naming_os_errors(path):
    """Let an OSError raised inside (a write to an open file names no path) name ``path``."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def remove_temp_files(path) -> int:
    """Remove the temp files that interrupted writes to ``path`` left beside it (a killed process
    cannot clean up); returns how many. A temp file whose writer still runs is left alone."""
    path = Path(path)
    return remove_stale_temp_files(path.parent, {path.name})


def remove_stale_temp_files(folder, targets=None, recursive: bool = False) -> int:
    """Remove the temp files that killed runs left in ``folder`` (listed once), of every target or
    only those named in ``targets``, in its subfolders too with ``recursive``; returns how many.
    A temp file whose writer is still running on this machine (a concurrent run) is left alone."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    removed = 0
    for name in names:
        match = TEMP_NAME.match(name)
        if match is None or (targets is not None and match["target"] not in targets):
            continue
        if match["pid"] is not None and _is_running(int(match["pid"])):
            continue
        _remove_quietly(Path(folder) / name)  # a temp folder of atomic_folder too
        removed += 1
    if recursive:
        for name in os.listdir(folder) if removed else names:
            if os.path.isdir(os.path.join(folder, name)) and not os.path.islink(os.path.join(folder, name)):
                removed += remove_stale_temp_files(os.path.join(folder, name), targets, recursive=True)
    return removed


def _is_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _remove_quietly(path):
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
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
