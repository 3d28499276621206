//! Host-to-device copies on a stream of their own, through pinned buffers, so that a layer's weights travel to the
//! GPU while the kernels of the layer before it run on the device's compute stream.
//!
//! Ordering, with cudarc's per-buffer events off (see `open_device`): each destination is allocated on the copy
//! stream, so the pool never hands it memory that queued compute work still reads; the copies go through a ring of
//! pinned buffers, each reused once its last copy is done (an event per buffer); [`Uploader::finish`] waits for the
//! copy stream and only then hands the tensors over, owned by the compute stream, so every later use and the final
//! free are ordered after the copy in host time and in the compute stream's order alike.

use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::{result, sys, CudaEvent, CudaSlice, CudaStream, PinnedHostSlice};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaDevice, DType, Device, Tensor};
use half::{bf16, f16};

use super::wrap;
use crate::error::{Error, Result};

/// Bytes per pinned buffer: large enough that a copy's fixed cost is small, small enough that filling one buffer
/// overlaps the previous one's transfer.
const STAGING_BYTES: usize = 32 << 20;
/// Pinned buffers in the ring.
const STAGING_BUFFERS: usize = 3;

/// One destination whose copy was issued: its memory (owned by the copy stream until [`Uploader::finish`]),
/// dtype and shape.
struct Pending {
    memory: CudaSlice<u8>,
    dtype: DType,
    shape: Vec<usize>,
}

/// Copies host bytes to one CUDA device on a copy stream (see the module's documentation).
pub(crate) struct Uploader {
    device: CudaDevice,
    copies: Arc<CudaStream>,
    staging: Vec<(PinnedHostSlice<u8>, CudaEvent)>,
    next: usize,
    pending: Vec<Pending>,
}

impl Uploader {
    /// A copy stream and pinned buffers for `device` (`E_DEVICE_UNAVAILABLE` for a device that is not CUDA).
    pub fn new(device: &Device) -> Result<Self> {
        let Device::Cuda(device) = device else { return Err(super::super::not_on_cuda("upload", device)) };
        let context = device.cuda_stream().context().clone();
        let copies = context.new_stream().w()?;
        let staging = (0..STAGING_BUFFERS)
            .map(|_| -> Result<_> {
                // SAFETY: the buffer is only written before it is read (by a copy of the bytes just written).
                let buffer = unsafe { context.alloc_pinned::<u8>(STAGING_BYTES) }.w()?;
                Ok((buffer, context.new_event(None).w()?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Uploader { device: device.clone(), copies, staging, next: 0, pending: Vec::new() })
    }

    /// Whether `bytes` more fit in the device's free memory now.
    pub fn fits(&self, bytes: usize) -> bool {
        self.copies.context().bind_to_thread().is_ok() && result::mem_get_info().is_ok_and(|(free, _)| free >= bytes)
    }

    /// Starts copying `bytes`, a row-major tensor of `dtype` (bf16, f16 or f32) and `shape`, to the device; the
    /// tensor comes back from [`finish`](Self::finish), in the order of these calls. Returns once the bytes are in
    /// pinned buffers (the caller's may go).
    pub fn upload(&mut self, bytes: &[u8], dtype: DType, shape: &[usize]) -> Result<()> {
        let elements = shape.iter().product::<usize>();
        if !matches!(dtype, DType::BF16 | DType::F16 | DType::F32) || bytes.len() != elements * dtype.size_in_bytes() {
            return Err(Error::internal(format!(
                "cuda::upload: {} bytes for a {dtype:?} tensor {shape:?} (bf16, f16 or f32)",
                bytes.len()
            )));
        }
        self.copies.context().bind_to_thread().w()?;
        let stream = self.copies.cu_stream();
        // SAFETY: an allocation of the copy stream, at least one byte, owned by `memory` from here on (freed on
        // the copy stream, after its copies, should anything below fail).
        let memory = unsafe {
            let address = result::malloc_async(stream, bytes.len().max(1)).w()?;
            self.copies.upgrade_device_ptr::<u8>(address, bytes.len().max(1))
        };
        let base = {
            use candle_core::cuda_backend::cudarc::driver::DevicePtr;
            memory.device_ptr(&self.copies).0
        };
        for (i, chunk) in bytes.chunks(STAGING_BYTES).enumerate() {
            let (buffer, done) = &mut self.staging[self.next];
            self.next = (self.next + 1) % STAGING_BUFFERS;
            // The buffer's previous transfer has finished before it is overwritten.
            done.synchronize().w()?;
            let host = &mut buffer.as_mut_slice().w()?[..chunk.len()];
            host.copy_from_slice(chunk);
            let address = base + (i * STAGING_BYTES) as sys::CUdeviceptr;
            // SAFETY: `host` is pinned and stays untouched until `done` fires; the destination range lies within
            // `memory`, allocated on this stream above.
            unsafe { result::memcpy_htod_async(address, host, stream) }.w()?;
            done.record(&self.copies).w()?;
        }
        self.pending.push(Pending { memory, dtype, shape: shape.to_vec() });
        Ok(())
    }

    /// Waits for every copy issued since the last call and returns their tensors, in order, owned by the device's
    /// compute stream.
    pub fn finish(&mut self) -> Result<Vec<Tensor>> {
        self.copies.synchronize().w()?;
        let compute = self.device.cuda_stream();
        let tensors = self
            .pending
            .drain(..)
            .map(|Pending { memory, dtype, shape }| {
                let elements = memory.len() / dtype.size_in_bytes();
                let address = memory.leak();
                // SAFETY: the memory holds `elements` values of `dtype`, its copy has completed (the stream was
                // synchronised above), and from here on only the compute stream uses and frees it.
                unsafe {
                    match dtype {
                        DType::BF16 => wrap(compute.upgrade_device_ptr::<bf16>(address, elements), &self.device, shape),
                        DType::F16 => wrap(compute.upgrade_device_ptr::<f16>(address, elements), &self.device, shape),
                        _ => wrap(compute.upgrade_device_ptr::<f32>(address, elements), &self.device, shape),
                    }
                }
            })
            .collect();
        Ok(tensors)
    }
}

impl Drop for Uploader {
    /// The pinned buffers are freed only once no copy reads them.
    fn drop(&mut self) {
        let _ = self.copies.synchronize();
    }
}
