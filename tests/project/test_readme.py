"""README.md and docs/*.md match the code: every flag they show for a script is in that script's
parser, every repository file and every link they name exists, and every `make` target they show
is in the Makefile. README.md stays a first page: at most 250 lines, linking every docs file."""

import importlib.util
import os
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

from tests.helpers.scripts import ROOT

README = "README.md"
DOCUMENTS = [README, *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250
STAGES = ["generate_prompt_blip2.py", "generate_image_gligen.py", "draw_bboxes.py",
          "finalize_selected_images.py", "finetune_detector.py", "evaluate_fid.py"]
REPO_FOLDERS = ("scripts", "tests", "cocoaug", "benchmarks", "docs", ".ci")  # a path starting here is the repository's
SHELL_BLOCKS = ("bash", "sh", "shell", "console")
FLAG = re.compile(r"^(--?[A-Za-z][\w-]*)(=.*)?$")
FENCED = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


@cache
def text(document: str) -> str:
    return (ROOT / document).read_text()


def code_blocks(markdown: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL)


def inline_spans(markdown: str) -> list[str]:
    """Inline code spans outside the fenced blocks; a span may run over a line break (not over
    a blank line), which becomes a space, as Markdown renders it."""
    prose = FENCED.sub("", markdown)
    return [span.replace("\n", " ") for span in re.findall(r"`((?:[^`\n]|\n(?!\s*\n))+)`", prose)]


def sections(markdown: str) -> list[tuple[str, str]]:
    """(heading, body) of the text before the first `## ` heading (heading "") and of each `## `
    section; a body includes its `### ` subsections."""
    parts = re.split(r"^## (.*)$", FENCED.sub("", markdown), flags=re.MULTILINE)
    return [("", parts[0])] + list(zip(parts[1::2], parts[2::2]))


def anchors(markdown: str) -> set[str]:
    """The link anchors of the document's headings, made as GitHub makes them."""
    headings = re.findall(r"^#{1,6} (.*)$", FENCED.sub("", markdown), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-") for heading in headings}


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


def shown_commands(document: str) -> list[list[str]]:
    """The commands of the document's shell blocks, and of its inline spans that run a script or make."""
    markdown = text(document)
    blocks = [body for language, body in code_blocks(markdown) if language in SHELL_BLOCKS]
    spans = [span for span in inline_spans(markdown) if ".py" in span or span.startswith(("make ", "bash "))]
    lines = [line for snippet in blocks + spans for line in snippet.replace("\\\n", " ").splitlines()]
    return [c for line in lines for c in commands(line)]


def script_calls(document: str) -> list[tuple[str, list[str]]]:
    return [call for call in map(script_call, shown_commands(document)) if call]


def test_the_readme_is_at_most_250_lines():
    lines = text(README).splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move reference material to docs/"


def test_the_readme_links_every_docs_file():
    linked = {os.path.normpath(link.split("#")[0]) for link in re.findall(r"\]\(([^)\s]+)\)", text(README))}
    unlinked = sorted(set(DOCUMENTS[1:]) - linked)
    assert len(DOCUMENTS) > 4 and not unlinked, f"README.md does not link {unlinked}"


def test_the_readme_runs_every_stage_script():
    scripts = {script for script, _ in script_calls(README)}
    assert set(STAGES) <= scripts, f"README.md's sequence lacks {sorted(set(STAGES) - scripts)}"


@pytest.mark.parametrize("document, script", sorted(
    {(document, script) for document in DOCUMENTS for script, flags in script_calls(document) if flags}))
def test_flags_in_commands_exist_in_the_scripts_parser(document, script):
    assert (ROOT / script).is_file(), f"{document} runs {script}, which does not exist"
    shown = {flag for name, flags in script_calls(document) if name == script for flag in flags}
    unknown = sorted(shown - parser_options(script))
    assert not unknown, f"{document} shows {unknown} for {script}, which its parser lacks"


def section_flags(document: str) -> list[tuple[str | None, str]]:
    """(the section's script or None, flag) for every inline span that starts with a flag."""
    found = []
    title = re.search(r"^# (.*)$", FENCED.sub("", text(document)), re.MULTILINE)
    for heading, body in sections(text(document)):
        # The section's script, else the one the document's title names (docs/scoring.md is all score_images.py's).
        scripts = [s for s in re.findall(r"`([\w/]+\.py)`", f"{heading} {title.group(1) if title else ''}") if (ROOT / s).is_file()]
        for span in inline_spans(body):
            words = span.split()
            if ".py" in span or not words:
                continue  # a command: test_flags_in_commands_exist_in_the_scripts_parser checks it
            match = FLAG.match(words[0])
            if match:
                found.append((scripts[0] if scripts else None, match.group(1)))
    return found


def test_the_flag_tables_are_found():
    assert len([flag for document in DOCUMENTS for flag in section_flags(document)]) > 100
    assert {script for script, _ in section_flags("docs/steps.md")} >= set(STAGES)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_flags_in_the_text_exist(document):
    """A flag named in a script's section is in that script's parser; elsewhere, in some stage script's."""
    any_stage = frozenset().union(*map(parser_options, STAGES))
    unknown = sorted({(script, flag) for script, flag in section_flags(document)
                      if flag not in (parser_options(script) if script else any_stage)}, key=str)
    assert not unknown, f"{document} names flags that the parsers lack: {unknown}"


def named_paths(document: str) -> set[str]:
    """Repository files the document names, relative to the repository root: paths under the
    repository's folders, root scripts it runs or quotes, bare file names such as
    `requirements.txt`, and relative links (relative to the document's folder)."""
    markdown = text(document)
    tokens = [t for c in shown_commands(document) for t in c]
    tokens += [t for span in inline_spans(markdown) for t in span.split()]
    paths = {t.rstrip(".,:;)") for t in tokens if is_repo_path(t)}
    paths |= {script for script, _ in script_calls(document)}
    paths |= {span for span in inline_spans(markdown) if re.fullmatch(r"[\w.-]+\.(py|sh|txt|md|ini|toml)", span)}
    folder = Path(document).parent
    paths |= {os.path.normpath(folder / link.split("#")[0]) for link in re.findall(r"\]\(([^)\s]+)\)", markdown)
              if "://" not in link and not link.startswith("#")}
    return paths


def test_named_files_are_found():
    paths = set().union(*map(named_paths, DOCUMENTS))
    assert {"scripts/make_tiny_models.py", "scripts/demo.sh", "requirements.txt", "pyproject.toml",
            "docs/steps.md", "BENCHMARKS.md", "README.md"} <= paths


@pytest.mark.parametrize("document", DOCUMENTS)
def test_named_files_exist(document):
    missing = sorted(p for p in named_paths(document) if not (ROOT / p).exists())
    assert not missing, f"{document} names files that do not exist: {missing}"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_link_anchors_exist(document):
    """A link to a heading (`steps.md#step-2-...`) points at a heading that is there."""
    folder = Path(document).parent
    broken = []
    for link in re.findall(r"\]\(([^)\s]+#[^)\s]*)\)", text(document)):
        target, anchor = link.split("#", 1)
        if "://" in target:
            continue
        target_path = os.path.normpath(folder / target) if target else document
        if (ROOT / target_path).is_file() and anchor not in anchors((ROOT / target_path).read_text()):
            broken.append(link)
    assert not broken, f"{document} links headings that do not exist: {broken}"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_make_targets_exist(document):
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE))
    shown = {c[1] for c in shown_commands(document) if c[0] == "make" and len(c) > 1 and "=" not in c[1]}
    if document == README:
        assert {"setup", "demo", "test"} <= shown
    assert shown <= targets, f"{document} shows make targets the Makefile lacks: {sorted(shown - targets)}"
