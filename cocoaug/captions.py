"""Caption text helpers of stage 1's `post_process`: tidying, plurals and count phrases, label
and word matching, and the --rules file of replacements."""

import re

from cocoaug.coco import read_json
from cocoaug.errors import UserError

DANGLING_WORDS = {"a", "an", "the", "and", "or", "with", "of", "on", "in", "at", "to", "for", "from", "by", "is", "are"}
NUMBER_WORDS = ["zero", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def tidy_caption(text: str) -> str:
    """Trim, collapse whitespace, cut an unfinished second sentence and dangling end words."""
    text = " ".join(text.split())
    ends = [m.end() for m in re.finditer(r"[.!?](?=\s)", text)]
    if ends:
        text = text[: ends[-1]]
    words = text.rstrip(" ,;:-").split(" ")
    while words and words[-1].lower() in DANGLING_WORDS:
        words.pop()
    return " ".join(words).rstrip(" ,;:-")


def plural(noun: str) -> str:
    """Simple English plural of the last word: +s, +es after s/x/z/ch/sh, y -> ies after a consonant."""
    if re.search(r"(s|x|z|ch|sh)$", noun):
        return noun + "es"
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    return noun + "s"


def count_phrase(count: int, label: str) -> str:
    """``1, "apple"`` -> "an apple", ``2, "cat"`` -> "two cats", ``12, "box"`` -> "12 boxes"."""
    if count == 1:
        return ("an " if label[:1].lower() in "aeiou" else "a ") + label
    number = NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else str(count)
    return f"{number} {plural(label)}"


def word_pattern(word: str) -> re.Pattern:
    """Case-insensitive whole-word match of ``word`` or its plural; spaces match any whitespace."""
    forms = sorted({word, plural(word)}, key=len, reverse=True)
    alternatives = "|".join(r"\s+".join(map(re.escape, form.split())) for form in forms)
    return re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)


def apply_rules(text: str, record: dict, rules: list[dict]) -> str:
    """Apply the --rules replacements in order; a rule with ``labels`` only where a label matches."""
    labels = {label.lower() for label in record["labels"]}
    for rule in rules:
        if rule["labels"] and not labels & rule["labels"]:
            continue
        text = rule["compiled"].sub(rule["replacement"], text)
    return " ".join(text.split())


def load_rules(path) -> list[dict]:
    """Read and check a --rules file: a JSON list of {pattern, replacement, regex, labels}."""
    if path is None:
        return []
    rules = read_json(path, "rules file")
    if not isinstance(rules, list):
        raise UserError("rules file must be a JSON list of {pattern, replacement, regex, labels}", path)
    checked = []
    for index, rule in enumerate(rules):
        where = f"{path}, rule {index}"
        if not isinstance(rule, dict) or not isinstance(rule.get("pattern"), str) or not rule["pattern"]:
            raise UserError("a rule needs a non-empty string 'pattern'", where)
        if not isinstance(rule.get("replacement", ""), str) or not isinstance(rule.get("regex", False), bool):
            raise UserError("'replacement' must be a string and 'regex' true or false", where)
        labels = rule.get("labels", [])
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise UserError("'labels' must be a list of category names", where)
        unknown = set(rule) - {"pattern", "replacement", "regex", "labels"}
        if unknown:
            raise UserError(f"unknown key(s) {sorted(unknown)}", where)
        try:
            pattern = rule["pattern"] if rule.get("regex") else rf"\b{re.escape(rule['pattern'])}\b"
            compiled = re.compile(pattern, 0 if rule.get("regex") else re.IGNORECASE)
        except re.error as exc:
            raise UserError(f"invalid regular expression: {exc}", where) from None
        checked.append({"compiled": compiled, "replacement": rule.get("replacement", ""),
                        "labels": {label.lower() for label in labels}})
    return checked
