"""Checkpoint retention: the latest and the best k survive, also across a restart of the process.
A checkpoint that cannot be read is one CheckpointUnreadable, and the one before it restores."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from research.engine.checkpoint import Checkpointer
from research.engine.orbax_reads import shape_mismatches
from research.errors import CheckpointUnreadable


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


def _truncate(files: list[Path]) -> None:
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[:10])


def test_a_failed_orbax_read_lets_the_reads_it_started_finish_before_closing_their_loop(
    tmp_path: Path,
) -> None:
    """The deterministic form of a race that follows a damaged checkpoint: Orbax gathers one TensorStore
    read per array, the first failure raises, and a read finishing later calls back from its thread.
    """
    from orbax.checkpoint._src import asyncio_utils

    _ckpt(tmp_path).close()  # using Orbax through the Checkpointer settles its reads
    outcome: list[str] = []
    threads: list[threading.Thread] = []

    async def read() -> None:  # completes 0.1 s later, from another thread, as TensorStore does
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def complete() -> None:
            time.sleep(0.1)
            try:
                loop.call_soon_threadsafe(done.set_result, None)
                outcome.append("delivered")
            except RuntimeError as e:
                outcome.append(str(e))

        threads.append(threading.Thread(target=complete))
        threads[0].start()
        await done

    async def damaged() -> None:
        raise ValueError("DATA_LOSS")

    async def restore() -> None:
        await asyncio.gather(read(), damaged())

    with pytest.raises(ValueError, match="DATA_LOSS"):
        asyncio_utils.run_sync(restore())
    threads[0].join()
    assert outcome == ["delivered"]  # not "Event loop is closed"


def test_an_unreadable_checkpoint_is_said_so_not_taken_for_one_of_another_model(tmp_path: Path) -> None:
    state = {"w": jnp.ones(8), "b": jnp.ones(2)}
    ckpt = _ckpt(tmp_path)
    ckpt.save(1, state, {"step": 1})
    ckpt.close()
    _truncate(list((tmp_path / "1" / "state").rglob("manifest.ocdbt")))
    # An Orbax Checkpointer's metadata would log the error and list no arrays: "w: not in the checkpoint".
    with pytest.raises(
        CheckpointUnreadable, match=rf"checkpoint at step 1 \({tmp_path / '1'}\) cannot be read"
    ):
        shape_mismatches(tmp_path / "1" / "state", state)


def test_the_newest_readable_checkpoint_is_restored_and_an_unreadable_one_moved_aside(
    tmp_path: Path, capsys
) -> None:
    directory = tmp_path / "checkpoints"
    ckpt = _ckpt(directory)
    saved = {step: jnp.asarray(np.random.default_rng(step).normal(size=1024)) for step in (1, 2)}
    for step, x in saved.items():  # random: incompressible, stored in the data files, not inline
        ckpt.save(step, {"x": x}, {"step": step}, metrics={"val/accuracy": 1.0 / step})  # 1 is kept
    ckpt.close()
    _truncate(list((directory / "2" / "state" / "ocdbt.process_0" / "d").iterdir()))  # the arrays

    again = _ckpt(directory)
    state, meta, path = again.restore_latest({"x": jnp.zeros(1024)})
    again.close()
    assert meta["step"] == 1 and path == directory.absolute() / "1"
    np.testing.assert_array_equal(state["x"], saved[1])
    assert (tmp_path / "checkpoints_unreadable" / "2" / "state").is_dir()
    assert capsys.readouterr().out.startswith(
        f"warning: checkpoint at step 2 ({directory.absolute() / '2'}) cannot be read ("
    )
