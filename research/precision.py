"""Mixed precision: float32 parameters, bfloat16 or float16 compute, float32 outputs.

A policy is chosen in config (``precision=float32|bfloat16|float16``). Parameters
and optimizer state always stay float32 (the master weights). The build step
applies the policy to every model it builds, through Flax's own mechanism: each
layer's ``dtype`` (its compute dtype) is set, so matmuls and convolutions run in
the compute dtype while parameters are cast on use and batch-norm statistics stay
float32. No model code changes.

float16's narrow exponent range needs loss scaling: tasks that accept a
``precision`` argument get the policy and use ``value_and_grad`` (Flax's
``DynamicScale``: scale the loss up, unscale the gradients, skip the update and
halve the scale when they overflow) and ``cast_output`` (logits to float32 before
the loss). bfloat16 has float32's range and needs neither. The default is float32
everywhere, so a CPU run and a GPU run agree up to reduction order.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from research.errors import ConfigError

COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Policy:
    """``compute``: the layers' dtype; ``output``: ``cast_output``'s dtype; ``loss_scale``: for float16."""

    compute: str = "float32"
    output: str = "float32"
    loss_scale: dict | None = None  # initial, growth_interval, growth_factor, backoff_factor

    def __post_init__(self) -> None:
        for key in ("compute", "output"):
            if getattr(self, key) not in COMPUTE_DTYPES:
                raise ConfigError(
                    f"precision.{key}={getattr(self, key)!r} is not one of {', '.join(COMPUTE_DTYPES)}"
                )
        if self.compute == "float16" and not self.loss_scale:
            raise ConfigError("precision.compute=float16 needs precision.loss_scale (use precision=float16)")

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.compute)

    def apply(self, model: nnx.Module) -> nnx.Module:
        """Set the compute dtype of every layer of ``model`` (in place); parameters keep theirs."""
        if self.compute != "float32":
            for _, module in nnx.iter_modules(model):
                if hasattr(module, "dtype"):
                    module.dtype = self.compute_dtype
        return model

    def model_factory(self, model_fn: Callable[..., nnx.Module]) -> Callable[..., nnx.Module]:
        """``model_fn`` whose models come out with this policy applied."""

        @functools.wraps(model_fn)  # keeps the signature: tasks pass only the arguments a model takes
        def build(*args: Any, **kwargs: Any) -> nnx.Module:
            return self.apply(model_fn(*args, **kwargs))

        return build

    def cast_output(self, tree: Any) -> Any:
        """Floating leaves of ``tree`` (e.g. logits) in the output dtype, before a loss."""
        dtype = jnp.dtype(self.output)
        return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

    def dynamic_scale(self) -> Any:
        """Fresh loss-scaling state to keep in the train state (None without loss scaling)."""
        if not self.loss_scale:
            return None
        from flax.training.dynamic_scale import DynamicScale

        cfg = self.loss_scale
        return DynamicScale(
            growth_factor=float(cfg["growth_factor"]),
            backoff_factor=float(cfg["backoff_factor"]),
            growth_interval=int(cfg["growth_interval"]),
            fin_steps=jnp.zeros((), jnp.int32),
            scale=jnp.asarray(cfg["initial"], jnp.float32),
        )


def value_and_grad(fn: Callable, params: Any, dynamic_scale: Any, *, has_aux: bool = False) -> tuple:
    """``((value, grads), dynamic_scale, finite)``: ``jax.value_and_grad(fn)(params)`` with loss scaling.

    Without a dynamic scale (float32, bfloat16) it is the plain gradient and
    ``finite`` is None; with one, ``finite`` says whether to apply this update
    (see ``keep_if_finite``) and the returned scale is the next step's.
    """
    if dynamic_scale is None:
        return jax.value_and_grad(fn, has_aux=has_aux)(params), None, None
    dynamic_scale, finite, value, grads = dynamic_scale.value_and_grad(fn, has_aux=has_aux)(params)
    return (value, grads), dynamic_scale, finite


def keep_if_finite(finite: jax.Array | None, new: Any, old: Any) -> Any:
    """``new`` where the gradients were finite, else ``old`` (a skipped float16 step)."""
    if finite is None:
        return new
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)


def check_task_supports(make_task: Callable, policy: Policy) -> bool:
    """Whether the task takes ``precision``; loss scaling cannot work without it."""
    accepts = "precision" in inspect.signature(make_task).parameters
    if policy.loss_scale and not accepts:
        raise ConfigError(
            f"{getattr(make_task, 'func', make_task).__name__} does not apply loss scaling, which "
            f"precision.compute={policy.compute} needs: use precision=bfloat16 or float32"
        )
    return accepts
