"""Ask Slurm, before a sweep submits anything, whether it would accept the jobs.

submitit reports a rejected submission (a partition that does not exist, more GPUs
than a node has, a time limit over the partition's) as a long traceback, after the
sweep has started. ``check_launcher`` builds the same job script submitit would,
asks ``sbatch --test-only`` about it and raises a ConfigError carrying Slurm's own
message. The CLI preflight calls it for ``hydra/launcher=slurm``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from research.errors import ConfigError

SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
# Keys of hydra.launcher that are not sbatch resources (submitit's own, or resolved per job).
NOT_RESOURCES = ("_target_", "submitit_folder", "max_num_timeout", "name")
SBATCH_TIMEOUT_S = 30


def sbatch_script(launcher: DictConfig | dict, folder: Path) -> str:
    """The job script submitit would write for this ``hydra.launcher`` config (command: ``true``)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    raw = OmegaConf.to_container(launcher, resolve=False) if OmegaConf.is_config(launcher) else dict(launcher)
    params = OmegaConf.to_container(
        OmegaConf.create({k: v for k, v in raw.items() if k not in NOT_RESOURCES}), resolve=True
    )
    shared = set(OmegaConf.structured(BaseQueueConf).keys())  # executor-agnostic names, as Hydra's launcher
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()})
    return executor._executor._make_submission_file_text("true", "preflight")


def _partitions() -> str:
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=SBATCH_TIMEOUT_S
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return ", ".join(sorted(set(out.split())))


def check_launcher(launcher: DictConfig | dict[str, Any]) -> None:
    """Raise ConfigError with Slurm's message if it would refuse the jobs; a no-op for other launchers."""
    if launcher.get("_target_") != SLURM_LAUNCHER:
        return
    if shutil.which("sbatch") is None:
        raise ConfigError(
            "hydra/launcher=slurm needs Slurm's sbatch on PATH: run from a login node of the "
            "cluster, or drop hydra/launcher=slurm to run the jobs here"
        )
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "preflight.sh"
        script.write_text(sbatch_script(launcher, Path(tmp)))
        proc = subprocess.run(
            ["sbatch", "--test-only", str(script)], capture_output=True, text=True, timeout=SBATCH_TIMEOUT_S
        )
    if proc.returncode == 0:
        return
    errors = [line.split("error:", 1)[-1].strip() for line in proc.stderr.splitlines() if line.strip()]
    message = "; ".join(errors) or f"sbatch exited with {proc.returncode}"
    if "partition" in message and (names := _partitions()):
        message += f" (hydra.launcher.partition: one of {names})"
    raise ConfigError(f"Slurm refuses the jobs of hydra/launcher=slurm: {message}")
