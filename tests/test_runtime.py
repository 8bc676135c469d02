"""cocoaug.runtime.run_cli: how a stage run ends for the user."""

import argparse

import pytest
import torch

from cocoaug.errors import UserError
from cocoaug.cli import add_debug
from cocoaug.runtime import run_cli


def parser_with_batch_size() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=8)
    add_debug(parser)
    return parser


def raising(exc):
    def main(args):
        raise exc
    return main


def test_a_user_error_is_one_line_and_exit_code_2(capsys):
    with pytest.raises(SystemExit) as ended:
        run_cli(raising(UserError("image file not found", "images/a.jpg")), parser_with_batch_size(), [])
    assert ended.value.code == 2
    assert capsys.readouterr().err == "error: image file not found (images/a.jpg)\n"


def test_out_of_gpu_memory_names_the_batch_size(capsys):
    with pytest.raises(SystemExit) as ended:
        run_cli(raising(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")),
                parser_with_batch_size(), ["--batch-size", "16"])
    assert ended.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: out of GPU memory") and err[0].endswith("(--batch-size 16)")


def test_debug_keeps_the_traceback_and_bugs_always_do():
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run_cli(raising(torch.cuda.OutOfMemoryError("CUDA out of memory")), parser_with_batch_size(), ["--debug"])
    with pytest.raises(UserError):
        run_cli(raising(UserError("bad")), parser_with_batch_size(), ["--debug"])
    with pytest.raises(ZeroDivisionError):
        run_cli(raising(ZeroDivisionError()), parser_with_batch_size(), [])


def test_an_interrupt_says_how_to_resume(capsys):
    with pytest.raises(SystemExit) as ended:
        run_cli(raising(KeyboardInterrupt()), parser_with_batch_size(), [])
    assert ended.value.code == 130
    assert "run the same command again to resume" in capsys.readouterr().err
