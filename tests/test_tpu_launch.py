"""research.launch.tpu against a stand-in ``gcloud`` on PATH that records its arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from research import errors
from research.launch import tpu

FAKE_GCLOUD = """#!/usr/bin/env python3
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if "scp" in args:  # keep what would be copied, to check it
    shutil.copy(args[args.index("scp") + 1], os.environ["FAKE_GCLOUD_LOG"] + ".tar.gz")
sys.exit(int(os.environ.get("FAKE_GCLOUD_EXIT", "0")))
"""


@pytest.fixture
def gcloud(tmp_path, monkeypatch) -> Path:
    """Put the stand-in first on PATH; returns its log (one JSON argument list per call)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    log = tmp_path / "gcloud.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GCLOUD_LOG", str(log))
    return log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def remote_command(call: list[str]) -> str:
    return next(a for a in call if a.startswith("--command="))[len("--command=") :]


def test_create_single_host_and_queued_pod_slice(gcloud):
    tpu.main(["create", "--name", "r1", "--zone", "us-central2-b", "--accelerator", "v4-8"])
    tpu.main(
        [
            "create",
            "--name",
            "pod",
            "--zone",
            "us-east5-a",
            "--accelerator",
            "v5p-32",
            "--queued",
            "--spot",
            "--project",
            "my-proj",
        ]
    )
    vm, queued = calls(gcloud)
    assert vm == [
        "compute",
        "tpus",
        "tpu-vm",
        "create",
        "r1",
        "--accelerator-type=v4-8",
        "--version=tpu-ubuntu2204-base",
        "--zone=us-central2-b",
    ]
    assert queued == [
        "compute",
        "tpus",
        "queued-resources",
        "create",
        "pod",
        "--node-id=pod",
        "--accelerator-type=v5p-32",
        "--runtime-version=v2-alpha-tpuv5",
        "--spot",
        "--zone=us-east5-a",
        "--project=my-proj",
    ]


def test_setup_ships_the_committed_code_and_installs_the_tpu_extra(gcloud):
    tpu.main(["setup", "--name", "r1", "--zone", "z", "--bucket", "my-bucket"])
    scp, ssh = calls(gcloud)
    assert scp[:4] == ["compute", "tpus", "tpu-vm", "scp"] and scp[5] == "r1:research.tar.gz"
    assert "--worker=all" in scp and "--worker=all" in ssh
    with tarfile.open(str(gcloud) + ".tar.gz") as archive:
        assert {"pyproject.toml", "research/train.py", "research/errors.py"} <= set(archive.getnames())
    script = remote_command(ssh)
    assert "tar -xzf ~/research.tar.gz -C ~/research" in script
    assert "uv pip install --python .venv/bin/python -e '.[tpu]'" in script
    assert "gcsfuse --implicit-dirs my-bucket ~/gcs" in script


def test_train_runs_on_all_workers_into_a_fixed_run_directory(gcloud):
    argv = [
        "train",
        "--name",
        "r1",
        "--zone",
        "z",
        "--bucket",
        "b",
        "--group",
        "lr-sweep",
        "--run",
        "lr3",
        "--",
        "+experiment=digits_mlp",
        "optimizer.learning_rate=1e-3",
        "tags=[a, b]",
    ]
    tpu.main(argv)
    tpu.main(argv)  # a rerun (after a preemption) targets the same directory: it resumes
    first, second = calls(gcloud)
    assert first == second
    assert first[:5] == ["compute", "tpus", "tpu-vm", "ssh", "r1"] and "--worker=all" in first
    command = remote_command(first)
    assert command == (
        "cd ~/research && TFDS_DATA_DIR=$HOME/gcs/tensorflow_datasets .venv/bin/python -m "
        "research.train +experiment=digits_mlp optimizer.learning_rate=1e-3 'tags=[a, b]' "
        "hydra.run.dir=$HOME/gcs/runs/lr-sweep/lr3 logger.wandb.group=lr-sweep"
    )


def test_detached_train_without_a_bucket(gcloud):
    tpu.main(["train", "--name", "r1", "--zone", "z", "--detach", "--", "+experiment=digits_mlp"])
    command = remote_command(calls(gcloud)[0])
    assert command == (
        "cd ~/research && nohup .venv/bin/python -m research.train +experiment=digits_mlp "
        "hydra.run.dir=$HOME/research/runs/tpu/r1 > $HOME/train-tpu-r1.log 2>&1 < /dev/null &"
    )


def test_delete_and_status(gcloud):
    tpu.main(["delete", "--name", "r1", "--zone", "z", "--queued"])
    tpu.main(["status", "--name", "r1", "--zone", "z"])
    assert calls(gcloud) == [
        ["compute", "tpus", "queued-resources", "delete", "r1", "--force", "--quiet", "--zone=z"],
        ["compute", "tpus", "tpu-vm", "describe", "r1", "--zone=z"],
    ]


def test_dry_run_prints_and_runs_nothing(gcloud, capsys):
    tpu.main(["ssh", "--name", "r1", "--zone", "z", "--dry-run", "--", "wandb", "login"])
    assert calls(gcloud) == []
    printed = capsys.readouterr().out
    assert printed == "+ gcloud compute tpus tpu-vm ssh r1 --worker=all --zone=z '--command=wandb login'\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["create", "--name", "r1", "--zone", "z", "--accelerator", "v9-8"],
            "unknown TPU accelerator 'v9-8'",
        ),
        (["train", "--name", "r1", "--zone", "z", "--run", "a b"], "--run 'a b' may hold only"),
        (["delete", "--name", "r1", "--zone", "z"], "failed with exit code 3"),
    ],
)
def test_errors_are_one_line(gcloud, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("FAKE_GCLOUD_EXIT", "3")
    with pytest.raises(SystemExit) as exit_info:
        tpu.main(argv)
    assert exit_info.value.code == errors.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_missing_gcloud_says_how_to_install(tmp_path):
    argv = [sys.executable, "-m", "research.launch.tpu", "status", "--name", "r1", "--zone", "z"]
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PATH": str(tmp_path)})
    assert proc.returncode == errors.EXIT_USER_ERROR
    assert "gcloud not found on PATH: install the Google Cloud CLI" in proc.stderr
