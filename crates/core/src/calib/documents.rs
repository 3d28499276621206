//! Calibration documents, read one at a time from any source:
//! - a JSONL file: one JSON object per line, `{"text": …}` or `{"messages": [ … ]}` (a conversation);
//!   blank lines are skipped;
//! - a JSON file: an array whose items are strings, `{"text": …}` or `{"messages": […]}` objects, or
//!   conversations (arrays of messages);
//! - a plain UTF-8 text file, split into documents on blank (or whitespace-only) lines, the lines of one
//!   document joined with `\n`;
//! - documents given in memory: strings and conversations.
//!
//! Conversations are rendered to text with the model's chat template (see [`super::chat`]). One document may
//! hold at most [`MAX_DOCUMENT_BYTES`] (16 MiB); a longer one is an error found before it is read whole.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::chat::ChatTemplate;
use crate::error::{Error, IoContext, Result};
use crate::limits::{describe_size, open_regular, read_small_text, MAX_DOCUMENT_BYTES};

/// One calibration document: text, or a conversation (an array of messages with `role` and `content`).
#[derive(Debug, Clone, PartialEq, Deserialize, ts_rs::TS)]
#[serde(untagged)]
pub enum Document {
    Text(String),
    Conversation(#[ts(type = "Array<Record<string, unknown>>")] Vec<serde_json::Map<String, serde_json::Value>>),
}

/// Largest JSON calibration file accepted: it is parsed whole (JSONL is read line by line, with no limit).
pub const MAX_JSON_FILE_BYTES: u64 = 1 << 30;

/// The documents of one source, in order.
pub struct DocumentReader<'a> {
    kind: Kind<'a>,
    /// What the documents come from, for messages (a path, or "calibration documents").
    input: String,
    model_dir: PathBuf,
    chat: Option<ChatTemplate>,
}

enum Kind<'a> {
    Lines(Lines),
    List { documents: Cow<'a, [Document]>, next: usize },
}

#[derive(Debug, Clone, Copy)]
enum LineFormat {
    Jsonl,
    Text,
}

impl<'a> DocumentReader<'a> {
    /// Documents of a JSONL file.
    pub fn jsonl(model_dir: &Path, path: &Path) -> Result<Self> {
        Ok(Self::new(model_dir, path.display().to_string(), Kind::Lines(Lines::open(path, LineFormat::Jsonl)?)))
    }

    /// Documents of a plain text file.
    pub fn text(model_dir: &Path, path: &Path) -> Result<Self> {
        Ok(Self::new(model_dir, path.display().to_string(), Kind::Lines(Lines::open(path, LineFormat::Text)?)))
    }

    /// Documents of a JSON file (read whole; at most [`MAX_JSON_FILE_BYTES`]).
    pub fn json(model_dir: &Path, path: &Path) -> Result<Self> {
        let input = path.display().to_string();
        let invalid = |message: String| invalid(&input, "the file", message);
        let text = read_small_text(path, MAX_JSON_FILE_BYTES, |m| invalid(format!("{m}; use JSONL for larger data")))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        let serde_json::Value::Array(items) = value else {
            return Err(invalid(
                "expected a JSON array of documents (strings, {\"text\": …} or {\"messages\": […]})".into(),
            ));
        };
        let documents = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| document_of(item).map_err(|m| self::invalid(&input, &format!("item {index}"), m)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::new(model_dir, input, Kind::List { documents: Cow::Owned(documents), next: 0 }))
    }

    /// Documents given in memory.
    pub fn memory(model_dir: &Path, documents: &'a [Document]) -> Self {
        Self::new(
            model_dir,
            "calibration documents".into(),
            Kind::List { documents: Cow::Borrowed(documents), next: 0 },
        )
    }

    fn new(model_dir: &Path, input: String, kind: Kind<'a>) -> Self {
        DocumentReader { kind, input, model_dir: model_dir.to_path_buf(), chat: None }
    }

    /// What the documents come from.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// The next document as text (a conversation rendered with the chat template), or `None` at the end.
    pub fn next_text(&mut self) -> Result<Option<String>> {
        let (document, place) = match &mut self.kind {
            Kind::Lines(lines) => match lines.next_document()? {
                Some(document) => (document, format!("line {}", lines.line)),
                None => return Ok(None),
            },
            Kind::List { documents, next } => match documents.get(*next) {
                Some(document) => {
                    *next += 1;
                    (document.clone(), format!("document {}", *next - 1))
                }
                None => return Ok(None),
            },
        };
        match document {
            Document::Text(text) => Ok(Some(text)),
            Document::Conversation(messages) => {
                if self.chat.is_none() {
                    self.chat = Some(ChatTemplate::load(&self.model_dir)?);
                }
                let Some(chat) = &self.chat else { return Err(Error::internal("no chat template")) };
                let input = &self.input;
                let conversation =
                    serde_json::Value::Array(messages.into_iter().map(serde_json::Value::Object).collect());
                let text = chat.render(&conversation, &|message| invalid(input, &place, message))?;
                if text.len() > MAX_DOCUMENT_BYTES {
                    return Err(invalid(input, &place, too_long("rendered conversation")));
                }
                Ok(Some(text))
            }
        }
    }
}

/// A document of a JSON file or a JSONL line: a string, `{"text": …}`, `{"messages": […]}` or a conversation.
fn document_of(value: serde_json::Value) -> std::result::Result<Document, String> {
    let expected = "expected a string, a JSON object with a string field \"text\" or an array \"messages\", or a \
                    conversation (an array of messages)";
    match value {
        serde_json::Value::String(text) => Ok(Document::Text(text)),
        serde_json::Value::Object(mut object) => match (object.remove("text"), object.remove("messages")) {
            (Some(serde_json::Value::String(text)), _) => Ok(Document::Text(text)),
            (Some(_), _) => Err("field \"text\" is not a string".into()),
            (None, Some(messages)) => {
                conversation_of(messages).ok_or_else(|| "field \"messages\" is not an array of message objects".into())
            }
            (None, None) => Err(expected.into()),
        },
        array @ serde_json::Value::Array(_) => conversation_of(array).ok_or_else(|| expected.into()),
        _ => Err(expected.into()),
    }
}

fn conversation_of(value: serde_json::Value) -> Option<Document> {
    let serde_json::Value::Array(items) = value else { return None };
    let messages = items
        .into_iter()
        .map(|item| match item {
            serde_json::Value::Object(message) => Some(message),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Document::Conversation(messages))
}

fn invalid(input: &str, place: &str, message: String) -> Error {
    Error::CalibrationInvalid { input: input.to_string(), place: place.to_string(), message }
}

fn too_long(what: &str) -> String {
    let limit = describe_size(MAX_DOCUMENT_BYTES as u64);
    format!(
        "{what} is longer than {limit}, the most one calibration document may hold; split it into smaller documents"
    )
}

/// A text or JSONL file read line by line, counting 1-based lines for error messages.
struct Lines {
    reader: BufReader<File>,
    path: PathBuf,
    format: LineFormat,
    line: usize,
    buffer: Vec<u8>,
}

impl Lines {
    fn open(path: &Path, format: LineFormat) -> Result<Self> {
        let file = open_regular(path)?;
        Ok(Lines { reader: BufReader::new(file), path: path.to_path_buf(), format, line: 0, buffer: Vec::new() })
    }

    fn next_document(&mut self) -> Result<Option<Document>> {
        match self.format {
            LineFormat::Jsonl => self.next_jsonl(),
            LineFormat::Text => Ok(self.next_paragraph()?.map(Document::Text)),
        }
    }

    /// The document of the next non-blank line.
    fn next_jsonl(&mut self) -> Result<Option<Document>> {
        while let Some(line) = self.next_line()? {
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value =
                serde_json::from_str(&line).map_err(|error| self.invalid(format!("not valid JSON: {error}")))?;
            if !value.is_object() {
                return Err(
                    self.invalid("expected a JSON object with a string field \"text\" or an array \"messages\"".into())
                );
            }
            return document_of(value).map(Some).map_err(|message| self.invalid(message));
        }
        Ok(None)
    }

    /// The next run of non-blank lines, joined with `\n`.
    fn next_paragraph(&mut self) -> Result<Option<String>> {
        let mut paragraph: Option<String> = None;
        while let Some(line) = self.next_line()? {
            if line.trim().is_empty() {
                if paragraph.is_some() {
                    break;
                }
                continue;
            }
            match paragraph.as_mut() {
                Some(text) if text.len() + 1 + line.len() > MAX_DOCUMENT_BYTES => {
                    return Err(self.invalid(too_long("paragraph")))
                }
                Some(text) => {
                    text.push('\n');
                    text.push_str(&line);
                }
                None => paragraph = Some(line),
            }
        }
        Ok(paragraph)
    }

    /// The next line without its `\n` / `\r\n`, or `None` at the end of the file. A line longer than
    /// [`MAX_DOCUMENT_BYTES`] is an error, found before more of it is read.
    fn next_line(&mut self) -> Result<Option<String>> {
        self.buffer.clear();
        let limit = MAX_DOCUMENT_BYTES as u64 + 1;
        let read = (&mut self.reader).take(limit).read_until(b'\n', &mut self.buffer).with_path(&self.path)?;
        if read == 0 {
            return Ok(None);
        }
        self.line += 1;
        if self.buffer.len() > MAX_DOCUMENT_BYTES && self.buffer.last() != Some(&b'\n') {
            return Err(self.invalid(too_long("line")));
        }
        if self.buffer.last() == Some(&b'\n') {
            self.buffer.pop();
            if self.buffer.last() == Some(&b'\r') {
                self.buffer.pop();
            }
        }
        match std::str::from_utf8(&self.buffer) {
            Ok(line) => Ok(Some(line.to_string())),
            Err(error) => Err(self.invalid(format!("not valid UTF-8: {error}"))),
        }
    }

    fn invalid(&self, message: String) -> Error {
        invalid(&self.path.display().to_string(), &format!("line {}", self.line), message)
    }
}
