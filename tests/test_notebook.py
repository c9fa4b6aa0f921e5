"""examples/quickstart.ipynb executed headless, as a reader would run it: it runs and says what it claims."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


def execute(notebook: Path, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any]:
    """Run every cell in a kernel of this interpreter (a kernelspec of the test's own, so a user's
    ``python3`` kernel elsewhere cannot stand in); (the text of all outputs, the executed notebook).
    """
    import nbformat
    from nbclient import NotebookClient

    spec = cwd / "jupyter" / "kernels" / "research-tests"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "research", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(cwd / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        nb, kernel_name="research-tests", timeout=300, resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts.append(out.get("text") or out.get("data", {}).get("text/plain", ""))
            assert out.get("output_type") != "error", out
    return "\n".join(texts), nb


def number(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in the notebook's output:\n{text}"
    return float(found.group(1))


@pytest.mark.slow
def test_the_quickstart_notebook_runs_and_holds_its_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, nb = execute(NOTEBOOK, tmp_path, monkeypatch)
    runs = tmp_path / "runs" / "quickstart"
    summary = json.loads((runs / "mlp" / "summary.json").read_text())
    # the default experiment, trained ten epochs; evaluated again: the same test accuracy
    accuracy = number(r"test accuracy (\d\.\d+) after 400 steps", text)
    assert accuracy >= 0.93
    assert number(r"evaluated test accuracy (\d\.\d+)", text) == accuracy
    assert "same as the summary: True" in text
    assert "ConfigError: unknown config key 'trainer.epoch'" in text
    assert "{'image': ((32, 8, 8, 1), 'uint8'), 'label': ((32,), 'int32')}" in text
    assert number(r"best val/accuracy (\d\.\d+)", text) >= 0.9
    assert number(r"small test accuracy (\d\.\d+)", text) >= 0.85
    # continued from the run's last checkpoint, to 15 epochs
    assert "continued from step 400 to step 600" in text
    assert summary["steps"] == 600
    found = re.search(r"the loaded model agrees on (\d+) of (\d+) test images; accuracy (\d\.\d+)", text)
    assert found and found.group(1) == found.group(2) == "359"
    assert float(found.group(3)) == pytest.approx(summary["test/accuracy"], abs=1e-4)
    assert number(r"SmallCNN test accuracy (\d\.\d+)", text) >= 0.9
    assert "'_target_': '__main__.SmallCNN'" in text
    # every run is a complete run directory: images went out, plots and configs were written
    assert any("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))
    for name in ("mlp", "small", "cnn"):
        assert (runs / name / ".hydra" / "config.yaml").is_file()
        assert (runs / name / "plots" / "learning_curves.png").is_file()
