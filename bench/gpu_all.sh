#!/usr/bin/env bash
# Every GPU figure this project wants, in one script and one Markdown table (~7 min on one H100).
#
#   bench/gpu_all.sh --prepare   # here, once, with network: wheels and TFDS data into .device/
#   bench/gpu_all.sh --dry-run   # here, JAX_PLATFORMS=cpu: every path, config, wheel and data folder checked
#   bench/gpu_all.sh             # on the GPU machine (carry .device): writes $OUT/gpu_all.md or bench/gpu_all.md
#
# The device machine has no network: what the working tree lacks travels in .device/ (ignored by
# git): .device/wheels (bench/gpu_wheels.txt's carry lines) and .device/tfds (digits, the
# Shakespeare corpus). docs/benchmarks.md "All GPU figures in one script" says how to run it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEVICE_DIR=${GPU_ALL_DEVICE_DIR:-.device}
TFDS_HOME=${TFDS_DATA_DIR:-$HOME/tensorflow_datasets}
PLATFORMS=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

case "${1:-}" in
  --prepare)
    mkdir -p "$DEVICE_DIR/wheels" "$DEVICE_DIR/tfds"
    grep -qx "/.device/" .git/info/exclude 2>/dev/null || echo "/.device/" >> .git/info/exclude
    for spec in $(sed -n 's/^carry //p' bench/gpu_wheels.txt); do
      # a wheel for the device's Python 3.12 on x86-64; a source-only package is built here (pure Python)
      "$PYTHON" -m pip download -q --no-deps --only-binary=:all: "${PLATFORMS[@]}" -d "$DEVICE_DIR/wheels" "$spec" \
        || "$PYTHON" -m pip wheel -q --no-deps -w "$DEVICE_DIR/wheels" "$spec"
    done
    for name in digits shakespeare_char; do
      [ -d "$TFDS_HOME/$name" ] || { echo "error: $TFDS_HOME/$name is missing: python -m research.data.prepare $name" >&2; exit 1; }
      rm -rf "${DEVICE_DIR:?}/tfds/$name" && cp -r "$TFDS_HOME/$name" "$DEVICE_DIR/tfds/"
    done
    du -sh "$DEVICE_DIR"
    exec env JAX_PLATFORMS=cpu "$PYTHON" bench/gpu_all.py --dry-run ;;
  --dry-run)
    exec env JAX_PLATFORMS=cpu "$PYTHON" bench/gpu_all.py --dry-run ;;
  "")
    SITE=
    if [ -d "$DEVICE_DIR/wheels" ]; then
      SITE=/tmp/gpu_all_site
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$DEVICE_DIR"/wheels/*.whl
    fi
    export PYTHONPATH=${SITE:+$SITE:}$PWD${PYTHONPATH:+:$PYTHONPATH}
    [ -d "$DEVICE_DIR/tfds" ] && export TFDS_DATA_DIR=$PWD/$DEVICE_DIR/tfds
    export PYTHONUNBUFFERED=1
    exec "$PYTHON" bench/gpu_all.py --out "${OUT:-bench}/gpu_all.md" ;;
  *)
    echo "usage: bench/gpu_all.sh [--prepare | --dry-run]" >&2; exit 2 ;;
esac
