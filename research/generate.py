"""Write a synthetic dataset from a class-conditional generator: ``python -m research.generate
run=<run dir> num_examples=N [checkpoint=best|latest|<step>] [seed=0] [batch_size=500]
[out=<run>/generated]``.

The run is rebuilt from its saved config (as ``research.evaluate`` does), its checkpoint is
restored, and ``num_examples`` images with balanced labels (class ``i % num_classes``) are
drawn from fresh noise and stored as a TFDS dataset on the source data's pixel scale and
dtype (``research.data.generated``). Any classifier recipe then trains on it with
``data=generated data.run=<run dir>`` and is tested on the real test split.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from research import console
from research.errors import ConfigError

USAGE = (
    "usage: python -m research.generate run=<run dir> num_examples=N [checkpoint=best|latest|<step>] "
    "[seed=0] [batch_size=500] [out=<dir>]"
)
DEFAULTS = {"checkpoint": "best", "seed": "0", "batch_size": "500"}


def parse(argv: list[str]) -> dict[str, Any]:
    """The options from key=value args, typed; one ConfigError line for a bad one."""
    options, _ = console.key_values(argv, DEFAULTS, ("num_examples", "out"), USAGE, overrides=False)
    if "num_examples" not in options:
        raise ConfigError(f"num_examples= is required; {USAGE}")
    try:
        typed = {k: int(options[k]) for k in ("num_examples", "seed", "batch_size")}
    except ValueError as e:
        raise ConfigError(f"{e}: num_examples, seed and batch_size are integers") from None
    if typed["num_examples"] < 1 or typed["batch_size"] < 1 or typed["seed"] < 0:
        raise ConfigError("num_examples and batch_size must be >= 1, seed >= 0")
    return {**options, **typed}


def check_conditional(cfg: Any, built: Any) -> None:
    """One line when the run's task is not a class-conditional generator."""
    from research.engine.api import ClassSampler

    if not isinstance(built.task, ClassSampler) or not built.task.classes:
        raise ConfigError(
            f"the run trained task={cfg.task._target_} without class conditioning: research.generate "
            "needs a class-conditional generator (task.conditional=true, e.g. +experiment=digits_cgan)"
        )


def draw(
    task: Any, state: Any, num_examples: int, seed: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(images in [0, 1], labels) of ``num_examples`` balanced samples, ``batch_size`` at a time."""
    import jax
    import jax.numpy as jnp

    labels = np.arange(num_examples, dtype=np.int64) % task.classes
    sample = jax.jit(task.sample_classes)
    key, chunks = jax.random.PRNGKey(seed), []
    for i, start in enumerate(range(0, num_examples, batch_size)):
        batch = jnp.asarray(labels[start : start + batch_size], jnp.int32)
        chunks.append(np.asarray(sample(state, batch, jax.random.fold_in(key, i))))
    return np.concatenate(chunks), labels


def to_pixels(images: np.ndarray, pixel_max: float, dtype: np.dtype) -> np.ndarray:
    """Images in [0, 1] on the source data's scale and dtype (rounded and clipped for integers)."""
    scaled = images * pixel_max
    if np.issubdtype(dtype, np.integer):
        scaled = np.clip(np.rint(scaled), 0, pixel_max)
    return scaled.astype(dtype)


def generate(run_dir: Path, options: dict[str, Any]) -> Path:
    """Sample the chosen checkpoint of ``run_dir`` into a TFDS dataset; returns its folder."""
    from research.data import generated
    from research.experiment import open_saved

    out = Path(options.get("out") or run_dir / generated.NAME).expanduser()
    if out.exists():
        raise ConfigError(f"{out} exists and is not overwritten: choose another out=<dir> or delete it")
    # Several seeds trained together: sample from the first.
    opened = open_saved(run_dir, checkpoint=options["checkpoint"], replica=0, check=check_conditional)
    cfg, built = opened.cfg, opened.built
    images, labels = draw(
        built.task, opened.state, options["num_examples"], options["seed"], options["batch_size"]
    )
    dtype = np.asarray(built.dataset.splits["test"].arrays()["image"][:1]).dtype
    pixels = to_pixels(images, float(cfg.data.pixel_max), dtype)
    meta = {
        "run": str(run_dir),
        "checkpoint_step": opened.step,
        "seed": options["seed"],
        "num_examples": len(labels),
        "source": built.dataset.name,
    }
    return generated.write(out, pixels, labels, built.dataset.class_names, meta)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    with console.report_errors():  # bad input, also inside a config's _target_, is one line
        options = parse(argv)
        folder = generate(Path(options["run"]).expanduser(), options)
    out = f" data.out={options['out']}" if "out" in options else ""
    print(f"wrote {options['num_examples']} examples to {folder}; train on them with "
          f"data=generated data.run={options['run']}{out}")  # fmt: skip


if __name__ == "__main__":
    main()
