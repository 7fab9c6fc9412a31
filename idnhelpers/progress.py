"""Progress on a terminal or in a notebook: tqdm bars. In a log (stderr not a terminal): a line per
finished run and, for a long run, at most one every ``LINE_SECONDS`` with the epoch, elapsed time and
ETA. ``IDNHELPERS_PROGRESS=bars`` or ``lines`` forces either."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from .environment import progress_mode

LINE_SECONDS = 60.0


def use_bars() -> bool:
    if mode := progress_mode():
        return mode == "bars"
    return sys.stderr.isatty() or type(sys.stderr).__module__.startswith("ipykernel")  # a notebook draws bars


def clock(seconds: float) -> str:
    """``1:02:03`` / ``2:03``: a duration as a log line shows it."""
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class EpochProgress:
    """The epochs of one training call (``desc`` names it; ``done`` before a resume)."""

    def __init__(self, n_epochs: int, desc: str, done: int = 0):
        self.n, self.desc, self.done, self.first = n_epochs, desc, done, done
        self.start = self.last_line = time.perf_counter()
        self.postfix = {}
        self.bar = tqdm(total=n_epochs, initial=done, desc=desc, unit="epoch", file=sys.stderr) if use_bars() else None

    def epoch_done(self, postfix: dict) -> None:
        self.done, self.postfix = self.done + 1, postfix
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update()
            return
        now = time.perf_counter()
        if self.done < self.n and now - self.last_line >= LINE_SECONDS:
            elapsed = now - self.start
            print(f"{self.desc}: epoch {self.done}/{self.n}, {clock(elapsed)} elapsed, ETA "
                  f"{clock(elapsed / (self.done - self.first) * (self.n - self.done))}{self._values()}",
                  file=sys.stderr, flush=True)
            self.last_line = now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            resumed = f" (resumed after {self.first})" if self.first else ""
            print(f"{self.desc}: {self.done} epochs{resumed} in {clock(time.perf_counter() - self.start)}"
                  f"{self._values()}", file=sys.stderr, flush=True)

    def _values(self) -> str:
        return "".join(f", {k} {v}" for k, v in self.postfix.items())
