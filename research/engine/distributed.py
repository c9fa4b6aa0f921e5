"""The processes of a run: one, or several joined by ``jax.distributed``.

A run spans several processes when it is launched that way, and then every process
runs the same command:

- under Slurm, by ``srun`` with more than one task (``slurm/train.sbatch``);
- on a Cloud TPU slice, one process per host (``research.launch.tpu``);
- by hand, with ``distributed.coordinator_address`` (host:port of process 0),
  ``distributed.num_processes`` and ``distributed.process_id`` on each command line.

``initialize`` must run before anything touches a JAX device. The mesh then spans
the devices of every process; each process feeds its own slice of every batch
(``jax.make_array_from_process_local_data``) and reads its own shard of a streamed
dataset; only process 0 writes metrics, W&B, plots and ``train.log``, while Orbax
checkpoints are written by all processes together, as Orbax expects.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

from research.errors import EXIT_USER_ERROR, ConfigError

# JAX's own timeout aborts the process with a C++ stack trace; ours fires this much earlier.
_JAX_TIMEOUT_MARGIN_S = 10


def plan(cfg: Mapping[str, Any], environ: Mapping[str, str], tpu_runtime: bool) -> dict[str, Any] | None:
    """Arguments for ``jax.distributed.initialize``, or None when the run is one process.

    ``cfg`` is the ``distributed`` config; ``tpu_runtime`` says whether libtpu is installed.
    """
    address = cfg.get("coordinator_address") or environ.get("JAX_COORDINATOR_ADDRESS")
    count, index = cfg.get("num_processes"), cfg.get("process_id")
    if address:
        if count is None or index is None:
            raise ConfigError(
                f"distributed.coordinator_address={address} needs distributed.num_processes and "
                "distributed.process_id (0 on the coordinator's host)"
            )
        if not (isinstance(count, int) and isinstance(index, int) and 0 <= index < count):
            raise ConfigError(
                f"distributed.process_id={index} must be in [0, distributed.num_processes={count})"
            )
        return {"coordinator_address": str(address), "num_processes": count, "process_id": index}
    if count is not None or index is not None:
        raise ConfigError(
            "distributed.num_processes/process_id need distributed.coordinator_address=host:port"
        )
    if "SLURM_STEP_NODELIST" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1:
        kwargs: dict[str, Any] = {"cluster_detection_method": "slurm"}  # JAX reads SLURM_* itself
        gpus = int(environ.get("SLURM_GPUS_ON_NODE") or 0)
        if gpus > 1 and environ.get("SLURM_STEP_TASKS_PER_NODE", "").startswith("1("):
            # One task per node (slurm/train.sbatch) drives all of the node's GPUs; JAX's
            # default would give each task only the GPU numbered SLURM_LOCALID.
            kwargs["local_device_ids"] = list(range(gpus))
        return kwargs
    if tpu_runtime and "cpu" not in environ.get("JAX_PLATFORMS", ""):
        return {}  # a Cloud TPU VM: JAX asks the TPU metadata for the slice's hosts
    return None


def initialize(cfg: Mapping[str, Any] | None) -> None:
    """Join the other processes of the run, if it has any; fail in ``timeout_s`` if one never comes.

    JAX's own timeout aborts with a C++ stack trace, so a watchdog thread ends the
    process first with one line that says what to check.
    """
    cfg = cfg or {}
    kwargs = plan(cfg, os.environ, importlib.util.find_spec("libtpu") is not None)
    if kwargs is None:
        return
    import jax

    if jax.distributed.is_initialized():  # preflight joined already; run() asks again
        return

    timeout = int(cfg.get("timeout_s", 300))
    where = kwargs.get("coordinator_address", "the coordinator")
    watchdog = threading.Timer(timeout, _give_up, (timeout, where, kwargs))
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(**kwargs, initialization_timeout=timeout + _JAX_TIMEOUT_MARGIN_S)
    finally:
        watchdog.cancel()
    if jax.process_index() != 0:
        _drop_file_logs()


def _give_up(timeout: int, where: str, kwargs: dict) -> None:
    count = kwargs.get("num_processes", "all")
    print(
        f"error: the processes of this run did not all reach {where} in distributed.timeout_s={timeout} s: "
        f"start all {count} of them (each with its own distributed.process_id), check that process 0's host "
        "and port are reachable, or raise distributed.timeout_s",
        file=sys.stderr,
        flush=True,
    )
    os._exit(EXIT_USER_ERROR)


def _drop_file_logs() -> None:
    """Only process 0 writes ``train.log``: the others keep their console output."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()
