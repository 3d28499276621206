//! `launch.rs` for a build without the `cuda` feature: the same API, over types that have no values. Opening a
//! device or reading a source fails with `E_DEVICE_UNAVAILABLE`, so nothing past that is ever reached, and the
//! launchers compile unchanged in both builds.

// The arguments mirror launch.rs; nothing reads them in a build that never launches.
#![allow(dead_code)]

use std::ops::Range;

use candle_core::{CudaDevice, DType, Device, Shape, Tensor};

use super::Module;
use crate::error::{Error, Result};

pub(crate) fn not_compiled(op: &str) -> Error {
    Error::DeviceUnavailable {
        message: format!(
            "cuda::{op}: this build of moe-quant has no CUDA support (rebuild with the `cuda` feature: \
             `npm run build:cuda`, or `cargo build --features cuda` after sourcing tools/cuda-env.sh)"
        ),
    }
}

pub(crate) fn open_device(_ordinal: usize) -> Result<Device> {
    Err(not_compiled("device"))
}

pub(crate) fn grouped_matmul_t(
    _device: &CudaDevice,
    _xs: &Tensor,
    _weights: &[&Tensor],
    _ranges: &[Range<usize>],
    _n: usize,
) -> Result<Tensor> {
    Err(not_compiled("grouped_matmul_t"))
}

pub(crate) fn download_u8(tensor: &Tensor, range: Range<usize>) -> Result<Vec<u8>> {
    let _ = (tensor, range);
    Err(not_compiled("download_u8"))
}

pub(crate) fn address(tensor: &Tensor) -> Result<u64> {
    let _ = tensor;
    Err(not_compiled("address"))
}

pub(crate) enum Output {}

pub(crate) enum Arg<'a> {
    Out(&'a mut Output),
    In(&'a Output),
    U64(u64),
    U32(u32),
    I32(i32),
    F32(f32),
}

pub(crate) enum Grid {
    Wave { work: usize, rows: usize },
    Fixed { grid: (u32, u32, u32), block: (u32, u32, u32) },
    Shared { grid: (u32, u32, u32), block: (u32, u32, u32), bytes: u32 },
}

pub(crate) enum Source {}

impl Source {
    pub fn new(_xs: &Tensor, op: &str) -> Result<Self> {
        Err(not_compiled(op))
    }

    pub fn suffix(&self) -> &'static str {
        match *self {}
    }

    pub fn alloc(&self, _dtype: DType, _len: usize) -> Result<Output> {
        match *self {}
    }

    pub fn zeros(&self, _len: usize) -> Result<Output> {
        match *self {}
    }

    pub fn upload(&self, _values: &[f32]) -> Result<Output> {
        match *self {}
    }

    pub fn upload_u32(&self, _values: &[u32]) -> Result<Output> {
        match *self {}
    }

    pub fn launch(&self, _module: &Module, _kernel: &str, _grid: Grid, _args: &mut [Arg<'_>]) -> Result<()> {
        match *self {}
    }

    pub fn launch_args(&self, _module: &Module, _kernel: &str, _grid: Grid, _args: &mut [Arg<'_>]) -> Result<()> {
        match *self {}
    }

    pub fn tensor(&self, output: Output, _shape: impl Into<Shape>) -> Tensor {
        match output {}
    }
}

pub(crate) const BLOCK_THREADS: u32 = 256;

/// `upload.rs`'s copier: never made without CUDA.
pub(crate) struct Uploader;

impl Uploader {
    pub fn new(_device: &Device) -> Result<Self> {
        Err(not_compiled("upload"))
    }

    pub fn fits(&self, _bytes: usize) -> bool {
        false
    }

    pub fn upload(&mut self, _bytes: &[u8], _dtype: DType, _shape: &[usize]) -> Result<()> {
        Err(not_compiled("upload"))
    }

    pub fn finish(&mut self) -> Result<Vec<Tensor>> {
        Err(not_compiled("upload"))
    }
}
