"""Replica runs killed and rerun, and what a replica of several seeds is.

Seeds, a learning-rate grid, cross-validation folds (replicas of one vmapped program) and an
FSDP mesh on 8 CPU devices: each run is SIGKILLed after its first checkpoint and the same
command rerun into the same directory; the rerun must end bit-identical to an uninterrupted
run (test metrics and final state), with every step logged once. As in test_resume.py, the
killed runs are endless (``ENDLESS``) and the rerun that finishes them sets the real length.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.checkpoints import (
    ENDLESS,
    assert_same_final_state,
    final_state,
    latest_checkpoint,
    logged_steps,
    signal_run,
)
from tests.conftest import ROOT, TINY, run_train

STEPS = 128
EVERY = 16  # steps between evaluations and between checkpoints
# One step per call and a record per step: the kill lands between records, past the checkpoint.
BASE = (
    "+experiment=digits_mlp",
    "optimizer/schedule=constant",
    "model.hidden_sizes=[64]",
    "trainer.steps_per_call=1",
    "trainer.log_every=1",
    f"trainer.eval_every={EVERY}",
    f"trainer.checkpoint.every={EVERY}",
    "trainer.plots=false",
    *TINY,
)
EIGHT_DEVICES = {"JAX_NUM_CPU_DEVICES": "8"}
# name: (overrides, environment of the runs, summary key listing the replicas, how many)
REPLICAS = {
    "num_seeds": (("trainer.num_seeds=4",), {}, "test/loss_per_seed", 4),
    "lr_grid": (
        ("trainer.vmap_over=optimizer.learning_rate", "trainer.vmap_values=[1e-3,3e-3,1e-2]"),
        {},
        "test/loss_per_seed",
        3,
    ),
    "cv_folds": (("trainer.cv_folds=5",), {}, "cv/loss_per_fold", 5),
    "fsdp": (("mesh=fsdp",), EIGHT_DEVICES, None, None),
}


def _is_speed(key: str) -> bool:
    """Rates and the model FLOPs utilisation they give: timings, which no two runs share."""
    return key.endswith("_per_s") or key.split("/")[-1].startswith("mfu")


def results(run_dir: Path) -> dict:
    """What a run reports: every metric of summary.json (not its speed), its steps and best step."""
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = {
        k: v
        for k, v in summary.items()
        if k.split("/")[0] in ("train", "val", "test", "cv") and not _is_speed(k)
    }
    return {**metrics, "steps": summary["steps"], "best_step": summary["best_step"]}


def same_final_state_on_8_devices(a: Path, b: Path) -> None:
    """``assert_same_final_state`` in a child process with the 8 devices the runs were saved from."""
    code = (
        "import sys, jax; from pathlib import Path\n"
        "from tests.checkpoints import assert_same_final_state\n"
        "assert jax.device_count() == 8, jax.devices()\n"
        "assert_same_final_state(Path(sys.argv[1]), Path(sys.argv[2]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(a), str(b)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **EIGHT_DEVICES},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def fsdp_split_leaves(run_dir: Path) -> list[str]:
    """The leaves of the newest saved state whose recorded sharding splits them over ``fsdp``."""
    import jax
    import orbax.checkpoint as ocp

    state_dir = (run_dir / "checkpoints" / str(latest_checkpoint(run_dir)) / "state").absolute()
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.metadata(state_dir).item_metadata
    return [
        jax.tree_util.keystr(path)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if "fsdp" in str(leaf.sharding.partition_spec)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(REPLICAS))
def test_sigkilled_replica_run_reruns_to_the_uninterrupted_result(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL after the first checkpoint (no save at the signal), rerun the same command: the
    replicas' states, data order, grid factors or fold plan come back exactly from the checkpoint."""
    overrides, env, per_replica, count = REPLICAS[kind]
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the runs, and signal_run's child, see 8 devices
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    finish = (*BASE, *overrides, f"trainer.max_steps={STEPS}")
    run_train(*finish, f"hydra.run.dir={straight}")

    def past_first_checkpoint() -> bool:  # and steps logged after it, which the rerun must redo
        return latest_checkpoint(killed) >= EVERY and max(logged_steps(killed)) > latest_checkpoint(killed)

    stop = signal_run(
        (*BASE, *overrides, ENDLESS, f"hydra.run.dir={killed}"), past_first_checkpoint, signal.SIGKILL
    )
    assert stop.code == -signal.SIGKILL
    resumed_from = latest_checkpoint(killed)
    assert EVERY <= resumed_from < STEPS and resumed_from % EVERY == 0, resumed_from
    assert not (killed / "summary.json").exists()

    proc = run_train(*finish, f"hydra.run.dir={killed}")
    assert f"resuming from step {resumed_from}" in proc.stdout + proc.stderr
    assert logged_steps(killed) == list(range(1, STEPS + 1)), "each step logged once, none missing"
    expected, got = results(straight), results(killed)
    assert got == expected
    if per_replica:
        assert len(expected[per_replica]) == count and len(set(expected[per_replica])) == count
    if kind == "fsdp":
        assert len(fsdp_split_leaves(killed)) >= 3, "the state must really be split over fsdp"
        same_final_state_on_8_devices(straight, killed)
    else:
        assert_same_final_state(straight, killed)


SEEDS = 2
SEED_RUN = ("+experiment=digits_mlp", "optimizer/schedule=constant", "model.hidden_sizes=[64]",
            "trainer.max_steps=32", "trainer.eval_every=16", "trainer.plots=false", *TINY)  # fmt: skip


@pytest.mark.slow
def test_replica_k_of_num_seeds_is_the_single_run_with_seed_plus_k(tmp_path: Path) -> None:
    """Replica k of ``seed=0 trainer.num_seeds=K`` is the independent run ``seed=k``: its own
    initialisation and its own data order, so a K-seed run can be extended or checked seed by seed."""
    run_train(*SEED_RUN, "seed=0", f"trainer.num_seeds={SEEDS}", f"hydra.run.dir={tmp_path / 'replicas'}")
    replicas = json.loads((tmp_path / "replicas" / "summary.json").read_text())
    stacked = final_state(tmp_path / "replicas")
    for k in range(SEEDS):
        run_train(*SEED_RUN, f"seed={k}", f"hydra.run.dir={tmp_path / str(k)}")
        single = json.loads((tmp_path / str(k) / "summary.json").read_text())
        assert replicas["test/loss_per_seed"][k] == pytest.approx(single["test/loss"], rel=1e-5), k
        for key, value in final_state(tmp_path / str(k)).items():
            if key.startswith("['params']"):
                np.testing.assert_allclose(stacked[key][k], value, rtol=1e-4, atol=1e-6, err_msg=key)
