"""Progress on the console: a tqdm bar at a terminal, one plain line per log interval in a file."""

from __future__ import annotations

import io
import re
import subprocess
import sys

from research.engine import progress
from tests.conftest import ROOT, train_cmd

LINE = re.compile(r"^step (\d+)/(\d+) \(\d+%\)(?: \| \S+ \S+)* \| ETA (?:\d+:\d\d:\d\d|\?)$")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _feed(bar, total: int, per_call: int) -> None:
    for step in range(per_call, total + 1, per_call):
        bar.update(step, per_call, {"loss": f"{1 / step:.4f}", "steps_per_s": "1200"})
    bar.close()


def test_in_a_file_one_line_per_log_interval_and_at_the_end(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    bar = progress.make_progress(total=100, initial=0, enabled=True, log_every=32)
    _feed(bar, total=100, per_call=20)  # calls end at 20, 40, ..., 100
    lines = sys.stdout.getvalue().splitlines()
    assert [int(LINE.match(line).group(1)) for line in lines] == [40, 80, 100]  # crossed 32, 64, 96; the end
    assert lines[0].startswith("step 40/100 (40%) | loss 0.0250 | steps_per_s 1200 | ETA ")
    assert "\r" not in sys.stdout.getvalue() and capsys.readouterr().err == ""


def test_a_resumed_run_counts_from_its_start_step(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    bar = progress.make_progress(total=64, initial=32, enabled=True, log_every=16)
    for step in (48, 64):
        bar.update(step, 16, {"loss": "0.5"})
    assert [line.split(" | ")[0] for line in sys.stdout.getvalue().splitlines()] == [
        "step 48/64 (75%)",
        "step 64/64 (100%)",
    ]


def test_at_a_terminal_a_live_tqdm_bar(monkeypatch):
    monkeypatch.setattr(sys, "stdout", Terminal())
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    bar = progress.make_progress(total=100, initial=0, enabled=True, log_every=32)
    assert type(bar).__name__ == "_Bar"
    _feed(bar, total=100, per_call=20)
    assert sys.stdout.getvalue() == ""  # the bar draws on stderr, redrawn in place
    assert err.getvalue().startswith("\r  0%|") and "| 0/100 " in err.getvalue()  # redraws (tqdm throttles)


def test_disabled_prints_nothing(monkeypatch, capsys):
    bar = progress.make_progress(total=100, initial=0, enabled=False, log_every=32)
    _feed(bar, total=100, per_call=20)
    assert capsys.readouterr() == ("", "")


def test_a_run_written_to_a_file_has_plain_progress_lines(tmp_path):
    log = tmp_path / "train.out"
    with open(log, "w") as out:
        proc = subprocess.run(
            train_cmd(
                "+experiment=digits_mlp",
                "logger=none",
                "trainer.max_steps=96",
                "trainer.steps_per_call=16",
                "trainer.log_every=32",
                "trainer.plots=false",
                f"hydra.run.dir={tmp_path / 'run'}",
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            timeout=300,
        )
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "\r" not in text
    lines = [line for line in text.splitlines() if line.startswith("step ")]
    assert all(LINE.match(line) and " | loss " in line for line in lines), lines
    # Calls end at evaluation boundaries too: a line at the first call past each multiple of 32.
    steps = [int(LINE.match(line).group(1)) for line in lines]
    assert [s // 32 for s in steps] == [1, 2, 3] and steps[-1] == 96
