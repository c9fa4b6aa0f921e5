"""The training loop: one for every task. Read it top to bottom in ``fit``.

Per call it dispatches K compiled train steps, then fetches their metrics (a few
scalars per step): that bounds the work queued on the device, catches a non-finite
value at the step it happened, and feeds the progress display. At interval
boundaries it logs, runs the due evaluators, checks early stopping and saves.
Nothing here knows what the task learns: names of metrics, counters and the
state's model parts come from the task's declarations (``research/engine/api.py``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from research.data.base import Dataset
from research.engine.api import Evaluator, Paradigm, Task
from research.engine.checkpoint import Checkpointer
from research.engine.cross_validation import FoldEvaluation, FoldPlan
from research.engine.dispatch import IndicesAhead, InFlight, queue_limit
from research.engine.early_stopping import BestTracker
from research.engine.evaluation import VAL, Evaluation
from research.engine.flops import Peak, Throughput
from research.engine.health import blame, signals
from research.engine.layout import ReplicaLayout
from research.engine.preemption import PreemptionFlag, leave_preempted
from research.engine.profiler import ProfileWindow
from research.engine.progress import make_progress
from research.engine.records import CurveRefresh, TrainWindow, check_finite, write_plots
from research.engine.replicas import Replicas
from research.engine.run_dir import set_aside_previous
from research.engine.save_policy import SavePolicy
from research.engine.settings import CheckpointConfig, TrainerConfig
from research.engine.sharding import make_mesh
from research.engine.start import start_state
from research.engine.steps import Programs, enable_compile_cache
from research.engine.writers import Writers
from research.errors import ConfigError, TrialPruned

__all__ = ["TrainerConfig", "fit"]


class Run:
    """Everything one training run holds between calls; built once by ``fit``."""

    def __init__(
        self,
        task: Task,
        dataset: Dataset | None,
        cfg: TrainerConfig,
        steps: int,
        seed: int,
        mesh_sizes: dict,
        run_dir: Path,
        replicas: Replicas,
        evaluators: dict[str, Evaluator],
        folds: FoldPlan | None = None,
        paradigm: Paradigm | None = None,
    ):
        enable_compile_cache(cfg.compile_cache)
        self.task, self.dataset, self.cfg, self.run_dir, self.replicas = task, dataset, cfg, run_dir, replicas
        self.folds = folds
        self.mesh = make_mesh(mesh_sizes)
        # How the run feeds and lays out its state: a paradigm's own way (federated.Rounds), or
        # the replica axis of seeds, a learning-rate grid or folds.
        layout = paradigm if paradigm is not None else ReplicaLayout(dataset, seed, replicas, folds)
        self.feed = layout.feed(dataset, self.mesh)
        self.steps = steps
        self.eval_every = cfg.eval_every or self.feed.steps_per_epoch or self.steps
        self.save_policy = SavePolicy(cfg.checkpoint)
        self.per_call = _steps_per_call(cfg.steps_per_call, self.eval_every, *self.save_policy.intervals)
        self.intervals = [self.per_call, self.eval_every, *self.save_policy.intervals]
        if min(self.intervals) <= 0 or self.steps <= 0:
            raise ConfigError("trainer intervals and step counts must be positive")

        self.init_rng = replicas.rngs(seed)
        self.example = self.feed.example()
        self.abstract = abstract = replicas.abstract_state(task.init, seed, self.example)
        shardings = layout.shardings(self.mesh, abstract, mesh_sizes.get("rules"))
        self.target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
        )
        self.programs = Programs(
            task,
            self.feed.gather,
            replicas,
            per_seed_data=self.feed.by_step,
            state_sharding=shardings,
            unoptimized=cfg.unoptimized,
        )
        evaluation = (evaluators, dataset, self.mesh, self.programs, replicas, self.eval_every)
        if folds:
            self.evaluation = FoldEvaluation(folds, abstract, mesh_sizes.get("rules"), *evaluation)
        else:
            self.evaluation = Evaluation(*evaluation)
        self.evaluation.weights = cfg.eval_weights  # with optimizer.ema: which weights to evaluate
        stop = cfg.early_stopping
        self.metric = self.evaluation.recorded(stop.metric or task.metric)
        self.mode = stop.mode or task.metric_mode
        self.evaluation.check_metric(self.metric)
        if not cfg.resume and jax.process_index() == 0:
            set_aside_previous(run_dir)
        self.ckpt = _checkpointer(cfg.checkpoint, run_dir, self.metric, self.mode)
        self.queue_limit = queue_limit(self.mesh, self.per_call)
        peak = Peak(cfg.peak_tflops, self.mesh.devices.flat[0], self.mesh.size)
        self.throughput = Throughput(layout.examples_per_step, peak, lambda: self.programs.step_flops)

    def call_len(self, step: int) -> int:
        """Steps in the call starting at ``step``: it ends on the next log/eval/save boundary."""
        return min(_next_boundary(step, self.intervals, self.steps) - step, self.per_call)

    def compile_ahead(self, resumed: bool, step: int) -> None:
        first_call = None
        if self.feed.by_step and step < self.steps:
            first_call = (self.feed.data, self.feed.xs(step, self.call_len(step)))
        self.programs.compile_ahead(
            self.target, init=None if resumed else (self.init_rng, self.example), train=first_call
        )
        self.evaluation.prepare(self.target)

    def num_params(self) -> int:
        trainable = {k: v for k, v in self.abstract.items() if k in self.task.trainable}
        return int(sum(np.size(leaf) for leaf in jax.tree.leaves(trainable))) // self.replicas.count


def fit(
    task: Task,
    dataset: Dataset | None,
    cfg: TrainerConfig,
    *,
    steps: int,
    seed: int,
    mesh_sizes: dict,
    run_dir: Path,
    writers_factory: Any,
    config_dict: dict,
    replicas: Replicas | None = None,
    evaluators: dict[str, Evaluator] | None = None,
    on_eval: Any = None,
    folds: FoldPlan | None = None,
    paradigm: Paradigm | None = None,
) -> dict:
    """Train ``task`` for ``steps`` (or to an early stop), evaluate its best state on test; the summary.

    ``replicas`` lays out several seeds and a learning-rate grid in one program (default:
    ``cfg.num_seeds`` seeds); ``evaluators`` are added to the task's own; ``on_eval(step,
    record)`` sees every validation record (a sweeper's pruning hook: it may raise TrialPruned);
    ``folds`` makes it a cross-validation run (``cross_validation.py``); ``paradigm`` brings its
    own feed and state layout (``federated.Rounds``: a step is a round of federated training).
    """
    if cfg.dry_run:  # a plan, not a run: nothing may train or be written
        raise ConfigError(
            "trainer.dry_run=true plans a run without training it: run python -m research.train with it, "
            "or call research.dry_run.dry_run(cfg)"
        )
    start_wall = time.perf_counter()
    replicas = replicas or Replicas(num_seeds=int(cfg.num_seeds))
    evaluators = {**task.evaluators(), **(evaluators or {})}
    run = Run(
        task, dataset, cfg, steps, seed, mesh_sizes, Path(run_dir), replicas, evaluators, folds, paradigm
    )
    state, meta, resumed = start_state(run)
    best = BestTracker(run.metric, run.mode, cfg.early_stopping.patience, cfg.early_stopping.min_delta, meta)
    writers: Writers = writers_factory(
        resume_step=meta.get("step") if resumed else None, wandb_id=meta.get("wandb_id")
    )
    loop = Loop(run, writers, best, config_dict, on_eval, int(meta.get("step", 0)))
    try:  # the signals are taken until the end: one during the test pass must not kill it unsaid
        state = loop.train(state)
        if loop.preempt.set:
            loop.preempt.restore()  # before the requeue, which ignores the SIGTERM answering it
            leave_preempted(run.ckpt, loop.preempt, writers, loop.step)
        summary = loop.finish(state, start_wall)
    except TrialPruned as pruned:
        loop.close_checkpoints()
        writers.pruned(str(pruned), loop.step, best.metrics)
        raise
    finally:
        loop.preempt.restore()
    if loop.preempt.set:
        print("note: a stop signal came during the final evaluation; the run is finished, nothing to resume")
    return summary


class Loop:
    """The train-call cycle and what happens at its boundaries."""

    def __init__(self, run: Run, writers: Writers, best: BestTracker, config: dict, on_eval: Any, step: int):
        self.run, self.writers, self.best, self.config, self.on_eval = run, writers, best, config, on_eval
        self.step = step
        self.best_state: Any = None  # a device copy of the best state (test evaluates it)
        self.best_saved = True
        self.window = TrainWindow(run.task.counters, run.metric)
        plots = writers.active and run.cfg.plots
        self.curves = CurveRefresh(run.run_dir, config.get("name", "run"), run.cfg.plots_every_s, plots)
        self.train_s, self.train_steps, self.stopped_early = 0.0, 0, False
        self.preempt = PreemptionFlag()
        self.last_record: dict = {}
        self.ahead = IndicesAhead(run.feed)
        self.in_flight = InFlight(run.queue_limit)
        self.started, self.compiled_before = 0.0, 0.0

    def train(self, state: Any) -> Any:
        run = self.run
        profile = ProfileWindow(run.cfg.profile, run.cfg.profile_steps, run.run_dir / "profile")
        progress = make_progress(
            run.steps, self.step, run.cfg.progress and jax.process_index() == 0, run.cfg.log_every
        )
        try:
            while self.step < run.steps and not self.stopped_early:
                n = run.call_len(self.step)
                profile.before(self.step, n)
                state = self._call(state, n)
                if profile.active:  # the trace holds whole calls
                    self._read(state)
                profile.after(self.step)
                state = self._boundary(state, n)
                progress.update(self.step, n, self.window.postfix(self.train_steps / max(self.train_s, 1e-9)))
                if self.preempt.set:
                    break
        finally:
            profile.close()
            progress.close()
        return state

    def _call(self, state: Any, n: int) -> Any:
        """Dispatch steps [step, step + n); their metrics are read when a boundary needs them."""
        run = self.run
        if not self.in_flight.calls:
            self.started = time.perf_counter()
            self.compiled_before = run.programs.trace_s + run.programs.compile_s
        state, metrics = run.programs.train(state, run.feed.data, self.ahead.xs(self.step, n))
        self.in_flight.add(self.step, n, metrics)
        self.step += n
        if self.step < run.steps:  # host work while the device runs this call
            self.ahead.make(self.step, run.call_len(self.step))
        if self.in_flight.full():
            self._read(state)
        return state

    def _read(self, state: Any) -> None:
        """Wait for the calls in flight and take in their metrics: the host sync. A non-finite
        metric stops the run, naming where the state's gradients first went non-finite."""
        run = self.run
        if not self.in_flight.calls:
            return
        calls = self.in_flight.read()
        compiled = run.programs.trace_s + run.programs.compile_s - self.compiled_before
        self.train_s += time.perf_counter() - self.started - compiled
        said = lambda: blame(run.task, state, run.cfg.blame_nonfinite)  # noqa: E731 - read only on a stop
        for step, n, metrics in calls:
            check_finite(metrics, run.task.finite, step, run.ckpt, said)
            self.train_steps += n
            self.window.add(metrics, n)

    def _boundary(self, state: Any, n: int) -> Any:
        """Log, evaluate, check early stopping and save, each when its interval ends here."""
        run, step = self.run, self.step
        at_end = step >= run.steps
        record = {}
        logs = step // run.cfg.log_every > (step - n) // run.cfg.log_every or step % run.eval_every == 0
        due = run.evaluation.due(step, at_end)
        if logs or due or at_end or self.preempt.set:
            self._read(state)
        if logs or at_end:
            record.update(self.window.means())
            record["train/steps_per_s"] = self.train_steps / max(self.train_s, 1e-9)
            record.update(signals(run.task, state))  # gradient, parameter, update norms
            record.update(run.throughput.record(record["train/steps_per_s"]))
            record.update({f"train/{k}": v for k, v in self.window.rates(self.train_s).items()})
            self.last_record.update(record)
        evaluated = None
        if due:
            outcome = run.evaluation.run(state, step, due, VAL)
            evaluated = outcome.scalars
            record.update(evaluated)
            self.window.evaluated(evaluated)
            self.writers.images(step, outcome.images, final=False)
            self.best.update(step, evaluated)
            self.stopped_early = self.best.should_stop
            if self.best.is_new_best:
                self.best_state = _device_copy(state) if step < run.steps else None
                self.best_saved = self.best_state is None
        if record:
            self.writers.write(step, record)
        if evaluated is not None and not at_end:  # the end draws them in finish
            self.curves.after_evaluation()
        if evaluated is not None and self.on_eval is not None and not at_end:  # the last is the result
            self.on_eval(step, evaluated)
        finishing = (at_end or self.stopped_early) and not self.preempt.set
        if run.ckpt and run.save_policy.due(step, finishing or self.preempt.set):
            self._read(state)  # a state is saved only once its steps' metrics are checked
            self.save(state, step, evaluated)
        return state

    def _meta(self, step: int) -> dict:
        wid = self.writers.wandb.run_id if self.writers.wandb else None
        return {"wandb_id": wid, "config": self.config, **self.best.meta(), "step": step}

    def save(self, state: Any, step: int, evaluated: dict | None) -> None:
        """The current state, with the data iterator (what a resume starts from), and in the same
        save the best state kept on device since its evaluation, if it is not saved yet.
        """
        best = None
        if not self.best_saved and self.best_state is not None and self.best.step != step:
            best = (self.best.step, self.best_state, self.best.metrics)
        self.run.ckpt.save(step, state, self._meta(step), self.run.feed.iterator, evaluated, best)
        self.run.save_policy.saved()
        self.best_saved = True

    def close_checkpoints(self) -> None:
        if self.run.ckpt:
            self.run.ckpt.close()

    def final_state(self, state: Any) -> Any:
        """The best state: on device, in the latest checkpoint, or restored from its own."""
        run, best = self.run, self.best
        if best.step is None or best.step == self.step:
            return state
        if self.best_state is not None:
            return self.best_state
        if run.ckpt is None:
            return state
        run.ckpt.wait()
        restored, _ = run.ckpt.restore(best.step, run.target)
        return restored

    def finish(self, state: Any, start_wall: float) -> dict:
        run = self.run
        # Folds report their last states (cross_validation.py); the last save (the final and the
        # best state) may still be writing: it overlaps the test pass and the plots.
        final = state if run.folds else self.final_state(state)
        test = run.evaluation.final(final, self.step)
        summary = {
            "steps": self.step,
            "best_step": self.best.step if self.best.step is not None else self.step,
            "stopped_early": self.stopped_early,
            "compile_s": run.programs.compile_s,
            "trace_s": run.programs.trace_s,
            "train/steps_per_s": self.train_steps / max(self.train_s, 1e-9),
            **self.window.rates(self.train_s),
            "num_seeds": run.replicas.num_seeds,
            "num_params": run.num_params(),
            **run.replicas.summary(),
            **(run.folds.summary() if run.folds else {}),
            **{k: v for k, v in self.last_record.items() if k.startswith("train/")},
            **run.throughput.record(self.train_steps / max(self.train_s, 1e-9)),
            **self.best.metrics,
            **test.scalars,
            **{k: np.asarray(v).tolist() for k, v in test.arrays.items()},
        }
        summary["wall_s"] = time.perf_counter() - start_wall
        images = {}
        if self.writers.active:
            images = self.writers.images(self.step, test.images, final=True)
            if run.cfg.plots:
                images.update(write_plots(run.run_dir, self.config.get("name", "run")))
        self.writers.summary(summary, images)
        self.close_checkpoints()
        self.writers.close()
        return summary


def _checkpointer(ckpt: CheckpointConfig, run_dir: Path, metric: str, mode: str) -> Checkpointer | None:
    """The run's checkpoints, keeping the best k by ``metric``; None when they are off."""
    if not ckpt.enabled:
        return None
    return Checkpointer(run_dir / "checkpoints", metric, mode, ckpt.keep_best, ckpt.async_save)


def _device_copy(state: Any) -> Any:
    return jax.tree.map(lambda a: a.copy(), state)


def _next_boundary(step: int, intervals: list[int], steps: int) -> int:
    return min([steps] + [(step // i + 1) * i for i in intervals])


def _steps_per_call(limit: int, *intervals: int) -> int:
    """The most steps per call, up to ``limit``, that divides the eval and checkpoint intervals.

    Calls of one length compile once; when only a small divisor exists (under half the
    limit), the limit is used and the odd call lengths compile separately.
    """
    common = np.gcd.reduce(np.asarray(intervals, dtype=np.int64))
    best = max(d for d in range(1, min(limit, int(common)) + 1) if common % d == 0)
    return best if 2 * best >= limit else limit
