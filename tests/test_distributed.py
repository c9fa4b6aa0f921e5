"""Multi-process runs: when to join, 2 processes equal to 4 devices, a clean failure on a missing peer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from research.engine.distributed import plan
from research.errors import ConfigError
from tests.conftest import TINY, run_train, train_cmd

RUN = (
    *TINY,
    "mesh=data_parallel",
    "trainer.max_steps=64",
    "trainer.eval_every=32",
    "trainer.checkpoint.every=32",  # a periodic save too: every process takes part in it
    "optimizer/schedule=constant",
    "trainer.plots=false",
    "trainer.compile_cache=null",
)
NO_CONFIG = {"coordinator_address": None, "num_processes": None, "process_id": None}
SRUN = {
    "SLURM_JOB_ID": "7",
    "SLURM_STEP_NODELIST": "node[01-02]",
    "SLURM_NTASKS": "2",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("cfg", "environ", "tpu", "expected"),
    [
        (NO_CONFIG, {}, False, None),  # a laptop: one process
        (NO_CONFIG, SRUN, False, {"cluster_detection_method": "slurm"}),  # srun -n 2
        (  # srun --nodes=2 --ntasks-per-node=1 on 8-GPU nodes: each task drives its node's 8 GPUs
            NO_CONFIG,
            {**SRUN, "SLURM_GPUS_ON_NODE": "8", "SLURM_STEP_TASKS_PER_NODE": "1(x2)"},
            False,
            {"cluster_detection_method": "slurm", "local_device_ids": list(range(8))},
        ),
        (  # one task per GPU: JAX's own choice (the GPU numbered SLURM_LOCALID)
            NO_CONFIG,
            {**SRUN, "SLURM_GPUS_ON_NODE": "8", "SLURM_STEP_TASKS_PER_NODE": "8(x2)"},
            False,
            {"cluster_detection_method": "slurm"},
        ),
        (NO_CONFIG, {**SRUN, "SLURM_NTASKS": "1"}, False, None),  # one task
        (
            NO_CONFIG,
            {k: v for k, v in SRUN.items() if k != "SLURM_STEP_NODELIST"},
            False,
            None,
        ),  # the batch script
        (NO_CONFIG, {}, True, {}),  # a Cloud TPU VM: JAX asks the TPU metadata
        (NO_CONFIG, {"JAX_PLATFORMS": "cpu"}, True, None),  # libtpu installed, but told to use the CPU
        (
            {"coordinator_address": "h:1234", "num_processes": 4, "process_id": 3},
            SRUN,
            False,
            {"coordinator_address": "h:1234", "num_processes": 4, "process_id": 3},
        ),  # explicit wins
    ],
)
def test_plan_joins_processes_only_when_launched_as_several(
    cfg: dict, environ: dict, tpu: bool, expected: dict | None
) -> None:
    assert plan(cfg, environ, tpu_runtime=tpu) == expected


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"coordinator_address": "h:1234", "num_processes": 2}, "needs distributed.num_processes and"),
        ({"coordinator_address": "h:1234", "num_processes": 2, "process_id": 2}, "must be in \\[0"),
        ({"num_processes": 2, "process_id": 0}, "need distributed.coordinator_address"),
    ],
)
def test_incomplete_distributed_settings_are_config_errors(cfg: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan(cfg, {}, tpu_runtime=False)


def test_a_peer_that_never_arrives_fails_in_timeout_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    proc = run_train(
        *RUN,
        f"hydra.run.dir={tmp_path}",
        f"distributed.coordinator_address=127.0.0.1:{port}",
        "distributed.num_processes=2",
        "distributed.process_id=0",
        "distributed.timeout_s=2",
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"127.0.0.1:{port} in distributed.timeout_s=2 s" in errors[0]
    assert "Traceback" not in proc.stderr and "Check failure" not in proc.stderr


@pytest.mark.slow
def test_two_processes_of_two_devices_match_one_process_of_four(tmp_path: Path) -> None:
    """The digits MLP data-parallel over 2 processes x 2 CPU devices, against 4 devices in one process."""
    port, two = free_port(), tmp_path / "two"
    join = [f"distributed.coordinator_address=127.0.0.1:{port}", "distributed.num_processes=2"]
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2"}
    procs = [
        subprocess.Popen(
            train_cmd(*RUN, f"hydra.run.dir={two}", *join, f"distributed.process_id={i}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in (0, 1)
    ]
    try:
        outputs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            p.kill()  # jax.distributed ignores SIGTERM; a no-op once both have exited
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    four = tmp_path / "four"
    run_train(*RUN, f"hydra.run.dir={four}", env={"JAX_NUM_CPU_DEVICES": "4"}, timeout=180)

    summaries = [json.loads((d / "summary.json").read_text()) for d in (two, four)]
    for key in ("test/loss", "test/accuracy", "val/loss"):
        assert summaries[0][key] == pytest.approx(summaries[1][key], rel=1e-5), key
    losses = [[r["train/loss"] for r in records(d) if "train/loss" in r] for d in (two, four)]
    assert len(losses[0]) == len(losses[1]) > 1
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert sorted(p.name for p in (two / "checkpoints").iterdir() if p.name.isdigit()) == ["32", "64"]
    assert '"test/loss"' in outputs[0][0] and '"test/loss"' in outputs[1][0]  # both report; process 0 writes
