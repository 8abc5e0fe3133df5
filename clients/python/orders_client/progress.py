"""A small progress bar for the command line (stderr), aware of terminals.

On a terminal it redraws one line in place (at most every REDRAW_INTERVAL_S); otherwise
(CI logs, pipes) it prints a plain line each time another STEP_PERCENT of the total is
done, or every STEP_ITEMS items when the total is unknown.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress"]

BAR_WIDTH = 30
REDRAW_INTERVAL_S = 0.1
STEP_PERCENT = 10
STEP_ITEMS = 10_000


class Progress:
    def __init__(
        self,
        total: int | None,
        stream: TextIO,
        *,
        label: str = "progress",
        enabled: bool = True,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total if total and total > 0 else None
        self.done = 0
        self._stream = stream
        self._label = label
        self._tty = stream.isatty() if tty is None else tty
        self._clock = clock
        self._started = clock()
        self._last_draw = float("-inf")
        self._last_step = 0
        self._closed = not enabled

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._closed:
            return
        if self._tty:
            now = self._clock()
            if now - self._last_draw >= REDRAW_INTERVAL_S:
                self._last_draw = now
                self._draw()
            return
        step = self._step()
        if step > self._last_step:
            self._last_step = step
            self._stream.write(self._plain() + "\n")
            self._stream.flush()

    def message(self, text: str) -> None:
        """Print a line of its own (on a terminal: above the bar, which is redrawn)."""
        if self._tty and not self._closed:
            self._stream.write("\r\x1b[K" + text + "\n")
            self._draw()
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._tty:
            self._draw()
            self._stream.write("\n")
        elif self.done and (self.total is None or self._step() * STEP_PERCENT < 100):
            # The last plain line, unless 100 % was just printed.
            self._stream.write(self._plain() + "\n")
        self._stream.flush()

    def _step(self) -> int:
        if self.total is None:
            return self.done // STEP_ITEMS
        return min(self.done, self.total) * 100 // self.total // STEP_PERCENT

    def _rate(self) -> float:
        elapsed = self._clock() - self._started
        return self.done / elapsed if elapsed > 0 else 0.0

    def _plain(self) -> str:
        if self.total is None:
            return f"{self._label}: {self.done} ({self._rate():.0f}/s)"
        percent = min(self.done, self.total) * 100 // self.total
        return f"{self._label}: {percent}% ({self.done}/{self.total}, {self._rate():.0f}/s)"

    def _draw(self) -> None:
        if self.total is None:
            text = f"{self._label}: {self.done} ({self._rate():.0f}/s)"
        else:
            fraction = min(self.done, self.total) / self.total
            filled = int(fraction * BAR_WIDTH)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            text = (
                f"{self._label} [{bar}] {fraction * 100:5.1f}% "
                f"{self.done}/{self.total} {self._rate():.0f}/s"
            )
        self._stream.write("\r" + text + "\x1b[K")
        self._stream.flush()
