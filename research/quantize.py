"""Quantize a finished classifier's weights to int8 and measure it again:
``python -m research.quantize run=<run dir> [checkpoint=best|latest|<step>] [out=<run dir>/quantized]
[overrides]``.

Every kernel becomes int8 with one float32 scale per output channel (research/quantization.py);
the run's test split is evaluated with the float32 weights and with the int8 ones read back, and
the weights file is sized both ways (``params.npz`` as ``research.export`` writes it). Writes
``<out>/params.npz`` (int8 kernels, ``<name>.scale`` beside each) and ``<out>/quantize.json``;
``research.export quantize=int8`` serves the same weights. The run directory is otherwise untouched.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from research import console
from research.errors import ConfigError

USAGE = (
    "usage: python -m research.quantize run=<run dir> [checkpoint=best|latest|<step>] [out=<dir>] [overrides]"
)
SPLIT = "test"


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """The quantize options and the config overrides, from key=value args."""
    return console.key_values(argv, {"checkpoint": "best"}, ("out",), USAGE, overrides=True)


def check_classifier(cfg: Any, built: Any) -> None:
    """One line when the run's task is not a classifier (its test accuracy is what is compared)."""
    from research.engine.api import Classifier

    if not isinstance(built.task, Classifier):
        name = type(built.task).__name__
        raise ConfigError(f"research.quantize measures a classifier's test accuracy; {name} is none")


def read_back(state: dict, replicas: Any) -> dict:
    """``state`` with every kernel quantized to int8 and read back, each replica with its own scales."""
    import jax

    from research.quantization import round_trip

    if not replicas.vmapped:
        return {**state, "params": round_trip(state["params"])}
    each = [round_trip(jax.tree.map(lambda a, i=i: a[i], state["params"])) for i in range(replicas.count)]
    return {**state, "params": jax.tree.map(lambda *a: np.stack(a), *each)}


def quantize(run_dir: Path, options: dict[str, str], overrides: list[str]) -> tuple[Path, dict]:
    """Measure ``run_dir``'s chosen checkpoint with float32 and int8 weights; write the int8 weights
    and the comparison. Returns (the output folder, what quantize.json holds)."""
    import jax

    from research import quantization
    from research.experiment import open_saved

    opened = open_saved(run_dir, overrides, options["checkpoint"], check=check_classifier)
    task, saved = opened.built.task, opened.saved
    evaluators = task.evaluators()
    measured = {}
    for name, state in (("float32", opened.state), ("int8", read_back(opened.state, saved.replicas))):
        outcome = saved.evaluate(state, opened.step, evaluators, SPLIT)
        measured[name] = {k: v for k, v in outcome.scalars.items() if not isinstance(v, list)}
    one = saved.replica(opened.state, 0)
    flat = quantization.flat_arrays({k: one[k] for k in task.reusable if k in one})
    int8 = quantization.quantize_flat(flat)
    measured["float32"]["bytes"] = quantization.npz_bytes(flat)
    measured["int8"]["bytes"] = quantization.npz_bytes(int8)
    metric = f"{SPLIT}/{task.metric.split('/', 1)[-1]}"
    report = {
        "checkpoint_step": opened.step,
        "metric": metric,
        **measured,
        "change": measured["int8"][metric] - measured["float32"][metric],
        "size_ratio": measured["float32"]["bytes"] / measured["int8"]["bytes"],
    }
    out = Path(options.get("out") or run_dir / "quantized")
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "params.npz", **int8)
    (out / "quantize.json").write_text(json.dumps(jax.tree.map(_plain, report), indent=2) + "\n")
    return out, report


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    with console.report_errors():  # bad input, also inside a config's _target_, is one line
        options, overrides = parse(argv)
        out, report = quantize(Path(options["run"]).expanduser(), options, overrides)
    metric = report["metric"]
    for name in ("float32", "int8"):
        found = report[name]
        print(f"{name:>8}: {metric} {found[metric]:.4f}, weights {found['bytes']:,} bytes")
    print(f"int8 - float32: {100 * report['change']:+.2f} points; {report['size_ratio']:.2f}x smaller")
    print(f"wrote {out} (params.npz, quantize.json)")


if __name__ == "__main__":
    main()
