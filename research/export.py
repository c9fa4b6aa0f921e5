"""Export a classifier for serving: ``python -m research.export run=<run dir> [checkpoint=best|latest|<step>]
[replica=0] [out=<run dir>/exported] [platforms=cpu,cuda] [overrides]``.

The inference function is the eval-mode model applied to raw inputs (the dataset's
transform included), serialised with ``jax.export`` as StableHLO with a symbolic batch
dimension; its weights go next to it as ``params.npz``. Loading needs only jax and
numpy, not this project, its config or Hydra: the README written beside them shows how.
A LoRA run (optimizer.lora) is exported with its adapters merged into the kernels. ``quantize=int8``
stores every kernel as int8 with float32 per-output-channel scales beside it (``<name>.scale``,
research/quantization.py), read back inside the exported function: a weights file ~4x smaller.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from research import console, quantization
from research.errors import ConfigError

USAGE = (
    "usage: python -m research.export run=<run dir> [checkpoint=best|latest|<step>] [replica=0] "
    "[out=<dir>] [platforms=cpu,cuda] [quantize=int8] [overrides]"
)
LOADER = """import jax, numpy as np
exported = jax.export.deserialize(bytearray(open("{dir}/model.stablehlo", "rb").read()))
params = dict(np.load("{dir}/params.npz"))
logits = exported.call(params, images)  # images: ({shape}) {dtype}, raw pixels in {range}; any batch size
"""


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """The export options and the config overrides, from key=value args."""
    defaults = {"checkpoint": "best", "replica": "0"}
    names = ("out", "platforms", "quantize")
    options, overrides = console.key_values(argv, defaults, names, USAGE, overrides=True)
    quantization.check_mode(options.get("quantize"))
    if not options["replica"].isdigit():
        raise ConfigError(f"replica={options['replica']!r} must be a seed index (0 for a run of one seed)")
    return options, overrides


def flatten(tree: Any) -> tuple[dict[str, np.ndarray], dict[str, Any], Any, list[str]]:
    """(arrays, PRNG keys, treedef, names in leaf order) of a nested dict, by "params/head/kernel"
    names. Keys (dropout streams) stay out of params.npz: the eval-mode model draws nothing."""
    import jax

    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = ["/".join(str(getattr(k, "key", k)) for k in path) for path, _ in leaves]
    arrays, keys = {}, {}
    for name, (_, leaf) in zip(names, leaves, strict=True):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            keys[name] = leaf
        else:
            arrays[name] = np.asarray(leaf)
    return arrays, keys, treedef, names


def check_classifier(cfg: Any, built: Any) -> None:
    """One line when the run's task has no ``logits(state, images)`` to export."""
    from research.engine.api import Classifier

    if not isinstance(built.task, Classifier):
        name = type(built.task).__name__
        raise ConfigError(f"research.export needs a classifier with logits(state, images); {name} has none")


def export_model(
    task: Any,
    state: Any,
    input_shape: tuple,
    dtype: Any,
    platforms: list[str] | None,
    quantize: str | None = None,
) -> tuple:
    """(jax.export.Exported, flat params) of ``task.logits`` for a batch of any size; with
    ``quantize="int8"`` the flat params hold int8 kernels and their scales."""
    import jax

    task, state = merge_adapters(task, state)
    learned = {k: state[k] for k in task.reusable if k in state}
    flat, keys, treedef, names = flatten(learned)
    if quantization.check_mode(quantize):
        flat = quantization.quantize_flat(flat)

    def infer(params: dict, images: jax.Array) -> jax.Array:
        params = quantization.dequantize_flat(params)
        tree = jax.tree_util.tree_unflatten(treedef, [params[n] if n in params else keys[n] for n in names])
        # The eval transform draws nothing: any key serves.
        return task.logits({**tree, "rng": jax.random.PRNGKey(0)}, images)

    batch_shape = jax.export.symbolic_shape(", ".join(["b", *map(str, input_shape)]))
    specs = {n: jax.ShapeDtypeStruct(a.shape, a.dtype) for n, a in flat.items()}
    image_spec = jax.ShapeDtypeStruct(batch_shape, dtype)
    exported = jax.export.export(jax.jit(infer), platforms=platforms)(specs, image_spec)
    return exported, flat


def merge_adapters(task: Any, state: dict) -> tuple[Any, dict]:
    """A LoRA run's task and state with each adapter folded into its kernel (``W + alpha/rank * A @ B``,
    research/models/lora.py): the exported model is the plain architecture, no adapter matmuls."""
    import jax
    from flax import nnx

    from research.models import lora

    graphdef = getattr(task, "eval_graphdef", None)
    paths = [path for path, _ in jax.tree_util.tree_leaves_with_path(state.get("params", {}))]
    if graphdef is None or not any(
        lora.is_adapter(jax.tree_util.keystr(p, simple=True, separator="/")) for p in paths
    ):
        return task, state
    model = lora.merge(nnx.merge(graphdef, state["params"], state["model_state"]))
    graphdef, params, _ = nnx.split(model, nnx.Param, ...)
    task = copy.copy(task)  # the run's own task keeps its adapted graph
    task.eval_graphdef = graphdef
    return task, {**state, "params": nnx.to_pure_dict(params)}


def input_range(pixel_max: float | None, test_images: np.ndarray) -> list[float]:
    """The raw units the model reads: [0, data.pixel_max] where the data declares its scale (the
    transform divides by it), else the test images' min and max. The exported function includes
    the normalisation, so an image in other units (0..255 for digits' 0..16) is silently wrong.
    """
    if pixel_max is not None:
        return [0, pixel_max]
    return [test_images.min().item(), test_images.max().item()]


def write(out: Path, exported: Any, flat: dict, meta: dict) -> None:
    try:
        serialized = exported.serialize()
    except ImportError:
        raise ConfigError("research.export needs flatbuffers: pip install 'research[export]'") from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.stablehlo").write_bytes(serialized)
    np.savez(out / "params.npz", **flat)
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    shape = ", ".join(["batch", *map(str, meta["input_shape"])])
    low, high = meta["input_range"]
    loader = LOADER.format(dir=out, shape=shape, dtype=meta["input_dtype"], range=f"[{low}, {high}]")
    (out / "README.md").write_text(
        f"# {meta['name']}, checkpoint {meta['checkpoint_step']}\n\n"
        "Logits over `meta.json`'s class names. Load in any process with jax and numpy:\n\n"
        f"```python\n{loader}```\n\n"
        f"images: ({shape}) {meta['input_dtype']} raw pixels in [{low}, {high}], as the training data: "
        "scale yours to that range (`meta.json`'s `input_range`): the model normalises them itself.\n"
    )


def export(run_dir: Path, options: dict[str, str], overrides: list[str]) -> Path:
    """Restore the chosen checkpoint of ``run_dir`` and write its exported model; returns the folder."""
    from research.experiment import open_saved

    opened = open_saved(
        run_dir, overrides, options["checkpoint"], replica=int(options["replica"]), check=check_classifier
    )
    dataset = opened.built.dataset
    test_images = np.asarray(dataset.splits["test"].arrays()["image"])
    dtype = test_images.dtype
    platforms = options["platforms"].split(",") if "platforms" in options else None
    quantize = quantization.check_mode(options.get("quantize"))
    exported, flat = export_model(
        opened.built.task, opened.state, tuple(dataset.input_shape), dtype, platforms, quantize
    )
    out = Path(options.get("out") or run_dir / "exported")
    meta = {
        "name": opened.cfg.name,
        "checkpoint_step": opened.step,
        "input_shape": list(dataset.input_shape),
        "input_dtype": str(dtype),
        "input_range": input_range(opened.cfg.data.get("pixel_max"), test_images),
        "class_names": list(dataset.class_names),
        "platforms": list(exported.platforms),
        "weights": quantize or "float32",
    }
    write(out, exported, flat, meta)
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    with console.report_errors():  # bad input, also inside a config's _target_, is one line
        options, overrides = parse(argv)
        out = export(Path(options["run"]).expanduser(), options, overrides)
    print(f"wrote {out} (model.stablehlo, params.npz, meta.json, README.md)")


if __name__ == "__main__":
    main()
