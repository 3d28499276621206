# Sourced (not run) before a CUDA build: `. tools/cuda-env.sh`. Works on a machine with no GPU and no CUDA
# install, from the CUDA 13.0 PyPI wheels (nvcc, cudart, cublas, curand, nvrtc).
#
# candle-core's `cuda` feature links cudarc with `dynamic-linking`: the linker needs unversioned
# libcuda.so, libcublas.so, libcublasLt.so, libcurand.so, libnvrtc.so (and libcudart.so for candle's kernels).
# The wheels ship only versioned names and no driver, so this script lays out a toolkit folder
# ($MOE_QUANT_CUDA_TOOLKIT, default target/cuda-toolkit) once:
#
#   bin/      links to the wheels' nvcc, ptxas, … (nvcc reads nvcc.profile next to the path it was called by)
#   nvvm/     cicc + libdevice of CUDA 13.0.88, fetched with pip: the nvcc 13.0 wheel depends on an unpinned
#             nvidia-nvvm, which pip resolves to the newest (13.5 emits `.version 9.5` PTX, which driver 580 =
#             CUDA 13.0 refuses to JIT); same for the crt headers
#   include/  the wheels' headers, crt/ replaced by 13.0.88's
#   lib64/    unversioned links to the wheels' libraries (and their static archives, for nvcc-built programs)
#   lib64/stubs/libcuda.so
#             a link-time stub of the driver API generated from the symbols cudarc declares (every function
#             returns CUDA_ERROR_NO_DEVICE). Its soname is libcuda.so.1, so binaries load the real driver on a
#             GPU machine; no file named libcuda.so.1 exists here, so the stub can never be loaded by mistake.
#
# Then it exports CUDA_ROOT/CUDA_PATH/CUDA_HOME, PATH, LIBRARY_PATH, LD_LIBRARY_PATH, CUDA_COMPUTE_CAP=80 and
# CUDARC_CUDA_VERSION=13000. The wheels' folder is MOE_QUANT_CUDA_WHEELS if set, else nvidia/cu13 of the first
# of MOE_QUANT_CUDA_PYTHON and python3 whose `nvidia` package holds nvcc.

moe_quant_cuda_env() {
  local repo wheels toolkit nvvm_version marker cudarc_sys f found_python=
  repo=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
  wheels=${MOE_QUANT_CUDA_WHEELS:-}
  if [ -z "$wheels" ]; then
    local python candidate
    for python in ${MOE_QUANT_CUDA_PYTHON:-} python3; do
      candidate=$("$python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))' 2>/dev/null)
      if [ -n "$candidate" ] && [ -x "$candidate/bin/nvcc" ]; then
        wheels=$candidate
        found_python=$python
        break
      fi
    done
  fi
  toolkit=${MOE_QUANT_CUDA_TOOLKIT:-$repo/target/cuda-toolkit}
  nvvm_version=13.0.88
  marker=$toolkit/.complete-$nvvm_version-2

  if [ -z "$wheels" ] || [ ! -x "$wheels/bin/nvcc" ]; then
    echo "cuda-env: no nvcc in ${wheels:-the nvidia/cu13 folder of MOE_QUANT_CUDA_PYTHON or python3}/bin (install the CUDA 13.0" \
      "wheels: pip install -r tools/cuda-requirements.txt; or set MOE_QUANT_CUDA_WHEELS)" >&2
    return 1
  fi

  # Every wheel of tools/cuda-requirements.txt at its pinned version: mixed releases build, then fail on the GPU.
  if [ -n "$found_python" ]; then
    local mismatched
    mismatched=$("$found_python" - "$repo/tools/cuda-requirements.txt" <<'PY'
import sys
from importlib import metadata
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, pinned = line.split("==")
    try:
        found = metadata.version(name)
    except metadata.PackageNotFoundError:
        found = "not installed"
    if found != pinned:
        print(f"{name} {found} (needs {pinned})")
PY
) || return 1
    if [ -n "$mismatched" ]; then
      echo "cuda-env: the CUDA wheels of $found_python are not the pinned CUDA 13.0 release:" $mismatched \
        "-- run: $found_python -m pip install -r $repo/tools/cuda-requirements.txt" >&2
      return 1
    fi
  fi

  if [ ! -e "$marker" ]; then
    echo "cuda-env: laying out $toolkit" >&2
    rm -rf "$toolkit" && mkdir -p "$toolkit"/{bin,include,lib64/stubs} || return 1

    # CUDA 13.0's own cicc and crt headers, matching nvcc 13.0 and the 13.0 driver.
    local pip_python=${MOE_QUANT_CUDA_PYTHON:-$(command -v python3)}
    "$pip_python" -m pip install --quiet --no-deps --disable-pip-version-check --target "$toolkit/pip" \
      "nvidia-nvvm==$nvvm_version" "nvidia-cuda-crt==$nvvm_version" || return 1
    local pinned=$toolkit/pip/nvidia/cu13

    for f in "$wheels"/bin/*; do ln -s "$f" "$toolkit/bin/"; done
    ln -s "$pinned/nvvm" "$toolkit/nvvm"
    for f in "$wheels"/include/*; do
      [ "$(basename "$f")" = crt ] || ln -s "$f" "$toolkit/include/"
    done
    ln -s "$pinned/include/crt" "$toolkit/include/crt"
    [ -e "$pinned/include/nvvm.h" ] && ln -sf "$pinned/include/nvvm.h" "$toolkit/include/nvvm.h"

    # Unversioned names for the linker, versioned ones for the loader (when this folder is on LD_LIBRARY_PATH).
    for f in "$wheels"/lib/lib*.so.* "$pinned"/lib/lib*.so.*; do
      [ -e "$f" ] || continue
      local name
      name=$(basename "$f")
      ln -sf "$f" "$toolkit/lib64/$name"
      ln -sf "$f" "$toolkit/lib64/${name%%.so.*}.so"
    done
    for f in "$wheels"/lib/*.a; do [ -e "$f" ] && ln -sf "$f" "$toolkit/lib64/"; done

    # The driver stub: every cu* function cudarc's driver bindings declare.
    cudarc_sys=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19*/src/driver/sys/mod.rs 2>/dev/null | tail -n 1)
    if [ -z "$cudarc_sys" ]; then
      (cd "$repo" && cargo fetch --quiet) || return 1
      cudarc_sys=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19*/src/driver/sys/mod.rs | tail -n 1)
    fi
    {
      echo '/* Generated by tools/cuda-env.sh: link-time stub of the CUDA driver API (libcuda.so.1). */'
      sed -n 's/^pub unsafe fn \(cu[A-Za-z0-9_]*\)(.*/\1/p' "$cudarc_sys" | sort -u |
        sed 's/.*/int &(void) { return 100; \/* CUDA_ERROR_NO_DEVICE *\/ }/'
    } >"$toolkit/lib64/stubs/libcuda.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$toolkit/lib64/stubs/libcuda.so" \
      "$toolkit/lib64/stubs/libcuda.c" || return 1
    ln -s lib64 "$toolkit/lib"
    touch "$marker"
  fi

  export CUDA_ROOT=$toolkit CUDA_PATH=$toolkit CUDA_HOME=$toolkit
  export PATH=$toolkit/bin:$PATH
  export LIBRARY_PATH=$toolkit/lib64:$toolkit/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
  export LD_LIBRARY_PATH=$toolkit/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  # PTX for sm_80, which the driver JIT-compiles for the H100/H200 (compute 9.0); nothing here needs sm_90a.
  export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-80}
  export CUDARC_CUDA_VERSION=13000
}

moe_quant_cuda_env
