//! Compute devices: `cpu` (f32) or `cuda[:N]` (bf16 with f32 accumulation), the latter only in builds with
//! the `cuda` feature.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// A device and the dtype the forward computes in there.
#[derive(Debug, Clone)]
pub struct ComputeDevice {
    pub device: Device,
    pub dtype: DType,
}

impl ComputeDevice {
    /// The CPU in f32 (what the reference comparisons use).
    pub fn cpu() -> Self {
        ComputeDevice { device: Device::Cpu, dtype: DType::F32 }
    }

    /// Parses `cpu`, `cuda` or `cuda:N`.
    pub fn parse(spec: &str) -> Result<Self> {
        match (spec, gpu_ordinal(spec)) {
            ("cpu", _) => Ok(Self::cpu()),
            (_, Some(ordinal)) => Self::cuda(ordinal),
            _ => Err(Error::DeviceUnavailable {
                message: format!("unknown device {spec:?}: expected cpu, cuda or cuda:N"),
            }),
        }
    }

    /// Parses several devices that split the work between them: distinct GPUs, or CPU entries (the same split on the
    /// CPU, which the tests run), not both kinds. `E_CALIBRATION_OPTIONS` for an empty list, a GPU named twice
    /// (`cuda` is `cuda:0`) or the two kinds mixed; `E_DEVICE_UNAVAILABLE` as [`Self::parse`].
    pub fn parse_all(specs: &[String]) -> Result<Vec<Self>> {
        let invalid = |message: String| Error::CalibrationOptions { message };
        if specs.is_empty() {
            return Err(invalid("devices: the list is empty".into()));
        }
        let gpus: Vec<Option<usize>> = specs.iter().map(|spec| gpu_ordinal(spec)).collect();
        if gpus.iter().any(Option::is_some) && gpus.iter().any(Option::is_none) {
            return Err(invalid(format!("devices: {specs:?} mixes GPUs and the CPU")));
        }
        for (i, gpu) in gpus.iter().enumerate() {
            if gpu.is_some() && gpus[..i].contains(gpu) {
                return Err(invalid(format!("devices: {specs:?} names {} twice", specs[i])));
            }
        }
        specs.iter().map(|spec| Self::parse(spec)).collect()
    }

    /// The GPU (bf16 compute), opened with the kernels' memory-pool setting; `E_DEVICE_UNAVAILABLE` in a CPU
    /// build or without such a GPU.
    fn cuda(ordinal: usize) -> Result<Self> {
        Ok(ComputeDevice { device: crate::cuda::device(ordinal)?, dtype: DType::BF16 })
    }
}

/// Whether `spec` names a GPU (`cuda` or `cuda:N`), without opening it.
pub fn names_gpu(spec: &str) -> bool {
    gpu_ordinal(spec).is_some()
}

/// The GPU `cuda` (0) or `cuda:N` names; None for anything else.
fn gpu_ordinal(spec: &str) -> Option<usize> {
    match spec {
        "cuda" => Some(0),
        _ => spec.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()),
    }
}
