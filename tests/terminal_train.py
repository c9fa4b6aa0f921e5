"""``python tests/terminal_train.py <overrides>``: the real CLI, taking Ctrl-C as at a terminal.

A background job of a non-interactive shell (a CI script, ``nohup ... &``) starts with
SIGINT ignored; every child inherits that and Python keeps it ignored. Tests that press
Ctrl-C (send SIGINT) start training through this wrapper, which restores Python's handler.
"""

import runpy
import signal
import sys

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = ["research.train", *sys.argv[1:]]
    runpy.run_module("research.train", run_name="__main__")
