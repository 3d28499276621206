#!/usr/bin/env bash
# The several-GPU benchmark: one synthetic checkpoint quantized on 1, 2, 4 and 8 GPUs of this host (as many as it
# has; COUNTS="1 2" overrides), data parallel (`cuda:0,cuda:1,…`), the page cache dropped before each run. Prints
# time, speed-up, scaling efficiency and peak memory per GPU, checks that every run writes the one-GPU run's bytes,
# and extrapolates to the full model (stated as such).
#
#   benches/e2e/scaling.sh E2E_QUANTIZE PLANS_DIR FULL_LAYERS SAMPLES SEQ_LEN BATCH FORMAT OUT
#
# PLANS_DIR is what prepare.mjs writes (e.g. `--config benches/e2e/deepseek-v3.config.json --layers 5`, as many
# layers as the disk holds); FULL_LAYERS the model's real layer count (61 for DeepSeek-V3, 48 for Qwen3-30B-A3B).
# DEVICE=cpu runs the same steps with CPU entries (`cpu,cpu,…`, COUNTS needed), which exercises the split and this
# script on a machine without a GPU; the times then say nothing about GPUs.
set -uo pipefail
binary=$1 plans=$2 full=$3 samples=$4 seq_len=$5 batch=$6 format=$7 out=$8
here=$(cd "$(dirname "$0")" && pwd)
work=${E2E_WORK:-/tmp/moe-quant-scaling}
mkdir -p "$work" "$out"
kind=${DEVICE:-cuda}
if [ "$kind" = cuda ]; then
  export LD_LIBRARY_PATH=$("$here/cuda-libs.sh")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  gpus=$(nvidia-smi -L | wc -l)
  counts=${COUNTS:-$(for n in 1 2 4 8; do [ "$n" -le "$gpus" ] && echo "$n"; done)}
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sort | uniq -c | tee "$out/card.txt"
else
  counts=${COUNTS:?DEVICE=cpu needs COUNTS}
  echo "CPU entries ($(nproc) cores)" | tee "$out/card.txt"
fi
cp "$plans/config.json" "$out/config.json"
# The checkpoint is written once and kept for later runs of the same tensor list and calibration size.
made_from="$(md5sum <"$plans/tensors.json" | cut -d' ' -f1) $samples $seq_len"
if [ "$(cat "$work/model/.made-from" 2>/dev/null)" != "$made_from" ]; then
  rm -rf "$work/model"
  python3 "$here/make_checkpoint.py" "$plans" "$work/model" "$samples" "$seq_len" | tee "$out/checkpoint.json" &&
    echo "$made_from" >"$work/model/.made-from"
fi

# Warm-up, not measured: one run of one sample. The driver compiles the kernels' PTX for the card on their first
# use on a machine and keeps the result in its cache (9 s on the DeepSeek-V3 shape on an H100); without
# this, the first measured run would pay for it.
if [ "$kind" = cuda ]; then
  python3 -c "import json, sys; json.dump(json.load(open(sys.argv[1]))[:1], open(sys.argv[2], 'w'))" \
    "$work/model/calib_ids.json" "$work/warm-up-ids.json"
  "$binary" "$work/model" "$work/warm-up" "$plans/descriptor.json" "$plans/plan-$format.json" "$work/warm-up-ids.json" \
    cuda:0 1 >/dev/null 2>&1
  rm -rf "$work/warm-up"
fi

for n in $counts; do
  if [ "$kind" = cuda ]; then devices=$(seq -s, -f 'cuda:%g' 0 $((n - 1))); else devices=$(yes cpu | head -n "$n" | paste -sd,); fi
  rm -rf "$work/out-$n"
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  monitor=
  if [ "$kind" = cuda ]; then
    nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 100 >"$out/gpu-$n.csv" &
    monitor=$!
  fi
  started=$(date +%s.%N)
  "$binary" "$work/model" "$work/out-$n" "$plans/descriptor.json" "$plans/plan-$format.json" "$work/model/calib_ids.json" \
    "$devices" "$batch" >"$out/run-$n.json" 2>"$out/run-$n.log"
  status=$?
  ended=$(date +%s.%N)
  [ -n "$monitor" ] && { kill $monitor 2>/dev/null; wait $monitor 2>/dev/null; }
  identical=null
  if [ "$n" != 1 ] && [ -d "$work/out-1" ]; then
    identical=true
    for f in $(cd "$work/out-1" && ls); do cmp -s "$work/out-1/$f" "$work/out-$n/$f" || identical=false; done
    rm -rf "$work/out-$n"
  fi
  echo "{\"devices\": $n, \"status\": $status, \"wall_seconds\": $(python3 -c "print(round($ended - $started, 3))"), \"identical_to_one\": $identical}" >"$out/measure-$n.json"
  echo "$n device(s): status $status, $(cat "$out/measure-$n.json")" >&2
done
rm -rf "$work/out-1"
python3 "$here/scaling_report.py" "$out" "$full" | tee "$out/report.md"
