#!/usr/bin/env bash
# The end-to-end race of BENCH.md on one GPU machine: moe-quant (CUDA build of the e2e_quantize example)
# against ModelOpt (nvidia-modelopt from wheels) on the same synthetic Qwen3-30B-A3B-shaped checkpoint, the
# same calibration ids and the same card, FP8 and NVFP4; then the tensor-by-tensor comparison and a table.
#
#   benches/e2e/run.sh BUNDLE LAYERS SAMPLES SEQ_LEN BATCH OUT
#
# BUNDLE holds e2e_quantize, plans-<LAYERS>/ (and plans-<LAYERS/2>/ for the linearity check, made by
# prepare.mjs) and wheels/ (nvidia-modelopt and those of its dependencies the machine may lack).
set -uo pipefail
bundle=$1 layers=$2 samples=$3 seq_len=$4 batch=$5 out=$6
here=$(cd "$(dirname "$0")" && pwd)
work=${E2E_WORK:-/tmp/moe-quant-e2e}
mkdir -p "$work" "$out"
log() { echo "[$(date +%T)] $*" | tee -a "$out/log.txt" >&2; }

# ModelOpt and whichever of its dependencies are missing here.
python3 - "$bundle/wheels" <<'PY' >"$work/missing.txt"
import importlib.util, os, sys
wanted = {"modelopt": "nvidia_modelopt", "pulp": "pulp", "omegaconf": "omegaconf", "pynvml": "nvidia_ml_py",
          "rich": "rich", "markdown_it": "markdown_it_py", "mdurl": "mdurl", "pygments": "pygments",
          "pydantic": "pydantic", "pydantic_core": "pydantic_core", "annotated_types": "annotated_types",
          "typing_inspection": "typing_inspection"}
files = os.listdir(sys.argv[1])
for module, wheel in wanted.items():
    if importlib.util.find_spec(module) is None:
        print(" ".join(os.path.join(sys.argv[1], f) for f in files if f.lower().startswith(wheel.lower() + "-")))
PY
if [ -s "$work/missing.txt" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$work/site" $(cat "$work/missing.txt") && export PYTHONPATH="$work/site"
  log "installed: $(tr '\n' ' ' <"$work/missing.txt" | xargs -n1 basename | tr '\n' ' ')"
fi
export LD_LIBRARY_PATH=$("$here/cuda-libs.sh")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/card.txt"
cp "$bundle/plans-$layers/config.json" "$out/config.json"

log "writing the checkpoint ($layers layers)"
python3 "$here/make_checkpoint.py" "$bundle/plans-$layers" "$work/model" "$samples" "$seq_len" | tee "$out/checkpoint.json"

# What the disk alone allows: the checkpoint read cold, in 64 MiB reads on one thread and again on four threads
# (moe-quant's reader splits each request over four), then 4 GiB written and fsync'd (moe-quant's output is on disk
# when it exits), then both at once (whether reads and writes share the disk's bandwidth).
log "disk: cold reads of the checkpoint (one thread, four), a 4 GiB write with fsync, then both at once"
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
python3 - "$work/model" "$work/disk-probe" <<'PY' >"$out/disk.json"
import json, os, sys, threading, time
model, probe = sys.argv[1], sys.argv[2]
shards = sorted(os.path.join(model, f) for f in os.listdir(model) if f.endswith(".safetensors"))
def read_all():
    total = 0
    for path in shards:
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(64 << 20):
                total += len(chunk)
    return total
def write(size):
    block = os.urandom(1 << 20) * 64
    fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    for _ in range(size // len(block)):
        os.write(fd, block)
    os.fsync(fd)
    os.close(fd)
    os.unlink(probe)
def read_threads(count):
    chunks = [(path, offset) for path in shards for offset in range(0, os.path.getsize(path), 64 << 20)]
    lock, total = threading.Lock(), [0]
    def work():
        while True:
            with lock:
                if not chunks:
                    return
                path, offset = chunks.pop(0)
            with open(path, "rb", buffering=0) as f:
                n = len(os.pread(f.fileno(), 64 << 20, offset))
            with lock:
                total[0] += n
    threads = [threading.Thread(target=work) for _ in range(count)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return total[0]
t = time.time(); read_bytes = read_all(); read_s = time.time() - t
os.sync(); open("/proc/sys/vm/drop_caches", "w").write("3\n")
t = time.time(); assert read_threads(4) == read_bytes; read_4_s = time.time() - t
write_bytes = 4 << 30
t = time.time(); write(write_bytes); write_s = time.time() - t
os.sync(); open("/proc/sys/vm/drop_caches", "w").write("3\n")
t = time.time(); writer = threading.Thread(target=write, args=(write_bytes,)); writer.start(); read_all(); writer.join()
both_s = time.time() - t
print(json.dumps({"read_bytes": read_bytes, "read_seconds": read_s, "read_four_threads_seconds": read_4_s,
                  "write_bytes": write_bytes, "write_seconds": write_s, "read_and_write_at_once_seconds": both_s}))
PY
cat "$out/disk.json"

# Peak GPU memory in use (MiB) while a command runs, sampled by nvidia-smi every 100 ms. Then `sync`, timed on
# its own: ModelOpt's export leaves its last writes in the page cache, moe-quant's output is fsync'd before it
# exits.
measure() {
  local name=$1; shift
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$work/gpu-$name.txt" &
  local monitor=$!
  local started=$(date +%s.%N) ended wall
  "$@" >"$out/$name.json" 2>"$out/$name.log"
  local status=$?
  ended=$(date +%s.%N)
  kill $monitor 2>/dev/null; wait $monitor 2>/dev/null
  sync
  local synced=$(date +%s.%N)
  wall=$(python3 -c "print(round($ended - $started, 2))")
  local sync_s=$(python3 -c "print(round($synced - $ended, 2))")
  local peak=$(sort -n "$work/gpu-$name.txt" | tail -n 1)
  echo "{\"name\": \"$name\", \"status\": $status, \"wall_seconds\": $wall, \"sync_seconds\": $sync_s, \"peak_gpu_mib\": ${peak:-0}}" >"$out/$name.measure.json"
  log "$name: status $status, $wall s (then sync $sync_s s), peak GPU ${peak:-?} MiB"
  return $status
}

ids=$work/model/calib_ids.json
# Settle the machine before timing anything: the checkpoint was just written, and in earlier runs the first
# measured pass (FP8, both tools) calibrated up to twice as slowly as the same work later on.
sync
half=$((layers / 2))
if [ -d "$bundle/plans-$half" ]; then
  log "warm-up (not measured)"
  "$bundle/e2e_quantize" "$work/model" "$work/warm-up" "$bundle/plans-$half/descriptor.json" \
    "$bundle/plans-$half/plan-nvfp4.json" "$ids" cuda:0 "$batch" >/dev/null 2>&1
  rm -rf "$work/warm-up"
fi
for format in fp8 nvfp4; do
  measure "ours-$format" "$bundle/e2e_quantize" "$work/model" "$work/ours-$format" "$bundle/plans-$layers/descriptor.json" \
    "$bundle/plans-$layers/plan-$format.json" "$ids" cuda:0 "$batch"
  measure "modelopt-$format" python3 "$here/modelopt_race.py" "$work/model" "$work/modelopt-$format" "$format" "$ids" "$batch"
  echo "{\"ours\": $(du -sb "$work/ours-$format" | cut -f1), \"modelopt\": $(du -sb "$work/modelopt-$format" | cut -f1)}" >"$out/bytes-$format.json"
  log "comparing $format outputs"
  python3 "$here/compare.py" "$work/ours-$format" "$work/modelopt-$format" >"$out/compare-$format.json" 2>>"$out/log.txt"
  rm -rf "$work/ours-$format" "$work/modelopt-$format"
done
if [ -d "$bundle/plans-$half" ]; then
  measure "ours-nvfp4-$half-layers" "$bundle/e2e_quantize" "$work/model" "$work/ours-half" "$bundle/plans-$half/descriptor.json" \
    "$bundle/plans-$half/plan-nvfp4.json" "$ids" cuda:0 "$batch"
  rm -rf "$work/ours-half"
fi
python3 "$here/report.py" "$out" "$layers" | tee "$out/report.md"
