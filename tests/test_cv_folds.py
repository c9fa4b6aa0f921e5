"""trainer.cv_folds: k folds of the train split as one vmapped program, a single fold, and refit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from research import compare, experiment
from research.config import compose_train
from research.data.folds import stratified_folds
from research.engine.cross_validation import plan
from research.engine.feed import MemoryFeed
from research.engine.settings import TrainerConfig
from research.engine.sharding import make_mesh
from research.errors import ConfigError
from tests.conftest import TINY, parse_table, run_train

K = 5
# A few steps of the digits MLP, the same in every run here (fold i alone must equal replica i).
SHORT = (
    "+experiment=digits_mlp",
    "trainer.eval_every=16",
    "trainer.plots=false",
    "optimizer/schedule=constant",
    "optimizer.learning_rate=3e-3",
)


@pytest.fixture(scope="module")
def digits():
    """The digits dataset and run config, built as ``trainer.cv_folds=5`` builds them."""
    cfg = compose_train([*SHORT, *TINY, "trainer.max_steps=48", f"trainer.cv_folds={K}"])
    return experiment.build(cfg)


CV_RUN = (*SHORT, *TINY, "trainer.max_steps=48", f"trainer.cv_folds={K}")


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m research.train +experiment=digits_mlp trainer.cv_folds=5``, a few steps."""
    run_dir = tmp_path_factory.mktemp("cv") / "run"
    run_train(*CV_RUN, f"hydra.run.dir={run_dir}")
    return run_dir


def assert_disjoint_and_covering(vals: list[np.ndarray], trains: list[np.ndarray], n: int) -> None:
    everything = np.concatenate(vals)
    assert len(everything) == n and set(everything.tolist()) == set(range(n)), "folds cover, once each"
    for train, val in zip(trains, vals, strict=True):
        assert not set(train.tolist()) & set(val.tolist()), "a fold never trains on what it validates"
        assert set(train.tolist()) | set(val.tolist()) == set(range(n))


def test_stratified_folds_of_the_digits_labels_are_disjoint_and_cover_them(digits) -> None:
    labels = digits.dataset.splits["train"].arrays()["label"]
    folds = stratified_folds(labels, K, seed=0)
    assert_disjoint_and_covering([v for _, v in folds], [t for t, _ in folds], len(labels))
    for _, val in folds:  # stratified: each class within one example of its share
        share = np.bincount(labels, minlength=10) / K
        assert np.all(np.abs(np.bincount(labels[val], minlength=10) - share) < 1)


def test_what_the_feed_trains_each_fold_on_is_disjoint_from_its_validation(digits) -> None:
    folds, dataset = digits.folds, digits.dataset
    n = dataset.splits["train"].num_examples
    assert folds.replicas == K and folds.fold is None
    vals = [folds.val[r][folds.val_weight[r] > 0] for r in range(K)]
    trains = [np.unique(folds.train[r]) for r in range(K)]
    assert_disjoint_and_covering(vals, trains, n)
    feed = MemoryFeed(dataset.splits["train"], dataset.batch_size, 0, 1, make_mesh({}), folds.train)
    epoch = np.asarray(feed.xs(0, feed.steps_per_epoch))  # (steps, folds, batch)
    assert epoch.shape == (feed.steps_per_epoch, K, dataset.batch_size)
    for r in range(K):
        seen = epoch[:, r].reshape(-1)
        assert set(seen.tolist()) <= set(trains[r].tolist()) and not set(seen.tolist()) & set(
            vals[r].tolist()
        )
        assert len(set(seen.tolist())) >= len(trains[r]) - dataset.batch_size, "an epoch covers the fold"
    assert not np.array_equal(epoch[:, 0], epoch[:, 1]), "each fold reads its own examples"


def test_five_folds_through_the_cli_report_five_scores_mean_and_std(cv_run: Path) -> None:
    summary = json.loads((cv_run / "summary.json").read_text())
    per_fold = np.asarray(summary["cv/accuracy_per_fold"])
    # Accuracies are counts over ~259 examples, so two folds may tie; the losses may not.
    assert per_fold.shape == (K,) and len(set(per_fold.tolist())) > 1, per_fold
    assert len(set(summary["cv/loss_per_fold"])) == K, "five folds, five different scores"
    assert summary["cv/accuracy"] == pytest.approx(per_fold.mean(), rel=1e-6)
    assert summary["cv/accuracy_std"] == pytest.approx(per_fold.std(ddof=1), rel=1e-5)
    assert per_fold.min() > 0.5, "every fold learns"
    assert summary["cv_folds"] == K and summary["replicas/cv_fold"] == list(range(K))
    assert not [k for k in summary if k.startswith("test/")], "a CV run does not touch the test split"
    records = [json.loads(line) for line in (cv_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "cv/accuracy_per_fold" in r] == [16, 32, 48]


def test_rerunning_a_finished_cv_run_says_so_and_changes_nothing(cv_run: Path) -> None:
    """The rerun check reads a CV run's checkpoint with its fold axis (no shape mismatch)."""
    before = (cv_run / "summary.json").read_text()
    proc = run_train(*CV_RUN, f"hydra.run.dir={cv_run}")
    assert "is finished (step 48)" in proc.stdout, proc.stdout + proc.stderr
    assert (cv_run / "summary.json").read_text() == before


def test_one_fold_alone_is_that_replica_of_the_vmapped_run(cv_run: Path, tmp_path: Path) -> None:
    """``trainer.cv_fold=i`` (a job of a multirun) trains fold i on the same examples in the same order."""
    summary = json.loads((cv_run / "summary.json").read_text())
    run_dir = tmp_path / "fold2"
    run_dir.mkdir()
    overrides = [*SHORT, *TINY, "trainer.max_steps=48", f"trainer.cv_folds={K}", "trainer.cv_fold=2"]
    single = experiment.run(compose_train(overrides), run_dir)
    assert single["cv_fold"] == 2 and "cv/accuracy_per_fold" not in single
    assert single["cv/loss"] == pytest.approx(summary["cv/loss_per_fold"][2], rel=1e-4)
    assert single["cv/loss"] != pytest.approx(summary["cv/loss_per_fold"][1], rel=1e-4)


def test_refit_trains_on_the_whole_split_and_reports_test(tmp_path: Path) -> None:
    cfg = compose_train(
        [*SHORT, *TINY, "trainer.max_steps=16", "trainer.cv_folds=2", "trainer.cv_refit=true"]
    )
    summary = experiment.run(cfg, tmp_path)
    assert len(summary["cv/accuracy_per_fold"]) == 2 and 0 <= summary["test/accuracy"] <= 1
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["test/accuracy"] == summary["test/accuracy"] and "cv/accuracy" in saved
    refit = json.loads((tmp_path / "refit" / "summary.json").read_text())
    assert refit["test/accuracy"] == summary["test/accuracy"] and "cv_folds" not in refit


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.cv_folds=1"], "trainer.cv_folds must be an integer >= 2 or null, got 1"),
        ([f"trainer.cv_folds={K}", f"trainer.cv_fold={K}"], f"trainer.cv_fold={K} must be below"),
    ],
)
def test_a_bad_fold_setting_is_one_line_and_creates_nothing(
    overrides: list, message: str, run_dir: Path
) -> None:
    proc = run_train("+experiment=digits_mlp", *overrides, *TINY, f"hydra.run.dir={run_dir}", check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"cv_fold": 1}, "trainer.cv_fold needs trainer.cv_folds"),
        ({"cv_refit": True}, "trainer.cv_refit needs trainer.cv_folds"),
        ({"cv_folds": 3, "cv_fold": 1, "cv_refit": True}, "cv_refit follows all the folds"),
        ({"cv_folds": 3, "num_seeds": 2}, "does not combine with trainer.num_seeds"),
        ({"cv_folds": 400}, "trainer.cv_folds=400 exceeds the"),
    ],
)
def test_combinations_that_cannot_work_are_refused(digits, settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan(TrainerConfig(**settings), digits.dataset, seed=0)
    assert plan(TrainerConfig(), digits.dataset, seed=0) is None


def test_compare_groups_folds_like_seeds(tmp_path: Path) -> None:
    """A CV run contributes each fold; single-fold jobs differing only by cv_fold share its row."""

    def write(name: str, trainer: dict, summary: dict, lr: float = 1e-3) -> None:
        (tmp_path / name / ".hydra").mkdir(parents=True)
        config = {"seed": 0, "optimizer": {"learning_rate": lr}, "trainer": {"cv_folds": 5, **trainer}}
        (tmp_path / name / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))

    write("cv", {"cv_fold": None}, {"cv/accuracy": 0.9, "cv/accuracy_per_fold": [0.8, 0.85, 0.9, 0.95, 1.0]})
    write("fold0", {"cv_fold": 0}, {"cv/accuracy": 0.7})
    write("fold1", {"cv_fold": 1}, {"cv/accuracy": 0.75})
    write("other", {"cv_fold": None}, {"cv/accuracy": 0.5, "cv/accuracy_per_fold": [0.5, 0.5]}, lr=1e-2)
    header, rows = parse_table(compare.compare([tmp_path], metrics=["cv/accuracy"]))
    assert header[:4] == ["#", "optimizer.learning_rate", "metric", "n"]
    by_lr = {row["optimizer.learning_rate"]: row for row in rows}
    samples = np.array([0.8, 0.85, 0.9, 0.95, 1.0, 0.7, 0.75])
    assert by_lr["0.001"]["n"] == "7" and by_lr["0.001"]["mean"] == f"{samples.mean():.4g}"
    assert by_lr["0.001"]["std (ddof=1)"] == f"{samples.std(ddof=1):.2g}"
    assert by_lr["0.01"]["n"] == "2"
