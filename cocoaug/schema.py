"""The typed fields the on-disk formats share, and how a format's schema reads and names its errors.

Each format's own module declares its entries as a ``msgspec.Struct`` built from these field
types (``records.Record``, ``generated.ManifestEntry``, ``scores.ScoreEntry``,
``picks.PicksDocument``); ``convert`` turns parsed JSON into them and msgspec's
``Expected `int`, got `str` - at `$[3].category_id``` into one readable line:
``record 3 (image_id 101): category_id must be an integer, got '../../../ESCAPED'``.

Ranges: ids are ints from 0 to 2**63 - 1 (a bool is not an int); sizes are positive ints;
numbers are finite (NaN and infinity are refused); normalised coordinates lie in [0, 1];
labels hold at least one non-space character; file names are relative paths with no ``..``,
no NUL byte and no absolute or drive part (``cocoaug.paths.name_problem``).
"""

import re
import sys
from typing import Annotated, Callable

import msgspec

from cocoaug.errors import UserError
from cocoaug.paths import name_problem, plain_name_problem

MAX_ID = 2**63 - 1  # ids go into int64 columns
_FINITE = sys.float_info.max

Id = Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0, le=MAX_ID)]
FiniteFloat = Annotated[float, msgspec.Meta(ge=-_FINITE, le=_FINITE)]  # NaN fails both bounds
UnitFloat = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Label = Annotated[str, msgspec.Meta(pattern=r"\S")]
BoxXYXYNorm = tuple[UnitFloat, UnitFloat, UnitFloat, UnitFloat]  # [x0, y0, x1, y1], normalised
FiniteBox = tuple[FiniteFloat, FiniteFloat, FiniteFloat, FiniteFloat]


def check_box_xyxy(box, what: str = "box"):
    """Raise ValueError unless ``box`` ([x0, y0, x1, y1]) has x1 > x0 and y1 > y0 (inside a Struct's __post_init__)."""
    if not (box[2] > box[0] and box[3] > box[1]):
        raise ValueError(f"{what} must have x1 > x0 and y1 > y0, got {list(box)}")


def check_name(name: str, what: str = "file_name", plain: bool = False):
    """Raise ValueError unless ``name`` is a relative path (``plain``: a bare name with no folder)."""
    problem = plain_name_problem(name) if plain else name_problem(name)
    if problem is not None:
        raise ValueError(f"{what} {problem}, got {_shown(name)}")


def convert(data, schema, source, where: str | Callable[[int, object], str] = ""):
    """``data`` (parsed JSON) decoded as ``schema``; a violation is a UserError naming ``source`` and the field.

    ``where`` names the entry: a string ("line 4"), or for a list a function of (index, item)
    that names its entry ("record 3 (image_id 101)").
    """
    try:
        return msgspec.convert(data, schema)
    except msgspec.ValidationError as exc:
        raise UserError(readable_error(str(exc), data, where), source) from None


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_STEP = re.compile(r"\[(\d+)\]|\.([^.\[]+)")
_EXPECTED = re.compile(r"^Expected `(?P<type>[^`]+)`(?P<rule>.*?)(?:, got `?(?P<got>[^`]*)`?)?$", re.S)
_KINDS = {"int": "an integer", "float": "a number", "str": "a string", "array": "a list", "object": "an object",
          "bool": "true or false", "null": "null"}


def readable_error(error: str, data, where: str | Callable[[int, object], str] = "") -> str:
    """msgspec's ``Expected `int`, got `str` - at `$[3].category_id``` as
    ``record 3 (image_id 101): category_id must be an integer, got '../../../ESCAPED'``."""
    match = _AT.match(error)
    message, steps = match["message"], [int(i) if i else key for i, key in _STEP.findall(match["path"] or "")]
    entry = where if isinstance(where, str) else ""
    if callable(where) and steps and isinstance(steps[0], int):
        entry = where(steps[0], _lookup(data, steps[:1]))
        value, steps = _lookup(data, steps), steps[1:]
    else:
        value = _lookup(data, steps)
    field = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps).lstrip(".")
    missing = re.match(r"Object missing required field `(.+)`", message)
    expected = _EXPECTED.match(message)
    if missing:
        text = f"{field + '.' if field else ''}{missing[1]} is missing"
    elif expected:
        text = f"{field or 'the value'} must be {_wanted(expected['type'], expected['rule'].strip())}, got {_shown(value)}"
    elif message.startswith("Object contains unknown field"):
        text = f"{field + ': ' if field else ''}{message[0].lower()}{message[1:]}"
    else:  # a __post_init__ check: its message names the field
        text = f"{field + ': ' if field else ''}{message}"
    return f"{entry}: {text}" if entry else text


def _wanted(kind: str, rule: str) -> str:
    if "regex" in rule and "\\S" in rule or rule == "of length >= 1":
        return "a non-empty string" if kind == "str" else "a non-empty list"
    if kind == "float" and "e+308" in rule:
        return "a finite number"
    return f"{' or '.join(_KINDS.get(k, k) for k in kind.split(' | '))} {rule}".strip()


def _lookup(data, steps):
    for step in steps:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _shown(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def item_namer(kind: str, id_key: str | None) -> Callable[[int, object], str]:
    """A ``where`` for ``convert`` that names a list's entry: ``record 3 (image_id 101)``."""
    def name(index: int, item) -> str:
        value = item.get(id_key) if id_key and isinstance(item, dict) else None
        known = isinstance(value, int) and not isinstance(value, bool)
        return f"{kind} {index}" + (f" ({id_key} {value})" if known else "")
    return name
