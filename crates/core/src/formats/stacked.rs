//! Experts stored stacked, BMM style: one `[E, K, N]` tensor holding every expert's weight with its input
//! axis K before its output axis N (GPT-OSS's and Llama4's `experts.gate_up_proj` `[E, H, 2I]` and
//! `experts.down_proj` `[E, I, H]`), quantized in the form ModelOpt 0.47's unified HF export writes for them:
//! the stack keeps its name and layout, and each of the format's tensors gains a leading expert axis.
//!
//! Each format says through [`QuantFormat::stacked_rule`] how one expert is seen as the 2-D weight
//! `[rows, cols]` its own [`QuantFormat::quantize`] takes ([`expert_matrix`]), and with which amax; the
//! expert's tensors are then put back in the stack's layout ([`StackAssembler`]). Nothing here is format math.

use std::borrow::Cow;

use super::{shape_error, OutputTensor, QuantFormat, QuantizedWeight};
use crate::checkpoint::Dtype;
use crate::error::{Error, Result};

/// How a format quantizes one expert of a stack `[E, K, N]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackedRule {
    /// The expert transposed to `[N, K]` (input axis last, so block formats scale along K) and quantized with
    /// the amax of the whole stack (ModelOpt puts one weight quantizer on the stack). Each 2-D tensor is
    /// transposed back (`[N, K/2]` codes → `[K/2, N]`); the per-tensor scalars, equal for every expert, are
    /// written once.
    Transposed,
    /// The expert is one channel: `[1, K·N]` in its stored order, with its own amax (a per-channel quantizer
    /// over axis 0 of the stack). `[1, K·N]` tensors go back to `[K, N]`, one-element `[1]` tensors (its
    /// scale) become one entry of an `[E]` tensor.
    ExpertChannel,
    /// The expert as stored, `[K, N]`, quantized element by element with the amax of the whole stack and
    /// divided in f32 whatever the stored dtype (ModelOpt divides a stack by a one-element scale tensor, which
    /// promotes the division to f32, where a 2-D weight is divided in its own dtype); its scale written once.
    Whole,
}

impl StackedRule {
    /// The dtype an expert's values are divided in, for values stored in `stored`.
    pub fn division_dtype(self, stored: Dtype) -> Dtype {
        match self {
            StackedRule::Whole => Dtype::F32,
            StackedRule::Transposed | StackedRule::ExpertChannel => stored,
        }
    }
}

/// `[E, K, N]` of a stack `name`; `E_TENSOR_SHAPE` unless it is 3-D.
pub fn stack_shape(name: &str, shape: &[usize]) -> Result<[usize; 3]> {
    match *shape {
        [experts, k, n] => Ok([experts, k, n]),
        _ => Err(shape_error(name, shape, "experts stored stacked must be 3-D [experts, in, out]".into())),
    }
}

/// The rule of `format` for stacks; `E_INTERNAL` for a format that has none.
pub fn stacked_rule(format: &dyn QuantFormat, name: &str) -> Result<StackedRule> {
    format.stacked_rule().ok_or_else(|| {
        Error::internal(format!("{name}: {} has no form for experts stored stacked", format.quant_algo()))
    })
}

/// The 2-D shape one expert `[K, N]` is quantized as.
fn matrix_of(rule: StackedRule, [k, n]: [usize; 2]) -> [usize; 2] {
    match rule {
        StackedRule::Transposed => [n, k],
        StackedRule::ExpertChannel => [1, k * n],
        StackedRule::Whole => [k, n],
    }
}

/// One expert's values (`[K, N]`, row major) as the 2-D weight its format quantizes, with that shape.
pub fn expert_matrix(rule: StackedRule, [k, n]: [usize; 2], values: &[f32]) -> ([usize; 2], Cow<'_, [f32]>) {
    match rule {
        StackedRule::Transposed => {
            let mut out = vec![0f32; values.len()];
            for (i, row) in values.chunks_exact(n.max(1)).enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    out[j * k + i] = v;
                }
            }
            ([n, k], Cow::Owned(out))
        }
        StackedRule::ExpertChannel => ([1, k * n], Cow::Borrowed(values)),
        StackedRule::Whole => ([k, n], Cow::Borrowed(values)),
    }
}

/// Where one tensor of an expert goes in the stack's tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// A 2-D `[r, c]` tensor stored transposed, `[c, r]`, after the previous experts'.
    Transpose([usize; 2]),
    /// Bytes appended as they are.
    Append,
    /// A scalar written once (every expert has the same).
    Once,
}

/// The suffix, dtype, shape and placement of each tensor of a stack `[E, K, N]`, in `output_layout` order.
fn stack_layout(
    format: &dyn QuantFormat,
    rule: StackedRule,
    [experts, k, n]: [usize; 3],
) -> Result<Vec<(&'static str, Dtype, Vec<usize>, Placement)>> {
    let matrix = matrix_of(rule, [k, n]);
    let mut layout = Vec::new();
    for (suffix, dtype, shape) in format.output_layout(matrix) {
        let placed = match (rule, shape.as_slice()) {
            (StackedRule::Transposed, &[r, c]) => (vec![experts, c, r], Placement::Transpose([r, c])),
            (StackedRule::Transposed, &[]) => (Vec::new(), Placement::Once),
            (StackedRule::ExpertChannel, &[1, len]) if len == k * n => (vec![experts, k, n], Placement::Append),
            (StackedRule::ExpertChannel, &[1]) => (vec![experts], Placement::Append),
            (StackedRule::Whole, &[r, c]) if [r, c] == [k, n] => (vec![experts, k, n], Placement::Append),
            (StackedRule::Whole, &[]) => (Vec::new(), Placement::Once),
            _ => {
                return Err(Error::internal(format!(
                    "{}: a {shape:?} tensor of an expert {matrix:?} has no place in a stack",
                    format.quant_algo()
                )))
            }
        };
        layout.push((suffix, dtype, placed.0, placed.1));
    }
    Ok(layout)
}

/// The suffix, dtype and shape of each tensor written for a stack `[E, K, N]`, in `output_layout` order.
pub fn stacked_layout(
    format: &dyn QuantFormat,
    name: &str,
    shape: [usize; 3],
) -> Result<Vec<(&'static str, Dtype, Vec<usize>)>> {
    let rule = stacked_rule(format, name)?;
    Ok(stack_layout(format, rule, shape)?.into_iter().map(|(suffix, dtype, shape, _)| (suffix, dtype, shape)).collect())
}

/// Builds a stack's tensors from its experts' quantized weights, given in expert order.
pub struct StackAssembler {
    tensors: Vec<OutputTensor>,
    placements: Vec<Placement>,
    experts: usize,
    added: usize,
}

impl StackAssembler {
    /// For the stack `name` of `shape` `[E, K, N]` quantized by `format`.
    pub fn new(format: &dyn QuantFormat, name: &str, shape: [usize; 3]) -> Result<Self> {
        let rule = stacked_rule(format, name)?;
        let mut tensors = Vec::new();
        let mut placements = Vec::new();
        for (suffix, dtype, shape, placement) in stack_layout(format, rule, shape)? {
            let bytes = shape.iter().product::<usize>() * dtype.size();
            let data = crate::memory::try_zeroed(bytes, || format!("the {suffix} of {name}"))?;
            tensors.push(OutputTensor { suffix, dtype, shape, data });
            placements.push(placement);
        }
        Ok(StackAssembler { tensors, placements, experts: shape[0], added: 0 })
    }

    /// Adds the next expert's tensors (as `format.quantize` returned them).
    pub fn add(&mut self, expert: &QuantizedWeight) -> Result<()> {
        let e = self.added;
        if expert.tensors.len() != self.tensors.len() || e >= self.experts {
            return Err(Error::internal("an expert's quantized tensors do not fit its stack"));
        }
        for ((out, placement), part) in self.tensors.iter_mut().zip(&self.placements).zip(&expert.tensors) {
            let len = part.data.len();
            let expected = match *placement {
                Placement::Once => out.data.len(),
                _ => out.data.len() / self.experts,
            };
            if len != expected || part.dtype != out.dtype {
                return Err(Error::internal(format!("{}: an expert's tensor does not fit its stack", out.suffix)));
            }
            match *placement {
                Placement::Transpose([rows, cols]) => {
                    let size = part.dtype.size();
                    let block = &mut out.data[e * len..(e + 1) * len];
                    for (r, row) in part.data.chunks_exact((cols * size).max(1)).enumerate() {
                        for (c, element) in row.chunks_exact(size).enumerate() {
                            let at = (c * rows + r) * size;
                            block[at..at + size].copy_from_slice(element);
                        }
                    }
                }
                Placement::Append => out.data[e * len..(e + 1) * len].copy_from_slice(&part.data),
                Placement::Once if e == 0 => out.data.copy_from_slice(&part.data),
                Placement::Once if out.data != part.data => {
                    return Err(Error::internal(format!(
                        "{}: experts of one stack differ in a shared scale",
                        out.suffix
                    )))
                }
                Placement::Once => {}
            }
        }
        self.added += 1;
        Ok(())
    }

    /// The stack's tensors, once every expert was added.
    pub fn finish(self) -> Result<QuantizedWeight> {
        if self.added != self.experts {
            return Err(Error::internal(format!(
                "{} of {} experts of a stack were quantized",
                self.added, self.experts
            )));
        }
        Ok(QuantizedWeight { tensors: self.tensors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::{format, FormatName, WeightInput};

    /// A stack `[E, K, N]` of bf16-exact values, distinct per expert.
    fn stack([experts, k, n]: [usize; 3]) -> Vec<f32> {
        (0..experts * k * n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0 * (1.0 + (i / (k * n)) as f32)).collect()
    }

    fn quantize(name: FormatName, shape: [usize; 3], values: &[f32]) -> QuantizedWeight {
        let format = format(name, false);
        let rule = stacked_rule(format.as_ref(), "s").unwrap();
        let [experts, k, n] = shape;
        let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        let mut assembler = StackAssembler::new(format.as_ref(), "s", shape).unwrap();
        for expert in values.chunks_exact(k * n).take(experts) {
            let (matrix, m) = expert_matrix(rule, [k, n], expert);
            let weight = WeightInput::new("s", rule.division_dtype(Dtype::BF16), &matrix, &m).unwrap();
            assembler.add(&format.quantize(&weight, amax).unwrap()).unwrap();
        }
        let stacked = assembler.finish().unwrap();
        let got: Vec<_> = stacked.tensors.iter().map(|t| (t.suffix, t.dtype, t.shape.clone())).collect();
        assert_eq!(got, stacked_layout(format.as_ref(), "s", shape).unwrap());
        stacked
    }

    #[test]
    fn nvfp4_blocks_along_the_input_axis_with_one_amax() {
        let shape = [3, 32, 8];
        let values = stack(shape);
        let stacked = quantize(FormatName::W4a16Nvfp4, shape, &values);
        let layout: Vec<_> = stacked.tensors.iter().map(|t| t.shape.clone()).collect();
        assert_eq!(layout, vec![vec![3, 16, 8], vec![3, 2, 8], vec![]]);
        // Expert 2, output column 5: the transposed row quantized alone, with the stack's amax.
        let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        let column: Vec<f32> = (0..32).map(|i| values[2 * 256 + i * 8 + 5]).collect();
        let alone = format(FormatName::Nvfp4, false)
            .quantize(&WeightInput::new("c", Dtype::BF16, &[1, 32], &column).unwrap(), amax)
            .unwrap();
        let codes: Vec<u8> = (0..16).map(|i| stacked.tensors[0].data[2 * 128 + i * 8 + 5]).collect();
        assert_eq!(codes, alone.tensors[0].data);
        let scales: Vec<u8> = (0..2).map(|i| stacked.tensors[1].data[2 * 16 + i * 8 + 5]).collect();
        assert_eq!(scales, alone.tensors[1].data);
        assert_eq!(stacked.tensors[2].data, alone.tensors[2].data);
    }

    #[test]
    fn fp8_per_channel_scales_each_expert_whole() {
        let shape = [3, 4, 8];
        let values = stack(shape);
        let stacked = quantize(FormatName::Fp8PcPt, shape, &values);
        assert_eq!(stacked.tensors[0].shape, vec![3, 4, 8]);
        assert_eq!(stacked.tensors[1].shape, vec![3]);
        for (e, expert) in values.chunks_exact(32).enumerate() {
            let alone = format(FormatName::Fp8PcPt, false)
                .quantize(&WeightInput::new("x", Dtype::BF16, &[1, 32], expert).unwrap(), 0.0)
                .unwrap();
            assert_eq!(&stacked.tensors[0].data[e * 32..(e + 1) * 32], &alone.tensors[0].data[..]);
            assert_eq!(&stacked.tensors[1].data[e * 4..(e + 1) * 4], &alone.tensors[1].data[..]);
        }
    }

    #[test]
    fn fp8_divides_the_whole_stack_by_one_scale_in_f32() {
        let shape = [3, 4, 8];
        // Quotients that round differently once rounded to bf16 first: 136.37 is 144 in E4M3, 136 (its bf16
        // rounding) the tie that goes to 128.
        let mut values = stack(shape);
        let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
        values[37] = 136.37 * amax / 448.0;
        let stacked = quantize(FormatName::Fp8, shape, &values);
        assert_eq!(stacked.tensors[0].shape, vec![3, 4, 8]);
        assert_eq!(stacked.tensors[1].shape, Vec::<usize>::new());
        let alone = format(FormatName::Fp8, false)
            .quantize(&WeightInput::new("x", Dtype::F32, &[12, 8], &values).unwrap(), amax)
            .unwrap();
        assert_eq!(stacked.tensors[0].data, alone.tensors[0].data);
        assert_eq!(stacked.tensors[1].data, alone.tensors[1].data);
        assert_eq!(crate::numerics::e4m3::e4m3_to_f32(stacked.tensors[0].data[37]), 144.0);
    }

    #[test]
    fn a_stack_must_be_three_dimensional() {
        assert_eq!(stack_shape("s", &[2, 16]).unwrap_err().code(), "E_TENSOR_SHAPE");
    }
}
