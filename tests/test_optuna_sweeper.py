"""The Optuna sweeper's parts without training: search space, per-trial seeds, the ask/launch/tell
cycle over a stand-in launcher (pruned, failed, NaN and interrupted trials), a job's trial opened
from the storage, and ``python -m research.study``'s table and plots."""

from __future__ import annotations

import math

import optuna
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from research import study as study_cli
from research.errors import ConfigError, NonFiniteLossError, TrialPruned
from research.sweep import trial as job_trial
from research.sweep.sampler import SeedPerTrial
from research.sweep.search import Search
from research.sweep.space import check_search, encode, split_arguments
from research.sweep.storage import sqlite_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
STUDY = "toy"


def sweeper_cfg(storage, **changes):
    cfg = {
        "study_name": STUDY,
        "storage": str(storage) if storage else None,
        "direction": "maximize",
        "n_trials": 6,
        "n_jobs": 1,
        "max_resamples": 4,
        "sampler": {"_target_": "optuna.samplers.RandomSampler", "seed": 0},
        "pruner": {"_target_": "optuna.pruners.NopPruner"},
        "params": {"x": "interval(0.0, 1.0)"},
    }
    return OmegaConf.create({**cfg, **changes})


class StandInLauncher:
    """Runs each job here as ``objective(params, trial)``, returning what Hydra's launcher would."""

    def __init__(self, objective, interrupt_at: int | None = None):
        self.objective, self.interrupt_at, self.jobs = objective, interrupt_at, []

    def launch(self, job_overrides, initial_job_idx):
        returns = []
        for overrides in job_overrides:
            self.jobs.append(list(overrides))
            values = dict(o.split("=", 1) for o in overrides)
            number = int(values.pop(f"++{job_trial.TRIAL_KEY}"))
            assert values.pop("hydra.sweep.subdir") == str(number)
            if number == self.interrupt_at:
                raise KeyboardInterrupt
            ret = JobReturn(overrides=list(overrides))
            try:
                ret.return_value = self.objective(
                    {k: float(v) for k, v in values.items()}, job_trial.LIVE[(STUDY, number)]
                )
                ret.status = JobStatus.COMPLETED
            except Exception as e:  # noqa: BLE001 - as Hydra's run_job keeps it
                ret.return_value, ret.status = e, JobStatus.FAILED
            returns.append(ret)
        return returns


def test_search_space_comes_from_config_and_command_line():
    params = {
        "lr": "tag(log, interval(1e-4, 1e-1))",
        "width": "choice(16, 32)",
        "model": {"depth": "range(1, 4)"},
    }
    space, fixed = split_arguments(
        params, ["lr=interval(0.1, 0.2)", "seed=3", "layers=tag(log, int(interval(1, 64)))"]
    )
    assert space["lr"] == FloatDistribution(0.1, 0.2)  # the command line replaces the config's range
    assert space["width"] == CategoricalDistribution([16, 32])
    assert space["model.depth"] == IntDistribution(1, 3)  # hydra.sweeper.params.model.depth=... nests the key
    assert space["layers"] == IntDistribution(1, 64, log=True)
    assert fixed == ["seed=3"]
    parser = OverridesParser.create()
    for value in (0.001, 16, "relu", True, None, "two words", "it's"):
        assert parser.parse_override(f"k={encode(value)}").value() == value


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"direction": "up"}, "hydra.sweeper.direction must be maximize or minimize, got 'up'"),
        ({"n_trials": 0}, "hydra.sweeper.n_trials must be an integer >= 1, got 0"),
        ({"params": {}}, "an Optuna search needs hydra.sweeper.params"),
        ({"params": {"x": "3"}}, "an Optuna search needs hydra.sweeper.params"),
        (
            {"pruner": {"_target_": "optuna.pruners.Nope"}},
            "hydra.sweeper.pruner._target_='optuna.pruners.Nope'",
        ),
    ],
)
def test_a_bad_search_config_is_one_clear_error(change, message):
    with pytest.raises(
        ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        check_search(sweeper_cfg(None, **change))


def _ask_params(study, space):
    trial = study.ask(space)
    study.tell(trial, 0.0)
    return trial.number, trial.params["x"]


def test_each_trial_seeds_its_sampler_so_workers_differ_and_reruns_repeat(tmp_path):
    space = {"x": FloatDistribution(0.0, 1.0)}

    def worker(storage):  # a process of its own: its own sampler, seeded like every other
        sampler = SeedPerTrial(lambda s: optuna.samplers.RandomSampler(seed=s), 0)
        return optuna.create_study(study_name=STUDY, storage=storage, sampler=sampler, load_if_exists=True)

    shared = sqlite_storage(tmp_path / "shared.db")
    a, b = worker(shared), worker(shared)
    drawn = dict(_ask_params(w, space) for _ in range(3) for w in (a, b))
    assert sorted(drawn) == list(range(6)) and len(set(drawn.values())) == 6

    alone = worker(sqlite_storage(tmp_path / "alone.db"))
    assert dict(_ask_params(alone, space) for _ in range(6)) == drawn  # trial k: seed + k, whoever asks


def _objective(params, trial):
    """x < 0.3 diverges, x < 0.45 returns NaN; others reach x, reported at 4 evaluations."""
    x = params["x"]
    if x < 0.3:
        raise NonFiniteLossError("loss became nan at step 3")
    if x < 0.45:
        return math.nan
    for step in range(1, 5):
        trial.report(x * step / 4, step)
        if trial.should_prune():
            raise TrialPruned(f"pruned at step {step}")
    return x


def test_failed_nan_and_pruned_trials_are_recorded_and_the_search_goes_on(tmp_path):
    cfg = sweeper_cfg(
        tmp_path / "study.db",
        n_trials=12,
        pruner={"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2},
    )
    study = Search(cfg, StandInLauncher(_objective), tmp_path).run([])
    states = {t.number: t.state for t in study.trials}
    assert len(states) == 12 and TrialState.RUNNING not in states.values()
    for t in study.trials:
        x = t.params["x"]
        if x < 0.45:
            assert t.state == TrialState.FAIL
        else:
            assert t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert {TrialState.FAIL, TrialState.COMPLETE, TrialState.PRUNED} <= set(states.values())
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert results["best_value"] == max(t.value for t in complete) and math.isfinite(results["best_value"])
    assert results["best_params"] == study.best_params


def test_rerunning_continues_the_study_and_an_interrupted_trial_is_failed(tmp_path):
    cfg = sweeper_cfg(tmp_path / "study.db", n_trials=4)
    with pytest.raises(KeyboardInterrupt):
        Search(cfg, StandInLauncher(lambda p, t: p["x"], interrupt_at=2), tmp_path).run([])
    first = optuna.load_study(study_name=STUDY, storage=sqlite_storage(tmp_path / "study.db"))
    assert [t.state for t in first.trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL]

    launcher = StandInLauncher(lambda p, t: p["x"])
    study = Search(cfg, launcher, tmp_path).run([])
    assert [t.number for t in study.trials] == list(range(7))  # 3 earlier, 4 more
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 6
    assert len(launcher.jobs) == 4


def test_a_repeated_proposal_is_asked_again_and_an_exhausted_space_stops(tmp_path):
    cfg = sweeper_cfg(tmp_path / "study.db", n_trials=5, params={"x": "choice(1, 2)"})
    launcher = StandInLauncher(lambda p, t: p["x"])
    study = Search(cfg, launcher, tmp_path).run([])
    ran = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["x"] for t in ran) == [1, 2] and len(launcher.jobs) == 2
    duplicates = [t for t in study.trials if t.state == TrialState.FAIL]
    assert duplicates and all(t.user_attrs["duplicate_of"] in {r.number for r in ran} for t in duplicates)


def test_a_job_in_another_process_opens_its_trial_and_the_configured_pruner(tmp_path):
    cfg = sweeper_cfg(
        tmp_path / "study.db", pruner={"_target_": "optuna.pruners.ThresholdPruner", "lower": 0.5}
    )
    sweeping = Search(cfg, None, tmp_path).open_study()
    asked = sweeping.ask({"x": FloatDistribution(0.0, 1.0)})

    trial = job_trial.open_trial(cfg, asked.number)  # what a Slurm job does with its hydra.sweeper config
    trial.report(0.9, 10)
    assert not trial.should_prune()
    trial.report(0.1, 20)
    assert trial.should_prune()
    stored = optuna.load_study(study_name=STUDY, storage=sqlite_storage(tmp_path / "study.db")).trials[0]
    assert stored.intermediate_values == {10: 0.9, 20: 0.1}

    with pytest.raises(ConfigError, match="set hydra.sweeper.storage"):
        job_trial.open_trial(sweeper_cfg(None), 0)


def _toy_study(path):
    study = optuna.create_study(
        study_name=STUDY,
        storage=sqlite_storage(path / "study.db"),
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    for _ in range(8):
        trial = study.ask(
            {"lr": FloatDistribution(1e-4, 1e-1, log=True), "act": CategoricalDistribution(["relu", "tanh"])}
        )
        trial.set_user_attr("run_dir", f"runs/{trial.number}")
        for step in (10, 20):
            trial.report(trial.params["lr"] * step, step)
        study.tell(trial, state=TrialState.PRUNED) if trial.number % 3 == 2 else study.tell(
            trial, trial.params["lr"]
        )
    return study


def test_study_command_prints_the_best_trials_and_writes_plots(tmp_path, capsys):
    study = _toy_study(tmp_path)
    (tmp_path / "2026-01-01_00-00-00").mkdir()
    study_cli.main([str(tmp_path / "2026-01-01_00-00-00"), "--top", "3"])  # a sweep folder inside the study's
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "study toy: 8 trials (6 complete, 2 pruned), maximize"
    best = study.best_trial
    assert (
        f"| {best.number} | {best.value:.4g} | {best.params['act']} | {best.params['lr']:.4g} "
        f"| runs/{best.number} |" in out
    )
    assert sum(line.startswith("| ") and line[2].isdigit() for line in out.splitlines()) == 3
    for name in study_cli.PLOTS:
        png = tmp_path / "study" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_study_command_without_a_study_fails_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        study_cli.main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: no study.db in {tmp_path} or above it: pass the study's folder or its study.db"
    )
