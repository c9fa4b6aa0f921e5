"""Cloud TPU from a laptop: print, then run, the ``gcloud`` commands of each step.

    python -m research.launch.tpu create --name r1 --zone us-central2-b --accelerator v4-8
    python -m research.launch.tpu setup  --name r1 --zone us-central2-b --bucket my-bucket
    python -m research.launch.tpu train  --name r1 --zone us-central2-b --bucket my-bucket \\
        -- +experiment=cifar10_resnet20 seed=0
    python -m research.launch.tpu delete --name r1 --zone us-central2-b

Every command runs on all workers of the slice (one process per host; JAX finds the
others by itself). With ``--bucket`` the bucket is mounted at ``~/gcs`` on every
worker (Cloud Storage FUSE): run directories (checkpoints) and TFDS data live there,
so a preempted slice loses nothing and a new one resumes from the same run directory.
TPU_SETUP.md walks through it. ``--dry-run`` prints without running.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from research.console import fail
from research.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
# Software image per TPU generation (https://cloud.google.com/tpu/docs/runtimes).
RUNTIME_VERSIONS = {
    "v2": "tpu-ubuntu2204-base",
    "v3": "tpu-ubuntu2204-base",
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}
PYTHON = "3.12"  # jax >= 0.11 needs Python >= 3.12 (pyproject requires-python)
REMOTE_DIR = "research"  # the project on each worker, relative to $HOME
MOUNT = "gcs"  # the bucket's mount point on each worker, relative to $HOME
ARCHIVE = "research.tar.gz"
DEFAULT_GROUP = "tpu"  # run directory parent when no --group is given
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

GCSFUSE_INSTALL = (
    "command -v gcsfuse >/dev/null || { "
    'echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt '
    'gcsfuse-$(lsb_release -c -s) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null; '
    "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg "
    "| sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null; "
    "sudo apt-get update -q && sudo apt-get install -y -q gcsfuse; }"
)


def _checked_name(value: str, what: str) -> str:
    if not NAME.match(value):
        raise UserError(f"{what} '{value}' may hold only letters, digits, '_', '.', '-'")
    return value


def runtime_version(accelerator: str) -> str:
    """The default TPU software version for an accelerator type such as v4-8 or v5litepod-16."""
    generation = accelerator.split("-")[0]
    if generation not in RUNTIME_VERSIONS:
        raise UserError(
            f"unknown TPU accelerator '{accelerator}': use e.g. v4-8, v5litepod-8, v5p-8, v6e-8, "
            "or pass --version"
        )
    return RUNTIME_VERSIONS[generation]


def _where(args: argparse.Namespace) -> list[str]:
    return [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])


def _tpus(args: argparse.Namespace, kind: str, verb: str, *rest: str) -> list[str]:
    """``gcloud compute tpus <kind> <verb> <rest...> --zone=... [--project=...]``."""
    return ["gcloud", "compute", "tpus", kind, verb, *rest, *_where(args)]


def create_commands(args: argparse.Namespace) -> list[list[str]]:
    """A TPU VM now, or (``--queued``) a queued resource that waits for capacity."""
    version = args.version or runtime_version(args.accelerator)
    spot = ["--spot"] if args.spot else []
    accelerator = f"--accelerator-type={args.accelerator}"
    if args.queued:
        node = [f"--node-id={args.name}", accelerator, f"--runtime-version={version}"]
        return [_tpus(args, "queued-resources", "create", args.name, *node, *spot)]
    return [_tpus(args, "tpu-vm", "create", args.name, accelerator, f"--version={version}", *spot)]


def _on_workers(args: argparse.Namespace, command: str) -> list[str]:
    return [*_tpus(args, "tpu-vm", "ssh", args.name, f"--worker={args.worker}"), f"--command={command}"]


def setup_script(bucket: str | None) -> str:
    """What each worker runs once: unpack the code, Python with uv, the project with its tpu extra."""
    lines = [
        "set -euo pipefail",
        f"mkdir -p ~/{REMOTE_DIR} && tar -xzf ~/{ARCHIVE} -C ~/{REMOTE_DIR}",
        "command -v uv >/dev/null || curl -LsSf https://astral.sh/uv/install.sh | sh",
        'export PATH="$HOME/.local/bin:$PATH"',
        f"cd ~/{REMOTE_DIR} && uv venv --allow-existing --python {PYTHON} .venv",
        "uv pip install --python .venv/bin/python -e '.[tpu]'",
    ]
    if bucket:
        lines += [
            GCSFUSE_INSTALL,
            f"mkdir -p ~/{MOUNT}",
            f"mountpoint -q ~/{MOUNT} || gcsfuse --implicit-dirs {bucket} ~/{MOUNT}",
        ]
    return "; ".join(lines)


def setup_commands(args: argparse.Namespace, archive: Path) -> list[list[str]]:
    """Ship the committed code (``git archive HEAD``) to every worker and install it there."""
    return [
        ["git", "-C", str(ROOT), "archive", "--format=tar.gz", f"--output={archive}", "HEAD"],
        _tpus(args, "tpu-vm", "scp", str(archive), f"{args.name}:{ARCHIVE}", f"--worker={args.worker}"),
        _on_workers(args, setup_script(args.bucket)),
    ]


def train_command(args: argparse.Namespace) -> list[list[str]]:
    """``research.train`` on every worker, all into one run directory: runs/<group>/<run>.

    The directory is fixed (not the launch time) so that rerunning after a preemption resumes.
    """
    group = _checked_name(args.group or DEFAULT_GROUP, "--group")
    run = _checked_name(args.run or args.name, "--run")
    base = f"$HOME/{MOUNT}" if args.bucket else f"$HOME/{REMOTE_DIR}"
    overrides = [shlex.quote(o) for o in args.overrides] + [f"hydra.run.dir={base}/runs/{group}/{run}"]
    if args.group:
        overrides.append(f"logger.wandb.group={group}")
    env = f"TFDS_DATA_DIR=$HOME/{MOUNT}/tensorflow_datasets " if args.bucket else ""
    train = f"{env}{'nohup ' if args.detach else ''}.venv/bin/python -m research.train {' '.join(overrides)}"
    if args.detach:  # survives the ssh session; ssh returns at once
        train += f" > $HOME/train-{group}-{run}.log 2>&1 < /dev/null &"
    return [_on_workers(args, f"cd ~/{REMOTE_DIR} && {train}")]


def ssh_command(args: argparse.Namespace) -> list[list[str]]:
    return [_on_workers(args, " ".join(args.command))]


def status_command(args: argparse.Namespace) -> list[list[str]]:
    kind = "queued-resources" if args.queued else "tpu-vm"
    return [_tpus(args, kind, "describe", args.name)]


def delete_command(args: argparse.Namespace) -> list[list[str]]:
    if args.queued:  # --force also deletes the TPU VM the queued resource holds
        return [_tpus(args, "queued-resources", "delete", args.name, "--force", "--quiet")]
    return [_tpus(args, "tpu-vm", "delete", args.name, "--quiet")]


def execute(commands: Sequence[Sequence[str]], dry_run: bool) -> None:
    """Print each command as a shell line, then run it; stop at the first failure."""
    for command in commands:
        print("+ " + shlex.join(command), flush=True)
        if dry_run:
            continue
        if shutil.which(command[0]) is None:
            raise UserError(
                f"{command[0]} not found on PATH: install the Google Cloud CLI "
                "(https://cloud.google.com/sdk/docs/install) and run `gcloud init`"
            )
        code = subprocess.run(list(command)).returncode
        if code != 0:
            raise UserError(f"`{shlex.join(command[:5])} ...` failed with exit code {code}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m research.launch.tpu", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", required=True, help="TPU VM (or queued resource) name")
    common.add_argument("--zone", required=True, help="e.g. us-central2-b (v4), us-east5-a (v5p)")
    common.add_argument("--project", help="GCP project (default: gcloud's configured project)")
    common.add_argument("--queued", action="store_true", help="a queued resource rather than a plain TPU VM")
    common.add_argument("--dry-run", action="store_true", help="print the commands without running them")
    workers = argparse.ArgumentParser(add_help=False)
    workers.add_argument("--worker", default="all", help="which workers: all (default) or an index")
    workers.add_argument("--bucket", help="GCS bucket (no gs://) mounted at ~/gcs for runs and data")

    create = sub.add_parser("create", parents=[common], help="create a TPU VM or queued resource")
    create.add_argument("--accelerator", required=True, help="e.g. v4-8 (one host), v4-32 (4 hosts)")
    create.add_argument("--version", help="TPU software version (default: by generation)")
    create.add_argument("--spot", action="store_true", help="spot capacity: cheaper, can be preempted")
    sub.add_parser("setup", parents=[common, workers], help="copy the code and install it on every worker")
    train = sub.add_parser("train", parents=[common, workers], help="run research.train on every worker")
    train.add_argument(
        "--group",
        help="W&B group (needs the W&B logger) and run directory parent "
        f"(default: {DEFAULT_GROUP}); one per sweep",
    )
    train.add_argument("--run", help="run directory name (default: --name); reuse it to resume")
    train.add_argument("--detach", action="store_true", help="return at once; output goes to ~/train-*.log")
    train.add_argument("overrides", nargs="*", help="Hydra overrides, after --")
    ssh = sub.add_parser("ssh", parents=[common, workers], help="run a shell command on every worker")
    ssh.add_argument("command", nargs="+", help="the command, after --")
    sub.add_parser("status", parents=[common], help="describe the TPU VM or queued resource")
    sub.add_parser("delete", parents=[common], help="delete the TPU VM or queued resource")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        _checked_name(args.name, "--name")
        if args.action == "setup":
            with tempfile.TemporaryDirectory() as tmp:
                execute(setup_commands(args, Path(tmp) / ARCHIVE), args.dry_run)
            return
        build = {
            "create": create_commands,
            "train": train_command,
            "ssh": ssh_command,
            "status": status_command,
            "delete": delete_command,
        }[args.action]
        execute(build(args), args.dry_run)
    except UserError as e:
        fail(str(e))


if __name__ == "__main__":
    main()
