//! Faults while the output is written: a file-size limit and a full disk, a file system that turns read-only
//! mid-export, a process killed mid-export, and a failure injected into each of the writer's file-system
//! operations in turn. Whatever happens: a coded error naming the file (`E_OUTPUT_WRITE` for a full disk, a
//! size limit, a read-only file system or a quota), no partial output directory, the temporary directory
//! removed (or, where the process died or the file system refuses, removed by the next run), and the input
//! byte-for-byte unchanged.
//!
//! The real quantizations run in child processes: this test binary runs itself again with
//! `MOE_QUANT_FAULTS_CHILD` set (see [`child_process_entry_point`]). The full-disk and read-only cases mount a
//! small tmpfs in a private mount namespace (`unshare -m`, or `unshare -rm` without root); where that is not
//! possible they print why and pass without checking anything.

#![cfg(unix)]
// clippy.toml's allow-*-in-tests covers `#[test]` functions only; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::forward::fixtures;
use common::{assert_error, declare_and_write, expect_err, files, pattern, temp_dir, Tensor};
use moe_quant_core::calib::data::{CalibrationSource, SequenceRequest};
use moe_quant_core::checkpoint::OutputOp;
use moe_quant_core::export::ExportPlan;
use moe_quant_core::model::ModelDescriptor;
use moe_quant_core::ops::calibrate::CalibrationRequest;
use moe_quant_core::ops::quantize::{quantize_checkpoint, Calibration, QuantizeStage, RunControl};
use moe_quant_core::{CheckpointWriter, Dtype, WriterOptions};
use serde::{Deserialize, Serialize};
use serde_json::json;

const CHILD_ENV: &str = "MOE_QUANT_FAULTS_CHILD";
const TMP_MARKER: &str = ".moe-quant-tmp-";

// ---- a real quantization --------------------------------------------------------------------------------

/// Copies the qwen3_moe/hub fixture into `dir` (the input of every run here; never written).
fn copy_fixture(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(fixtures().join("qwen3_moe/hub")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    model
}

/// Sorted names in `dir`.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

fn tmp_dirs(dir: &Path) -> Vec<String> {
    listing(dir).into_iter().filter(|n| n.contains(TMP_MARKER)).collect()
}

/// An FP8 export plan for the qwen3_moe/hub fixture, built from its committed descriptor as the TypeScript
/// side would: attention projections and routed experts quantized, every other tensor kept.
/// The fixture's plan (FP8), with the modules of `weight_only` quantized weight-only after layer 0.
fn qwen3_plan(model: &Path, max_shard_bytes: u64, weight_only: &[String]) -> (ModelDescriptor, ExportPlan) {
    let text = std::fs::read_to_string(fixtures().join("descriptors/qwen3_moe_hub.json")).unwrap();
    let descriptor: ModelDescriptor = serde_json::from_str(&text).unwrap();
    let raw: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut linears = Vec::new();
    let mut experts = Vec::new();
    let mut quantized = std::collections::BTreeSet::new();
    for layer in raw["layers"].as_array().unwrap() {
        let index = layer["index"].as_u64().unwrap();
        for projection in ["q", "k", "v", "o"] {
            let module = layer["attention"][projection].as_str().unwrap();
            quantized.insert(format!("{module}.weight"));
            linears.push(json!({ "layer": index, "module": module, "output": module }));
        }
        let mlp = &layer["mlp"];
        assert_eq!(mlp["kind"], "moe");
        let names = ["gate", "up", "down"].map(|p| mlp[p].as_str().unwrap().to_string());
        for e in 0..mlp["experts"].as_u64().unwrap() {
            for name in &names {
                quantized.insert(name.replace("{e}", &e.to_string()));
            }
        }
        let [gate, up, down] = names.map(|n| n.trim_end_matches(".weight").to_string());
        let output = json!({ "kind": "per_expert", "gate": gate, "up": up, "down": down });
        experts.push(json!({ "layer": index, "block": mlp["block"], "source": mlp, "output": output }));
    }
    for module in weight_only {
        quantized.insert(format!("{module}.weight"));
        linears.push(json!({ "layer": 0, "module": module, "output": module, "weight_only": true }));
    }
    let checkpoint = moe_quant_core::Checkpoint::open(model).unwrap();
    let keep: Vec<_> = checkpoint
        .tensors()
        .iter()
        .filter(|t| !quantized.contains(&t.name))
        .map(|t| json!({ "input": t.name, "output": t.name }))
        .collect();
    let config = std::fs::read_to_string(model.join("config.json")).unwrap();
    let plan = json!({
        "format": "fp8",
        "keep": keep,
        "linears": linears,
        "experts": experts,
        "files": { "config.json": config },
        "copy": ["generation_config.json", "tokenizer.json"],
        "max_shard_bytes": max_shard_bytes,
        "overwrite": false,
    });
    (descriptor, serde_json::from_value(plan).unwrap())
}

/// What a child process is asked to do.
#[derive(Serialize, Deserialize, Default)]
struct ChildTask {
    model: PathBuf,
    output: PathBuf,
    max_shard_bytes: u64,
    /// RLIMIT_FSIZE to set before running, in bytes.
    fsize_limit: Option<u64>,
    /// At the first `quantize` progress event (layer 1 quantized and queued): print HELD and wait forever.
    hold: bool,
    /// At the first `quantize` progress event: remount this directory read-only.
    remount_read_only: Option<PathBuf>,
    /// RLIMIT_AS to set before running, as bytes above the address space the process already uses.
    address_space_headroom: Option<u64>,
    /// Modules quantized weight-only besides the fixture's.
    weight_only: Vec<String>,
}

/// How a quantization ended, as a child process reports it on a `RESULT` line.
#[derive(Serialize, Deserialize, Debug)]
struct ChildResult {
    code: Option<String>,
    message: String,
}

/// Asserts that a child's run failed with `E_OUTPUT_WRITE` for a file of its temporary directory beside
/// `output`, for `reason`.
fn assert_output_write(result: &ChildResult, output: &Path, reason: &str) {
    assert_eq!(result.code.as_deref(), Some("E_OUTPUT_WRITE"), "{}", result.message);
    let temporary = output.with_file_name(format!(".{}.moe-quant-tmp-", output.file_name().unwrap().to_string_lossy()));
    assert!(result.message.starts_with(&temporary.display().to_string()), "{}", result.message);
    assert!(result.message.contains(&format!("cannot write the output ({reason}): ")), "{}", result.message);
}

/// Quantizes `model` into `output` with fixed pre-tokenized calibration ids.
fn run_quantization(task: &ChildTask, progress: &mut dyn FnMut(bool)) -> moe_quant_core::Result<()> {
    let (model, output) = (&task.model, &task.output);
    let (descriptor, plan) = qwen3_plan(model, task.max_shard_bytes, &task.weight_only);
    let ids: Vec<Vec<u32>> = (0..4u32).map(|s| (0..16u32).map(|i| (s * 37 + i * 11) % 256).collect()).collect();
    let sequences = SequenceRequest {
        samples: ids.len(),
        seq_len: 16,
        batch_size: 2,
        device: None,
        devices: None,
        source: CalibrationSource::Ids { ids },
    };
    let request = CalibrationRequest { sequences, all_experts: false };
    let control = RunControl {
        cancel: &AtomicBool::new(false),
        progress: &mut |event| progress(event.stage == QuantizeStage::Quantize),
        extra_files: None,
    };
    let calibration = Calibration { desc: &descriptor, request: &request, quantize_on_device: true };
    quantize_checkpoint(model, output, &plan, Some(calibration), control).map(|_| ())
}

/// Not a test: the body of the child processes the tests start (does nothing when run as a test).
#[test]
fn child_process_entry_point() {
    let Ok(task) = std::env::var(CHILD_ENV) else { return };
    let task: ChildTask = serde_json::from_str(&task).unwrap();
    if let Some(limit) = task.fsize_limit {
        let rlimit = libc::rlimit { rlim_cur: limit, rlim_max: limit };
        // SAFETY: setrlimit reads the struct it is given.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) }, 0);
    }
    if let Some(headroom) = task.address_space_headroom {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
        let used = line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024;
        let limit = used + headroom;
        let rlimit = libc::rlimit { rlim_cur: limit, rlim_max: limit };
        // SAFETY: setrlimit reads the struct it is given.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlimit) }, 0);
    }
    let mut held = false;
    let result = run_quantization(&task, &mut |quantizing| {
        if !quantizing || held {
            return;
        }
        held = true;
        if let Some(dir) = &task.remount_read_only {
            // `-t tmpfs … tmpfs`: util-linux's mount cannot remount by mount point alone in a user namespace. The
            // kernel refuses (EBUSY) while a file is open for writing: the writer thread opens a shard for each
            // tensor it writes, so this retries until it is between two writes.
            let remount = || {
                let output = Command::new("mount").args(["-t", "tmpfs", "-o", "remount,ro", "tmpfs"]).arg(dir).output();
                output.unwrap()
            };
            let mut attempt = remount();
            for _ in 0..500 {
                if attempt.status.success() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
                attempt = remount();
            }
            let stderr = String::from_utf8_lossy(&attempt.stderr);
            assert!(attempt.status.success(), "remounting {} read-only failed: {stderr}", dir.display());
        }
        if task.hold {
            // On a line of its own: libtest has printed "test child_process_entry_point ... " before.
            println!("\nHELD");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    });
    let result = match result {
        Ok(()) => ChildResult { code: None, message: String::new() },
        Err(e) => ChildResult { code: Some(e.code().to_string()), message: e.to_string() },
    };
    println!("\nRESULT {}", serde_json::to_string(&result).unwrap());
}

/// The command that runs [`child_process_entry_point`] with `task`.
fn child_command(task: &ChildTask) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child_process_entry_point", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, serde_json::to_string(task).unwrap());
    command
}

/// Runs a child to its end; the result it reports on its single `RESULT` line (it must exit normally).
fn run_child(command: &mut Command) -> ChildResult {
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{:?}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    let mut all = results(&stdout);
    assert_eq!(all.len(), 1, "no single RESULT line in {stdout}");
    all.remove(0)
}

/// The `RESULT` lines of a child's output.
fn results(stdout: &str) -> Vec<ChildResult> {
    stdout.lines().filter_map(|l| l.strip_prefix("RESULT ")).map(|l| serde_json::from_str(l).unwrap()).collect()
}

// ---- size limit (a real quantization in a child process) ------------------------------------------------

#[test]
fn a_file_size_limit_fails_the_export_with_e_output_write_and_leaves_nothing() {
    let tmp = temp_dir();
    let model = copy_fixture(&tmp.path().join("input"));
    let before = files(&model);
    let parent = tmp.path().join("output");
    std::fs::create_dir(&parent).unwrap();
    // The single shard is about 230 KB; config.json and the tokenizer fit under 64 KiB.
    let task = ChildTask {
        model: model.clone(),
        output: parent.join("out"),
        max_shard_bytes: 5_000_000_000,
        fsize_limit: Some(64 << 10),
        ..ChildTask::default()
    };
    // Without SIGXFSZ ignored, the child would be killed by the signal.
    let result = &run_child(&mut child_command(&task));
    assert_output_write(result, &parent.join("out"), "a file-size limit was reached");
    assert!(result.message.contains("/shard-0: cannot write"), "{}", result.message);
    assert_eq!(listing(&parent), Vec::<String>::new(), "no output and no temporary directory");
    assert_eq!(files(&model), before, "the input is untouched");
}

// ---- memory exhausted (a real quantization in a child process) ------------------------------------------

/// Adds `model.extra.weight`, BF16 `shape`, to the fixture copied under `dir`: a sparse file beside the model
/// (its bytes read as zeros, taking no disk), listed in a new index. Returns the model's directory.
fn fixture_with_sparse_tensor(dir: &Path, shape: [u64; 2]) -> PathBuf {
    let model = copy_fixture(dir);
    let len = shape[0] * shape[1] * 2;
    let header = format!(
        r#"{{"model.extra.weight":{{"dtype":"BF16","shape":[{},{}],"data_offsets":[0,{len}]}}}}"#,
        shape[0], shape[1]
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    let file = std::fs::File::create(model.join("extra.safetensors")).unwrap();
    std::io::Write::write_all(&mut &file, &bytes).unwrap();
    file.set_len(bytes.len() as u64 + len).unwrap();
    let tensors: Vec<String> =
        moe_quant_core::Checkpoint::open(&model).unwrap().tensors().iter().map(|t| t.name.clone()).collect();
    let mut map: Vec<(&str, &str)> = tensors.iter().map(|t| (t.as_str(), "model.safetensors")).collect();
    map.push(("model.extra.weight", "extra.safetensors"));
    common::write_index(&model, &map);
    model
}

/// Quantizes `model` into `parent/out` (creating `parent`) in a child process whose address space may grow by 1 GiB,
/// with `weight_only` quantized weight-only.
fn run_in_one_gib_more(model: &Path, parent: &Path, weight_only: Vec<String>) -> ChildResult {
    std::fs::create_dir(parent).unwrap();
    let task = ChildTask {
        model: model.to_path_buf(),
        output: parent.join("out"),
        max_shard_bytes: 5_000_000_000,
        address_space_headroom: Some(1 << 30),
        weight_only,
        ..ChildTask::default()
    };
    // Few malloc arenas: each one reserves address space of its own.
    run_child(child_command(&task).env("MALLOC_ARENA_MAX", "2"))
}

#[test]
fn an_allocation_refused_under_an_address_space_limit_is_e_out_of_memory_and_leaves_nothing() {
    let tmp = temp_dir();
    // A 4 GiB weight quantized weight-only: reading it whole cannot fit under a limit of 1 GiB above what the
    // process uses.
    let model = fixture_with_sparse_tensor(&tmp.path().join("input"), [65536, 32768]);
    let parent = tmp.path().join("output");
    // Without fallible allocation, the child would abort (SIGABRT).
    let result = run_in_one_gib_more(&model, &parent, vec!["model.extra".into()]);
    assert_eq!(result.code.as_deref(), Some("E_OUT_OF_MEMORY"), "{}", result.message);
    let big = (4u64 << 30).to_string();
    assert!(result.message.contains("extra.safetensors") && result.message.contains(&big), "{}", result.message);
    assert_eq!(listing(&parent), Vec::<String>::new(), "no output and no temporary directory");
}

#[test]
fn a_kept_tensor_larger_than_the_memory_left_is_copied_in_parts() {
    let tmp = temp_dir();
    // 1.5 GiB kept as it is, under a limit of 1 GiB above what the process uses: read whole, it would not fit.
    let shape = [49152u64, 16384];
    let model = fixture_with_sparse_tensor(&tmp.path().join("input"), shape);
    let parent = tmp.path().join("output");
    let result = run_in_one_gib_more(&model, &parent, Vec::new());
    assert_eq!(result.code, None, "{}", result.message);
    let written = moe_quant_core::Checkpoint::open(parent.join("out")).unwrap();
    let info = written.info("model.extra.weight").unwrap();
    assert_eq!(info.shape, shape.map(|d| d as usize), "the kept tensor's shape");
    let (mut bytes, mut nonzero) = (0u64, 0usize);
    written
        .read_in_parts("model.extra.weight", 64 << 20, &mut |part| {
            bytes += part.len() as u64;
            nonzero += part.iter().filter(|&&b| b != 0).count();
            Ok(())
        })
        .unwrap();
    assert_eq!((bytes, nonzero), (shape[0] * shape[1] * 2, 0), "the kept tensor's bytes");
}

// ---- kill -9 mid-export (a real quantization in a child process) ----------------------------------------

#[test]
fn a_run_killed_mid_export_leaves_only_its_temporary_directory_which_the_next_run_removes() {
    let tmp = temp_dir();
    let model = copy_fixture(&tmp.path().join("input"));
    let before = files(&model);
    let parent = tmp.path().join("output");
    std::fs::create_dir(&parent).unwrap();
    let output = parent.join("out");
    // Small shards, so that part of the output is on disk when the child stops at layer 1's progress event.
    let task = ChildTask {
        model: model.clone(),
        output: output.clone(),
        max_shard_bytes: 16 << 10,
        hold: true,
        ..ChildTask::default()
    };
    let mut child = child_command(&task).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            if line == "HELD" || line.starts_with("RESULT ") {
                let _ = sender.send(line);
                return;
            }
        }
    });
    let line = receiver.recv_timeout(Duration::from_secs(120));
    if line.as_deref() != Ok("HELD") {
        let _ = child.kill();
        panic!("the child did not reach the export: {line:?}");
    }
    let [stale] = &tmp_dirs(&parent)[..] else { panic!("no single temporary directory: {:?}", listing(&parent)) };
    assert!(stale.starts_with(&format!(".out.moe-quant-tmp-{}.", child.id())), "{stale}");
    assert!(!listing(&parent.join(stale)).is_empty(), "shards were written before the kill");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(listing(&parent), vec![stale.clone()], "no output directory, the temporary one left behind");

    // The next run to the same output removes it (its process is gone) and succeeds.
    let again =
        ChildTask { model: model.clone(), output: output.clone(), max_shard_bytes: 16 << 10, ..ChildTask::default() };
    run_quantization(&again, &mut |_| {}).unwrap();
    assert_eq!(listing(&parent), vec!["out".to_string()]);
    assert!(output.join("model.safetensors.index.json").is_file());
    assert_eq!(files(&model), before, "the input is untouched");
}

// ---- stale temporary directories --------------------------------------------------------------------------

/// The id of a process that has exited (and been reaped).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn temporary_directories_of_dead_processes_are_removed_by_the_next_writer_for_the_same_target() {
    let tmp = temp_dir();
    let dead = dead_pid();
    let mut live = Command::new("sleep").arg("60").spawn().unwrap();
    let stale = [format!(".out.moe-quant-tmp-{dead}.0"), format!(".out.moe-quant-tmp-{dead}.replaced")];
    let kept = [
        format!(".out.moe-quant-tmp-{}.0", live.id()), // a run still going on
        format!(".other.moe-quant-tmp-{dead}.0"),      // another target's
        format!(".out.moe-quant-tmp-{}.999999", std::process::id()), // this process's own
    ];
    for name in stale.iter().chain(&kept) {
        std::fs::create_dir(tmp.path().join(name)).unwrap();
        std::fs::write(tmp.path().join(name).join("shard-0"), pattern(64, 1)).unwrap();
    }
    let mut writer = CheckpointWriter::create(tmp.path().join("out"), WriterOptions::default()).unwrap();
    declare_and_write(&mut writer, &[Tensor::new("w", Dtype::U8, &[4], vec![1, 2, 3, 4])]);
    writer.finish().unwrap();
    let _ = live.kill();
    let _ = live.wait();
    let mut expected: Vec<String> = kept.to_vec();
    expected.push("out".into());
    expected.sort();
    assert_eq!(listing(tmp.path()), expected);
}

// ---- failures injected into each file-system operation of the writer --------------------------------------

/// Operations a hook saw: kind and path.
type Seen = Arc<Mutex<Vec<(OutputOp, PathBuf)>>>;

/// Writes a checkpoint of two shards, two extra files (one in a subdirectory) and a copy of `source`;
/// returns the first error, and whether the temporary directory still existed when it came back. `hook`
/// sees every operation after the temporary directory exists.
fn write_sample(
    target: &Path,
    source: &Path,
    hook: impl FnMut(OutputOp, &Path) -> std::io::Result<()> + Send + 'static,
) -> Result<(), (moe_quant_core::Error, bool)> {
    static TENSORS: std::sync::OnceLock<[Tensor; 3]> = std::sync::OnceLock::new();
    // 1.5 MiB alone in the first shard, then the two others in the second.
    let [big, a, b] = TENSORS.get_or_init(|| {
        [
            Tensor::patterned("big", Dtype::U8, &[3 << 19], 1),
            Tensor::patterned("a", Dtype::U8, &[64], 2),
            Tensor::patterned("b", Dtype::F32, &[3], 3),
        ]
    });
    let options = WriterOptions { max_shard_bytes: 1 << 20, ..WriterOptions::default() };
    let mut writer = CheckpointWriter::create(target, options).unwrap();
    writer.set_fault_hook(hook);
    let tmp = writer.tmp_dir().to_path_buf();
    // The temporary directory must be gone as soon as the error is returned, while the writer still exists.
    let fail = |e: moe_quant_core::Error| (e, tmp.exists());
    writer.declare(&[big.layout(), a.layout(), b.layout()]).map_err(fail)?;
    // Out of the declared order: the second shard is complete before the first.
    for tensor in [b, a, big] {
        tensor.write_to(&mut writer).map_err(fail)?;
    }
    writer.write_file("config.json", b"{}").map_err(fail)?;
    writer.write_file("sub/extra.json", b"[]").map_err(fail)?;
    writer.copy_file(source, "tokenizer.json").map_err(fail)?;
    writer.finish().map_err(|e| (e, tmp.exists()))?;
    Ok(())
}

#[test]
fn a_read_only_file_system_at_any_operation_is_e_output_write_and_leaves_nothing() {
    let tmp = temp_dir();
    let source = tmp.path().join("tokenizer.json");
    std::fs::write(&source, pattern(3 << 19, 5)).unwrap();
    // A clean run, counting the operations.
    let seen: Seen = Arc::default();
    let record = seen.clone();
    write_sample(&tmp.path().join("first"), &source, move |op, path| {
        record.lock().unwrap().push((op, path.to_path_buf()));
        Ok(())
    })
    .unwrap();
    let seen = seen.lock().unwrap().clone();
    for op in [OutputOp::CreateDir, OutputOp::CreateFile, OutputOp::Write, OutputOp::Sync, OutputOp::Rename] {
        assert!(seen.iter().any(|(o, _)| *o == op), "{op:?} never seen: {seen:?}");
    }
    assert!(seen.iter().filter(|(o, _)| *o == OutputOp::Write).count() >= 6, "{seen:?}");
    std::fs::remove_dir_all(tmp.path().join("first")).unwrap();

    // The same run with operation n failing as on a read-only file system, for every n.
    for (n, (op, _)) in seen.iter().enumerate() {
        let parent = tmp.path().join(format!("run-{n}"));
        let failed: Seen = Arc::default();
        let record = failed.clone();
        let mut count = 0;
        let result = write_sample(&parent.join("out"), &source, move |op, path| {
            count += 1;
            if count == n + 1 {
                record.lock().unwrap().push((op, path.to_path_buf()));
                return Err(std::io::Error::from_raw_os_error(libc::EROFS));
            }
            Ok(())
        });
        let Err((error, tmp_left)) = result else { panic!("operation {n} ({op:?}) did not fail the run") };
        let failed = failed.lock().unwrap().clone();
        let [(failed_op, path)] = &failed[..] else { panic!("operation {n}: {failed:?}") };
        assert_eq!(failed_op, op, "the operations come in the same order");
        assert_error(&error, "E_OUTPUT_WRITE", &["cannot write the output (the filesystem is read-only)"]);
        assert!(error.to_string().starts_with(&format!("{}: ", path.display())), "operation {n} ({op:?}): {error}");
        assert!(!tmp_left, "operation {n} ({op:?}): the temporary directory outlived the error");
        assert_eq!(listing(&parent), Vec::<String>::new(), "operation {n} ({op:?})");
    }
    assert_eq!(std::fs::read(&source).unwrap(), pattern(3 << 19, 5));
}

#[test]
fn other_io_errors_stay_e_io_and_a_failed_writer_cannot_be_used_again() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    let mut writer =
        CheckpointWriter::create(&target, WriterOptions { max_shard_bytes: 8, ..Default::default() }).unwrap();
    let (a, b) = (Tensor::patterned("a", Dtype::U8, &[8], 1), Tensor::patterned("b", Dtype::U8, &[8], 2));
    writer.declare(&[a.layout(), b.layout()]).unwrap();
    writer.set_fault_hook(|op, _| match op {
        OutputOp::Write => Err(std::io::Error::from_raw_os_error(libc::EIO)),
        _ => Ok(()),
    });
    let error = b.write_to(&mut writer).unwrap_err();
    assert_error(&error, "E_IO", &["shard-1"]);
    assert!(!writer.tmp_dir().exists());
    assert_error(&writer.write_file("config.json", b"{}").unwrap_err(), "E_INTERNAL", &["after it failed"]);
    assert_error(&expect_err(writer.finish()), "E_INTERNAL", &["after it failed"]);
    assert_eq!(listing(tmp.path()), Vec::<String>::new());
    // A failure to read the source of a copy names the source, and is no output error.
    let mut writer = CheckpointWriter::create(&target, WriterOptions::default()).unwrap();
    let missing = tmp.path().join("missing.json");
    assert_error(&writer.copy_file(&missing, "x.json").unwrap_err(), "E_IO", &["missing.json"]);
    drop(writer);
    assert_eq!(listing(tmp.path()), Vec::<String>::new());
}

#[test]
fn a_failure_to_move_the_new_output_into_place_keeps_the_old_one() {
    let tmp = temp_dir();
    let target = tmp.path().join("out");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("model.safetensors"), "old").unwrap();
    let options = WriterOptions { overwrite: true, ..WriterOptions::default() };
    let mut writer = CheckpointWriter::create(&target, options).unwrap();
    let tmp_dir = writer.tmp_dir().to_path_buf();
    let moving = tmp_dir.clone();
    writer.set_fault_hook(move |op, path| match op {
        OutputOp::Rename if path == moving => Err(std::io::Error::from_raw_os_error(libc::ENOSPC)),
        _ => Ok(()),
    });
    declare_and_write(&mut writer, &[Tensor::new("w", Dtype::U8, &[4], vec![1, 2, 3, 4])]);
    let error = expect_err(writer.finish());
    assert_error(&error, "E_OUTPUT_WRITE", &["the disk is full", &tmp_dir.display().to_string()]);
    assert_eq!(listing(tmp.path()), vec!["out".to_string()]);
    assert_eq!(std::fs::read_to_string(target.join("model.safetensors")).unwrap(), "old");
}

// ---- a full disk and a read-only file system, for real (tmpfs in a private mount namespace) --------------

/// `unshare` arguments that give a private mount namespace where a tmpfs can be mounted, or None (with the
/// reason printed) where this machine allows neither as root nor through a user namespace.
fn mount_namespace(probe_dir: &Path) -> Option<Vec<&'static str>> {
    for args in [&["-m", "--propagation", "private"][..], &["-r", "-m", "--propagation", "private"][..]] {
        let output = Command::new("unshare")
            .args(args)
            .args(["sh", "-c", "mount -t tmpfs -o size=1m tmpfs \"$0\" && echo MOUNTED"])
            .arg(probe_dir)
            .output();
        if let Ok(output) = output {
            if String::from_utf8_lossy(&output.stdout).contains("MOUNTED") {
                return Some(args.to_vec());
            }
        }
    }
    eprintln!("skipped: cannot mount a tmpfs in a private mount namespace here (unshare -m / -rm not permitted)");
    None
}

/// Runs `script` (sh, with `$0` = the test binary, `$1` = the tmpfs mount point, `$2`, `$3` … = child tasks)
/// in a private mount namespace after mounting a tmpfs of `size` on `mount_point`.
fn in_namespace(namespace: &[&str], mount_point: &Path, size: &str, script: &str, tasks: &[ChildTask]) -> String {
    let mut command = Command::new("unshare");
    command
        .args(namespace)
        .arg("sh")
        .arg("-c")
        .arg(format!("set -e\nmount -t tmpfs -o size={size} tmpfs \"$1\"\n{script}"))
        .arg(std::env::current_exe().unwrap())
        .arg(mount_point);
    for task in tasks {
        command.arg(serde_json::to_string(task).unwrap());
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{:?}\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    stdout
}

/// Runs the test binary's child entry point on the task in `$N`.
const RUN_CHILD: &str =
    "MOE_QUANT_FAULTS_CHILD=\"$TASK\" \"$0\" --exact child_process_entry_point --nocapture --test-threads=1";

#[test]
fn a_full_disk_fails_the_export_with_e_output_write_and_leaves_nothing() {
    let tmp = temp_dir();
    let model = copy_fixture(&tmp.path().join("input"));
    let before = files(&model);
    let disk = tmp.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let Some(namespace) = mount_namespace(&disk) else { return };
    // 64 KiB of tmpfs: config.json and the tokenizer fit, the 230 KB shard does not.
    let task = ChildTask {
        model: model.clone(),
        output: disk.join("out"),
        max_shard_bytes: 5_000_000_000,
        ..ChildTask::default()
    };
    let script = format!("TASK=\"$2\" {RUN_CHILD}\necho \"LISTING [$(ls -A \"$1\" | tr '\\n' ' ')]\"");
    let stdout = in_namespace(&namespace, &disk, "64k", &script, &[task]);
    let [result] = &results(&stdout)[..] else { panic!("no single RESULT line in {stdout}") };
    assert_output_write(result, &disk.join("out"), "the disk is full");
    assert!(stdout.lines().any(|l| l == "LISTING []"), "the tmpfs is left empty: {stdout}");
    assert_eq!(files(&model), before, "the input is untouched");
}

#[test]
fn a_file_system_turning_read_only_mid_export_is_e_output_write_and_the_next_run_cleans_up() {
    let tmp = temp_dir();
    let model = copy_fixture(&tmp.path().join("input"));
    let before = files(&model);
    let disk = tmp.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let Some(namespace) = mount_namespace(&disk) else { return };
    // The child remounts the tmpfs read-only at layer 1's progress event, with shards already written;
    // the next write fails. Nothing can be removed from a read-only file system: the temporary directory
    // stays until the file system is writable again and the next run for the same output removes it.
    let first = ChildTask {
        model: model.clone(),
        output: disk.join("out"),
        max_shard_bytes: 16 << 10,
        remount_read_only: Some(disk.clone()),
        ..ChildTask::default()
    };
    let second =
        ChildTask { model: model.clone(), output: disk.join("out"), max_shard_bytes: 16 << 10, ..ChildTask::default() };
    let script = format!(
        "TASK=\"$2\" {RUN_CHILD}\n\
         echo \"LISTING [$(ls -A \"$1\" | tr '\\n' ' ')]\"\n\
         mount -t tmpfs -o remount,rw tmpfs \"$1\"\n\
         TASK=\"$3\" {RUN_CHILD}\n\
         echo \"LISTING [$(ls -A \"$1\" | tr '\\n' ' ')]\""
    );
    let stdout = in_namespace(&namespace, &disk, "16m", &script, &[first, second]);
    let [failed, succeeded] = &results(&stdout)[..] else { panic!("not two RESULT lines in {stdout}") };
    assert_output_write(failed, &disk.join("out"), "the filesystem is read-only");
    assert_eq!(succeeded.code, None, "{}", succeeded.message);
    let listings: Vec<Vec<&str>> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("LISTING [")?.strip_suffix(']'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let [after_failure, after_success] = &listings[..] else { panic!("{stdout}") };
    let [left] = &after_failure[..] else { panic!("only the temporary directory is left: {after_failure:?}") };
    assert!(left.starts_with(".out.moe-quant-tmp-"), "{left}");
    assert_eq!(after_success, &["out"], "the next run removed it");
    assert_eq!(files(&model), before, "the input is untouched");
}
