"""make_optimizer: every optimizer and schedule config, and each framework key doing its job."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research.config import compose_train
from research.errors import ConfigError
from research.optim import make_optimizer, make_schedule

ADAM = {"_target_": "optax.adam", "learning_rate": 1e-3}


def optimizer_cfg(name: str, *overrides: str):
    """The optimizer node as the training config composes it (constant schedule unless overridden)."""
    schedule = (
        [] if any(o.startswith("optimizer/schedule=") for o in overrides) else ["optimizer/schedule=constant"]
    )
    return compose_train([f"optimizer={name}", *schedule, *overrides]).optimizer


def regression_problem(n: int = 64, dim: int = 4):
    x = jax.random.normal(jax.random.PRNGKey(0), (n, dim))
    w_true = jnp.arange(1.0, dim + 1)
    return x, x @ w_true


def mse(w, x, y):
    return 0.5 * jnp.mean((x @ w - y) ** 2)


def run(tx: optax.GradientTransformation, params, grad_fn, steps: int):
    """``steps`` updates of ``params`` in one compiled scan."""

    def body(carry, _):
        p, s = carry
        updates, s = tx.update(grad_fn(p), s, p)
        return (optax.apply_updates(p, updates), s), None

    (params, _), _ = jax.jit(lambda p: jax.lax.scan(body, (p, tx.init(p)), None, length=steps))(params)
    return params


TOTAL = 200  # optimizer updates of the run in the tests below
# Each config group's optimizer as optax builds it, with the group's documented settings.
OPTAX_OPTIMIZERS = {
    "sgd": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=False),
    "adam": lambda lr: optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8),
    "adamw": lambda lr: optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4),
    "rmsprop": lambda lr: optax.rmsprop(lr, decay=0.9, eps=1e-8, momentum=None, centered=False),
}
# Each schedule config at learning rate ``lr`` over TOTAL updates, as optax builds it.
OPTAX_SCHEDULES = {
    "constant": lambda lr: optax.constant_schedule(lr),
    # warmup_steps: 0.05 of the run
    "warmup_cosine": lambda lr: optax.warmup_cosine_decay_schedule(0.0, lr, TOTAL // 20, TOTAL, 0.0),
    "linear": lambda lr: optax.linear_schedule(lr, 0.0, TOTAL),
    "step": lambda lr: optax.exponential_decay(lr, 1000, 0.1, staircase=True),
    "multistep": lambda lr: optax.piecewise_constant_schedule(lr, {TOTAL // 2: 0.1, TOTAL * 3 // 4: 0.1}),
}


@pytest.mark.parametrize("name", sorted(OPTAX_OPTIMIZERS))
def test_each_optimizer_makes_the_updates_of_optax_itself(name):
    """The first updates (through a warmup, so each one uses another learning rate) on a regression."""
    cfg = optimizer_cfg(name, "optimizer/schedule=warmup_cosine")
    lr = float(cfg.learning_rate)
    ours = make_optimizer(cfg, total_updates=TOTAL)
    theirs = OPTAX_OPTIMIZERS[name](OPTAX_SCHEDULES["warmup_cosine"](lr))
    x, y = regression_problem()
    grad = lambda w: jax.grad(mse)(w, x, y)
    w_ours = w_theirs = jnp.zeros(x.shape[1])
    s_ours, s_theirs = ours.init(w_ours), theirs.init(w_theirs)
    for _ in range(15):
        u_ours, s_ours = ours.update(grad(w_ours), s_ours, w_ours)
        u_theirs, s_theirs = theirs.update(grad(w_theirs), s_theirs, w_theirs)
        w_ours, w_theirs = optax.apply_updates(w_ours, u_ours), optax.apply_updates(w_theirs, u_theirs)
        np.testing.assert_allclose(w_ours, w_theirs, rtol=1e-6, atol=1e-9)
    assert float(jnp.abs(w_ours).max()) > 0


@pytest.mark.parametrize("schedule", sorted(OPTAX_SCHEDULES))
def test_each_schedule_gives_the_values_of_optax_itself(schedule):
    cfg = optimizer_cfg("sgd", f"optimizer/schedule={schedule}")
    steps = jnp.concatenate(
        [jnp.arange(TOTAL + 10), jnp.array([999, 1000, 2000, 2500])]
    )  # step: x0.1 per 1000
    ours = make_schedule(cfg, total_updates=TOTAL)(steps)
    theirs = OPTAX_SCHEDULES[schedule](float(cfg.learning_rate))(steps)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)


def test_null_run_lengths_are_filled_with_the_run_and_accumulation_shortens_it():
    cfg = optimizer_cfg("adam", "optimizer/schedule=warmup_cosine", "optimizer.schedule.warmup_steps=10")
    schedule = make_schedule(cfg, total_updates=100)
    assert float(schedule(10)) == pytest.approx(1e-3)  # peak from ${..learning_rate}
    assert float(schedule(55)) == pytest.approx(0.5e-3, rel=1e-3)  # halfway through the cosine
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-9)
    # With accumulation, make_optimizer's schedule spans the real updates: 100 calls = 25 updates.
    assert make_schedule(cfg, total_updates=100 // 4)(25) == pytest.approx(0.0, abs=1e-9)


def test_multistep_drops_at_fractions_of_the_run_and_checks_its_milestones():
    cfg = optimizer_cfg("sgd", "optimizer/schedule=multistep", "optimizer.learning_rate=0.1")
    schedule = make_schedule(cfg, total_updates=64_000)  # ResNet's 64k iterations: drops at 32k and 48k
    values = [float(schedule(s)) for s in (0, 31_999, 32_000, 47_999, 48_000, 63_999)]
    assert values == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    short = make_schedule(cfg, total_updates=3)  # both milestones round to step 2: both drops apply
    assert [float(short(s)) for s in range(3)] == pytest.approx([0.1, 0.1, 0.001])
    bad = optimizer_cfg("sgd", "optimizer/schedule=multistep", "optimizer.schedule.milestones=[0.75,0.5]")
    with pytest.raises(ConfigError, match="optimizer.schedule.milestones"):
        make_schedule(bad, total_updates=100)


def test_warmup_longer_than_the_run_is_a_clear_error():
    cfg = optimizer_cfg("adam", "optimizer/schedule=warmup_cosine", "optimizer.schedule.warmup_steps=100")
    with pytest.raises(ConfigError, match="warmup_steps=100 must be below decay_steps=64"):
        make_optimizer(cfg, total_updates=64)


def test_clip_norm_bounds_the_update_norm():
    cfg = {"_target_": "optax.sgd", "learning_rate": 1.0, "clip_norm": 0.5}
    tx = make_optimizer(cfg, total_updates=1)
    params = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
    grads = {"a": jnp.full(3, 10.0), "b": jnp.full((2, 2), -7.0)}
    updates, _ = tx.update(grads, tx.init(params), params)
    assert float(optax.global_norm(updates)) == pytest.approx(0.5, rel=1e-5)
    small = jax.tree.map(lambda g: g * 1e-3, grads)
    updates, _ = tx.update(small, tx.init(params), params)
    assert float(optax.global_norm(updates)) == pytest.approx(float(optax.global_norm(small)), rel=1e-5)


def test_coupled_l2_and_decoupled_weight_decay_differ_as_expected():
    """With no loss gradient, Adam normalises an L2 gradient to ~lr per step whatever the weight,
    while AdamW shrinks the weight by the factor (1 - lr * wd) per step; with SGD, L2 is weight decay."""
    lr, strength, steps, w0 = 0.1, 0.1, 10, jnp.array([100.0])
    zero_grad = lambda w: jnp.zeros_like(w)
    adam_l2 = make_optimizer({"_target_": "optax.adam", "learning_rate": lr, "l2": strength}, steps)
    adamw = make_optimizer({"_target_": "optax.adamw", "learning_rate": lr, "weight_decay": strength}, steps)
    sgd_l2 = make_optimizer({"_target_": "optax.sgd", "learning_rate": lr, "l2": strength}, steps)
    assert float(run(adam_l2, w0, zero_grad, steps)[0]) == pytest.approx(100.0 - steps * lr, abs=1e-3)
    decayed = 100.0 * (1 - lr * strength) ** steps
    assert float(run(adamw, w0, zero_grad, steps)[0]) == pytest.approx(decayed, rel=1e-5)
    assert float(run(sgd_l2, w0, zero_grad, steps)[0]) == pytest.approx(decayed, rel=1e-5)


def test_l1_pushes_small_weights_to_zero():
    target = jnp.array([3.0, 0.05, -0.04])
    grad = lambda w: w - target  # of 0.5 * |w - target|^2
    cfg = {"_target_": "optax.sgd", "learning_rate": 0.01}
    plain = run(make_optimizer(cfg, 1000), jnp.ones(3), grad, 1000)
    sparse = run(make_optimizer({**cfg, "l1": 0.1}, 1000), jnp.ones(3), grad, 1000)
    np.testing.assert_allclose(plain, target, atol=1e-3)
    # Soft-thresholding: the big weight shrinks by l1, weights below l1 end at ~0.
    assert float(sparse[0]) == pytest.approx(2.9, abs=1e-3)
    assert np.all(np.abs(sparse[1:]) < 2e-3)


def test_accumulating_k_micro_batches_equals_one_step_on_the_big_batch():
    x, y = regression_problem(n=8)
    grad = lambda w, xb, yb: jax.grad(mse)(w, xb, yb)
    cfg = {"_target_": "optax.sgd", "learning_rate": 0.1, "momentum": 0.9}
    w0 = jnp.zeros(x.shape[1])

    big = make_optimizer(cfg, total_updates=1)
    updates, _ = big.update(grad(w0, x, y), big.init(w0), w0)
    expected = optax.apply_updates(w0, updates)

    tx = make_optimizer({**cfg, "accumulate_steps": 4}, total_updates=4)
    w, state = w0, tx.init(w0)
    for i in range(4):
        updates, state = tx.update(grad(w, x[2 * i : 2 * i + 2], y[2 * i : 2 * i + 2]), state, w)
        w = optax.apply_updates(w, updates)
        if i < 3:
            np.testing.assert_array_equal(w, w0)  # no update before the k-th micro-batch
    np.testing.assert_allclose(w, expected, rtol=1e-5, atol=1e-7)


def test_freeze_leaves_matched_params_bit_identical():
    params = {"encoder": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}, "head": {"kernel": jnp.ones(2)}}
    cfg = {"_target_": "optax.adamw", "learning_rate": 0.1, "l2": 0.1, "freeze": ["^encoder/"]}
    tx = make_optimizer(cfg, total_updates=3)
    new = run(tx, params, lambda p: jax.tree.map(jnp.ones_like, p), steps=3)
    np.testing.assert_array_equal(new["encoder"]["kernel"], params["encoder"]["kernel"])
    np.testing.assert_array_equal(new["encoder"]["bias"], params["encoder"]["bias"])
    assert not np.allclose(new["head"]["kernel"], params["head"]["kernel"])


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({**ADAM, "learning_rate": -1e-3}, "optimizer.learning_rate must be > 0"),
        ({**ADAM, "_target_": "optax.adamm"}, "optimizer._target_='optax.adamm' cannot be imported"),
        ({**ADAM, "beta": 0.9}, "unexpected keyword argument 'beta'"),
        ({**ADAM, "clip_norm": 0}, "optimizer.clip_norm must be > 0"),
        ({**ADAM, "l2": -1}, "optimizer.l2 must be >= 0"),
        ({**ADAM, "accumulate_steps": 0}, "accumulate_steps"),
        ({**ADAM, "freeze": ["("]}, "invalid regex"),
        ({**ADAM, "schedule": {"_target_": "optax.nope"}}, "optimizer.schedule._target_"),
    ],
)
def test_bad_values_raise_one_line_config_errors(cfg, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as info:
        make_optimizer(cfg, total_updates=10)
    assert "\n" not in str(info.value)


def test_freeze_pattern_that_matches_nothing_is_an_error():
    tx = make_optimizer({"_target_": "optax.sgd", "learning_rate": 0.1, "freeze": ["decoder"]}, 1)
    with pytest.raises(ConfigError, match="'decoder' matches no parameter"):
        tx.init({"encoder": {"kernel": jnp.ones(2)}})


PARAMS = {"backbone": {"kernel": jnp.ones((2, 2))}, "head": {"kernel": jnp.ones(2)}}
ONES = lambda p: jax.tree.map(jnp.ones_like, p)  # noqa: E731


def test_a_group_at_a_tenth_of_the_rate_moves_a_tenth_as_far():
    """SGD's update is lr * gradient: the backbone group's lr_scale 0.1 gives a tenth of the head's step."""
    cfg = {
        "_target_": "optax.sgd",
        "learning_rate": 0.5,
        "groups": {"body": {"params": "^backbone/", "lr_scale": 0.1}},
    }
    new = run(make_optimizer(cfg, total_updates=2), PARAMS, ONES, steps=2)
    np.testing.assert_allclose(1 - new["backbone"]["kernel"], 2 * 0.05, rtol=1e-6)
    np.testing.assert_allclose(1 - new["head"]["kernel"], 2 * 0.5, rtol=1e-6)


def test_a_group_with_its_own_schedule_and_gradual_unfreezing():
    schedule = {
        "_target_": "optax.linear_schedule",
        "init_value": 0.2,
        "end_value": 0.0,
        "transition_steps": 4,
    }
    body = {"params": "backbone", "learning_rate": 0.2, "schedule": schedule, "unfreeze_at": 0.5}
    cfg = {"_target_": "optax.sgd", "learning_rate": 0.1, "freeze": ["^head/"], "groups": {"body": body}}
    tx = make_optimizer(cfg, total_updates=4)
    state = tx.init(PARAMS)
    steps = []
    for _ in range(4):
        updates, state = tx.update(ONES(PARAMS), state, PARAMS)
        steps.append(float(-updates["backbone"]["kernel"][0, 0]))
        assert float(updates["head"]["kernel"][0]) == 0.0  # frozen wins over every group
    # Held at 0 for the first half of the run, then the group's own linear schedule from where it is.
    np.testing.assert_allclose(steps, [0.0, 0.0, 0.1, 0.05], rtol=1e-6)


@pytest.mark.parametrize(
    "groups, message",
    [
        ({"body": {"lr_scale": 0.1}}, "optimizer.groups.body needs a params regex"),
        ({"body": {"params": "backbone", "lr": 0.1}}, "unknown keys"),
        ({"body": {"params": "backbone", "lr_scale": 0}}, "lr_scale=0 must be a number > 0"),
        ({"body": {"params": "backbone", "unfreeze_at": 1.5}}, "unfreeze_at=1.5 must be a fraction"),
        ({"body": {"params": "("}}, "invalid regex"),
    ],
)
def test_bad_groups_are_one_line_config_errors(groups, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as info:
        make_optimizer({"_target_": "optax.sgd", "learning_rate": 0.1, "groups": groups}, 4)
    assert "\n" not in str(info.value)


def test_a_group_rate_under_a_top_level_schedule_and_a_group_matching_nothing_are_errors():
    cfg = {**ADAM, "schedule": {"_target_": "optax.constant_schedule", "value": 1e-3},
           "groups": {"body": {"params": "backbone", "learning_rate": 1e-4}}}  # fmt: skip
    with pytest.raises(ConfigError, match="groups.body.learning_rate needs a schedule of its own"):
        make_optimizer(cfg, 4)
    tx = make_optimizer({**ADAM, "groups": {"body": {"params": "decoder", "lr_scale": 0.1}}}, 4)
    with pytest.raises(ConfigError, match="groups.body.params 'decoder' matches no parameter"):
        tx.init(PARAMS)
