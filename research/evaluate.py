"""Evaluate a saved run: ``python -m research.evaluate run=<run dir> [checkpoint=best|latest|<step>]
[split=test] [data=<name>] [+evaluators=<name>|[<a>,<b>]] [<key>=<value> ...]``.

The run is rebuilt from its own saved config (``.hydra/config.yaml``); ``data=``-style
group choices and dotted overrides change it (another dataset, a larger eval batch).
The chosen checkpoint is restored and the run's evaluators (the task's own plus
``evaluators``) run on the split. Results go to ``<run dir>/eval.json`` and the
images to ``<run dir>/plots/eval/``; on a finished run, ``split=test`` with the best
checkpoint reproduces the test metrics of its ``summary.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from research import cli
from research.errors import ConfigError

USAGE = (
    "usage: python -m research.evaluate run=<run dir> [checkpoint=best|latest|<step>] [split=test] "
    "[overrides]"
)


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """The evaluate options (run, checkpoint, split) and the config overrides, from key=value args."""
    options, overrides = {"checkpoint": "best", "split": "test"}, []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"{arg!r} is not key=value; {USAGE}")
        if key in ("run", "checkpoint", "split"):
            options[key] = value
        else:
            overrides.append(arg)
    if "run" not in options:
        raise ConfigError(f"run=<run dir> is required; {USAGE}")
    return options, overrides


def load_config(run_dir: Path, overrides: list[str]) -> Any:
    """The run's saved config with ``group=choice`` and ``a.b=value`` overrides applied."""
    from omegaconf import OmegaConf

    from research.config import compose_train

    path = run_dir / ".hydra" / "config.yaml"
    if not path.exists():
        raise ConfigError(
            f"no run in {run_dir}: looked for {path} (run=<the run directory of a training run>)"
        )
    cfg = OmegaConf.load(path)
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+")
        if key == "evaluators":  # evaluators=a or +evaluators=[a,b]: added to the run's own
            extra = _evaluator_configs(value)
            cfg.evaluators = OmegaConf.merge(cfg.get("evaluators") or {}, extra)
        elif "." not in key:  # a config group choice: take that group's node from the config tree
            composed = compose_train([override])
            if key not in composed:
                raise ConfigError(f"{key}={value}: no such config group")
            cfg[key] = composed[key]
        elif OmegaConf.select(cfg, key, default="__absent__") == "__absent__":
            raise ConfigError(f"unknown config key {key!r} in the run's config (see {path})")
        else:
            OmegaConf.update(cfg, key, _yaml(value))
    return cfg


def _evaluator_configs(value: str) -> Any:
    """The ``evaluators`` node that ``+evaluators=<value>`` composes, or one line naming the choices."""
    from hydra.errors import HydraException

    from research.config import CONF_DIR, compose_train

    try:
        return compose_train([f"+evaluators={value}"]).evaluators
    except HydraException:
        names = sorted(p.stem for p in (CONF_DIR / "evaluators").glob("*.yaml"))
        raise ConfigError(f"evaluators={value}: choose among {names} (conf/evaluators/)") from None


def _yaml(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def choose_step(steps: list[int], best_step: int | None, choice: str) -> int:
    if not steps:
        raise ConfigError(
            "the run has no checkpoint to evaluate (was it trained with checkpoint.enabled=false?)"
        )
    if choice == "latest":
        return steps[-1]
    if choice == "best":
        return best_step if best_step in steps else steps[-1]
    if choice.isdigit() and int(choice) in steps:
        return int(choice)
    raise ConfigError(f"checkpoint={choice!r}: choose best, latest or one of the saved steps {steps}")


def evaluate(run_dir: Path, checkpoint: str, split: str, overrides: list[str]) -> dict:
    """Restore ``checkpoint`` of ``run_dir`` and evaluate it on ``split``; returns what eval.json holds."""
    from omegaconf import OmegaConf

    from research import experiment
    from research.engine.inference import evaluate_saved

    cfg = load_config(run_dir, overrides)
    built = experiment.build(cfg)
    if built.dataset is not None and split not in built.dataset.splits:
        raise ConfigError(f"split={split!r}: the data has splits {sorted(built.dataset.splits)}")
    result, step = evaluate_saved(
        built,
        run_dir,
        seed=cfg.seed,
        mesh_sizes=OmegaConf.to_container(cfg.mesh),
        replicas=experiment.replicas_of(cfg),
        choose=lambda steps, best: choose_step(steps, best, checkpoint),
        split=split,
    )
    return {"checkpoint_step": step, "split": split, **result}


def saved_run(options: dict[str, str]) -> Path:
    """The ``run=`` directory of a command that reuses a saved run (evaluate, export), checked."""
    from research.config import register_resolvers

    run_dir = Path(options["run"]).expanduser()
    if not run_dir.is_dir():
        raise ConfigError(f"no run directory {run_dir} (run=<the run directory of a training run>)")
    register_resolvers()
    return run_dir


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    with cli.report_errors():  # bad input, also inside a config's _target_, is one line
        options, overrides = parse(argv)
        run_dir = saved_run(options)
        out = evaluate(run_dir, options["checkpoint"], options["split"], overrides)
    (run_dir / "eval.json").write_text(json.dumps(out, indent=2) + "\n")
    cli.print_summary({k: v for k, v in out.items() if not isinstance(v, list)})
    print(f"wrote {run_dir / 'eval.json'}")


if __name__ == "__main__":
    main()
