"""What XLA:CPU's library kernels hold outside ``memory_analysis``, read from a compiled program.

XLA:CPU hands two kinds of work to libraries that allocate their own memory while they run, so
the compiler's buffer assignment (``memory_analysis``) does not see it:

- **YNNPACK fusions** (``fusion(...), kind=kCustom`` with ``"kind":"__ynn_fusion"``): a chain of
  matmuls with the elementwise work between them (a Transformer block's MLP, layer norms
  included) becomes one call. Elementwise steps stream through the library's tiles, but each
  matmul's result is materialised, and so is every operand of a reduction (a layer norm's mean
  and variance read their input twice). The working memory of one fusion is the sum of those
  intermediates (its result is XLA's buffer); fusions run one after another, so a program needs
  the largest. Checked against the resident memory of the calls (``bench/plan_vs_measured.py``;
  a dot-gelu-dot MLP at 16,384 rows: 41.9 MB counted, 42.5 MB measured).
- **Convolutions** run by Eigen (``model.conv_impl=xla``) use scratch memory not modelled here;
  the dry run names how many there are instead.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

_COMPUTATION = re.compile(r"^(?:ENTRY )?%(\S+) .*\{$")
_INSTRUCTION = re.compile(r"%(\S+) = (\w+)\[([\d,]*)\]\S* (\w+)\(([^)]*)\)")
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_CONVOLUTION = re.compile(r"= \S+ convolution\(")
YNN_FUSION = '"kind":"__ynn_fusion"'


def convolutions(compiled: Any) -> int:
    """How many ``convolution`` ops the compiled program's HLO holds."""
    return len(_CONVOLUTION.findall(compiled.as_text() or ""))


def library_working_bytes(compiled: Any) -> int:
    """The largest working memory of one YNNPACK fusion in the program (0 without any)."""
    bodies = _computations(compiled.as_text() or "")
    sizes = [
        _fusion_working(bodies[m.group(1)])
        for body in bodies.values()
        for line in body
        if YNN_FUSION in line and (m := _CALLS.search(line)) and m.group(1) in bodies
    ]
    return max(sizes, default=0)


def _computations(text: str) -> dict[str, list[str]]:
    """Each HLO computation's instruction lines, by name."""
    out: dict[str, list[str]] = {}
    name = None
    for line in text.splitlines():
        if (m := _COMPUTATION.match(line)) is not None:
            name, out[m.group(1)] = m.group(1), []
        elif line == "}":
            name = None
        elif name is not None:
            out[name].append(line)
    return out


def _fusion_working(body: list[str]) -> int:
    """Bytes a fusion materialises: its matmuls' results and its reductions' operands, the
    fusion's own result (its root) left out."""
    sizes, kept = {}, set()
    for line in body:
        m = _INSTRUCTION.search(line)
        if m is None:
            continue
        name, dtype, dims, op, operands = m.groups()
        sizes[name] = 0 if line.lstrip().startswith("ROOT") else _bytes(dtype, dims)
        if op == "dot":
            kept.add(name)
        elif op == "reduce":
            kept.add(operands.split(",")[0].strip().lstrip("%"))
    return sum(sizes.get(name, 0) for name in kept)


def _bytes(dtype: str, dims: str) -> int:
    itemsize = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2}.get(dtype, 4)
    if dtype in ("f64", "s64", "u64", "c64"):
        itemsize = 8
    return itemsize * int(np.prod([int(d) for d in dims.split(",") if d], dtype=np.int64))
