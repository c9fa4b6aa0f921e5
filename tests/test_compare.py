"""research.compare on synthetic run directories written in the engine's format."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
import yaml

from research import compare, errors
from research.errors import UserError
from tests.conftest import parse_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LEARNING_RATES = (0.01, 0.001)
SEEDS = (0, 1, 2)


def write_run(path: Path, config: dict, summary: dict | None, history: list[dict]) -> None:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))


def config(lr: float, seed: int) -> dict:
    return {
        "name": "digits_mlp",
        "seed": seed,
        "run_dir": "${run_id:}",
        "optimizer": {"learning_rate": lr, "b1": 0.9},
        "data": {"batch_size": 32},
    }


def fake_sweep(root: Path) -> dict[tuple[float, int], dict]:
    """A 2 learning rates x 3 seeds sweep (job dirs 0..5) with distinct, known summaries."""
    summaries = {}
    for job, (lr, seed) in enumerate((lr, s) for lr in LEARNING_RATES for s in SEEDS):
        acc = 0.9 + 5 * lr + 0.002 * seed * (1 + job)
        summary = {
            "test/accuracy": acc,
            "test/loss": 1.0 - acc,
            "val/accuracy": acc - 0.01,
            "test/confusion_matrix": [[1, 0], [0, 1]],
            "steps": 40,
            "wall_s": 3.0,
        }
        history = [
            {"step": s, "train/loss": 2.0 / s + seed * 0.01, "val/accuracy": acc * s / 40}
            for s in (10, 20, 30, 40)
        ]
        write_run(root / str(job), config(lr, seed), summary, history)
        summaries[(lr, seed)] = summary
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return summaries


def test_seed_sweep_table_is_mean_and_std_of_the_summaries(tmp_path, capsys):
    summaries = fake_sweep(tmp_path / "sweep")
    compare.main([str(tmp_path / "sweep")])
    out = capsys.readouterr().out
    header, rows = parse_table(out)

    # Only the swept hyperparameter is a column: seed is aggregated, equal values and
    # identical interpolations are not shown; list-valued summaries are not metrics.
    assert header == ["optimizer.learning_rate", "n", "test/accuracy", "test/loss", "val/accuracy", "runs"]
    assert len(rows) == len(LEARNING_RATES)
    for row in rows:
        lr = float(row["optimizer.learning_rate"])
        assert row["n"] == str(len(SEEDS))
        for metric in ("test/accuracy", "test/loss", "val/accuracy"):
            values = [summaries[(lr, s)][metric] for s in SEEDS]
            mean, std = (float(x) for x in row[metric].split("±"))
            assert mean == pytest.approx(statistics.mean(values), rel=1e-3)
            assert std == pytest.approx(statistics.stdev(values), rel=0.05)
    assert {r["runs"] for r in rows} == {"0,1,2", "3,4,5"}

    plots = tmp_path / "sweep" / "compare"
    for name in ("train_loss.png", "val_accuracy.png"):
        data = (plots / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_runs_differing_in_more_than_seed_are_separate_rows(tmp_path, capsys):
    write_run(tmp_path / "a", config(0.01, 0), {"test/accuracy": 0.5}, [{"step": 1, "train/loss": 1.0}])
    write_run(
        tmp_path / "b",
        config(0.01, 1) | {"data": {"batch_size": 64}},
        {"test/accuracy": 0.7},
        [{"step": 1, "train/loss": 2.0}],
    )
    compare.main([str(tmp_path / "a"), str(tmp_path / "b"), "--no-plots"])
    header, rows = parse_table(capsys.readouterr().out)
    assert header == ["data.batch_size", "n", "test/accuracy", "runs"]
    assert [(r["data.batch_size"], r["n"], r["test/accuracy"]) for r in rows] == [
        ("32", "1", "0.5"),
        ("64", "1", "0.7"),
    ]


def test_vmapped_seeds_and_unfinished_runs(tmp_path):
    write_run(
        tmp_path / "multi",
        config(0.01, 0),
        {"test/accuracy": 0.6, "test/accuracy_per_seed": [0.5, 0.6, 0.7]},
        [],
    )
    write_run(
        tmp_path / "live",
        config(0.1, 0),
        None,
        [{"step": 10, "test/accuracy": 0.1}, {"step": 20, "test/accuracy": 0.2}],
    )
    text = compare.compare([tmp_path], metrics=["test/accuracy"])
    _, rows = parse_table(text)
    by_lr = {r["optimizer.learning_rate"]: r for r in rows}
    assert by_lr["0.01"]["n"] == "3"
    assert by_lr["0.01"]["test/accuracy"] == "0.6 ± 0.1"
    assert by_lr["0.1"]["test/accuracy"] == "0.2"
    assert by_lr["0.1"]["runs"] == "live*"
    assert "unfinished" in text


def test_ignore_drops_a_key_from_the_comparison(tmp_path):
    fake_sweep(tmp_path)
    header, rows = parse_table(compare.compare([tmp_path], ignore=["optimizer.*"]))
    assert header[0] == "n" and len(rows) == 1 and rows[0]["n"] == "6"


def test_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for argv in ([str(tmp_path / "missing")], [str(tmp_path / "empty")]):
        with pytest.raises(SystemExit) as exit_info:
            compare.main(argv)
        assert exit_info.value.code == errors.EXIT_USER_ERROR
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
    fake_sweep(tmp_path / "sweep")
    with pytest.raises(UserError, match="test/f1.*choose from test/accuracy"):
        compare.compare([tmp_path / "sweep"], metrics=["test/f1"])


def test_a_damaged_summary_or_config_is_one_line_naming_the_file(tmp_path, capsys):
    fake_sweep(tmp_path / "sweep")
    damaged = {"summary.json": "{not json", ".hydra/config.yaml": "a: [unclosed"}
    for name, text in damaged.items():
        (tmp_path / "sweep" / "1" / name).write_text(text)
        with pytest.raises(SystemExit) as exit_info:
            compare.main([str(tmp_path / "sweep"), "--no-plots"])
        assert exit_info.value.code == errors.EXIT_USER_ERROR
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{tmp_path / 'sweep' / '1' / name} cannot be read" in err, err
        fake_sweep(tmp_path / "fresh")
        (tmp_path / "sweep" / "1" / name).write_text((tmp_path / "fresh" / "1" / name).read_text())
        shutil.rmtree(tmp_path / "fresh")
