"""Time per train step: the framework's loop against a hand-written pure JAX + optax loop.

Same model (MLP), same optimizer (Adam), same batch size, same on-device data, in one
process, so the ratio holds on a noisy machine. The hand-written loop is the usual
one-step-per-dispatch loop: a jitted step with donated params and optimizer state,
batches gathered on device from host-made indices.

    python bench/loop_vs_pure_jax.py                    # both sizes, CPU or whatever JAX finds
    python bench/loop_vs_pure_jax.py --steps 3000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research.config import compose_train
from research.engine.loop import fit
from research.engine.writers import Writers
from research.experiment import build

SIZES = {  # name: (hidden sizes, batch size)
    "small (64-256-10, batch 32)": ([256], 32),
    "large (64-1024-1024-10, batch 256)": ([1024, 1024], 256),
}


def framework_steps_per_s(hidden: list[int], batch: int, steps: int, tmp: Path) -> tuple[float, object]:
    """Steps/s of the real loop (compile and evaluation excluded), and the dataset it used."""
    overrides = [
        f"model.hidden_sizes={hidden}",
        f"data.batch_size={batch}",
        f"trainer.max_steps={steps}",
        "logger=none",
        "trainer.progress=false",
        "trainer.plots=false",
        "trainer.checkpoint.enabled=false",
        f"trainer.eval_every={steps}",
        f"trainer.log_every={steps}",
    ]
    cfg = compose_train(overrides)
    built = build(cfg)
    dataset = built.dataset
    summary = fit(
        built.task,
        dataset,
        built.trainer,
        seed=0,
        mesh_sizes={"data": 1},
        run_dir=tmp,
        writers_factory=lambda **_: Writers(tmp, False, None, None),
        config_dict={},
    )
    return summary["train/steps_per_s"], dataset


def pure_jax_steps_per_s(
    hidden: list[int], batch: int, steps: int, images: np.ndarray, labels: np.ndarray
) -> float:
    """The hand-written baseline: params as a dict, optax.adam, one jitted step per dispatch."""
    sizes = [int(np.prod(images.shape[1:])), *hidden, 10]
    keys = jax.random.split(jax.random.PRNGKey(0), len(sizes) - 1)
    params = [
        {"w": jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), "b": jnp.zeros(b)}
        for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)
    x_all = jax.device_put(images.reshape(len(images), -1).astype(np.float32) / 16.0)
    y_all = jax.device_put(labels.astype(np.int32))

    def loss_fn(params, x, y):
        for layer in params[:-1]:
            x = jax.nn.relu(x @ layer["w"] + layer["b"])
        logits = x @ params[-1]["w"] + params[-1]["b"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(params, opt_state, idx):
        loss, grads = jax.value_and_grad(loss_fn)(params, x_all[idx], y_all[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    step = jax.jit(step.__wrapped__, donate_argnums=(0, 1))
    rng = np.random.default_rng(0)
    per_epoch = len(images) // batch
    perm = rng.permutation(len(images))
    params, opt_state, loss = step(params, opt_state, perm[:batch])  # compile
    loss.block_until_ready()
    start = time.perf_counter()
    for i in range(steps):
        pos = i % per_epoch
        if pos == 0:
            perm = rng.permutation(len(images))
        params, opt_state, loss = step(params, opt_state, perm[pos * batch : (pos + 1) * batch])
    loss.block_until_ready()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import tempfile

    print(
        f"# {platform.node()} | {jax.devices()[0].device_kind} x{jax.device_count()} | jax {jax.__version__}"
    )
    results = {}
    for name, (hidden, batch) in SIZES.items():
        ours, theirs = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                fw, dataset = framework_steps_per_s(hidden, batch, args.steps, Path(tmp))
            arrays = dataset.splits["train"].arrays()
            ours.append(fw)
            theirs.append(pure_jax_steps_per_s(hidden, batch, args.steps, arrays["image"], arrays["label"]))
        fw, pj = float(np.median(ours)), float(np.median(theirs))
        results[name] = {
            "framework_steps_per_s": round(fw),
            "pure_jax_steps_per_s": round(pj),
            "time_per_step_ratio_framework_over_pure": round(pj / fw, 3),
        }
        print(
            f"{name}: framework {fw:,.0f} steps/s, pure JAX {pj:,.0f} steps/s, "
            f"time/step ratio (framework / pure JAX) {pj / fw:.2f}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
