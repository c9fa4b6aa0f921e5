"""The framework as a Python object, for notebooks: ``research.Experiment``.

    exp = research.Experiment("digits_cnn", overrides=["trainer.epochs=5"])
    exp.train()                    # the summary, as research.train prints it
    exp.evaluate("test")           # what research.evaluate writes to eval.json
    exp.predict(images)            # logits of raw inputs, the dataset's transform included
    research.Experiment.open(exp.run_dir, overrides=["trainer.epochs=10"]).train()  # continue

It is the command line's road, not a second one: the same composition and checks
(``cli.compose_checked``), the same rerun check and lock, the same ``experiment.run``,
and the run directory the commands read (``.hydra/config.yaml`` and ``overrides.yaml``
as Hydra writes them). Bad input raises the ``ConfigError`` whose line the CLI prints.

A model, dataset or task of your own (a class or function defined in the notebook) is
passed as an object: ``model=MyModel``, ``model=functools.partial(MyModel, width=64)`` or
``model={"_target_": MyModel, "width": 64}``. The run's config records it by name
(``__main__.MyModel``), so the run reopens in any process that defines it.

A notebook re-runs cells: an Experiment keeps its build (the data read once), a finished
run trains no further (its summary comes back), and compiled programs come from the
persistent compilation cache (``trainer.compile_cache``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from research import cli, console, experiment
from research import config as config_checks
from research.errors import ConfigError

GROUPS = ("model", "data", "task")  # the config groups an object of the user's may stand for
KEPT_BUILDS = 4  # the builds a notebook's process keeps, newest last: a cell run again reads no data
_BUILDS: dict[tuple, Any] = {}


class Experiment:
    """One run: composed from a recipe and overrides (or a DictConfig), trained, evaluated, reopened.

    ``recipe``: a recipe name (``conf/experiment/<name>.yaml``), None for the default
    config, or a DictConfig; ``overrides``: as on the command line; ``run_dir``: where the
    run lives (default: ``hydra.run.dir``, ``runs/<name>/<time>``); ``model``/``data``/``task``:
    objects of your own in place of those config groups; ``config_dir``: a folder of your
    own config groups (``--config-dir``).
    """

    def __init__(
        self,
        recipe: str | DictConfig | None = None,
        overrides: Sequence[str] = (),
        *,
        run_dir: str | Path | None = None,
        model: Any = None,
        data: Any = None,
        task: Any = None,
        config_dir: str | Path | None = None,
    ):
        if isinstance(recipe, str | None):
            chosen = [f"+experiment={recipe}"] if recipe else []
            dirs = [str(config_dir)] if config_dir else []
            cfg = cli.compose_checked([*chosen, *overrides], config_dirs=dirs)
        elif isinstance(recipe, DictConfig):
            cfg = config_checks.apply_overrides(recipe.copy(), overrides)
        else:
            raise ConfigError(f"Experiment({recipe!r}): pass a recipe name or a DictConfig")
        where = run_dir or OmegaConf.select(cfg, "hydra.run.dir", default=None)
        self.overrides = list(OmegaConf.select(cfg, "hydra.overrides.task", default=None) or overrides)
        self.cfg = _without_hydra(cfg)
        for group, obj in (("model", model), ("data", data), ("task", task)):
            if obj is not None:
                self.cfg[group] = _object_config(group, obj)
                self.overrides.append(f"{group}._target_={self.cfg[group]._target_}")
        config_checks.check(self.cfg)
        name = self.cfg.get("name") or "run"
        self.run_dir = Path(where or f"runs/{name}/{config_checks.run_id()}").expanduser()
        self._built: experiment.Built | None = None
        self._opened: dict[tuple, experiment.Opened] = {}

    @classmethod
    def open(cls, run_dir: str | Path, overrides: Sequence[str] = ()) -> Experiment:
        """A finished (or interrupted) run, from its saved config; with overrides, ``train()``
        continues it (more epochs) as ``research.train hydra.run.dir=<run_dir>`` would.
        """
        run_dir = config_checks.saved_run_dir(run_dir)
        opened = cls(config_checks.load_run_config(run_dir, overrides), run_dir=run_dir)
        recorded = run_dir / ".hydra" / "overrides.yaml"
        before = list(OmegaConf.load(recorded)) if recorded.is_file() else []
        opened.overrides = [*before, *overrides]  # the command line it was trained with, then these
        return opened

    def __repr__(self) -> str:
        return f"Experiment({self.cfg.get('name')!r}, run_dir={str(self.run_dir)!r})"

    # -- training -------------------------------------------------------------------------------

    def train(self) -> dict:
        """Train (or continue, or find finished) the run in ``run_dir``; returns its summary.

        Interrupting the kernel saves a checkpoint and raises ``Interrupted``; ``train()`` again resumes.
        """
        from research.engine.preemption import ctrl_c_saves
        from research.engine.run_dir import writable_or_raise

        cfg, run_dir = self.cfg, self.run_dir
        writable_or_raise(run_dir)
        cli.check_loggers(cfg)
        experiment.keep(cfg, self.built)
        done = cli.check_rerun(cfg, run_dir)  # a finished run says so; a misfit is one line
        if done is not None:
            return done
        try:
            with cli.start_attempt(run_dir):
                self._write_config()
                with console.recorded(run_dir / "train.log"), ctrl_c_saves():  # a kernel's interrupt saves
                    summary = experiment.run(cfg, run_dir)
                    console.print_summary(summary, cli.headline(self.built.task))
        finally:
            self._opened.clear()  # the checkpoints changed
        return summary

    def _write_config(self) -> None:
        """What Hydra writes for research.train, so every reading command opens the run."""
        hydra_dir = self.run_dir / ".hydra"
        hydra_dir.mkdir(parents=True, exist_ok=True)
        (hydra_dir / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg))
        (hydra_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(self.overrides)))

    @property
    def built(self) -> experiment.Built:
        """Dataset, task, evaluators and trainer settings of this config, built once."""
        if self._built is None:
            key = _build_key(self.cfg)
            if key not in _BUILDS:
                _BUILDS[key] = experiment.build(self.cfg)
                for stale in list(_BUILDS)[:-KEPT_BUILDS]:
                    del _BUILDS[stale]
            self._built = _BUILDS[key]
        return self._built

    # -- reading --------------------------------------------------------------------------------

    @property
    def summary(self) -> dict:
        """The run's summary.json (test metrics, best validation metrics, steps, timings)."""
        path = self.run_dir / "summary.json"
        if not path.exists():
            raise ConfigError(f"{self.run_dir} has no summary.json yet: train() it first")
        return json.loads(path.read_text())

    def history(self) -> list[dict]:
        """The records of metrics.jsonl, one dict per logged step (train/..., val/...)."""
        from research.engine.plots import read_history

        return read_history(self.run_dir / "metrics.jsonl")

    def evaluate(self, split: str = "test", checkpoint: str = "best", overrides: Sequence[str] = ()) -> dict:
        """``python -m research.evaluate run=<run_dir> split=... checkpoint=...``: the metrics (also
        written to eval.json, the images to plots/eval/).
        """
        if not overrides:
            experiment.keep(self.cfg, self.built)  # the saved config is this one: its data is read
        return experiment.evaluate_saved(self.run_dir, str(checkpoint), split, list(overrides))

    def restore(self, checkpoint: str = "best", replica: int | None = None) -> experiment.Opened:
        """The run reopened with checkpoint ``checkpoint`` restored (and one replica of several)."""
        key = (str(checkpoint), replica)
        if key not in self._opened:
            experiment.keep(self.cfg, self.built)
            self._opened[key] = experiment.open_saved(self.run_dir, (), str(checkpoint), replica)
        return self._opened[key]

    @property
    def state(self) -> Any:
        """The best checkpoint's state (a dict of arrays; replicas stacked on a leading axis)."""
        return self.restore().state

    @property
    def params(self) -> Any:
        """The learned variables of the best checkpoint (``params``, or the task's model parts)."""
        state = self.state
        if "params" in state:
            return state["params"]
        return {k: state[k] for k in self.built.task.reusable if k in state}

    def model(self, checkpoint: str = "best", replica: int = 0) -> Any:
        """The eval-mode NNX model of a checkpoint (one replica), for your own code."""
        from research.engine.api import HasEvalModel

        task = self.built.task
        if not isinstance(task, HasEvalModel):
            raise ConfigError(f"{type(task).__name__} has no single eval model: read .state instead")
        return task.eval_model(self.restore(checkpoint, replica).state)

    def predict(self, inputs: Any, checkpoint: str = "best", replica: int = 0) -> Any:
        """Logits of raw inputs (an array of examples, or a batch dict with ``image``) as the data
        holds them: the dataset's transform is applied, as ``research.export``'s function does.
        """
        import jax
        import numpy as np

        from research.engine.api import Classifier

        task = self.built.task
        if not isinstance(task, Classifier):
            name = type(task).__name__
            raise ConfigError(f"predict needs a classifier with logits(state, images); {name} has none")
        images = inputs["image"] if isinstance(inputs, dict) else inputs
        state = self.restore(checkpoint, replica).state
        return np.asarray(_jitted(task.logits)(state, jax.numpy.asarray(images)))

    @property
    def dataset(self) -> Any:
        """The built dataset (``research.data.base.Dataset``): splits, class names, transform."""
        return self.built.dataset

    def batch(self, split: str = "train", transformed: bool = False) -> dict:
        """One batch of ``split`` as numpy arrays: raw, as stored (``transformed``: as the model sees it,
        with training-time augmentation on the train split).
        """
        import jax
        import numpy as np

        dataset = self.dataset
        if dataset is None or split not in dataset.splits:
            have = sorted(dataset.splits) if dataset is not None else "none (data=none)"
            raise ConfigError(f"split={split!r}: the data has splits {have}")
        source = dataset.splits[split]
        size = dataset.batch_size if split == "train" else dataset.eval_batch_size
        if source.in_memory:
            batch = {k: np.asarray(v[:size]) for k, v in source.arrays().items()}
        else:
            batch = dict(next(source.iterator(size, int(self.cfg.seed), 0, 1)))
        if transformed:
            key = jax.random.PRNGKey(int(self.cfg.seed))
            batch = jax.tree.map(np.asarray, dataset.transform(key, batch, split == "train"))
        return batch


def _without_hydra(cfg: DictConfig) -> DictConfig:
    """The config a run is trained with (Hydra's own node is Hydra's, not the run's)."""
    plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    plain.pop("hydra", None)
    return plain


def _build_key(cfg: DictConfig) -> tuple:
    """The config, and the objects its targets name now: a class redefined in a notebook cell keeps
    its name but is another class, and needs another build.
    """
    targets = [OmegaConf.select(cfg, f"{group}._target_", default=None) for group in GROUPS]
    return (OmegaConf.to_yaml(cfg), *(id(config_checks.import_target(t)) if t else None for t in targets))


def _object_config(group: str, obj: Any) -> DictConfig:
    """``{_target_: module.name, **arguments}`` for a class or function of the user's (or a partial
    of one, or a dict with such a ``_target_``): the config records it by an importable name.
    """
    if isinstance(obj, functools.partial):
        if obj.args:
            raise ConfigError(f"{group}=partial({_name(obj.func)}, ...): give its arguments by keyword")
        node = {"_target_": obj.func, **obj.keywords}
    elif isinstance(obj, dict):
        node = dict(obj)
        if "_target_" not in node:
            raise ConfigError(f"{group}={{...}} needs a _target_: the class or function to call")
    elif callable(obj) and not isinstance(obj, str):
        node = {"_target_": obj}
    else:
        raise ConfigError(
            f"{group}={obj!r}: pass a class or function (or a partial of one); "
            f"a config option goes in overrides ({group}=<name>)"
        )
    if callable(node["_target_"]):
        node["_target_"] = _name(node["_target_"])
    try:
        return OmegaConf.create(node)
    except Exception as e:  # noqa: BLE001 - an argument OmegaConf cannot hold
        raise ConfigError(
            f"{group}={node['_target_']}: its arguments must be config values (numbers, strings, "
            f"lists, dicts), not {type(e).__name__}"
        ) from None


def _name(obj: Callable) -> str:
    """``module.qualname`` of ``obj``, checked to import back to it (a class inside a function does not)."""
    name = f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', '?')}"
    try:
        found = config_checks.import_target(name)
    except Exception:  # noqa: BLE001 - any import failure is the same unnamed object to the user
        found = None
    if found is not obj:
        raise ConfigError(
            f"{name} cannot be found by its name: define it at the top level of a module or a notebook "
            "cell (the run's config records it by name)"
        )
    return name


@functools.cache
def _jitted(fn: Callable) -> Callable:
    import jax

    return jax.jit(fn)
