"""The training loop: one for every task. Read it top to bottom in ``fit``.

Per call it dispatches K compiled train steps, then fetches their metrics (a few
scalars per step): that bounds the work queued on the device, catches a NaN loss
at the step it happened, and feeds the progress bar. At interval boundaries it
logs, evaluates, checkpoints and checks early stopping.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from research.data.base import Dataset
from research.engine import feed as feeds
from research.engine import plots
from research.engine.checkpoint import Checkpointer
from research.engine.early_stopping import BestTracker
from research.engine.preemption import Interrupted, Preempted, PreemptionFlag, requeue_if_slurm
from research.engine.profiler import ProfileWindow
from research.engine.replicas import Replicas
from research.engine.sharding import make_mesh, state_shardings
from research.engine.steps import Programs, enable_compile_cache
from research.engine.writers import Writers
from research.errors import ConfigError, NonFiniteLossError
from research.tasks.base import Task


@dataclasses.dataclass
class TrainerConfig:
    epochs: int = 30
    max_steps: int | None = None
    steps_per_call: int = 16
    log_every: int = 32
    eval_every: int | None = None
    checkpoint: dict = dataclasses.field(
        default_factory=lambda: {"enabled": True, "every": None, "keep_best": 2, "async_save": True}
    )
    early_stopping: dict = dataclasses.field(
        default_factory=lambda: {"metric": "val/accuracy", "mode": "max", "patience": None, "min_delta": 0.0}
    )
    resume: bool = True
    num_seeds: int = 1
    vmap_over: str | None = None
    vmap_values: list = dataclasses.field(default_factory=list)
    compile_cache: str | None = None
    profile: bool = False
    profile_steps: list = dataclasses.field(default_factory=lambda: [16, 48])
    progress: bool = True
    plots: bool = True
    unoptimized: list = dataclasses.field(default_factory=lambda: ["init"])


def total_steps(cfg: TrainerConfig, dataset: Dataset | None) -> int:
    """Train steps of the whole run: max_steps, or epochs over the train split."""
    if cfg.max_steps is not None:
        return int(cfg.max_steps)
    if dataset is None:
        raise ConfigError("trainer.max_steps must be set for tasks without a dataset")
    return int(cfg.epochs) * (dataset.splits["train"].num_examples // dataset.batch_size)


def _mean_metrics(prefix: str, metrics: dict) -> dict:
    """Scalars for the record; with several seeds the mean, plus the per-seed values."""
    out = {}
    for k, v in metrics.items():
        v = np.asarray(v)
        if k == "confusion_matrix":
            continue
        if v.ndim == 0:
            out[f"{prefix}/{k}"] = v.item()
        elif v.ndim == 1:  # one value per seed
            out[f"{prefix}/{k}"] = float(v.mean())
            out[f"{prefix}/{k}_std"] = float(v.std())
            out[f"{prefix}/{k}_per_seed"] = v.tolist()
    return out


def fit(
    task: Task,
    dataset: Dataset | None,
    cfg: TrainerConfig,
    *,
    seed: int,
    mesh_sizes: dict,
    run_dir: Path,
    writers_factory: Any,
    config_dict: dict,
    replicas: Replicas | None = None,
) -> dict:
    """Train ``task`` to the end (or early stop), evaluate the best checkpoint on test, return the summary.

    ``replicas`` lays out several seeds and a learning-rate grid in one program
    (default: ``cfg.num_seeds`` seeds).
    """
    start_wall = time.perf_counter()
    run_dir = Path(run_dir)
    enable_compile_cache(cfg.compile_cache)
    mesh = make_mesh(mesh_sizes)
    replicas = replicas or Replicas(num_seeds=int(cfg.num_seeds))
    feed = feeds.make_feed(dataset, seed, replicas.num_seeds, mesh)
    steps = total_steps(cfg, dataset)
    spe = feed.steps_per_epoch
    eval_every = cfg.eval_every or spe or steps
    ckpt_cfg, stop_cfg = cfg.checkpoint, cfg.early_stopping
    ckpt_every = ckpt_cfg.get("every") or eval_every
    per_call = _steps_per_call(cfg.steps_per_call, eval_every, ckpt_every)
    intervals = [per_call, eval_every, ckpt_every]  # calls end exactly on these
    if min(intervals) <= 0 or steps <= 0:
        raise ConfigError("trainer intervals and step counts must be positive")

    init_rng = replicas.rngs(seed)
    example = feed.example()
    abstract = jax.eval_shape(task.init, init_rng[0] if replicas.vmapped else init_rng, example)
    if replicas.vmapped:
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct((replicas.count, *a.shape), a.dtype), abstract)
    shardings = state_shardings(mesh, abstract, mesh_sizes.get("rules"), leading_axes=int(replicas.vmapped))
    programs = Programs(
        task,
        feed.gather,
        replicas,
        per_seed_data=feed.kind != "stream",
        state_sharding=shardings,
        unoptimized=cfg.unoptimized,
    )

    ckpt = None
    if ckpt_cfg.get("enabled", True):
        ckpt = Checkpointer(
            run_dir / "checkpoints",
            stop_cfg["metric"],
            stop_cfg["mode"],
            ckpt_cfg["keep_best"],
            ckpt_cfg["async_save"],
        )
    meta: dict = {}
    start = ckpt.latest_step() if (ckpt and cfg.resume) else None
    target = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    eval_data = feeds.eval_arrays(dataset, mesh)

    def call_len(s: int) -> int:
        """Steps in the call starting at ``s``: it ends on the next log/eval/checkpoint boundary."""
        return min(_next_boundary(s, intervals, steps) - s, per_call)

    first = start or 0
    programs.compile_ahead(
        target,
        init=(init_rng, example) if start is None else None,
        train=None if feed.kind == "stream" else (feed.data, feed.xs(first, call_len(first))),
        evals=list(eval_data.values()) if dataset is not None else None,
    )
    if start is not None:
        state, meta = ckpt.restore(start, target, feed.iterator)
        if feed.kind == "stream":
            feed.restored()
    else:
        state = programs.init(init_rng, example)
    step = int(meta.get("step", 0))
    best = BestTracker(
        stop_cfg["metric"], stop_cfg["mode"], stop_cfg.get("patience"), stop_cfg.get("min_delta", 0.0), meta
    )
    writers: Writers = writers_factory(
        resume_step=step if start is not None else None, wandb_id=meta.get("wandb_id")
    )

    def evaluate(state: Any, split: str) -> dict:
        if dataset is None:
            return programs.evaluate_free(state)
        batches, mask = eval_data[split]
        return programs.evaluate(state, batches, mask)

    def save(state: Any, step: int, metrics: dict | None) -> None:
        if ckpt is None:
            return
        wid = writers.wandb.run_id if writers.wandb else meta.get("wandb_id")
        info = {"step": step, "wandb_id": wid, "config": config_dict, **best.meta()}
        ckpt.save(step, state, info, feed.iterator, metrics)

    preempt = PreemptionFlag()
    profile = ProfileWindow(cfg.profile, cfg.profile_steps, run_dir / "profile")
    bar = _progress(cfg.progress and jax.process_index() == 0, steps, step)
    window: dict[str, list] = {}
    train_s, train_steps, env_steps, stopped_early = 0.0, 0, 0.0, False
    prefix = "eval" if dataset is None else "val"
    try:
        while step < steps and not stopped_early:
            n = call_len(step)
            xs = feed.xs(step, n)
            profile.before(step, n)
            compile_before = programs.trace_s + programs.compile_s
            t0 = time.perf_counter()
            state, metrics = programs.train(state, feed.data, xs)
            metrics = jax.device_get(metrics)  # the sync: at most one call in flight
            train_s += time.perf_counter() - t0 - (programs.trace_s + programs.compile_s - compile_before)
            profile.after(step + n)
            _check_finite(metrics, step, ckpt)
            step += n
            train_steps += n
            env_steps += float(np.sum(metrics.get("env_steps", 0.0)))
            for k, v in metrics.items():
                window.setdefault(k, []).append(np.asarray(v).reshape(n, -1))
            bar.update(n)
            bar.set_postfix(
                loss=f"{np.mean(metrics.get('loss', np.nan)):.4f}",
                steps_per_s=f"{train_steps / max(train_s, 1e-9):.0f}",
                refresh=False,
            )

            record = {}
            at_end = step >= steps
            if step // cfg.log_every > (step - n) // cfg.log_every or step % eval_every == 0 or at_end:
                record.update(_window_means(window))
                record["train/steps_per_s"] = train_steps / max(train_s, 1e-9)
                window = {}
            evaluated = None
            if step % eval_every == 0 or at_end:
                evaluated = _mean_metrics(
                    prefix, jax.device_get(evaluate(state, "val" if dataset is not None else None))
                )
                record.update(evaluated)
                best.update(step, evaluated)
                stopped_early = best.should_stop
            if record:
                writers.write(step, record)
            new_best = evaluated is not None and best.is_new_best
            if preempt.set or step % ckpt_every == 0 or at_end or stopped_early or new_best:
                save(state, step, evaluated)
            if preempt.set:
                break
    finally:
        profile.close()
        bar.close()
        preempt.restore()
    if preempt.set:  # the checkpoint of this step is saved: leave
        if ckpt:
            ckpt.close()
        requeued = not preempt.interrupted and requeue_if_slurm()
        writers.close()
        if preempt.interrupted:
            raise Interrupted(f"interrupted at step {step}; checkpoint saved{_resume_hint()}")
        raise Preempted(
            f"preempted at step {step}; checkpoint saved" + ("; job requeued" if requeued else _resume_hint())
        )

    if ckpt:
        ckpt.wait()
    final_state = state
    if ckpt and best.step is not None and best.step != step:
        final_state, _ = ckpt.restore(best.step, target)
    test_split = "test" if dataset is not None else None
    test = jax.device_get(evaluate(final_state, test_split))
    summary = {
        "steps": step,
        "best_step": best.step if best.step is not None else step,
        "stopped_early": stopped_early,
        "compile_s": programs.compile_s,
        "trace_s": programs.trace_s,
        "train/steps_per_s": train_steps / max(train_s, 1e-9),
        "num_seeds": replicas.num_seeds,
        "num_params": _num_params(abstract) // replicas.count,
        **replicas.summary(),
        **{k: v for k, v in best.metrics.items()},
        **_mean_metrics("test" if dataset is not None else "eval", test),
    }
    if dataset is None:
        summary["env_steps_per_s"] = env_steps / max(train_s, 1e-9)
        last = [h for h in writers.history if "train/return" in h]
        if last:
            summary["train/return"] = last[-1]["train/return"]
    if "confusion_matrix" in test:
        summary["test/confusion_matrix"] = np.asarray(test["confusion_matrix"]).tolist()
    summary["wall_s"] = time.perf_counter() - start_wall
    images = (
        _plots(cfg, writers, run_dir, test, dataset, config_dict.get("name", "run")) if writers.active else {}
    )
    writers.summary(summary, images)
    if ckpt:
        ckpt.close()
    writers.close()
    return summary


def _steps_per_call(limit: int, *intervals: int) -> int:
    """The most steps per call, up to ``limit``, that divides the eval and checkpoint intervals.

    Calls of one length compile once; when only a small divisor exists (under half the
    limit), the limit is used and the odd call lengths compile separately.
    """
    common = np.gcd.reduce(np.asarray(intervals, dtype=np.int64))
    best = max(d for d in range(1, min(limit, int(common)) + 1) if common % d == 0)
    return best if 2 * best >= limit else limit


def _resume_hint() -> str:
    if os.environ.get("SLURM_JOB_ID"):
        return "; the run resumes when Slurm restarts the job (or rerun the same command)"
    return "; rerun the same command to resume"


def _num_params(state: Any) -> int:
    """Trainable parameters: the size of the state's "params" subtree (all replicas)."""
    params = state.get("params", {}) if isinstance(state, dict) else {}
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))


def _next_boundary(step: int, intervals: list[int], steps: int) -> int:
    return min([steps] + [(step // i + 1) * i for i in intervals])


def _window_means(window: dict[str, list]) -> dict:
    out = {}
    for k, chunks in window.items():
        if k == "env_steps":
            continue
        values = np.concatenate(chunks)  # (steps, seeds or 1)
        per_seed = values.mean(0)
        out[f"train/{k}"] = float(per_seed.mean())
        if per_seed.size > 1:
            out[f"train/{k}_per_seed"] = per_seed.tolist()
    return out


def _check_finite(metrics: dict, step: int, ckpt: Checkpointer | None) -> None:
    loss = metrics.get("loss")
    if loss is None:
        return
    loss = np.asarray(loss).reshape(len(loss), -1)
    bad = ~np.isfinite(loss).all(axis=1)
    if bad.any():
        at = step + int(np.argmax(bad)) + 1
        kept = ""
        if ckpt is not None:
            ckpt.wait()
            last = ckpt.latest_step()
            kept = (
                f"; the last good checkpoint (step {last}) is kept"
                if last is not None
                else "; no checkpoint yet"
            )
        raise NonFiniteLossError(
            f"loss became {loss[bad][0][0]} at step {at}{kept}: lower optimizer.learning_rate "
            "or set optimizer.clip_norm"
        )


def _plots(
    cfg: TrainerConfig, writers: Writers, run_dir: Path, test: dict, dataset: Dataset | None, name: str
) -> dict[str, Path]:
    if not cfg.plots:
        return {}
    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    images = {}
    history = plots.read_history(run_dir / "metrics.jsonl")
    curves = plots.learning_curves(history, out_dir / "learning_curves.png", name)
    if curves:
        images["plots/learning_curves"] = curves
    if "confusion_matrix" in test:
        names = dataset.class_names if dataset else []
        images["plots/confusion_matrix"] = plots.confusion_matrix(
            test["confusion_matrix"], names, out_dir / "confusion_matrix.png", f"{name}: test"
        )
    return images


def _progress(enabled: bool, total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True, leave=False
    )
