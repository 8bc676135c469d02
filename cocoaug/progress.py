"""Progress of the stages' loops: a tqdm bar on a terminal, one summary line elsewhere.

In a log file or a pipe a bar is a stream of ``\\r``-joined lines, so there the loop says only,
when it ends, how many items it did in how long. Every stage's loops over images go through
``progress``. Example::

    with progress(total=len(todo), desc="boxes", unit="image") as bar:
        for item in todo:
            ...
            bar.update(1)
"""

import logging
import sys
import time

log = logging.getLogger("cocoaug")


def on_terminal() -> bool:
    """True when stderr (where the bars go) is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


class LineProgress:
    """tqdm's ``update`` / ``set_postfix_str`` / context manager, printing one line at the end instead of a bar."""

    def __init__(self, iterable=None, total=None, desc: str = "", unit: str = "it", quiet: bool = False):
        self.iterable, self.desc, self.unit, self.quiet = iterable, desc, unit, quiet
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n, self.postfix, self.started, self.closed = 0, "", time.perf_counter(), False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.n += 1
        self.close()  # not after an error or a break: the error line is then the last one

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is not None:
            self.closed = True  # the error line is the last one
        self.close()

    def update(self, n: int = 1):
        self.n += n

    def set_postfix_str(self, text: str = "", refresh: bool = True):
        self.postfix = text

    def close(self):
        if self.closed:
            return
        self.closed = True
        if self.quiet or (not self.n and not self.total):
            return
        seconds = time.perf_counter() - self.started
        of = f" of {self.total}" if self.total is not None and self.total != self.n else ""
        rate = f", {self.n / seconds:.1f} {self.unit}/s" if seconds > 0 and self.n else ""
        postfix = f" ({self.postfix})" if self.postfix else ""
        units = self.unit + "s" * (self.n != 1 or self.total not in (None, 1))
        log.info("%s: %d%s %s in %.1f s%s%s", self.desc, self.n, of, units, seconds, rate, postfix)


def progress(iterable=None, *, total=None, desc: str = "", unit: str = "it", disable: bool = False):
    """A tqdm bar when stderr is a terminal, else a ``LineProgress`` (one line when the loop ends); ``disable``: neither."""
    if on_terminal() and not disable:
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, quiet=disable)
