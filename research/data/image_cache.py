"""Image files decoded once into an ArrayRecord file of raw pixels, and reused while they are unchanged.

The first read of a set of files decodes and resizes them in grain worker processes and writes
one record of ``height x width x channels`` uint8 pixels per file (random access, as TFDS
prepares its datasets). The file's name is keyed by the files' names, sizes and modification
times and by the decoding settings, so a second run finds it and starts without decoding, and a
changed folder (a file touched, added or removed) makes a new one. A file that cannot be decoded,
or images of mixed channel counts without a declared ``data.channels``, stop the first read with
one line naming the file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from research.data.file_index import Files
from research.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CHUNK = 256  # images a worker decodes per hand-over: one transfer between processes each, not one per image
# One record per group (random access), uncompressed: zstd saved a third of the disk on Fashion-MNIST
# and cost 3.4x in streamed images/s (bench/image_folder_throughput.py, docs/benchmarks.md).
WRITER_OPTIONS = "group_size:1,uncompressed"
FORMAT = 1  # bumped when the record layout changes: older caches are then rebuilt
# PIL modes by the channel count they decode to when data.channels is null (alpha is dropped).
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box")


@dataclass(frozen=True)
class Decoding:
    """How every file becomes pixels: resized to ``size`` (height, width), ``channels`` 1 or 3 (None:
    each image's own, which must then agree), with PIL's ``interpolation`` filter."""

    size: tuple[int, int]
    channels: int | None
    interpolation: str

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) <= 0:
            raise ConfigError(
                f"data.image_size must be [height, width] of positive ints, got {list(self.size)}"
            )
        if self.channels not in (None, 1, 3):
            raise ConfigError(
                f"data.channels must be 1 (grey), 3 (colour) or null (the images'), got {self.channels}"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"data.interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation}"
            )


class Decode:
    """path -> {"image": (H, W, C) uint8} or {"error": one line}."""

    def __init__(self, decoding: Decoding):
        self.decoding = decoding

    def __call__(self, path: str) -> dict:
        from PIL import Image

        d = self.decoding
        try:
            with Image.open(path) as image:
                image.load()
                channels = d.channels or (1 if image.mode in GREY_MODES else 3)
                image = _to_mode(image, channels)
                if image.size != (d.size[1], d.size[0]):
                    resample = getattr(Image.Resampling, d.interpolation.upper())
                    image = image.resize((d.size[1], d.size[0]), resample)
                pixels = np.asarray(image, np.uint8).reshape(d.size[0], d.size[1], channels)
        except (OSError, ValueError, SyntaxError) as err:  # truncated, not an image, unreadable
            return {"error": f"{path}: cannot read this image ({str(err).splitlines()[0]}): fix or remove it"}
        return {"image": pixels}


class DecodeChunk:
    """paths -> {"images": (k, H, W, C) uint8} or {"error": one line}: what each grain worker runs."""

    def __init__(self, decoding: Decoding):
        self.decode = Decode(decoding)

    def __call__(self, paths: tuple[str, ...]) -> dict:
        images = []
        for path in paths:
            item = self.decode(path)
            if "error" in item:
                return item
            if images and item["image"].shape != images[0].shape:
                return {"error": _mixed(path, item["image"].shape[-1], paths[0], images[0].shape[-1])}
            images.append(item["image"])
        return {"images": np.stack(images)}


def _to_mode(image, channels: int):
    """``image`` as 8-bit grey ("L") or RGB; 16- and 32-bit grey scaled down, not clipped."""
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, np.float64)
        top = 65535.0 if values.max() > 255 else 255.0
        from PIL import Image

        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8), "L")
    return image.convert("L" if channels == 1 else "RGB")


@dataclass(frozen=True)
class Part:
    """A decoded set of files: its ArrayRecord file, labels and image shape."""

    path: Path
    labels: np.ndarray
    shape: tuple[int, int, int]
    names: tuple[str, ...]  # the files this part read

    def __len__(self) -> int:
        return len(self.labels)

    def read_all(self) -> np.ndarray:
        """Every image, (N, H, W, C) uint8, in one sequential read."""
        from array_record.python.array_record_module import ArrayRecordReader

        reader = ArrayRecordReader(str(self.path))
        try:
            records = reader.read_all()
        finally:
            reader.close()
        return np.frombuffer(b"".join(records), np.uint8).reshape(len(records), *self.shape)


def part(files: Files, root: str, name: str, decoding: Decoding, cache_dir: str, workers: int) -> Part:
    """The cached decoding of ``files`` (``name``: train, val, test or a process's shard of train),
    made now, in ``workers`` processes, if the files changed since the last one or none was made."""
    key = files.key(root, FORMAT, decoding)
    folder = Path(os.path.expanduser(cache_dir)) / _folder_name(root)
    meta_path = folder / f"{name}.{key}.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        return Part(
            folder / f"{name}.{key}.array_record", files.labels, tuple(meta["shape"]), tuple(meta["names"])
        )
    _make_folder(folder, cache_dir)
    started = time.perf_counter()
    shape = _convert(files, decoding, folder / f"{name}.{key}.array_record", workers)
    names = files.paths
    _write_atomic(meta_path, json.dumps({"shape": list(shape), "names": names}).encode())
    for stale in folder.glob(f"{name}.*"):  # the same part of the folder as it was before a change
        if key not in stale.name:
            stale.unlink(missing_ok=True)
    log.info("decoded %d images of %s (%s) in %.1f s", len(files), root, name, time.perf_counter() - started)
    return Part(folder / f"{name}.{key}.array_record", files.labels, shape, names)


def _folder_name(root: str) -> str:
    """One cache folder per image folder, by its absolute path."""
    import hashlib

    absolute = os.path.abspath(os.path.expanduser(root))
    return f"{Path(absolute).name}-{hashlib.sha256(absolute.encode()).hexdigest()[:12]}"


def _make_folder(folder: Path, cache_dir: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise DataError(
            f"cannot write the decoded images into data.cache_dir={cache_dir} ({err.strerror or err}): "
            "set data.cache_dir=<a writable folder>"
        ) from None


def decoded(files: Files, decoding: Decoding, workers: int):
    """The files' pixels in order, ``CHUNK`` at a time: decoded in ``workers`` grain processes
    (0: by grain's threads in this one)."""
    import grain

    chunks = [files.paths[i : i + CHUNK] for i in range(0, len(files), CHUNK)]
    dataset = grain.MapDataset.source(chunks).map(DecodeChunk(decoding)).to_iter_dataset()
    if workers > 0:
        absl_flags_parsed()
        # Chunks travel pickled, not in shared memory, which grain frees in a thread of its own
        # that may not run before the process ends (a "leaked shared_memory" warning).
        no_shm = grain.experimental.DatasetOptions(min_shm_size=np.iinfo(np.int64).max)
        dataset = grain.experimental.WithOptionsIterDataset(dataset, no_shm)
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return dataset


def absl_flags_parsed() -> None:
    """grain's worker processes read absl flags, which a program without absl.app never parses."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _convert(files: Files, decoding: Decoding, out: Path, workers: int) -> tuple[int, int, int]:
    """Decode ``files`` into ``out`` (written beside, then renamed); the shape of every image."""
    from array_record.python.array_record_module import ArrayRecordWriter

    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    writer = ArrayRecordWriter(str(tmp), WRITER_OPTIONS)
    shape = None
    iterator = iter(decoded(files, decoding, workers))
    try:
        for start, item in zip(range(0, len(files), CHUNK), iterator, strict=True):
            if "error" in item:
                raise DataError(item["error"])
            images = item["images"]
            shape = shape or images.shape[1:]
            if images.shape[1:] != shape:
                raise DataError(_mixed(files.paths[start], images.shape[-1], files.paths[0], shape[-1]))
            for image in images:
                writer.write(np.ascontiguousarray(image).tobytes())
        writer.close()
        os.replace(tmp, out)
    finally:
        if hasattr(iterator, "close"):
            iterator.close()
        if writer.is_open():
            writer.close()
        tmp.unlink(missing_ok=True)
    return tuple(int(n) for n in shape)


def _mixed(path: str, channels: int, first: str, first_channels: int) -> str:
    kind = {1: "grey", 3: "colour"}
    return (
        f"{path} is {kind[channels]} but {first} is {kind[first_channels]}: "
        "set data.channels=1 (grey) or 3 (colour) to convert every image"
    )


def check_channels(parts: dict[str, Part]) -> None:
    """Every split decoded to the same channel count (only in question when data.channels is null)."""
    first_split, first = next(iter(parts.items()))
    for p in parts.values():
        if p.shape != first.shape:
            raise DataError(
                _mixed(p.names[0], p.shape[-1], f"{first.names[0]} ({first_split})", first.shape[-1])
            )


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
