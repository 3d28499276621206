//! The routed experts' matmuls as two cuBLAS calls: each expert multiplies its own rows of the routed activations by
//! its weight, written straight into those rows of one output, instead of a matmul, an allocation and a
//! concatenation per expert. The rows of each expert are cut into chunks of [`CHUNK_ROWS`], all multiplied by one
//! batched GEMM (problems of one shape), and the remainders by one grouped GEMM. Shapes were checked by the caller
//! (`cuda/mod.rs`).

use std::ops::Range;

use candle_core::cuda_backend::cudarc::cublas::sys as cublas;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, DType, Storage, Tensor};
use half::{bf16, f16};

use super::wrap;
use crate::error::{Error, Result};

/// `out[r] = xs[r] · weights[i]ᵀ` for the rows r of `ranges[i]`; see `cuda::grouped_matmul_t`.
pub(crate) fn grouped_matmul_t(
    device: &CudaDevice,
    xs: &Tensor,
    weights: &[&Tensor],
    ranges: &[Range<usize>],
    n: usize,
) -> Result<Tensor> {
    match xs.dtype() {
        DType::BF16 => run::<bf16>(device, xs, weights, ranges, n, cublas::cudaDataType_t::CUDA_R_16BF),
        DType::F16 => run::<f16>(device, xs, weights, ranges, n, cublas::cudaDataType_t::CUDA_R_16F),
        other => Err(Error::internal(format!("cuda::grouped_matmul_t: {other:?} is not bf16 or f16"))),
    }
}

/// The address of element `layout.start_offset()` of a contiguous CUDA tensor of `T`.
fn address<T: CudaDType + DeviceRepr>(tensor: &Tensor, device: &CudaDevice) -> Result<u64> {
    let (storage, layout) = tensor.storage_and_layout();
    let Storage::Cuda(cuda) = &*storage else {
        return Err(Error::internal("cuda::grouped_matmul_t: a CUDA tensor without CUDA storage"));
    };
    let stream = device.cuda_stream();
    let (base, _sync) = cuda.as_cuda_slice::<T>()?.device_ptr(&stream);
    Ok(base + (layout.start_offset() * std::mem::size_of::<T>()) as u64)
}

fn run<T: CudaDType + DeviceRepr>(
    device: &CudaDevice,
    xs: &Tensor,
    weights: &[&Tensor],
    ranges: &[Range<usize>],
    n: usize,
    data_type: cublas::cudaDataType_t,
) -> Result<Tensor> {
    let (rows, k) = xs.dims2()?;
    let size = std::mem::size_of::<T>() as u64;
    // SAFETY: the ranges tile 0..rows (checked by the caller), so the GEMMs below write every element.
    let out = unsafe { device.alloc::<T>((rows * n).max(1)) }?;
    let groups: Vec<(usize, &Range<usize>)> =
        ranges.iter().enumerate().filter(|(_, range)| !range.is_empty()).collect();
    if groups.is_empty() {
        return Ok(wrap(out, device, (rows, n)));
    }
    let stream = device.cuda_stream();
    let out_base = {
        let (ptr, _sync) = out.device_ptr(&stream);
        ptr
    };
    let xs_base = address::<T>(xs, device)?;
    let problems = Problems {
        weights: groups.iter().map(|&(i, _)| address::<T>(weights[i], device)).collect::<Result<_>>()?,
        inputs: groups.iter().map(|(_, range)| xs_base + (range.start * k) as u64 * size).collect(),
        outputs: groups.iter().map(|(_, range)| out_base + (range.start * n) as u64 * size).collect(),
        rows: groups.iter().map(|(_, range)| int(range.len())).collect::<Result<_>>()?,
        n: int(n)?,
        k: int(k)?,
        data_type,
    };
    // Batched rather than a cublasGemmEx per expert: an expert's few thousand rows fill too few of the GPU's
    // multiprocessors alone (measured on an H100: the experts' GEMMs took 2.1x as long one by one).
    chunked(device, &problems, CHUNK_ROWS)?;
    Ok(wrap(out, device, (rows, n)))
}

/// Rows per chunk: each expert's rows are cut into chunks of this many, multiplied as one batched GEMM, and the
/// remainders as one grouped GEMM. Measured on an H100 (Qwen3-30B-A3B's experts, 32768 tokens top-8 per batch): the
/// experts' GEMMs took 0.29 s with 256 to 1024 rows against 0.55 s as one grouped GEMM, whose kernels cuBLAS does not
/// build for Hopper; 256 leaves the smallest remainders.
const CHUNK_ROWS: usize = 256;

/// Whole chunks of `chunk` rows as one `cublasGemmBatchedEx` (every problem the same shape, for which cuBLAS has
/// Hopper kernels), then the remainders of each group as one grouped GEMM.
fn chunked(device: &CudaDevice, problems: &Problems, chunk: usize) -> Result<()> {
    let size = problems.data_type_size();
    let (n, k) = (problems.n as u64, problems.k as u64);
    let mut whole = Problems::empty(problems);
    let mut rest = Problems::empty(problems);
    for g in 0..problems.rows.len() {
        let rows = problems.rows[g] as usize;
        let full = rows / chunk;
        for c in 0..full {
            let offset = (c * chunk) as u64;
            whole.push(
                problems.weights[g],
                problems.inputs[g] + offset * k * size,
                problems.outputs[g] + offset * n * size,
                int(chunk)?,
            );
        }
        if rows % chunk > 0 {
            let offset = (full * chunk) as u64;
            rest.push(
                problems.weights[g],
                problems.inputs[g] + offset * k * size,
                problems.outputs[g] + offset * n * size,
                int(rows % chunk)?,
            );
        }
    }
    if !whole.rows.is_empty() {
        batched(device, &whole, int(chunk)?)?;
    }
    if !rest.rows.is_empty() {
        grouped(device, &rest)?;
    }
    Ok(())
}

/// Problems of one shape (`rows` each) as one `cublasGemmBatchedEx`.
fn batched(device: &CudaDevice, problems: &Problems, rows: i32) -> Result<()> {
    let stream = device.cuda_stream();
    let count = problems.rows.len();
    let pointers_on_device = problems.pointer_arrays(&stream)?;
    let (array_base, _sync) = pointers_on_device.device_ptr(&stream);
    let array = |part: usize| (array_base + (part * count * std::mem::size_of::<u64>()) as u64) as *const *const _;
    let (alpha, beta) = (1.0f32, 0.0f32);
    let data_type = problems.data_type;
    let blas = device.cublas_handle();
    // SAFETY: as in `grouped`: the pointer arrays hold `count` addresses each, into live tensors covering the
    // rows and columns given.
    unsafe {
        cublas::cublasGemmBatchedEx(
            *blas.handle(),
            cublas::cublasOperation_t::CUBLAS_OP_T,
            cublas::cublasOperation_t::CUBLAS_OP_N,
            problems.n,
            rows,
            problems.k,
            (&alpha as *const f32).cast(),
            array(0),
            data_type,
            problems.k,
            array(1),
            data_type,
            problems.k,
            (&beta as *const f32).cast(),
            array(2) as *const *mut _,
            data_type,
            problems.n,
            int(count)?,
            cublas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
        .result()
        .w()?;
    }
    Ok(())
}

/// The GEMMs of one call: per group, the addresses of its weight, input rows and output rows, and its row count.
struct Problems {
    weights: Vec<u64>,
    inputs: Vec<u64>,
    outputs: Vec<u64>,
    rows: Vec<i32>,
    n: i32,
    k: i32,
    data_type: cublas::cudaDataType_t,
}

impl Problems {
    fn empty(like: &Problems) -> Problems {
        Problems {
            weights: vec![],
            inputs: vec![],
            outputs: vec![],
            rows: vec![],
            n: like.n,
            k: like.k,
            data_type: like.data_type,
        }
    }

    fn push(&mut self, weight: u64, input: u64, output: u64, rows: i32) {
        self.weights.push(weight);
        self.inputs.push(input);
        self.outputs.push(output);
        self.rows.push(rows);
    }

    /// The weights', inputs' and outputs' addresses as three consecutive device arrays of `rows.len()` each.
    fn pointer_arrays(&self, stream: &std::sync::Arc<CudaStream>) -> Result<CudaSlice<u64>> {
        let pointers: Vec<u64> = self.weights.iter().chain(&self.inputs).chain(&self.outputs).copied().collect();
        Ok(stream.clone_htod(&pointers).w()?)
    }

    /// Bytes per element: the GEMMs run on bf16 or f16.
    fn data_type_size(&self) -> u64 {
        2
    }
}

fn int(value: usize) -> Result<i32> {
    i32::try_from(value).map_err(|_| Error::internal(format!("grouped GEMM: {value} > i32")))
}

// Row-major `out_rows [m, n] = x_rows [m, k] · W [n, k]ᵀ` is column-major `outᵀ [n, m] = Wᵀ · xᵀ`: cuBLAS sees W
// as a k×n matrix (transposed to n×k) and the rows of x as a k×m one.

/// All groups as one `cublasGemmGroupedBatchedEx` (pointer arrays uploaded once).
fn grouped(device: &CudaDevice, problems: &Problems) -> Result<()> {
    let stream = device.cuda_stream();
    let count = problems.rows.len();
    let pointers_on_device = problems.pointer_arrays(&stream)?;
    let (array_base, _sync) = pointers_on_device.device_ptr(&stream);
    let array = |part: usize| (array_base + (part * count * std::mem::size_of::<u64>()) as u64) as *const *const _;
    let transa = vec![cublas::cublasOperation_t::CUBLAS_OP_T; count];
    let transb = vec![cublas::cublasOperation_t::CUBLAS_OP_N; count];
    let (n_array, k_array) = (vec![problems.n; count], vec![problems.k; count]);
    let (alpha, beta) = (vec![1.0f32; count], vec![0.0f32; count]);
    let group_size = vec![1i32; count];
    let data_type = problems.data_type;
    let blas = device.cublas_handle();
    // SAFETY: the host arrays have `count` entries each; the device pointer arrays point into live tensors
    // (read-locked until this returns, and ordered on the one stream of this device) whose extents cover the
    // rows and columns given; f32 alpha/beta go with CUBLAS_COMPUTE_32F.
    unsafe {
        cublas::cublasGemmGroupedBatchedEx(
            *blas.handle(),
            transa.as_ptr(),
            transb.as_ptr(),
            n_array.as_ptr(),
            problems.rows.as_ptr(),
            k_array.as_ptr(),
            alpha.as_ptr().cast(),
            array(0),
            data_type,
            k_array.as_ptr(),
            array(1),
            data_type,
            k_array.as_ptr(),
            beta.as_ptr().cast(),
            array(2) as *const *mut _,
            data_type,
            n_array.as_ptr(),
            int(count)?,
            group_size.as_ptr(),
            cublas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        )
        .result()
        .w()?;
    }
    // The pointer arrays are freed when this returns, in stream order: after the GEMM has read them.
    Ok(())
}
