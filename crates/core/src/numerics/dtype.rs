//! The element types moe-quant reads and writes, and their mapping to safetensors' names.

use safetensors::Dtype as StDtype;

/// Element types found in Hugging Face checkpoints that moe-quant reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    Bool,
    U8,
    I8,
    I16,
    I32,
    I64,
    F16,
    BF16,
    F32,
    F64,
    /// FP8 E4M3 ("fn" variant: no infinities, max 448).
    F8E4M3,
}

impl Dtype {
    /// The safetensors spellings of every supported dtype, for error messages.
    pub const SUPPORTED: &'static str = "BOOL, U8, I8, I16, I32, I64, F16, BF16, F32, F64, F8_E4M3";

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 | Dtype::F8E4M3 => 1,
            Dtype::I16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::F64 => 8,
        }
    }

    /// Bytes of a tensor of this dtype and shape; `None` when that overflows (a shape from an untrusted file
    /// or descriptor must not panic).
    pub fn byte_len(self, shape: &[usize]) -> Option<usize> {
        shape.iter().try_fold(self.size(), |bytes, &dim| bytes.checked_mul(dim))
    }

    /// The name safetensors uses in headers (`"BF16"`, `"F8_E4M3"` …).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::I16 => "I16",
            Dtype::I32 => "I32",
            Dtype::I64 => "I64",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::F8E4M3 => "F8_E4M3",
        }
    }

    /// Whether the values are floating point (and so can be quantized).
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64 | Dtype::F8E4M3)
    }

    /// Maps a safetensors dtype; `None` for one moe-quant does not read.
    pub fn from_safetensors(dtype: StDtype) -> Option<Dtype> {
        Some(match dtype {
            StDtype::BOOL => Dtype::Bool,
            StDtype::U8 => Dtype::U8,
            StDtype::I8 => Dtype::I8,
            StDtype::I16 => Dtype::I16,
            StDtype::I32 => Dtype::I32,
            StDtype::I64 => Dtype::I64,
            StDtype::F16 => Dtype::F16,
            StDtype::BF16 => Dtype::BF16,
            StDtype::F32 => Dtype::F32,
            StDtype::F64 => Dtype::F64,
            StDtype::F8_E4M3 => Dtype::F8E4M3,
            _ => return None,
        })
    }

    /// The safetensors dtype for writing.
    pub fn to_safetensors(self) -> StDtype {
        match self {
            Dtype::Bool => StDtype::BOOL,
            Dtype::U8 => StDtype::U8,
            Dtype::I8 => StDtype::I8,
            Dtype::I16 => StDtype::I16,
            Dtype::I32 => StDtype::I32,
            Dtype::I64 => StDtype::I64,
            Dtype::F16 => StDtype::F16,
            Dtype::BF16 => StDtype::BF16,
            Dtype::F32 => StDtype::F32,
            Dtype::F64 => StDtype::F64,
            Dtype::F8E4M3 => StDtype::F8_E4M3,
        }
    }

    /// A function writing an f32 as one little-endian element of this dtype, rounding to nearest even as torch's
    /// casts do: for bf16, f16 and f32 (`None` for the others).
    pub fn float_writer(self) -> Option<fn(f32, &mut [u8])> {
        match self {
            Dtype::BF16 => Some(|value, out| out.copy_from_slice(&half::bf16::from_f32(value).to_le_bytes())),
            Dtype::F16 => Some(|value, out| out.copy_from_slice(&half::f16::from_f32(value).to_le_bytes())),
            Dtype::F32 => Some(|value, out| out.copy_from_slice(&value.to_le_bytes())),
            _ => None,
        }
    }

    /// Parses a safetensors dtype name.
    pub fn from_name(name: &str) -> Option<Dtype> {
        [
            Dtype::Bool,
            Dtype::U8,
            Dtype::I8,
            Dtype::I16,
            Dtype::I32,
            Dtype::I64,
            Dtype::F16,
            Dtype::BF16,
            Dtype::F32,
            Dtype::F64,
            Dtype::F8E4M3,
        ]
        .into_iter()
        .find(|d| d.name() == name)
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_safetensors() {
        for name in Dtype::SUPPORTED.split(", ") {
            let dtype = Dtype::from_name(name).unwrap();
            assert_eq!(dtype.name(), name);
            assert_eq!(Dtype::from_safetensors(dtype.to_safetensors()), Some(dtype));
            assert_eq!(dtype.size() * 8, dtype.to_safetensors().bitsize());
        }
        assert_eq!(Dtype::from_safetensors(StDtype::U16), None);
        assert_eq!(Dtype::from_safetensors(StDtype::F8_E5M2), None);
    }
}
