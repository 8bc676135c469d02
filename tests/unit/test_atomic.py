"""Atomic writes: the target is whole or absent, and no temp file is left behind."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from PIL import Image

from cocoaug.atomic import (UMASK, atomic_folder, atomic_path, naming_os_errors, remove_stale_temp_files, remove_temp_files,
                            save_image_atomic, write_csv_atomic, write_json_atomic)
from cocoaug.errors import UserError


def test_json_csv_and_image_are_written(tmp_path):
    write_json_atomic(tmp_path / "a" / "x.json", [{"k": [1, 2]}])
    assert json.loads((tmp_path / "a" / "x.json").read_text()) == [{"k": [1, 2]}]
    write_csv_atomic(tmp_path / "x.csv", [{"k": [1, 2], "t": "hi, there"}], ["k", "t"])
    assert (tmp_path / "x.csv").read_text().splitlines() == ["k,t", '"[1,2]","hi, there"']
    save_image_atomic(tmp_path / "x.png", Image.new("RGB", (3, 2), (1, 2, 3)))
    assert Image.open(tmp_path / "x.png").getpixel((2, 1)) == (1, 2, 3)
    assert sorted(os.listdir(tmp_path)) == ["a", "x.csv", "x.png"]
    assert os.listdir(tmp_path / "a") == ["x.json"]


def test_exception_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["x.json"]


def test_full_disk_is_a_user_error(tmp_path):
    target = tmp_path / "x.json"
    with pytest.raises(UserError, match="no space left on device") as info:
        with atomic_path(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(target) in str(info.value)
    assert os.listdir(tmp_path) == []


def test_killed_writer_leaves_no_partial_target(tmp_path):
    """A process killed mid-write (SIGKILL) leaves at most a hidden temp file, never the target;
    remove_temp_files removes it and nothing else."""
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from cocoaug.atomic import atomic_path
        with atomic_path({str(tmp_path / "big.bin")!r}) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"x" * 1000)
                f.flush()
                print("writing", flush=True)
                time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "big.bin").exists()
    assert all(name.startswith(".big.bin.") for name in os.listdir(tmp_path))
    assert len(os.listdir(tmp_path)) == 1
    (tmp_path / ".big.bin.x.tmp.png").write_bytes(b"")  # not a temp file of atomic_path
    (tmp_path / ".big.bin2.abc.tmp").write_bytes(b"")  # another target's
    assert remove_temp_files(tmp_path / "big.bin") == 1
    assert sorted(os.listdir(tmp_path)) == [".big.bin.x.tmp.png", ".big.bin2.abc.tmp"]


def test_written_files_get_the_permissions_of_a_plain_open(tmp_path):
    # mkstemp alone would leave 0o600: unreadable to the rest of a team sharing the dataset.
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    write_json_atomic(tmp_path / "a.json", {"a": 1})
    save_image_atomic(tmp_path / "a.png", Image.new("RGB", (4, 4)))
    for written in ("a.json", "a.png"):
        assert (tmp_path / written).stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


DEAD_PID = 4194305  # above the largest pid Linux gives (pid_max is at most 2**22)


def test_stale_temp_files_of_dead_writers_are_removed_once_per_folder(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    stale = [".blip2.csv.abcd1234.tmp",  # an older version's name: no pid
             f".blip2_post.json.k3j2h1g9.{DEAD_PID}.tmp", f"sub/deeper/.a.jpg.zz_99xy0.{DEAD_PID}.tmp"]
    kept = [f".picks.json.abcd1234.{os.getpid()}.tmp",  # its writer (this process) is still running
            ".notes.tmp", "blip2.csv", ".hidden.x.tmp.png", "sub/a.jpg"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x")
    assert remove_stale_temp_files(tmp_path) == 2
    assert (tmp_path / stale[2]).exists()
    assert remove_stale_temp_files(tmp_path, recursive=True) == 1
    remaining = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert remaining == sorted(kept)


def test_only_the_named_targets_temp_files_are_removed(tmp_path):
    names = [f".1_0001.png.abcd1234.{DEAD_PID}.tmp", f".2_0002.png.abcd1234.{DEAD_PID}.tmp"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert remove_stale_temp_files(tmp_path, {"1_0001.png", "9_0009.png"}) == 1
    assert os.listdir(tmp_path) == [names[1]]
    assert remove_temp_files(tmp_path / "2_0002.png") == 1 and os.listdir(tmp_path) == []
    assert remove_stale_temp_files(tmp_path / "absent") == 0


def test_a_linked_folder_is_not_entered(tmp_path):
    """Stage 4's images/original/ may be a symbolic link to the user's image folder: nothing there is touched."""
    users = tmp_path / "users"
    users.mkdir()
    (users / f".a.jpg.abcd1234.{DEAD_PID}.tmp").write_bytes(b"x")
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "original").symlink_to(users, target_is_directory=True)
    assert remove_stale_temp_files(tmp_path / "final", recursive=True) == 0
    assert len(os.listdir(users)) == 1


def test_an_os_error_of_a_write_names_the_target_not_the_temp_file(tmp_path):
    target = tmp_path / "x.json"
    with pytest.raises(OSError) as info:
        with atomic_path(target) as tmp:
            raise OSError(errno.EROFS, "Read-only file system", str(tmp))
    assert info.value.filename == str(target)
    assert os.listdir(tmp_path) == []
    with pytest.raises(OSError) as info:
        with naming_os_errors(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.filename == str(target)


def tree(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "labels"
    with atomic_folder(target) as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.txt").write_bytes(b"1")
        (tmp / "b.txt").write_bytes(b"2")
        assert not target.exists()  # nobody sees the folder before it is whole
    assert tree(target) == {"sub/a.txt": b"1", "b.txt": b"2"}
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(target) as tmp:
            (tmp / "c.txt").write_bytes(b"3")
            raise KeyboardInterrupt
    assert tree(target) == {"sub/a.txt": b"1", "b.txt": b"2"} and os.listdir(tmp_path) == ["labels"]
    with atomic_folder(target) as tmp:
        (tmp / "c.txt").write_bytes(b"3")
    assert tree(target) == {"c.txt": b"3"} and os.listdir(tmp_path) == ["labels"]  # the old folder is gone
    assert target.stat().st_mode & 0o777 == 0o777 & ~UMASK  # as a plain mkdir makes it, not mkdtemp's 0o700


def test_a_killed_folder_writer_leaves_a_temp_folder_that_the_next_run_removes(tmp_path):
    code = textwrap.dedent(f"""
        import os, signal
        from cocoaug.atomic import atomic_folder
        with atomic_folder({str(tmp_path / "final" / "labels")!r}) as tmp:
            (tmp / "a.txt").write_bytes(b"x")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert result.returncode == -signal.SIGKILL
    left = os.listdir(tmp_path / "final")
    assert len(left) == 1 and left[0].startswith(".labels.") and left[0].endswith(".tmp")
    assert remove_stale_temp_files(tmp_path, recursive=True) == 1
    assert os.listdir(tmp_path / "final") == []
