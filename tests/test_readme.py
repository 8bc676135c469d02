"""README.md matches the code: every flag it shows for a script is in that script's parser, every
repository file it names exists, and every `make` target it shows is in the Makefile."""

import importlib.util
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
REPO_FOLDERS = ("scripts", "tests", "cocoaug", "benchmarks", "docs", ".ci")  # a path starting here is the repository's
SHELL_BLOCKS = ("bash", "sh", "shell", "console")
FLAG = re.compile(r"^(--?[A-Za-z][\w-]*)(=.*)?$")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def inline_spans(text: str) -> list[str]:
    """Inline code spans, outside the fenced blocks."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.findall(r"`([^`\n]+)`", prose)


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) of each `## ` section; a body includes its `### ` subsections."""
    parts = re.split(r"^## (.*)$", text, flags=re.MULTILINE)
    return list(zip(parts[1::2], parts[2::2]))


def commands(shell_text: str) -> list[list[str]]:
    """The simple commands of one shell line, split at `&&`, `;`, `|` and `&`, comments dropped."""
    lexer = shlex.shlex(shell_text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    found, current = [], []
    for token in lexer:
        if token and set(token) <= set(";&|"):
            found, current = found + [current], []
        else:
            current.append(token)
    return [c for c in found + [current] if c]


def is_repo_path(token: str) -> bool:
    """A path inside this repository (as opposed to a user's file such as out/final/annotations.json)."""
    return "/" in token and token.split("/")[0] in REPO_FOLDERS


def script_call(command: list[str]) -> tuple[str, list[str]] | None:
    """(script, flags after it) when the command runs one of this repository's scripts: one at
    the root, in scripts/ or in benchmarks/ (not a test file given to pytest, not another
    project's script such as MMDetection's tools/train.py)."""
    for k, token in enumerate(command[1:], start=2):
        if token.endswith(".py"):
            if "/" in token and token.split("/")[0] not in ("scripts", "benchmarks"):
                return None
            return token, [m.group(1) for m in map(FLAG.match, command[k:]) if m]
    return None


@cache
def parser_options(script: str) -> frozenset:
    """Every option string of the script's argparse parser (its build_parser())."""
    spec = importlib.util.spec_from_file_location(f"readme_{Path(script).stem}", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return frozenset(module.build_parser()._option_string_actions)


def shown_commands() -> list[list[str]]:
    blocks = [body for language, body in code_blocks(README) if language in SHELL_BLOCKS]
    spans = [span for span in inline_spans(README) if ".py" in span or span.startswith(("make ", "bash "))]
    lines = [line for text in blocks + spans for line in text.replace("\\\n", " ").splitlines()]
    return [c for line in lines for c in commands(line)]


def script_calls() -> list[tuple[str, list[str]]]:
    return [call for call in map(script_call, shown_commands()) if call]


def test_the_readme_runs_every_stage_script():
    scripts = {script for script, _ in script_calls()}
    for stage in ("generate_prompt_blip2.py", "generate_image_gligen.py", "draw_bboxes.py",
                  "finalize_selected_images.py", "evaluate_fid.py"):
        assert stage in scripts


@pytest.mark.parametrize("script", sorted({script for script, flags in script_calls() if flags}))
def test_flags_in_commands_exist_in_the_scripts_parser(script):
    assert (ROOT / script).is_file(), f"README runs {script}, which does not exist"
    shown = {flag for name, flags in script_calls() if name == script for flag in flags}
    unknown = sorted(shown - parser_options(script))
    assert not unknown, f"README shows {unknown} for {script}, which its parser lacks"


def section_flags() -> list[tuple[str | None, str]]:
    """(the section's script or None, flag) for every inline span that starts with a flag."""
    found = []
    for heading, body in sections(README):
        scripts = [s for s in re.findall(r"`([\w/]+\.py)`", heading) if (ROOT / s).is_file()]
        for span in inline_spans(body):
            words = span.split()
            if ".py" in span or not words:
                continue  # a command: test_flags_in_commands_exist_in_the_scripts_parser checks it
            match = FLAG.match(words[0])
            if match:
                found.append((scripts[0] if scripts else None, match.group(1)))
    return found


def test_flags_in_the_text_exist():
    """A flag named in a script's section is in that script's parser; elsewhere, in some stage script's."""
    stages = ["generate_prompt_blip2.py", "generate_image_gligen.py", "draw_bboxes.py",
              "finalize_selected_images.py", "evaluate_fid.py"]
    any_stage = frozenset().union(*map(parser_options, stages))
    flags = section_flags()
    assert len(flags) > 50  # the flag tables were found
    unknown = sorted({(script, flag) for script, flag in flags
                      if flag not in (parser_options(script) if script else any_stage)}, key=str)
    assert not unknown, f"README names flags that the parsers lack: {unknown}"


def named_paths() -> set[str]:
    """Repository files the README names: paths under the repository's folders, root scripts it
    runs or quotes, bare file names such as `requirements.txt`, and relative links."""
    tokens = [t for c in shown_commands() for t in c]
    tokens += [t for span in inline_spans(README) for t in span.split()]
    paths = {t.rstrip(".,:;)") for t in tokens if is_repo_path(t)}
    paths |= {script for script, _ in script_calls()}
    paths |= {span for span in inline_spans(README) if re.fullmatch(r"[\w.-]+\.(py|sh|txt|md|ini)", span)}
    paths |= {link for link in re.findall(r"\]\(([^)#]+)\)", README) if "://" not in link}
    return paths


def test_named_files_exist():
    paths = named_paths()
    assert {"scripts/make_tiny_models.py", "scripts/demo.sh", "tests/test_generate_distributed.py"} <= paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"README names files that do not exist: {missing}"


def test_make_targets_exist():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    shown = {c[1] for c in shown_commands() if c[0] == "make" and len(c) > 1 and "=" not in c[1]}
    assert {"demo", "test"} <= shown
    assert shown <= targets, f"README shows make targets the Makefile lacks: {sorted(shown - targets)}"
