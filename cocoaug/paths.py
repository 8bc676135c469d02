"""Path checks: nothing is read or written outside the roots the user gave."""

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from cocoaug.errors import UserError


def name_problem(name) -> str | None:
    """Why ``name`` is not a plain relative path (absolute, a drive letter, ``..``, a NUL byte), or None.

    Only the name is looked at; no file is touched.
    """
    if not isinstance(name, str) or not name.strip():
        return "must be a non-empty string"
    if "\0" in name:
        return "holds a NUL byte"
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or PureWindowsPath(name).drive:
        return "is an absolute path; it must be relative to the image folder"
    if ".." in posix.parts:
        return "climbs out of the image folder with '..'"
    return None


def plain_name_problem(name) -> str | None:
    """Why ``name`` is not a plain file or folder name (``3_0101.png``: no folder part, not ``.``), or None."""
    problem = name_problem(name)
    if problem is None and ("/" in name or "\\" in name or name.strip() == "."):
        problem = "must be a plain name, with no folder in it"
    return problem


def check_relative_name(relative: str, what: str = "file_name") -> PurePosixPath:
    """Refuse a ``file_name`` that is not a plain relative path: absolute, a drive letter, ``..`` or a NUL byte."""
    problem = name_problem(relative)
    if problem is not None:
        raise UserError(f"{what} {problem}", repr(relative) if not isinstance(relative, str) or "\0" in relative else relative)
    return PurePosixPath(relative.replace("\\", "/"))


def check_inside(root, path) -> Path:
    """Return ``path`` if it resolves inside the folder ``root`` (links followed), else raise UserError.

    The one guard every script calls before writing a path built from input data (a record's
    ids, a picks file's names): whatever the schema let through, nothing lands outside ``-o``.
    """
    if "\0" in str(path):
        raise UserError("refusing to write a path with a NUL byte", repr(str(path)))
    real_root, real_path = os.path.realpath(root), os.path.realpath(path)
    if real_path == real_root or os.path.commonpath([real_root, real_path]) != real_root:
        raise UserError(f"refusing to write outside the output folder {root}", path)
    return Path(path)


def resolve_under(root, relative: str, what: str = "file_name") -> Path:
    """Join ``relative`` (a COCO ``file_name``) to ``root``, refusing escapes.

    Absolute paths, drive letters and ``..`` that climb out of ``root`` are refused, and so
    is a symbolic link inside ``root`` that points outside it.
    """
    posix = check_relative_name(relative, what)
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


def refuse_output_inside(outputs, picture_folders: dict):
    """Refuse an output folder that is, or lies inside, a folder the script reads pictures from.

    ``outputs``: the folders the script writes (one path or several); ``picture_folders``: a
    description such as ``"image folder"`` -> folder. Links count: both sides are resolved. A
    folder that merely holds an input *file* (``out/`` holding ``out/blip2_post.json``) is not a
    picture folder and is never passed here.
    """
    outputs = [outputs] if isinstance(outputs, (str, os.PathLike)) else list(outputs)
    for output in outputs:
        real_output = os.path.realpath(output)
        for what, folder in picture_folders.items():
            if folder is None:
                continue
            real_folder = os.path.realpath(folder)
            if os.path.commonpath([real_folder, real_output]) == real_folder:
                where = "is" if real_output == real_folder else "lies inside"
                raise UserError(f"the output folder {output} {where} the {what} {folder}, which this script reads "
                                "pictures from: choose an output folder outside it", f"-o {outputs[0]}")
