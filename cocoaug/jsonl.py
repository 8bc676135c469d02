"""JSON Lines files (``manifest.jsonl``, ``scores.jsonl``, the scorer's and stage 1's partial files):
one JSON object per line, each decoded through its format's schema, read with the number of the
line at fault.

A run killed in mid-write leaves its last line cut short, with no newline after it. Readers drop
such a line with a warning (the scorer and stage 1 then redo its picture; stage 2 rebuilds its
manifest from the PNGs), and ``open_for_append`` cuts it off
before a rerun appends, so that the rerun's first line is not glued onto the fragment.
"""

import logging
from pathlib import Path

import orjson

from cocoaug.errors import UserError
from cocoaug.schema import convert

log = logging.getLogger("cocoaug")


def read_jsonl(path, what: str, schema, id_key: str = "file_name") -> list[dict]:
    """The objects of the JSON Lines file ``path`` in order, each checked by ``schema`` (a msgspec Struct).

    Blank lines are skipped, and so is a last line cut short (with a warning). Any other line that
    is not valid JSON or breaks the schema is a UserError naming ``what`` ("the manifest"), the line
    number, the entry's ``id_key`` when it has one, and the field.
    """
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop() if lines else b""  # everything after the last newline: b"" in a complete file
    if torn.strip():
        try:
            orjson.loads(torn)
            lines.append(torn)
        except orjson.JSONDecodeError:
            log.warning("%s: dropped its last line (line %d), cut short by an interrupted run", path, len(lines) + 1)
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise UserError(f"line {number} of {what} is not valid JSON: {exc}", path) from None
        name = entry.get(id_key) if isinstance(entry, dict) else None
        where = f"line {number} of {what}" + (f" ({name})" if isinstance(name, str) and "\0" not in name and len(name) < 100 else "")
        if not isinstance(entry, dict):
            raise UserError(f"{where} is not a JSON object", path)
        convert(entry, schema, path, where)
        entries.append(entry)
    return entries


def open_for_append(path):
    """Open the JSON Lines file ``path`` to append lines to (created if missing), first cutting off a
    last line that a killed run left unfinished; a complete last line without its newline gets one."""
    path = Path(path)
    if path.is_file():
        with open(path, "r+b") as f:
            size = f.seek(0, 2)
            cut, chunk = 0, 1 << 16
            f.seek(max(0, size - 1))
            if size and f.read(1) != b"\n":
                end = size
                while end > 0:
                    start = max(0, end - chunk)
                    f.seek(start)
                    newline = f.read(end - start).rfind(b"\n")
                    if newline >= 0:
                        cut = start + newline + 1
                        break
                    end = start
                f.seek(cut)
                try:
                    orjson.loads(f.read())
                    f.write(b"\n")
                except orjson.JSONDecodeError:
                    log.info("%s: cut off its last line, left unfinished by an interrupted run", path)
                    f.truncate(cut)
    return open(path, "ab")
