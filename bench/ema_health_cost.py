"""Step time with the weight average (optimizer.ema) and the health signals (trainer.health) on and off.

Each variant is the same recipe trained through the real loop in this process; the figure is
the summary's ``train/steps_per_s`` (compile and evaluation excluded). Variants alternate
within each repeat, so a noisy machine slows them alike; the report gives each variant's
median and its ratio to the plain run (health off, no average).

    python bench/ema_health_cost.py                       # the recipes below, 3 repeats
    python bench/ema_health_cost.py --steps 1500 --repeats 5 --recipes digits_mlp
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import jax
import numpy as np

from research.config import compose_train
from research.experiment import run

COMMON = [
    "logger=none",
    "trainer.progress=false",
    "trainer.plots=false",
    "trainer.checkpoint.enabled=false",
]
# recipe: the override that turns its average on (a GAN averages its generator)
AVERAGE = {
    "digits_mlp": "optimizer.ema.decay=0.999",
    "digits_cnn": "optimizer.ema.decay=0.999",
    "digits_dcgan": "task.optimizers.generator.ema.decay=0.999",
}
VARIANTS = {  # name: overrides (the recipe's own log interval)
    "plain": ["trainer.health=false"],
    "health": ["trainer.health=true"],
    "ema": ["trainer.health=false", "{average}"],
    "health+ema": ["trainer.health=true", "{average}"],
}


def steps_per_s(recipe: str, variant: list[str], steps: int, tmp: Path) -> float:
    overrides = [o.format(average=AVERAGE[recipe]) for o in variant]
    cfg = compose_train(
        [
            f"+experiment={recipe}",
            *COMMON,
            *overrides,
            f"trainer.max_steps={steps}",
            f"trainer.eval_every={steps}",
        ]
    )
    summary = run(cfg, tmp / f"{recipe}-{len(list(tmp.iterdir()))}")
    return float(summary["train/steps_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recipes", nargs="+", default=list(AVERAGE))
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes:
            runs = {name: [] for name in VARIANTS}
            for _ in range(args.repeats):
                for name, variant in VARIANTS.items():
                    runs[name].append(steps_per_s(recipe, variant, args.steps, Path(tmp)))
            medians = {name: float(np.median(v)) for name, v in runs.items()}
            results[recipe] = {
                name: {
                    "steps_per_s": medians[name],
                    "vs_plain": medians[name] / medians["plain"],
                    "runs": runs[name],
                }
                for name in VARIANTS
            }
    print(f"{platform.processor() or platform.machine()}, jax {jax.__version__}, {jax.devices()[0].platform}")
    print(f"{args.steps} steps, median of {args.repeats}")
    print("| recipe | variant | steps/s | vs plain |")
    print("|---|---|---|---|")
    for recipe, variants in results.items():
        for name, r in variants.items():
            print(f"| {recipe} | {name} | {r['steps_per_s']:.1f} | {r['vs_plain']:.3f} |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
