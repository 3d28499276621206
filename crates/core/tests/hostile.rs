//! Hostile input: files crafted to make a reader allocate what they claim, loop over what they declare, leave
//! the model directory, block, or crash. Every case must fail fast with its stable code and a message naming
//! the file (and the tensor where there is one), while the largest single allocation stays small — measured
//! by a counting global allocator, per thread.

// clippy.toml's allow-*-in-tests covers `#[test]` functions only; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::{assert_error, expect_err, raw_safetensors, temp_dir, write_index, write_raw, write_valid, Tensor};
use moe_quant_core::calib::data::{load_calibration, CalibrationOptions, CalibrationSource};
use moe_quant_core::checkpoint::{parse_safetensors, INDEX_FILE, SINGLE_FILE};
use moe_quant_core::{inspect_headers, Checkpoint, Dtype, Error};

// ---- allocation accounting ----------------------------------------------------------------------------

/// Forwards to the system allocator, remembering the largest single request of each thread.
struct PeakAllocator;

thread_local! {
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    // `try_with`: the thread-local may already be destroyed while a thread exits.
    let _ = PEAK.try_with(|peak| peak.set(peak.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to `System`.
unsafe impl GlobalAlloc for PeakAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: PeakAllocator = PeakAllocator;

const MIB: usize = 1 << 20;

/// Runs `work`, asserting that no single allocation it made on this thread reached `limit` bytes and that it
/// finished within `deadline` (generous: it only catches loops over what a file declares).
fn bounded<T>(limit: usize, deadline: Duration, work: impl FnOnce() -> T) -> T {
    PEAK.with(|peak| peak.set(0));
    let started = Instant::now();
    let result = work();
    let elapsed = started.elapsed();
    let peak = PEAK.with(Cell::get);
    assert!(peak < limit, "largest allocation was {peak} bytes (limit {limit})");
    assert!(elapsed < deadline, "took {elapsed:?}");
    result
}

/// Opens `dir` expecting an error, with at most 1 MiB allocated at once.
fn open_err(dir: &Path) -> Error {
    bounded(MIB, Duration::from_secs(20), || expect_err(Checkpoint::open(dir)))
}

/// Opens `dir` expecting an error, allocating at most the `header` bytes the file really holds (which are
/// read to be parsed) plus 1 MiB at once.
fn open_err_reading(dir: &Path, header: usize) -> Error {
    bounded(8 + header + MIB, Duration::from_secs(20), || expect_err(Checkpoint::open(dir)))
}

fn single_raw(header: &str, data: &[u8]) -> tempfile::TempDir {
    let tmp = temp_dir();
    write_raw(&tmp.path().join(SINGLE_FILE), header, data);
    tmp
}

#[test]
fn the_allocation_counter_sees_a_large_allocation() {
    PEAK.with(|peak| peak.set(0));
    drop(std::hint::black_box(vec![1u8; 8 * MIB]));
    assert!(PEAK.with(Cell::get) >= 8 * MIB);
}

// ---- shapes and offsets -------------------------------------------------------------------------------

#[test]
fn shape_whose_element_count_overflows() {
    for header in [
        r#"{"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,16]}}"#,
        r#"{"w":{"dtype":"BF16","shape":[18446744073709551615,2],"data_offsets":[0,16]}}"#,
        // The element count fits, the byte count does not.
        r#"{"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,16]}}"#,
    ] {
        let tmp = single_raw(header, &[0; 16]);
        assert_error(&open_err(tmp.path()), "E_CHECKPOINT_HEADER_INVALID", &[SINGLE_FILE, "tensor w", "overflows"]);
    }
}

#[test]
fn shape_fitting_u64_with_small_data_offsets() {
    let tmp = single_raw(r#"{"w":{"dtype":"U8","shape":[1099511627776],"data_offsets":[0,16]}}"#, &[0; 16]);
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_HEADER_INVALID", &[SINGLE_FILE, "tensor w", "1099511627776"]);
}

#[test]
fn tensor_of_2_pow_40_elements_in_a_100_byte_file() {
    let header = r#"{"w":{"dtype":"U8","shape":[1048576,1048576],"data_offsets":[0,1099511627776]}}"#;
    let padding = 100 - 8 - header.len();
    let tmp = single_raw(header, &vec![0; padding]);
    assert_eq!(std::fs::metadata(tmp.path().join(SINGLE_FILE)).unwrap().len(), 100);
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_TRUNCATED", &[SINGLE_FILE, "1099511627776"]);
}

#[test]
fn offsets_summing_past_usize_max() {
    // Eight tensors of 2^61 - 1 bytes, each consistent, end at 2^64 - 8: adding the header length overflows
    // (safetensors 0.8's own parser panics here when overflow checks are on).
    let size = (1u64 << 61) - 1;
    let entries: Vec<_> = (0..8)
        .map(|i| {
            format!(r#""t{i}":{{"dtype":"U8","shape":[{size}],"data_offsets":[{},{}]}}"#, i * size, (i + 1) * size)
        })
        .collect();
    let tmp = single_raw(&format!("{{{}}}", entries.join(",")), &[0; 64]);
    assert_error(&open_err(tmp.path()), "E_CHECKPOINT_TRUNCATED", &[SINGLE_FILE]);
}

#[test]
fn overlapping_ranges() {
    let cases = [
        // Partial overlap.
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            12,
        ),
        // The same range twice.
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            8,
        ),
        // An empty tensor inside another.
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}"#,
            8,
        ),
    ];
    for (header, data) in cases {
        let tmp = single_raw(header, &vec![0; data]);
        assert_error(
            &open_err(tmp.path()),
            "E_CHECKPOINT_HEADER_INVALID",
            &[SINGLE_FILE, "tensor b", "tensor a", "overlap"],
        );
    }
}

#[test]
fn header_length_of_2_pow_63_and_u64_max() {
    for declared in [1u64 << 63, u64::MAX, 100_000_001] {
        let tmp = temp_dir();
        let mut bytes = declared.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        std::fs::write(tmp.path().join(SINGLE_FILE), bytes).unwrap();
        assert_error(
            &open_err(tmp.path()),
            "E_CHECKPOINT_HEADER_INVALID",
            &[SINGLE_FILE, "100 MB", &declared.to_string()],
        );
    }
}

#[test]
fn header_of_100_mb_of_spaces() {
    let tmp = temp_dir();
    let path = tmp.path().join(SINGLE_FILE);
    let length = 100_000_000usize;
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    file.write_all(&(length as u64).to_le_bytes()).unwrap();
    let spaces = vec![b' '; MIB];
    for _ in 0..length / MIB {
        file.write_all(&spaces).unwrap();
    }
    file.write_all(&spaces[..length % MIB]).unwrap();
    drop(file);
    let error = open_err_reading(tmp.path(), length);
    assert_error(&error, "E_CHECKPOINT_HEADER_INVALID", &[SINGLE_FILE, "not valid safetensors JSON"]);
}

#[test]
fn deeply_nested_json_in_the_header() {
    let depth = 1_000_000;
    let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    // As a tensor entry, in a tensor's shape, in the metadata, and as the whole header.
    let headers = [
        (format!(r#"{{"w":{deep}}}"#), "tensor w"),
        (format!(r#"{{"w":{{"dtype":"U8","shape":{deep},"data_offsets":[0,1]}}}}"#), "tensor w"),
        (format!(r#"{{"__metadata__":{deep}}}"#), "__metadata__"),
        (deep.clone(), "not valid safetensors JSON"),
        (format!(r#"{{"w":{}"#, "{\"a\":".repeat(depth)), "tensor w"),
    ];
    for (header, needle) in &headers {
        let tmp = single_raw(header, &[0]);
        // Skipping an unknown field costs serde_json one byte per nesting level (1 MiB here), no recursion.
        let error =
            bounded(8 + header.len() + 2 * MIB, Duration::from_secs(20), || expect_err(Checkpoint::open(tmp.path())));
        assert_error(&error, "E_CHECKPOINT_HEADER_INVALID", &[SINGLE_FILE, needle]);
    }
    // An unknown field is skipped without recursion, however deep: the file is valid.
    let header = format!(r#"{{"w":{{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":{deep}}}}}"#);
    let tmp = single_raw(&header, &[7]);
    let checkpoint =
        bounded(8 + header.len() + 4 * MIB, Duration::from_secs(20), || Checkpoint::open(tmp.path()).unwrap());
    assert_eq!(checkpoint.read("w").unwrap().to_f32(), vec![7.0]);
}

#[test]
fn shape_with_millions_of_dimensions() {
    let shape = vec!["1"; 5_000_000].join(",");
    let header = format!(r#"{{"w":{{"dtype":"U8","shape":[{shape}],"data_offsets":[0,1]}}}}"#);
    let tmp = single_raw(&header, &[0]);
    let error = open_err_reading(tmp.path(), header.len());
    assert_error(&error, "E_CHECKPOINT_HEADER_INVALID", &[SINGLE_FILE, "tensor w", "64 dimensions"]);
}

#[test]
fn parse_safetensors_names_the_path_it_is_given() {
    let bytes = raw_safetensors(r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,4]}}"#, &[0; 4]);
    let error = bounded(MIB, Duration::from_secs(5), || {
        parse_safetensors(Path::new("shard-7.safetensors"), &bytes).unwrap_err()
    });
    assert_error(&error, "E_CHECKPOINT_HEADER_INVALID", &["shard-7.safetensors", "tensor w", "needs 12"]);
}

// ---- the index ----------------------------------------------------------------------------------------

fn model_dir(root: &Path) -> PathBuf {
    let dir = root.join("model");
    std::fs::create_dir(&dir).unwrap();
    dir
}

#[test]
fn index_pointing_outside_the_model_directory() {
    let tmp = temp_dir();
    let dir = model_dir(tmp.path());
    // The targets exist, so only the name check can stop them.
    write_valid(&tmp.path().join("x"), &[Tensor::patterned("a", Dtype::F32, &[4], 1)]);
    std::fs::create_dir(dir.join("shard")).unwrap();
    let absolute = tmp.path().join("x");
    for name in ["../x", absolute.to_str().unwrap(), "shard/../../x", "./../x", "shard/./../../x"] {
        write_index(&dir, &[("a", name)]);
        let error = open_err(&dir);
        assert_error(&error, "E_CHECKPOINT_INDEX_INVALID", &[INDEX_FILE, "\"a\"", "inside the model directory"]);
    }
}

#[cfg(unix)]
#[test]
fn symlinks_escaping_the_model_directory() {
    use std::os::unix::fs::symlink;
    let tmp = temp_dir();
    let dir = model_dir(tmp.path());
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    write_valid(&outside.join("1.safetensors"), &[Tensor::patterned("a", Dtype::F32, &[4], 1)]);

    // A file symlink, relative and absolute.
    symlink("../outside/1.safetensors", dir.join("1.safetensors")).unwrap();
    write_index(&dir, &[("a", "1.safetensors")]);
    assert_error(&open_err(&dir), "E_CHECKPOINT_INDEX_INVALID", &["1.safetensors", "outside the model directory"]);
    std::fs::remove_file(dir.join("1.safetensors")).unwrap();
    symlink(outside.join("1.safetensors"), dir.join(SINGLE_FILE)).unwrap();
    std::fs::remove_file(dir.join(INDEX_FILE)).unwrap();
    assert_error(&open_err(&dir), "E_CHECKPOINT_INDEX_INVALID", &[SINGLE_FILE, "outside the model directory"]);
    std::fs::remove_file(dir.join(SINGLE_FILE)).unwrap();

    // A directory symlink: the name `sub/1.safetensors` is clean, the directory it goes through is not.
    symlink("../outside", dir.join("sub")).unwrap();
    write_index(&dir, &[("a", "sub/1.safetensors")]);
    assert_error(&open_err(&dir), "E_CHECKPOINT_INDEX_INVALID", &["sub/1.safetensors", "outside the model directory"]);

    // Links to devices are outside too.
    symlink("/dev/zero", dir.join("zero.safetensors")).unwrap();
    write_index(&dir, &[("a", "zero.safetensors")]);
    assert_error(&open_err(&dir), "E_CHECKPOINT_INDEX_INVALID", &["zero.safetensors", "/dev/zero"]);

    // A symlink loop is an I/O error naming the link.
    symlink("loop.safetensors", dir.join("loop.safetensors")).unwrap();
    write_index(&dir, &[("a", "loop.safetensors")]);
    assert_error(&open_err(&dir), "E_IO", &["loop.safetensors"]);
}

#[cfg(unix)]
#[test]
fn shard_that_is_a_fifo_or_a_directory_does_not_block() {
    let tmp = temp_dir();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("folder.safetensors")).unwrap();
    write_index(dir, &[("a", "folder.safetensors")]);
    assert_error(&open_err(dir), "E_IO", &["folder.safetensors", "not a regular file"]);

    let fifo = dir.join("pipe.safetensors");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    write_index(dir, &[("a", "pipe.safetensors")]);
    // Opening a FIFO for reading would block until a writer comes: the check must come first.
    assert_error(&open_err(dir), "E_IO", &["pipe.safetensors", "not a regular file"]);

    // config.json as a FIFO: inspect must not block on it either.
    std::fs::remove_file(dir.join(INDEX_FILE)).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(dir.join("config.json")).status().unwrap().success());
    write_valid(&dir.join(SINGLE_FILE), &[Tensor::patterned("a", Dtype::F32, &[4], 1)]);
    let error = bounded(MIB, Duration::from_secs(20), || expect_err(inspect_headers(dir)));
    assert_error(&error, "E_IO", &["config.json", "a FIFO (named pipe)", "not a regular file"]);
}

#[cfg(unix)]
#[test]
fn an_index_or_weights_file_that_is_a_device_or_fifo_is_named_as_such_not_missing() {
    use std::os::unix::fs::symlink;
    let tmp = temp_dir();
    let dir = tmp.path();
    // No weights file at all: "no weights found". An index that is a link to /dev/zero is not "no weights".
    symlink("/dev/zero", dir.join(INDEX_FILE)).unwrap();
    let error = bounded(MIB, Duration::from_secs(20), || open_err(dir));
    assert_error(&error, "E_IO", &[INDEX_FILE, "a device (a link to /dev/zero)", "not a regular file"]);
    std::fs::remove_file(dir.join(INDEX_FILE)).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(dir.join(SINGLE_FILE)).status().unwrap().success());
    let error = bounded(MIB, Duration::from_secs(20), || open_err(dir));
    assert_error(&error, "E_IO", &[SINGLE_FILE, "a FIFO (named pipe)"]);
}

#[test]
fn index_with_a_million_entries_naming_one_small_shard() {
    let tmp = temp_dir();
    let dir = tmp.path();
    write_valid(&dir.join("1.safetensors"), &[Tensor::patterned("t0", Dtype::F32, &[4], 1)]);
    let mut index = String::from(r#"{"weight_map":{"#);
    for i in 0..1_000_000 {
        index.push_str(&format!(r#""t{i}":"1.safetensors","#));
    }
    index.pop();
    index.push_str("}}");
    std::fs::write(dir.join(INDEX_FILE), index).unwrap();
    // The index itself is ~24 MB and is held once; nothing is allocated per declared tensor beyond its name.
    let error = bounded(64 * MIB, Duration::from_secs(60), || expect_err(Checkpoint::open(dir)));
    assert_error(&error, "E_CHECKPOINT_INDEX_INVALID", &[INDEX_FILE, "1.safetensors", "does not hold it"]);
}

#[test]
fn index_listing_every_tensor_of_a_large_shard_is_checked_in_linear_time() {
    // 100 000 tensors in one shard, all listed: a scan per listed name would take 10^10 comparisons.
    let tmp = temp_dir();
    let dir = tmp.path();
    let count = 100_000;
    let entries: Vec<String> =
        (0..count).map(|i| format!(r#""t{i}":{{"dtype":"U8","shape":[1],"data_offsets":[{i},{}]}}"#, i + 1)).collect();
    write_raw(&dir.join("1.safetensors"), &format!("{{{}}}", entries.join(",")), &vec![0; count]);
    let names: Vec<String> = (0..count).map(|i| format!("t{i}")).collect();
    let map: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1.safetensors")).collect();
    write_index(dir, &map);
    let started = Instant::now();
    let checkpoint = Checkpoint::open(dir).unwrap();
    assert_eq!(checkpoint.tensors().len(), count);
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
}

#[test]
fn deeply_nested_json_in_the_index() {
    let tmp = temp_dir();
    let dir = tmp.path();
    let depth = 100_000;
    for index in [
        format!(r#"{{"weight_map":{{"a":{}{}}}}}"#, "[".repeat(depth), "]".repeat(depth)),
        format!(r#"{{"metadata":{}"#, "{\"x\":".repeat(depth)),
        "[".repeat(depth),
    ] {
        std::fs::write(dir.join(INDEX_FILE), index).unwrap();
        let error = bounded(4 * MIB, Duration::from_secs(20), || expect_err(Checkpoint::open(dir)));
        assert_error(&error, "E_CHECKPOINT_INDEX_INVALID", &[INDEX_FILE, "not valid JSON"]);
    }
}

#[test]
fn index_larger_than_the_limit_is_refused_before_reading() {
    let tmp = temp_dir();
    let path = tmp.path().join(INDEX_FILE);
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(200_000_000).unwrap(); // sparse: no disk used
    let error = open_err(tmp.path());
    assert_error(&error, "E_CHECKPOINT_INDEX_INVALID", &[INDEX_FILE, "190.7 MiB", "more than"]);
}

// ---- config.json --------------------------------------------------------------------------------------

#[test]
fn config_larger_than_the_limit_is_refused_before_reading() {
    let tmp = temp_dir();
    let dir = tmp.path();
    write_valid(&dir.join(SINGLE_FILE), &[Tensor::patterned("a", Dtype::F32, &[4], 1)]);
    std::fs::File::create(dir.join("config.json")).unwrap().set_len(1 << 32).unwrap();
    let error = bounded(MIB, Duration::from_secs(20), || expect_err(inspect_headers(dir)));
    assert_error(&error, "E_CONFIG_INVALID", &["config.json", "4096.0 MiB"]);
}

// ---- calibration inputs -------------------------------------------------------------------------------

fn fixture_hub() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/qwen3_moe/hub")
}

fn calibration_options() -> CalibrationOptions {
    CalibrationOptions { samples: 4, seq_len: 8, batch_size: 2 }
}

#[test]
fn tokenizer_that_does_not_parse() {
    let tmp = temp_dir();
    let dir = tmp.path();
    let text = dir.join("calib.jsonl");
    std::fs::write(&text, "{\"text\":\"hello world\"}\n").unwrap();
    let contents: [&[u8]; 4] =
        [b"", b"{\"model\": ", b"{\"version\":\"1.0\",\"model\":{\"type\":\"BPE\",\"vocab\":7}}", &[0xFF, 0xFE]];
    for tokenizer in contents {
        std::fs::write(dir.join("tokenizer.json"), tokenizer).unwrap();
        let source = CalibrationSource::Jsonl { path: text.clone() };
        let error = bounded(MIB, Duration::from_secs(20), || {
            expect_err(load_calibration(dir, &source, &calibration_options(), 256, &AtomicBool::new(false)))
        });
        assert_error(&error, "E_TOKENIZER_INVALID", &["tokenizer.json"]);
    }
}

fn model_with_tokenizer(root: &Path) -> PathBuf {
    let dir = model_dir(root);
    std::fs::copy(fixture_hub().join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    dir
}

/// Writes about `line_bytes` of words as the text of one JSONL line (after `before` ordinary lines).
fn write_long_line(path: &Path, before: usize, line_bytes: usize) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for _ in 0..before {
        file.write_all(b"{\"text\":\"short\"}\n").unwrap();
    }
    file.write_all(b"{\"text\":\"").unwrap();
    let chunk = b"word ".repeat(MIB / 5);
    for _ in 0..line_bytes / MIB {
        file.write_all(&chunk).unwrap();
    }
    file.write_all(b"\"}\n").unwrap();
}

#[test]
fn calibration_jsonl_with_a_50_mb_line() {
    let tmp = temp_dir();
    let dir = model_with_tokenizer(tmp.path());
    let jsonl = tmp.path().join("calib.jsonl");
    write_long_line(&jsonl, 2, 50 * MIB);
    let source = CalibrationSource::Jsonl { path: jsonl.clone() };
    // The line is refused after 16 MiB of it were read; that buffer (grown by doubling) is the largest.
    let error = bounded(40 * MIB, Duration::from_secs(30), || {
        expect_err(load_calibration(
            &dir,
            &source,
            &CalibrationOptions { samples: 512, seq_len: 2048, batch_size: 8 },
            151_936,
            &AtomicBool::new(false),
        ))
    });
    assert_error(&error, "E_CALIBRATION_INVALID", &["calib.jsonl", "line 3", "16.0 MiB"]);
}

#[test]
fn calibration_text_with_a_50_mb_paragraph() {
    let tmp = temp_dir();
    let dir = model_with_tokenizer(tmp.path());
    let text = tmp.path().join("calib.txt");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&text).unwrap());
    let line = [b"word ".repeat(200), b"\n".to_vec()].concat();
    for _ in 0..(50 * MIB / line.len()) {
        file.write_all(&line).unwrap();
    }
    drop(file);
    let source = CalibrationSource::Text { path: text };
    let error = bounded(40 * MIB, Duration::from_secs(30), || {
        expect_err(load_calibration(
            &dir,
            &source,
            &CalibrationOptions { samples: 512, seq_len: 2048, batch_size: 8 },
            151_936,
            &AtomicBool::new(false),
        ))
    });
    assert_error(&error, "E_CALIBRATION_INVALID", &["calib.txt", "paragraph", "16.0 MiB"]);
}

#[test]
fn calibration_document_just_under_the_limit_is_read() {
    let tmp = temp_dir();
    let dir = model_with_tokenizer(tmp.path());
    let jsonl = tmp.path().join("calib.jsonl");
    // 1 MiB of words: well under the limit; it tokenizes to enough windows.
    write_long_line(&jsonl, 0, MIB);
    let source = CalibrationSource::Jsonl { path: jsonl };
    let set = load_calibration(&dir, &source, &calibration_options(), 151_936, &AtomicBool::new(false)).unwrap();
    assert_eq!(set.sample_count(), 4);
}
