"""JSON Lines files (``manifest.jsonl``, ``scores.jsonl``): one JSON object per line, read with
the number of the line at fault."""

import orjson

from cocoaug.errors import UserError


def read_jsonl_objects(path, what: str, required: dict[str, type]) -> list[dict]:
    """The objects of the JSON Lines file ``path`` in order, blank lines skipped.

    A line that is not valid JSON, not an object, or lacks a key of ``required`` (key -> type) is a
    UserError naming ``what`` ("the manifest") and the line number.
    """
    keys = f"a '{next(iter(required))}'" if len(required) == 1 else " and ".join(f"'{key}'" for key in required)
    entries = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise UserError(f"line {number} of {what} is not valid JSON: {exc}", path) from None
        if not isinstance(entry, dict) or not all(isinstance(entry.get(key), kind) for key, kind in required.items()):
            raise UserError(f"line {number} of {what} is not an object with {keys}", path)
        entries.append(entry)
    return entries
