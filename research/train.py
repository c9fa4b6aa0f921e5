"""Train any experiment: ``python -m research.train +experiment=<name> [overrides]``.

Heavy libraries (JAX, Flax, Orbax, W&B) load inside ``main`` so that ``--help``
and ``--cfg job`` answer at once.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import hydra
from omegaconf import DictConfig

from research import cli, console
from research.config import register_resolvers
from research.engine.preemption import ctrl_c_pressed, take_ctrl_c
from research.errors import EXIT_INTERRUPTED

register_resolvers()


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """One run. Returns ``summary[cfg.optimized_metric]`` for sweepers (Optuna)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_object

    if ctrl_c_pressed():  # during an earlier job of this sweep, after its last step
        console.fail("interrupted (Ctrl-C) before this job started", EXIT_INTERRUPTED)
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode.name == "MULTIRUN"
    group = Path(hydra_cfg.sweep.dir).name if multirun else None
    run_dir = Path(hydra_cfg.runtime.output_dir)
    with console.recorded(run_dir / "train.log"), console.report_errors(exit_on_error=not multirun):
        console.print_run_dir(run_dir)
        # A single run was checked in preflight; a sweep's job is checked here (a resubmitted
        # sweep runs only the jobs that have not finished).
        summary = cli.check_rerun(cfg, run_dir) if multirun else None
        if summary is None:
            summary = _train(cfg, run_dir, group, multirun)
            console.print_summary(summary, cli.headline(get_object(cfg.task._target_)))
        console.print_run_dir(run_dir)
        if cfg.get("optimized_metric"):
            return float(summary[cfg.optimized_metric])
    return None  # a failed job in a sweep: Optuna marks the trial failed and goes on


def _train(cfg: DictConfig, run_dir: Path, group: str | None, multirun: bool) -> dict:
    """Train holding the run directory's lock; a failed continuation leaves the config its
    checkpoints were made with (``rerun.Attempt``).
    """
    from research.experiment import run
    from research.sweep.trial import reporter

    attempt = cli.start_attempt(run_dir) if multirun else cli.ATTEMPT.get("current")
    with attempt or contextlib.nullcontext():
        return run(cfg, run_dir, wandb_group=group, on_eval=reporter(cfg))  # Optuna trials: pruning


if __name__ == "__main__":
    cli.preflight()
    take_ctrl_c()
    main()
