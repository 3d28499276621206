//! Writes a checkpoint: tensors go into safetensors shards of a bounded size, with
//! `model.safetensors.index.json` when there is more than one.
//!
//! The writer is used in four steps: [`CheckpointWriter::create`] checks the target and makes a temporary
//! directory beside it; [`declare`](CheckpointWriter::declare) takes every tensor's name, dtype and shape,
//! which decides the shards and writes all their headers at once; [`write`](CheckpointWriter::write) puts
//! each tensor's bytes straight at their place in their shard, in any order, so nothing is held back or
//! written twice and a finished shard starts going to disk while the rest is still being produced;
//! [`finish`](CheckpointWriter::finish) renames the directory into place. A failure never leaves a
//! half-written output:
//!
//! - a failed write, flush, sync, create or rename removes the temporary directory before the error is
//!   returned; one caused by the file system's state (disk full, file-size limit, read-only file system, quota)
//!   is `E_OUTPUT_WRITE`, any other `E_IO`;
//! - dropping an unfinished writer (an error elsewhere, cancellation) removes it too;
//! - a process killed outright (SIGKILL, power loss) leaves it behind: the next writer for the same target
//!   removes the temporary directories of processes that no longer exist.
//!
//! Every file is synced before the directory is renamed into place, so a published output is complete on
//! disk, and a file system that reports a full disk only when data is flushed (NFS, some quotas) is caught.

mod fs;
mod layout;
mod staging;
mod tensors;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use self::fs::{check, output_error, sync_dir, write_all_at, write_new_file, FaultHook};
use self::layout::Layout;
use self::staging::Staging;
use super::INDEX_FILE;
use crate::error::{Error, IoContext, Result};
use crate::limits::open_regular;

pub use self::fs::OutputOp;
pub use self::layout::TensorLayout;

/// How to write the output.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Largest shard, in bytes of tensor data; a single tensor larger than this gets a shard of its own.
    pub max_shard_bytes: u64,
    /// Replace an existing non-empty target directory.
    pub overwrite: bool,
    /// The checkpoint being read, which the output must never touch.
    pub input_dir: Option<PathBuf>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions { max_shard_bytes: 5_000_000_000, overwrite: false, input_dir: None }
    }
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct WriteSummary {
    /// Every file of the output, relative name → size in bytes.
    pub files: BTreeMap<String, u64>,
    /// Sum of the tensors' data bytes (the index's `total_size`).
    pub tensor_bytes: u64,
    pub shard_count: usize,
}

/// A checkpoint being written. Call [`finish`](Self::finish) to publish it.
pub struct CheckpointWriter {
    staging: Staging,
    max_shard_bytes: u64,
    /// The shards and every tensor's place in them, once declared.
    layout: Option<Layout>,
    fault: Option<FaultHook>,
}

impl CheckpointWriter {
    /// Checks the target and creates the temporary directory beside it. A target that is a symbolic link to a
    /// directory is written where the link points (the link stays); a link to nothing is refused.
    pub fn create(target: impl AsRef<Path>, options: WriterOptions) -> Result<Self> {
        #[cfg(unix)]
        fs::ignore_sigxfsz();
        let staging = Staging::create(target.as_ref(), &options)?;
        Ok(CheckpointWriter { staging, max_shard_bytes: options.max_shard_bytes, layout: None, fault: None })
    }

    /// The temporary directory being written (removed unless `finish` succeeds).
    pub fn tmp_dir(&self) -> &Path {
        self.staging.tmp()
    }

    /// Test support: `hook` is called before every file-system operation on the output from now on, and
    /// an error it returns is what that operation fails with. Not part of the API.
    #[doc(hidden)]
    pub fn set_fault_hook(&mut self, hook: impl FnMut(OutputOp, &Path) -> io::Result<()> + Send + 'static) {
        self.fault = Some(Box::new(hook));
    }

    /// Declares every tensor the output will hold, once, before any is written. Their order decides the
    /// shards: each is filled in this order until the next tensor would take it past `max_shard_bytes`.
    /// The shards' headers are written now; [`write`](Self::write) then accepts only declared tensors with
    /// their declared dtype and shape, and `finish` fails if one was never written.
    pub fn declare(&mut self, tensors: &[TensorLayout]) -> Result<()> {
        self.staging.ensure_open()?;
        if self.layout.is_some() {
            return Err(Error::internal(format!(
                "{}: the output's tensors were declared already; they are declared once",
                self.staging.target().display()
            )));
        }
        let laid_out = self.lay_out(tensors);
        self.staging.discard_on_error(laid_out)
    }

    /// Creates every shard at its full size with its header in place.
    fn lay_out(&mut self, tensors: &[TensorLayout]) -> Result<()> {
        let mut layout = Layout::plan(tensors, self.max_shard_bytes, self.staging.tmp())?;
        for shard in &mut layout.shards {
            let head = std::mem::take(&mut shard.head);
            (|| {
                check(&mut self.fault, OutputOp::CreateFile, &shard.path)?;
                let file = File::options().write(true).create_new(true).open(&shard.path)?;
                check(&mut self.fault, OutputOp::Write, &shard.path)?;
                write_all_at(&file, &head, 0)?;
                // The full size at once: tensors are written at their offsets, in any order.
                file.set_len(shard.len)
            })()
            .map_err(|e| output_error(&shard.path, e))?;
        }
        self.layout = Some(layout);
        Ok(())
    }

    /// Writes a non-tensor file (config, metadata) into the output.
    pub fn write_file(&mut self, relative: &str, bytes: &[u8]) -> Result<()> {
        self.staging.ensure_open()?;
        let written = self.write_file_inner(relative, bytes);
        self.staging.discard_on_error(written)
    }

    fn write_file_inner(&mut self, relative: &str, bytes: &[u8]) -> Result<()> {
        let path = self.staging.tmp().join(relative);
        self.create_parent(&path)?;
        write_new_file(&path, &mut self.fault, |out| out.write_all(bytes))
    }

    /// Copies a file of the input (tokenizer, generation config …) into the output unchanged. A failure to
    /// read names the source, a failure to write the copy.
    pub fn copy_file(&mut self, source: &Path, relative: &str) -> Result<()> {
        self.staging.ensure_open()?;
        let copied = self.copy_file_inner(source, relative);
        self.staging.discard_on_error(copied)
    }

    fn copy_file_inner(&mut self, source: &Path, relative: &str) -> Result<()> {
        let mut input = open_regular(source)?;
        let path = self.staging.tmp().join(relative);
        self.create_parent(&path)?;
        let mut read_error = None;
        let written = write_new_file(&path, &mut self.fault, |out| {
            let mut buffer = vec![0u8; fs::WRITE_BUFFER];
            loop {
                let n = match input.read(&mut buffer) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        read_error = Some(e);
                        return Err(io::Error::other("reading the source failed"));
                    }
                };
                out.write_all(&buffer[..n])?;
            }
        });
        match read_error {
            Some(source_error) => Err(Error::Io { path: source.to_path_buf(), source: source_error }),
            None => written,
        }
    }

    /// Creates the directories above `path` inside the temporary directory.
    fn create_parent(&mut self, path: &Path) -> Result<()> {
        match path.parent() {
            Some(parent) if parent != self.staging.tmp() => check(&mut self.fault, OutputOp::CreateDir, parent)
                .and_then(|()| std::fs::create_dir_all(parent))
                .map_err(|e| output_error(parent, e)),
            _ => Ok(()),
        }
    }

    /// Syncs the shards, gives them their final names, writes the index of a sharded output, then renames
    /// the temporary directory into place.
    pub fn finish(mut self) -> Result<WriteSummary> {
        self.staging.ensure_open()?;
        let finished = self.finish_inner();
        self.staging.discard_on_error(finished)
    }

    fn finish_inner(&mut self) -> Result<WriteSummary> {
        let Some(layout) = self.layout.take() else {
            return Err(Error::internal(format!(
                "{}: the output's tensors were never declared",
                self.staging.target().display()
            )));
        };
        layout.check_complete()?;
        for shard in &layout.shards {
            check(&mut self.fault, OutputOp::Sync, &shard.path)
                .and_then(|()| File::options().write(true).open(&shard.path))
                .and_then(|file| file.sync_all())
                .map_err(|e| output_error(&shard.path, e))?;
        }
        for (k, shard) in layout.shards.iter().enumerate() {
            let to = self.staging.tmp().join(layout.final_name(k));
            check(&mut self.fault, OutputOp::Rename, &shard.path)
                .and_then(|()| std::fs::rename(&shard.path, &to))
                .map_err(|e| output_error(&shard.path, e))?;
        }
        if layout.shards.len() > 1 {
            self.write_file_inner(INDEX_FILE, layout.index_json()?.as_bytes())?;
        }
        let files = list_files(self.staging.tmp())?;
        sync_dir(self.staging.tmp());
        self.staging.publish(&mut self.fault)?;
        Ok(WriteSummary { files, tensor_bytes: layout.tensor_bytes, shard_count: layout.shards.len() })
    }
}

/// The regular files directly in `dir`, name → size.
fn list_files(dir: &Path) -> Result<BTreeMap<String, u64>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_path(dir)? {
        let entry = entry.with_path(dir)?;
        let metadata = entry.metadata().with_path(&entry.path())?;
        if metadata.is_file() {
            files.insert(entry.file_name().to_string_lossy().into_owned(), metadata.len());
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::checkpoint::{Dtype, SINGLE_FILE};

    type Sample = (String, Dtype, Vec<usize>, Vec<u8>);

    /// Each (name, dtype, shape) with distinct bytes.
    fn tensors_of(entries: &[(&str, Dtype, &[usize])]) -> Vec<Sample> {
        entries
            .iter()
            .enumerate()
            .map(|(k, &(name, dtype, shape))| {
                let len = shape.iter().product::<usize>() * dtype.size();
                (name.to_string(), dtype, shape.to_vec(), (0..len).map(|i| (i * 7 + k * 31) as u8).collect())
            })
            .collect()
    }

    /// The declaration of `tensors`, in their order.
    fn layout_of(tensors: &[Sample]) -> Vec<TensorLayout> {
        tensors
            .iter()
            .map(|(name, dtype, shape, _)| TensorLayout { name: name.clone(), dtype: *dtype, shape: shape.clone() })
            .collect()
    }

    /// Tensors of several dtypes and sizes (names out of order), with distinct bytes: 164 bytes in all.
    fn sample_tensors() -> Vec<Sample> {
        tensors_of(&[
            ("m.b.weight", Dtype::U8, &[3, 5]),
            ("m.a.weight", Dtype::BF16, &[2, 3]),
            ("m.a.scale", Dtype::F32, &[]),
            ("c", Dtype::F8E4M3, &[7]),
            ("z", Dtype::F64, &[1]),
            ("big", Dtype::F32, &[6, 4]),
            ("e.input_scale", Dtype::F32, &[]),
            ("d", Dtype::BF16, &[9]),
        ])
    }

    /// What `safetensors::serialize` makes of `tensors`, with the `{"format": "pt"}` metadata.
    fn serialized(tensors: &[&Sample]) -> Vec<u8> {
        let views = tensors.iter().map(|(name, dtype, shape, data)| {
            (name, safetensors::tensor::TensorView::new(dtype.to_safetensors(), shape.clone(), data).unwrap())
        });
        let metadata = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
        safetensors::serialize(views, metadata).unwrap()
    }

    /// Every file of a published output, name → bytes.
    fn output_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
            .collect()
    }

    /// The index of the sample tensors in shards of at most 40 bytes, as the published file holds it.
    const SAMPLE_INDEX_40: &str = r#"{
  "metadata": {
    "total_size": 164
  },
  "weight_map": {
    "big": "model-00003-of-00004.safetensors",
    "c": "model-00001-of-00004.safetensors",
    "d": "model-00004-of-00004.safetensors",
    "e.input_scale": "model-00004-of-00004.safetensors",
    "m.a.scale": "model-00001-of-00004.safetensors",
    "m.a.weight": "model-00001-of-00004.safetensors",
    "m.b.weight": "model-00001-of-00004.safetensors",
    "z": "model-00002-of-00004.safetensors"
  }
}
"#;

    #[test]
    fn declared_writes_in_any_order_give_the_bytes_of_safetensors_serialize() {
        let tensors = sample_tensors();
        let layout = layout_of(&tensors);
        let all: Vec<&Sample> = tensors.iter().collect();
        let single = BTreeMap::from([(SINGLE_FILE.to_string(), serialized(&all))]);
        // Filled in declaration order up to 40 bytes: 15 + 12 + 4 + 7, then 8 alone (96 would pass the
        // limit), then the 96 bytes larger than a shard alone, then 4 + 18.
        let mut sharded: BTreeMap<String, Vec<u8>> = [&all[..4], &all[4..5], &all[5..6], &all[6..]]
            .iter()
            .enumerate()
            .map(|(k, group)| (format!("model-{:05}-of-00004.safetensors", k + 1), serialized(group)))
            .collect();
        sharded.insert(INDEX_FILE.to_string(), SAMPLE_INDEX_40.as_bytes().to_vec());
        for (max_shard_bytes, shard_count, expected) in [(u64::MAX, 1, single), (40, 4, sharded)] {
            let tmp = tempfile::tempdir().unwrap();
            let options = WriterOptions { max_shard_bytes, ..WriterOptions::default() };
            for order in [[0usize, 1, 2, 3, 4, 5, 6, 7], [7, 5, 3, 1, 0, 2, 4, 6], [4, 6, 7, 0, 5, 1, 3, 2]] {
                let target = tmp.path().join(format!("{order:?}"));
                let mut writer = CheckpointWriter::create(&target, options.clone()).unwrap();
                writer.declare(&layout).unwrap();
                for &i in &order {
                    let (name, dtype, shape, data) = &tensors[i];
                    writer.write(name, *dtype, shape, data).unwrap();
                }
                let summary = writer.finish().unwrap();
                assert_eq!(output_files(&target), expected, "{max_shard_bytes} {order:?}");
                let sizes: BTreeMap<String, u64> = expected.iter().map(|(n, b)| (n.clone(), b.len() as u64)).collect();
                assert_eq!(summary.files, sizes, "no other file is left");
                assert_eq!((summary.tensor_bytes, summary.shard_count), (164, shard_count));
            }
        }
    }

    #[test]
    fn an_empty_declaration_gives_an_empty_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("out");
        let mut writer = CheckpointWriter::create(&target, WriterOptions::default()).unwrap();
        writer.declare(&[]).unwrap();
        let summary = writer.finish().unwrap();
        assert_eq!(output_files(&target), BTreeMap::from([(SINGLE_FILE.to_string(), serialized(&[]))]));
        assert_eq!((summary.tensor_bytes, summary.shard_count), (0, 1));
    }

    #[test]
    fn declared_output_refuses_strangers_mismatches_and_gaps() {
        let tensors = sample_tensors();
        let layout = layout_of(&tensors);
        let tmp = tempfile::tempdir().unwrap();
        let fresh = |name: &str| {
            let mut writer = CheckpointWriter::create(tmp.path().join(name), WriterOptions::default()).unwrap();
            writer.declare(&layout).unwrap();
            writer
        };
        let (name, dtype, shape, data) = &tensors[0];

        let mut writer = fresh("stranger");
        let error = writer.write("not.declared", Dtype::U8, &[2], &[0, 1]).unwrap_err();
        assert!(error.to_string().contains("not.declared was not declared"), "{error}");
        assert!(!writer.tmp_dir().exists(), "a failed writer removes its temporary directory");

        let mut writer = fresh("dtype");
        let error = writer.write(name, Dtype::F8E4M3, shape, data).unwrap_err();
        assert_eq!(error.code(), "E_TENSOR_SHAPE");
        assert!(!writer.tmp_dir().exists());
        let mut writer = fresh("shape");
        let error = writer.write(name, *dtype, &[5, 3], data).unwrap_err();
        assert_eq!(error.code(), "E_TENSOR_SHAPE", "{error}");
        assert!(error.to_string().contains("does not match the declared U8 [3, 5]"), "{error}");

        let mut writer = fresh("gap");
        for (name, dtype, shape, data) in tensors.iter().skip(1) {
            writer.write(name, *dtype, shape, data).unwrap();
        }
        let tmp_dir = writer.tmp_dir().to_path_buf();
        let error = writer.finish().unwrap_err();
        assert!(error.to_string().contains("1 declared tensor(s) were never written, first m.b.weight"), "{error}");
        assert!(!tmp_dir.exists() && !tmp.path().join("gap").exists(), "nothing published");

        let mut writer = fresh("again");
        assert!(writer.declare(&layout).unwrap_err().to_string().contains("declared once"));
        let mut writer = CheckpointWriter::create(tmp.path().join("twice"), WriterOptions::default()).unwrap();
        let doubled: Vec<TensorLayout> = layout.iter().chain(&layout[..1]).cloned().collect();
        assert!(writer.declare(&doubled).unwrap_err().to_string().contains("declared twice"));
        assert!(!writer.tmp_dir().exists());
    }

    #[test]
    fn nothing_is_written_or_published_before_the_declaration() {
        let tmp = tempfile::tempdir().unwrap();
        let mut writer = CheckpointWriter::create(tmp.path().join("early"), WriterOptions::default()).unwrap();
        let error = writer.write("w", Dtype::U8, &[2], &[0, 1]).unwrap_err();
        assert!(error.to_string().contains("w was not declared"), "{error}");
        assert!(!writer.tmp_dir().exists());
        let mut writer = CheckpointWriter::create(tmp.path().join("undeclared"), WriterOptions::default()).unwrap();
        writer.write_file("config.json", b"{}").unwrap();
        let tmp_dir = writer.tmp_dir().to_path_buf();
        let error = writer.finish().unwrap_err();
        assert!(error.to_string().contains("never declared"), "{error}");
        assert!(!tmp_dir.exists() && !tmp.path().join("undeclared").exists());
    }
}
