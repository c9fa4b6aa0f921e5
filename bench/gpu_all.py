"""Every GPU figure of docs/benchmarks.md in one process tree and one Markdown table (bench/gpu_all.sh).

    python bench/gpu_all.py [--out FILE]     # on the GPU: ~7 min on one H100, budget 8 min
    python bench/gpu_all.py --dry-run        # anywhere (JAX_PLATFORMS=cpu): paths, configs, wheels, data

Each step is one of the bench scripts (or a whole training run) as a subprocess with its own time
limit inside a total budget; a step that fails or runs out of time is a row that says so, and the
others still run. The table gives each step's headline figure, command and wall time; each step's
own output (its tables) follows verbatim.

The dry run starts nothing on a device: it checks every script and recipe exists, composes every
config the steps use (``model.remat=full`` included), checks that every distribution the steps
import is either carried (``carry`` lines of bench/gpu_wheels.txt) or on the device image
(``image`` lines), and, where ``.device/`` was prepared (``bench/gpu_all.sh --prepare``), that
every wheel and data folder the device run reads is in it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS_LIST = ROOT / "bench" / "gpu_wheels.txt"
DEVICE_DIR = Path(os.environ.get("GPU_ALL_DEVICE_DIR", ROOT / ".device"))
BUDGET_S = 480  # the whole script on one H100: 8 minutes
TFDS_DATA = ("digits", "shakespeare_char")  # the data the steps read (default run, seeds, GPT)
# Modules the steps import (the rest come with them): their distributions must reach the device.
MODULES = (
    "research.train", "research.experiment", "research.data.tfds_source", "research.data.corpus",
    "research.data.array_files", "research.models.resnet", "research.models.vit",
    "research.models.transformer", "research.engine.steps",
)  # fmt: skip
GPT2 = ["+experiment=shakespeare_char_transformer", "data.context=1024", "model.depth=12", "model.dim=768"]


@dataclasses.dataclass
class Step:
    name: str
    argv: list[str]  # after the Python executable; {runs} is a scratch folder
    timeout_s: int
    configs: list[list[str]]  # the override lists the step composes (checked by the dry run)
    headline: Callable[[str, Path], str]


def _json_tail(text: str) -> dict:
    """The last JSON object the step printed (single- or multi-line)."""
    start = text.rfind("\n{")
    return json.loads(text[start + 1 if start >= 0 else text.index("{") :])


def _default_run(_: str, runs: Path) -> str:
    summary = json.loads((runs / "default" / "summary.json").read_text())
    return (
        f"test accuracy {summary['test/accuracy']:.3f}, compile {summary['compile_s']:.1f} s, "
        f"{summary['train/steps_per_s']:,.0f} train steps/s"
    )


def _loop(text: str, _: Path) -> str:
    results = _json_tail(text)
    return "; ".join(
        f"{name}: {r['framework_steps_per_s']:,} vs {r['pure_jax_steps_per_s']:,} steps/s, "
        f"time/step {r['time_per_step_ratio_framework_over_pure']}"
        for name, r in results.items()
    )


def _mfu(text: str, _: Path) -> str:
    r = _json_tail(text)
    gflop = r["model_gflop_per_step"]
    return f"{r['tokens_per_s']:,} tokens/s, **MFU {r['mfu']:.1%}** (model {gflop} GFLOP/step)"


def _attention(text: str, _: Path) -> str:
    r = _json_tail(text)
    ms = {k: r[k]["ms_fwd_bwd"] if isinstance(r[k], dict) else r[k] for k in ("cudnn", "xla")}
    return (
        f"fwd+bwd cuDNN {ms['cudnn']} ms, XLA {ms['xla']} ms (x{r.get('cudnn_speedup', '?')}); "
        f"the model's attention compiles to cuDNN: {r['model_path_uses_cudnn']}"
    )


def _table_rows(text: str, _: Path) -> str:
    rows = [line for line in text.splitlines() if line.startswith("|") and "---" not in line]
    return f"{max(len(rows) - 1, 0)} rows: see the step's table below"


STEPS = [
    Step(
        "Default experiment, whole process (digits MLP)",
        ["-m", "research.train", "logger=none", "hydra.run.dir={runs}/default"],
        90, [["logger=none"]], _default_run,
    ),
    Step(
        "Loop against hand-written JAX + optax",
        ["bench/loop_vs_pure_jax.py", "--steps", "2000", "--repeats", "2"],
        90, [["+experiment=digits_mlp"]], _loop,
    ),
    Step(
        "GPT-2 small, bfloat16, batch 16",
        ["bench/lm_mfu.py", "--seconds", "8"],
        100, [GPT2], _mfu,
    ),
    Step(
        "GPT-2 small, bfloat16, batch 16, model.remat=full",
        ["bench/lm_mfu.py", "--seconds", "8", "model.remat=full"],
        100, [[*GPT2, "model.remat=full"]], _mfu,
    ),
    Step(
        "Attention: cuDNN against XLA at GPT-2-small shapes",
        ["bench/attention_cudnn.py"],
        45, [], _attention,
    ),
    Step(
        "Seeds in one program: 8 seeds against 8 runs",
        ["bench/seeds_vs_sequential.py", "--seeds", "8", "--steps", "400"],
        110, [["+experiment=digits_mlp"], ["+experiment=digits_cnn"]], _table_rows,
    ),
    Step(
        "ResNet-20 and ViT examples/s (CIFAR-shaped arrays)",
        ["bench/resnet_vit_throughput.py", "--batches", "128", "1024", "--precisions", "bfloat16"],
        100,
        [["+experiment=cifar10_resnet20", "data=arrays"], ["+experiment=cifar10_vit", "data=arrays"]],
        _table_rows,
    ),
]  # fmt: skip


def run_all(out: Path) -> None:
    """Every step in turn within the budget; the Markdown table to ``out``."""
    import jax

    started = time.perf_counter()
    rows, outputs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        for step in STEPS:
            left = BUDGET_S - (time.perf_counter() - started)
            argv = [a.format(runs=runs) for a in step.argv]
            command = "python " + " ".join(step.argv).replace("{runs}", "<scratch>")
            if left < 10:
                rows.append((step.name, "not run: the 8-minute budget was spent", command, "-"))
                continue
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(
                    [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                    timeout=min(step.timeout_s, left),
                )  # fmt: skip
                text, ok = proc.stdout, proc.returncode == 0
                error = proc.stderr.strip().splitlines()[-1:] if not ok else []
            except subprocess.TimeoutExpired as e:
                text, ok = (
                    (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""),
                    False,
                )
                error = [f"timed out after {e.timeout:.0f} s"]
            wall = time.perf_counter() - t0
            try:
                result = step.headline(text, runs) if ok else f"failed: {' '.join(error)[:300]}"
            except (ValueError, KeyError, OSError) as e:
                result = f"ran, but its output did not parse: {type(e).__name__}: {e}"
            rows.append((step.name, result, f"`{command}`", f"{wall:.0f}"))
            outputs.append((step.name, text.strip()))
            print(f"{step.name}: {result} ({wall:.0f} s)", flush=True)
    total = time.perf_counter() - started
    device, when = jax.devices()[0].device_kind, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"# bench/gpu_all.sh on {device} (jax {jax.__version__}), {when}",
        "",
        f"Total {total:.0f} s (budget {BUDGET_S} s).",
        "",
        "| figure | result | command | wall s |",
        "|---|---|---|---|",
        *(f"| {' | '.join(r)} |" for r in rows),
        "",
    ]
    for name, text in outputs:
        lines += [f"## {name}", "", "```", text[-6000:], "```", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


def read_wheels(path: Path = WHEELS_LIST) -> tuple[dict[str, str], set[str], set[str]]:
    """(carried name -> version, names on the device image, names imported only when present)."""
    carry, image, optional = {}, set(), set()
    for line in path.read_text().splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "carry":
            name, _, version = rest.strip().partition("==")
            carry[_norm(name)] = version
        elif kind == "image":
            image |= {_norm(n) for n in rest.split()}
        elif kind == "optional":
            optional |= {_norm(n) for n in rest.split()}
    return carry, image, optional


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dry_run() -> list[str]:
    """Every problem the device run would meet for a file, config or wheel; empty when none."""
    problems = []
    for step in STEPS:
        script = step.argv[0] if step.argv[0] != "-m" else None
        if script and not (ROOT / script).is_file():
            problems.append(f"{step.name}: {script} does not exist")
    from research.config import compose_train

    for step in STEPS:
        for overrides in step.configs:
            try:
                compose_train(overrides)
            except Exception as e:  # noqa: BLE001 - any composition error is the finding
                problems.append(
                    f"{step.name}: {' '.join(overrides)} does not compose: {str(e).splitlines()[0]}"
                )
    carry, image, optional = read_wheels()
    for name, version in carry.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f"bench/gpu_wheels.txt carries {name}, which is not installed here to check it")
            continue
        if installed != version:
            print(f"note: bench/gpu_wheels.txt carries {name}=={version}; this environment has {installed}")
    for module in MODULES:
        importlib.import_module(module)
    dists = metadata.packages_distributions()
    imported = {_norm(d) for m in list(sys.modules) for d in dists.get(m.split(".")[0], [])}
    missing = sorted(imported - set(carry) - image - optional - {"research"})
    if missing:
        problems.append(
            f"imported but neither carried nor on the device image (bench/gpu_wheels.txt): {missing}"
        )
    problems += _prepared(carry)
    return problems


def _prepared(carry: dict[str, str]) -> list[str]:
    """What the prepared .device/ lacks; nothing when it was not prepared (the script says how)."""
    if not DEVICE_DIR.exists():
        print(f"note: {DEVICE_DIR} is not prepared: run bench/gpu_all.sh --prepare before the device run")
        return []
    wheels = {
        _norm(p.name.split("-")[0]) + "==" + p.name.split("-")[1]
        for p in (DEVICE_DIR / "wheels").glob("*.whl")
    }
    problems = [
        f"{DEVICE_DIR}/wheels lacks {name}=={version}"
        for name, version in carry.items()
        if f"{name}=={version}" not in wheels
    ]
    problems += [
        f"{DEVICE_DIR}/tfds lacks {name}/ (the device has no network to fetch it)"
        for name in TFDS_DATA
        if not (DEVICE_DIR / "tfds" / name).is_dir()
    ]
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="check files, configs and wheels; run nothing")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "gpu_all.md")
    args = parser.parse_args()
    if not args.dry_run:
        run_all(args.out)
        return
    problems = dry_run()
    for problem in problems:
        print(f"error: {problem}")
    if problems:
        sys.exit(1)
    print(f"dry run: {len(STEPS)} steps, their scripts, configs, wheels and data are in place")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
