"""What `icon-bench run` shows while it runs: a live bar in a terminal (a pseudo-terminal here), one line per trial otherwise."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

from ray_trials import fake_load, fake_trial

from icon_bench.runner import run_suite

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

SLOW_SUITE = """
name: slow
datasets: [digits]
grid:
  method: [fake]
  seed: [0, 1, 2]
  sleep: 1.2
include:
  - {method: fake, seed: 7, fail: true}
"""

DRIVER = """
import sys
sys.path.insert(0, {tests!r})
from ray_trials import fake_load, fake_trial, use_fake_method
from icon_bench.runner import run_suite
use_fake_method()
sys.exit(run_suite({suite!r}, trial_fn=fake_trial, load_fn=fake_load, report=False))
"""


def _suite(folder: Path, text: str) -> Path:
    path = folder / "suite.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def run_in_terminal(argv: list[str], cwd: Path, columns: int = 120, timeout: float = 120,
                    rows: int = 40) -> tuple[int, str, float]:
    """Run `argv` with stdin, stdout and stderr on a pseudo-terminal; (exit status, everything written, seconds)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "COLUMNS": str(columns)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        code = proc.wait(timeout=30)
    return code, b"".join(chunks).decode("utf-8", "replace"), time.perf_counter() - t0


def _frames(text: str) -> list[str]:
    """Every state the suite's bar was drawn in (tqdm redraws a line after a carriage return)."""
    return [f.strip() for f in re.split(r"[\r\n]", text) if f.strip().startswith("cells ")]


def test_a_terminal_shows_a_live_bar_with_counts_clock_and_the_trial_now_running(tmp_path: Path) -> None:
    path = _suite(tmp_path, SLOW_SUITE)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(TESTS), suite=str(path)))
    code, text, seconds = run_in_terminal([sys.executable, str(driver)], tmp_path)
    assert code == 1, text  # one trial failed
    frames = _frames(text)
    assert frames and frames[0].startswith("cells 0/4"), text
    # Counts, the clock and the trial now running, while a trial runs.
    assert any(re.search(r"cells 1/4 .* 00:0[12]<.*1 ok, 0 failed, 1 running \| fake digits seed 1", f) for f in frames), frames
    assert any("00:01<" in f and "0/4" in f for f in frames), "the clock must move during the first (1.2 s) trial"
    assert re.search(r"cells 4/4 .*3 ok, 1 failed, 0 running$", frames[-1]), frames[-1]
    # A failure is said at once, above the bar, with its whole first line.
    assert "failed: fake on digits (divergence -, seed 7): ValueError: boom in fake" in text
    # Redrawn a few times a second at most: the ticker (2/s) plus one redraw per event, never per step.
    assert len(frames) <= 2 * seconds + 3 * 4 + 4, (len(frames), seconds)
    assert "[1/4]" not in text  # no plain lines in a terminal


def test_a_terminal_with_no_size_still_shows_the_bar(tmp_path: Path) -> None:
    # script(1) without a real terminal, and some CI runners, give a 0 x 0 pseudo-terminal: tqdm
    # alone would hide the bar there (it drew nothing for a whole tuned suite).
    path = _suite(tmp_path, SLOW_SUITE.replace("sleep: 1.2", "sleep: 0"))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(tests=str(TESTS), suite=str(path)))
    code, text, _ = run_in_terminal([sys.executable, str(driver)], tmp_path, columns=0, rows=0)
    assert code == 1, text
    frames = _frames(text)
    assert frames and re.search(r"cells 4/4 .*3 ok, 1 failed, 0 running$", frames[-1]), text


def test_a_terminal_shows_the_epochs_of_a_running_trial(tmp_path: Path) -> None:
    path = _suite(tmp_path, "name: epochs\ndatasets: [iris]\ninclude:\n  - {method: tsne, epochs: 5}\n")
    code, text, _ = run_in_terminal([sys.executable, "-m", "icon_bench.cli", "run", str(path), "--no-report"], tmp_path)
    assert code == 0, text
    assert re.search(r"tsne: +\d+%\|.*\| \d/5 \[", text), text  # the trainer's own bar, one row below the suite's
    assert re.search(r"cells 1/1 .*1 ok, 0 failed, 0 running", text), text


def test_a_terminal_with_no_size_still_shows_the_epochs(tmp_path: Path) -> None:
    path = _suite(tmp_path, "name: epochs\ndatasets: [iris]\ninclude:\n  - {method: tsne, epochs: 5}\n")
    argv = [sys.executable, "-m", "icon_bench.cli", "run", str(path), "--no-report"]
    code, text, _ = run_in_terminal(argv, tmp_path, columns=0, rows=0)
    assert code == 0, text
    assert re.search(r"tsne: +\d+%\|.*\| \d/5 \[", text), text


def test_without_a_terminal_each_finished_trial_is_one_plain_line(tmp_path: Path, fake_method: None) -> None:
    path = _suite(tmp_path, SLOW_SUITE.replace("sleep: 1.2", "sleep: 0"))
    out = io.StringIO()
    # progress on (the default) but stderr is not a terminal under pytest: lines, not a bar.
    assert run_suite(path, trial_fn=fake_trial, load_fn=fake_load, report=False, out=out) == 1
    text = out.getvalue()
    assert "\r" not in text and "cells 0/4" not in text
    lines = [line for line in text.splitlines() if re.match(r"\[\d/4\] ", line)]
    assert [line[:14] for line in lines] == ["[1/4] ok      ", "[2/4] ok      ", "[3/4] ok      ", "[4/4] failed  "]
    assert lines[0].startswith("[1/4] ok      fake on digits (divergence -, seed 0)  0.0 s  hungarian ")
    assert lines[3] == "[4/4] failed  fake on digits (divergence -, seed 7)  0.0 s: ValueError: boom in fake"


def test_progress_off_prints_no_trial_lines(tmp_path: Path, fake_method: None) -> None:
    path = _suite(tmp_path, SLOW_SUITE.replace("sleep: 1.2", "sleep: 0"))
    out = io.StringIO()
    assert run_suite(path, trial_fn=fake_trial, load_fn=fake_load, report=False, out=out, progress=False) == 1
    assert not re.search(r"^\[\d/4\]", out.getvalue(), re.M)
