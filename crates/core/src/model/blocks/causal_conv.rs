//! Depthwise causal convolution over the sequence, without bias: each channel `c` of `xs [B, T, C]` becomes
//! `y[t, c] = Σ_j w[c, j] · x[t − (K − 1) + j, c]` (zero before the first token), as `nn.Conv1d(groups=C,
//! padding=K − 1)` truncated to the first T outputs computes it.
//! transformers: models/qwen3_next `causal_conv1d_fn` (its PyTorch fallback).

use candle_core::Tensor;

use crate::error::{Error, Result};

pub struct CausalConv {
    /// One `[C]` row of weights per tap `j` (tap `K − 1` reads the current token).
    taps: Vec<Tensor>,
}

impl CausalConv {
    /// From the stored weight `[C, 1, K]`.
    pub fn new(weight: &Tensor) -> Result<Self> {
        let (channels, one, kernel) = weight.dims3()?;
        if one != 1 || kernel == 0 {
            return Err(Error::internal(format!(
                "a depthwise convolution weight is [C, 1, K], got {:?}",
                weight.dims()
            )));
        }
        let weight = weight.reshape((channels, kernel))?;
        let taps = (0..kernel).map(|j| Ok(weight.narrow(1, j, 1)?.reshape(channels)?)).collect::<Result<Vec<_>>>()?;
        Ok(CausalConv { taps })
    }

    /// `xs [B, T, C]` → `[B, T, C]`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, t, c) = xs.dims3()?;
        let kernel = self.taps.len();
        let padded = match kernel {
            1 => xs.clone(),
            _ => Tensor::cat(&[&Tensor::zeros((b, kernel - 1, c), xs.dtype(), xs.device())?, xs], 1)?,
        };
        let mut ys: Option<Tensor> = None;
        for (j, tap) in self.taps.iter().enumerate() {
            let term = padded.narrow(1, j, t)?.broadcast_mul(&tap.to_dtype(xs.dtype())?)?;
            ys = Some(match ys {
                None => term,
                Some(sum) => (sum + term)?,
            });
        }
        ys.ok_or_else(|| Error::internal("a convolution without taps"))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    #[test]
    fn each_output_reads_the_current_and_previous_tokens_of_its_channel() {
        let device = Device::Cpu;
        // Two channels, kernel 3: channel 0 weights (1, 10, 100), channel 1 (2, 0, -1).
        let weight = Tensor::new(&[[[1f32, 10.0, 100.0]], [[2.0, 0.0, -1.0]]], &device).unwrap();
        let xs = Tensor::new(&[[[1f32, 5.0], [2.0, 6.0], [3.0, 7.0], [4.0, 8.0]]], &device).unwrap();
        let ys = CausalConv::new(&weight).unwrap().forward(&xs).unwrap();
        let want = [[100.0, -5.0], [210.0, -6.0], [321.0, 3.0], [432.0, 4.0]];
        assert_eq!(ys.get(0).unwrap().to_vec2::<f32>().unwrap(), want);
    }
}
