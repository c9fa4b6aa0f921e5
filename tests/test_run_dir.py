"""The run directory keeps its promise: one trainer at a time, no record written twice, no config
that no checkpoint has, and the console's record in train.log (issue 27)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import yaml

from tests.conftest import ROOT, TINY, run_train, train_cmd

RUN = ("+experiment=digits_mlp", "optimizer/schedule=constant", "trainer.plots=false", *TINY)
ENDLESS = "trainer.max_steps=50000000"  # trains until killed; saves by time only (every_s=600)


def start_endless(run_dir: Path, *overrides: str) -> subprocess.Popen:
    """A run that trains until killed, once it has logged a record."""
    proc = subprocess.Popen(
        train_cmd(*RUN, ENDLESS, f"hydra.run.dir={run_dir}", "trainer.log_every=16", *overrides),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (run_dir / "metrics.jsonl").exists() or not (run_dir / "metrics.jsonl").read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_second_trainer_in_a_run_directory_is_one_line_and_a_killed_ones_lock_is_taken_over(
    run_dir: Path,
) -> None:
    first = start_endless(run_dir)
    try:
        holder = json.loads((run_dir / ".lock").read_text())
        assert holder["pid"] == first.pid
        second = run_train(*RUN, "trainer.max_steps=32", f"hydra.run.dir={run_dir}", check=False, timeout=120)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert f"PID {first.pid} on {socket.gethostname()}" in lines[0]
    finally:
        kill(first)
    third = run_train(*RUN, "trainer.max_steps=32", f"hydra.run.dir={run_dir}", timeout=120)
    assert f"locked by PID {first.pid}, which is gone; taken over" in third.stdout
    assert not (run_dir / ".lock").exists()  # released at the end


def test_a_lock_held_on_another_host_is_respected(run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": "another-node", "started": 0}))
    proc = run_train(*RUN, "trainer.max_steps=16", f"hydra.run.dir={run_dir}", check=False, timeout=120)
    assert proc.returncode == 2 and "on another-node" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing else written


def test_a_rerun_after_a_kill_before_the_first_checkpoint_logs_every_step_once(run_dir: Path) -> None:
    kill(start_endless(run_dir))
    killed = steps(run_dir)
    proc = run_train(*RUN, "trainer.max_steps=64", "trainer.log_every=16", f"hydra.run.dir={run_dir}")
    assert "no checkpoint to resume from" in proc.stdout
    logged = steps(run_dir)  # not appended to the killed attempt's records
    assert logged == sorted(set(logged)) and logged[-1] == 64 and logged[0] <= 20
    (aside,) = (run_dir / "replaced").iterdir()
    assert steps(aside) == killed  # and those are kept


def test_a_summary_without_checkpoints_is_not_trained_over(run_dir: Path) -> None:
    run_train(*RUN, "trainer.max_steps=16", f"hydra.run.dir={run_dir}")
    summary = (run_dir / "summary.json").read_text()
    records = (run_dir / "metrics.jsonl").read_text()
    for path in (run_dir / "checkpoints").iterdir():
        for f in sorted(path.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        path.rmdir()
    (run_dir / "checkpoints").rmdir()
    proc = run_train(*RUN, "trainer.max_steps=16", f"hydra.run.dir={run_dir}", check=False, timeout=120)
    assert proc.returncode == 2 and "summary.json but no checkpoints/" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (run_dir / "summary.json").read_text() == summary
    assert (run_dir / "metrics.jsonl").read_text() == records


def test_a_continuation_that_fails_keeps_the_config_of_the_checkpoints(run_dir: Path) -> None:
    run_train(*RUN, "trainer.max_steps=16", f"hydra.run.dir={run_dir}")
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    proc = run_train(*RUN, "trainer.max_steps=64", "optimizer.learning_rate=1e12",
                     f"hydra.run.dir={run_dir}", check=False, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "lower optimizer.learning_rate" in proc.stderr, proc.stderr
    assert (run_dir / ".hydra" / "config.yaml").read_text() == config
    assert yaml.safe_load(config)["optimizer"]["learning_rate"] != 1e12


def test_train_log_holds_what_the_console_showed(run_dir: Path) -> None:
    proc = run_train(*RUN, "trainer.max_steps=16", f"hydra.run.dir={run_dir}")
    log = (run_dir / "train.log").read_text()
    assert '"test/accuracy"' in log and all(line in log for line in proc.stdout.splitlines() if line)
    again = run_train(*RUN, "trainer.max_steps=32", "optimizer.learning_rate=1e12",
                      f"hydra.run.dir={run_dir}", check=False)  # fmt: skip
    assert again.stderr.strip().splitlines()[-1] in (run_dir / "train.log").read_text()  # errors too


def test_a_finished_run_rerun_with_other_settings_says_they_are_not_applied(run_dir: Path) -> None:
    run_train(*RUN, "trainer.max_steps=16", f"hydra.run.dir={run_dir}")
    proc = run_train(*RUN, "trainer.max_steps=16", "optimizer.learning_rate=0.5", f"hydra.run.dir={run_dir}")
    assert "nothing to do (the changed settings are not applied: optimizer.learning_rate:" in proc.stdout


def test_a_sigterm_during_the_final_evaluation_finishes_the_run_and_says_so(run_dir: Path) -> None:
    proc = run_train(*RUN, "trainer.max_steps=16", f"hydra.run.dir={run_dir}",
                     script=ROOT / "tests" / "sigterm_in_final_evaluation.py", check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "a stop signal came during the final evaluation; the run is finished" in proc.stdout
    assert "test/accuracy" in json.loads((run_dir / "summary.json").read_text())
