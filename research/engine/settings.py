"""The trainer's settings: one typed schema, with every default, type and range in one place.

``conf/`` has no trainer YAML: ``research.config`` registers ``TrainerConfig`` as the
``trainer`` group's ``default`` (a Hydra structured config), so ``--cfg job`` shows these
values, recipes override them, and Hydra refuses a misspelt key or a wrong type while
composing. ``TrainerConfig.from_dict`` builds the same object from a plain dict (a saved
run's config, a notebook) with the same checks; every failure is one line naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from typing import Any

from research.errors import ConfigError

COMPILE_CACHE = f"{os.environ.get('XDG_CACHE_HOME', '~/.cache')}/research/jax"
POSITIVE_INT = (lambda v: v > 0, "a positive integer")
POSITIVE_INT_OR_NULL = (lambda v: v is None or v > 0, "a positive integer or null")
POSITIVE_OR_NULL = (lambda v: v is None or v > 0, "a positive number or null")


def _check(predicate: Any, requirement: str) -> dict:
    return {"check": (predicate, requirement)}


@dataclasses.dataclass
class CheckpointConfig:
    """Always saved at the end, on early stopping, preemption and Ctrl-C; and by these."""

    enabled: bool = True
    every: int | None = dataclasses.field(default=None, metadata=_check(*POSITIVE_INT_OR_NULL))  # steps
    every_s: float | None = dataclasses.field(  # seconds between checkpoints; null = by steps only
        default=600.0, metadata=_check(lambda v: v is None or v > 0, "a positive number of seconds or null")
    )
    # Best-k by early_stopping.metric, plus always the latest; the best state waits on device and
    # is written with the next checkpoint.
    keep_best: int = dataclasses.field(default=2, metadata=_check(*POSITIVE_INT))
    async_save: bool = True


@dataclasses.dataclass
class EarlyStoppingConfig:
    """Also the metric that picks the best checkpoint; null = the task's own (classification:
    val/accuracy, RL: eval/return, others: val/loss) and its mode.
    """

    metric: str | None = None
    mode: str | None = dataclasses.field(
        default=None, metadata=_check(lambda v: v in ("max", "min", None), "max, min or null")
    )
    # Validation passes without improvement before stopping; null = never stop.
    patience: int | None = dataclasses.field(default=None, metadata=_check(*POSITIVE_INT_OR_NULL))
    min_delta: float = 0.0


@dataclasses.dataclass
class InitFromConfig:
    """Start from another run's parameters (transfer learning, fine-tuning)."""

    path: str | None = None  # a run dir (its best checkpoint, else latest) or a checkpoint step dir
    include: list[str] = dataclasses.field(default_factory=lambda: [".*"])  # regexes on state paths
    exclude: list[str] = dataclasses.field(default_factory=list)  # ...kept at their fresh initialisation
    strict: bool = False  # true: a path whose shape differs is an error, not a re-initialisation


@dataclasses.dataclass
class FederatedConfig:
    """Federated training (``research/engine/federated.py``): the clients are the replicas of one
    program and a train step is a round; ``clients`` null = off. ``trainer.max_steps``, when set,
    caps the rounds (a debug run).
    """

    clients: int | None = dataclasses.field(default=None, metadata=_check(*POSITIVE_INT_OR_NULL))
    rounds: int = dataclasses.field(default=100, metadata=_check(*POSITIVE_INT))
    # Local training per round: a number of steps, or epochs of each client's own examples
    # (set one, the other null).
    local_steps: int | None = dataclasses.field(default=10, metadata=_check(*POSITIVE_INT_OR_NULL))
    local_epochs: float | None = dataclasses.field(default=None, metadata=_check(*POSITIVE_OR_NULL))
    clients_per_round: int | None = dataclasses.field(  # sampled each round; null = every client
        default=None, metadata=_check(*POSITIVE_INT_OR_NULL)
    )
    partition: str = dataclasses.field(
        default="iid", metadata=_check(lambda v: v in ("iid", "dirichlet"), "iid or dirichlet")
    )
    # Dirichlet concentration over labels (Hsu et al. 2019): small = each client sees few classes.
    alpha: float = dataclasses.field(
        default=0.5, metadata=_check(lambda v: v > 0, "a positive number (the Dirichlet concentration)")
    )
    algorithm: str = dataclasses.field(
        default="fedavg", metadata=_check(lambda v: v in ("fedavg", "fedprox"), "fedavg or fedprox")
    )
    mu: float = dataclasses.field(  # fedprox: mu/2 ||w - w_global||^2 on every local step
        default=0.01, metadata=_check(lambda v: v >= 0, "a number >= 0")
    )
    # The server's optax step on the averaged client delta: sgd at server_lr 1 is FedAvg, with
    # server_momentum FedAvgM;
    # adam/yogi with b1, b2 and eps (tau) are FedAdam/FedYogi (Reddi et al. 2021).
    server_optimizer: str = dataclasses.field(
        default="sgd", metadata=_check(lambda v: v in ("sgd", "adam", "yogi"), "sgd, adam or yogi")
    )
    server_lr: float = dataclasses.field(default=1.0, metadata=_check(lambda v: v > 0, "a positive number"))
    # sgd only: heavy-ball momentum on the server's step, FedAvgM (Hsu et al. 2019); null = none.
    server_momentum: float | None = dataclasses.field(
        default=None, metadata=_check(lambda v: v is None or 0 <= v < 1, "null or in [0, 1)")
    )
    server_b1: float = dataclasses.field(default=0.9, metadata=_check(lambda v: 0 <= v < 1, "in [0, 1)"))
    server_b2: float = dataclasses.field(default=0.99, metadata=_check(lambda v: 0 <= v < 1, "in [0, 1)"))
    server_eps: float = dataclasses.field(default=1e-3, metadata=_check(lambda v: v > 0, "a positive number"))
    # Examples of each client's own data that the global model is scored on (the fairness figure).
    client_eval_examples: int = dataclasses.field(default=512, metadata=_check(*POSITIVE_INT))


@dataclasses.dataclass
class TrainerConfig:
    """How long to train, when to log, evaluate and save, and how many replicas to train at once."""

    epochs: int = dataclasses.field(default=30, metadata=_check(*POSITIVE_INT))  # ignored with max_steps
    max_steps: int | None = dataclasses.field(default=None, metadata=_check(*POSITIVE_INT_OR_NULL))
    # Train steps compiled into one dispatch (lax.scan); on CPU meshes of several devices also the
    # most steps queued (they hang past ~32).
    steps_per_call: int = dataclasses.field(default=16, metadata=_check(*POSITIVE_INT))
    log_every: int = dataclasses.field(default=32, metadata=_check(*POSITIVE_INT))  # rounded up to a call
    eval_every: int | None = dataclasses.field(  # null = once per epoch
        default=None, metadata=_check(*POSITIVE_INT_OR_NULL)
    )
    checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
    early_stopping: EarlyStoppingConfig = dataclasses.field(default_factory=EarlyStoppingConfig)
    init_from: InitFromConfig = dataclasses.field(default_factory=InitFromConfig)
    resume: bool = True  # continue from the run directory's latest checkpoint if there is one
    # K > 1 trains K independent replicas (own init and data order) in one vmapped program.
    num_seeds: int = dataclasses.field(default=1, metadata=_check(*POSITIVE_INT))
    vmap_over: str | None = None  # optimizer.learning_rate: train a grid of it in the same program
    vmap_values: list[float] = dataclasses.field(default_factory=list)  # e.g. [1e-3,3e-3,1e-2]
    # k-fold cross-validation on the train split, the folds as the replicas of one program.
    cv_folds: int | None = dataclasses.field(
        default=None, metadata=_check(lambda v: v is None or v >= 2, "an integer >= 2 or null")
    )
    cv_fold: int | None = dataclasses.field(  # train and validate fold i alone
        default=None, metadata=_check(lambda v: v is None or v >= 0, "a fold index >= 0 or null")
    )
    cv_refit: bool = False  # after the folds: train on the whole train split and report test
    federated: FederatedConfig = dataclasses.field(default_factory=FederatedConfig)
    # XLA's persistent compilation cache: an identical run loads its programs; null = off.
    compile_cache: str | None = COMPILE_CACHE
    profile: bool = False  # a jax.profiler trace of the steps in profile_steps, in <run dir>/profile
    profile_steps: list[int] = dataclasses.field(default_factory=lambda: [16, 48])  # [start, stop)
    progress: bool = True  # tqdm bar with live loss and throughput
    plots: bool = True  # PNG learning curves and the task's images in plots/
    # The learning curves are redrawn at an evaluation once this long has passed since they
    # were last drawn (0: at every one; drawing takes ~0.2 s), and at the end.
    plots_every_s: float = dataclasses.field(default=30.0, metadata=_check(lambda v: v >= 0, "a number >= 0"))
    # Gradient, parameter and update norms per layer group at the log interval (research/watch.py).
    health: bool = True
    # Also check every step's gradients per layer group, so that a stop on a NaN loss names the
    # group whose gradient went non-finite first (one extra pass over the gradients a step:
    # +10-25% step time on small dense models, docs/benchmarks.md; without it the stop names the
    # step and says to rerun from the last checkpoint with this on).
    blame_nonfinite: bool = False
    # With optimizer.ema: the weights that validation, the best checkpoint and the reading commands
    # use; the final evaluation reports the other under <split>_<raw|ema>/.
    eval_weights: str = dataclasses.field(
        default="ema", metadata=_check(lambda v: v in ("ema", "raw"), "ema or raw")
    )
    # Programs compiled without LLVM's optimisations: 2-3x quicker to compile, slower to run.
    unoptimized: list[str] = dataclasses.field(
        default_factory=lambda: ["init"],
        metadata=_check(
            lambda v: set(v) <= {"init", "train", "eval"}, "a list of programs among init, train, eval"
        ),
    )

    # Peak TFLOP/s per device for train/mfu; null = the data sheet's (flops.PEAKS), else a
    # matmul measured once per process (the CPU).
    peak_tflops: float | None = dataclasses.field(default=None, metadata=_check(*POSITIVE_OR_NULL))
    # Build and compile the train and eval programs, print per-device memory, FLOPs per step
    # and compile time, and exit without creating a run directory (research/engine/plan.py).
    dry_run: bool = False
    # Device memory the plan checks the run against, GB per device; null = the device's own
    # where JAX reports it (GPUs, TPUs; a CPU reports none).
    device_memory_gb: float | None = dataclasses.field(default=None, metadata=_check(*POSITIVE_OR_NULL))
    # Plan for this many devices, emulated as CPU devices (jax_num_cpu_devices): the per-device
    # memory of a sharded layout without the machines; null = the devices present.
    dry_run_devices: int | None = dataclasses.field(default=None, metadata=_check(*POSITIVE_INT_OR_NULL))

    def __post_init__(self) -> None:
        validate(self, "trainer")

    @classmethod
    def from_dict(cls, values: dict) -> TrainerConfig:
        """The settings in ``values`` over the defaults; one ConfigError line for a bad key or value."""
        return _build(cls, values, "trainer")


def _build(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        names = ", ".join(f.name for f in dataclasses.fields(cls))
        first = dataclasses.fields(cls)[0].name
        raise ConfigError(
            f"{prefix} must be a group of settings ({names}), got {values!r}: set {prefix}.{first}=..."
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields), key=str)
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]} is not a setting: choose among {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        nested = hints[name]
        is_group = dataclasses.is_dataclass(nested)
        kwargs[name] = _build(nested, value, f"{prefix}.{name}") if is_group else value
    return cls(**kwargs)  # TrainerConfig checks every value, nested groups included


def validate(settings: Any, prefix: str) -> None:
    """Every field of ``settings`` has its declared type and passes its check, else one line."""
    hints = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        value, key = getattr(settings, f.name), f"{prefix}.{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            if not isinstance(value, hints[f.name]):
                raise ConfigError(f"{key} must be a group of settings, got {value!r}: set {key}.<key>=...")
            validate(value, key)
            continue
        predicate, requirement = f.metadata.get("check", (None, _describe(hints[f.name])))
        if not _has_type(value, hints[f.name]) or (predicate is not None and not predicate(value)):
            raise ConfigError(f"{key} must be {requirement}, got {value!r}")


def _has_type(value: Any, hint: Any) -> bool:
    """isinstance against a field's annotation (int | None, list[str], float also taking int)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_has_type(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    origin = typing.get_origin(hint) or hint
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, (list, tuple)) and all(item is Any or _has_type(v, item) for v in value)
    if isinstance(value, bool):
        return origin is bool
    if origin is float:
        return isinstance(value, (int, float))
    return isinstance(value, origin)


def _describe(hint: Any) -> str:
    """The words for a type in an error line."""
    if isinstance(hint, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    words = {bool: "true or false", int: "an integer", float: "a number", str: "text", type(None): "null"}
    return words.get(hint, "a list" if typing.get_origin(hint) is list else str(hint))


def total_steps(cfg: TrainerConfig, num_train: int | None, batch_size: int | None) -> int:
    """Train steps of the whole run: max_steps, or epochs over ``num_train`` examples."""
    if cfg.max_steps is not None:
        return int(cfg.max_steps)
    if num_train is None or not batch_size:
        raise ConfigError("trainer.max_steps must be set for tasks without a dataset")
    return int(cfg.epochs) * (num_train // batch_size)
