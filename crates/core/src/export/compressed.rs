//! The compressed-tensors form of the quantized tensors (`exportFormat: 'compressed-tensors'`), as vLLM's
//! compressed-tensors loader and the `compressed-tensors` package read them. A plan in this form quantizes with
//! compressed-tensors' arithmetic (`export::FormatSet`): NVFP4 by [`crate::formats::Nvfp4CompressedTensors`], whose
//! scalars are already in this form, FP8 by [`crate::formats::Fp8Bf16Scales`], whose f32 scales are bf16 values.
//! Each tensor is then renamed and re-encoded here, losslessly:
//!
//! | as quantized | compressed-tensors |
//! |---|---|
//! | NVFP4 `weight` U8 `[N, K/2]` | `weight_packed`, same bytes (low nibble = even column) |
//! | NVFP4 `weight_scale` F8_E4M3 `[N, K/16]`, `weight_global_scale` and `input_global_scale` F32 `[1]` | unchanged |
//! | FP8 `weight` F8_E4M3 `[N, K]` | unchanged |
//! | FP8 `weight_scale` F32: 0-d, `[N]`, `[N/128, 1, K/128, 1]` (or 0-d) | BF16 `[1]`, `[N, 1]`, `[N/128, K/128]` |
//! | FP8 `input_scale` F32 0-d | BF16 `[1]` |

use serde::Deserialize;

use crate::checkpoint::Dtype;
use crate::error::{Error, Result};
use crate::formats::{FormatName, OutputTensor};
use crate::numerics::e4m3::round_to_bf16;

/// How the output checkpoint stores its quantized weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ts_rs::TS)]
pub enum Encoding {
    /// ModelOpt's unified HF checkpoint (`hf_quant_config.json`).
    #[default]
    #[serde(rename = "modelopt")]
    ModelOpt,
    /// compressed-tensors (`quantization_config` with `quant_method: "compressed-tensors"`).
    #[serde(rename = "compressed-tensors")]
    CompressedTensors,
}

/// The dtype and shape of a KV cache scale: 0-d F32 in ModelOpt's form, BF16 `[1]` in compressed-tensors' (the
/// attention's dtype, as llm-compressor stores it).
pub fn scalar_layout(encoding: Encoding) -> (Dtype, Vec<usize>) {
    match encoding {
        Encoding::ModelOpt => (Dtype::F32, Vec::new()),
        Encoding::CompressedTensors => (Dtype::BF16, vec![1]),
    }
}

/// What happens to a tensor's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Values {
    Same,
    /// f32 values, each exactly a bf16 one, stored as bf16.
    Bf16,
}

/// The compressed-tensors name, dtype and shape of the ModelOpt-form tensor `suffix` of a weight in `format`, and
/// what happens to its values.
fn convert(
    format: FormatName,
    suffix: &str,
    dtype: Dtype,
    shape: &[usize],
) -> Result<(&'static str, Dtype, Vec<usize>, Values)> {
    let nvfp4 = matches!(format, FormatName::Nvfp4 | FormatName::W4a16Nvfp4);
    let fp8 = matches!(format, FormatName::Fp8 | FormatName::Fp8PcPt | FormatName::Fp8PbWo);
    let converted = match (suffix, dtype) {
        ("weight", Dtype::U8) if nvfp4 => ("weight_packed", dtype, shape.to_vec(), Values::Same),
        ("weight", Dtype::F8E4M3) if fp8 => ("weight", dtype, shape.to_vec(), Values::Same),
        ("weight_scale", Dtype::F8E4M3) if nvfp4 => ("weight_scale", dtype, shape.to_vec(), Values::Same),
        ("weight_global_scale", Dtype::F32) if nvfp4 && shape == [1] => {
            ("weight_global_scale", dtype, vec![1], Values::Same)
        }
        ("input_global_scale", Dtype::F32) if nvfp4 && shape == [1] => {
            ("input_global_scale", dtype, vec![1], Values::Same)
        }
        ("input_scale", Dtype::F32) if format == FormatName::Fp8 && shape.is_empty() => {
            ("input_scale", Dtype::BF16, vec![1], Values::Bf16)
        }
        ("weight_scale", Dtype::F32) if fp8 => {
            let shape = match (format, shape) {
                (FormatName::Fp8, []) => vec![1],
                (FormatName::Fp8PcPt, &[rows]) => vec![rows, 1],
                (FormatName::Fp8PbWo, []) => vec![1, 1],
                (FormatName::Fp8PbWo, &[row_blocks, 1, col_blocks, 1]) => vec![row_blocks, col_blocks],
                _ => return Err(unconvertible(format, suffix, dtype, shape)),
            };
            ("weight_scale", Dtype::BF16, shape, Values::Bf16)
        }
        _ => return Err(unconvertible(format, suffix, dtype, shape)),
    };
    Ok(converted)
}

fn unconvertible(format: FormatName, suffix: &str, dtype: Dtype, shape: &[usize]) -> Error {
    Error::internal(format!("{} tensor {suffix} ({dtype} {shape:?}) has no compressed-tensors form", format.as_str()))
}

/// The compressed-tensors layout of the ModelOpt-form `tensors` (suffix, dtype, shape) of a weight in `format`.
pub fn layout(
    format: FormatName,
    tensors: Vec<(&'static str, Dtype, Vec<usize>)>,
) -> Result<Vec<(&'static str, Dtype, Vec<usize>)>> {
    tensors
        .into_iter()
        .map(|(suffix, dtype, shape)| convert(format, suffix, dtype, &shape).map(|(s, d, shape, _)| (s, d, shape)))
        .collect()
}

/// One ModelOpt-form tensor of a weight in `format` (`name` is the weight's, for errors), in compressed-tensors'
/// form.
pub fn encode(format: FormatName, name: &str, tensor: OutputTensor) -> Result<OutputTensor> {
    let (suffix, dtype, shape, values) = convert(format, tensor.suffix, tensor.dtype, &tensor.shape)?;
    let data = match values {
        Values::Same => tensor.data,
        Values::Bf16 => {
            let mut out = Vec::with_capacity(tensor.data.len() / 2);
            for bytes in tensor.data.chunks_exact(4) {
                let value = f32::from_le_bytes(bytes.try_into().unwrap_or_default());
                if round_to_bf16(value).to_bits() != value.to_bits() {
                    return Err(Error::internal(format!(
                        "{name}: the {} value {value} is not a bf16 value (the format was not made with bf16 scales)",
                        tensor.suffix
                    )));
                }
                out.extend_from_slice(&half::bf16::from_f32(value).to_le_bytes());
            }
            out
        }
    };
    Ok(OutputTensor { suffix, dtype, shape, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(suffix: &'static str, value: f32) -> OutputTensor {
        OutputTensor::scalar_f32(suffix, value)
    }

    #[test]
    fn nvfp4_codes_are_renamed_and_its_scales_kept() {
        let packed = OutputTensor { suffix: "weight", dtype: Dtype::U8, shape: vec![2, 8], data: vec![0x97; 16] };
        let out = encode(FormatName::Nvfp4, "w", packed.clone()).unwrap();
        assert_eq!(
            (out.suffix, out.dtype, &out.shape, &out.data),
            ("weight_packed", Dtype::U8, &packed.shape, &packed.data)
        );
        let global = OutputTensor { shape: vec![1], ..scalar("weight_global_scale", 4.0) };
        assert_eq!(encode(FormatName::W4a16Nvfp4, "w", global.clone()).unwrap(), global);
        // ModelOpt's multiplier has no place here: the plan's NVFP4 must be compressed-tensors'.
        assert!(encode(FormatName::Nvfp4, "w", scalar("weight_scale_2", 0.25)).is_err());
    }

    #[test]
    fn fp8_scales_are_stored_in_bf16_with_compressed_tensors_shapes() {
        let bf16 = |v: f32| half::bf16::from_f32(v).to_le_bytes().to_vec();
        let per_tensor = encode(FormatName::Fp8, "w", scalar("weight_scale", 0.375)).unwrap();
        assert_eq!((per_tensor.dtype, per_tensor.shape.clone(), per_tensor.data), (Dtype::BF16, vec![1], bf16(0.375)));
        let rows = OutputTensor {
            suffix: "weight_scale",
            dtype: Dtype::F32,
            shape: vec![2],
            data: [1f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        assert_eq!(encode(FormatName::Fp8PcPt, "w", rows).unwrap().shape, [2, 1]);
        let blocks =
            OutputTensor { suffix: "weight_scale", dtype: Dtype::F32, shape: vec![2, 1, 3, 1], data: vec![0; 24] };
        assert_eq!(encode(FormatName::Fp8PbWo, "w", blocks).unwrap().shape, [2, 3]);
        assert_eq!(layout(FormatName::Fp8PbWo, vec![("weight_scale", Dtype::F32, vec![])]).unwrap()[0].2, [1, 1]);
        let input = encode(FormatName::Fp8, "w", scalar("input_scale", 0.5)).unwrap();
        assert_eq!((input.suffix, input.dtype, input.shape), ("input_scale", Dtype::BF16, vec![1]));
    }

    #[test]
    fn refuses_what_it_cannot_convert_exactly() {
        let err = encode(FormatName::Fp8, "layer.w", scalar("weight_scale", 0.1)).unwrap_err();
        assert!(err.to_string().contains("layer.w") && err.to_string().contains("bf16"), "{err}");
        assert!(encode(FormatName::Mxfp8, "w", scalar("weight_scale", 1.0)).is_err());
        assert!(layout(FormatName::Fp8PcPt, vec![("weight_scale", Dtype::F32, vec![2, 2])]).is_err());
    }
}
