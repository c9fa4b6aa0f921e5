"""PPO speed: the framework's cartpole_ppo against a single-file PureJaxRL-style PPO.

Same configuration (CartPole-v1, 4 envs x 128 steps, 4 epochs x 4 minibatches, 5e5
env steps), same process, alternating rounds so both see the same machine load.

- reference (bench/ppo_reference.py): the whole run is one jitted ``lax.scan``;
  compile = trace + lower + XLA compile of that program; env-steps/s = 5e5 / run time.
- framework: ``python -m research.train +experiment=cartpole_ppo`` run in-process
  through ``research.experiment.run`` (logger off, checkpoints and evaluations on, the
  persistent compilation cache off); compile = the engine's ``trace_s + compile_s``
  (tracing, lowering and XLA compilation of init, the K-step train program and the
  eval program); env-steps/s = the engine's ``env_steps_per_s`` (train dispatches
  only, evaluation and checkpoints excluded).

    python bench/ppo_speed.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import jax  # noqa: E402
import ppo_reference  # noqa: E402

OVERRIDES = [
    "+experiment=cartpole_ppo",
    "logger=none",
    "trainer.compile_cache=null",
    "trainer.progress=false",
    "trainer.plots=false",
]


def reference_round(seed: int) -> dict:
    config = dict(ppo_reference.CONFIG)
    steps = int(config["TOTAL_TIMESTEPS"]) // (config["NUM_ENVS"] * config["NUM_STEPS"])
    steps *= config["NUM_ENVS"] * config["NUM_STEPS"]
    rng = jax.random.PRNGKey(seed)
    start = time.perf_counter()
    compiled = jax.jit(ppo_reference.make_train(config)).lower(rng).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    _, metrics = jax.block_until_ready(compiled(rng))
    run_s = time.perf_counter() - start
    return {
        "compile_s": compile_s,
        "env_steps_per_s": steps / run_s,
        "return": ppo_reference.last_fraction_return(metrics),
    }


def framework_round(seed: int, run_dir: Path) -> dict:
    from research.config import compose_train
    from research.experiment import run

    cfg = compose_train([*OVERRIDES, f"seed={seed}"])
    summary = run(cfg, run_dir)
    return {
        "compile_s": summary["trace_s"] + summary["compile_s"],
        "env_steps_per_s": summary["env_steps_per_s"],
        "return": summary["train/return"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    results: dict[str, list[dict]] = {"reference": [], "framework": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in results:
                out = reference_round(r) if name == "reference" else framework_round(r, Path(tmp) / str(r))
                results[name].append(out)
                print(
                    f"round {r} {name:>9}: compile {out['compile_s']:5.2f} s, "
                    f"{out['env_steps_per_s']:9,.0f} env-steps/s, train return {out['return']:.1f}",
                    flush=True,
                )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    med = {
        name: {k: statistics.median(o[k] for o in outs) for k in ("compile_s", "env_steps_per_s")}
        for name, outs in results.items()
    }
    for name, m in med.items():
        print(f"median {name:>9}: compile {m['compile_s']:5.2f} s, {m['env_steps_per_s']:9,.0f} env-steps/s")
    speed = med["framework"]["env_steps_per_s"] / med["reference"]["env_steps_per_s"]
    compile_ratio = med["framework"]["compile_s"] / med["reference"]["compile_s"]
    print(f"framework / reference: {speed:.2f}x env-steps/s, {compile_ratio:.2f}x compile time")


if __name__ == "__main__":
    main()
