"""Tokens/s of the character-level Shakespeare GPT: the framework's train step against a hand-
written JAX + optax loop of the same model, in one process.

The framework side is the recipe as a user runs it (``research.experiment.run`` on
``+experiment=shakespeare_char_transformer``: evaluation, checkpoints, test pass and plots
included) and, beside it, the loop alone (``fit`` with checkpoints, plots and evaluation off).
Both report ``train/steps_per_s`` (training calls only), times the tokens of a batch. The hand-
written loop is the usual one: the same NNX module split once, ``optax.adamw`` with the recipe's
clipping, weight decay and warmup-cosine schedule, one jitted step per dispatch with donated
state, batches gathered on device from host-made indices over the same training windows. Runs
alternate, median of repeats.

    python bench/lm_tokens_per_s.py [--steps 600] [--repeats 3] [overrides...]
    python bench/lm_tokens_per_s.py --gpt2-small --steps 200 --repeats 1 precision=bfloat16 data.batch_size=16

``--gpt2-small`` resizes the recipe as ``bench/lm_mfu.py`` does (12 blocks, width 768, context
1024); with ``precision=bfloat16`` both sides compute in bfloat16 with float32 parameters and a
float32 loss, as ``research.precision`` does.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from lm_mfu import GPT2_SMALL, size_overrides  # bench/ is on sys.path

from research.config import compose_train
from research.engine.loop import fit
from research.engine.writers import Writers
from research.experiment import build, run

RECIPE = "+experiment=shakespeare_char_transformer"
QUIET = ("logger=none", "trainer.progress=false")


def tokens_per_step(cfg) -> int:
    """Every target position of every window of a batch is trained on (no padding in this corpus)."""
    return int(cfg.data.batch_size) * int(cfg.data.context)


def as_user_runs(steps: int, overrides: list[str]) -> float:
    """Train tokens/s of the recipe with its default settings (evaluation, checkpoints, plots)."""
    cfg = compose_train([RECIPE, *QUIET, f"trainer.max_steps={steps}", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        return float(run(cfg, Path(tmp) / "run")["train/steps_per_s"]) * tokens_per_step(cfg)


def loop_alone(steps: int, overrides: list[str]) -> float:
    """Train tokens/s of ``fit`` with checkpoints, plots and all but one evaluation off."""
    cfg = compose_train(
        [
            RECIPE,
            *QUIET,
            f"trainer.max_steps={steps}",
            f"trainer.eval_every={steps}",
            f"trainer.log_every={steps}",
            "trainer.plots=false",
            "trainer.checkpoint.enabled=false",
            *overrides,
        ]  # fmt: skip
    )
    built = build(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        summary = fit(
            built.task, built.dataset, built.trainer, seed=0, mesh_sizes={"data": 1}, run_dir=Path(tmp),
            writers_factory=lambda **_: Writers(Path(tmp), False, None, None), config_dict={},
        )  # fmt: skip
    return float(summary["train/steps_per_s"]) * tokens_per_step(cfg)


def hand_written(steps: int, overrides: list[str]) -> float:
    """Tokens/s of a hand-written loop over the same model, optimizer and windows."""
    cfg = compose_train([RECIPE, "logger=none", *overrides])
    built = build(cfg)
    windows = built.dataset.splits["train"].arrays()["tokens"]
    o, batch = cfg.optimizer, int(cfg.data.batch_size)
    task = built.task
    model = task.model_fn(**task.model_kwargs, rngs=nnx.Rngs(0))  # the recipe's model, as the task builds it
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # rest: the RNG counters
    total = int(cfg.trainer.max_steps)
    schedule = optax.warmup_cosine_decay_schedule(0.0, float(o.learning_rate), int(0.05 * total), total, 0.0)
    tx = optax.chain(
        optax.clip_by_global_norm(float(o.clip_norm)),
        optax.adamw(schedule, float(o.b1), float(o.b2), float(o.eps), weight_decay=float(o.weight_decay)),
    )
    opt_state = tx.init(params)
    data = jax.device_put(windows)

    def loss_fn(params, tokens):
        logits = nnx.merge(graphdef, params, rest)(tokens[:, :-1]).astype(jnp.float32)  # as cast_output
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

    def step(params, opt_state, idx):
        loss, grads = jax.value_and_grad(loss_fn)(params, data[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    rng = np.random.default_rng(0)
    params, opt_state, loss = step(params, opt_state, rng.integers(0, len(windows), batch))  # compile
    loss.block_until_ready()
    start = time.perf_counter()
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state, rng.integers(0, len(windows), batch))
    loss.block_until_ready()
    return steps * batch * (windows.shape[1] - 1) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpt2-small", action="store_true", help="the GPT-2-small size of lm_mfu.py")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.gpt2_small:
        args.overrides = [*size_overrides(GPT2_SMALL), *args.overrides]
    print(f"# {platform.node()} | {jax.devices()[0].device_kind} | jax {jax.__version__}")
    rows: dict[str, list[float]] = {"as_user_runs": [], "loop_alone": [], "hand_written": []}
    for _ in range(args.repeats):
        rows["as_user_runs"].append(as_user_runs(args.steps, args.overrides))
        rows["loop_alone"].append(loop_alone(args.steps, args.overrides))
        rows["hand_written"].append(hand_written(args.steps, args.overrides))
    med = {k: float(np.median(v)) for k, v in rows.items()}
    result = {
        "tokens_per_s": {k: round(v) for k, v in med.items()},
        "as_user_runs_over_hand_written": round(med["as_user_runs"] / med["hand_written"], 2),
        "loop_alone_over_hand_written": round(med["loop_alone"] / med["hand_written"], 2),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
