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
        match spec {
            "cpu" => Ok(Self::cpu()),
            "cuda" => Self::cuda(0),
            _ => match spec.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
                Some(ordinal) => Self::cuda(ordinal),
                None => Err(Error::DeviceUnavailable {
                    message: format!("unknown device {spec:?}: expected cpu, cuda or cuda:N"),
                }),
            },
        }
    }

    /// The GPU (bf16 compute), opened with the kernels' memory-pool setting; `E_DEVICE_UNAVAILABLE` in a CPU
    /// build or without such a GPU.
    fn cuda(ordinal: usize) -> Result<Self> {
        Ok(ComputeDevice { device: crate::cuda::device(ordinal)?, dtype: DType::BF16 })
    }
}
