//! The nats-server config file format, and its mapping onto [`Options`](crate::Options).
//!
//! The format is a relaxed JSON: `key = value`, `key: value` or `key value`; maps `{}` (the top
//! level may be wrapped in one too), arrays `[]`; entries end at a newline, `;` or `,`; comments
//! start with `#` or `//`. Values are bare, `"double"` (with escapes) or `'single'` quoted
//! strings, multi-line `( ... )` blocks, integers with optional size suffixes (`k`/`m`/`g`... are
//! powers of 1000, `kb`/`ki`/`kib`... powers of 1024), floats, booleans
//! (`true|false|yes|no|on|off`, any case), Zulu datetimes, `$VAR` references (resolved from the
//! enclosing maps, then from the environment) and `include path` directives.
//!
//! Parsing ([`parse_file`], [`parse_str`]) only builds a [`Map`] of positioned [`Value`]s;
//! [`Options::from_conf`](crate::Options::from_conf) then interprets the keys, so both steps
//! report errors as `file:line:col: message`.

mod duration;
mod load;
mod parser;
mod render;
mod value;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

pub use duration::{format_duration, parse_duration};
pub use load::{ConfWarning, LoadedConfig};
pub use value::{Entry, Map, Value, ValueKind};

/// Where a value or key was written: file (or origin name), 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub file: Arc<str>,
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A config file that cannot be read, parsed or mapped onto options.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    /// The text is not valid config syntax.
    #[error("{pos}: {message}")]
    Syntax { pos: Pos, message: String },
    /// A key holds a value of the wrong type or an invalid value.
    #[error("{pos}: {key}: {message}")]
    Invalid {
        pos: Pos,
        key: String,
        message: String,
    },
    /// A key nats-server does not know either (or not at this place).
    #[error("{pos}: unknown key '{key}'")]
    UnknownKey { pos: Pos, key: String },
    /// A nats-server feature midge does not implement yet. The parsed value is kept so that the
    /// caller can show or forward it, and so that adding the feature only needs a mapping.
    #[error("{}:{}: {key}: not supported by midge yet", pos.file, pos.line)]
    Unsupported {
        pos: Pos,
        key: String,
        value: Box<Value>,
    },
    /// `$NAME` is neither an earlier key of an enclosing map nor an environment variable.
    #[error("{pos}: variable '${name}' is not defined")]
    UndefinedVariable { pos: Pos, name: String },
    /// A file (the config itself or an include) cannot be read.
    #[error("{}: cannot read '{path}': {source}", pos.as_ref().map_or_else(|| path.clone(), |p| p.to_string()))]
    Io {
        /// The `include` directive, or `None` for the top-level file.
        pos: Option<Pos>,
        path: String,
        source: std::io::Error,
    },
    /// The options are valid one by one but not together.
    #[error("{file}: {source}")]
    Options {
        file: String,
        source: crate::options::OptionsError,
    },
    /// Several independent errors, reported together so a user can fix them in one go.
    #[error("{}", join_errors(.0))]
    Many(Vec<ConfError>),
}

fn join_errors(errors: &[ConfError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfError {
    /// Folds a list of errors into one, or `None` when the list is empty.
    pub(crate) fn collect(mut errors: Vec<ConfError>) -> Option<ConfError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(ConfError::Many(errors)),
        }
    }

    /// The individual errors (one, unless this is [`ConfError::Many`]).
    pub fn errors(&self) -> Vec<&ConfError> {
        match self {
            ConfError::Many(all) => all.iter().collect(),
            other => vec![other],
        }
    }
}

/// Parses a config file. Includes are resolved relative to the file's directory.
pub fn parse_file(path: impl AsRef<Path>) -> Result<Map, ConfError> {
    parser::parse_root_file(path.as_ref())
}

/// Parses a config file like [`parse_file`], and also returns every file it included
/// (directly or through other includes), as the `include` directives named them joined
/// onto the including file's directory. The config watcher watches these too.
pub fn parse_file_with_includes(
    path: impl AsRef<Path>,
) -> Result<(Map, Vec<std::path::PathBuf>), ConfError> {
    parser::parse_root_file_with_includes(path.as_ref())
}

/// Parses config text; `origin_name` names it in positions (and, when it is a path, includes are
/// resolved relative to its directory).
pub fn parse_str(text: &str, origin_name: &str) -> Result<Map, ConfError> {
    parser::parse_root_text(text, origin_name)
}
