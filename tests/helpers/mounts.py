"""Real file-system failures for the tests: a script run in a private mount namespace (``unshare``,
as root: the tests and CI run as root, for whom ``chmod`` does not make a folder read-only) after a
few shell commands mount a read-only or a nearly full tmpfs. The mounts vanish with the process."""

import shlex
import subprocess
import sys

from tests.helpers.scripts import ROOT


def run_script_with_mounts(setup: list[str], script, *args, timeout=600) -> subprocess.CompletedProcess:
    """Run SCRIPT with ARGS as run_script does, in a new mount namespace once the shell commands SETUP
    (see read_only_copy, read_only_folder, full_disk_copy) have run there."""
    shell = "set -e\n" + "\n".join(setup) + '\nexec "$@"'
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", shell, "sh",
               sys.executable, str(ROOT / script), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def read_only_folder(path) -> list[str]:
    """PATH becomes an empty folder on a read-only file system (EROFS on every write)."""
    path = shlex.quote(str(path))
    return [f"mkdir -p {path}", f"mount -t tmpfs -o ro,size=1m tmpfs {path}"]


def read_only_copy(source, path) -> list[str]:
    """PATH holds a copy of SOURCE on a read-only file system."""
    path = shlex.quote(str(path))
    return [f"mkdir -p {path}", f"mount -t tmpfs -o size=256m tmpfs {path}", f"cp -a {shlex.quote(str(source))}/. {path}/",
            f"mount -o remount,ro {path}"]


def full_disk_copy(source, path) -> list[str]:
    """PATH holds a copy of SOURCE on a file system with no space left (ENOSPC on the first write that needs a block)."""
    path = shlex.quote(str(path))
    return [f"mkdir -p {path}", f"mount -t tmpfs -o size=256m tmpfs {path}", f"cp -a {shlex.quote(str(source))}/. {path}/",
            f"head -c 300m /dev/zero > {path}/.filler 2>/dev/null || true"]
