"""W&B: offline when not logged in or when the server cannot be reached, with the whole config, group,
tags and job type; resumed by saved id; ``online`` without a login or a server is one line.

Every test points W&B at a closed loopback port: nothing here reaches another host.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from research.engine.writers import _unreachable
from tests.conftest import ROOT, run_train
from tests.wandb_records import read_records

CLOSED_PORT = "http://127.0.0.1:9"  # the discard port: nothing listens there, connections are refused
LOOPBACK = {  # the server and CoreWeave's metadata service (wandb's system monitor asks it) on loopback
    "WANDB_BASE_URL": CLOSED_PORT,
    "WANDB__STATS_COREWEAVE_METADATA_BASE_URL": CLOSED_PORT,
    "WANDB_ERROR_REPORTING": "false",
    "NO_PROXY": "127.0.0.1",  # a proxy set for this machine must not carry the probe elsewhere
}
KEY = "a" * 40  # well-formed, never sent anywhere

ARGS = (
    "optimizer/schedule=constant",
    "trainer.eval_every=20",
    "trainer.progress=false",
    "logger.wandb.group=sweep-a",
    "tags=[digits,smoke]",
)


def _runs(run_dir: Path) -> dict[str, list]:
    return {p.parent.name: read_records(p) for p in (run_dir / "wandb").glob("offline-run-*/run-*.wandb")}


def test_offline_record_and_resume_by_saved_id(run_dir: Path, tmp_path: Path) -> None:
    env = {**LOOPBACK, "WANDB_MODE": None, "WANDB_API_KEY": None, "HOME": str(tmp_path)}  # auto -> offline
    run_train("trainer.max_steps=40", *ARGS, f"hydra.run.dir={run_dir}", env=env)
    ((name, records),) = _runs(run_dir).items()
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.run_group == "sweep-a" and run.job_type == "train" and list(run.tags) == ["digits", "smoke"]
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["optimizer"]["_target_"] == "optax.adam" and config["data"]["batch_size"] == 32
    assert sum(r.WhichOneof("record_type") == "history" for r in records) >= 2
    summary_keys = {
        u.key for r in records if r.WhichOneof("record_type") == "summary" for u in r.summary.update
    }
    assert "steps" in summary_keys

    run_train("trainer.max_steps=80", *ARGS, f"hydra.run.dir={run_dir}", env=env)
    runs = _runs(run_dir)
    assert len(runs) == 2 and {n.rsplit("-", 1)[1] for n in runs} == {run.run_id}, runs.keys()


def test_a_login_without_a_reachable_server_logs_offline_and_says_so(run_dir: Path, tmp_path: Path) -> None:
    """wandb.init alone retried for 90 s, then ended the run with a traceback."""
    env = {**LOOPBACK, "WANDB_MODE": None, "WANDB_API_KEY": KEY, "HOME": str(tmp_path)}
    proc = run_train("trainer.max_steps=8", "trainer.progress=false", f"hydra.run.dir={run_dir}", env=env)
    notice = [line for line in proc.stdout.splitlines() if "cannot be reached" in line]
    assert len(notice) == 1 and CLOSED_PORT in notice[0] and "logging offline" in notice[0], proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert (run_dir / "metrics.jsonl").is_file() and (run_dir / "summary.json").is_file()
    assert len(_runs(run_dir)) == 1


def test_online_without_a_login_is_one_line_before_the_run_directory(run_dir: Path, tmp_path: Path) -> None:
    env = {**LOOPBACK, "WANDB_MODE": "online", "WANDB_API_KEY": None, "HOME": str(tmp_path)}
    proc = run_train(
        "trainer.max_steps=8", "trainer.progress=false", f"hydra.run.dir={run_dir}", env=env, check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: WANDB_MODE=online needs a W&B login: set WANDB_API_KEY or run `wandb login`"
    ]
    assert not run_dir.exists()


def test_online_with_a_login_but_no_server_is_a_user_error(tmp_path: Path) -> None:
    """The check the preflight makes, in a process of its own: wandb reads its settings once per process."""
    code = (
        "from research.engine.writers import check_wandb\n"
        "try:\n    check_wandb({'mode': 'online'})\n"
        "except Exception as e:\n    print(type(e).__name__, e)"
    )
    env = {**os.environ, **LOOPBACK, "WANDB_API_KEY": KEY, "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.stdout.strip() == (
        f"UserError logger.wandb.mode=online, but the W&B server {CLOSED_PORT} "
        "cannot be reached ([Errno 111] Connection refused)"
    ), proc.stderr


def test_a_server_that_never_answers_is_given_up_on_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never replies
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        assert _unreachable(url, timeout_s=0.5) in ("no answer within 0.5 s", "timed out")


class _Refusing(http.server.BaseHTTPRequestHandler):
    """A W&B server that answers every request with 401, as the real one does to an unknown key."""

    def _refuse(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"errors": [{"message": "user is not logged in"}]}')

    do_GET = do_POST = do_HEAD = _refuse

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[str]:
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{server.server_address[1]}"
        server.shutdown()


def test_a_server_that_refuses_the_key_is_one_line(run_dir: Path, tmp_path: Path, refusing_server: str):
    env = {**LOOPBACK, "WANDB_BASE_URL": refusing_server, "WANDB_MODE": None, "WANDB_API_KEY": KEY}
    proc = run_train(
        "trainer.max_steps=8", "trainer.progress=false", f"hydra.run.dir={run_dir}",
        env={**env, "HOME": str(tmp_path)}, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (  # after wandb's own "Loaded credentials" line
        "error: W&B did not start the run (user is not logged in): check WANDB_API_KEY or `wandb login`, "
        "or log offline with logger.wandb.mode=offline"
    )
