"""cocoaug.runtime.run_cli: how a stage run ends for the user."""

import argparse
import errno
import os
import shutil

import pytest
import torch

from cocoaug.errors import UserError
from cocoaug.cli import add_debug
from cocoaug.runtime import run_cli
from tests.helpers.scripts import run_script


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


@pytest.mark.parametrize("script, flags", [
    ("generate_prompt_blip2.py", ["--model", "Salesforce/blip2-opt-2.7b"]),
    ("generate_image_gligen.py", ["--mode", "generation"]),  # the default hub checkpoint
])
def test_an_unreachable_hub_ends_at_once_with_one_error_line(script, flags, sample_dataset, stage_outputs, tmp_path):
    """No retries for half a minute and no warning printed twice: one line naming the model, exit code 2."""
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf_home"))  # nothing listens on port 9; empty cache
    inputs = (["-a", sample_dataset / "annotations.json"] if script.startswith("generate_prompt")
              else ["-p", stage_outputs / "blip2_post.json"])
    result = run_script(script, "-i", sample_dataset / "images", *inputs, "-o", tmp_path / "out", *flags, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the hub (http://127.0.0.1:9"), result.stderr
    assert "not in the local cache" in lines[0] and "--model" in lines[0]
    assert "Retrying" not in result.stderr


def test_a_hub_model_in_the_local_cache_is_used_when_the_hub_is_unreachable(sample_dataset, tiny_models, tmp_path):
    snapshot = tmp_path / "hf_home" / "hub" / "models--someone--tiny-blip2" / "snapshots" / "0123abcd"
    shutil.copytree(tiny_models / "blip2", snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf_home"))
    result = run_script("generate_prompt_blip2.py", "-i", sample_dataset / "images",
                        "-a", sample_dataset / "annotations.json", "-o", tmp_path / "out", "--model", "someone/tiny-blip2",
                        "--limit", "1", "--max-new-tokens", "4", "--device", "cpu", "--dtype", "float32", env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "cannot be reached" in result.stderr and "using someone/tiny-blip2 from the local cache" in result.stderr
    assert (tmp_path / "out" / "blip2.json").is_file()


@pytest.mark.parametrize("exc, message", [
    (PermissionError(errno.EACCES, "Permission denied", "/data/out/blip2.json"),
     "error: permission denied: give this user access to it, or choose another output folder (/data/out/blip2.json)"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/out"),
     "error: read-only file system: choose an output folder on a writable disk (/mnt/ro/out)"),
    (OSError(errno.ENOSPC, "No space left on device", "/data/out/scores.partial.0.jsonl"),
     "error: no space left on device while writing: free some space, or choose an output folder on another disk, and run "
     "the same command again to resume; finished outputs are kept (/data/out/scores.partial.0.jsonl)"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/data/out/x.png"), "error: no space left on device while writing: "),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/data/out/blip2.json"),
     "error: a folder stands where a file is to be written: move it away or choose another output folder (/data/out/blip2.json)"),
])
def test_os_failures_a_user_fixes_are_one_error_line_naming_the_path(exc, message, capsys):
    with pytest.raises(SystemExit) as ended:
        run_cli(raising(exc), parser_with_batch_size(), [])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


@pytest.mark.parametrize("exc_type, code", [(FileExistsError, errno.EEXIST), (NotADirectoryError, errno.ENOTDIR)])
def test_a_file_where_an_output_folder_is_needed_is_named(exc_type, code, tmp_path, capsys):
    """mkdir reports the folder it wanted; the line names the file standing in the way."""
    (tmp_path / "out").write_text("a file")
    with pytest.raises(SystemExit) as ended:
        run_cli(raising(exc_type(code, os.strerror(code), str(tmp_path / "out" / "generation" / "x.png"))), parser_with_batch_size(), [])
    assert ended.value.code == 2
    assert capsys.readouterr().err == (f"error: a file stands where a folder is needed: move it away or choose another output "
                                       f"folder ({tmp_path / 'out'})\n")


def test_a_decompression_bomb_is_one_error_line_and_debug_keeps_the_traceback(capsys):
    from PIL import Image

    bomb = Image.DecompressionBombError("Image size (900000000 pixels) exceeds limit of 800000000 pixels")
    with pytest.raises(SystemExit) as ended:
        run_cli(raising(bomb), parser_with_batch_size(), [])
    assert ended.value.code == 2
    assert capsys.readouterr().err == "error: image too large to open: Image size (900000000 pixels) exceeds limit of 800000000 pixels\n"
    with pytest.raises(Image.DecompressionBombError):
        run_cli(raising(bomb), parser_with_batch_size(), ["--debug"])
    with pytest.raises(PermissionError):
        run_cli(raising(PermissionError(errno.EACCES, "Permission denied", "/x")), parser_with_batch_size(), ["--debug"])


def test_other_os_errors_stay_bugs():
    with pytest.raises(ConnectionResetError):
        run_cli(raising(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")), parser_with_batch_size(), [])
