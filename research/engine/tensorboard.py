"""TensorBoard event files from the records metrics.jsonl holds (``logger.tensorboard``).

tensorboardX writes them (no TensorFlow). The loop's thread only queues a record; a background
thread turns it into summaries, so writing never holds up the next train call.

    <run dir>/tensorboard/             every scalar of the records at its step, the task's images,
                                       histograms (a record's other number lists; the spread of
                                       per-group values such as the health signals' layer groups,
                                       ``<name>/groups``), the config as text and the run's
                                       hyperparameters (HParams view)
    <run dir>/tensorboard/seed_<i>/    a replica run's ``<metric>_per_seed`` (``_per_fold``: fold_<i>)
                                       values under ``<metric>``: the replicas overlay on one chart

A resumed run logs the steps past its checkpoint again. As metrics.jsonl drops its lines past
the restored step, the event files are cut back to it (and to before the test pass, which a
resumed run redoes), and the new file begins with a purge at the next step for a TensorBoard
that already read the old events: each step is recorded once.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import queue
import struct
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from research.errors import ConfigError, UserError

SETTINGS = {"flush_secs": "how often the event files reach the disk, in seconds"}
REPLICA_SUFFIXES = ("_per_seed", "_per_fold")  # per-replica lists of the records (evaluation.py)
FINAL_PREFIX = "test/"  # evaluation.TEST: what the final pass writes; a resumed run writes it again
CONFIG_TAG = "config"
HPARAMS_END_TAG = "_hparams_/session_end_info"
EVENTS_GLOB = "events.out.tfevents.*"
_HEADER = 12  # a TFRecord: length (uint64), its masked CRC (uint32), the data, the data's CRC (uint32)
_FOOTER = 4


def check_tensorboard(settings: Mapping[str, Any] | None) -> None:
    """``logger.tensorboard``: known keys, a positive flush interval, tensorboardX installed.

    Called by the preflight so a bad value is one line before anything is created; finding the
    package does not import it, so ``--cfg job`` and ``--help`` stay fast.
    """
    if settings is None:
        return
    if not isinstance(settings, Mapping):
        raise ConfigError("logger.tensorboard must be a mapping (see conf/logger/tensorboard.yaml) or null")
    for key in settings:
        if key not in SETTINGS:
            known = ", ".join(SETTINGS)
            raise ConfigError(f"logger.tensorboard.{key} is not a setting: the settings are {known}")
    flush = settings.get("flush_secs")
    if isinstance(flush, bool) or not isinstance(flush, (int, float)) or flush <= 0:
        raise ConfigError(f"logger.tensorboard.flush_secs={flush!r} must be a positive number of seconds")
    if importlib.util.find_spec("tensorboardX") is None:
        raise UserError(
            "logger=tensorboard needs tensorboardX: pip install -e '.[tensorboard]' (or choose logger=none)"
        )


def cut_events(directory: Path, step: int) -> set[str]:
    """Cut every event file under ``directory`` back to ``step``: the events past it, those of the
    final pass and a record a killed run left half written go. The tags kept, for what to rewrite.
    """
    from tensorboardX.proto.event_pb2 import Event

    kept: set[str] = set()
    for path in sorted(Path(directory).rglob(EVENTS_GLOB)):
        data = path.read_bytes()
        out, offset = bytearray(), 0
        while offset + _HEADER <= len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            end = offset + _HEADER + length + _FOOTER
            if end > len(data):
                break
            event = Event.FromString(data[offset + _HEADER : end - _FOOTER])
            tags = [v.tag for v in event.summary.value]
            final = any(t.startswith(FINAL_PREFIX) or t == HPARAMS_END_TAG for t in tags)
            if event.step <= step and not final:
                out += data[offset:end]
                kept.update(tags)
            offset = end
        if len(out) != len(data):  # replaced whole: a kill now leaves the old file or the new one
            cut = path.with_name(".cut_events")  # no "tfevents" in its name: TensorBoard skips it
            cut.write_bytes(bytes(out))
            os.replace(cut, path)
    return kept


def flat_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The config's leaves as ``a.b.c`` hyperparameters: numbers, strings and booleans as they
    are, lists as JSON, nulls left out. TensorBoard lists first the ones that differ between runs.
    """
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
    return out


def config_text(config: Mapping[str, Any]) -> str:
    """The config as a Markdown code block (the text plugin renders Markdown)."""
    import yaml

    text = yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)
    return "\n".join("    " + line for line in text.splitlines())


class TensorboardWriter:
    """Event files of one run (and its replicas), written by a background thread."""

    def __init__(
        self,
        directory: Path,
        settings: Mapping[str, Any],
        config: Mapping[str, Any],
        replicas: list[str],
        resume_step: int | None,
    ):
        self.directory = Path(directory)
        self.replicas = list(replicas)
        self.flush_secs = float(settings["flush_secs"])
        kept = cut_events(self.directory, resume_step) if resume_step is not None else set()
        self.purge_step = resume_step + 1 if resume_step is not None else None
        self._writers: dict[str, Any] = {}
        for replica in ["", *self.replicas]:  # opened before training: the import costs no step
            self._writer(replica)
        if f"{CONFIG_TAG}/text_summary" not in kept:  # the first attempt's, once (the text plugin's tag)
            self._start(dict(config))
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="tensorboard", daemon=True)
        self._thread.start()
        atexit.register(self.close)  # a run that stops on an error keeps what it queued

    # The loop's thread: queue and return.
    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        self._queue.put((self._record, (step, dict(metrics))))

    def images(self, step: int, images: Mapping[str, Any]) -> None:
        self._queue.put((self._images, (step, dict(images))))

    def summary(self, step: int, summary: Mapping[str, Any]) -> None:
        """The final pass's ``test/`` scalars at ``step``, and the HParams session's end."""
        final = {
            k: v
            for k, v in summary.items()
            if k.startswith(FINAL_PREFIX) and (np.ndim(v) == 0 or _replica_key(k)[1])
        }
        self._queue.put((self._final, (step, final)))

    def close(self) -> None:
        """Write what is queued, flush and close the files (once)."""
        if not self._thread.is_alive():
            return
        atexit.unregister(self.close)
        self._queue.put(None)
        self._thread.join()
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    # The background thread.
    def _work(self) -> None:
        failed = False
        while (item := self._queue.get()) is not None:
            if failed:
                continue
            call, args = item
            try:
                call(*args)
            except Exception as e:  # a full disk must not stop training: say so once, keep going
                failed = True
                print(f"tensorboard: stopped writing ({type(e).__name__}: {e}); metrics.jsonl is complete")

    def _writer(self, replica: str = "") -> Any:
        if replica not in self._writers:
            from tensorboardX import SummaryWriter

            self._writers[replica] = SummaryWriter(
                str(self.directory / replica) if replica else str(self.directory),
                purge_step=self.purge_step,
                flush_secs=self.flush_secs,
            )
        return self._writers[replica]

    def _start(self, config: dict) -> None:
        from tensorboardX.summary import hparams

        writer = self._writer()
        writer.add_text(CONFIG_TAG, config_text(config), 0)
        _, start, _ = hparams(flat_hparams(config), {})
        writer.file_writer.add_summary(start, 0)

    def _record(self, step: int, metrics: dict) -> None:
        """One event per directory holding the record's scalars (a summary of several values:
        half the cost of an event per scalar), and a histogram per number list or group family.
        """
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.summary import scalar

        values: dict[str, list] = {}
        for key, value in metrics.items():
            array = np.asarray(value)
            if array.dtype.kind not in "biuf":
                continue
            if array.ndim == 0:
                values.setdefault("", []).extend(scalar(key, float(array)).value)
                continue
            base, replica = _replica_key(key)
            if replica and len(self.replicas) == array.size:
                for label, v in zip(self.replicas, array.reshape(-1).tolist(), strict=True):
                    values.setdefault(label, []).extend(scalar(base, float(v)).value)
            elif array.size and np.isfinite(array).all():
                self._writer().add_histogram(key, array.astype(np.float64), step)
        for replica, summary in values.items():
            self._writer(replica).file_writer.add_summary(Summary(value=summary), step)
        for key, spread in group_spreads(metrics).items():  # a bucket per value: exact, 7x cheaper
            spread = np.sort(spread)
            self._writer().add_histogram_raw(
                key,
                min=float(spread[0]),
                max=float(spread[-1]),
                num=spread.size,
                sum=float(spread.sum()),
                sum_squares=float(np.square(spread).sum()),
                bucket_limits=spread.tolist(),
                bucket_counts=[1] * spread.size,
                global_step=step,
            )

    def _images(self, step: int, images: dict) -> None:
        for key, image in images.items():
            image = np.asarray(image)
            if image.dtype != np.uint8:
                image = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
            formats = "HW" if image.ndim == 2 else "HWC"
            self._writer().add_image(key, image, step, dataformats=formats)

    def _final(self, step: int, final: dict) -> None:
        from tensorboardX.summary import hparams

        self._record(step, final)
        _, _, end = hparams({}, {})
        self._writer().file_writer.add_summary(end, step)


def group_spreads(metrics: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``<name>/groups``: the values of ``<name>/<group>`` beside a scalar ``<name>`` (the health
    signals per layer group, engine/health.py), as one histogram per record: how they spread.
    """
    out: dict[str, list[float]] = {}
    for key, value in metrics.items():
        base, _, group = key.rpartition("/")
        if base in metrics and np.ndim(metrics[base]) == 0 and np.ndim(value) == 0 and group:
            if not any(group.endswith(s) for s in ("_std", *REPLICA_SUFFIXES)):
                out.setdefault(f"{base}/groups", []).append(float(value))
    return {k: np.asarray(v) for k, v in out.items() if len(v) > 1 and np.isfinite(v).all()}


def _replica_key(key: str) -> tuple[str, bool]:
    for suffix in REPLICA_SUFFIXES:
        if key.endswith(suffix):
            return key.removesuffix(suffix), True
    return key, False


def make_tensorboard(
    run_dir: Path,
    settings: Mapping[str, Any] | None,
    config: Mapping[str, Any],
    replicas: list[str],
    resume_step: int | None,
) -> TensorboardWriter | None:
    """The run's TensorBoard writer in ``<run_dir>/tensorboard``, or None when it is off."""
    if not settings:
        return None
    check_tensorboard(settings)
    return TensorboardWriter(Path(run_dir) / "tensorboard", settings, config, replicas, resume_step)
