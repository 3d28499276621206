//! A borrowed view of one tensor's bytes (whole, or one expert's slice of a fused 3-D tensor) and its
//! conversion to f32.

use super::Dtype;
use crate::error::{Error, Result};
use crate::numerics::e4m3::e4m3_to_f32;

/// Bytes of one tensor as stored (little endian, row major), borrowed.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub data: &'a [u8],
}

/// An owned shape for views that slice a leading dimension away.
#[derive(Debug, Clone)]
pub struct SlicedView<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The `index`-th slice along the first dimension (one expert of a fused `[E, …]` tensor), without
    /// copying: the bytes are contiguous in row-major order.
    pub fn slice_first(&self, index: usize) -> Result<SlicedView<'a>> {
        let Some((&count, rest)) = self.shape.split_first() else {
            return Err(Error::ShapeInvalid {
                tensor: self.name.to_string(),
                shape: self.shape.to_vec(),
                message: "a 0-d tensor has no slices".into(),
            });
        };
        if index >= count {
            return Err(Error::ShapeInvalid {
                tensor: self.name.to_string(),
                shape: self.shape.to_vec(),
                message: format!("slice {index} is out of range (first dimension is {count})"),
            });
        }
        let stride = rest.iter().product::<usize>() * self.dtype.size();
        Ok(SlicedView {
            name: self.name,
            dtype: self.dtype,
            shape: rest.to_vec(),
            data: &self.data[index * stride..(index + 1) * stride],
        })
    }

    /// The values converted to f32 (exactly for every float type; integers as their value).
    pub fn to_f32(&self) -> Vec<f32> {
        bytes_to_f32(self.dtype, self.data)
    }
}

impl SlicedView<'_> {
    /// The values converted to f32.
    pub fn to_f32(&self) -> Vec<f32> {
        bytes_to_f32(self.dtype, self.data)
    }
}

/// Converts little-endian elements of `dtype` to f32.
pub fn bytes_to_f32(dtype: Dtype, data: &[u8]) -> Vec<f32> {
    fn each<const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        data.chunks_exact(N)
            .map(|c| {
                let mut b = [0u8; N];
                b.copy_from_slice(c);
                f(b)
            })
            .collect()
    }
    match dtype {
        Dtype::Bool | Dtype::U8 => data.iter().map(|&b| f32::from(b)).collect(),
        Dtype::I8 => data.iter().map(|&b| f32::from(b as i8)).collect(),
        Dtype::I16 => each(data, |b| f32::from(i16::from_le_bytes(b))),
        Dtype::I32 => each(data, |b| i32::from_le_bytes(b) as f32),
        Dtype::I64 => each(data, |b| i64::from_le_bytes(b) as f32),
        Dtype::F16 => each(data, |b| half::f16::from_le_bytes(b).to_f32()),
        Dtype::BF16 => each(data, |b| half::bf16::from_le_bytes(b).to_f32()),
        Dtype::F32 => each(data, f32::from_le_bytes),
        Dtype::F64 => each(data, |b| f64::from_le_bytes(b) as f32),
        Dtype::F8E4M3 => data.iter().map(|&b| e4m3_to_f32(b)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_decodes_the_edges() {
        assert_eq!(e4m3_to_f32(0x00), 0.0);
        assert_eq!(e4m3_to_f32(0x7E), 448.0);
        assert_eq!(e4m3_to_f32(0xFE), -448.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert!(e4m3_to_f32(0x7F).is_nan());
    }

    #[test]
    fn floats_convert_exactly() {
        let bf = half::bf16::from_f32(-1.5).to_le_bytes();
        assert_eq!(bytes_to_f32(Dtype::BF16, &bf), vec![-1.5]);
        let h = half::f16::from_f32(0.25).to_le_bytes();
        assert_eq!(bytes_to_f32(Dtype::F16, &h), vec![0.25]);
        assert_eq!(bytes_to_f32(Dtype::I8, &[0xFF]), vec![-1.0]);
        assert_eq!(bytes_to_f32(Dtype::I64, &(-7i64).to_le_bytes()), vec![-7.0]);
    }

    #[test]
    fn slices_one_expert_without_copying() {
        let values: Vec<u8> = (0u8..24).collect();
        let shape = [3usize, 2, 4];
        let view = TensorView { name: "x", dtype: Dtype::U8, shape: &shape, data: &values };
        let e1 = view.slice_first(1).unwrap();
        assert_eq!(e1.shape, vec![2, 4]);
        assert_eq!(e1.data, &values[8..16]);
        assert_eq!(e1.data.as_ptr(), values[8..].as_ptr());
        assert!(view.slice_first(3).is_err());
    }
}
