"""Segmentation: IoU by hand, composed scenes against their pasted items, the U-Net, the task, bad masks."""

from __future__ import annotations

import functools
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from research import metrics
from research.data import fashion_mnist, scenes
from research.data.arrays import make_dataset
from research.errors import ConfigError, DataError
from research.models.unet import UNet, UpConv
from research.tasks.segmentation import SegmentationTask, check_masks, dice_loss
from tests.conftest import ROOT, TINY

SCENES = {"canvas": 40, "min_items": 1, "max_items": 3, "mask_threshold": 10, "passes": 2, "seed": 0}


def test_iou_and_per_class_iou_match_a_hand_count() -> None:
    truth = jnp.array([0, 0, 0, 1, 1, 2, 2, 2])
    preds = jnp.array([0, 0, 1, 1, 2, 2, 2, 0])
    confusion = metrics.confusion_matrix(truth, preds, 4, jnp.ones(8))
    # class 0: TP 2 (pixels 0, 1), FP 1 (pixel 7), FN 1 (pixel 2): 2/4; class 1: TP 1, FP 1, FN 1: 1/3;
    # class 2: TP 2, FP 1 (pixel 4), FN 1 (pixel 7): 2/4; class 3: neither present nor predicted.
    np.testing.assert_allclose(metrics.iou_per_class(confusion), [0.5, 1 / 3, 0.5, 0.0], rtol=1e-6)
    assert float(metrics.mean_iou(confusion)) == pytest.approx((0.5 + 1 / 3 + 0.5) / 3)
    weighted = metrics.confusion_matrix(truth, preds, 4, jnp.array([1, 1, 1, 1, 1, 0, 0, 0]))
    np.testing.assert_allclose(metrics.iou_per_class(weighted), [2 / 3, 1 / 3, 0.0, 0.0], rtol=1e-6)


def test_iou_is_counted_over_the_whole_split_not_averaged_per_batch() -> None:
    """Two batches: the split's confusion is their sum; averaging per-batch IoUs would differ."""
    truth = [jnp.array([0, 0, 0, 0, 1, 1]), jnp.array([0, 2, 2, 2, 2, 2])]
    preds = [jnp.array([0, 0, 0, 1, 1, 1]), jnp.array([0, 2, 2, 2, 0, 0])]
    batches = [metrics.confusion_matrix(t, p, 3, jnp.ones(6)) for t, p in zip(truth, preds, strict=True)]
    split = metrics.confusion_matrix(jnp.concatenate(truth), jnp.concatenate(preds), 3, jnp.ones(12))
    np.testing.assert_array_equal(batches[0] + batches[1], split)
    # over the split: background TP 4, FP 2, FN 1 -> 4/7; class 1 TP 2, FP 1 -> 2/3; class 2 TP 3, FN 2 -> 3/5
    np.testing.assert_allclose(metrics.iou_per_class(split), [4 / 7, 2 / 3, 3 / 5], rtol=1e-6)
    assert float(metrics.mean_iou(split)) == pytest.approx((4 / 7 + 2 / 3 + 3 / 5) / 3)
    per_batch = np.mean([float(metrics.mean_iou(c)) for c in batches])  # (3/4, 2/3) then (1/3, 3/5)
    assert per_batch == pytest.approx(((3 / 4 + 2 / 3) / 2 + (1 / 3 + 3 / 5) / 2) / 2)
    assert abs(per_batch - float(metrics.mean_iou(split))) > 0.02


def test_dice_loss_is_zero_for_a_sure_right_answer_and_near_one_for_a_wrong_one() -> None:
    masks = jnp.array([[[0, 1], [1, 2]]])
    right = 50.0 * jax.nn.one_hot(masks, 3)
    assert float(dice_loss(right, masks, 1e-6)) == pytest.approx(0.0, abs=1e-5)
    assert float(dice_loss(50.0 * jax.nn.one_hot((masks + 1) % 3, 3), masks, 1e-6)) > 0.99


def items(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random 28x28 "items": bright rectangles with dark holes, so thresholds matter."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28, 1), np.uint8)
    for i in range(n):
        top, left = rng.integers(0, 10, 2)
        images[i, top : top + rng.integers(8, 18), left : left + rng.integers(8, 18)] = rng.integers(11, 256)
        images[i, rng.integers(0, 28), :] = 5  # a faint line: below the threshold, never pasted
    return images, np.arange(n) % 10


def test_composed_masks_match_the_pasted_items() -> None:
    images, labels = items(40)
    layout = scenes.Layout(**SCENES)
    out = scenes.compose(images, labels, layout, np.random.default_rng(0))
    used = out["items"][out["items"] >= 0]
    assert sorted(used.tolist()) == sorted(list(range(40)) * layout.passes)  # each item once per pass
    counts = (out["items"] >= 0).sum(1)
    assert counts[:-1].min() >= 1 and counts.max() <= 3 and (counts > 1).any()
    for s in range(len(counts)):
        expected_mask = np.zeros((40, 40), np.uint8)
        expected_image = np.zeros((40, 40), np.uint8)
        for j in range(counts[s]):  # in paste order: later items cover earlier ones
            index, (row, col) = out["items"][s, j], out["positions"][s, j]
            visible = np.zeros((40, 40), bool)
            visible[row : row + 28, col : col + 28] = images[index, ..., 0] > layout.mask_threshold
            expected_mask[visible] = labels[index] + 1
            expected_image[visible] = images[index, ..., 0][visible[row : row + 28, col : col + 28]]
        np.testing.assert_array_equal(out["mask"][s], expected_mask)
        np.testing.assert_array_equal(out["image"][s, ..., 0], expected_image)
    assert (out["image"][..., 0][out["mask"] == 0] == 0).all()  # background is black, items are not
    overlapped = [(out["mask"][s] > 0).sum() < sum((images[i] > 10).sum() for i in out["items"][s] if i >= 0)
                  for s in range(len(counts))]  # fmt: skip
    assert any(overlapped)


def write_idx(folder: Path, seed: int = 0) -> None:
    for split, n in (("train", 40), ("test", 20)):
        images, labels = items(n, seed)
        for name, array, magic in zip(
            fashion_mnist.IDX_FILES[split],
            (images[..., 0], labels),
            (fashion_mnist.IMAGES_MAGIC, fashion_mnist.LABELS_MAGIC),
            strict=True,
        ):
            header = np.array([magic, *array.shape], ">i4").tobytes()
            with gzip.open(folder / name, "wb") as f:
                f.write(header + array.astype(np.uint8).tobytes())


def load_scenes(data_dir: Path, idx: Path) -> object:
    return scenes.load(
        str(data_dir), {"idx_dir": str(idx)}, 0.25, 0, **SCENES, batch_size=4, eval_batch_size=8,
        pixel_max=255, normalize={"mean": [0.1], "std": [0.3]},
    )  # fmt: skip


def test_scenes_are_composed_once_and_cached_per_items(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    idx.mkdir()
    write_idx(idx)
    first = load_scenes(tmp_path / "tfds", idx)
    cached = list((tmp_path / "tfds" / scenes.FOLDER).glob("*.npz"))
    assert len(cached) == 1
    assert (
        first.num_classes == 11 and first.class_names[0] == "background" and first.input_shape == (40, 40, 1)
    )
    again = load_scenes(tmp_path / "tfds", idx)
    for split in ("train", "val", "test"):
        a, b = first.splits[split].arrays(), again.splits[split].arrays()
        assert a["mask"].shape == a["image"].shape[:3] and a["mask"].max() <= 10
        np.testing.assert_array_equal(a["mask"], b["mask"])
    os.utime(cached[0], (0, 0))
    load_scenes(tmp_path / "tfds", idx)
    assert cached[0].stat().st_mtime == 0  # read, not rewritten
    other = tmp_path / "idx2"
    other.mkdir()
    write_idx(other, seed=1)
    (tmp_path / "tfds2").mkdir()
    load_scenes(tmp_path / "tfds2", other)
    assert {p.name for p in (tmp_path / "tfds2" / scenes.FOLDER).glob("*.npz")} != {cached[0].name}
    with pytest.raises(ConfigError, match="min_items"):
        scenes.Layout(**{**SCENES, "min_items": 4})


def test_unet_gives_per_pixel_logits_and_checks_sizes() -> None:
    def shape(**kwargs) -> tuple:
        def run():
            return UNet((16, 16, 1), 5, [4, 8, 8], rngs=nnx.Rngs(0), **kwargs)(jnp.zeros((2, 16, 16, 1)))

        return jax.eval_shape(run).shape

    for kwargs in (
        {},
        {"skip": False},
        {"encoder": "resnet"},
        {"bottleneck_dense": 6},
        {"coarse_logits": True},
        {"side_logits": True, "skip": False},
    ):
        assert shape(**kwargs) == (2, 16, 16, 5)

    def count(**kwargs) -> int:
        model = nnx.eval_shape(lambda: UNet((16, 16, 1), 5, [4, 8, 8], rngs=nnx.Rngs(0), **kwargs))
        return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))

    assert count(skip=False) < count()  # the decoder's convs read half as many channels
    cells = 4 * 4 * 8  # the bottleneck: 16x16 halved twice, 8 channels
    assert count(bottleneck_dense=6) - count() == cells * 6 + 6 + 6 * cells + cells
    assert count(coarse_logits=True) - count() == 8 * 5 + 5  # a 1x1 conv from the bottleneck's 8 channels
    assert count(side_logits=True) - count() == 8 * 5 + 5  # a 1x1 conv on the 8x8 level (8 channels)
    with pytest.raises(ConfigError, match="divisible by 4"):
        UNet((18, 18, 1), 5, [4, 8, 8], rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="model.coarse_logits must be true or false"):
        UNet((16, 16, 1), 5, [4, 8, 8], coarse_logits="yes", rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="model.side_logits must be true or false"):
        UNet((16, 16, 1), 5, [4, 8, 8], side_logits=1, rngs=nnx.Rngs(0))


def test_coarse_logits_add_the_bottlenecks_upsampled_class_scores() -> None:
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
    model = UNet((8, 8, 1), 5, [2, 4], coarse_logits=True, rngs=nnx.Rngs(0))
    model.coarse.kernel.value = jnp.zeros_like(model.coarse.kernel[...])
    model.coarse.bias.value = jnp.zeros(5)
    fine = model(x)  # the coarse scores are zero: the full-resolution head's alone
    model.coarse.bias.value = jnp.arange(5.0)  # a constant map upsamples to itself
    np.testing.assert_allclose(model(x), fine + jnp.arange(5.0), atol=1e-5)
    model.coarse.kernel.value = jnp.ones_like(model.coarse.kernel[...])  # now they vary over the image
    shift = np.asarray(model(x) - fine)
    assert np.ptp(shift[..., 0]) > 1e-3 and np.allclose(shift[..., 1] - shift[..., 0], 1.0, atol=1e-5)


def test_side_logits_add_every_inner_decoder_levels_upsampled_class_scores() -> None:
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
    model = UNet((8, 8, 1), 5, [2, 4, 4], side_logits=True, rngs=nnx.Rngs(0))
    assert len(model.sides) == 1  # the 4x4 level; the 2x2 bottleneck has no side, full resolution is the head
    side = model.sides[0]
    side.kernel.value, side.bias.value = jnp.zeros_like(side.kernel[...]), jnp.zeros(5)
    plain = model(x)  # zero side scores: the head's alone
    side.bias.value = jnp.arange(5.0)
    np.testing.assert_allclose(model(x), plain + jnp.arange(5.0), atol=1e-5)
    side.kernel.value = jnp.ones_like(side.kernel[...])
    assert np.ptp(np.asarray(model(x) - plain)[..., 0]) > 1e-3  # now they vary over the image


def test_the_up_convolution_is_a_2x2_stride_2_transposed_conv() -> None:
    up = UpConv(3, 2, rngs=nnx.Rngs(0))
    x = np.random.default_rng(1).normal(size=(1, 2, 3, 3)).astype(np.float32)
    kernel = np.asarray(up.linear.kernel[...]).reshape(3, 2, 2, 2)
    bias = np.asarray(up.linear.bias[...]).reshape(2, 2, 2)
    expected = np.zeros((1, 4, 6, 2), np.float32)
    for i, j, a, b in np.ndindex(2, 3, 2, 2):  # input pixel (i, j) alone makes output (2i + a, 2j + b)
        expected[0, 2 * i + a, 2 * j + b] = x[0, i, j] @ kernel[:, a, b] + bias[a, b]
    np.testing.assert_allclose(up(jnp.asarray(x)), expected, rtol=1e-5, atol=1e-5)


def toy_segmentation(n: int = 64, size: int = 16, mask_size: int | None = None):
    """Bright squares on black: the mask is 1 on the square, 2 on a square's right half."""
    rng = np.random.default_rng(0)
    images = np.zeros((n, size, size, 1), np.float32)
    masks = np.zeros((n, mask_size or size, mask_size or size), np.uint8)
    for i in range(n):
        r, c = rng.integers(0, size - 6, 2)
        images[i, r : r + 6, c : c + 6] = 1.0
        masks[i, r : r + 6, c : c + 3], masks[i, r : r + 6, c + 3 : c + 6] = 1, 2
    arrays = {"image": images, "mask": masks}
    splits = {s: arrays for s in ("train", "val", "test")}
    shape = (size, size, 1)
    return make_dataset("toy", splits, 16, 32, input_shape=shape, num_classes=3, class_names=["bg", "l", "r"])


@pytest.mark.slow
def test_the_task_learns_toy_masks_and_reports_iou_and_overlays() -> None:
    dataset = toy_segmentation()
    model = functools.partial(UNet, channels=[8, 16])
    task = SegmentationTask(model, lambda n: optax.adam(1e-2), 100, dataset, overlay_images=4)
    state, step = task.init(jax.random.PRNGKey(0), None), jax.jit(task.train_step)
    train = dataset.splits["train"].arrays()
    for i in range(100):
        rows = np.arange(i * 16, i * 16 + 16) % 64
        state, _ = step(state, {k: jnp.asarray(v[rows]) for k, v in train.items()})
    sums = jax.jit(task.eval_step)(
        state, {**{k: jnp.asarray(v) for k, v in train.items()}, "eval_weight": jnp.ones(64)}
    )
    result = task.finalize(sums)
    assert result["per_class_iou"].shape == (3,) and float(result["mean_iou"]) > 0.9, result
    assert float(result["mean_iou"]) == pytest.approx(float(jnp.mean(result["per_class_iou"])))
    assert float(sums["confusion"].sum()) == 64 * 16 * 16
    overlays = task.overlays(state)["overlays"]
    assert overlays.shape == (12, 16, 16, 3) and 0.0 <= float(overlays.min()) and float(overlays.max()) <= 1.0
    assert task.metric == "val/mean_iou" and set(task.evaluators()) == {"metrics", "overlays"}


def test_a_mask_of_another_size_is_one_data_error() -> None:
    with pytest.raises(DataError, match="masks are 8x8 but the images 16x16"):
        check_masks(toy_segmentation(n=16, mask_size=8))


def test_a_pet_mask_of_another_size_stops_the_cli_with_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "mock_pets.py"), "+experiment=oxford_pet_unet_segmentation",
         "+debug=fast", "data.batch_size=8", *TINY, f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
        env={**os.environ, "MOCK_PETS_BAD_MASK": "1"},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: oxford_iiit_pet train record") and "Traceback" not in proc.stderr
    assert "mask is" in lines[-1] and not run_dir.exists()


@pytest.mark.slow
def test_pets_become_square_images_and_three_class_masks(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    subprocess.run(
        [sys.executable, str(ROOT / "tests" / "mock_pets.py"), "+experiment=oxford_pet_unet_segmentation",
         "+debug=fast", "data.batch_size=8", "data.image_size=32", "model.channels=[4,8]", *TINY,
         f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path, check=True,
    )  # fmt: skip
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 8 and len(summary["test/per_class_iou"]) == 3
    assert 0.0 <= summary["test/mean_iou"] <= 1.0
    assert (run_dir / "plots" / "per_class_iou.png").stat().st_size > 1000
