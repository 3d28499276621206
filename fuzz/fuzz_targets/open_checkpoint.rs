//! The fuzzer's bytes become a model directory, opened with `Checkpoint::open` and `inspect_headers`; every
//! tensor of an accepted checkpoint is read and converted.
//!
//! Input layout (simple, so that mutations keep it meaningful):
//! - the first byte picks the layout: even = single file, odd = sharded;
//! - single file: the rest of the input is `model.safetensors`;
//! - sharded: the rest is split on the separator `SEP` (`\n--8<--\n`): the first part is
//!   `model.safetensors.index.json`, the following ones (at most 8) are shards named `1.safetensors`,
//!   `2.safetensors`, … (the index's weight_map refers to them by those names).
//!
//! `config.json` is always `{}`: the Rust side only passes it through.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use moe_quant_core::checkpoint::{INDEX_FILE, SINGLE_FILE};
use moe_quant_core::{inspect_headers, Checkpoint, Error};

const SEP: &[u8] = b"\n--8<--\n";
const MAX_SHARDS: usize = 8;

fn split<'a>(mut rest: &'a [u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    while let Some(at) = rest.windows(SEP.len()).position(|w| w == SEP) {
        parts.push(&rest[..at]);
        rest = &rest[at + SEP.len()..];
    }
    parts.push(rest);
    parts
}

fn write_model(dir: &Path, data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    if mode % 2 == 0 {
        std::fs::write(dir.join(SINGLE_FILE), rest).unwrap();
        return;
    }
    let parts = split(rest);
    std::fs::write(dir.join(INDEX_FILE), parts[0]).unwrap();
    for (i, shard) in parts[1..].iter().take(MAX_SHARDS).enumerate() {
        std::fs::write(dir.join(format!("{}.safetensors", i + 1)), shard).unwrap();
    }
}

/// Every error must carry a known code and name the directory or a file inside it.
fn check_error(error: &Error, dir: &Path) {
    assert!(Error::CODES.contains(&error.code()), "{error}");
    let message = error.to_string();
    assert!(message.contains(dir.to_str().unwrap()), "{message}");
}

fuzz_target!(|data: &[u8]| {
    // RAM-backed when available: the target writes a directory per input.
    let shm = Path::new("/dev/shm");
    let tmp = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    let dir = tmp.path();
    write_model(dir, data);

    let opened = Checkpoint::open(dir);
    match &opened {
        Ok(checkpoint) => {
            for info in checkpoint.tensors() {
                let tensor = checkpoint.read(&info.name).unwrap();
                let view = tensor.view();
                let values = view.to_f32();
                assert_eq!(values.len(), view.numel());
                if let Some(&first) = info.shape.first() {
                    for index in [0, first.saturating_sub(1)] {
                        if index < first {
                            let slice = view.slice_first(index).unwrap();
                            assert_eq!(slice.to_f32().len() * first, values.len());
                            let read = checkpoint.read_slice_first(&info.name, index).unwrap();
                            assert_eq!(&*read.data, slice.data);
                        }
                    }
                }
            }
        }
        Err(error) => check_error(error, dir),
    }
    match inspect_headers(dir) {
        Ok(listing) => {
            let checkpoint = opened.as_ref().expect("inspect accepted what Checkpoint::open refused");
            assert_eq!(listing.tensors.len(), checkpoint.tensors().len());
        }
        Err(error) => {
            check_error(&error, dir);
            assert!(opened.is_err() || error.code() == "E_IO", "inspect refused what open accepted: {error}");
        }
    }
});
