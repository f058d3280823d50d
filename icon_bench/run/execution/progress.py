"""What a user sees while a suite runs: a live bar in a terminal, else one plain line per finished trial."""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Mapping
from typing import Any, TextIO

from icon_bench.run.execution.labels import bar_label, first_line, trial_label, tune_label
from icon_bench.terminal import bar_size

__all__ = ["OK_STATUSES", "Progress"]

#: Statuses of rows that succeeded: a trial ("ok") or a search trial of a tuned suite ("search").
OK_STATUSES: frozenset[str] = frozenset({"ok", "search"})

#: Seconds between redraws of the bar: often enough to see the clock move, rare enough to cost nothing.
REFRESH_S = 0.5
_BAR_FORMAT = "{desc} {n_fmt}/{total_fmt} |{bar:6}| {elapsed}<{remaining}{postfix}"
#: Room the clock takes ("00:12<01:05", and one to grow), so the trial's label is sized before it grows.
_CLOCK = 12


class Progress:
    """Counts of finished, failed and running trials, shown as the run goes.

    ``mode`` is "bar" when stderr is a terminal (a tqdm bar there: cells done, ok / failed / running,
    elapsed, time left, the trial now running; trials may draw their own epoch bar below it), "lines"
    otherwise (CI, logs: one line per finished trial on ``out``), "off" when disabled. A background
    thread redraws the bar every REFRESH_S so the clock moves during a long trial; nothing redraws
    more often than that, so the display never slows the trials down.
    """

    def __init__(
        self,
        total: int,
        *,
        enabled: bool = True,
        out: TextIO | None = None,
        terminal: bool | None = None,
        desc: str = "cells",
    ) -> None:
        if terminal is None:
            terminal = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self.mode = "off" if not enabled else ("bar" if terminal else "lines")
        self.out = out if out is not None else sys.stdout
        self.total = total
        self.ok = self.failed = self.running = 0
        self._running: tuple[Mapping[str, Any], Mapping[str, Any] | None] | None = None  # spec, tuned values
        self.desc = desc
        self.bar: Any = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                desc=desc,
                unit="cell",
                file=sys.stderr,
                **bar_size(),  # also on a 0 x 0 pseudo-terminal, where tqdm alone draws nothing
                mininterval=REFRESH_S,
                bar_format=_BAR_FORMAT,
            )
            self._ticker = threading.Thread(target=self._tick, name="icon-bench-progress", daemon=True)
            self._ticker.start()

    @property
    def epochs(self) -> bool:
        """Whether a trial run in this process may show its own epoch bar (only below a live bar)."""
        return self.mode == "bar"

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def start(self, spec: Mapping[str, Any], running: int = 1, values: Mapping[str, Any] | None = None) -> None:
        """A trial started (local) or is the oldest of `running` unfinished ones (Ray); `values`: its tuned values."""
        self.running = running
        self._running = (spec, values)
        self._redraw()

    def idle(self, running: int = 0) -> None:
        """Nothing new finished; `running` trials are under way."""
        self.running = running
        if running == 0:
            self._running = None
        self._redraw()

    def finish(self, row: Mapping[str, Any], *, elapsed_s: float | None = None) -> None:
        """One trial's row was stored: count it, and in "lines" mode print it."""
        ok = row.get("status") in OK_STATUSES
        if ok:
            self.ok += 1
        else:
            self.failed += 1
        if self.mode == "lines":
            print(self._line(row, ok, elapsed_s), file=self.out, flush=True)
        elif self.mode == "bar":
            if not ok:  # said at once, above the bar: a sweep of failures should not look healthy
                label = trial_label(row.get("spec") or {}, row)
                self.bar.write(f"failed: {label}: {first_line(row.get('error'))}", file=sys.stderr)
            self._redraw()
            self.bar.update(1)

    def _line(self, row: Mapping[str, Any], ok: bool, elapsed_s: float | None) -> str:
        width = len(str(self.total))
        label = trial_label(row.get("spec") or {}, row)
        if row.get("tune"):  # a tuned suite's row: which candidate it searched, or what it selected
            label += f" [{'val: ' if row['tune'].get('role') == 'search' else ''}{tune_label(row)}]"
        total_s = (row.get("timings") or {}).get("total_s", elapsed_s)
        took = f"  {total_s:.1f} s" if isinstance(total_s, (int, float)) else ""
        if not ok:
            return f"[{self.done:>{width}}/{self.total}] failed  {label}{took}: {first_line(row.get('error'))}"
        metrics = [
            f"{k} {v:.3f}"
            for k, v in (row.get("metrics") or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ][:3]
        return f"[{self.done:>{width}}/{self.total}] ok      {label}{took}" + (f"  {', '.join(metrics)}" if metrics else "")

    def _redraw(self) -> None:
        if self.bar is None:
            return
        counts = f"{self.ok} ok, {self.failed} failed, {self.running} running"
        if self._running is None:
            self.bar.set_postfix_str(counts, refresh=False)
            return
        spec, values = self._running
        more = f" +{self.running - 1}" if self.running > 1 else ""
        label = bar_label(spec, values) + more
        if len(counts) + 3 + len(label) > self._room(self.desc):
            # A narrow terminal: "search (local)" -> "search", short counts, the label fitted to the rest.
            desc, counts = self.desc.split()[0], f"{self.ok} ok {self.failed} failed"
            if self.bar.desc != desc:
                self.bar.set_description_str(desc, refresh=False)
            width = max(12, self._room(desc) - len(counts) - 3 - len(more))
            label = bar_label(spec, values, width=width) + more
        self.bar.set_postfix_str(f"{counts} | {label}", refresh=False)

    def _room(self, desc: str) -> int:
        """Columns the postfix has on this terminal after "cells 12/40 |######| 00:12<01:05, "."""
        columns = shutil.get_terminal_size((80, 24)).columns or 80
        return columns - 1 - (len(desc) + 2 * len(str(self.total)) + 3 + 9 + _CLOCK + 2)

    def _tick(self) -> None:
        while not self._stop.wait(REFRESH_S):
            self.bar.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self.bar is not None:
            self._running, self.running = None, 0
            self._redraw()
            self.bar.close()
