"""The build step: the one place where config meets code.

``build`` turns a composed config into plain objects (dataset, task, evaluators,
trainer settings); ``run`` hands them to the engine. Nothing below this module sees
Hydra. The CLI's preflight builds the run before Hydra creates its directory, so a
mistake found while building (a warmup longer than the run, an early-stopping metric
the task does not produce) leaves no trace; ``run`` then reuses what preflight built.

The task's constructor receives ``model`` (a partial of ``cfg.model``), ``make_optimizer``
(``cfg.optimizer`` bound, called with the number of updates), ``total_steps`` and
``dataset``, plus ``env`` and ``precision`` where it takes them. A task with several
models or optimizers names them in its own config: ``task.models.<name>`` (each a
``_target_``) and ``task.optimizers.<name>`` (each an optimizer group) arrive as dicts.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from research import config as config_checks
from research import precision
from research.engine import cross_validation, federated, init_from
from research.engine.api import Classifier
from research.engine.evaluation import check_metric
from research.engine.replicas import Replicas
from research.engine.saved import SavedRun
from research.engine.settings import TrainerConfig, total_steps
from research.errors import ConfigError, UserError
from research.models import lora
from research.optim import OptimizerFactory
from research.tasks.base import require_fields


@dataclasses.dataclass
class Built:
    task: Any
    dataset: Any
    trainer: TrainerConfig
    evaluators: dict[str, Any]
    steps: int  # train steps of the whole run: computed here once
    folds: cross_validation.FoldPlan | None = None  # trainer.cv_folds: which examples each fold uses
    rounds: federated.Rounds | None = None  # trainer.federated: the loop's hooks for its rounds


_PREPARED: dict[str, Built] = {}
REFIT_DIR = "refit"  # under the run directory: the run on the whole train split after the folds


def _key(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml({k: v for k, v in cfg.items() if k != "hydra"}, resolve=False)


def build(cfg: DictConfig) -> Built:
    """Task, dataset (or None), evaluators and trainer settings for a composed config."""
    key = _key(cfg)
    if key in _PREPARED:
        return _PREPARED.pop(key)
    config_checks.check(cfg)
    logging.getLogger("absl").setLevel(logging.WARNING)  # TFDS and Orbax narrate every file at INFO
    data_cfg = cfg.get("data") or {}
    dataset = instantiate(data_cfg, _convert_="all") if "_target_" in data_cfg else None
    trainer = config_checks.trainer_settings(cfg)
    folds = cross_validation.plan(trainer, dataset, cfg.seed)
    steps = run_steps(trainer, dataset, folds)
    partition = federated.plan(trainer, dataset, cfg.seed)
    if partition is not None:  # a step is a round; the task's own optimizer counts local steps
        steps = trainer.max_steps or trainer.federated.rounds
        local = steps * federated.local_steps(trainer.federated, partition, dataset.batch_size)
        task = federated.FederatedTask(
            _make_task(cfg, dataset, local, trainer.federated), partition, trainer.federated, dataset
        )
    else:
        task = _make_task(cfg, dataset, steps)
    if dataset is not None:
        require_fields(task.fields, _task_name(cfg), dataset)
    evaluators = _extra_evaluators(cfg, task, dataset)
    check_metric(trainer.early_stopping.metric or task.metric, {**task.evaluators(), **evaluators})
    rounds = federated.Rounds(task) if partition is not None else None
    return Built(task, dataset, trainer, evaluators, steps, folds, rounds)


def _task_name(cfg: DictConfig) -> str:
    """What the user chose: ``task=<option>`` as composed (preflight), else the task's ``_target_``."""
    return OmegaConf.select(cfg, "hydra.runtime.choices.task", default=None) or cfg.task._target_


def run_steps(trainer: TrainerConfig, dataset: Any, folds: Any = None) -> int:
    """Train steps of the whole run: max_steps, or epochs over the train split (or a fold's part)."""
    num_train = None if dataset is None else dataset.splits["train"].num_examples
    num_train = folds.num_train if folds else num_train
    return total_steps(trainer, num_train, None if dataset is None else dataset.batch_size)


def prepare(cfg: DictConfig) -> Built:
    """Build now (in preflight) and keep the result for the ``run`` of the same config."""
    built = build(cfg)
    check_init_from(cfg, built)
    _PREPARED[_key(cfg)] = built
    return built


def keep(cfg: DictConfig, built: Built) -> None:
    """The next ``build`` of ``cfg`` returns ``built`` (a notebook's cached build: its data read once)."""
    _PREPARED[_key(cfg)] = built


def check_init_from(cfg: DictConfig, built: Built) -> None:
    """``trainer.init_from`` names a checkpoint, and not one trained on other classes of as many (the
    head's shape would fit, so it would load and score the source run's classes under this run's
    names, and nothing would say so). One line, before anything is created (training only: a saved
    run is read as it was trained).
    """
    settings, dataset = built.trainer.init_from, built.dataset
    if not settings.path:
        return
    init_from.checkpoint_state_dir(settings.path)  # a path with no checkpoint: one line, before Hydra
    if dataset is None or not isinstance(built.task, Classifier):
        return
    if not any(init_from.selects(settings, name) for name in init_from.HEAD):
        return
    source = _saved_config(settings.path)
    before = None if source is None else _class_names(source, cfg, dataset)
    now = list(dataset.class_names)
    if before is None or len(before) != len(now) or before == now:
        return  # another count: the head's shape differs and it starts fresh anyway
    exclude = ",".join([*settings.exclude, "head"])
    raise ConfigError(
        f"trainer.init_from.path={settings.path} trained its head on the classes {', '.join(before)}; "
        f"this run's are {', '.join(now)}: loaded, it would score the old classes under the new names. "
        f"Start it fresh: trainer.init_from.exclude=[{exclude}]"
    )


def _saved_config(path: str) -> DictConfig | None:
    """The saved config of the run that ``path`` is, or holds the checkpoint of (checkpoints/<step>)."""
    path = Path(path).expanduser()
    for folder in (path, *path.parents[:2]):
        if (folder / ".hydra" / "config.yaml").is_file():
            return config_checks.load_run_config(config_checks.saved_run_dir(folder))
    return None  # no run there: the load says so when the run starts


def _class_names(source: DictConfig, cfg: DictConfig, dataset: Any) -> list[str] | None:
    """The class names the source run trained on: this run's when it read the same classes of the
    same data, else its data opened again; None where that data cannot be opened here.
    """
    keys = ("_target_", "name", "classes")
    if all(OmegaConf.select(source, f"data.{k}") == OmegaConf.select(cfg, f"data.{k}") for k in keys):
        return list(dataset.class_names)
    if OmegaConf.select(source, "data._target_") is None:
        return None
    try:
        return list(instantiate(source.data, _convert_="all").class_names)
    except (UserError, InstantiationException) as e:
        if not isinstance(e.__cause__ if isinstance(e, InstantiationException) else e, UserError):
            raise  # a bug, not data missing here
        return None


def _make_task(cfg: DictConfig, dataset: Any, steps: int, fed: Any = None) -> Any:
    """``fed``: trainer.federated's settings, when the task trains the clients (FedProx's term)."""
    task_cfg = OmegaConf.to_container(cfg.task, resolve=True)
    models = task_cfg.pop("models", None)
    optimizers = task_cfg.pop("optimizers", None)
    # Objects are passed to partials, not to instantiate(): its kwargs must be config values.
    make_task = instantiate(task_cfg, _partial_=True, _convert_="all")
    policy = precision.Policy(**(OmegaConf.to_container(cfg.precision) if cfg.get("precision") else {}))
    replicas = replicas_of(cfg)
    kwargs: dict[str, Any] = {"total_steps": steps, "dataset": dataset}
    # research/watch.py; a run saved before trainer.health existed has none in its checkpoints
    health = bool(cfg.trainer.get("health", False))
    blame = health and bool(cfg.trainer.get("blame_nonfinite", False))
    adapters = (cfg.get("optimizer") or {}).get("lora")
    if adapters is not None and not cfg.get("model"):
        raise ConfigError("optimizer.lora adapts a model and this task has none: set optimizer.lora=null")
    if cfg.get("model"):
        model = instantiate(cfg.model, _partial_=True, _convert_="all")
        kwargs["model"] = policy.model_factory(lora.adapting(model, _plain(adapters) if adapters else None))
    if cfg.get("optimizer"):
        kwargs["make_optimizer"] = replicas.optimizer(OptimizerFactory(_plain(cfg.optimizer), health, blame))
        if fed is not None:
            kwargs["make_optimizer"] = federated.client_optimizer(kwargs["make_optimizer"], fed)
    if models is not None:
        kwargs["models"] = {n: instantiate(m, _partial_=True, _convert_="all") for n, m in models.items()}
    if optimizers is not None:
        kwargs["optimizers"] = {
            n: replicas.optimizer(OptimizerFactory(o, health, blame)) for n, o in optimizers.items()
        }
    if cfg.get("env"):
        from research.envs import make as make_env

        kwargs["env"] = make_env(cfg.env)
    if precision.check_task_supports(make_task, policy):
        kwargs["precision"] = policy
    accepted = inspect.signature(make_task.func).parameters
    if "open_run" in accepted:  # reads another run (a distillation teacher), as the Frechet evaluator does
        kwargs["open_run"] = open_saved
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    return make_task(**{k: v for k, v in kwargs.items() if takes_all or k in accepted})


def _plain(node: Any) -> dict:
    return OmegaConf.to_container(node, resolve=True)


def _extra_evaluators(cfg: DictConfig, task: Any, dataset: Any) -> dict[str, Any]:
    """``evaluators.<name>: {_target_: ..., <its settings>}``, each built for this task and data."""
    out = {}
    for name, node in (cfg.get("evaluators") or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(f"evaluators.{name} needs a _target_ (see conf/evaluators/)")
        # Built as a partial, then called: Hydra would turn the dataclass arguments into config.
        make = instantiate(node, _partial_=True, _convert_="all")
        wants_runs = "open_run" in inspect.signature(make.func).parameters  # reads another run (frechet)
        out[name] = make(task=task, dataset=dataset, **({"open_run": open_saved} if wants_runs else {}))
    return out


def replicas_of(cfg: DictConfig) -> Replicas:
    """Seeds, learning-rate grid or CV folds trained together in one program (trainer.num_seeds,
    vmap_over, cv_folds without cv_fold).
    """
    trainer = cfg.trainer
    return Replicas(
        num_seeds=int(trainer.num_seeds),
        key=trainer.vmap_over,
        values=tuple(trainer.vmap_values),
        base_value=(cfg.get("optimizer") or {}).get("learning_rate"),
        folds=int(trainer.cv_folds) if trainer.cv_folds and trainer.cv_fold is None else 1,
    )


def run(cfg: DictConfig, run_dir: Path, wandb_group: str | None = None, on_eval: Any = None) -> dict:
    """Train and evaluate one composed config in ``run_dir``; returns the summary.

    With ``trainer.cv_refit`` the cross-validation run is followed by a plain run on the
    whole train split in ``<run_dir>/refit``, whose test metrics join the summary.
    """
    from research.engine import distributed

    distributed.initialize(cfg.get("distributed"))  # before anything touches a device
    if _key(cfg) not in _PREPARED:  # a job of a multirun, or a caller without the CLI's preflight
        prepare(cfg)
    built = build(cfg)
    summary = _fit(cfg, built, Path(run_dir), wandb_group, on_eval)
    if not built.trainer.cv_refit:
        return summary
    refit_cfg = cfg.copy()
    OmegaConf.update(refit_cfg, "trainer.cv_folds", None, merge=False)
    OmegaConf.update(refit_cfg, "trainer.cv_refit", False, merge=False)
    trainer = dataclasses.replace(built.trainer, cv_folds=None, cv_refit=False)
    steps = run_steps(trainer, built.dataset)
    task = _make_task(refit_cfg, built.dataset, steps)
    refit = Built(task, built.dataset, trainer, _extra_evaluators(refit_cfg, task, built.dataset), steps)
    refit_summary = _fit(refit_cfg, refit, Path(run_dir) / REFIT_DIR, wandb_group, None)
    summary = {
        **summary,
        **{k: v for k, v in refit_summary.items() if k.startswith("test/")},
        "refit/steps": refit_summary["steps"],
        "refit/best_step": refit_summary["best_step"],
        "wall_s": summary["wall_s"] + refit_summary["wall_s"],
    }
    import jax

    from research.engine.writers import write_summary

    if jax.process_index() == 0:
        write_summary(Path(run_dir), summary)
    return summary


def _fit(cfg: DictConfig, built: Built, run_dir: Path, wandb_group: str | None, on_eval: Any) -> dict:
    import jax

    from research.engine.loop import fit
    from research.engine.tensorboard import make_tensorboard
    from research.engine.writers import WandbWriter, Writers

    config_dict = OmegaConf.to_container(cfg, resolve=True)
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    tensorboard_cfg = (cfg.get("logger") or {}).get("tensorboard")
    primary = jax.process_index() == 0

    def writers_factory(resume_step: int | None, wandb_id: str | None) -> Writers:
        wandb = None
        if wandb_cfg and primary:
            settings = OmegaConf.to_container(wandb_cfg, resolve=True)
            settings["group"] = settings.get("group") or wandb_group
            wandb = WandbWriter(settings, run_dir, cfg.name, config_dict, cfg.get("tags") or [], wandb_id)
        tensorboard = None
        if tensorboard_cfg and primary:
            settings = OmegaConf.to_container(tensorboard_cfg, resolve=True)
            labels = replicas_of(cfg).labels()  # tensorboard/<label>/ per seed or fold
            tensorboard = make_tensorboard(run_dir, settings, config_dict, labels, resume_step)
        return Writers(run_dir, primary, resume_step, wandb, tensorboard)

    return fit(
        built.task,
        built.dataset,
        built.trainer,
        steps=built.steps,
        seed=cfg.seed,
        mesh_sizes=OmegaConf.to_container(cfg.mesh),
        run_dir=run_dir,
        writers_factory=writers_factory,
        config_dict=config_dict,
        replicas=replicas_of(cfg),
        evaluators=built.evaluators,
        on_eval=on_eval,
        folds=built.folds,
        paradigm=built.rounds,
    )


@dataclasses.dataclass
class Opened:
    """A saved run opened for reading: its config, built objects, layout and one restored state."""

    cfg: DictConfig
    built: Built
    saved: SavedRun
    step: int
    state: Any


def open_saved(
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    checkpoint: str = "best",
    replica: int | None = None,
    check: Callable[[DictConfig, Built], None] | None = None,
) -> Opened:
    """The run in ``run_dir`` rebuilt from its saved config (with ``overrides``) and checkpoint
    ``checkpoint`` (best, latest or a step) restored, read-only; ``replica`` picks one of several.
    ``check(cfg, built)`` refuses a run that cannot serve (no classifier...) before anything is read.

    Every command that reads a run (evaluate, export, sample, generate, the Frechet
    evaluator's classifier, a distillation teacher) opens it here, and nothing in the run
    directory changes.
    """
    run_dir = config_checks.saved_run_dir(run_dir)
    cfg = config_checks.load_run_config(run_dir, overrides)
    built = build(cfg)
    if check is not None:
        check(cfg, built)
    replicas = replicas_of(cfg)
    saved = SavedRun(
        built.task, built.dataset, built.trainer, seed=cfg.seed, mesh_sizes=_plain(cfg.mesh),
        run_dir=run_dir, replicas=replicas,
    )  # fmt: skip
    try:
        step = saved.choose(checkpoint)
        state = saved.restore(step)
    finally:
        saved.close()  # what is restored is all a reader needs of the checkpoints
    if replica is not None:
        state = saved.replica(state, replica)
    return Opened(cfg, built, saved, step, state)


def evaluate_saved(run_dir: str | Path, checkpoint: str, split: str, overrides: Sequence[str] = ()) -> dict:
    """Restore ``checkpoint`` of ``run_dir`` and run its evaluators on ``split`` (research.evaluate, the
    Python API); returns what it writes to ``<run dir>/eval.json``, the images to ``plots/eval/``.
    """
    import json

    import numpy as np

    opened = open_saved(run_dir, overrides, checkpoint)
    dataset = opened.built.dataset
    if dataset is not None and split not in dataset.splits:
        raise ConfigError(f"split={split!r}: the data has splits {sorted(dataset.splits)}")
    evaluators = {**opened.built.task.evaluators(), **opened.built.evaluators}
    outcome = opened.saved.evaluate(opened.state, opened.step, evaluators, split)
    write_images(Path(run_dir), outcome.images)
    arrays = {k: np.asarray(v).tolist() for k, v in outcome.arrays.items()}
    out = {"checkpoint_step": opened.step, "split": split, **outcome.scalars, **arrays}
    (Path(run_dir) / "eval.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def write_images(run_dir: Path, images: dict) -> None:
    """An evaluation's images as ``<run dir>/plots/eval/<split>_<name>.png``."""
    from research.engine.writers import save_png

    for key, image in images.items():
        path = run_dir / "plots" / "eval" / f"{key.replace('/', '_')}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(path, image)
