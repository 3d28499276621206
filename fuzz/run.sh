#!/usr/bin/env bash
# Reruns the fuzz targets for N seconds each, starting from the kept corpus, then minimizes it back into
# corpus/<target>/. Needs cargo-fuzz (`cargo install cargo-fuzz`) and either a nightly toolchain or the
# stable one with RUSTC_BOOTSTRAP=1 (the default here, which avoids a download).
#
#   fuzz/run.sh [SECONDS] [TARGET...]      # defaults: 600 seconds, both targets
#
# Findings land in fuzz/artifacts/<target>/; reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-600}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(safetensors_header open_checkpoint)
toolchain="${FUZZ_TOOLCHAIN:-+stable}"
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"
# FUZZ_JOBS=N runs N fuzzing processes per target (their output then goes to fuzz-<i>.log).
parallel=()
if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then parallel=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS"); fi

for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "corpus-new/$target"
  if [ -z "$(ls -A "corpus/$target")" ]; then python3 seeds/make_seeds.py corpus; fi
  echo "== $target: ${seconds}s"
  # New inputs go to corpus-new/ (ignored by git); the kept corpus is only read.
  # rss_limit_mb/malloc_limit_mb: a single allocation of 512 MB or more is a finding (nothing real is that big
  # here: the inputs are at most max_len bytes).
  cargo "$toolchain" fuzz run "$target" "corpus-new/$target" "corpus/$target" -- \
    -dict=safetensors.dict -max_total_time="$seconds" -max_len=65536 -timeout=10 \
    -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1 "${parallel[@]}"
  # Merge what was found back into the kept corpus, minimized.
  cp -n corpus-new/"$target"/* "corpus/$target/" 2>/dev/null || true
  cargo "$toolchain" fuzz cmin "$target" "corpus/$target" -- -dict=safetensors.dict -max_len=65536
  rm -rf "corpus-new/$target"
done
rmdir corpus-new 2>/dev/null || true
