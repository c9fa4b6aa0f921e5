"""Knowledge distillation (Hinton et al. 2015): a student classifier learns a trained teacher's soft targets.

The loss per example is ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``
for student logits ``s``, teacher logits ``t`` and temperature ``T``: the T^2 keeps the soft
term's gradients on the scale of the hard one's as T grows (the paper's section 2).

The teacher is a finished classifier run (``task.teacher.run``), opened read-only by the build
step's ``open_run`` (``research.experiment.open_saved``: its saved config rebuilt, the weights its
own evaluation used restored, the weight average when it kept one). Its model variables ride in
the state under ``teacher``: the compiled step computes the teacher's logits from them, but no
optimizer sees them, so they leave training as they came (and a resumed run restores them from
its own checkpoint). The teacher reads the raw batch through its own data transform (eval mode,
its own normalisation), so it scores the unaugmented image while the student sees its augmented
view; the student is any model of ``conf/model``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from research.engine.api import Classifier
from research.errors import ConfigError
from research.tasks.base import Batch, Metrics, State
from research.tasks.classification import ClassificationTask

TEACHER = "teacher"  # the state key of the teacher's variables
TEACHER_LOGITS = "teacher_logits"  # the batch field the step adds for the objective
TEACHER_KEYS = ("run", "checkpoint", "replica")


def soft_target_kl(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float) -> jax.Array:
    """Per-example KL(softmax(teacher / T) || softmax(student / T)), in nats."""
    log_p = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
    log_q = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


class DistillationTask(ClassificationTask):
    """``ClassificationTask`` whose loss mixes the teacher's soft targets with the labels."""

    def __init__(
        self,
        model: Callable[..., Any],
        make_optimizer: Callable[[int], Any],
        total_steps: int,
        dataset: Any,
        teacher: Mapping[str, Any],
        alpha: float,
        temperature: float,
        open_run: Callable[..., Any],
        label_smoothing: float = 0.0,
        top_k: tuple[int, ...] = (),
        precision: Any = None,
    ):
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"task.alpha={alpha} must lie in [0, 1] (the soft targets' weight)")
        if not temperature > 0:
            raise ConfigError(f"task.temperature={temperature} must be > 0 (1 leaves the logits as they are)")
        if set(teacher) != set(TEACHER_KEYS):
            raise ConfigError(
                f"task.teacher needs exactly the keys {list(TEACHER_KEYS)}, got {sorted(teacher)}"
            )
        super().__init__(model, make_optimizer, total_steps, dataset, label_smoothing, top_k, precision)
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.teacher_task, self.teacher_state = open_teacher(teacher, dataset, open_run)

    def init(self, rng: jax.Array, batch: Batch) -> State:
        return {**super().init(rng, batch), TEACHER: self.teacher_state}

    def train_step(self, state: State, batch: Batch) -> tuple[State, Metrics]:
        logits = self.teacher_task.logits(state[TEACHER], batch["image"])
        return super().train_step(state, {**batch, TEACHER_LOGITS: jax.lax.stop_gradient(logits)})

    def objective(self, model: Any, batch: Batch) -> tuple[jax.Array, Metrics]:
        logits = self.precision.cast_output(model(batch["image"]))
        kl = soft_target_kl(logits, batch[TEACHER_LOGITS], self.temperature)
        ce = self.loss(logits, batch["label"])
        loss = self.alpha * self.temperature**2 * kl + (1.0 - self.alpha) * ce
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return loss.mean(), {"accuracy": accuracy, "kl": kl.mean(), "ce": ce.mean()}


def open_teacher(teacher: Mapping[str, Any], dataset: Any, open_run: Callable[..., Any]) -> tuple[Any, State]:
    """The teacher run's task and the variables its logits need (replica ``teacher.replica`` of several),
    or one line when the run is missing, has no checkpoint, or scores other images or classes.
    """
    run = teacher["run"]
    hint = (
        "the run directory of a classifier trained on this data "
        "(e.g. python -m research.train +experiment=fashion_mnist_cnn)"
    )
    if not run:
        raise ConfigError(f"task.teacher.run is required: {hint}")
    if not (Path(str(run)).expanduser() / ".hydra" / "config.yaml").is_file():
        raise ConfigError(
            f"task.teacher.run={run} is not a run directory (no .hydra/config.yaml): give {hint}"
        )
    want_shape, want_classes = tuple(dataset.input_shape), list(dataset.class_names)

    def check(cfg: Any, built: Any) -> None:
        data = built.dataset
        if not isinstance(built.task, Classifier) or data is None or not data.num_classes:
            raise ConfigError(f"task.teacher.run={run} did not train an image classifier")
        shape, classes = tuple(data.input_shape), list(data.class_names)
        if shape != want_shape or classes != want_classes:
            raise ConfigError(
                f"task.teacher.run={run} was trained on {shape} images of {len(classes)} classes "
                f"({', '.join(classes)}); this run's are {want_shape} images of {len(want_classes)} "
                f"({', '.join(want_classes)}): distil from a teacher trained on the same data"
            )

    try:
        opened = open_run(
            run, checkpoint=str(teacher["checkpoint"]), replica=int(teacher["replica"]), check=check
        )
    except ConfigError as e:
        message = str(e)
        raise ConfigError(
            message if message.startswith("task.teacher") else f"task.teacher.run: {message}"
        ) from None
    task, state = opened.built.task, opened.state
    keep = (*task.reusable, "rng")  # what its eval-mode logits read; not its optimizer state
    return task, {k: state[k] for k in keep if k in state}
