#!/usr/bin/env bash
# Builds benches/e2e/kernel_trace.c into OUT_DIR/libtrace.so, with CUPTI 13.0 (the CUDA release the GPU machines'
# driver runs) from its PyPI wheel, and copies libcupti.so.13 beside it (the library finds it there).
#
#   bash benches/e2e/kernel_trace.sh OUT_DIR
#   CUDA_INJECTION64_PATH=OUT_DIR/libtrace.so TRACE_OUT=trace.csv <any CUDA program>
#   python3 benches/e2e/kernel_report.py trace.csv
set -euo pipefail
out=$(mkdir -p "$1" && cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip download --quiet --no-deps --dest "$work" nvidia-cuda-cupti==13.0.85
pip download --quiet --no-deps --dest "$work" nvidia-cuda-runtime==13.0.88 nvidia-cuda-crt==13.0.88
(cd "$work" && for wheel in *.whl; do python3 -m zipfile -e "$wheel" .; done)
include="$work/nvidia/cu13/include"
gcc -O2 -shared -fPIC -o "$out/libtrace.so" "$here/kernel_trace.c" -I"$include" \
  -L"$work/nvidia/cu13/lib" -l:libcupti.so.13 -Wl,-rpath,'$ORIGIN'
cp "$work/nvidia/cu13/lib/libcupti.so.13" "$out/"
echo "$out/libtrace.so"
