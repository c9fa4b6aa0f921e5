"""Reading a run never changes it: the reuse commands open it read-only (issues 27 and 28)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.checkpoints import snapshot
from tests.conftest import ROOT, TINY, run_train

RUN = ("+experiment=digits_mlp", "+debug=fast", "trainer.plots=false", *TINY)


@pytest.fixture(scope="module")
def fresh_start_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run trained with trainer.resume=false: its saved config says to start over."""
    run_dir = tmp_path_factory.mktemp("reading") / "run"
    run_train(*RUN, "trainer.resume=false", f"hydra.run.dir={run_dir}")
    return run_dir


def test_evaluating_a_resume_false_run_changes_none_of_its_files(fresh_start_run: Path) -> None:
    before = snapshot(fresh_start_run)
    proc = subprocess.run(
        [sys.executable, "-m", "research.evaluate", f"run={fresh_start_run}"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    after = snapshot(fresh_start_run)
    assert {k: after[k] for k in before} == before  # nothing moved to replaced/, nothing rewritten
    assert not (fresh_start_run / "replaced").exists()
    new = {k for k in after if k not in before}  # what evaluate is asked to write, and only that
    assert "eval.json" in new and all(k == "eval.json" or k.startswith("plots/eval/") for k in new), new


def test_opening_a_run_reads_no_train_split(fresh_start_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The layout comes from the test split; the train split is never read or placed on a device."""
    from research import experiment

    build = experiment.build

    def build_without_train(cfg):
        built = build(cfg)
        train = built.dataset.splits["train"]

        def refuse(*args, **kwargs):
            raise AssertionError("the train split was read")

        monkeypatch.setattr(train, "arrays", refuse)
        monkeypatch.setattr(train, "iterator", refuse)
        return built

    monkeypatch.setattr(experiment, "build", build_without_train)
    opened = experiment.open_saved(fresh_start_run)
    summary_loss = json.loads((fresh_start_run / "summary.json").read_text())["test/loss"]
    outcome = opened.saved.evaluate(opened.state, opened.step, opened.built.task.evaluators(), "test")
    assert outcome.scalars["test/loss"] == pytest.approx(summary_loss, rel=1e-6)


def test_a_run_without_checkpoints_is_one_line_and_stays_as_it_was(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_train(*RUN, "trainer.checkpoint.enabled=false", f"hydra.run.dir={run_dir}")
    before = snapshot(run_dir)
    for command in ("evaluate", "export"):
        proc = subprocess.run(
            [sys.executable, "-m", f"research.{command}", f"run={run_dir}"],
            capture_output=True, text=True, cwd=ROOT, timeout=300,
        )  # fmt: skip
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "has no checkpoint" in lines[0], proc.stderr
    assert snapshot(run_dir) == before and not (run_dir / "checkpoints").exists()


def test_evaluating_a_pruned_trial_says_it_was_pruned(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_train(*RUN, "trainer.checkpoint.enabled=false", f"hydra.run.dir={run_dir}")
    summary = {"pruned": True, "reason": "pruned at step 8 (val/accuracy 0.3)", "steps": 8}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    proc = subprocess.run(
        [sys.executable, "-m", "research.evaluate", f"run={run_dir}"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "a search pruned it at step 8, before any checkpoint" in proc.stderr
    assert "checkpoint.enabled=false" not in proc.stderr


def test_a_damaged_saved_config_is_one_line_naming_the_file(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_train(*RUN, f"hydra.run.dir={run_dir}")
    (run_dir / ".hydra" / "config.yaml").write_text("trainer: [unclosed\n")
    for command in (["-m", "research.evaluate", f"run={run_dir}"], ["-m", "research.train", *RUN,
                                                                    f"hydra.run.dir={run_dir}"]):  # fmt: skip
        proc = subprocess.run(
            [sys.executable, *command], capture_output=True, text=True, cwd=ROOT, timeout=300
        )
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert f"{run_dir / '.hydra' / 'config.yaml'} cannot be read" in lines[0]


def test_a_damaged_summary_is_one_line_naming_the_file_and_is_kept(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_train(*RUN, f"hydra.run.dir={run_dir}")
    (run_dir / "summary.json").write_text('{"steps": 8, "test/acc')
    proc = run_train(*RUN, f"hydra.run.dir={run_dir}", check=False)
    assert proc.returncode == 2 and f"{run_dir / 'summary.json'} cannot be read" in proc.stderr, proc.stderr
    assert (run_dir / "summary.json").read_text() == '{"steps": 8, "test/acc'
