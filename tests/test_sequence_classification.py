"""Sequence classification: the model gets only the arguments it takes; images are refused in one line."""

from __future__ import annotations

import functools

import numpy as np
import optax
import pytest

from research.data.arrays import make_dataset
from research.errors import ConfigError
from research.models.text import EmbedPool
from research.tasks.sequence_classification import SequenceClassificationTask


def data(fields: dict, shape: tuple) -> object:
    return make_dataset("toy", {s: fields for s in ("train", "val", "test")}, 4, 8, input_shape=shape,
                        num_classes=2, info={"vocab_size": 5})  # fmt: skip


def test_a_model_without_max_len_gets_only_its_own_arguments() -> None:
    tokens = np.ones((10, 6), np.int32)
    fields = {"tokens": tokens, "mask": np.ones((10, 6), np.float32), "label": np.zeros(10, np.int32)}
    model = functools.partial(EmbedPool, embed_dim=4, hidden_sizes=[], dropout=0.0)
    task = SequenceClassificationTask(model, lambda n: optax.sgd(0.1), 5, data(fields, (6,)))
    assert sorted(task.model_kwargs) == ["num_outputs", "vocab_size"]  # no max_len, no input_shape


def test_images_are_refused_in_one_line() -> None:
    fields = {"image": np.zeros((10, 4, 4, 1), np.float32), "label": np.zeros(10, np.int32)}
    with pytest.raises(ConfigError, match=r"reads field\(s\) \['tokens'\]"):
        SequenceClassificationTask(EmbedPool, lambda n: optax.sgd(0.1), 5, data(fields, (4, 4, 1)))
