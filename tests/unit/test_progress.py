"""cocoaug.progress: a tqdm bar on a terminal, one summary line in a log; and --debug shows this project's debug
lines, not those of PIL."""

import io
import os
import logging

import pytest
from PIL import Image

from cocoaug import progress as progress_module
from cocoaug.cli import add_debug
from cocoaug.progress import LineProgress, progress
from cocoaug.runtime import run_cli


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_a_tqdm_bar(monkeypatch):
    from tqdm import tqdm

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with progress(total=3, desc="boxes", unit="image") as bar:
        assert isinstance(bar, tqdm)
        bar.update(3)
    assert "boxes: 100%" in terminal.getvalue() and "\r" in terminal.getvalue()


def test_a_log_gets_one_line_when_the_loop_ends(monkeypatch, caplog):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    caplog.set_level(logging.INFO, logger="cocoaug")
    items = list(progress(range(5), desc="boxes", unit="image"))
    assert items == [0, 1, 2, 3, 4]
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == ["boxes: 5 images"]
    caplog.clear()
    with progress(total=4, desc="captioning", unit="image") as bar:
        assert isinstance(bar, LineProgress)
        bar.update(3)
    assert caplog.records[0].getMessage().startswith("captioning: 3 of 4 images in ")
    caplog.clear()
    assert list(progress([], desc="overviews")) == [] and not caplog.records  # an empty loop says nothing
    assert list(progress([1, 2], desc="quiet", disable=True)) == [1, 2] and not caplog.records
    assert progress_module.on_terminal() is False


def test_debug_shows_the_project_lines_not_pils(tmp_path, capfd):
    import argparse

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    parser = argparse.ArgumentParser()
    add_debug(parser)

    def main(args):
        logging.getLogger("cocoaug").debug("our debug line")
        with Image.open(tmp_path / "a.png") as image:
            image.load()  # PIL logs each PNG chunk at debug level

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []
    try:
        run_cli(main, parser, ["--debug"])
    finally:
        root.handlers, root.level = handlers, level
        logging.getLogger("cocoaug").setLevel(logging.NOTSET)
    err = capfd.readouterr().err
    assert "DEBUG: our debug line" in err and "STREAM" not in err and "IHDR" not in err


def test_in_a_log_the_libraries_bars_are_off_too(monkeypatch):
    import argparse

    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "")  # so that the test's end restores the variable as it was
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    monkeypatch.setattr("sys.stderr", io.StringIO())
    seen = []
    run_cli(lambda args: seen.append(os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")), argparse.ArgumentParser(), [])
    assert seen == ["1"]  # transformers' "Loading weights" bar reads it when it is imported
