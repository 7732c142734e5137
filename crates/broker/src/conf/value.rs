//! Parsed config values, each with the position it was written at.

use super::{ConfError, Pos};

/// One parsed value.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub kind: ValueKind,
    pub pos: Pos,
}

/// What a value is. Integers already have their size suffix applied (`1k` is 1000).
#[derive(Debug, Clone, PartialEq)]
pub enum ValueKind {
    String(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    /// An ISO 8601 Zulu timestamp (`2024-01-02T03:04:05Z`), kept as written.
    Datetime(String),
    Array(Vec<Value>),
    Map(Map),
}

impl ValueKind {
    /// The type's name as used in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            ValueKind::String(_) => "string",
            ValueKind::Integer(_) => "integer",
            ValueKind::Float(_) => "float",
            ValueKind::Bool(_) => "boolean",
            ValueKind::Datetime(_) => "datetime",
            ValueKind::Array(_) => "array",
            ValueKind::Map(_) => "map",
        }
    }
}

/// One `key = value` of a map.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Value,
    /// The entry was referenced as `$key`. nats-server then does not report it as an unknown
    /// key, which is what lets a file define variables next to its options.
    pub used_as_variable: bool,
}

/// Map entries in the order they were first written. A repeated key replaces the earlier value
/// (as nats-server does) but keeps its place.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Map {
    entries: Vec<Entry>,
}

impl Map {
    pub fn new() -> Self {
        Map::default()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry for `key` (exact case).
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.key == key)
    }

    /// Sets `key`, replacing an earlier value of the same key.
    pub fn insert(&mut self, key: String, key_pos: Pos, value: Value) {
        match self.get_mut(&key) {
            Some(entry) => {
                entry.key_pos = key_pos;
                entry.value = value;
            }
            None => self.entries.push(Entry {
                key,
                key_pos,
                value,
                used_as_variable: false,
            }),
        }
    }
}

/// Typed views of a value that report a wrong type as an error naming `key`.
impl Value {
    fn type_error(&self, key: &str, expected: &str) -> ConfError {
        ConfError::Invalid {
            pos: self.pos.clone(),
            key: key.to_string(),
            message: format!("expected {expected}, got {}", self.kind.type_name()),
        }
    }

    /// An error about this value for `key`.
    pub fn invalid(&self, key: &str, message: impl Into<String>) -> ConfError {
        ConfError::Invalid {
            pos: self.pos.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    pub fn as_str(&self, key: &str) -> Result<&str, ConfError> {
        match &self.kind {
            ValueKind::String(s) => Ok(s),
            _ => Err(self.type_error(key, "a string")),
        }
    }

    pub fn as_bool(&self, key: &str) -> Result<bool, ConfError> {
        match self.kind {
            ValueKind::Bool(b) => Ok(b),
            _ => Err(self.type_error(key, "a boolean")),
        }
    }

    pub fn as_i64(&self, key: &str) -> Result<i64, ConfError> {
        match self.kind {
            ValueKind::Integer(n) => Ok(n),
            _ => Err(self.type_error(key, "an integer")),
        }
    }

    /// A non-negative integer that fits `T`.
    pub fn as_unsigned<T: TryFrom<i64>>(&self, key: &str) -> Result<T, ConfError> {
        let n = self.as_i64(key)?;
        if n < 0 {
            return Err(self.invalid(key, format!("must not be negative, got {n}")));
        }
        T::try_from(n).map_err(|_| self.invalid(key, format!("value {n} is too big")))
    }

    pub fn as_map(&self, key: &str) -> Result<&Map, ConfError> {
        match &self.kind {
            ValueKind::Map(m) => Ok(m),
            _ => Err(self.type_error(key, "a map")),
        }
    }

    pub fn as_array(&self, key: &str) -> Result<&[Value], ConfError> {
        match &self.kind {
            ValueKind::Array(a) => Ok(a),
            _ => Err(self.type_error(key, "an array")),
        }
    }
}
