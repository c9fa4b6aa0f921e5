"""Watching a run: a tqdm bar at a terminal, one plain line per log interval in a file, with the
latest validation metric; the run directory named at the start and the end; learning curves
redrawn while it trains.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

from research.config import compose_train
from research.engine import progress
from research.engine.records import CurveRefresh, TrainWindow
from research.experiment import run
from tests.conftest import ROOT, train_cmd

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

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


def test_a_run_written_to_a_file_names_its_dir_and_shows_the_latest_validation_metric(tmp_path):
    log, run_dir = tmp_path / "train.out", tmp_path / "run"
    with open(log, "w") as out:
        proc = subprocess.run(
            train_cmd(
                "+experiment=digits_mlp",
                "logger=none",
                "trainer.max_steps=96",
                "trainer.steps_per_call=16",
                "trainer.log_every=32",
                "trainer.eval_every=32",
                "trainer.plots=false",
                f"hydra.run.dir={run_dir}",
            ),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            timeout=300,
        )
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "\r" not in text
    lines = text.splitlines()
    progress_lines = [line for line in lines if line.startswith("step ")]
    assert all(LINE.match(line) and " | loss " in line for line in progress_lines), progress_lines
    steps = [int(LINE.match(line).group(1)) for line in progress_lines]
    assert steps == [32, 64, 96]

    # The run directory: said before the first step and as the last line, under the numbers.
    said = [i for i, line in enumerate(lines) if line == f"run dir: {run_dir}"]
    assert len(said) == 2 and said[0] < lines.index(progress_lines[0]) and said[1] == len(lines) - 1, text

    # Each line carries the validation metric of the evaluation at its step, beside the train ones.
    records = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluated = {r["step"]: r["val/accuracy"] for r in records if "val/accuracy" in r}
    assert sorted(evaluated) == steps
    for step, line in zip(steps, progress_lines, strict=True):
        assert f" | val/accuracy {evaluated[step]:.4f} | steps_per_s " in line, line


def test_the_progress_shows_the_runs_metric_or_else_a_validation_one():
    window = TrainWindow(counters=(), watch="cv/accuracy")
    window.add({"loss": [0.5, 0.3]}, n=2)
    assert list(window.postfix(100.0)) == ["loss", "steps_per_s"], "no evaluation yet: nothing to show"
    window.evaluated({"cv/accuracy": 0.81234, "cv/accuracy_std": 0.1, "val/loss": 0.2})
    assert window.postfix(100.0) == {"loss": "0.4000", "cv/accuracy": "0.8123", "steps_per_s": "100"}
    window.evaluated({"val/frechet_distance": 3.0})  # another evaluator's schedule: the last value stays
    assert window.postfix(100.0)["cv/accuracy"] == "0.8123"

    unnamed = TrainWindow(counters=(), watch=None)
    unnamed.evaluated({"val/loss": 0.25, "val/accuracy": 0.9})
    unnamed.evaluated({"val/loss": 0.125})
    assert unnamed.postfix(1.0) == {"val/loss": "0.1250", "steps_per_s": "1"}


def test_curves_are_redrawn_at_an_evaluation_once_their_interval_has_passed(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "train/loss": 1 / s, "val/loss": 2 / s}) + "\n" for s in (1, 2))
    )
    png = tmp_path / "plots" / "learning_curves.png"
    CurveRefresh(tmp_path, "run", every_s=3600.0, enabled=True).after_evaluation()
    assert not png.exists(), "an hour has not passed"
    CurveRefresh(tmp_path, "run", every_s=0.0, enabled=False).after_evaluation()
    assert not png.exists(), "trainer.plots=false draws nothing"
    CurveRefresh(tmp_path, "run", every_s=0.0, enabled=True).after_evaluation()
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_learning_curves_are_on_disk_and_updated_before_the_run_ends(tmp_path):
    cfg = compose_train(
        [
            "+experiment=digits_mlp",
            "logger=none",
            "trainer.max_steps=48",
            "trainer.eval_every=16",
            "trainer.progress=false",
            "trainer.plots_every_s=0",
            "trainer.checkpoint.enabled=false",
            "model.hidden_sizes=[32]",
        ]
    )
    png = tmp_path / "plots" / "learning_curves.png"
    seen = {}

    def on_eval(step: int, record: dict) -> None:  # called after each evaluation but the last
        assert not (tmp_path / "summary.json").exists()
        seen[step] = png.read_bytes()

    run(cfg, tmp_path, on_eval=on_eval)
    assert sorted(seen) == [16, 32]
    assert all(data.startswith(PNG_MAGIC) for data in seen.values())
    assert seen[16] != seen[32], "redrawn with the second evaluation"
    assert png.read_bytes() not in seen.values(), "and at the end"
