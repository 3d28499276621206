//! Chat conversations as calibration documents: each conversation is rendered to text with the model's chat
//! template, as transformers' `apply_chat_template(messages, tokenize=False, add_generation_prompt=False)`
//! does, and the text is then tokenized like any other document.
//!
//! The template is looked up where transformers 5 keeps it: `chat_template.jinja`, then
//! `chat_template.json` (`{"chat_template": …}`), then `chat_template` in `tokenizer_config.json` (a string,
//! or a list of named templates, of which `default` is used). It sees `messages`, `add_generation_prompt`,
//! the special tokens of `tokenizer_config.json` (`bos_token`, `eos_token`, `pad_token`, `unk_token`), and the
//! helpers chat templates call: `raise_exception(message)`, `strftime_now(format)`, Python string and dict
//! methods (`strip`, `startswith`, `items` …) and the `tojson` filter.

use std::path::{Path, PathBuf};

use minijinja::{Environment, ErrorKind, Value};

use super::data::{read_optional_json, token_text};
use crate::error::{Error, Result};
use crate::limits::read_small_text;

/// A model's chat template, ready to render conversations.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Where the template was read from, for error messages.
    source: PathBuf,
    special_tokens: Vec<(&'static str, String)>,
}

/// Largest chat template file accepted (real ones are a few KiB).
const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

impl ChatTemplate {
    /// Reads the chat template of the model in `model_dir`.
    ///
    /// Errors: `E_TOKENIZER_MISSING` when the model has none, `E_TOKENIZER_INVALID` for one that does not parse.
    pub fn load(model_dir: &Path) -> Result<Self> {
        let config_path = model_dir.join("tokenizer_config.json");
        let config = read_optional_json(&config_path, true)?;
        let (template, source) = find_template(model_dir, config.as_ref(), &config_path)?;
        let invalid = |message: String| Error::TokenizerInvalid { path: source.clone(), message };
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned("chat", template)
            .map_err(|error| invalid(format!("the chat template does not parse: {error}")))?;
        let special_tokens = ["bos_token", "eos_token", "pad_token", "unk_token"]
            .into_iter()
            .filter_map(|name| Some((name, token_text(config.as_ref()?.get(name)?)?.to_string())))
            .collect();
        Ok(ChatTemplate { env, source, special_tokens })
    }

    /// The text of one conversation (a JSON array of messages, each with `role` and `content`); `what` names
    /// it in errors.
    pub fn render(&self, conversation: &serde_json::Value, what: &dyn Fn(String) -> Error) -> Result<String> {
        if !conversation.as_array().is_some_and(|messages| messages.iter().all(serde_json::Value::is_object)) {
            return Err(what(
                "expected a conversation: an array of messages such as {\"role\": …, \"content\": …}".into(),
            ));
        }
        let template = self.env.get_template("chat").map_err(|e| Error::internal(e.to_string()))?;
        let mut context: Vec<(&str, Value)> = vec![
            ("messages", Value::from(minijinja::value::Serde(conversation))),
            ("add_generation_prompt", Value::from(false)),
        ];
        context.extend(self.special_tokens.iter().map(|(name, text)| (*name, Value::from(text.as_str()))));
        template
            .render(Value::from_pairs(context))
            .map_err(|error| what(format!("the chat template of {} failed on it: {error}", self.source.display())))
    }
}

/// The template text and the file it came from.
fn find_template(
    model_dir: &Path,
    config: Option<&serde_json::Value>,
    config_path: &Path,
) -> Result<(String, PathBuf)> {
    let jinja = model_dir.join("chat_template.jinja");
    if jinja.exists() {
        let invalid = |message| Error::TokenizerInvalid { path: jinja.clone(), message };
        return Ok((read_small_text(&jinja, MAX_TEMPLATE_BYTES, invalid)?, jinja));
    }
    let json_path = model_dir.join("chat_template.json");
    if let Some(json) = read_optional_json(&json_path, true)? {
        if let Some(template) = json.get("chat_template").and_then(named_template) {
            return Ok((template, json_path));
        }
    }
    match config.and_then(|c| c.get("chat_template")).and_then(named_template) {
        Some(template) => Ok((template, config_path.to_path_buf())),
        None => Err(Error::TokenizerInvalid {
            path: model_dir.to_path_buf(),
            message: "the model has no chat template (chat_template.jinja, chat_template.json or chat_template in \
                      tokenizer_config.json), so conversations cannot be rendered; give texts instead"
                .into(),
        }),
    }
}

/// A template given as a string, or the `default` one of a list of `{name, template}`.
fn named_template(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Array(named) => named
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => None,
    }
}

/// Today's date (UTC) in `format`, for templates that state it (`%Y`, `%m`, `%d`, `%b`, `%B`, `%%`).
fn strftime_now(format: String) -> std::result::Result<String, minijinja::Error> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(&month_name[..3]),
            Some('%') => out.push('%'),
            other => {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("strftime_now: %{} is not supported", other.map(String::from).unwrap_or_default()),
                ))
            }
        }
    }
    Ok(out)
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_791), (2026, 12, 4));
    }
}
