//! The one place that talks to the CUDA driver for moe-quant's own kernels: opening a device, borrowing a
//! source tensor's memory, allocating outputs, loading a kernel module and launching. Every launcher
//! (`cuda/amax.rs`, `cuda/split.rs`, `formats/*/cuda.rs`) is written against this API only, so that a build
//! without CUDA swaps in `absent.rs` (same API, no values) instead of a `cfg` pair per function.

use candle_core::cuda_backend::cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, DType, Device, Shape, Storage, Tensor};
use half::{bf16, f16};

#[path = "grouped_gemm.rs"]
mod grouped_gemm;

#[path = "upload.rs"]
mod upload;

pub(crate) use grouped_gemm::grouped_matmul_t;
pub(crate) use upload::Uploader;

use super::Module;
use crate::error::{Error, Result};

const THREADS: u32 = 256;
/// At most 2048 threads per multiprocessor.
const MAX_BLOCKS_PER_SM: u32 = 8;

/// The CUDA device with this ordinal: its memory pool keeps freed memory, and everything on it runs on one
/// stream.
pub(crate) fn open_device(ordinal: usize) -> Result<Device> {
    let device = CudaDevice::new_with_stream(ordinal).map_err(|error| Error::DeviceUnavailable {
        message: format!("cuda:{ordinal} could not be opened: {error}"),
    })?;
    // All work on this device goes to this one stream, whichever thread issues it, so stream order alone
    // orders every use of every buffer. cudarc's per-buffer events (two created per allocation, a wait and
    // a record per kernel argument) add nothing then, and cost host time on every one of the forward's
    // thousands of small launches.
    // SAFETY: no other stream of this context touches memory allocated through this device.
    unsafe { device.disable_event_tracking() };
    keep_freed_memory(&device)?;
    let device = Device::Cuda(device);
    load_gemm_library(&device)?;
    Ok(device)
}

/// Runs one small bf16 GEMM shaped as the forward's projections and waits for it. cuBLAS loads its kernels at its
/// first GEMM: 0.16 s with the library in the page cache, 0.35 s without it (measured on an H100). Here that happens
/// while the first layer is still being read, instead of in the first layer's forward.
fn load_gemm_library(device: &Device) -> Result<()> {
    let xs = Tensor::zeros((2, 64, 256), DType::BF16, device)?;
    let weight = Tensor::zeros((128, 256), DType::BF16, device)?;
    xs.broadcast_matmul(&weight.t()?)?;
    device.synchronize()?;
    Ok(())
}

/// Makes the device's default memory pool keep freed memory for reuse instead of returning it to the driver at
/// every synchronization (its default release threshold is 0). candle allocates every output with
/// `cuMemAllocAsync` from that pool; with the default, each large allocation after a sync maps fresh pages
/// (measured: +10–30% on the quantize kernels' time). PyTorch's caching allocator keeps memory the same way.
fn keep_freed_memory(device: &CudaDevice) -> Result<()> {
    use candle_core::cuda_backend::cudarc::driver::sys;
    let context = device.cuda_stream().context().clone();
    context.bind_to_thread().w()?;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold: u64 = u64::MAX;
    // SAFETY: plain driver calls on the context's own device with valid out/in pointers.
    unsafe {
        sys::cuDeviceGetDefaultMemPool(&mut pool, context.cu_device()).result().w()?;
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .result()
        .w()?;
    }
    Ok(())
}

/// Device memory a kernel writes (or reads, for uploaded scales), in the dtype of the tensor it becomes.
pub(crate) enum Output {
    U8(CudaSlice<u8>),
    U32(CudaSlice<u32>),
    F32(CudaSlice<f32>),
    BF16(CudaSlice<bf16>),
    F16(CudaSlice<f16>),
}

/// A kernel argument after the source (which every kernel takes first): pointers and scalars, in the order
/// of the kernel's signature.
pub(crate) enum Arg<'a> {
    Out(&'a mut Output),
    In(&'a Output),
    U64(u64),
    U32(u32),
    I32(i32),
    F32(f32),
}

/// How many blocks to launch.
pub(crate) enum Grid {
    /// A grid-stride kernel over `work` items per row of `rows` (blockIdx.y): as many blocks as can be resident
    /// at once (one wave; a second, partial wave of equal-sized blocks would double the time of its part).
    Wave { work: usize, rows: usize },
    /// Exactly these dimensions.
    Fixed { grid: (u32, u32, u32), block: (u32, u32, u32) },
    /// These dimensions, with `bytes` of dynamic shared memory per block.
    Shared { grid: (u32, u32, u32), block: (u32, u32, u32), bytes: u32 },
}

/// A source tensor's memory: on a CUDA device, contiguous, starting 16-byte aligned, bf16, f16 or f32.
pub(crate) struct Source {
    tensor: Tensor,
    suffix: &'static str,
    device: CudaDevice,
}

impl Source {
    /// `xs` as the kernels read it (copied when strided or misaligned); `op` names the operation in errors.
    pub fn new(xs: &Tensor, op: &str) -> Result<Self> {
        let suffix = match xs.dtype() {
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::F32 => "f32",
            other => {
                return Err(Error::internal(format!(
                    "cuda::{op}: cannot read a {other:?} tensor (BF16, F16 or F32 expected)"
                )))
            }
        };
        let device = match xs.device() {
            Device::Cuda(device) => device.clone(),
            other => return Err(super::not_on_cuda(op, other)),
        };
        // The kernels read from element 0 with 16-byte vectors: copy a strided view or one whose start is not
        // 16-byte aligned (a fresh allocation always is).
        let aligned =
            xs.is_contiguous() && (xs.layout().start_offset() * xs.dtype().size_in_bytes()).is_multiple_of(16);
        let tensor = if aligned { xs.clone() } else { xs.force_contiguous()? };
        Ok(Source { tensor, suffix, device })
    }

    /// `bf16`, `f16` or `f32`: the suffix of the kernel instantiated for this dtype.
    pub fn suffix(&self) -> &'static str {
        self.suffix
    }

    /// Uninitialized memory for `len` elements of `dtype` (U8, F32, or the source's float dtype), which the
    /// kernel about to run writes in full.
    pub fn alloc(&self, dtype: DType, len: usize) -> Result<Output> {
        let len = len.max(1);
        // SAFETY: every launcher launches a kernel that writes all `len` elements before the memory is read.
        unsafe {
            Ok(match dtype {
                DType::U8 => Output::U8(self.device.alloc::<u8>(len)?),
                DType::U32 => Output::U32(self.device.alloc::<u32>(len)?),
                DType::F32 => Output::F32(self.device.alloc::<f32>(len)?),
                DType::BF16 => Output::BF16(self.device.alloc::<bf16>(len)?),
                DType::F16 => Output::F16(self.device.alloc::<f16>(len)?),
                other => return Err(Error::internal(format!("cuda: no output buffers of {other:?}"))),
            })
        }
    }

    /// `len` f32 zeros (for kernels that combine into their output).
    pub fn zeros(&self, len: usize) -> Result<Output> {
        Ok(Output::F32(self.device.alloc_zeros::<f32>(len.max(1))?))
    }

    /// Host values copied to the device.
    pub fn upload(&self, values: &[f32]) -> Result<Output> {
        Ok(Output::F32(self.device.clone_htod(values)?))
    }

    /// Host words copied to the device (tables of addresses and counts, as pairs of u32 halves).
    pub fn upload_u32(&self, values: &[u32]) -> Result<Output> {
        Ok(Output::U32(self.device.clone_htod(values)?))
    }

    /// Launches `kernel` of `module` with the source as its first argument and then `args`.
    pub fn launch(&self, module: &Module, kernel: &str, grid: Grid, args: &mut [Arg<'_>]) -> Result<()> {
        self.run(module, kernel, grid, true, args)
    }

    /// Launches `kernel` of `module` with `args` only: for kernels whose first input is not a float tensor (it is
    /// passed as an address, `Arg::U64`).
    pub fn launch_args(&self, module: &Module, kernel: &str, grid: Grid, args: &mut [Arg<'_>]) -> Result<()> {
        self.run(module, kernel, grid, false, args)
    }

    /// Launches `kernel` with the source first when `with_source`, then `args`.
    fn run(&self, module: &Module, kernel: &str, grid: Grid, with_source: bool, args: &mut [Arg<'_>]) -> Result<()> {
        let func = function(&self.device, module, kernel)?;
        let config = match grid {
            Grid::Wave { work, rows } => wave(&self.device, &func, work, rows)?,
            Grid::Fixed { grid, block } => LaunchConfig { grid_dim: grid, block_dim: block, shared_mem_bytes: 0 },
            Grid::Shared { grid, block, bytes } => {
                // More than 48 KiB of dynamic shared memory has to be asked for (sm_80 and later have it).
                let attribute = CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
                func.set_attribute(attribute, bytes as i32).w()?;
                LaunchConfig { grid_dim: grid, block_dim: block, shared_mem_bytes: bytes }
            }
        };
        let (storage, layout) = self.tensor.storage_and_layout();
        let Storage::Cuda(cuda) = &*storage else {
            return Err(Error::internal("cuda: a CUDA tensor without CUDA storage"));
        };
        let range = layout.start_offset()..layout.start_offset() + self.tensor.elem_count();
        let stream = self.device.cuda_stream();
        let mut builder = stream.launch_builder(&func);
        let (b16, b32): (Option<CudaView<'_, u16>>, Option<CudaView<'_, f32>>) = match self.tensor.dtype() {
            DType::BF16 => (Some(as_u16(cuda.as_cuda_slice::<bf16>()?.slice(range))?), None),
            DType::F16 => (Some(as_u16(cuda.as_cuda_slice::<f16>()?.slice(range))?), None),
            _ => (None, Some(cuda.as_cuda_slice::<f32>()?.slice(range))),
        };
        if with_source {
            match (&b16, &b32) {
                (Some(view), _) => builder.arg(view),
                (_, Some(view)) => builder.arg(view),
                _ => return Err(Error::internal("cuda: a source without a view")),
            };
        }
        for arg in args.iter_mut() {
            match arg {
                Arg::Out(Output::U8(s)) => builder.arg(s),
                Arg::Out(Output::U32(s)) => builder.arg(s),
                Arg::Out(Output::F32(s)) => builder.arg(s),
                Arg::Out(Output::BF16(s)) => builder.arg(s),
                Arg::Out(Output::F16(s)) => builder.arg(s),
                Arg::In(Output::U8(s)) => builder.arg(s),
                Arg::In(Output::U32(s)) => builder.arg(s),
                Arg::In(Output::F32(s)) => builder.arg(s),
                Arg::In(Output::BF16(s)) => builder.arg(s),
                Arg::In(Output::F16(s)) => builder.arg(s),
                Arg::U64(v) => builder.arg(&*v),
                Arg::U32(v) => builder.arg(&*v),
                Arg::I32(v) => builder.arg(&*v),
                Arg::F32(v) => builder.arg(&*v),
            };
        }
        // SAFETY: each launcher passes the pointers and scalars of its kernel's signature in order, the source
        // and inputs are live for the call (the storage stays read-locked; tensors passed by address as U64 are
        // kept alive by the caller), and every output holds at least the elements the kernel writes for this grid.
        unsafe { builder.launch(config) }.w()?;
        Ok(())
    }

    /// An output as a tensor of `shape` on the source's device.
    pub fn tensor(&self, output: Output, shape: impl Into<Shape>) -> Tensor {
        match output {
            Output::U8(slice) => wrap(slice, &self.device, shape),
            Output::U32(slice) => wrap(slice, &self.device, shape),
            Output::F32(slice) => wrap(slice, &self.device, shape),
            Output::BF16(slice) => wrap(slice, &self.device, shape),
            Output::F16(slice) => wrap(slice, &self.device, shape),
        }
    }
}

pub(crate) fn wrap<T: CudaDType>(slice: CudaSlice<T>, device: &CudaDevice, shape: impl Into<Shape>) -> Tensor {
    let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, device.clone()));
    Tensor::from_storage(storage, shape, BackpropOp::none(), false)
}

/// Elements `range` of a contiguous U8 CUDA tensor, copied to the host in one transfer of just those bytes.
pub(crate) fn download_u8(tensor: &Tensor, range: std::ops::Range<usize>) -> Result<Vec<u8>> {
    let (storage, layout) = tensor.storage_and_layout();
    let Storage::Cuda(cuda) = &*storage else {
        return Err(super::not_on_cuda("download_u8", tensor.device()));
    };
    if tensor.dtype() != DType::U8 || !layout.is_contiguous() || range.end > tensor.elem_count() {
        return Err(Error::internal(format!(
            "cuda::download_u8: elements {range:?} of a {:?} tensor {:?} (contiguous U8 expected)",
            tensor.dtype(),
            tensor.dims()
        )));
    }
    let Device::Cuda(device) = tensor.device() else {
        return Err(super::not_on_cuda("download_u8", tensor.device()));
    };
    let offset = layout.start_offset();
    let view = cuda.as_cuda_slice::<u8>()?.slice(offset + range.start..offset + range.end);
    let mut host = crate::memory::with_pages(range.len());
    // SAFETY: the copy below writes all `range.len()` bytes (the capacity is that) before anything reads them.
    #[allow(clippy::uninit_vec)]
    unsafe {
        host.set_len(range.len())
    };
    device.cuda_stream().memcpy_dtoh(&view, &mut host).w()?;
    Ok(host)
}

/// The device address of element `layout.start_offset()` of a CUDA tensor (U8, U32, F32, BF16 or F16), to pass a
/// second input to a kernel as a pointer (`Arg::U64`). The caller keeps the tensor alive until the kernel has run:
/// everything runs on the device's one stream, so a later free is ordered after it.
pub(crate) fn address(tensor: &Tensor) -> Result<u64> {
    use candle_core::cuda_backend::cudarc::driver::DevicePtr;
    let (storage, layout) = tensor.storage_and_layout();
    let Storage::Cuda(cuda) = &*storage else {
        return Err(super::not_on_cuda("address", tensor.device()));
    };
    let Device::Cuda(device) = tensor.device() else {
        return Err(super::not_on_cuda("address", tensor.device()));
    };
    let stream = device.cuda_stream();
    let offset = (layout.start_offset() * tensor.dtype().size_in_bytes()) as u64;
    let base = match tensor.dtype() {
        DType::U8 => cuda.as_cuda_slice::<u8>()?.device_ptr(&stream).0,
        DType::U32 => cuda.as_cuda_slice::<u32>()?.device_ptr(&stream).0,
        DType::F32 => cuda.as_cuda_slice::<f32>()?.device_ptr(&stream).0,
        DType::BF16 => cuda.as_cuda_slice::<bf16>()?.device_ptr(&stream).0,
        DType::F16 => cuda.as_cuda_slice::<f16>()?.device_ptr(&stream).0,
        other => return Err(Error::internal(format!("cuda: no kernel input of {other:?}"))),
    };
    Ok(base + offset)
}

/// Reinterprets a view of 2-byte floats as u16 (same size, no alignment change).
fn as_u16<T>(view: CudaView<'_, T>) -> Result<CudaView<'_, u16>> {
    let len = view.len();
    // SAFETY: T is bf16 or f16, two bytes like u16, and every bit pattern is a valid u16.
    let reinterpreted = unsafe { view.transmute::<u16>(len) };
    reinterpreted.ok_or_else(|| Error::internal("cuda: could not view a 16-bit tensor as u16"))
}

/// The kernel `name`, loading the module on this device the first time (candle caches it by module name).
/// `MOE_QUANT_CUDA_PTX=sm80` forces the portable module (to test it on newer GPUs).
fn function(device: &CudaDevice, module: &Module, name: &str) -> Result<CudaFunction> {
    let (major, minor) = device.cuda_stream().context().compute_capability().w()?;
    let portable = std::env::var("MOE_QUANT_CUDA_PTX").is_ok_and(|v| v == "sm80");
    let (key, ptx) = if (major, minor) >= (8, 9) && !portable {
        (module.sm89_key, module.sm89)
    } else {
        (module.sm80_key, module.sm80)
    };
    Ok(device.get_or_load_custom_func(name, key, ptx)?.into_cuda_function())
}

fn wave(device: &CudaDevice, func: &CudaFunction, work: usize, rows: usize) -> Result<LaunchConfig> {
    let sms =
        device.cuda_stream().context().attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).w()?;
    let resident = func.occupancy_max_active_blocks_per_multiprocessor(THREADS, 0, None).w()?;
    let target = (sms.max(1) as u32) * resident.clamp(1, MAX_BLOCKS_PER_SM);
    let rows = u32::try_from(rows).map_err(|_| Error::internal("cuda: too many experts for one launch"))?;
    let per_row = (target / rows.max(1)).max(1);
    let needed = work.div_ceil(THREADS as usize).max(1);
    let blocks = (needed.min(per_row as usize)) as u32;
    Ok(LaunchConfig { grid_dim: (blocks, rows.max(1), 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 })
}

/// Threads per block of the grid-stride kernels (for launchers that size a grid themselves).
pub(crate) const BLOCK_THREADS: u32 = THREADS;
