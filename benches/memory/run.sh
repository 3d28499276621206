#!/usr/bin/env bash
# Memory benchmark: quantize a synthetic checkpoint LARGER THAN THIS MACHINE'S RAM on the CPU and show that
# streaming holds resident memory to a few layers' worth (the reader reads one decoder layer ahead with
# positioned reads, no memory map, so RSS is real memory, not mapped file pages).
#
#   npm run build                      # dist/ and the CPU addon must be current
#   bash benches/memory/run.sh [LAYERS|auto] [MAX_SHARD_SIZE ...]
#
# 1. builds and runs crates/core/examples/make_big_checkpoint.rs: Qwen3-30B-A3B's shapes (H 2048, 128
#    experts, top-8, I 768, 32/4 heads, head_dim 128) with a 1,024-token vocabulary, `auto` = the fewest layers
#    whose bf16 weights are at least 5% more than MemTotal (about 1.25 GB a layer), random bf16 weights
#    (std 0.02) actually written to disk, 5 GB shards, plus calib_ids.json (SAMPLES × SEQ_LEN seeded ids);
# 2. drops the page cache, then for each MAX_SHARD_SIZE (default: 5GB, the library's default) quantizes it to
#    NVFP4 on the CPU through quantizeModel() (benches/memory/quantize.mjs) under `/usr/bin/time -v`, while
#    this script samples the process's VmRSS every 0.5 s (rss-<size>.tsv);
# 3. prints a table (checkpoint size, MemTotal, layers, bytes per layer, peak RSS from time -v and from the
#    addon's peakRssBytes, peak RSS / layer bytes, wall time, output size) and deletes the checkpoint and the
#    outputs (KEEP=1 keeps them).
#
# Environment: MEMBENCH_WORK (default /tmp/moe-quant-memory; needs checkpoint + output of free disk; the
# results stay in MEMBENCH_WORK/results), SAMPLES and SEQ_LEN (calibration ids, default 2 × 16), FORMAT
# (nvfp4), KEEP. MALLOC_MMAP_THRESHOLD_=65536 (glibc) makes freed blocks go back to the system at once, so RSS
# shows what the process holds rather than what the allocator keeps (about 2× slower; a diagnostic).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
layers=${1:-auto}
shift || true
shards=("$@")
[ ${#shards[@]} -eq 0 ] && shards=(5GB)
work=${MEMBENCH_WORK:-/tmp/moe-quant-memory}
samples=${SAMPLES:-2} seq_len=${SEQ_LEN:-16} format=${FORMAT:-nvfp4}
results=$work/results
mkdir -p "$results"
log() { echo "[$(date +%T)] $*" >&2; }
cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then rm -rf "$work/model" "$work"/out-*; fi
}
trap cleanup EXIT

cd "$root"
if [ ! -f dist/index.js ] || ! ls moe-quant.*.node >/dev/null 2>&1; then
  echo "dist/ or the addon is missing: run npm run build first" >&2
  exit 1
fi
log "building the generator"
cargo build --release -q -p moe-quant-core --example make_big_checkpoint || exit 1

log "writing the checkpoint ($layers layers) to $work/model"
rm -rf "$work/model"
target/release/examples/make_big_checkpoint "$work/model" "$layers" 1024 "$samples" "$seq_len" >"$results/checkpoint.json" || exit 1
cat "$results/checkpoint.json"

for shard in "${shards[@]}"; do
  out=$work/out-$shard
  rm -rf "$out"
  sync
  if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then dropped=yes; else dropped=no; fi
  log "quantizing to $format, shards of $shard (page cache dropped: $dropped)"
  /usr/bin/time -v -o "$results/time-$shard.txt" \
    node "$here/quantize.mjs" "$work/model" "$out" --format "$format" --device cpu --max-shard-size "$shard" \
    >"$results/result-$shard.json" 2>"$results/progress-$shard.log" &
  timer=$!
  # VmRSS of the node process (the child of time) every 0.5 s: seconds since start, RSS in KiB.
  (
    pid=
    for _ in $(seq 100); do pid=$(pgrep -P $timer -x node) && break; sleep 0.1; done
    start=$(date +%s.%N)
    while [ -n "$pid" ] && kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null) && [ -n "$kb" ]; do
      echo "$(awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - s }') $kb"
      sleep 0.5
    done
  ) >"$results/rss-$shard.tsv" &
  sampler=$!
  wait $timer
  status=$?
  wait $sampler
  tail -n 3 "$results/progress-$shard.log" >&2
  log "status $status"
  du -sb "$out" 2>/dev/null | cut -f1 >"$results/output-$shard.bytes"
  rm -rf "$out"
done

# The table.
node - "$results" "${shards[@]}" <<'JS'
const { readFileSync, existsSync } = require('node:fs')
const [dir, ...shards] = process.argv.slice(2)
const ck = JSON.parse(readFileSync(`${dir}/checkpoint.json`, 'utf8'))
const gb = (b) => (b / 1e9).toFixed(2) + ' GB'
const gib = (b) => (b / 2 ** 30).toFixed(2) + ' GiB'
console.log(`\ncheckpoint ${gb(ck.checkpoint_bytes)} (${gib(ck.checkpoint_bytes)}) in ${ck.shards} shards, ` +
  `${ck.layers} layers of ${gb(ck.layer_bytes)}; RAM (MemTotal) ${gib(ck.mem_total_bytes)}; ` +
  `checkpoint / RAM ${(ck.checkpoint_bytes / ck.mem_total_bytes).toFixed(2)}×\n`)
console.log('| output shards | checkpoint | RAM (MemTotal) | layers | bytes per layer | peak RSS (time -v) | peak RSS (addon) | peak RSS / layer bytes | max sampled RSS | wall | output |')
console.log('|---|---|---|---|---|---|---|---|---|---|---|')
const notes = []
for (const shard of shards) {
  const time = readFileSync(`${dir}/time-${shard}.txt`, 'utf8')
  const maxKib = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(time)?.[1])
  const wall = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)/.exec(time)?.[1]
  const text = readFileSync(`${dir}/result-${shard}.json`, 'utf8').trim()
  const result = text ? JSON.parse(text) : null
  const samples = existsSync(`${dir}/rss-${shard}.tsv`) ? readFileSync(`${dir}/rss-${shard}.tsv`, 'utf8').trim().split('\n').map((l) => Number(l.split(' ')[1])) : []
  const sampled = samples.length ? Math.max(...samples) * 1024 : NaN
  const out = Number(readFileSync(`${dir}/output-${shard}.bytes`, 'utf8').trim() || NaN)
  const peak = maxKib * 1024
  console.log(`| ${shard} | ${gb(ck.checkpoint_bytes)} | ${gib(ck.mem_total_bytes)} | ${ck.layers} | ${gb(ck.layer_bytes)} | ${gib(peak)} | ` +
    `${result?.peakRssBytes != null ? gib(result.peakRssBytes) : 'failed'} | ${(peak / ck.layer_bytes).toFixed(2)} | ${gib(sampled)} | ${wall} | ${result ? gb(out) : '—'} |`)
  if (result) notes.push(`${shard}: ${result.tokens} calibration tokens per layer, max relative MSE ${result.maxRelativeMse.toExponential(2)}; seconds: ` +
    Object.entries(result.seconds).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', '))
}
console.log('\n' + notes.join('\n'))
JS
