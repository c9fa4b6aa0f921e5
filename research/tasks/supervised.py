"""What the supervised tasks share: one NNX model split once, and a pure train step around a loss.

The layout is classification's (research/tasks/classification.py): a static graphdef per
mode (train: dropout on; eval: off) kept on the task, the arrays in the state as plain
dicts (``params``, ``model_state``), the precision policy's loss scale, and batch-norm
statistics of frozen parameters kept as they were. A subclass says how to build its
model (``model_kwargs``) and what its loss is (``objective``); the rest is here.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from research import precision as precision_lib
from research.data.base import Dataset
from research.errors import ConfigError
from research.optim import keep_frozen
from research.tasks.base import Batch, Metrics, State, TaskBase


def accepted(model: Callable[..., nnx.Module], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The ``kwargs`` that ``model`` takes: token models differ in whether they need ``max_len``."""
    target = inspect.unwrap(model)  # past the precision policy's wrapper
    if isinstance(target, functools.partial):  # Hydra's partial subclass hides the signature behind __call__
        target = target.func
    if isinstance(target, type):  # an NNX module class: its metaclass __call__ takes *args, **kwargs
        target = target.__init__
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def train_arrays(dataset: Dataset | None, task: str) -> dict[str, Any]:
    """The training split's arrays (a shape check at build time), or a ConfigError naming ``data=``."""
    if dataset is None:
        raise ConfigError(f"task={task} needs a dataset: set data=<name>, not data=none")
    split = dataset.splits.get("train")
    if split is None or not split.num_examples:
        raise ConfigError(f"task={task}: data={dataset.name} has an empty train split")
    return split.arrays() if split.in_memory else {}


class SupervisedTask(TaskBase):
    """Builds ``model(**model_kwargs, rngs=...)``; trains on ``objective(model, batch)``."""

    def __init__(
        self,
        model: Callable[..., nnx.Module],
        make_optimizer: Callable[[int], optax.GradientTransformation],
        total_steps: int,
        dataset: Dataset,
        model_kwargs: dict[str, Any],
        precision: precision_lib.Policy | None = None,
    ):
        self.model_fn = model
        self.model_kwargs = accepted(model, model_kwargs)
        self.dataset = dataset
        self.precision = precision or precision_lib.Policy()
        self.tx = make_optimizer(total_steps)
        self.frozen = tuple(getattr(make_optimizer, "freeze", ()))
        abstract = nnx.eval_shape(lambda: self._build(jax.random.PRNGKey(0)))
        abstract.train()
        self.train_graphdef = nnx.graphdef(abstract)
        abstract.eval()
        self.eval_graphdef = nnx.graphdef(abstract)

    def _build(self, rng: jax.Array) -> nnx.Module:
        params_key, dropout_key = jax.random.split(rng)
        return self.model_fn(**self.model_kwargs, rngs=nnx.Rngs(params=params_key, dropout=dropout_key))

    def objective(self, model: nnx.Module, batch: Batch) -> tuple[jax.Array, Metrics]:
        """(mean loss, scalar train metrics) of ``model`` on a transformed training batch."""
        raise NotImplementedError

    def init(self, rng: jax.Array, batch: Batch) -> State:
        model_key, task_key = jax.random.split(rng)
        _, params, model_state = nnx.split(self._build(model_key), nnx.Param, ...)
        params = nnx.to_pure_dict(params)
        state = {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "model_state": nnx.to_pure_dict(model_state),
            "opt_state": self.tx.init(params),
            "rng": task_key,
        }
        if self.precision.loss_scale:
            state["loss_scale"] = self.precision.dynamic_scale()
        return state

    def eval_model(self, state: State) -> nnx.Module:
        return nnx.merge(self.eval_graphdef, state["params"], state["model_state"])

    def train_step(self, state: State, batch: Batch) -> tuple[State, Metrics]:
        key = jax.random.fold_in(state["rng"], state["step"])
        batch = self.dataset.transform(key, batch, True)

        def loss_fn(params: dict) -> tuple[jax.Array, tuple[Metrics, dict]]:
            model = nnx.merge(self.train_graphdef, params, state["model_state"])
            loss, metrics = self.objective(model, batch)
            _, model_state = nnx.state(model, nnx.Param, ...)
            return loss, (metrics, nnx.to_pure_dict(model_state))

        ((loss, (metrics, model_state)), grads), loss_scale, finite = precision_lib.value_and_grad(
            loss_fn, state["params"], state.get("loss_scale"), has_aux=True
        )
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        learned = {
            "params": optax.apply_updates(state["params"], updates),
            "model_state": keep_frozen(model_state, state["model_state"], self.frozen),
            "opt_state": opt_state,
        }
        kept = {k: state[k] for k in learned}
        new_state = {
            **state,
            **precision_lib.keep_if_finite(finite, learned, kept),
            "step": state["step"] + 1,
        }
        if loss_scale is not None:
            new_state["loss_scale"] = loss_scale
        return new_state, {"loss": loss, **metrics}
