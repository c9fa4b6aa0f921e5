"""data=image_folder: class folders read by name, decoded once into a cache that a changed file
invalidates, in memory or streamed (resumed exactly, sharded over processes), bad data one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from research.data import image_cache
from research.data.image_folder import load
from tests.checkpoints import ENDLESS, assert_same_final_state, latest_checkpoint, signal_run
from tests.conftest import ROOT, TINY, run_train, train_cmd
from tests.test_distributed import free_port

CLASSES = ("cat", "dog", "eel")
PER_CLASS = 20
SETTINGS = {
    "image_size": [8, 8],
    "channels": None,
    "interpolation": "bilinear",
    "batch_size": 8,
    "eval_batch_size": 16,
    "val_fraction": 0.1,
    "test_fraction": 0.2,
    "split_seed": 0,
    "in_memory": True,
    "memory_budget_mb": 1,
    "workers": 0,
    "images_per_worker": 1,
    "pixel_max": 255,
    "normalize": {"mean": None, "std": None},
    "augment": {},
}


def write_images(
    folder: Path, count: int = PER_CLASS, size: tuple[int, int] = (10, 12), mode: str = "L"
) -> None:
    """``count`` PNG files per class of ``CLASSES``, each class a band of brightness (learnable)."""
    rng = np.random.default_rng(len(str(folder)))
    for c, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 50, (*size, 3), dtype=np.uint8) + 90 * c
            Image.fromarray(pixels, "RGB").convert(mode).save(folder / name / f"{i:03d}.png")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_images(tmp_path / "images")
    return tmp_path / "images"


def open_folder(path: Path, cache: Path, **overrides) -> object:
    return load(path=str(path), cache_dir=str(cache), **{**SETTINGS, **overrides})


def test_classes_are_the_sorted_folder_names_and_splits_are_stratified(folder: Path, tmp_path: Path) -> None:
    data = open_folder(folder, tmp_path / "cache")
    assert data.class_names == list(CLASSES) and data.num_classes == 3 and data.input_shape == (8, 8, 1)
    sizes = {name: split.num_examples for name, split in data.splits.items()}
    assert sizes == {"train": 43, "val": 5, "test": 12}  # 20% of 60 held out, then 10% of the rest
    for split in data.splits.values():
        counts = np.bincount(split.arrays()["label"], minlength=3)
        assert counts.max() - counts.min() <= 1  # every class in proportion
        assert split.arrays()["image"].dtype == np.uint8
    # the pixels are the files' own, resized: each class keeps its band of brightness
    means = [
        data.splits["test"].arrays()["image"][data.splits["test"].arrays()["label"] == c].mean()
        for c in range(3)
    ]
    assert means[0] < means[1] < means[2]


def test_a_train_split_over_the_memory_budget_streams(folder: Path, tmp_path: Path) -> None:
    fits = open_folder(folder, tmp_path / "cache", in_memory=None, memory_budget_mb=43 * 64 / 2**20)
    over = open_folder(folder, tmp_path / "cache", in_memory=None, memory_budget_mb=42 * 64 / 2**20)
    assert fits.splits["train"].in_memory and not over.splits["train"].in_memory
    assert over.splits["val"].in_memory and over.splits["test"].in_memory  # evaluation reads arrays


def test_the_users_own_split_folders_are_kept(tmp_path: Path) -> None:
    write_images(tmp_path / "split" / "train", count=10)
    write_images(tmp_path / "split" / "test", count=4)
    data = open_folder(tmp_path / "split", tmp_path / "cache")
    assert {n: s.num_examples for n, s in data.splits.items()} == {"train": 27, "val": 3, "test": 12}


def test_classes_and_labels_per_class_choose_files_by_name(folder: Path, tmp_path: Path) -> None:
    data = open_folder(folder, tmp_path / "cache", classes=["eel", 0], labels_per_class=5)
    assert data.class_names == ["eel", "cat"]
    train = data.splits["train"].arrays()
    assert sorted(np.bincount(train["label"]).tolist()) == [5, 5]
    assert (
        train["image"][train["label"] == 0].mean() > train["image"][train["label"] == 1].mean()
    )  # eel is bright


def test_a_second_load_reads_the_cache_and_a_touched_file_is_decoded_again(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = open_folder(folder, cache)
    made = sorted(p.name for p in cache.rglob("*.array_record"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    with monkeypatch.context() as patch:
        patch.setattr(image_cache, "_convert", no_decoding)
        again = open_folder(folder, cache)  # nothing decoded
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(
            first.splits[split].arrays()["image"], again.splits[split].arrays()["image"]
        )

    touched = sorted(folder.rglob("*.png"))[0]
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    converted = []
    real = image_cache._convert
    monkeypatch.setattr(
        image_cache, "_convert", lambda files, *a: converted.append(len(files)) or real(files, *a)
    )
    open_folder(folder, cache)
    assert len(converted) == 1  # only the split that holds the file
    now = sorted(p.name for p in cache.rglob("*.array_record"))
    assert len(now) == len(made) and len(set(now) - set(made)) == 1  # the stale one replaced, not kept


@pytest.mark.slow
def test_worker_processes_decode_the_same_pixels_in_the_same_order(folder: Path, tmp_path: Path) -> None:
    alone = open_folder(folder, tmp_path / "alone")
    workers = open_folder(folder, tmp_path / "workers", workers=2)
    for split in ("train", "val", "test"):
        for key in ("image", "label"):
            np.testing.assert_array_equal(
                alone.splits[split].arrays()[key], workers.splits[split].arrays()[key]
            )


def test_streamed_shards_are_disjoint_and_resume_exactly(folder: Path, tmp_path: Path) -> None:
    """Each process decodes and reads only its own share of the training files."""
    shards = [open_folder(folder, tmp_path / "cache", in_memory=False, shard=(i, 2)) for i in (0, 1)]
    names = [set(s.splits["train"].part.names) for s in shards]
    assert (
        not names[0] & names[1] and len(names[0] | names[1]) == shards[0].splits["train"].num_examples == 43
    )
    train = shards[0].splits["train"]
    iterator = train.iterator(4, 0, 0, 2)
    next(iterator)
    state = iterator.get_state()
    expected = [next(iterator) for _ in range(8)]  # past the end of the 21- or 22-image epoch
    resumed = train.iterator(4, 0, 0, 2)
    resumed.set_state(state)
    for want, got in zip(expected, [next(resumed) for _ in range(8)], strict=True):
        np.testing.assert_array_equal(want["image"], got["image"])
        np.testing.assert_array_equal(want["label"], got["label"])


def test_colour_images_keep_three_channels_and_can_be_made_grey(tmp_path: Path) -> None:
    write_images(tmp_path / "rgb", mode="RGB")
    assert open_folder(tmp_path / "rgb", tmp_path / "cache").input_shape == (8, 8, 3)
    assert open_folder(tmp_path / "rgb", tmp_path / "cache", channels=1).input_shape == (8, 8, 1)


IMAGE_MLP = (
    "+experiment=digits_mlp",
    "data=image_folder",
    "data.image_size=[8,8]",
    "data.batch_size=8",
    *TINY,
)


def _truncated(folder: Path) -> str:
    path = folder / "dog" / "003.png"
    path.write_bytes(path.read_bytes()[:60])
    return str(path)


def _not_an_image(folder: Path) -> str:
    path = folder / "eel" / "notes.png"
    path.write_text("not a picture")
    return str(path)


def _mixed_channels(folder: Path) -> str:
    path = folder / "cat" / "100.png"
    Image.fromarray(np.zeros((10, 12, 3), np.uint8), "RGB").save(path)
    return str(path)


def _empty_class(folder: Path) -> str:
    (folder / "fox").mkdir()
    (folder / "fox" / "readme.txt").write_text("no images yet")
    return str(folder / "fox")


BAD = {
    "truncated": (_truncated, [], "cannot read this image"),
    "not an image": (_not_an_image, [], "cannot read this image"),
    "mixed channels": (_mixed_channels, [], "set data.channels=1 (grey) or 3 (colour)"),
    "empty class folder": (_empty_class, [], "holds no images"),
    "empty split": (lambda folder: "test split is empty", ["data.test_fraction=0"], "data.test_fraction > 0"),
    "missing path": (lambda folder: str(folder) + "-nowhere", [], "no such folder"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_is_one_line_before_training(case: str, folder: Path, tmp_path: Path) -> None:
    spoil, overrides, message = BAD[case]
    named = spoil(folder)
    path = named if case == "missing path" else folder
    run_dir = tmp_path / "run"
    proc = run_train(
        *IMAGE_MLP, f"data.path={path}", f"data.cache_dir={tmp_path / 'cache'}", *overrides,
        f"hydra.run.dir={run_dir}",
        check=False, timeout=120,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert named in lines[0] and message in lines[0]
    assert not run_dir.exists()


def test_training_records_the_classes_and_evaluate_refuses_renamed_ones(folder: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = (*IMAGE_MLP, f"data.path={folder}", f"data.cache_dir={tmp_path / 'cache'}")
    run_train(*args, "trainer.max_steps=30", "trainer.eval_every=15", f"hydra.run.dir={run_dir}")
    assert json.loads((run_dir / "classes.json").read_text()) == list(CLASSES)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test/accuracy"] > 0.9  # three bands of brightness
    (folder / "cat").rename(folder / "zebra")  # as many classes, another order under the labels
    proc = subprocess.run(
        [*train_cmd()[:2], "research.evaluate", f"run={run_dir}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "trained on the classes cat, dog, eel; the data now has dog, eel, zebra" in lines[0]


@pytest.mark.slow
def test_a_streamed_run_killed_mid_epoch_resumes_bit_identical(folder: Path, tmp_path: Path) -> None:
    """49 training images (the config's 10% test, then 10% val, of 60) in batches of 8: 6 steps an
    epoch, so checkpoints every 7 land mid-epoch."""
    args = (
        *IMAGE_MLP, f"data.path={folder}", f"data.cache_dir={tmp_path / 'cache'}", "data.in_memory=false",
        "optimizer/schedule=constant", "trainer.steps_per_call=1", "trainer.eval_every=7",
    )  # fmt: skip
    finish = (*args, "trainer.max_steps=42")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_train(*finish, f"hydra.run.dir={straight}")
    stop = signal_run(
        (*args, ENDLESS, "trainer.checkpoint.every=7", f"hydra.run.dir={killed}"),
        lambda: latest_checkpoint(killed) >= 14,
        signal.SIGKILL,
    )
    assert stop.code == -signal.SIGKILL and latest_checkpoint(killed) % 6  # stopped mid-epoch
    run_train(*finish, f"hydra.run.dir={killed}")
    assert_same_final_state(straight, killed)


@pytest.mark.slow
def test_two_processes_each_decode_and_read_only_their_own_shard(folder: Path, tmp_path: Path) -> None:
    port, run_dir, cache = free_port(), tmp_path / "two", tmp_path / "cache"
    args = (
        *IMAGE_MLP, f"data.path={folder}", f"data.cache_dir={cache}", "data.in_memory=false",
        "mesh=data_parallel", "trainer.max_steps=20", "trainer.eval_every=10", "trainer.compile_cache=null",
        "trainer.plots=false", f"hydra.run.dir={run_dir}", "distributed.num_processes=2",
        f"distributed.coordinator_address=127.0.0.1:{port}",
    )  # fmt: skip
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "1"}
    procs = [
        subprocess.Popen(
            train_cmd(*args, f"distributed.process_id={i}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        for i in (0, 1)
    ]
    try:
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    shards = {
        meta.name.split(".")[0]: set(json.loads(meta.read_text())["names"])
        for meta in cache.rglob("train-*.json")
    }
    assert sorted(shards) == ["train-0-of-2", "train-1-of-2"]  # no process decoded the whole train split
    assert not shards["train-0-of-2"] & shards["train-1-of-2"]
    assert len(shards["train-0-of-2"] | shards["train-1-of-2"]) == 49  # 60 less 6 test and 5 val
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 20


# Every kind of image task on a folder: the recipe, and what makes it fit 60 images of 3 classes.
TASKS = {
    "anomaly": ("digits_autoencoder", ["task.normal_class=1"]),
    "vae": ("digits_vae", ["task.interpolation_pairs=2"]),  # the val split holds 5 images
    "gan": ("digits_dcgan", []),
    "simclr": ("digits_simclr", []),
    "cross-validation": ("digits_mlp", ["trainer.cv_folds=3"]),
    "seeds": ("digits_cnn", ["trainer.num_seeds=2", "data.augment.crop_padding=1", "data.augment.flip=true"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(TASKS))
def test_every_image_task_trains_on_a_folder(kind: str, folder: Path, tmp_path: Path) -> None:
    recipe, overrides = TASKS[kind]
    run_dir = tmp_path / "run"
    run_train(
        f"+experiment={recipe}", "+debug=fast", "data=image_folder", f"data.path={folder}",
        f"data.cache_dir={tmp_path / 'cache'}", "data.image_size=[8,8]", "data.batch_size=8", *overrides,
        *TINY, f"hydra.run.dir={run_dir}", timeout=600,
    )  # fmt: skip
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 8


@pytest.mark.slow
def test_transfer_recipes_pretrain_on_some_classes_and_finetune_on_others(
    folder: Path, tmp_path: Path
) -> None:
    data = (
        "data=image_folder",
        f"data.path={folder}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.batch_size=8",
    )
    pretrain, finetune = tmp_path / "pretrain", tmp_path / "finetune"
    run_train(
        "+experiment=fashion_mnist_cnn_pretrain", "+debug=fast", *data, "data.classes=[cat,dog]",
        *TINY, f"hydra.run.dir={pretrain}", timeout=600,
    )  # fmt: skip
    assert json.loads((pretrain / "classes.json").read_text()) == ["cat", "dog"]
    proc = run_train(
        "+experiment=fashion_mnist_cnn_finetune", "+debug=fast", *data, "data.classes=[eel,dog]",
        "data.labels_per_class=4", f"trainer.init_from.path={pretrain}", *TINY, f"hydra.run.dir={finetune}",
        timeout=600,
    )  # fmt: skip
    assert "params/blocks/0/conv/kernel" in next(
        line for line in proc.stdout.splitlines() if "loaded" in line
    )
    assert json.loads((finetune / "classes.json").read_text()) == ["eel", "dog"]
