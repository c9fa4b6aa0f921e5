"""Polyak (exponential moving) averages of the weights, kept in the optimizer state.

``optimizer.ema: {decay, debias}`` chains :func:`average_params` after the optimizer, so every
task that updates its model with its optimizer keeps an average with no code of its own: the
average lives in the optimizer state, is updated inside the compiled step, checkpointed and
resumed with the rest of the state, and split over a mesh by the same rules as the
parameters (their paths end alike: ``opt_state/.../ema/hidden/0/kernel``).

Each update mixes in the weights it *starts from*: after update t the average covers the
weights w_0 .. w_{t-1}. Averaging what the update returned instead would miss the factors
chained after it (a learning-rate grid's per-replica scale, ``engine/replicas.py``); one
update late is immaterial at the decays that averaging is for (0.99 and up), and the
average is exactly reproducible by hand (``tests/test_ema.py``).

``debias`` is the warm-up: the decay of update t is 1 - (1 - decay) / (1 - decay^t), Adam's
bias correction applied to the running value, so the average is the decay-weighted mean of
the weights seen so far rather than being pinned to the initial weights for ~1/(1 - decay)
updates (Kauldron's ``ema_params(debias=True)``).

``every: call`` mixes weights in once per engine call (the last of its K steps, ``trainer.steps_per_call``)
instead of at every step, with the decay of the K steps between (``decay ** K``): the average of
the trajectory sampled at each call's end, over the same horizon, as ema-pytorch's
``update_every``. It costs the average's pass over the weights once per call, not once per step
(0-3% of a ~1 ms step instead of 4-15%, docs/benchmarks.md): the engine traces a call's last step
apart (``call_position``), so the other steps hold no code for it, not even a ``lax.cond``, with
one seed or many. Stepped outside the engine (a task's own loop) it averages every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from research import call_position
from research.errors import ConfigError

KEYS = ("decay", "debias", "every")
EVERY = ("step", "call")
DEFAULTS = {"debias": True, "every": "step"}  # what a config without the key means


class EmaState(NamedTuple):
    count: jax.Array  # updates (steps) so far
    ema: Any  # the average, shaped like the parameters


def average_params(decay: float, debias: bool = True, every: str = "step") -> optax.GradientTransformation:
    """Keep an exponential moving average of the parameters; pass the updates through unchanged."""

    def init(params: Any) -> EmaState:
        return EmaState(jnp.zeros((), jnp.int32), jax.tree.map(jnp.array, params))

    def update(updates: Any, state: EmaState, params: Any = None) -> tuple[Any, EmaState]:
        if params is None:
            raise ValueError("optimizer.ema needs the parameters: call tx.update(grads, state, params)")
        count = state.count + 1
        steps = 1 if every == "step" else call_position.current()
        if steps == 0:  # a scanned step of a call: the call's last step averages
            return updates, EmaState(count, state.ema)
        rate = jnp.asarray(1.0 - decay ** (steps or 1), jnp.float32)  # the decay of the steps between
        if debias:  # the first update copies w_0; later ones weigh like a mean of what came before
            rate = rate / (1.0 - jnp.asarray(decay, jnp.float32) ** count.astype(jnp.float32))
        ema = jax.tree.map(lambda e, p: e + (rate * (p - e)).astype(e.dtype), state.ema, params)
        return updates, EmaState(count, ema)

    return optax.GradientTransformation(init, update)


def from_config(cfg: Any) -> optax.GradientTransformation | None:
    """The averaging ``optimizer.ema`` asks for: null or ``decay`` null is none."""
    if cfg is None:
        return None
    if not isinstance(cfg, Mapping) or set(cfg) - set(KEYS):
        raise ConfigError(f"optimizer.ema must be null or a mapping with keys {list(KEYS)}, got {cfg!r}")
    decay = cfg.get("decay")
    if decay is None:
        return None
    if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0 < decay < 1:
        raise ConfigError(f"optimizer.ema.decay={decay!r} must be in (0, 1), e.g. 0.999 (null: no average)")
    debias = cfg.get("debias", DEFAULTS["debias"])
    if not isinstance(debias, bool):
        raise ConfigError(f"optimizer.ema.debias={debias!r} must be true or false")
    every = cfg.get("every", DEFAULTS["every"])
    if every not in EVERY:
        raise ConfigError(f"optimizer.ema.every={every!r} must be one of {', '.join(EVERY)}")
    return average_params(float(decay), debias, every)


def is_average(node: Any) -> bool:
    return isinstance(node, EmaState)


def find(tree: Any) -> EmaState | None:
    """The first average held in ``tree`` (an optimizer state), or None."""
    found = [n for n in jax.tree.leaves(tree, is_leaf=is_average) if is_average(n)]
    return found[0] if found else None


def exchange(opt_state: Any, params: Any) -> tuple[Any, Any]:
    """(the average, ``opt_state`` holding ``params`` in its place): applied twice, the identity."""
    found = find(opt_state)
    if found is None:
        return params, opt_state
    swapped = jax.tree.map(
        lambda n: n._replace(ema=params) if n is found else n, opt_state, is_leaf=is_average
    )
    return found.ema, swapped
