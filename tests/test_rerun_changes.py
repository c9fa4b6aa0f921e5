"""What a rerun into an existing run directory reports as changed settings."""

from __future__ import annotations

from research import rerun


def test_a_trainer_setting_added_since_the_run_was_saved_is_no_change_at_its_default() -> None:
    saved = {"trainer": {"epochs": 3, "checkpoint": {"keep": 2}}, "optimizer": {"lr": 0.1}}
    now = rerun.with_setting_defaults(saved)
    assert now["trainer"]["epochs"] == 3 and now["trainer"]["checkpoint"]["keep"] == 2
    new = {**now, "trainer": {**now["trainer"], "epochs": 5}}
    assert rerun.config_changes(rerun.with_setting_defaults(saved), new) == ["trainer.epochs: 3 -> 5"]
    assert "trainer.health" in " ".join(rerun.config_changes(saved, new))  # what was reported before


def test_a_new_setting_set_away_from_its_default_is_a_change() -> None:
    saved = {"trainer": {"epochs": 3}}
    new = rerun.with_setting_defaults(saved)
    new = {**new, "trainer": {**new["trainer"], "log_every": 7}}
    assert rerun.config_changes(rerun.with_setting_defaults(saved), new) == ["trainer.log_every: 32 -> 7"]


def test_a_weight_average_setting_added_since_the_run_was_saved_is_no_change_at_its_default() -> None:
    """``optimizer.ema.every`` (and a GAN generator's) came after runs that averaged every step."""
    saved = {"optimizer": {"ema": {"decay": 0.999, "debias": True}}}
    today = {"optimizer": {"ema": {"decay": 0.999, "debias": True, "every": "step"}}}
    assert rerun.config_changes(saved, today) == ["optimizer.ema.every: <absent> -> step"]  # before
    assert rerun.config_changes(rerun.with_setting_defaults(saved), today) == []
    gan = {"task": {"optimizers": {"generator": {"ema": {"decay": None, "debias": True}}}}}
    gan_today = {
        "task": {"optimizers": {"generator": {"ema": {"decay": None, "debias": True, "every": "step"}}}}
    }
    assert rerun.config_changes(rerun.with_setting_defaults(gan), gan_today) == []
    per_call = {"optimizer": {"ema": {"decay": 0.999, "debias": True, "every": "call"}}}
    assert rerun.config_changes(rerun.with_setting_defaults(saved), per_call) == [
        "optimizer.ema.every: step -> call"
    ]
