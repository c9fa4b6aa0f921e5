"""What the user sees: one-line errors, a preflight check of the overrides, the summary.

``preflight`` composes the config the way Hydra will, before Hydra starts, so a
bad override (unknown experiment, unknown key, wrong type, out-of-range value,
unwritable run directory) fails with one line and exit code 2, and nothing is
created or launched. In a multirun every value of every swept key is checked
before any job is submitted.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import sys
from pathlib import Path

from research.config import CONF_DIR
from research.errors import (
    EXIT_INTERRUPTED,
    EXIT_PREEMPTED,
    EXIT_USER_ERROR,
    TrialPruned,
    UserError,
)

EXPERIMENTS_DIR = CONF_DIR / "experiment"
HYDRA_FLAGS = {
    "--help",
    "-h",
    "--hydra-help",
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--resolve",
    "--package",
    "-p",
    "--version",
}


def fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


@contextlib.contextmanager
def report_errors(exit_on_error: bool = True):
    """UserError -> one line on stderr; exit (single run) or let the sweep go on (multirun)."""
    from hydra.errors import InstantiationException

    from research.engine.preemption import Interrupted, Preempted

    try:
        yield
    except Interrupted as e:
        fail(str(e), EXIT_INTERRUPTED)
    except Preempted as e:
        fail(str(e), EXIT_PREEMPTED)
    except TrialPruned as e:
        if exit_on_error:
            fail(str(e))
        print(f"trial {e}", file=sys.stderr)
        raise  # to the sweeper, which records the trial as pruned
    except (UserError, InstantiationException) as e:
        error = e.__cause__ if isinstance(e, InstantiationException) else e
        if not isinstance(error, UserError):  # a bug, not bad input: keep the traceback
            raise
        if exit_on_error:
            fail(str(error))
        print(f"error: {error}", file=sys.stderr)


def available_experiments() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def _explain(error: Exception) -> str:
    """Hydra's multi-line composition errors, as one line that says what to change."""
    text = str(error).strip()
    if m := re.search(r"Could not override '([^']+)'", text):
        return (
            f"unknown config key '{m.group(1)}': check the spelling "
            f"(`python -m research.train --cfg job` prints every key), "
            f"or add a new key with +{m.group(1)}=..."
        )
    if m := re.search(r"Could not find '([^']+)/([^']+)'", text):
        group, name = m.group(1), m.group(2)
        options = re.search(r"Available options in '[^']+':\n((?:\t.*\n?)*)", text)
        names = ", ".join(o.strip() for o in options.group(1).splitlines() if o.strip()) if options else ""
        what = (
            f"unknown experiment '{name}'"
            if group == "experiment"
            else f"no config '{name}' in group '{group}'"
        )
        return what + (f": choose one of {names}" if names else "")
    if "Could not find" in text and "experiment" in text:
        return text.splitlines()[0]
    return text.splitlines()[0] if text else type(error).__name__


VALUE_FLAGS = {"--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp", "--experimental-rerun"}


def _split_args(argv: list[str]) -> tuple[list[str], bool, bool, list[str]]:
    """(overrides, multirun, skip, config dirs) where skip means Hydra answers a query flag itself."""
    overrides, flags, config_dirs = [], [], []
    args = iter(argv)
    for a in args:
        if not a.startswith("-"):
            overrides.append(a)
            continue
        name, _, value = a.partition("=")
        flags.append(name)
        if name in VALUE_FLAGS and not value:
            value = next(args, "")
        if name in ("--config-dir", "-cd"):
            config_dirs.append(value)
    skip = any(f in HYDRA_FLAGS for f in flags)
    multirun = "-m" in flags or "--multirun" in flags
    return overrides, multirun, skip, config_dirs


def _with_search_path(overrides: list[str], config_dirs: list[str]) -> list[str]:
    """``--config-dir DIR`` as the ``hydra.searchpath`` entry Hydra itself would add."""
    if not config_dirs:
        return overrides
    extra = [f"file://{Path(d).expanduser().resolve()}" for d in config_dirs]
    for i, o in enumerate(overrides):
        if o.startswith("hydra.searchpath="):
            listed = o.split("=", 1)[1].strip().removeprefix("[").removesuffix("]")
            entries = [e for e in listed.split(",") if e.strip()] + extra
            return [*overrides[:i], f"hydra.searchpath=[{','.join(entries)}]", *overrides[i + 1 :]]
    return [*overrides, f"hydra.searchpath=[{','.join(extra)}]"]


def _variants(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists to compose: one, or (multirun) each value of each swept key once."""
    if not multirun:
        return [overrides]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for o in parsed:
        if o.is_sweep_override() and not o.is_hydra_override():
            # interval(a, b) is searched by the Optuna sweeper: both ends are checked
            ends = [o.value().start, o.value().end] if o.is_interval_sweep() else o.sweep_string_iterator()
            choices.append([f"{o.get_key_element()}={v}" for v in ends])
        else:
            choices.append([o.input_line])
    base = [c[0] for c in choices]
    variants = [base]
    for i, values in enumerate(choices):
        variants += [base[:i] + [v] + base[i + 1 :] for v in values[1:]]
    return variants


def _run_dir(cfg) -> Path | None:
    from omegaconf import OmegaConf

    run_dir = OmegaConf.select(cfg, "hydra.run.dir", throw_on_resolution_failure=False)
    return Path(run_dir) if isinstance(run_dir, str) else None


def check_rerun(cfg, run_dir: Path) -> dict | None:
    """Build the run (errors found while building leave no trace) and check ``run_dir`` against it:
    a finished run prints so and returns its summary; a checkpoint that does not fit is one line.
    """
    from omegaconf import OmegaConf

    from research import experiment, rerun
    from research.engine import distributed
    from research.engine.loop import total_steps

    distributed.initialize(cfg.get("distributed"))  # before anything touches a device
    built = experiment.prepare(cfg)
    if not built.trainer.resume:
        return None
    abstract = rerun.abstract_state(built.task, built.dataset, experiment.replicas_of(cfg))
    config = OmegaConf.to_container(cfg, resolve=False)
    config.pop("hydra", None)
    try:
        changes = rerun.check(
            run_dir, config, abstract, total_steps(built.trainer, built.dataset, built.folds)
        )
    except rerun.Finished as done:
        print(f"{done}; to train again: trainer.resume=false hydra.run.dir=<new dir>")
        print_summary(done.summary)
        return done.summary
    if changes:
        print(f"continuing {run_dir} with changed settings: {'; '.join(changes)}", flush=True)
    return None


def preflight(argv: list[str] | None = None) -> None:
    """Validate the command line before Hydra runs anything; exit 2 with one line if it is bad."""
    argv = sys.argv[1:] if argv is None else argv
    overrides, multirun, skip, config_dirs = _split_args(argv)
    if skip:
        return
    overrides = _with_search_path(overrides, config_dirs)
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from research.config import check, register_resolvers
    from research.engine.checkpoint import writable_or_raise

    register_resolvers()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            for variant in itertools.islice(_variants(overrides, multirun), 64):
                cfg = compose("train", overrides=variant, return_hydra_config=True)
                check(cfg)
        if not multirun and (run_dir := _run_dir(cfg)) is not None:
            writable_or_raise(run_dir)
        if multirun:
            from research.launch.slurm import check_launcher
            from research.sweep.space import check_sweeper

            check_launcher(cfg.hydra.launcher)  # e.g. a partition Slurm does not have
            check_sweeper(cfg.hydra.sweeper)  # an Optuna search: its direction, counts and space
    except UserError as e:
        fail(str(e))
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        fail(_explain(e))
    if not multirun and run_dir is not None:
        with report_errors():
            if check_rerun(cfg, run_dir) is not None:
                sys.exit(0)


def print_summary(summary: dict) -> None:
    """The headline numbers on stdout (the full summary is in summary.json)."""
    keys = [
        k
        for k in summary
        if k.startswith(("test/", "eval/", "val/", "cv/"))
        and not k.endswith(("_per_seed", "_per_fold", "confusion_matrix"))
    ]
    keys += [
        "train/return",
        "steps",
        "best_step",
        "trace_s",
        "compile_s",
        "wall_s",
        "train/steps_per_s",
        "env_steps_per_s",
    ]
    shown = {k: summary[k] for k in keys if k in summary}
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in shown.items()}, indent=1))
