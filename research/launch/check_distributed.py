"""Check that the processes of a multi-host job find each other and can sum across hosts.

    srun --nodes=2 --ntasks-per-node=1 python -m research.launch.check_distributed     # Slurm
    python -m research.launch.tpu ssh --name r1 --zone Z -- \\
        'cd ~/research && .venv/bin/python -m research.launch.check_distributed'        # TPU pod slice

Run it on a new cluster before a long job. ``jax.distributed.initialize()`` detects
Slurm (under ``srun``) and Cloud TPU by itself. Every device then holds its process's
index and one jitted sum runs over all devices of all processes. Each process prints
one JSON line; the exit status is 1 if the sum is not what the process count implies.
"""

from __future__ import annotations

import json
import sys


def check() -> dict:
    """Initialise jax.distributed, sum process indices over the global mesh; the facts as a dict."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    jax.distributed.initialize()
    mesh = jax.make_mesh((jax.device_count(),), ("devices",))
    local = np.full((jax.local_device_count(),), jax.process_index(), dtype=np.float32)
    spread = jax.make_array_from_process_local_data(NamedSharding(mesh, P("devices")), local)
    total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(spread)
    got = float(total.addressable_data(0))
    expected = float(jax.local_device_count() * sum(range(jax.process_count())))
    return {
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "local_devices": jax.local_device_count(),
        "devices": jax.device_count(),
        "platform": jax.devices()[0].platform,
        "sum": got,
        "expected": expected,
        "ok": got == expected,
    }


def main() -> None:
    result = check()
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
