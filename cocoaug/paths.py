"""Path checks: nothing is read or written outside the roots the user gave."""

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from cocoaug.errors import UserError


def resolve_under(root, relative: str, what: str = "file_name") -> Path:
    """Join ``relative`` (a COCO ``file_name``) to ``root``, refusing escapes.

    Absolute paths, drive letters and ``..`` that climb out of ``root`` are refused, and so
    is a symbolic link inside ``root`` that points outside it.
    """
    if not isinstance(relative, str) or not relative.strip():
        raise UserError(f"{what} must be a non-empty string", repr(relative))
    posix = PurePosixPath(relative.replace("\\", "/"))
    if posix.is_absolute() or PureWindowsPath(relative).drive:
        raise UserError(f"{what} is an absolute path; it must be relative to the image folder", relative)
    if ".." in posix.parts:
        raise UserError(f"{what} climbs out of the image folder with '..'", relative)
    root = Path(root)
    path = root.joinpath(*posix.parts)
    real_root = os.path.realpath(root)
    real_path = os.path.realpath(path)
    if os.path.commonpath([real_root, real_path]) != real_root:
        raise UserError(f"{what} points outside the image folder through a link", relative)
    return path


def require_dir(path, what: str) -> Path:
    """Return ``path`` as a Path if it is an existing folder, else raise UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} does not exist", path)
    if not path.is_dir():
        raise UserError(f"{what} is not a folder", path)
    return path


def require_file(path, what: str) -> Path:
    """Return ``path`` as a Path if it is an existing file, else raise UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} does not exist", path)
    if not path.is_file():
        raise UserError(f"{what} is not a file", path)
    return path


def refuse_same_folder(output, *inputs):
    """Refuse an output folder that is, or lies inside, one of the input folders or files' folders."""
    out = os.path.realpath(output)
    for given in inputs:
        if given is None:
            continue
        folder = os.path.realpath(given)
        if os.path.isfile(folder):
            folder = os.path.dirname(folder)
        if out == folder:
            raise UserError("the output folder must differ from the input folder", output)
