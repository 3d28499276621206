//! Launchers for `quant.cu`: borrow the source tensor's device memory, allocate the outputs, launch, and wrap
//! the results as candle tensors on the same device. Shapes and scales were checked by the caller (`mod.rs`).

use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, CudaStorage, DType, Shape, Storage, Tensor};
use half::{bf16, f16};

use crate::error::{Error, Result};

/// `quant.cu` for any GPU since Ampere, and for compute capability 8.9+ (hardware E4M3 conversion).
const PTX_SM80: &str = include_str!(concat!(env!("OUT_DIR"), "/quant.sm80.ptx"));
const PTX_SM89: &str = include_str!(concat!(env!("OUT_DIR"), "/quant.sm89.ptx"));
const THREADS: u32 = 256;
/// At most 2048 threads per multiprocessor.
const MAX_BLOCKS_PER_SM: u32 = 8;
const GROUP: usize = 16;

/// A source tensor's memory: contiguous, starting 16-byte aligned, in one of the dtypes the kernels read.
struct Source {
    tensor: Tensor,
    suffix: &'static str,
}

impl Source {
    fn new(xs: &Tensor, op: &str) -> Result<Self> {
        let suffix = match xs.dtype() {
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::F32 => "f32",
            other => {
                return Err(Error::internal(format!(
                    "kernels::{op}: cannot read a {other:?} tensor (BF16, F16 or F32 expected)"
                )))
            }
        };
        device_of(xs, op)?;
        // Our kernels read from element 0 with 16-byte vectors: copy a strided view or one whose start is not
        // 16-byte aligned (a fresh allocation always is).
        let aligned =
            xs.is_contiguous() && (xs.layout().start_offset() * xs.dtype().size_in_bytes()).is_multiple_of(16);
        let tensor = if aligned { xs.clone() } else { xs.force_contiguous()? };
        Ok(Source { tensor, suffix })
    }

    fn device(&self) -> Result<CudaDevice> {
        Ok(self.tensor.device().as_cuda_device()?.clone())
    }

    /// Runs `f` with a typed view of the elements (the tensor's storage stays read-locked meanwhile).
    fn with_view<R>(&self, f: impl FnOnce(ViewArg<'_>) -> Result<R>) -> Result<R> {
        let (storage, layout) = self.tensor.storage_and_layout();
        let Storage::Cuda(cuda) = &*storage else {
            return Err(Error::internal("kernels: a CUDA tensor without CUDA storage"));
        };
        let range = layout.start_offset()..layout.start_offset() + self.tensor.elem_count();
        match self.tensor.dtype() {
            DType::BF16 => f(ViewArg::B16(unsafe_u16(cuda.as_cuda_slice::<bf16>()?.slice(range))?)),
            DType::F16 => f(ViewArg::B16(unsafe_u16(cuda.as_cuda_slice::<f16>()?.slice(range))?)),
            DType::F32 => f(ViewArg::B32(cuda.as_cuda_slice::<f32>()?.slice(range))),
            other => Err(Error::internal(format!("kernels: unexpected dtype {other:?}"))),
        }
    }
}

/// A source view as the kernels take it: 2-byte elements (bf16, f16) or f32.
enum ViewArg<'a> {
    B16(CudaView<'a, u16>),
    B32(CudaView<'a, f32>),
}

/// Reinterprets a view of 2-byte floats as u16 (same size, no alignment change).
fn unsafe_u16<T>(view: CudaView<'_, T>) -> Result<CudaView<'_, u16>> {
    let len = view.len();
    // SAFETY: T is bf16 or f16, two bytes like u16, and every bit pattern is a valid u16.
    let reinterpreted = unsafe { view.transmute::<u16>(len) };
    reinterpreted.ok_or_else(|| Error::internal("kernels: could not view a 16-bit tensor as u16"))
}

fn device_of<'a>(xs: &'a Tensor, op: &str) -> Result<&'a CudaDevice> {
    match xs.device() {
        candle_core::Device::Cuda(device) => Ok(device),
        other => Err(Error::DeviceUnavailable {
            message: format!(
                "kernels::{op} runs on CUDA tensors, and this one is on {:?} (moe_quant_core::formats is the CPU path)",
                other.location()
            ),
        }),
    }
}

/// The kernel `name`, loading the module on this device the first time (candle caches it by module name).
/// `MOE_QUANT_CUDA_PTX=sm80` forces the portable module (to test it on newer GPUs).
fn function(device: &CudaDevice, name: &str) -> Result<CudaFunction> {
    let (major, minor) = device.cuda_stream().context().compute_capability().w()?;
    let portable = std::env::var("MOE_QUANT_CUDA_PTX").is_ok_and(|v| v == "sm80");
    let (module, ptx) = if (major, minor) >= (8, 9) && !portable {
        ("moe_quant_core::kernels::quant::sm89", PTX_SM89)
    } else {
        ("moe_quant_core::kernels::quant::sm80", PTX_SM80)
    };
    Ok(device.get_or_load_custom_func(name, module, ptx)?.into_cuda_function())
}

/// Grid-stride launch of `func` over `work` items per row of `rows` (blockIdx.y): as many blocks as can be
/// resident at once (one wave; a second, partial wave of equal-sized blocks would double the time of its part).
fn grid(device: &CudaDevice, func: &CudaFunction, work: usize, rows: usize) -> Result<LaunchConfig> {
    let sms =
        device.cuda_stream().context().attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).w()?;
    let resident = func.occupancy_max_active_blocks_per_multiprocessor(THREADS, 0, None).w()?;
    let target = (sms.max(1) as u32) * resident.clamp(1, MAX_BLOCKS_PER_SM);
    let rows = u32::try_from(rows).map_err(|_| Error::internal("kernels: too many experts for one launch"))?;
    let per_row = (target / rows.max(1)).max(1);
    let needed = work.div_ceil(THREADS as usize).max(1);
    let blocks = (needed.min(per_row as usize)) as u32;
    Ok(LaunchConfig { grid_dim: (blocks, rows.max(1), 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 })
}

/// Makes the device's default memory pool keep freed memory for reuse instead of returning it to the driver at
/// every synchronization (its default release threshold is 0). candle allocates every output with
/// `cuMemAllocAsync` from that pool; with the default, each large allocation after a sync maps fresh pages
/// (measured: +10–30% on the quantize kernels' time). PyTorch's caching allocator keeps memory the same way.
pub(super) fn keep_freed_memory(device: &CudaDevice) -> Result<()> {
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

pub(super) fn wrap<T: CudaDType>(slice: CudaSlice<T>, device: &CudaDevice, shape: impl Into<Shape>) -> Tensor {
    let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, device.clone()));
    Tensor::from_storage(storage, shape, BackpropOp::none(), false)
}

/// Uninitialized device memory that the kernel about to run writes in full.
fn alloc<T: DeviceRepr>(device: &CudaDevice, len: usize) -> Result<CudaSlice<T>> {
    // SAFETY: every caller launches a kernel that writes all `len` elements before the slice is read.
    Ok(unsafe { device.alloc::<T>(len.max(1)) }?)
}

pub(super) fn amax_runs(xs: &Tensor, runs: usize) -> Result<Tensor> {
    let source = Source::new(xs, "amax")?;
    let device = source.device()?;
    let mut out = device.alloc_zeros::<f32>(runs)?;
    let count = xs.elem_count();
    if count > 0 {
        let per_expert = count / runs;
        let vectorized = i32::from(runs == 1 || per_expert.is_multiple_of(GROUP));
        let func = function(&device, &format!("amax_experts_{}", source.suffix))?;
        let config = grid(&device, &func, per_expert / GROUP + per_expert % GROUP, runs)?;
        let per_expert = per_expert as u64;
        source.with_view(|view| {
            let stream = device.cuda_stream();
            let mut launch = stream.launch_builder(&func);
            match &view {
                ViewArg::B16(v) => launch.arg(v),
                ViewArg::B32(v) => launch.arg(v),
            };
            launch.arg(&mut out).arg(&per_expert).arg(&vectorized);
            unsafe { launch.launch(config) }.w()?;
            Ok(())
        })?;
    }
    Ok(wrap(out, &device, runs))
}

pub(super) fn amax_per_block(xs: &Tensor) -> Result<Tensor> {
    let source = Source::new(xs, "amax_per_block")?;
    let device = source.device()?;
    let groups = xs.elem_count() / GROUP;
    let mut out = alloc::<f32>(&device, groups)?;
    if groups > 0 {
        let func = function(&device, &format!("amax_groups_{}", source.suffix))?;
        let config = grid(&device, &func, groups, 1)?;
        let groups = groups as u64;
        source.with_view(|view| {
            let stream = device.cuda_stream();
            let mut launch = stream.launch_builder(&func);
            match &view {
                ViewArg::B16(v) => launch.arg(v),
                ViewArg::B32(v) => launch.arg(v),
            };
            launch.arg(&mut out).arg(&groups);
            unsafe { launch.launch(config) }.w()?;
            Ok(())
        })?;
    }
    let mut dims = xs.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last /= GROUP;
    }
    Ok(wrap(out, &device, dims))
}

pub(super) fn fp8_quantize(xs: &Tensor, scales: &[f32]) -> Result<Tensor> {
    let source = Source::new(xs, "fp8_quantize")?;
    let device = source.device()?;
    let count = xs.elem_count();
    let mut out = alloc::<u8>(&device, count)?;
    if count > 0 {
        let runs = scales.len();
        let per_expert = count / runs;
        let vectorized = i32::from(runs == 1 || per_expert.is_multiple_of(GROUP));
        let scales = device.clone_htod(scales)?;
        let func = function(&device, &format!("fp8_quantize_{}", source.suffix))?;
        let config = grid(&device, &func, per_expert / GROUP + per_expert % GROUP, runs)?;
        let per_expert = per_expert as u64;
        source.with_view(|view| {
            let stream = device.cuda_stream();
            let mut launch = stream.launch_builder(&func);
            match &view {
                ViewArg::B16(v) => launch.arg(v),
                ViewArg::B32(v) => launch.arg(v),
            };
            launch.arg(&mut out).arg(&scales).arg(&per_expert).arg(&vectorized);
            unsafe { launch.launch(config) }.w()?;
            Ok(())
        })?;
    }
    Ok(wrap(out, &device, xs.dims()))
}

pub(super) fn nvfp4_quantize(xs: &Tensor, scales_2: &[f32]) -> Result<super::Nvfp4Tensors> {
    let source = Source::new(xs, "nvfp4_quantize")?;
    let device = source.device()?;
    let count = xs.elem_count();
    let groups = count / GROUP;
    let mut packed = alloc::<u8>(&device, count / 2)?;
    let mut block_scales = alloc::<u8>(&device, groups)?;
    if groups > 0 {
        let runs = scales_2.len();
        let per_expert = count / runs;
        let scales_2 = device.clone_htod(scales_2)?;
        let func = function(&device, &format!("nvfp4_quantize_{}", source.suffix))?;
        let config = grid(&device, &func, per_expert / GROUP, runs)?;
        let per_expert = per_expert as u64;
        source.with_view(|view| {
            let stream = device.cuda_stream();
            let mut launch = stream.launch_builder(&func);
            match &view {
                ViewArg::B16(v) => launch.arg(v),
                ViewArg::B32(v) => launch.arg(v),
            };
            launch.arg(&mut packed).arg(&mut block_scales).arg(&scales_2).arg(&per_expert);
            unsafe { launch.launch(config) }.w()?;
            Ok(())
        })?;
    }
    let mut packed_dims = xs.dims().to_vec();
    let mut scale_dims = xs.dims().to_vec();
    if let (Some(p), Some(s)) = (packed_dims.last_mut(), scale_dims.last_mut()) {
        *p /= 2;
        *s /= GROUP;
    }
    Ok(super::Nvfp4Tensors {
        packed: wrap(packed, &device, packed_dims),
        block_scales: wrap(block_scales, &device, scale_dims),
    })
}

pub(super) fn split_gate_up(gate_up: &Tensor) -> Result<(Tensor, Tensor)> {
    let source = Source::new(gate_up, "split_gate_up")?;
    let device = source.device()?;
    let (experts, two_i, hidden) = gate_up.dims3()?;
    let half_dims = [experts, two_i / 2, hidden];
    let half_count = experts * (two_i / 2) * hidden;
    let element = gate_up.dtype().size_in_bytes();
    let chunk_bytes = (two_i / 2) * hidden * element;
    let func = function(&device, "split_gate_up")?;
    let vectorized = chunk_bytes.is_multiple_of(16);
    // A plain copy: one 16-byte vector per thread over a full grid moves data faster (measured: as fast as
    // cuMemcpyDtoD on an H200) than a grid-stride loop over a single wave (92%).
    let config = if vectorized {
        let blocks = u32::try_from((chunk_bytes / 16).div_ceil(THREADS as usize))
            .map_err(|_| Error::internal("kernels::split_gate_up: expert too large"))?;
        let rows = u32::try_from(2 * experts).map_err(|_| Error::internal("kernels: too many experts"))?;
        LaunchConfig { grid_dim: (blocks.max(1), rows, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
    } else {
        grid(&device, &func, chunk_bytes, 2 * experts)?
    };
    let vectorized = i32::from(vectorized);
    let chunk_bytes = chunk_bytes as u64;
    // Outputs in the source's dtype, written through byte views.
    macro_rules! split_as {
        ($t:ty) => {{
            let mut gate = alloc::<$t>(&device, half_count)?;
            let mut up = alloc::<$t>(&device, half_count)?;
            if half_count > 0 {
                source.with_view(|view| {
                    let bytes = half_count * 2 * element;
                    // SAFETY: byte views of the same allocations, `bytes` long, used only for this launch.
                    let (src, mut gate_bytes, mut up_bytes) = unsafe {
                        let src = match &view {
                            ViewArg::B16(v) => v.transmute::<u8>(bytes),
                            ViewArg::B32(v) => v.transmute::<u8>(bytes),
                        };
                        (src, gate.transmute_mut::<u8>(bytes / 2), up.transmute_mut::<u8>(bytes / 2))
                    };
                    let (Some(src), Some(gate_bytes), Some(up_bytes)) = (src, gate_bytes.as_mut(), up_bytes.as_mut())
                    else {
                        return Err(Error::internal("kernels: could not view expert tensors as bytes"));
                    };
                    let stream = device.cuda_stream();
                    let mut launch = stream.launch_builder(&func);
                    launch.arg(&src).arg(gate_bytes).arg(up_bytes).arg(&chunk_bytes).arg(&vectorized);
                    unsafe { launch.launch(config) }.w()?;
                    Ok(())
                })?;
            }
            Ok((wrap(gate, &device, &half_dims), wrap(up, &device, &half_dims)))
        }};
    }
    match gate_up.dtype() {
        DType::BF16 => split_as!(bf16),
        DType::F16 => split_as!(f16),
        _ => split_as!(f32),
    }
}

pub(super) fn split_gate_up_transposed(gate_up: &Tensor, interleaved: bool) -> Result<(Tensor, Tensor)> {
    let source = Source::new(gate_up, "split_gate_up_transposed")?;
    let device = source.device()?;
    let (experts, hidden, two_i) = gate_up.dims3()?;
    let inter = two_i / 2;
    let half_dims = [experts, inter, hidden];
    let half_count = experts * inter * hidden;
    let too_large = || Error::internal("kernels::split_gate_up_transposed: dimensions too large");
    let config = LaunchConfig {
        grid_dim: (
            u32::try_from(hidden.div_ceil(64)).map_err(|_| too_large())?,
            u32::try_from(two_i.div_ceil(64)).map_err(|_| too_large())?,
            u32::try_from(experts).map_err(|_| too_large())?,
        ),
        block_dim: (32, 8, 1),
        shared_mem_bytes: 0,
    };
    let (hidden_arg, inter_arg) =
        (u32::try_from(hidden).map_err(|_| too_large())?, u32::try_from(inter).map_err(|_| too_large())?);
    let interleaved = i32::from(interleaved);
    macro_rules! split_as {
        ($t:ty, $elem:ty, $variant:ident, $name:literal) => {{
            let mut gate = alloc::<$t>(&device, half_count)?;
            let mut up = alloc::<$t>(&device, half_count)?;
            if half_count > 0 {
                let func = function(&device, $name)?;
                source.with_view(|view| {
                    let ViewArg::$variant(src) = view else {
                        return Err(Error::internal("kernels: element size mismatch"));
                    };
                    // SAFETY: views of the outputs with elements of the same size, used only for this launch.
                    let (mut gate_view, mut up_view) =
                        unsafe { (gate.transmute_mut::<$elem>(half_count), up.transmute_mut::<$elem>(half_count)) };
                    let (Some(gate_view), Some(up_view)) = (gate_view.as_mut(), up_view.as_mut()) else {
                        return Err(Error::internal("kernels: could not view expert tensors"));
                    };
                    let stream = device.cuda_stream();
                    let mut launch = stream.launch_builder(&func);
                    launch.arg(&src).arg(gate_view).arg(up_view).arg(&hidden_arg).arg(&inter_arg).arg(&interleaved);
                    unsafe { launch.launch(config) }.w()?;
                    Ok(())
                })?;
            }
            Ok((wrap(gate, &device, &half_dims), wrap(up, &device, &half_dims)))
        }};
    }
    match gate_up.dtype() {
        DType::BF16 => split_as!(bf16, u16, B16, "split_gate_up_transposed_b16"),
        DType::F16 => split_as!(f16, u16, B16, "split_gate_up_transposed_b16"),
        _ => split_as!(f32, f32, B32, "split_gate_up_transposed_b32"),
    }
}
