//! With the `cuda` feature, compiles the CUDA kernels (`src/cuda/*.cu` and each format's `src/formats/<name>/*.cu`,
//! all including `src/cuda/common.cuh`) to PTX with nvcc into `$OUT_DIR`, embedded by `src/cuda/launch.rs`.
//! Without it, does nothing: the default build needs no CUDA toolkit.
//!
//! nvcc is `$NVCC`, else `$CUDA_ROOT/bin/nvcc` (or `CUDA_PATH`, `CUDA_HOME`), else `nvcc` on the PATH. Each
//! kernel file becomes two PTX modules that the driver JIT-compiles for the GPU it runs on: `<name>.sm80.ptx`
//! for `compute_$CUDA_COMPUTE_CAP` (default 80, any GPU since Ampere) and `<name>.sm89.ptx` for compute_89
//! (Ada and Hopper: hardware FP8 conversions); the launcher picks by the device's compute capability.
//! `tools/cuda-env.sh` sets all of this up.
//!
//! Every module is then checked as the driver will load it, so that a toolchain mismatch fails the build instead
//! of every run on the GPU (CUDA_ERROR_INVALID_PTX): its `.version` (PTX ISA) must not exceed what the target
//! driver accepts (`MOE_QUANT_PTX_ISA_MAX`, default 9.0: CUDA 13.0, driver 580), and `ptxas` (next to nvcc) must
//! assemble it for its architecture, which fails on calls to functions no library defines (a newer `cicc` than
//! the headers and libdevice it was installed with emits such calls).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Each kernel module: its name (the PTX file's stem) and its source.
const KERNELS: &[(&str, &str)] = &[
    ("amax", "src/cuda/amax.cu"),
    ("split", "src/cuda/split.cu"),
    ("forward", "src/cuda/forward.cu"),
    ("attention", "src/cuda/attention.cu"),
    ("route", "src/cuda/route.cu"),
    ("fp8", "src/formats/fp8/fp8.cu"),
    ("nvfp4", "src/formats/nvfp4/nvfp4.cu"),
];
const COMMON: &str = "src/cuda/common.cuh";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap_or_else(|_| fail("OUT_DIR is not set")));
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        // Empty modules, so that the launchers embed the same file names in every build; a build without CUDA
        // never loads them (opening a device fails first).
        for (kernel, _) in KERNELS {
            for variant in ["sm80", "sm89"] {
                let ptx = out_dir.join(format!("{kernel}.{variant}.ptx"));
                std::fs::write(&ptx, "").unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", ptx.display())));
            }
        }
        return;
    }
    for var in [
        "NVCC",
        "CUDA_ROOT",
        "CUDA_PATH",
        "CUDA_HOME",
        "CUDA_COMPUTE_CAP",
        "MOE_QUANT_NVCC_FLAGS",
        "MOE_QUANT_PTX_ISA_MAX",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let nvcc = find_nvcc();
    let isa_max = ptx_isa_max();
    let compute_cap = env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let compute_cap = compute_cap.trim().trim_start_matches("sm_").trim_start_matches("compute_").to_string();
    if compute_cap.is_empty() || !compute_cap.chars().all(|c| c.is_ascii_alphanumeric()) {
        fail(&format!("CUDA_COMPUTE_CAP={compute_cap:?} is not a compute capability such as 80 or 90a"));
    }
    println!("cargo:rerun-if-changed={COMMON}");
    let variants = [("sm80", compute_cap), ("sm89", "89".to_string())];
    for ((kernel, source), (variant, arch)) in KERNELS.iter().flat_map(|k| variants.iter().map(move |v| (k, v))) {
        let source = Path::new(source);
        println!("cargo:rerun-if-changed={}", source.display());
        let ptx = out_dir.join(format!("{kernel}.{variant}.ptx"));
        let mut command = Command::new(&nvcc);
        command
            .arg("--ptx")
            .arg(format!("-arch=compute_{arch}"))
            .args(["-O3", "-std=c++17", "-lineinfo", "-Isrc/cuda"])
            .arg("-o")
            .arg(&ptx)
            .arg(source);
        if let Ok(flags) = env::var("MOE_QUANT_NVCC_FLAGS") {
            command.args(flags.split_whitespace());
        }
        let status = command.status().unwrap_or_else(|error| {
            fail(&format!("could not run {} ({error}); source tools/cuda-env.sh", nvcc.display()))
        });
        if !status.success() {
            fail(&format!("{} failed on {} ({status})", nvcc.display(), source.display()));
        }
        check_ptx(&ptx, arch, isa_max, &nvcc);
    }
}

/// The newest PTX ISA the target driver loads, as (major, minor).
fn ptx_isa_max() -> (u32, u32) {
    let text = env::var("MOE_QUANT_PTX_ISA_MAX").unwrap_or_else(|_| "9.0".into());
    parse_isa(text.trim())
        .unwrap_or_else(|| fail(&format!("MOE_QUANT_PTX_ISA_MAX={text:?} is not a PTX ISA version such as 9.0")))
}

fn parse_isa(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Fails the build when the driver would refuse `ptx`: a PTX ISA newer than `isa_max`, or a module that ptxas
/// cannot assemble for `sm_<arch>` (unresolved functions among others).
fn check_ptx(ptx: &Path, arch: &str, isa_max: (u32, u32), nvcc: &Path) {
    let text = std::fs::read_to_string(ptx).unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", ptx.display())));
    let version = text
        .lines()
        .find_map(|line| line.trim().strip_prefix(".version "))
        .and_then(|v| parse_isa(v.trim()))
        .unwrap_or_else(|| fail(&format!("{} has no .version line", ptx.display())));
    if version > isa_max {
        fail(&format!(
            "{} is PTX ISA {}.{}, newer than the {}.{} that the target driver loads (CUDA 13.0's nvcc and cicc emit 9.0): \
             the CUDA wheels are not all of one release; install tools/cuda-requirements.txt, or set \
             MOE_QUANT_PTX_ISA_MAX for a newer driver",
            ptx.display(),
            version.0,
            version.1,
            isa_max.0,
            isa_max.1
        ));
    }
    let ptxas =
        nvcc.parent().map(|dir| dir.join("ptxas")).filter(|p| p.is_file()).unwrap_or_else(|| PathBuf::from("ptxas"));
    let output = Command::new(&ptxas)
        .arg(format!("-arch=sm_{arch}"))
        .arg(ptx)
        .args(["-o", "/dev/null"])
        .output()
        .unwrap_or_else(|error| {
            fail(&format!("could not run {} ({error}) to check {}", ptxas.display(), ptx.display()))
        });
    if !output.status.success() {
        fail(&format!(
            "{} does not assemble for sm_{arch}, so the driver would refuse it (CUDA_ERROR_INVALID_PTX): {}; \
             the CUDA wheels are not all of one release; install tools/cuda-requirements.txt",
            ptx.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
}

fn find_nvcc() -> PathBuf {
    if let Some(nvcc) = env::var_os("NVCC") {
        return PathBuf::from(nvcc);
    }
    for var in ["CUDA_ROOT", "CUDA_PATH", "CUDA_HOME"] {
        if let Some(root) = env::var_os(var) {
            let nvcc = Path::new(&root).join("bin").join("nvcc");
            if nvcc.is_file() {
                return nvcc;
            }
        }
    }
    PathBuf::from("nvcc")
}

fn fail(message: &str) -> ! {
    eprintln!("moe-quant-core build: {message}");
    std::process::exit(1)
}
