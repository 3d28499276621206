#!/usr/bin/env bash
# Checks every PTX module of a CUDA build as the driver will load it: candle's kernels and moe-quant's. A module
# whose `.version` (PTX ISA) is newer than the target driver loads (MOE_QUANT_PTX_ISA_MAX, default 9.0: CUDA 13.0,
# driver 580), or that ptxas cannot assemble for its `.target` (for instance a call to a function no library
# defines), fails here instead of in every run on the GPU (CUDA_ERROR_INVALID_PTX). Run after `. tools/cuda-env.sh`
# (ptxas on the PATH); `npm run build:cuda` runs it.
#
#   tools/check-ptx.sh [TARGET_DIR]     (default target/cuda)
set -euo pipefail
target=${1:-target/cuda}
max=${MOE_QUANT_PTX_ISA_MAX:-9.0}
command -v ptxas >/dev/null || { echo "check-ptx: no ptxas on the PATH (source tools/cuda-env.sh)" >&2; exit 1; }
mapfile -t modules < <(find "$target" -path '*/build/*/out/*' -name '*.ptx' -size +0 | sort)
[ "${#modules[@]}" -gt 0 ] || { echo "check-ptx: no PTX modules under $target/*/build/*/out" >&2; exit 1; }
failed=0
for ptx in "${modules[@]}"; do
  version=$(sed -n 's/^[[:space:]]*\.version[[:space:]]\+\([0-9.]*\).*/\1/p' "$ptx" | head -n 1)
  arch=$(sed -n 's/^[[:space:]]*\.target[[:space:]]\+\(sm_[0-9a-z]*\).*/\1/p' "$ptx" | head -n 1)
  if [ -z "$version" ] || [ -z "$arch" ]; then
    echo "check-ptx: $ptx has no .version or .target line" >&2; failed=1; continue
  fi
  if [ "$(printf '%s\n%s\n' "$version" "$max" | sort -V | tail -n 1)" != "$max" ]; then
    echo "check-ptx: $ptx is PTX ISA $version, newer than the $max the target driver loads" >&2; failed=1; continue
  fi
  if ! message=$(ptxas -arch="$arch" "$ptx" -o /dev/null 2>&1); then
    echo "check-ptx: $ptx does not assemble for $arch: $message" >&2; failed=1
  fi
done
if [ "$failed" -ne 0 ]; then
  echo "check-ptx: the driver would refuse these modules; the CUDA wheels are not all of one release" \
    "(pip install -r tools/cuda-requirements.txt, then rebuild)" >&2
  exit 1
fi
echo "check-ptx: ${#modules[@]} PTX modules load on a driver for PTX ISA $max"
