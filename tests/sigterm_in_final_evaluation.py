"""``python tests/sigterm_in_final_evaluation.py <overrides>``: research.train, with a SIGTERM sent
to itself as the final evaluation starts (after the last step and its checkpoint), as Slurm may."""

import os
import runpy
import signal
import sys

from research.engine import loop

if __name__ == "__main__":
    finish = loop.Loop.finish

    def finish_under_sigterm(self, state, start_wall):
        os.kill(os.getpid(), signal.SIGTERM)
        return finish(self, state, start_wall)

    loop.Loop.finish = finish_under_sigterm
    sys.argv = ["research.train", *sys.argv[1:]]
    runpy.run_module("research.train", run_name="__main__")
