#!/usr/bin/env bash
# Prints an LD_LIBRARY_PATH holding the CUDA 13 runtime libraries that PyTorch ships (cudart, cublas,
# curand, nvrtc …), which the CUDA build of moe-quant loads on a machine without a CUDA toolkit install.
python3 -c 'import glob, os, torch; d = os.path.dirname(os.path.dirname(torch.__file__)); print(":".join(sorted({os.path.dirname(p) for p in glob.glob(d + "/nvidia/**/lib*.so*", recursive=True)})))'
