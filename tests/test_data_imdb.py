"""imdb_reviews through TFDS (mocked): a word vocabulary from train only, truncation, masks, the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from omegaconf import OmegaConf

from research.data import text_classification
from research.data.splits import carve_validation
from research.data.text import from_info
from research.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parent.parent
NUM_TRAIN = 40


def config(data_dir: Path, **overrides) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/data/imdb_reviews.yaml"))
    del cfg["_target_"]
    small = {"vocab_size": 1000, "max_length": 12, "batch_size": 4, "eval_batch_size": 8}
    return {**cfg, "data_dir": str(data_dir), **small, **overrides}


def reviews() -> dict[str, list[dict]]:
    """Train review i says ``word{i}`` (so a word of a val review is in no other); test adds unseen words."""
    train = [
        {"text": f"Great<br />film word{i} , truly {'long ' * (i % 3) * 10}end", "label": i % 2}
        for i in range(NUM_TRAIN)
    ]
    test = [{"text": "great film zebra quokka end", "label": 1}, {"text": "truly", "label": 0}]
    return {"train": train, "test": test}


def mocked(records: dict[str, list[dict]]):
    def as_data_source(self, split, **kwargs):
        return {ours: records[theirs] for ours, theirs in split.items()}

    return tfds.testing.mock_data(as_data_source_fn=as_data_source)


def load(data_dir: Path, records: dict | None = None, **overrides):
    with mocked(records or reviews()):
        return text_classification.load(**config(data_dir, **overrides))


def test_fields_shapes_and_the_vocabulary_of_the_training_examples_only(tmp_path: Path) -> None:
    ds = load(tmp_path, truncate_from="end")  # keeps each review's start: word{i} is token 2
    train, val = carve_validation(NUM_TRAIN, 0.1, seed=0)
    assert [ds.splits[s].num_examples for s in ("train", "val", "test")] == [len(train), len(val), 2]
    assert (ds.input_shape, ds.num_classes, ds.class_names) == ((12,), 2, ["neg", "pos"])
    for split in ("train", "val", "test"):
        a = ds.splits[split].arrays()
        assert a["tokens"].dtype == np.int32 and a["tokens"].shape[1:] == (12,)
        assert a["mask"].dtype == np.float32 and a["label"].dtype == np.int32
        assert np.array_equal(a["mask"] > 0, a["tokens"] != ds.info["pad_id"])
    vocab = ds.info["vocab"]
    assert vocab[:2] == ["[PAD]", "[UNK]"] and ds.info["vocab_size"] == len(vocab)
    assert {f"word{i}" for i in train} <= set(vocab)
    assert not {f"word{i}" for i in val} & set(vocab)  # val reviews never trained the tokenizer
    assert "<" not in vocab and "great" in vocab and "Great" not in vocab  # <br /> dropped, lower-cased
    val_tokens = ds.splits["val"].arrays()["tokens"]
    assert (val_tokens[:, 2] == ds.info["unk_id"]).all()  # "great film word<val>": unknown


def test_an_unknown_word_maps_to_the_unknown_id_and_the_tokenizer_rebuilds(tmp_path: Path) -> None:
    ds = load(tmp_path)
    tokenizer = from_info(ds.info)
    test = ds.splits["test"].arrays()
    ids = tokenizer.encode("great film zebra quokka end").ids
    assert ids[2:4] == [ds.info["unk_id"]] * 2
    assert test["tokens"][0, :5].tolist() == ids and test["mask"][0].tolist() == [1.0] * 5 + [0.0] * 7
    assert ds.info["unknown_fraction"]["test"] == pytest.approx(2 / 6)


@pytest.mark.parametrize(("truncate_from", "kept"), [("start", "last"), ("end", "first")])
def test_a_long_review_keeps_its_last_or_first_max_length_tokens(truncate_from, kept, tmp_path: Path) -> None:
    records = reviews()
    long_text = " ".join(f"word{i}" for i in range(30))  # 30 training words, all in the vocabulary
    records["test"] = [{"text": long_text, "label": 0}]
    ds = load(tmp_path, records, truncate_from=truncate_from, val_fraction=0.025)
    words = ds.info["vocab"]
    row = ds.splits["test"].arrays()["tokens"][0]
    decoded = [words[i] for i in row]
    expected = long_text.split()[-12:] if kept == "last" else long_text.split()[:12]
    assert [w if w != "[UNK]" else None for w in decoded] == [w if w in words else None for w in expected]
    assert ds.splits["test"].arrays()["mask"][0].all()
    assert ds.info["truncated_fraction"]["test"] == 1.0


def test_pad_or_truncate_rule_directly() -> None:
    tokens, mask = text_classification.pad_or_truncate([[5, 6, 7, 8], [9]], 3, "start")
    assert tokens.tolist() == [[6, 7, 8], [9, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    tokens, _ = text_classification.pad_or_truncate([[5, 6, 7, 8]], 3, "end")
    assert tokens.tolist() == [[5, 6, 7]]


def test_the_second_load_reads_the_cache_and_new_settings_get_a_new_one(tmp_path: Path, monkeypatch) -> None:
    first = load(tmp_path)
    cache = Path(first.info["cache_dir"])
    assert (cache / "arrays.npz").is_file() and (cache / "tokenizer.json").is_file()

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(text_classification, "_tokenize", no_tokenizing)
    again = load(tmp_path)
    assert again.info["cache_dir"] == str(cache)
    assert np.array_equal(again.splits["train"].arrays()["tokens"], first.splits["train"].arrays()["tokens"])
    monkeypatch.undo()
    other = load(tmp_path, max_length=20)
    assert other.info["cache_dir"] != str(cache) and other.splits["test"].arrays()["tokens"].shape == (2, 20)


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"truncate_from": "middle"}, ConfigError, "data.truncate_from"),
        ({"vocab_size": 2}, ConfigError, "data.vocab_size"),
        ({"max_length": 0}, ConfigError, "data.max_length"),
        ({"batch_size": 1000}, ConfigError, "data.batch_size=1000 exceeds"),
    ],
)
def test_bad_settings_are_one_line_errors(overrides, error, match, tmp_path: Path) -> None:
    with pytest.raises(error, match=match):
        load(tmp_path, **overrides)


def test_an_empty_test_split_and_a_missing_dataset_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="the test split of imdb_reviews is empty"):
        load(tmp_path, {**reviews(), "test": []})
    with pytest.raises(DataError, match="imdb_reviews is not prepared"):
        text_classification.load(**config(tmp_path))
