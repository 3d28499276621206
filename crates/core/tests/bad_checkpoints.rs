//! Checkpoint reading on malformed input: every case must fail with its stable code and a message naming the
//! file (and the tensor where there is one), never panic and never allocate what a header merely claims.

// clippy.toml's allow-*-in-tests covers `#[test]` functions only; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use common::{assert_error, expect_err, raw_safetensors, temp_dir, write_index, write_raw, write_valid, Tensor};
use moe_quant_core::checkpoint::SINGLE_FILE;
use moe_quant_core::{inspect_headers, Checkpoint, Dtype};

/// Records the largest allocation each thread makes, so a test can show a header's claims were not allocated.
struct TrackingAllocator;

thread_local! {
    static LARGEST_ALLOCATION: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation(size: usize) {
    // `try_with` because the thread-local may already be gone while a thread shuts down.
    let _ = LARGEST_ALLOCATION.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for TrackingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: TrackingAllocator = TrackingAllocator;

const F32_4: &str = r#"{"dtype":"F32","shape":[4],"data_offsets":[0,16]}"#;

/// Opens `dir` expecting an error.
fn open_err(dir: &Path) -> moe_quant_core::Error {
    expect_err(Checkpoint::open(dir))
}

/// A single-file checkpoint whose `model.safetensors` is hand-assembled from `header` and `data`.
fn single_raw(header: &str, data: &[u8]) -> tempfile::TempDir {
    let tmp = temp_dir();
    write_raw(&tmp.path().join(SINGLE_FILE), header, data);
    tmp
}

/// A valid two-shard checkpoint: `a` in shard 1, `b` in shard 2.
fn two_shards(dir: &Path) {
    write_valid(&dir.join("model-00001-of-00002.safetensors"), &[Tensor::patterned("a", Dtype::F32, &[4], 1)]);
    write_valid(&dir.join("model-00002-of-00002.safetensors"), &[Tensor::patterned("b", Dtype::BF16, &[2, 3], 2)]);
    write_index(dir, &[("a", "model-00001-of-00002.safetensors"), ("b", "model-00002-of-00002.safetensors")]);
}

// ---- directory and index ------------------------------------------------------------------------------

#[test]
fn missing_config_is_reported_by_inspect() {
    let tmp = temp_dir();
    two_shards(tmp.path());
    let error = expect_err(inspect_headers(tmp.path()));
    assert_error(&error, "E_CONFIG_MISSING", &[tmp.path().to_str().unwrap(), "config.json"]);
}

#[test]
fn directory_without_weights() {
    let tmp = temp_dir();
    std::fs::write(tmp.path().join("config.json"), "{}").unwrap();
    std::fs::write(tmp.path().join("pytorch_model.bin"), "pickle").unwrap();
    let dir = tmp.path().to_str().unwrap();
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_NO_WEIGHTS", &[dir]);
    assert_error(&expect_err(inspect_headers(tmp.path())), "E_CHECKPOINT_NO_WEIGHTS", &[dir]);
}

#[test]
fn index_with_an_empty_weight_map_has_no_weights() {
    let tmp = temp_dir();
    write_index(tmp.path(), &[]);
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_NO_WEIGHTS", &[tmp.path().to_str().unwrap()]);
}

#[test]
fn index_that_is_not_json() {
    let tmp = temp_dir();
    std::fs::write(tmp.path().join("model.safetensors.index.json"), "{\"weight_map\": ").unwrap();
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_INDEX_INVALID", &["model.safetensors.index.json"]);
    std::fs::write(tmp.path().join("model.safetensors.index.json"), r#"{"metadata":{}}"#).unwrap();
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_INDEX_INVALID", &["model.safetensors.index.json", "weight_map"]);
    std::fs::write(tmp.path().join("model.safetensors.index.json"), r#"{"weight_map":{"a":3}}"#).unwrap();
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_INDEX_INVALID", &["model.safetensors.index.json", "\"a\""]);
}

#[test]
fn shard_named_in_the_index_is_missing() {
    let tmp = temp_dir();
    two_shards(tmp.path());
    std::fs::remove_file(tmp.path().join("model-00002-of-00002.safetensors")).unwrap();
    let error = open_err(tmp.path());
    assert_error(
        &error,
        "E_CHECKPOINT_SHARD_MISSING",
        &["model.safetensors.index.json", "model-00002-of-00002.safetensors", "b"],
    );
    std::fs::write(tmp.path().join("config.json"), "{}").unwrap();
    assert_error(
        &expect_err(inspect_headers(tmp.path())),
        "E_CHECKPOINT_SHARD_MISSING",
        &["model-00002-of-00002.safetensors"],
    );
}

#[test]
fn index_naming_a_file_outside_the_directory() {
    let tmp = temp_dir();
    let dir = tmp.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    // The escaping file exists, so only the name check can stop it.
    write_valid(&tmp.path().join("x.safetensors"), &[Tensor::patterned("a", Dtype::F32, &[4], 1)]);
    for name in ["../x.safetensors", "sub/../../x.safetensors", tmp.path().join("x.safetensors").to_str().unwrap(), ""]
    {
        write_index(&dir, &[("a", name)]);
        let error = open_err(&dir);
        assert_error(&error, "E_CHECKPOINT_INDEX_INVALID", &["model.safetensors.index.json", "\"a\""]);
    }
}

#[test]
fn index_lists_a_tensor_its_shard_does_not_hold() {
    let tmp = temp_dir();
    two_shards(tmp.path());
    write_index(
        tmp.path(),
        &[
            ("a", "model-00001-of-00002.safetensors"),
            ("b", "model-00002-of-00002.safetensors"),
            ("lm_head.weight", "model-00001-of-00002.safetensors"),
        ],
    );
    let error = open_err(tmp.path());
    assert_error(
        &error,
        "E_CHECKPOINT_INDEX_INVALID",
        &["model.safetensors.index.json", "lm_head.weight", "model-00001-of-00002.safetensors"],
    );
}

#[test]
fn same_tensor_in_two_shards() {
    let tmp = temp_dir();
    let dir = tmp.path();
    write_valid(&dir.join("model-00001-of-00002.safetensors"), &[Tensor::patterned("a", Dtype::F32, &[4], 1)]);
    write_valid(
        &dir.join("model-00002-of-00002.safetensors"),
        &[Tensor::patterned("a", Dtype::F32, &[4], 3), Tensor::patterned("b", Dtype::BF16, &[2, 3], 2)],
    );
    write_index(dir, &[("a", "model-00001-of-00002.safetensors"), ("b", "model-00002-of-00002.safetensors")]);
    let error = open_err(dir);
    assert_error(
        &error,
        "E_TENSOR_DUPLICATE",
        &["a", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"],
    );
}

#[cfg(unix)]
#[test]
fn symlinked_shard_pointing_outside_the_directory() {
    let tmp = temp_dir();
    let dir = tmp.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    let outside = tmp.path().join("elsewhere.safetensors");
    write_valid(&outside, &[Tensor::patterned("a", Dtype::F32, &[4], 1)]);

    std::os::unix::fs::symlink(&outside, dir.join(SINGLE_FILE)).unwrap();
    assert_error(&open_err(&dir), "E_CHECKPOINT_INDEX_INVALID", &[SINGLE_FILE, "elsewhere.safetensors"]);

    std::fs::remove_file(dir.join(SINGLE_FILE)).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("model-00001-of-00001.safetensors")).unwrap();
    write_index(&dir, &[("a", "model-00001-of-00001.safetensors")]);
    assert_error(&open_err(&dir), "E_CHECKPOINT_INDEX_INVALID", &["model-00001-of-00001.safetensors", "outside"]);
}

#[cfg(unix)]
#[test]
fn symlinked_shard_inside_the_directory_is_accepted() {
    let tmp = temp_dir();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("blobs")).unwrap();
    write_valid(&dir.join("blobs/abc"), &[Tensor::patterned("a", Dtype::F32, &[4], 1)]);
    std::os::unix::fs::symlink("blobs/abc", dir.join(SINGLE_FILE)).unwrap();
    assert_eq!(Checkpoint::open(dir).unwrap().read("a").unwrap().data.len(), 16);
}

// ---- truncated files ----------------------------------------------------------------------------------

/// A valid single-file checkpoint; returns its bytes and the header length.
fn valid_single(dir: &Path) -> (Vec<u8>, usize) {
    write_valid(
        &dir.join(SINGLE_FILE),
        &[
            Tensor::patterned("model.embed_tokens.weight", Dtype::BF16, &[16, 8], 1),
            Tensor::patterned("scale", Dtype::F32, &[], 2),
        ],
    );
    let bytes = std::fs::read(dir.join(SINGLE_FILE)).unwrap();
    let header_len = usize::try_from(u64::from_le_bytes(bytes[..8].try_into().unwrap())).unwrap();
    (bytes, header_len)
}

#[test]
fn file_cut_in_the_middle_of_its_data() {
    let tmp = temp_dir();
    let (bytes, header_len) = valid_single(tmp.path());
    let data_len = bytes.len() - 8 - header_len;
    std::fs::write(tmp.path().join(SINGLE_FILE), &bytes[..8 + header_len + data_len / 2]).unwrap();
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_TRUNCATED", &[SINGLE_FILE]);
    // Only the last byte missing.
    std::fs::write(tmp.path().join(SINGLE_FILE), &bytes[..bytes.len() - 1]).unwrap();
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_TRUNCATED", &[SINGLE_FILE]);
    // No data at all.
    std::fs::write(tmp.path().join(SINGLE_FILE), &bytes[..8 + header_len]).unwrap();
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_TRUNCATED", &[SINGLE_FILE]);
}

#[test]
fn file_cut_inside_its_header() {
    let tmp = temp_dir();
    let (bytes, header_len) = valid_single(tmp.path());
    std::fs::write(tmp.path().join(SINGLE_FILE), &bytes[..8 + header_len / 2]).unwrap();
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_TRUNCATED", &[SINGLE_FILE]);
    // Just the length.
    std::fs::write(tmp.path().join(SINGLE_FILE), &bytes[..8]).unwrap();
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_TRUNCATED", &[SINGLE_FILE]);
}

#[test]
fn files_too_short_for_the_header_length() {
    for len in [0, 3, 7] {
        let tmp = temp_dir();
        std::fs::write(tmp.path().join(SINGLE_FILE), &b"\x10\x00\x00\x00\x00\x00\x00"[..len]).unwrap();
        assert_error(&open_err(tmp.path()), "E_CHECKPOINT_TRUNCATED", &[SINGLE_FILE]);
    }
}

#[test]
fn truncated_shard_of_a_sharded_checkpoint() {
    let tmp = temp_dir();
    two_shards(tmp.path());
    let shard = tmp.path().join("model-00002-of-00002.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 4]).unwrap();
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_TRUNCATED", &["model-00002-of-00002.safetensors"]);
}

#[test]
fn data_offsets_past_the_end_of_the_file() {
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#;
    let tmp = single_raw(header, &[0; 12]);
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_TRUNCATED", &[SINGLE_FILE]);
}

// ---- invalid headers ----------------------------------------------------------------------------------

#[test]
fn overlapping_offsets() {
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let tmp = single_raw(header, &[0; 12]);
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_HEADER_INVALID", &[SINGLE_FILE, "b"]);
}

#[test]
fn gap_between_tensors() {
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"gap":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}"#;
    let tmp = single_raw(header, &[0; 16]);
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_HEADER_INVALID", &[SINGLE_FILE, "gap"]);
}

#[test]
fn offsets_that_disagree_with_dtype_and_shape() {
    let header = r#"{"ok":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[3],"data_offsets":[4,12]}}"#;
    let tmp = single_raw(header, &[0; 12]);
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_HEADER_INVALID", &[SINGLE_FILE, "tensor w"]);
}

#[test]
fn bytes_past_the_last_tensor() {
    let tmp = single_raw(&format!("{{\"a\":{F32_4}}}"), &[0; 20]);
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_HEADER_INVALID", &[SINGLE_FILE]);
}

#[test]
fn header_that_is_not_json() {
    for header in ["this is not json", "{\"a\": ", "[1, 2, 3]", r#"{"a":{"dtype":"F32","shape":[4]}}"#] {
        let tmp = single_raw(header, &[0; 16]);
        assert_error(&open_err(tmp.path()), "E_CHECKPOINT_HEADER_INVALID", &[SINGLE_FILE]);
    }
}

#[test]
fn header_that_is_not_utf8() {
    let tmp = temp_dir();
    let mut bytes = 4u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0xFF, 0xFE, b'{', b'}']);
    std::fs::write(tmp.path().join(SINGLE_FILE), bytes).unwrap();
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_HEADER_INVALID", &[SINGLE_FILE]);
}

#[test]
fn metadata_with_a_dtype_key_is_not_mistaken_for_a_tensor() {
    // The header is invalid (no data_offsets); `__metadata__` must not be reported as a tensor of dtype "bf16".
    let header = r#"{"__metadata__":{"dtype":"bf16"},"a":{"dtype":"F32","shape":[4]}}"#;
    let tmp = single_raw(header, &[0; 16]);
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_HEADER_INVALID", &[SINGLE_FILE]);
}

#[test]
fn header_length_over_the_limit() {
    let tmp = temp_dir();
    let mut bytes = (1u64 << 40).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(tmp.path().join(SINGLE_FILE), bytes).unwrap();
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_HEADER_INVALID", &[SINGLE_FILE, "100 MB"]);
}

#[test]
fn enormous_shape_errors_without_allocating() {
    const LIMIT: usize = 64 << 20;
    // The tracker itself works: a real allocation of the limit is seen.
    LARGEST_ALLOCATION.with(|largest| largest.set(0));
    drop(std::hint::black_box(vec![0u8; LIMIT]));
    assert!(LARGEST_ALLOCATION.with(Cell::get) >= LIMIT);
    let cases = [
        // Element count overflows usize.
        (
            r#"{"a":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,16]}}"#,
            "E_CHECKPOINT_HEADER_INVALID",
        ),
        // Fits usize but claims 2^60 bytes of data.
        (
            r#"{"a":{"dtype":"U8","shape":[1099511627776,1048576],"data_offsets":[0,1152921504606846976]}}"#,
            "E_CHECKPOINT_TRUNCATED",
        ),
    ];
    for (header, code) in cases {
        let tmp = single_raw(header, &[0; 16]);
        LARGEST_ALLOCATION.with(|largest| largest.set(0));
        let error = open_err(tmp.path());
        let largest = LARGEST_ALLOCATION.with(Cell::get);
        assert_error(&error, code, &[SINGLE_FILE]);
        assert!(largest < LIMIT, "opening allocated {largest} bytes at once");
    }
    let tmp = single_raw(cases[0].0, &[0; 16]);
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_HEADER_INVALID", &["tensor a"]);
}

#[test]
fn raw_helper_builds_files_the_reader_accepts() {
    // Guards the hand-assembled cases above: the same assembly with a consistent header opens.
    let header = format!("{{\"a\":{F32_4},\"__metadata__\":{{\"format\":\"pt\"}}}}");
    let tmp = single_raw(&header, &f32::to_le_bytes(1.5).repeat(4));
    let checkpoint = Checkpoint::open(tmp.path()).unwrap();
    assert_eq!(checkpoint.read("a").unwrap().to_f32(), vec![1.5; 4]);
    assert_eq!(raw_safetensors("{}", &[]).len(), 10);
}

// ---- dtypes -------------------------------------------------------------------------------------------

#[test]
fn known_but_unsupported_dtypes_are_named() {
    for (dtype, size) in [("U16", 2), ("F8_E5M2", 1), ("U32", 4), ("U64", 8), ("C64", 8), ("F8_E8M0", 1)] {
        let header = format!(
            r#"{{"ok":{{"dtype":"U8","shape":[2],"data_offsets":[0,2]}},"model.layers.3.w":{{"dtype":"{dtype}","shape":[2],"data_offsets":[2,{}]}}}}"#,
            2 + 2 * size
        );
        let tmp = single_raw(&header, &vec![0; 2 + 2 * size]);
        let error = open_err(tmp.path());
        assert_error(&error, "E_CHECKPOINT_DTYPE_UNSUPPORTED", &[SINGLE_FILE, "model.layers.3.w", dtype]);
    }
}

#[test]
fn unknown_dtype_string_is_named() {
    let header = r#"{"ok":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"model.layers.3.q":{"dtype":"Q4","shape":[2],"data_offsets":[2,3]}}"#;
    let tmp = single_raw(header, &[0; 3]);
    let error = open_err(tmp.path());
    assert_error(&error, "E_CHECKPOINT_DTYPE_UNSUPPORTED", &[SINGLE_FILE, "model.layers.3.q", "Q4"]);
}

#[test]
fn unsupported_dtype_in_a_shard_names_the_shard() {
    let tmp = temp_dir();
    two_shards(tmp.path());
    write_raw(
        &tmp.path().join("model-00002-of-00002.safetensors"),
        r#"{"b":{"dtype":"U16","shape":[2,3],"data_offsets":[0,12]}}"#,
        &[0; 12],
    );
    let error = open_err(tmp.path());
    assert_error(&error, "E_CHECKPOINT_DTYPE_UNSUPPORTED", &["model-00002-of-00002.safetensors", "tensor b"]);
}

#[cfg(unix)]
#[test]
fn hub_cache_snapshot_links_into_blobs_are_accepted_but_nothing_else_outside() {
    // The Hugging Face download cache: <repo>/snapshots/<rev>/model.safetensors -> ../../blobs/<hash>.
    let tmp = temp_dir();
    let repo = tmp.path().join("models--org--name");
    let snapshot = repo.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    write_valid(&repo.join("blobs/f00d"), &[Tensor::patterned("a", Dtype::F32, &[4], 1)]);
    std::os::unix::fs::symlink("../../blobs/f00d", snapshot.join(SINGLE_FILE)).unwrap();
    assert_eq!(Checkpoint::open(&snapshot).unwrap().read("a").unwrap().data.len(), 16);

    // A link to the repo folder itself (not its blobs/) is still outside.
    std::fs::remove_file(snapshot.join(SINGLE_FILE)).unwrap();
    write_valid(&repo.join("other.safetensors"), &[Tensor::patterned("a", Dtype::F32, &[4], 1)]);
    std::os::unix::fs::symlink("../../other.safetensors", snapshot.join(SINGLE_FILE)).unwrap();
    assert_error(&open_err(&snapshot), "E_CHECKPOINT_INDEX_INVALID", &["outside"]);
}
