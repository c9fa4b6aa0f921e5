"""``research.train``'s preflight: every override checked before Hydra creates anything.

``preflight`` composes the config the way Hydra will, before Hydra starts, so a
bad override (unknown experiment, unknown key, wrong type, out-of-range value,
unwritable run directory) fails with one line and exit code 2, and nothing is
created or launched. In a multirun every value of every swept key is checked
before any job is submitted.
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from research.console import print_summary, report_errors
from research.errors import ConfigError, UserError
from research.paths import CONF_DIR

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


def available_experiments() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


def _explain(error: Exception) -> str:
    """Hydra's multi-line composition errors, as one line that says what to change."""
    text = str(error).strip()
    override = re.search(r"Error merging override (\S+?)=(.*)", text)
    if override and (line := _trainer_error(override.group(1), override.group(2))):
        return line
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
    if m := re.search(r"Could not load '([^/']+)/([^']+)'", text):  # a list of options: logger=[a,b]
        group, name = m.group(1), m.group(2)
        names = ", ".join(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))
        return f"no config '{name}' in group '{group}'" + (f": choose from {names}" if names else "")
    if "Could not find" in text and "experiment" in text:
        return text.splitlines()[0]
    return text.splitlines()[0] if text else type(error).__name__


def _trainer_error(key: str, value: str) -> str | None:
    """A ``trainer.*`` override Hydra refused, explained by the trainer's schema in one line."""
    if not key.startswith("trainer."):
        return None
    import yaml

    from research.engine.settings import TrainerConfig

    values: dict = {}
    node = values
    *groups, leaf = key.split(".")[1:]
    for group in groups:
        node = node.setdefault(group, {})
    node[leaf] = yaml.safe_load(value)
    try:
        TrainerConfig.from_dict(values)
    except UserError as e:
        return str(e)
    return None


VALUE_FLAGS = {"--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp", "--experimental-rerun"}


def split_args(argv: list[str]) -> tuple[list[str], bool, bool, list[str]]:
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
    for d in config_dirs:
        if not Path(d).expanduser().is_dir():
            raise UserError(f"--config-dir {d}: no such directory (a folder of your own config groups)")
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
    from research.engine.feed import example_spec
    from research.engine.sharding import make_mesh

    distributed.initialize(cfg.get("distributed"))  # before anything touches a device
    make_mesh(OmegaConf.to_container(cfg.mesh))  # a mesh the devices cannot hold: one line, no directory
    built = experiment.prepare(cfg)
    if not built.trainer.resume:
        return None
    example = example_spec(built.dataset, "train")
    streams = built.dataset is not None and example is None  # its first batch would have to be read
    abstract = None if streams else experiment.replicas_of(cfg).abstract_state(built.task.init, 0, example)
    config = OmegaConf.to_container(cfg, resolve=False)
    config.pop("hydra", None)
    try:
        changes = rerun.check(run_dir, config, abstract, built.steps)
    except rerun.Finished as done:
        print(f"{done}; to train again: trainer.resume=false hydra.run.dir=<new dir>")
        print_summary(done.summary, headline(built.task))
        return done.summary
    if changes:
        print(f"continuing {run_dir} with changed settings: {'; '.join(changes)}", flush=True)
    return None


def config_dirs_first(argv: list[str]) -> list[str]:
    """``argv`` with ``--config-dir DIR`` moved to the front: Hydra's argument parser refuses an
    override written after it, which a user may do. Other flags stay where they are (some take an
    optional value, so moving them could change what they read)."""
    front, rest = [], []
    args = iter(argv)
    for a in args:
        if a in ("--config-dir", "-cd"):
            front += [a, next(args, "")]
        elif a.startswith(("--config-dir=", "-cd=")):
            front.append(a)
        else:
            rest.append(a)
    return front + rest


def preflight(argv: list[str] | None = None) -> None:
    """Validate the command line before Hydra runs anything; exit 2 with one line if it is bad."""
    if argv is None:
        sys.argv[1:] = config_dirs_first(sys.argv[1:])
    argv = sys.argv[1:] if argv is None else argv
    overrides, multirun, skip, config_dirs = split_args(argv)
    if "--help" in argv or "-h" in argv:  # read from the folders: Hydra's help composes every option
        from research.usage import usage

        print(usage(config_dirs))
        sys.exit(0)
    if skip:
        return
    from research.engine.run_dir import writable_or_raise

    run_dir = None
    with report_errors():
        cfg = compose_checked(overrides, multirun, config_dirs)
        if not multirun and (run_dir := _run_dir(cfg)) is not None:
            writable_or_raise(run_dir)
        if cfg.trainer.dry_run:  # memory, FLOPs and compile time, then exit: nothing is created
            from research.dry_run import dry_run

            dry_run(cfg, multirun)
            sys.exit(0)
    if not multirun and run_dir is not None:
        with report_errors():
            if check_rerun(cfg, run_dir) is not None:
                sys.exit(0)
            start_attempt(run_dir)


def compose_checked(overrides: Sequence[str], multirun: bool = False, config_dirs: Sequence[str] = ()) -> Any:
    """The config ``python -m research.train <overrides>`` runs (with Hydra's node), every value checked
    (in a multirun each swept value), or a ConfigError (UserError) with the line the CLI prints.

    The Python API (``research.api``) composes here too, so a bad override is the same line there.
    """
    overrides = _with_search_path(list(overrides), list(config_dirs))
    import yaml
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from research.config import check, register_resolvers

    register_resolvers()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            for variant in itertools.islice(_variants(overrides, multirun), 64):
                cfg = compose("train", overrides=variant, return_hydra_config=True)
                check(cfg)
        check_loggers(cfg)
        if multirun:
            from research.launch.slurm import check_launcher
            from research.sweep.space import check_sweeper

            check_launcher(cfg.hydra.launcher)  # e.g. a partition Slurm does not have
            check_sweeper(cfg.hydra.sweeper)  # an Optuna search: its direction, counts and space
    except UserError:
        raise
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise ConfigError(_explain(e)) from None
    except yaml.YAMLError as e:  # a damaged YAML file of ours or of a --config-dir
        mark = getattr(e, "problem_mark", None)
        where = f"{mark.name}, line {mark.line + 1}" if mark else "a config file"
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"{where} is not valid YAML ({problem}): fix or remove it") from None
    return cfg


ATTEMPT: dict[str, Any] = {}  # the single run's attempt, made in preflight before Hydra writes anything


def start_attempt(run_dir: Path) -> Any:
    """Lock ``run_dir`` for this process (process 0 of a distributed run) and keep its saved config."""
    import jax

    from research.rerun import Attempt

    attempt = Attempt(run_dir)
    if jax.process_index() == 0:
        attempt.start()
    ATTEMPT["current"] = attempt
    return attempt


def check_loggers(cfg: Any) -> None:
    """W&B online without a login or a server, a bad TensorBoard setting or no tensorboardX: one line."""
    from research.engine.tensorboard import check_tensorboard
    from research.engine.writers import check_wandb

    check_wandb(logger_settings(cfg))
    check_tensorboard(logger_settings(cfg, "tensorboard"))


def logger_settings(cfg: Any, logger: str = "wandb") -> dict | None:
    """``logger.<logger>`` as plain settings, None when that logger is off."""
    from omegaconf import OmegaConf

    node = OmegaConf.select(cfg, f"logger.{logger}", default=None)
    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def headline(task: Any) -> tuple[str, ...]:
    """The summary entries a task declares worth showing, with the rates of its counters."""
    return (*task.headline, *(f"{c}_per_s" for c in task.counters))
