"""W&B: offline when not logged in, with the whole config, group, tags and job type; resumed by saved id."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_train
from tests.wandb_records import read_records

ARGS = (
    "optimizer/schedule=constant",
    "trainer.eval_every=20",
    "trainer.progress=false",
    "logger.wandb.group=sweep-a",
    "tags=[digits,smoke]",
)


def _runs(run_dir: Path) -> dict[str, list]:
    return {p.parent.name: read_records(p) for p in (run_dir / "wandb").glob("offline-run-*/run-*.wandb")}


def test_offline_record_and_resume_by_saved_id(run_dir: Path, tmp_path: Path) -> None:
    env = {"WANDB_MODE": None, "WANDB_API_KEY": None, "HOME": str(tmp_path)}  # not logged in: auto -> offline
    run_train("trainer.max_steps=40", *ARGS, f"hydra.run.dir={run_dir}", env=env)
    ((name, records),) = _runs(run_dir).items()
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_group == "sweep-a" and run.job_type == "train" and list(run.tags) == ["digits", "smoke"]
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["optimizer"]["_target_"] == "optax.adam" and config["data"]["batch_size"] == 32
    assert sum(r.WhichOneof("record_type") == "history" for r in records) >= 2
    summary_keys = {
        u.key for r in records if r.WhichOneof("record_type") == "summary" for u in r.summary.update
    }
    assert "steps" in summary_keys

    run_train("trainer.max_steps=80", *ARGS, f"hydra.run.dir={run_dir}", env=env)
    runs = _runs(run_dir)
    assert len(runs) == 2 and {n.rsplit("-", 1)[1] for n in runs} == {run.run_id}, runs.keys()
