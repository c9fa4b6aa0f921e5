"""research.compare on synthetic run directories written in the engine's format.

The statistics are checked against references computed here, straight from numpy and
scipy with the same seed: not against research.statistics.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import bootstrap

from research import compare, errors
from research.errors import UserError
from tests.conftest import parse_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LEARNING_RATES = (0.01, 0.001)
SEEDS = (0, 1, 2)
HEADER = ["#", "metric", "n", "mean", "95% CI", "IQM", "std (ddof=1)", "runs"]


def write_run(path: Path, config: dict, summary: dict | None, history: list[dict]) -> None:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))


def config(lr: float, seed: int, **trainer) -> dict:
    return {
        "name": "digits_mlp",
        "seed": seed,
        "run_dir": "${run_id:}",
        "optimizer": {"learning_rate": lr, "b1": 0.9},
        "data": {"batch_size": 32},
        "trainer": {"num_seeds": 1, "cv_folds": None, **trainer},
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


def by_row_and_metric(rows: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["#"], r["metric"]): r for r in rows}


def test_seed_sweep_table_is_mean_and_sample_std_of_the_summaries(tmp_path, capsys):
    summaries = fake_sweep(tmp_path / "sweep")
    compare.main([str(tmp_path / "sweep")])
    out = capsys.readouterr().out
    header, rows = parse_table(out)

    # Only the swept hyperparameter is a column: seed is aggregated, equal values and
    # identical interpolations are not shown; list-valued summaries are not metrics.
    assert header == ["#", "optimizer.learning_rate", *HEADER[1:]]
    assert [(r["#"], r["metric"]) for r in rows] == [
        (row, metric) for metric in ("test/accuracy", "test/loss", "val/accuracy") for row in ("1", "2")
    ]
    for row in rows:
        lr = float(row["optimizer.learning_rate"])
        values = [summaries[(lr, s)][row["metric"]] for s in SEEDS]
        assert row["n"] == str(len(SEEDS)) and row["runs"] == ("0,1,2" if lr == 0.01 else "3,4,5")
        assert float(row["mean"]) == pytest.approx(statistics.mean(values), rel=1e-3)
        assert float(row["std (ddof=1)"]) == pytest.approx(statistics.stdev(values), rel=0.05)  # ddof=1
        low, high = (float(x) for x in row["95% CI"].strip("[]").split(","))
        assert min(values) - 1e-3 <= low <= float(row["mean"]) <= high <= max(values) + 1e-3  # rounded
    assert "std: sample std (ddof=1)" in out

    plots = tmp_path / "sweep" / "compare"
    for name in ("train_loss.png", "val_accuracy.png"):
        data = (plots / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert parse_table((plots / "table.md").read_text()) == (header, rows)
    assert (plots / "table.tex").read_text().startswith("\\begin{tabular}")


def seed_values(lr: float) -> np.ndarray:
    """Eight seeds' accuracies with a tie inside and across the two learning rates."""
    base = np.array([0.91, 0.93, 0.92, 0.95, 0.94, 0.93, 0.90, 0.96])
    return base if lr == 0.01 else base - 0.02


FOLDS = [0.81, 0.86, 0.84, 0.90, 0.79]


def eight_seeds_and_five_folds(root: Path) -> None:
    """Two 8-seed runs (trainer.num_seeds=8) and a 5-fold run, as the engine writes them."""
    for job, lr in enumerate(LEARNING_RATES):
        acc = seed_values(lr)
        summary = {
            "test/accuracy": float(acc.mean()),
            "test/accuracy_std": float(acc.std()),  # whatever is there: compare uses the samples
            "test/accuracy_per_seed": acc.tolist(),
        }
        history = [
            {
                "step": s,
                "val/accuracy": float(acc.mean() * s / 40),
                "val/accuracy_std": 0.1,
                "val/accuracy_per_seed": (acc * s / 40).tolist(),
            }
            for s in (10, 20, 30, 40)
        ]
        write_run(root / "seeds" / str(job), config(lr, 0, num_seeds=8), summary, history)
    folds = {"cv/accuracy": float(np.mean(FOLDS)), "cv/accuracy_per_fold": FOLDS}
    write_run(root / "cv", config(0.01, 0, cv_folds=5), folds, [{"step": 40, **folds}])


def reference_interval(*samples: np.ndarray, statistic=np.mean, seed: int, resamples: int) -> tuple:
    result = bootstrap(
        samples,
        statistic,
        n_resamples=resamples,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return result.confidence_interval.low, result.confidence_interval.high


def pairwise_improvement(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """P(X > Y), ties one half, by counting pairs (vectorised for scipy's bootstrap)."""
    x, y = np.moveaxis(x, axis, -1)[..., :, None], np.moveaxis(y, axis, -1)[..., None, :]
    return ((x > y) + 0.5 * (x == y)).mean(axis=(-2, -1))


def test_eight_seeds_and_five_folds_mean_interval_iqm_and_improvement(tmp_path, capsys):
    eight_seeds_and_five_folds(tmp_path)
    seed, resamples = 7, 2000
    out_dir = tmp_path / "out"
    # Rows in path order: 1 the folds (cv), 2 and 3 the seeds at learning rates 0.01 and 0.001.
    argv = [str(tmp_path), "--versus", "3", "--seed", str(seed), "--resamples", str(resamples)]
    compare.main([*argv, "--format", "csv", "--out", str(out_dir)])
    printed, legend = capsys.readouterr()
    lines = list(csv.DictReader(io.StringIO(printed)))
    assert (out_dir / "table.csv").read_text() == printed
    assert "P(> #3)" in legend and f"{resamples} resamples, seed {seed}" in legend
    got = {(line["row"], line["metric"]): line for line in lines}
    final_val = {("2", "val/accuracy"), ("3", "val/accuracy")}  # seed runs: the last record's
    assert set(got) == {("1", "cv/accuracy"), ("2", "test/accuracy"), ("3", "test/accuracy"), *final_val}
    assert "trainer.num_seeds" not in lines[0], "how many seeds a program trained is not a setting"
    assert lines[0].keys() >= {"trainer.cv_folds", "optimizer.learning_rate"}

    x, y, folds = seed_values(0.01), seed_values(0.001), np.array(FOLDS)
    for key, samples in (
        (("2", "test/accuracy"), x),
        (("3", "test/accuracy"), y),
        (("1", "cv/accuracy"), folds),
    ):
        line = got[key]
        assert int(line["n"]) == len(samples)
        assert float(line["mean"]) == pytest.approx(samples.mean(), abs=1e-12)
        assert float(line["std_ddof1"]) == pytest.approx(samples.std(ddof=1), abs=1e-12)
        middle = np.sort(samples)[len(samples) // 4 : len(samples) - len(samples) // 4]  # 4 of 8, 3 of 5
        assert float(line["iqm"]) == pytest.approx(middle.mean(), abs=1e-12)
        low, high = reference_interval(samples, seed=seed, resamples=resamples)
        assert (float(line["ci95_low"]), float(line["ci95_high"])) == pytest.approx((low, high), abs=1e-12)
        assert low < samples.mean() < high

    p = float(got["2", "test/accuracy"]["p_gt_row3"])
    assert p == pytest.approx(pairwise_improvement(x, y), abs=1e-12) and 0.5 < p < 1.0
    low, high = reference_interval(x, y, statistic=pairwise_improvement, seed=seed, resamples=resamples)
    line = got["2", "test/accuracy"]
    interval = float(line["p_gt_row3_ci95_low"]), float(line["p_gt_row3_ci95_high"])
    assert interval == pytest.approx((low, high), abs=1e-12) and low < p < high
    assert got["3", "test/accuracy"]["p_gt_row3"] == "" and got["1", "cv/accuracy"]["p_gt_row3"] == ""

    # The same numbers, rounded, in the printed Markdown and the LaTeX table.
    compare.main([*argv, "--no-plots"])
    header, rows = parse_table(capsys.readouterr().out)
    keys = ["optimizer.learning_rate", "trainer.cv_folds"]
    assert header == ["#", *keys, *HEADER[1:-1], "P(> #3)", "runs"]
    first = by_row_and_metric(rows)["2", "test/accuracy"]
    assert first["n"] == "8" and first["mean"] == f"{x.mean():.4g}" and first["IQM"] == f"{middle_of(x):.4g}"
    assert first["P(> #3)"] == f"{p:.4g} [{low:.4g}, {high:.4g}]"
    tex = (out_dir / "table.tex").read_text()
    assert "\\toprule" in tex and f"{x.mean():.4g}" in tex and "P(> \\#3)" in tex and "cv/accuracy" in tex


def middle_of(values: np.ndarray) -> float:
    cut = len(values) // 4
    return float(np.sort(values)[cut : len(values) - cut].mean())


def test_curves_shade_the_seeds_interval_and_skip_spreads(tmp_path):
    eight_seeds_and_five_folds(tmp_path)
    runs = compare.find_runs([tmp_path / "seeds"])
    keys = compare.differing_params(runs)
    rows = compare.group_runs(runs, keys)
    band = compare.row_band(rows[0], "val/accuracy", "#1", compare.DEFAULT_BOOTSTRAP)
    assert band.label == "#1 (n=8)" and band.steps == [10, 20, 30, 40]
    per_step = np.array([seed_values(0.01) * s / 40 for s in band.steps])
    np.testing.assert_allclose(band.mean, per_step.mean(1))
    assert np.all(band.low < band.mean) and np.all(band.mean < band.high)
    assert np.all(band.low >= per_step.min(1)) and np.all(band.high <= per_step.max(1))

    written = compare.plot_curves(rows, keys, tmp_path / "plots", compare.DEFAULT_BOOTSTRAP)
    assert [p.name for p in written] == ["val_accuracy.png"], "a spread (_std) is a band, not a curve"
    assert written[0].read_bytes().startswith(PNG_MAGIC)


def test_a_learning_rate_grid_in_one_run_splits_into_its_values(tmp_path):
    """trainer.vmap_over: each grid value's seeds are a configuration, grouped with single runs."""
    grid = config(0.001, 0, num_seeds=2, vmap_over="optimizer.learning_rate", vmap_values=[0.01, 0.001])
    per_replica = [0.9, 0.92, 0.8, 0.84]  # (0.01, seed 0), (0.01, seed 1), (0.001, seed 0), (0.001, seed 1)
    summary = {
        "test/accuracy": 0.865,
        "test/accuracy_std": 0.05,
        "test/accuracy_per_seed": per_replica,
        "replicas/optimizer.learning_rate": [0.01, 0.01, 0.001, 0.001],
        "replicas/seed_index": [0, 1, 0, 1],
    }
    history = [{"step": 8, "val/accuracy": 0.5, "val/accuracy_per_seed": [0.6, 0.6, 0.4, 0.4]}]
    write_run(tmp_path / "grid", grid, summary, history)
    single = config(0.01, 5) | {
        "trainer": {"num_seeds": 1, "cv_folds": None, "vmap_over": None, "vmap_values": []}
    }
    write_run(tmp_path / "single", single, {"test/accuracy": 0.94}, [])
    header, rows = parse_table(compare.compare([tmp_path], metrics=["test/accuracy"]))
    assert header == ["#", "optimizer.learning_rate", *HEADER[1:]]
    by_lr = {r["optimizer.learning_rate"]: r for r in rows}
    assert by_lr["0.01"]["n"] == "3" and float(by_lr["0.01"]["mean"]) == pytest.approx(0.92)
    assert by_lr["0.01"]["runs"] == "grid[learning_rate=0.01],single"
    assert by_lr["0.001"]["n"] == "2" and float(by_lr["0.001"]["mean"]) == pytest.approx(0.82)
    runs = compare.find_runs([tmp_path / "grid"])
    assert [r.curve("val/accuracy") for r in runs] == [{8: [0.6, 0.6]}, {8: [0.4, 0.4]}]


def test_config_noise_is_left_out_unless_asked_for(tmp_path):
    """conv_impl and unresolved interpolations differ between model families without meaning."""
    cnn = config(0.01, 0) | {"model": {"conv_impl": "im2col", "in_shape": "${data.shape}"}}
    mlp = config(0.01, 1) | {"model": {"conv_impl": "xla", "in_features": "${data.features}"}}
    write_run(tmp_path / "a", cnn, {"test/accuracy": 0.5}, [])
    write_run(tmp_path / "b", mlp, {"test/accuracy": 0.7}, [])
    header, rows = parse_table(compare.compare([tmp_path]))
    assert header == HEADER and len(rows) == 1 and rows[0]["n"] == "2"
    header, rows = parse_table(compare.compare([tmp_path], all_keys=True))
    assert header[1:4] == ["model.conv_impl", "model.in_shape", "model.in_features"] and len(rows) == 2


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
    assert header == ["#", "data.batch_size", *HEADER[1:]]
    assert [(r["data.batch_size"], r["n"], r["mean"], r["95% CI"], r["std (ddof=1)"]) for r in rows] == [
        ("32", "1", "0.5", "-", "-"),
        ("64", "1", "0.7", "-", "-"),
    ]


def test_vmapped_seeds_and_unfinished_runs(tmp_path):
    write_run(
        tmp_path / "multi",
        config(0.01, 0),
        {"test/accuracy": 0.6, "test/accuracy_std": 0.08, "test/accuracy_per_seed": [0.5, 0.6, 0.7]},
        [],
    )
    write_run(
        tmp_path / "live",
        config(0.1, 0),
        None,
        [{"step": 10, "test/accuracy": 0.1}, {"step": 20, "test/accuracy": 0.2}],
    )
    text = compare.compare([tmp_path])
    header, rows = parse_table(text)
    assert "test/accuracy_std" not in {r["metric"] for r in rows}, "a spread is not a metric"
    by_lr = {r["optimizer.learning_rate"]: r for r in rows}
    assert (by_lr["0.01"]["n"], by_lr["0.01"]["mean"], by_lr["0.01"]["std (ddof=1)"]) == ("3", "0.6", "0.1")
    assert by_lr["0.1"]["mean"] == "0.2" and by_lr["0.1"]["runs"] == "live*"
    assert "unfinished" in text


def test_ignore_drops_a_key_from_the_comparison(tmp_path):
    fake_sweep(tmp_path)
    header, rows = parse_table(compare.compare([tmp_path], ignore=["optimizer.*"]))
    assert header == HEADER and {r["n"] for r in rows} == {"6"}


def test_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    fake_sweep(tmp_path / "sweep")
    sweep = str(tmp_path / "sweep")
    for argv in (
        [str(tmp_path / "missing")],
        [str(tmp_path / "empty")],
        [sweep, "--versus", "3", "--no-plots"],
        [sweep, "--confidence", "95", "--no-plots"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            compare.main(argv)
        assert exit_info.value.code == errors.EXIT_USER_ERROR
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
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
