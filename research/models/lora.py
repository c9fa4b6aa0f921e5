"""LoRA adapters on any built model: ``optimizer.lora: {rank, alpha, kernels, train}``.

After the model is built, every layer with a ``kernel`` (``nnx.Linear``, ``LinearGeneral``,
``Conv``) whose path matches a ``kernels`` regex (searched in ``dense/0/kernel``) reads
``W + (alpha / rank) * A @ B`` in place of ``W``: ``A`` (fan-in, rank) starts He-uniform, ``B``
(rank, fan-out) at zero, so the adapted model starts as the base one (Hu et al., 2021). The
layer keeps its own parameter paths and gains ``lora_a`` and ``lora_b`` beside its kernel, so a
pretrained run's weights load into it by path (``trainer.init_from``: the adapters, absent from
the source, start fresh), and blocks stacked by ``model.scan_layers`` get stacked adapters.

Training them alone is the optimizer's side (research/optim.py): every parameter that is not an
adapter, nor matched by ``train`` (a new head), is frozen with its batch-norm statistics, and
``optax.partition`` keeps no optimizer state for it. ``merge`` folds the adapters into the
kernels for export: a plain model with the adapted model's outputs.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from research.errors import ConfigError

KEYS = ("rank", "alpha", "kernels", "train")
ADAPTERS = ("lora_a", "lora_b")
_ADAPTER = re.compile(r"(?:^|/)lora_[ab]$")


def is_adapter(path: str) -> bool:
    """Whether the parameter path (``dense/0/lora_a``, ``params/...``) is an adapter's."""
    return _ADAPTER.search(path) is not None


def check(settings: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``optimizer.lora`` checked and completed (None: no adapters); one line per mistake."""
    if settings is None:
        return None
    if not isinstance(settings, Mapping):
        raise ConfigError("optimizer.lora must be {rank, alpha, kernels: [regex], train: [regex]} or null")
    unknown = set(settings) - set(KEYS)
    if unknown:
        raise ConfigError(f"optimizer.lora has unknown keys {sorted(unknown)}; allowed: {list(KEYS)}")
    rank, alpha = settings.get("rank"), settings.get("alpha")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ConfigError(f"optimizer.lora.rank={rank!r} must be an integer >= 1")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha > 0:
        raise ConfigError(
            f"optimizer.lora.alpha={alpha!r} must be a number > 0 (the update is alpha/rank * A @ B)"
        )
    out = {"rank": rank, "alpha": float(alpha)}
    for key in ("kernels", "train"):
        patterns = settings.get(key) or []
        if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
            raise ConfigError(f"optimizer.lora.{key} must be a list of regexes over parameter paths")
        try:
            out[key] = [re.compile(p).pattern for p in patterns]
        except re.error as e:
            raise ConfigError(f"optimizer.lora.{key}={list(patterns)} holds an invalid regex: {e}") from None
    if not out["kernels"]:
        raise ConfigError("optimizer.lora.kernels is empty: name the layers to adapt, e.g. [dense, head]")
    return out


def frozen_patterns(settings: Mapping[str, Any] | None) -> list[str]:
    """The freeze regex that LoRA adds: every path that is neither an adapter nor ``train``-matched."""
    settings = check(settings)
    if settings is None:
        return []
    kept = "".join(f"(?!.*?(?:{p}))" for p in settings["train"])
    # RNG streams (dropout/rngs/count) are not the base: frozen, every step would draw the same mask
    return [f"^(?!(?:.*/)?lora_[ab]$)(?!(?:.*/)?rngs/){kept}"]


def adapting(
    model_fn: Callable[..., nnx.Module], settings: Mapping[str, Any] | None
) -> Callable[..., nnx.Module]:
    """``model_fn`` whose models come out with adapters (``model_fn`` itself without settings)."""
    settings = check(settings)
    if settings is None:
        return model_fn

    @functools.wraps(model_fn)  # keeps the signature: tasks pass only the arguments a model takes
    def build(*args: Any, rngs: nnx.Rngs, **kwargs: Any) -> nnx.Module:
        return adapt(model_fn(*args, rngs=rngs, **kwargs), settings, rngs)

    return build


def adapt(model: nnx.Module, settings: Mapping[str, Any], rngs: nnx.Rngs) -> nnx.Module:
    """``model`` (in place) with an adapter on each kernel whose path a ``kernels`` regex matches."""
    settings = check(settings)
    regexes = [re.compile(p) for p in settings["kernels"]]
    kernels = []
    for path, module in nnx.iter_modules(model):
        kernel = getattr(module, "kernel", None)
        if isinstance(kernel, nnx.Param) and not is_adapted(module):
            kernels.append(("/".join(map(str, (*path, "kernel"))), module))
    chosen = [(name, m) for name, m in kernels if any(r.search(name) for r in regexes)]
    if not chosen:
        shown = ", ".join(name for name, _ in kernels[:6]) or "none"
        raise ConfigError(
            f"optimizer.lora.kernels={settings['kernels']} matches no kernel; the kernels are: {shown}"
        )
    scale = settings["alpha"] / settings["rank"]
    for _, module in chosen:
        _add_adapter(module, settings["rank"], scale, rngs)
    return model


def _axes(module: nnx.Module) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(stacked, fan-in, fan-out) axis sizes of the layer's kernel: the leading axes that
    ``scan_layers`` adds, those it contracts with the input, and those of its output."""
    shape = tuple(module.kernel.shape)
    out = module.out_features
    out_dims = tuple(out) if isinstance(out, tuple | list) else (int(out),)
    in_ndim = len(shape) - len(out_dims)
    if hasattr(module, "kernel_size"):  # a convolution: window and input channels are the fan-in
        in_ndim = len(tuple(module.kernel_size)) + 1
    elif isinstance(module.in_features, tuple | list):
        in_ndim = len(module.in_features)
    else:
        in_ndim = 1
    lead = len(shape) - in_ndim - len(out_dims)
    return shape[:lead], shape[lead : lead + in_ndim], shape[lead + in_ndim :]


def _add_adapter(module: nnx.Module, rank: int, scale: float, rngs: nnx.Rngs) -> None:
    lead, fan_in, fan_out = _axes(module)
    dtype = module.kernel.dtype
    init = jax.nn.initializers.he_uniform(in_axis=-2, out_axis=-1, batch_axis=tuple(range(len(lead))))
    module.lora_a = nnx.LoRAParam(init(rngs.params(), (*lead, math.prod(fan_in), rank), dtype))
    module.lora_b = nnx.LoRAParam(jnp.zeros((*lead, rank, math.prod(fan_out)), dtype))
    module.lora_scale = scale
    module.__class__ = _adapted(type(module))


def _adapted_call(self: nnx.Module, *args: Any, **kwargs: Any) -> Any:
    """The layer's own call, reading ``kernel + lora_scale * lora_a @ lora_b`` as its kernel."""
    kernel = self.kernel
    base = kernel[...]
    kernel.value = merged_kernel(base, self.lora_a[...], self.lora_b[...], self.lora_scale)
    try:
        return _BASES[type(self)].__call__(self, *args, **kwargs)
    finally:  # the parameter itself stays the base weight
        kernel.value = base


_BASES: dict[type, type] = {}  # adapted layer class -> the layer class it extends


def is_adapted(module: Any) -> bool:
    """Whether ``module`` is a layer that ``adapt`` gave an adapter."""
    return type(module) in _BASES


@functools.cache
def _adapted(cls: type) -> type:
    """One adapted subclass per layer class, so graph definitions of two builds compare equal.
    Nothing but ``__call__`` is added: a built layer's ``__class__`` can be switched to it."""
    adapted = type(f"LoRA{cls.__name__}", (cls,), {"__call__": _adapted_call, "__module__": __name__})
    _BASES[adapted] = cls
    return adapted


def merged_kernel(kernel: jax.Array, a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
    """``kernel + scale * a @ b`` in the kernel's shape and dtype (leading stacked axes kept)."""
    delta = (a @ b).reshape(kernel.shape)
    return (kernel + scale * delta).astype(kernel.dtype)


def merge(model: nnx.Module) -> nnx.Module:
    """``model`` (in place) with each adapter folded into its kernel and removed: plain layers."""
    for _, module in list(nnx.iter_modules(model)):
        if is_adapted(module):
            module.kernel.value = merged_kernel(
                module.kernel[...], module.lora_a[...], module.lora_b[...], module.lora_scale
            )
            del module.lora_a, module.lora_b, module.lora_scale
            module.__class__ = _BASES[type(module)]
    return model
