//! Bytes straight into `parse_safetensors`, the one function that validates untrusted safetensors files.
//! Beyond "no panic, no huge allocation, no hang", it checks that an accepted file really is consistent and
//! that a rejected one gets a known code and a message naming the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use moe_quant_core::checkpoint::{parse_safetensors, TensorView};
use moe_quant_core::Error;

const NAME: &str = "fuzz.safetensors";

fuzz_target!(|data: &[u8]| {
    match parse_safetensors(Path::new(NAME), data) {
        Ok(parsed) => {
            let mut end = 8 + parsed.header_len;
            for tensor in &parsed.tensors {
                assert_eq!(tensor.start, end, "tensors must tile the data region");
                let numel: usize = tensor.shape.iter().product();
                assert_eq!(tensor.end - tensor.start, numel * tensor.dtype.size());
                end = tensor.end;
                let view = TensorView {
                    name: &tensor.name,
                    dtype: tensor.dtype,
                    shape: &tensor.shape,
                    data: &data[tensor.start..tensor.end],
                };
                assert_eq!(view.to_f32().len(), numel);
                if let Some(&first) = tensor.shape.first() {
                    if first > 0 {
                        assert_eq!(view.slice_first(first - 1).map(|s| s.to_f32().len()).ok(), Some(numel / first));
                    }
                }
            }
            assert_eq!(end, data.len(), "the data must end where the file does");
        }
        Err(error) => {
            assert!(Error::CODES.contains(&error.code()));
            assert!(error.to_string().contains(NAME), "{error}");
        }
    }
});
