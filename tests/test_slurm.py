"""Slurm: sweeps through the submitit launcher, a 2-process jax.distributed job, the time-limit
signal and the job requeueing itself.

The tests marked ``slurm`` need a running cluster (``bash slurm/local-cluster.sh start``, a one-node
one on localhost); without one they skip and say why, and CI, which starts one, fails on that skip.
The preflight check of the launcher config is also tested against a stand-in ``sbatch``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from research.errors import ConfigError
from research.launch.slurm import SLURM_LAUNCHER, check_launcher
from tests.checkpoints import assert_same_final_state, logged_steps
from tests.conftest import DIGITS_FAST as FAST
from tests.conftest import ROOT, TINY, run_train
from tests.wandb_records import read_records

# One step per call and a record per step: seconds of steps left when the signal is sent after step 20.
STEPS = 2000
TRAIN = (
    "+experiment=digits_mlp",
    "optimizer/schedule=constant",
    f"trainer.max_steps={STEPS}",
    "trainer.steps_per_call=1",
    "trainer.log_every=1",
    "trainer.eval_every=500",
    "trainer.plots=false",
    *TINY,
)
JOB_TIMEOUT_S = 240


def _slurm_state() -> str | None:
    """None when a Slurm node is up and idle or busy, else why the Slurm tests cannot run."""
    if shutil.which("sinfo") is None:
        return "no Slurm here: sinfo is not on PATH (as root with apt: bash slurm/local-cluster.sh start)"
    proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    states = proc.stdout.split()
    if proc.returncode != 0 or not any(
        s.startswith(("idle", "mixed", "allocated", "completing")) for s in states
    ):
        return (
            f"the Slurm cluster is down ({(proc.stderr or ' '.join(states)).strip()}): "
            "bash slurm/local-cluster.sh start"
        )
    return None


NO_SLURM = _slurm_state()


def needs_slurm(test):
    """Mark a test ``slurm`` and skip it, saying why, when no cluster is up."""
    return pytest.mark.slurm(pytest.mark.skipif(NO_SLURM is not None, reason=str(NO_SLURM))(test))


def _partition() -> str:
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True).stdout
    return next(p.rstrip("*") for p in out.split() if p.endswith("*"))


def _env() -> dict:
    """The test's environment with this interpreter's bin first, so jobs run the same Python."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def _launcher_overrides(partition: str) -> tuple[str, ...]:
    return (
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={partition}",
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.mem_gb=null",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=10",
    )


def _job_field(job_id: str, field: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    match = re.search(rf"\b{field}=(\S+)", out)
    return match.group(1) if match else ""


def _jobs_submitted_from(directory: Path) -> list[str]:
    """Ids of the jobs (running or finished) that were submitted from ``directory``."""
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,WorkDir", "-S", "now-1hours"], capture_output=True, text=True
    ).stdout
    return [line.split("|")[0] for line in out.splitlines() if line.endswith(f"|{directory}")]


def _wait(predicate, what: str, timeout: float = JOB_TIMEOUT_S) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


# --- the preflight check, against a stand-in sbatch -------------------------------------------------


def _launcher(**overrides) -> dict:
    return {
        "_target_": SLURM_LAUNCHER,
        "submitit_folder": "x/%j",
        "timeout_min": 60,
        "cpus_per_task": 1,
        "gpus_per_node": None,
        "tasks_per_node": 1,
        "mem_gb": None,
        "nodes": 1,
        "name": "${hydra.job.name}",
        "stderr_to_stdout": False,
        "partition": "gpu",
        "signal_delay_s": 120,
        "max_num_timeout": 0,
        "additional_parameters": {"signal": "USR1@${..signal_delay_s}", "requeue": True},
        "array_parallelism": 8,
        "setup": None,
        **overrides,
    }


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch) -> Path:
    """An sbatch that keeps the script it is given and refuses the partition 'nope' like Slurm does.

    submitit also looks for srun on PATH before it writes a script: a stub stands in for it.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/usr/bin/env bash\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    script = bin_dir / "sbatch"
    script.write_text(f"""#!/usr/bin/env bash
cp "${{@: -1}}" {tmp_path}/submitted.sh
if grep -q -- '--partition=nope' "${{@: -1}}"; then
  echo "sbatch: error: invalid partition specified: nope" >&2
  echo "sbatch: error: Batch job submission failed: Invalid partition name specified" >&2
  exit 1
fi
echo "sbatch: Job 1 to start at now"
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "submitted.sh"


def test_preflight_asks_sbatch_about_the_same_request_submitit_makes(fake_sbatch):
    check_launcher(_launcher())
    script = fake_sbatch.read_text()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=60",
        "#SBATCH --signal=USR1@120",
        "#SBATCH --requeue",
        "#SBATCH --cpus-per-task=1",
    ):
        assert line in script
    assert "--gpus-per-node" not in script


def test_preflight_turns_slurms_refusal_into_one_line(fake_sbatch):
    with pytest.raises(ConfigError) as error:
        check_launcher(_launcher(partition="nope"))
    assert str(error.value).count("\n") == 0
    assert "invalid partition specified: nope" in str(error.value)


def test_preflight_ignores_other_launchers_and_needs_sbatch(monkeypatch, tmp_path):
    check_launcher({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="needs Slurm's sbatch on PATH"):
        check_launcher(_launcher())


# --- a real cluster ---------------------------------------------------------------------------------


@needs_slurm
def test_two_task_srun_job_sums_across_processes():
    proc = subprocess.run(
        [
            "srun",
            "--ntasks=2",
            "--cpus-per-task=1",
            "--time=5",
            sys.executable,
            "-m",
            "research.launch.check_distributed",
        ],
        capture_output=True,
        text=True,
        env={**_env(), "JAX_NUM_CPU_DEVICES": "2"},
        timeout=JOB_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = sorted(
        (json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")),
        key=lambda r: r["process"],
    )
    assert [r["process"] for r in results] == [0, 1]
    for r in results:
        # 2 processes x 2 devices; devices of process 1 hold 1, of process 0 hold 0: the sum is 2.
        assert (r["processes"], r["devices"], r["sum"], r["ok"]) == (2, 4, 2.0, True)


@needs_slurm
def test_sweep_through_the_slurm_launcher(tmp_path):
    sweep = tmp_path / "sweep"
    run_train(
        "-m",
        *FAST,
        "seed=0,1",
        *_launcher_overrides(_partition()),
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        env=_env(),
        timeout=JOB_TIMEOUT_S,
    )
    summaries = []
    for job, seed in ((0, 0), (1, 1)):
        run = sweep / str(job)
        assert yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["seed"] == seed
        summaries.append(json.loads((run / "summary.json").read_text()))
        slurm_id = yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"]
        assert re.fullmatch(r"\d+_\d", str(slurm_id)), slurm_id  # an array task of one Slurm job
    assert any((sweep / ".submitit").iterdir())
    # Job 0 computed exactly what the same run computes here; job 1, another seed, did not.
    here = tmp_path / "here"
    run_train(*FAST, "seed=0", f"hydra.run.dir={here}", cwd=tmp_path)
    expected = json.loads((here / "summary.json").read_text())
    assert [s["steps"] for s in summaries] == [8, 8]
    assert (summaries[0]["test/loss"], summaries[0]["test/accuracy"]) == (
        expected["test/loss"],
        expected["test/accuracy"],
    )
    assert summaries[1]["test/loss"] != expected["test/loss"]


def _refused_sweep(tmp_path: Path, sweep_value: str, partition: str) -> str:
    """A 2-job sweep that preflight must refuse: exit 2, one stderr line, nothing created or
    submitted. Returns that line."""
    sweep = tmp_path / "sweep"
    proc = run_train(
        "-m",
        *FAST,
        sweep_value,
        *_launcher_overrides(partition),
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
        env=_env(),
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert not sweep.exists()
    assert _jobs_submitted_from(tmp_path) == []
    return lines[0]


@needs_slurm
def test_a_partition_that_does_not_exist_fails_before_submitting(tmp_path):
    assert "invalid partition specified: nope" in _refused_sweep(tmp_path, "seed=0,1", "nope")


@needs_slurm
def test_a_bad_sweep_value_fails_before_any_job_is_submitted(tmp_path):
    line = _refused_sweep(tmp_path, "optimizer.learning_rate=1e-3,fast", _partition())
    assert "optimizer.learning_rate" in line


def _wandb_steps(run_dir: Path) -> dict[str, list[int]]:
    """The steps each offline W&B run file in ``run_dir`` logged, by run directory name (oldest first)."""
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    return {
        f.parent.name: [
            r.history.step.num for r in read_records(f) if r.WhichOneof("record_type") == "history"
        ]
        for f in files
    }


@needs_slurm
@pytest.mark.slow
def test_the_time_limit_signal_saves_requeues_the_job_and_it_resumes_where_it_stopped(tmp_path):
    """SIGUSR1 (what ``--signal=USR1@300`` sends before the time limit) reaches the running job.

    Nothing from outside requeues it: the run saves the step it is at, asks Slurm to requeue its
    own job and exits; the restarted job resumes from that step in the same run directory and
    continues the same W&B run, and ends with the parameters of an uninterrupted run.
    """
    submit = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--gpus-per-node=0",
            "--cpus-per-task=1",
            "--time=10",
            f"--output={tmp_path}/slurm-%j.out",
            str(ROOT / "slurm" / "train.sbatch"),
            *TRAIN,
            "logger=wandb",
            "logger.wandb.mode=offline",
            # The default runs/<name>/slurm-<job id>, under the test's own folder.
            f"hydra.run.dir={tmp_path}/runs/${{name}}/${{run_id:}}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**_env(), "WANDB_MODE": "offline", "HOME": str(tmp_path)},
        check=True,
    )
    job = submit.stdout.strip().split(";")[0]
    run_dir = tmp_path / "runs" / "digits_mlp" / f"slurm-{job}"
    _wait(lambda: max(logged_steps(run_dir), default=0) >= 20, "step 20 of the first run")
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    _wait(lambda: _job_field(job, "JobState") in ("COMPLETED", "FAILED", "CANCELLED"), "the requeued job")
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert _job_field(job, "JobState") == "COMPLETED", log[-3000:]
    assert _job_field(job, "Restarts") == "1", log[-3000:]  # requeued once, by the job itself

    saved = re.findall(r"error: preempted at step (\d+); checkpoint saved; job requeued", log)
    assert len(saved) == 1 and "task 0: Exited with exit code 143" in log, log[-3000:]
    step = int(saved[0])
    assert 20 <= step < STEPS, "the signal landed after the run had finished: slow the run down"
    assert logged_steps(run_dir) == list(range(1, STEPS + 1))  # resumed at step + 1, no step twice
    runs = _wandb_steps(run_dir)
    assert len({name.rsplit("-", 1)[1] for name in runs}) == 1, runs.keys()  # one W&B run id
    assert list(runs.values()) == [list(range(1, step + 1)), list(range(step + 1, STEPS + 1))]

    straight = tmp_path / "straight"
    run_train(*TRAIN, f"hydra.run.dir={straight}", cwd=tmp_path)
    assert_same_final_state(straight, run_dir)
