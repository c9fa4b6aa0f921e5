"""Checkpoint retention: the latest and the best k survive, also across a restart of the process."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from research.engine.checkpoint import Checkpointer


def _ckpt(directory: Path, mode: str = "max") -> Checkpointer:
    return Checkpointer(directory, "val/accuracy", mode, keep_best=1, async_save=False)


def test_best_survives_a_restart(tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path)
    ckpt.save(1, {"x": jnp.ones(3)}, {"step": 1}, metrics={"val/accuracy": 0.9})
    ckpt.save(2, {"x": jnp.ones(3) * 2}, {"step": 2}, metrics={"val/accuracy": 0.5})
    ckpt.close()

    again = _ckpt(tmp_path)
    state, meta = again.restore(2, {"x": jnp.zeros(3)})
    assert meta["step"] == 2 and float(state["x"][0]) == 2.0
    again.save(3, {"x": jnp.ones(3) * 3}, {"step": 3}, metrics={"val/accuracy": 0.4})
    assert again.manager.all_steps() == [1, 3]
    best, _ = again.restore(1, {"x": jnp.zeros(3)})
    np.testing.assert_array_equal(best["x"], np.ones(3))
    again.close()


def test_ties_keep_the_newest_and_min_mode(tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path, mode="min")
    for step, loss in [(1, 0.3), (2, 0.2), (3, 0.2), (4, 0.5)]:
        ckpt.save(step, {"x": jnp.ones(1) * step}, {"step": step}, metrics={"val/accuracy": loss})
    assert ckpt.manager.all_steps() == [3, 4]
    ckpt.save(5, {"x": jnp.ones(1)}, {"step": 5})  # a preemption save: no metrics
    assert ckpt.manager.all_steps() == [3, 5]
    ckpt.close()


def test_a_best_state_saved_inside_a_later_step_is_a_step_like_any_other(tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path)
    ckpt.save(2, {"x": jnp.ones(3) * 2}, {"step": 2, "best_step": 1}, metrics={"val/accuracy": 0.5},
              best=(1, {"x": jnp.ones(3)}, {"val/accuracy": 0.9}))  # fmt: skip
    ckpt.close()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["2"]  # one save, one directory

    again = _ckpt(tmp_path)  # a fresh process reads where the best is from the metadata
    assert again.steps() == [1, 2] and again.latest_step() == 2 and again.best_step_saved() == 1
    assert again.state_dir(1) == tmp_path.absolute() / "2" / "best"
    best, _ = again.restore(1, {"x": jnp.zeros(3)})
    last, _ = again.restore(2, {"x": jnp.zeros(3)})
    np.testing.assert_array_equal(best["x"], np.ones(3))
    np.testing.assert_array_equal(last["x"], np.ones(3) * 2)
    # Step 2's directory holds the best of the run: it is kept while step 1 is among the best k.
    again.save(3, {"x": jnp.ones(3) * 3}, {"step": 3}, metrics={"val/accuracy": 0.4})
    assert again.manager.all_steps() == [2, 3] and again.steps() == [1, 2, 3]
    # A better step 4 pushes step 1 out of the best k (1): its home goes with it.
    again.save(4, {"x": jnp.ones(3) * 4}, {"step": 4}, metrics={"val/accuracy": 0.95})
    assert again.manager.all_steps() == [4] and again.steps() == [4]
    again.close()
