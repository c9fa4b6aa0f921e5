"""The house's floors: every import in ``research/`` points down (or across one floor), none
in a circle, and no command imports another. ``docs/architecture.md`` names the same floors.

Lazy imports inside functions count as much as those at the top: a layer that reaches up
lazily is still tied to what is above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "research"

# Floors from the ground up; a module sits on the floor of its longest matching prefix.
FLOORS: list[tuple[str, ...]] = [
    ("errors", "absl_logging", "paths", "images", "console", "tables", "call_position"),  # what everything may use
    # the parts
    (
        "metrics",
        "precision",
        "targets",
        "models",
        "envs",
        "data",
        "optim",
        "ema",
        "watch",
        "prune",
        "quantization",
        "statistics",
    ),
    ("engine",),  # the loop, checkpoints, records: knows no task
    ("tasks", "evaluators"),  # what is learned and how it is measured
    ("config", "experiment", "rerun", "dry_run", "run_dirs"),  # the build: where config meets code
    ("cli", "api", "usage", "launch", "sweep"),  # what commands share: preflight, help, API, launchers
    # the commands
    ("train", "evaluate", "export", "sample", "generate", "compare", "study", "inspect", "quantize"),
]
COMMANDS = set(FLOORS[-1])


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str:
    """The FLOORS entry ``research.<...>`` falls under: its longest matching dotted prefix, so
    ``research.data.table`` is ``data``."""
    name = module.split(".", 1)[1] if "." in module else ""
    entries = [e for rooms in FLOORS for e in rooms if name == e or name.startswith(e + ".")]
    return max(entries, key=len) if entries else name


def floor(module: str) -> int:
    """The floor of ``research.<room>[.<...>]`` (see ``room``)."""
    for level, rooms in enumerate(FLOORS):
        if room(module) in rooms:
            return level
    raise AssertionError(f"{module} is on no floor: add its room to FLOORS and docs/architecture.md")


def imports() -> dict[str, set[str]]:
    """Module -> the research modules it imports (at any depth of its code)."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name, targets = module_name(path), set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("research"):
                # "from research.data import digits": the submodule when there is one
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    has_file = (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                    targets.add(sub if has_file else node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("research")}
        found[name] = {t for t in targets if t != name and t != "research"}
    return found


def test_every_import_points_down_and_no_command_imports_another() -> None:
    wrong = []
    for module, targets in imports().items():
        if module == "research":
            continue
        for target in targets:
            if floor(target) > floor(module):
                wrong.append(f"{module} -> {target} (floor {floor(module)} imports floor {floor(target)})")
            elif room(module) in COMMANDS and room(target) in COMMANDS:
                wrong.append(f"{module} -> {target} (a command importing a command)")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_modules_import_each_other_in_a_circle() -> None:
    graph = imports()
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[str] = []

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for target in sorted(graph.get(module, ())):
            if seen.get(target) == 1:
                circles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in seen:
                visit(target, [*path, target])
        seen[module] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module, [module])
    assert not circles, "\n".join(circles)


@pytest.mark.parametrize("room", ["engine", "tasks", "evaluators", "models"])
def test_the_lower_rooms_import_nothing_of_hydra(room: str) -> None:
    """Below the build step everything is plain Python a notebook can use."""
    for path in (PACKAGE / room).rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {n for n in names if n.split(".")[0] in ("hydra", "omegaconf")}, path
