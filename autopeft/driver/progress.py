"""A live progress line: trials done, running, failed, front size and hypervolume."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressLine:
    """Rewrites one line on a terminal; prints a line per change elsewhere (logs, CI)."""

    def __init__(self, total: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self._last = ""

    def update(self, done: int, running: int, failed: int, front: int, hypervolume: float,
               stopped: int = 0) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        early = f", {stopped} stopped early" if stopped else ""
        text = (f"[autopeft] trials {done + stopped}/{self.total} done{early}, {running} running, {failed} failed"
                f" | front {front} | hypervolume {hypervolume:.4g} | {elapsed:.0f}s")
        if text == self._last:
            return
        self._last = text
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self._last:
            self.stream.write("\n")
            self.stream.flush()
