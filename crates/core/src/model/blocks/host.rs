//! Loops over host memory for steps of the CPU forward where candle's ops make several passes and allocate
//! between them, or run on one core: max |x| of a tensor (candle: `abs`, then `max_all`), the weighted sum of each
//! token's routed expert outputs (candle: a product, a gather, then a sum over a middle dimension, which it walks
//! element by element) and the gather of the routed rows. Each computes exactly what the op-by-op path computes:
//! the same products, added in the same order.

use candle_core::{DType, Storage, Tensor};
use half::{bf16, f16};

use crate::error::Result;

/// max |x| of a contiguous bf16, f16 or f32 tensor on the CPU, NaN skipped (as `f32::max` does); None for other
/// tensors. Over the bit patterns: with the sign cleared, a float's magnitude orders as its bits do, and NaN's
/// patterns lie above infinity's.
pub fn abs_max(xs: &Tensor) -> Result<Option<f32>> {
    let (storage, layout) = xs.storage_and_layout();
    let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) else {
        return Ok(None);
    };
    fn largest<T: Copy>(values: &[T], bits: impl Fn(T) -> u32, infinity: u32) -> u32 {
        values.iter().map(|&v| bits(v)).map(|b| if b > infinity { 0 } else { b }).fold(0, u32::max)
    }
    Ok(Some(match xs.dtype() {
        DType::BF16 => {
            let bits = largest(&cpu.as_slice::<bf16>()?[start..end], |v| u32::from(v.to_bits() & 0x7fff), 0x7f80);
            bf16::from_bits(bits as u16).to_f32()
        }
        DType::F16 => {
            let bits = largest(&cpu.as_slice::<f16>()?[start..end], |v| u32::from(v.to_bits() & 0x7fff), 0x7c00);
            f16::from_bits(bits as u16).to_f32()
        }
        DType::F32 => {
            let bits = largest(&cpu.as_slice::<f32>()?[start..end], |v| v.to_bits() & 0x7fff_ffff, 0x7f80_0000);
            f32::from_bits(bits)
        }
        _ => return Ok(None),
    }))
}

/// `out[t] = Σ_k routed[rows[t·K + k]] · weights[rows[t·K + k]]` (k ascending, from 0; without weights the rows
/// alone) for f32 `routed [slots, H]` on the CPU, as `[tokens, H]` f32; None for other tensors. The product is
/// rounded before it is added, as candle's `broadcast_mul` then `sum` round it.
pub fn combine_routed(
    routed: &Tensor,
    rows: &Tensor,
    weights: Option<&Tensor>,
    top_k: usize,
) -> Result<Option<Tensor>> {
    let Some(rows) = row_indices(routed, rows)? else { return Ok(None) };
    let weights = weights.map(|w| w.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()).transpose()?;
    if top_k == 0 || weights.as_ref().is_some_and(|w| w.len() != routed.dim(0).unwrap_or_default()) {
        return Ok(None);
    }
    let weights = weights.as_deref();
    each_output_row(routed, rows.len() / top_k, |token, sum, row_of| {
        for &slot in &rows[token * top_k..(token + 1) * top_k] {
            let row = row_of(slot as usize);
            match weights {
                Some(w) => sum.iter_mut().zip(row).for_each(|(s, &x)| *s += x * w[slot as usize]),
                None => sum.iter_mut().zip(row).for_each(|(s, &x)| *s += x),
            }
        }
    })
}

/// Rows `rows` of f32 `xs [n, H]` on the CPU, in order, as `[rows, H]` (what `index_select` on dimension 0
/// gives), copied on all cores; None for other tensors.
pub fn gather_rows(xs: &Tensor, rows: &Tensor) -> Result<Option<Tensor>> {
    let Some(rows) = row_indices(xs, rows)? else { return Ok(None) };
    each_output_row(xs, rows.len(), |i, to, row_of| to.copy_from_slice(row_of(rows[i] as usize)))
}

/// The row indices `rows` (U32) into f32 `xs [n, H]` when both loops above can take them: `xs` contiguous on the
/// CPU, H > 0, every index below n. None otherwise (candle's op then runs, and reports a bad index).
fn row_indices(xs: &Tensor, rows: &Tensor) -> Result<Option<Vec<u32>>> {
    let (n, hidden) = xs.dims2()?;
    if xs.dtype() != DType::F32 || !xs.device().is_cpu() || !xs.is_contiguous() || hidden == 0 {
        return Ok(None);
    }
    let rows = rows.flatten_all()?.to_vec1::<u32>()?;
    Ok(rows.iter().all(|&r| (r as usize) < n).then_some(rows))
}

/// An f32 `[rows, H]` tensor whose row i is written by `fill(i, row, row_of)` (zeros before; `row_of(j)` is row j
/// of `xs [n, H]`, f32, contiguous, on the CPU), the rows dealt out over the machine's cores in consecutive runs.
fn each_output_row(
    xs: &Tensor,
    rows: usize,
    fill: impl for<'v> Fn(usize, &mut [f32], &(dyn Fn(usize) -> &'v [f32] + 'v)) + Sync,
) -> Result<Option<Tensor>> {
    let (n, hidden) = xs.dims2()?;
    let mut out = vec![0f32; rows * hidden];
    {
        let (storage, layout) = xs.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else { return Ok(None) };
        let values = &cpu.as_slice::<f32>()?[layout.start_offset()..layout.start_offset() + n * hidden];
        let row_of = |j: usize| &values[j * hidden..(j + 1) * hidden];
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(rows).max(1);
        let per_thread = rows.div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            for (chunk, out) in out.chunks_mut(per_thread * hidden).enumerate() {
                let (fill, row_of) = (&fill, &row_of);
                scope.spawn(move || {
                    for (i, row) in out.chunks_mut(hidden).enumerate() {
                        fill(chunk * per_thread + i, row, row_of);
                    }
                });
            }
        });
    }
    Ok(Some(Tensor::from_vec(out, (rows, hidden), xs.device())?))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, IndexOp, Tensor};

    use super::*;

    /// Values with every kind of edge: signed zeros, subnormals, infinities and NaN among random ones.
    fn edge_values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        let mut values: Vec<f32> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32 - 0.5) * 8.0
            })
            .collect();
        values[0] = -0.0;
        values[1] = 1e-40;
        values[2] = f32::NAN;
        values
    }

    #[test]
    fn abs_max_is_the_largest_magnitude_with_nan_skipped_in_every_dtype() {
        let mut values = edge_values(1000, 7);
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let xs = Tensor::new(values.as_slice(), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
            let stored = xs.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
            let expected = stored.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_eq!(abs_max(&xs).unwrap(), Some(expected), "{dtype:?}");
            // A contiguous view inside the storage reads its own elements only.
            let view = xs.i(10..20).unwrap();
            let expected = stored[10..20].iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_eq!(abs_max(&view).unwrap(), Some(expected), "{dtype:?} view");
        }
        values[500] = f32::NEG_INFINITY;
        let xs = Tensor::new(values.as_slice(), &Device::Cpu).unwrap();
        assert_eq!(abs_max(&xs).unwrap(), Some(f32::INFINITY));
        let zeros = Tensor::new(&[-0.0f32, 0.0, -0.0], &Device::Cpu).unwrap();
        assert_eq!(abs_max(&zeros).unwrap().map(f32::to_bits), Some(0));
        // Not contiguous, or not a float: left to candle.
        let grid = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        assert_eq!(abs_max(&grid.t().unwrap()).unwrap(), None);
        assert_eq!(abs_max(&Tensor::new(&[1u32], &Device::Cpu).unwrap()).unwrap(), None);
    }

    #[test]
    fn gather_gives_index_select_rows() {
        let xs = Tensor::from_vec(edge_values(7 * 5, 11), (7, 5), &Device::Cpu).unwrap();
        let rows = Tensor::new(&[6u32, 0, 3, 3, 1, 6, 2, 5, 4], &Device::Cpu).unwrap();
        let bits = |t: &Tensor| {
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect::<Vec<_>>()
        };
        let got = gather_rows(&xs, &rows).unwrap().unwrap();
        assert_eq!(got.dims(), [9, 5]);
        assert_eq!(bits(&got), bits(&xs.index_select(&rows, 0).unwrap()));
        let outside = Tensor::new(&[7u32], &Device::Cpu).unwrap();
        assert!(gather_rows(&xs, &outside).unwrap().is_none(), "candle reports a row outside the tensor");
    }

    #[test]
    fn combine_gives_the_op_by_op_bits() {
        let (slots, hidden, top_k) = (24usize, 40usize, 3usize);
        let values: Vec<f32> =
            edge_values(slots * hidden, 3).into_iter().map(|v| if v.is_nan() { 0.5 } else { v }).collect();
        let routed = Tensor::from_vec(values, (slots, hidden), &Device::Cpu).unwrap();
        let weights = Tensor::from_vec(
            edge_values(slots, 9).iter().map(|v| v.abs() / 4.0 + 0.01).collect::<Vec<f32>>(),
            (slots, 1),
            &Device::Cpu,
        )
        .unwrap();
        // Each token's slots, in expert order (a permutation of the slots).
        let rows: Vec<u32> = (0..slots as u32).map(|i| (i * 7) % slots as u32).collect();
        let rows = Tensor::new(rows.as_slice(), &Device::Cpu).unwrap();
        let tokens = slots / top_k;
        let op_by_op = |weights: Option<&Tensor>| {
            let routed = match weights {
                Some(w) => routed.broadcast_mul(w).unwrap(),
                None => routed.clone(),
            };
            let summed =
                routed.index_select(&rows, 0).unwrap().reshape((tokens, top_k, hidden)).unwrap().sum(1).unwrap();
            summed.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect::<Vec<_>>()
        };
        for weights in [Some(&weights), None] {
            let got = combine_routed(&routed, &rows, weights, top_k).unwrap().unwrap();
            assert_eq!(got.dims(), [tokens, hidden]);
            let got: Vec<u32> =
                got.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect();
            assert_eq!(got, op_by_op(weights));
        }
    }
}
