"""The review server as the server and browser tests start it: ``draw_bboxes.py ... --serve --port 0``
in a subprocess, its URL read from what it prints, and a clean stop with Ctrl-C (SIGINT)."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.scripts import ROOT, default_sigint


def start_server(*draw_args, log_path: Path, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Run stage 3 with --serve on a free port of 127.0.0.1; returns the process and the page's URL."""
    stderr = open(log_path, "w")
    process = subprocess.Popen([sys.executable, str(ROOT / "draw_bboxes.py"), *map(str, draw_args), "--serve", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT,
                               preexec_fn=default_sigint)
    stderr.close()
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(r"serving the review page at (http://127\.0\.0\.1:\d+/)", line)
        if match:
            process.printed_before_serving = seen  # what it said until the URL
            return process, match.group(1)
    process.kill()
    raise AssertionError("the server did not start:\n" + "".join(seen) + Path(log_path).read_text()[-3000:])


def stop_server(process: subprocess.Popen) -> tuple[int, str]:
    """Ctrl-C; returns the exit code and what it printed after the URL."""
    process.send_signal(signal.SIGINT)
    try:
        rest, _ = process.communicate(timeout=120)  # a loaded machine can take a while to shut the server down
    except subprocess.TimeoutExpired:
        process.kill()
        rest, _ = process.communicate()
    return process.returncode, rest
