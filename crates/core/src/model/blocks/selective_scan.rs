//! The Mamba (Mamba-1) selective scan, computed in f32 one position after another as transformers' PyTorch path
//! does.
//!
//! Per channel c, with state `h ∈ R^N` starting at zero: `h_t = exp(A[c] · dt_t[c]) ⊙ h_t-1 + (dt_t[c] · B_t) · x_t[c]`
//! and `y_t[c] = h_t · C_t + D[c] · x_t[c]`. The decays and inputs of a block of positions are computed at once,
//! the recurrence then runs position by position, and each block's outputs are read from its states through C.
//! transformers: `mamba_selective_scan` of models/jamba (its sequential loop).

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};

/// The inputs of one scan, every tensor f32: `x` and `dt` `[batch, T, channels]` (dt after its bias and the
/// softplus), `a [channels, N]` (negative), `b` and `c` `[batch, T, N]`, `d [channels]`.
pub struct SelectiveScanInputs<'a> {
    pub x: &'a Tensor,
    pub dt: &'a Tensor,
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub c: &'a Tensor,
    pub d: &'a Tensor,
}

/// Bytes of one block's `[batch, positions, channels, N]` intermediates: the positions of a block are as many as
/// keep each within this.
const BLOCK_BYTES: usize = 64 << 20;

/// The scan output `[batch, T, channels]`, the `D` skip included.
pub fn selective_scan(inputs: &SelectiveScanInputs) -> Result<Tensor> {
    let (batch, len, channels) = inputs.x.dims3()?;
    let (a_channels, state) = inputs.a.dims2()?;
    let shapes_agree = a_channels == channels
        && inputs.dt.dims() == inputs.x.dims()
        && inputs.b.dims() == [batch, len, state]
        && inputs.c.dims() == [batch, len, state]
        && inputs.d.dims() == [channels];
    let all_f32 = [inputs.x, inputs.dt, inputs.a, inputs.b, inputs.c, inputs.d].iter().all(|t| t.dtype() == DType::F32);
    if !shapes_agree || !all_f32 {
        return Err(Error::internal(format!(
            "selective scan: x {:?}, dt {:?}, A {:?}, B {:?}, C {:?}, D {:?} (all f32 expected)",
            inputs.x.dims(),
            inputs.dt.dims(),
            inputs.a.dims(),
            inputs.b.dims(),
            inputs.c.dims(),
            inputs.d.dims()
        )));
    }
    let per_position = (batch * channels * state * std::mem::size_of::<f32>()).max(1);
    scan_in_blocks(inputs, (BLOCK_BYTES / per_position).clamp(1, len.max(1)))
}

/// The scan over blocks of `block` positions, the state carried from one to the next.
fn scan_in_blocks(inputs: &SelectiveScanInputs, block: usize) -> Result<Tensor> {
    let (batch, len, channels) = inputs.x.dims3()?;
    let state = inputs.a.dim(1)?;
    if len == 0 {
        return Ok(inputs.x.clone());
    }
    let mut carried = Tensor::zeros((batch, channels, state), DType::F32, inputs.x.device())?;
    let mut outputs = Vec::with_capacity(len.div_ceil(block));
    for start in (0..len).step_by(block) {
        let (ys, last) = scan_block(inputs, start, block.min(len - start), &carried)?;
        outputs.push(ys);
        carried = last;
    }
    let ys = if outputs.len() == 1 { outputs.remove(0) } else { Tensor::cat(&outputs, 1)? };
    Ok(ys.add(&inputs.x.broadcast_mul(inputs.d)?)?)
}

/// Positions `start..start + n` from the state `carried [batch, channels, N]`: their outputs `[batch, n, channels]`
/// (without the `D` skip) and the state after the last.
fn scan_block(inputs: &SelectiveScanInputs, start: usize, n: usize, carried: &Tensor) -> Result<(Tensor, Tensor)> {
    let x = inputs.x.narrow(1, start, n)?;
    let dt = inputs.dt.narrow(1, start, n)?;
    let b = inputs.b.narrow(1, start, n)?;
    let c = inputs.c.narrow(1, start, n)?;
    // [batch, n, channels, N]: exp(A · dt) and (dt · B) · x, in transformers' order of operations.
    let dt_wide = dt.unsqueeze(3)?;
    let decay = inputs.a.unsqueeze(0)?.unsqueeze(0)?.broadcast_mul(&dt_wide)?.exp()?;
    let input = dt_wide.broadcast_mul(&b.unsqueeze(2)?)?.broadcast_mul(&x.unsqueeze(3)?)?;
    let mut state = carried.clone();
    let mut states = Vec::with_capacity(n);
    for t in 0..n {
        state = decay.narrow(1, t, 1)?.squeeze(1)?.mul(&state)?.add(&input.narrow(1, t, 1)?.squeeze(1)?)?;
        states.push(state.clone());
    }
    let states = Tensor::stack(&states, 1)?;
    let ys = states.broadcast_mul(&c.unsqueeze(2)?)?.sum(D::Minus1)?;
    Ok((ys, state))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// One sequence of 3 positions, 2 channels, state size 2.
    fn inputs(device: &Device) -> [Tensor; 6] {
        [
            Tensor::new(&[[[1f32, -2.0], [0.5, 1.0], [-1.0, 3.0]]], device).unwrap(),
            Tensor::new(&[[[0.5f32, 0.1], [1.0, 0.2], [0.25, 2.0]]], device).unwrap(),
            Tensor::new(&[[-1f32, -0.5], [-2.0, -0.25]], device).unwrap(),
            Tensor::new(&[[[1f32, 2.0], [-1.0, 0.5], [0.0, 1.0]]], device).unwrap(),
            Tensor::new(&[[[1f32, 0.0], [0.5, 0.5], [2.0, -1.0]]], device).unwrap(),
            Tensor::new(&[0.5f32, -1.0], device).unwrap(),
        ]
    }

    /// transformers 5.25's `mamba_selective_scan` (models/jamba, sequential path, f32, no softplus, no gate) gives, on
    /// these inputs, `[[1.0, 1.8], [0.52023518, -1.30727792], [-1.49818158, -8.84210968]]`. By hand, channel 1 at
    /// position 0: `h = dt · B · x = 0.1 · (1, 2) · (-2) = (-0.2, -0.4)`, `y = h · C + D · x = -0.2 + 2 = 1.8`.
    #[test]
    fn matches_transformers_sequential_scan() {
        let [x, dt, a, b, c, d] = inputs(&Device::Cpu);
        let scan = SelectiveScanInputs { x: &x, dt: &dt, a: &a, b: &b, c: &c, d: &d };
        let got = selective_scan(&scan).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        let want = [[1.0f64, 1.8], [0.520_235_18, -1.307_277_92], [-1.498_181_58, -8.842_109_68]];
        for (row, want_row) in got.iter().zip(want) {
            for (g, w) in row.iter().zip(want_row) {
                assert!((f64::from(*g) - w).abs() <= 1e-6 * w.abs().max(1.0), "{got:?} vs {want:?}");
            }
        }
    }

    /// The state carried from one block of positions to the next gives what one block gives.
    #[test]
    fn blocks_of_positions_carry_the_state() {
        let [x, dt, a, b, c, d] = inputs(&Device::Cpu);
        let scan = SelectiveScanInputs { x: &x, dt: &dt, a: &a, b: &b, c: &c, d: &d };
        let whole = scan_in_blocks(&scan, 3).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let single = scan_in_blocks(&scan, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let pairs = scan_in_blocks(&scan, 2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(whole, single);
        assert_eq!(whole, pairs);
    }
}
