"""``research.train ... trainer.dry_run=true``: a run's memory, FLOPs and compile time, then exit.

Called by the train command's preflight, before Hydra creates anything: the config is built
as for the run, laid out and compiled by ``engine.plan``, and reported; no run directory,
checkpoint or record is written. ``trainer.dry_run_devices=N`` plans a mesh of N devices
that are not here, emulated as N CPU devices (``jax_num_cpu_devices``) and compiled ahead for them
(``.trace().lower().compile()``): parameter and optimizer-state shards, data and FLOPs are those
of the target mesh, temporaries are the CPU compiler's. A topology of absent devices cannot be
compiled for from here: ``jax.experimental.topologies.get_topology_desc`` asks a PJRT plugin's
topology factory (``xla_bridge.make_pjrt_topology``), and in jax 0.11.2 and 0.12.1 with the
CPU-only jaxlib none is registered for ``cpu`` or ``cuda`` ("topology not implemented"); a
compile-only GPU topology needs the jax CUDA plugin (and a GPU target config), a TPU one libtpu.
An ``AbstractMesh`` lowers (``lower(lowering_platforms=("cuda",))``), but ``compile()`` then
asks for a ``device_assignment`` of concrete devices (both versions).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from research import experiment
from research.errors import ConfigError


def dry_run(cfg: DictConfig, multirun: bool = False) -> None:
    """Print the plan of the run ``cfg`` describes; one line (ConfigError) when it will not fit."""
    if multirun:
        raise ConfigError("trainer.dry_run=true plans one run: drop -m and give one value per key")
    import jax

    from research.engine import distributed
    from research.engine.loop import Run
    from research.engine.plan import check_fits, device_memory, plan_run, report

    devices = cfg.trainer.get("dry_run_devices")
    if devices:
        _emulate_cpu_devices(jax, int(devices))
    distributed.initialize(cfg.get("distributed"))  # before anything touches a device
    built = experiment.build(cfg)
    settings = dataclasses.replace(
        built.trainer, resume=True, checkpoint=dataclasses.replace(built.trainer.checkpoint, enabled=False)
    )  # resume=True: nothing set aside; no checkpointer: nothing written
    run = Run(
        built.task,
        built.dataset,
        settings,
        built.steps,
        cfg.seed,
        OmegaConf.to_container(cfg.mesh),
        _run_dir(cfg),
        experiment.replicas_of(cfg),
        {**built.task.evaluators(), **built.evaluators},
        built.folds,
    )
    plan = plan_run(run)
    limit, source = device_memory(settings.device_memory_gb, run.mesh.devices.flat[0])
    print(report(plan, cfg.name, limit, source), flush=True)
    check_fits(plan, limit, source)


def _run_dir(cfg: DictConfig) -> Path:
    """Where the run would live: nothing may be written there (tests/test_dry_run.py checks)."""
    run_dir = OmegaConf.select(cfg, "hydra.run.dir", default=None, throw_on_resolution_failure=False)
    return Path(run_dir if isinstance(run_dir, str) else "outputs/dry_run")


def _emulate_cpu_devices(jax, count: int) -> None:
    """N CPU devices in this process; only possible before JAX has started its backends."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        if jax.device_count() == count and jax.devices()[0].platform == "cpu":
            return
        raise ConfigError(
            f"trainer.dry_run_devices={count} must be set before JAX starts: "
            "run it from the command line (python -m research.train ... trainer.dry_run=true)"
        )
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", count)
