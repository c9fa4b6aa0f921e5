"""The console's record (train.log): what was shown, a progress bar as its last state."""

from __future__ import annotations

import sys
from pathlib import Path

from research import console


def test_recorded_keeps_lines_and_the_last_state_of_a_redrawn_bar(tmp_path: Path, capsys) -> None:
    log = tmp_path / "train.log"
    with console.recorded(log):
        print("resuming from step 640")
        for step in range(1, 20001):  # a bar redrawn all run long, never ending its line
            sys.stderr.write(f"\r{step}/20000 steps")
        assert len(sys.stderr.pending) < 40  # held as its last state, not all 20000
        sys.stderr.write("\n")
        print("error: something to fix", file=sys.stderr)
    assert log.read_text().splitlines() == [
        "resuming from step 640",
        "20000/20000 steps",
        "error: something to fix",
    ]
    assert "\r19999/20000 steps" in capsys.readouterr().err  # the console itself saw every redraw
    assert not isinstance(sys.stdout, console._Tee)  # put back
