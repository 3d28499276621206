//! max |x| on the GPU: over a whole tensor, per expert of an `[E, ..]` tensor, and per group of 16 along the
//! last dimension. NaN values are skipped (as the CPU's `weight_amax` does); an infinite value gives +inf.

use candle_core::{DType, Tensor};

use super::{address, kernel_module, leading_dim, shape_error, Arg, Grid, Module, Source};
use crate::error::Result;

const AMAX: Module = kernel_module!("amax");
/// Elements one thread loads with 16-byte vectors (`GROUP` in common.cuh).
const VECTOR_GROUP: usize = 16;

/// max |x| over the whole tensor, as an F32 tensor of shape `[]`.
pub fn amax(xs: &Tensor) -> Result<Tensor> {
    Ok(amax_runs(xs, 1, "amax")?.reshape(())?)
}

/// max |x| per expert of an `[E, ..]` tensor (gate_up `[E, 2I, H]`, down `[E, H, I]`), as F32 `[E]`.
pub fn amax_per_expert(xs: &Tensor) -> Result<Tensor> {
    let experts = leading_dim(xs, "amax_per_expert")?;
    amax_runs(xs, experts, "amax_per_expert")
}

/// max |x| per group of 16 along the last dimension: F32 `[.., K/16]` for `[.., K]` (K a multiple of 16).
pub fn amax_per_block(xs: &Tensor) -> Result<Tensor> {
    if xs.dims().last().is_none_or(|k| k % VECTOR_GROUP != 0) {
        return Err(shape_error(
            xs,
            "amax_per_block reduces groups of 16 along the last dimension, which must be a multiple of 16",
        ));
    }
    let source = Source::new(xs, "amax_per_block")?;
    let groups = xs.elem_count() / VECTOR_GROUP;
    let mut out = source.alloc(DType::F32, groups)?;
    if groups > 0 {
        let kernel = format!("amax_groups_{}", source.suffix());
        let grid = Grid::Wave { work: groups, rows: 1 };
        source.launch(&AMAX, &kernel, grid, &mut [Arg::Out(&mut out), Arg::U64(groups as u64)])?;
    }
    let mut dims = xs.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last /= VECTOR_GROUP;
    }
    Ok(source.tensor(out, dims))
}

/// max |x| of each tensor, as F32 `[n]`, in one launch: the tensors (bf16, f16 or f32, one dtype, on one GPU; any
/// shapes) are read where they lie when contiguous and 16-byte aligned (a view such as half an expert's gate_up
/// is), copied otherwise. One launch instead of one per tensor: a layer's 384 expert weights cost one.
pub fn amax_each(tensors: &[&Tensor]) -> Result<Tensor> {
    let op = "amax_each";
    let Some(first) = tensors.first() else {
        return Err(crate::error::Error::internal(format!("cuda::{op}: no tensors")));
    };
    let source = Source::new(first, op)?;
    let mut kept = Vec::with_capacity(tensors.len());
    let mut table = Vec::with_capacity(4 * tensors.len());
    let mut largest = 0;
    for tensor in tensors {
        if tensor.dtype() != first.dtype() || !tensor.device().same_device(first.device()) {
            return Err(shape_error(tensor, &format!("{op} expects {:?} tensors on one device", first.dtype())));
        }
        let aligned = tensor.is_contiguous()
            && (tensor.layout().start_offset() * tensor.dtype().size_in_bytes()).is_multiple_of(16);
        let tensor = if aligned { (*tensor).clone() } else { tensor.force_contiguous()? };
        let count = tensor.elem_count() as u64;
        for word in [address(&tensor)?, count] {
            table.extend([word as u32, (word >> 32) as u32]);
        }
        largest = largest.max(tensor.elem_count());
        kept.push(tensor);
    }
    let table = source.upload_u32(&table)?;
    let mut out = source.zeros(tensors.len())?;
    let kernel = format!("amax_each_{}", source.suffix());
    let grid = Grid::Wave { work: largest.div_ceil(VECTOR_GROUP), rows: tensors.len() };
    source.launch_args(&AMAX, &kernel, grid, &mut [Arg::In(&table), Arg::Out(&mut out)])?;
    // The copies (if any) and the table live until the kernel has run: one stream orders their frees after it.
    drop(kept);
    Ok(source.tensor(out, tensors.len()))
}

/// `amax` over `runs` equal consecutive runs of the tensor's elements, F32 `[runs]`.
fn amax_runs(xs: &Tensor, runs: usize, op: &str) -> Result<Tensor> {
    let source = Source::new(xs, op)?;
    let mut out = source.zeros(runs)?;
    let count = xs.elem_count();
    if count > 0 {
        let per_expert = count / runs;
        let vectorized = i32::from(runs == 1 || per_expert.is_multiple_of(VECTOR_GROUP));
        let kernel = format!("amax_experts_{}", source.suffix());
        let grid = Grid::Wave { work: per_expert / VECTOR_GROUP + per_expert % VECTOR_GROUP, rows: runs };
        let mut args = [Arg::Out(&mut out), Arg::U64(per_expert as u64), Arg::I32(vectorized)];
        source.launch(&AMAX, &kernel, grid, &mut args)?;
    }
    Ok(source.tensor(out, runs))
}
