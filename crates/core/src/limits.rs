//! Size limits on untrusted input and the bounded reader that enforces them. Every limit is far above what a
//! real checkpoint needs, and is checked before the file is read, so a corrupt or hostile file fails with a
//! coded error instead of exhausting memory.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Largest safetensors header accepted (the safetensors format's own limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;
/// Most dimensions a tensor may have; real tensors have at most a handful.
pub const MAX_RANK: usize = 64;
/// Largest `model.safetensors.index.json` accepted (the largest released ones are about 10 MB).
pub const MAX_INDEX_BYTES: u64 = 100_000_000;
/// Largest `config.json` (and other small JSON files of a model directory) accepted.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Largest `tokenizer.json` accepted (the largest released ones are about 35 MB).
pub const MAX_TOKENIZER_BYTES: u64 = 512 << 20;
/// Largest calibration document (one JSONL line, or one paragraph of a text file). A model needs only
/// `samples × seq_len` tokens, and the tokenizer's working memory grows with the document.
pub const MAX_DOCUMENT_BYTES: usize = 16 << 20;

/// Reads a small text file of the model directory. One larger than `limit` bytes is refused before it is
/// read, and so is anything that is not a regular file (see [`open_regular`]). Those refusals and text that
/// is not UTF-8 become the caller's coded error, built by `invalid` from a message.
pub fn read_small_text(path: &Path, limit: u64, invalid: impl Fn(String) -> Error) -> Result<String> {
    let too_large = |size: u64| {
        invalid(format!("the file is {}, more than the {} accepted for it", describe_size(size), describe_size(limit)))
    };
    let file = open_regular(path)?;
    let metadata = file.metadata().with_path(path)?;
    if metadata.len() > limit {
        return Err(too_large(metadata.len()));
    }
    // The file may grow between the check and the read: never read past the limit.
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes).with_path(path)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| invalid(format!("not UTF-8 text: {}", e.utf8_error())))
}

/// Opens `path` (links followed) for reading if it is a regular file. Anything else is refused without
/// waiting: it is opened non-blocking, so a FIFO with no writer cannot hang the open, and checked on the
/// descriptor itself, so it cannot be swapped between a check and the open.
pub fn open_regular(path: &Path) -> Result<File> {
    let mut options = File::options();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).with_path(path)?;
    let metadata = file.metadata().with_path(path)?;
    if !metadata.is_file() {
        return Err(not_a_regular_file(path));
    }
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // Reads of a regular file never return EAGAIN, but the flag goes anyway, for a plain descriptor.
        // SAFETY: fcntl on a descriptor this function owns, reading and setting its status flags only.
        unsafe {
            let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
            }
        }
    }
    Ok(file)
}

/// The error for a path that exists but is a directory, FIFO, socket or device, saying which (and where a
/// symbolic link leads).
pub fn not_a_regular_file(path: &Path) -> Error {
    let kind = std::fs::metadata(path).map_or("not readable", |metadata| {
        let file_type = metadata.file_type();
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if file_type.is_fifo() {
                return "a FIFO (named pipe)";
            }
            if file_type.is_char_device() || file_type.is_block_device() {
                return "a device";
            }
            if file_type.is_socket() {
                return "a socket";
            }
        }
        if file_type.is_dir() {
            "a directory"
        } else {
            "not a file"
        }
    });
    let link = std::fs::read_link(path).map(|target| format!(" (a link to {})", target.display())).unwrap_or_default();
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("is {kind}{link}, not a regular file")),
    }
}

/// `bytes` in the unit a limit is stated in, for messages.
pub fn describe_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    } else {
        format!("{bytes} bytes")
    }
}
