//! A recursive-descent reader of the nats-server config syntax.
//!
//! It follows nats-server's lexer (conf/lex.go) where that matters for real files: what ends a
//! bare string, when `123abc` is a string rather than a number, `2m` being the integer 2000000,
//! `$2a$...` (bcrypt hashes) not being variables, environment values being parsed as config
//! values. It is stricter where nats-server silently does something surprising (an unknown size
//! suffix is an error rather than a dropped key) and gives every error a position.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use super::value::{Map, Value, ValueKind};
use super::{ConfError, Pos};

/// Deeper nesting is certainly a mistake; the limit keeps recursion off the stack's edge.
const MAX_NESTING: usize = 64;
/// Includes have no cycle detection in nats-server (it recurses until it crashes). A cycle is
/// reported as one; the depth limit bounds a long chain of distinct files.
const MAX_INCLUDE_DEPTH: usize = 16;
/// Environment variables whose values refer to further environment variables.
const MAX_VARIABLE_DEPTH: usize = 16;
/// What variable references may copy in all, counted by [`weight`]. A variable repeated in an
/// array that is itself repeated (`b: [$a, $a, ...]`, `c: [$b, $b, ...]`) grows
/// exponentially; real files stay far below this.
const MAX_EXPANSION: usize = 16 << 20;

/// What one parse shares with the parsers of its includes and environment variables.
struct Shared {
    /// The files being read, outermost first, canonicalised: an include of one of them is a
    /// cycle.
    includes: Vec<PathBuf>,
    /// [`weight`] of everything variable references copied so far.
    expanded: Cell<usize>,
    /// Every file included so far, as the directive resolved it (not canonicalised: a
    /// watcher must look at the path, whose symlinks a Secret volume update repoints).
    included: Rc<RefCell<Vec<PathBuf>>>,
}

impl Shared {
    fn new(origin: Option<&Path>) -> Shared {
        Shared {
            includes: origin
                .and_then(|p| p.canonicalize().ok())
                .into_iter()
                .collect(),
            expanded: Cell::new(0),
            included: Rc::default(),
        }
    }
}

/// Parses a top-level file.
pub(super) fn parse_root_file(path: &Path) -> Result<Map, ConfError> {
    parse_root_file_with_includes(path).map(|(map, _)| map)
}

/// Parses a top-level file; also returns the files it included, directly or not, in the
/// order they were read.
pub(super) fn parse_root_file_with_includes(path: &Path) -> Result<(Map, Vec<PathBuf>), ConfError> {
    let text = read(path, None)?;
    let shared = Shared::new(Some(path));
    let map = parse_text_with(&text, &path.display().to_string(), &shared)?;
    let included = shared.included.take();
    Ok((map, included))
}

/// Parses top-level text; `origin` names it, and includes are relative to its directory.
pub(super) fn parse_root_text(text: &str, origin: &str) -> Result<Map, ConfError> {
    let shared = Shared::new(Some(Path::new(origin)));
    parse_text_with(text, origin, &shared)
}

fn read(path: &Path, include_pos: Option<&Pos>) -> Result<String, ConfError> {
    std::fs::read_to_string(path).map_err(|source| ConfError::Io {
        pos: include_pos.cloned(),
        path: path.display().to_string(),
        source,
    })
}

fn parse_text_with(text: &str, origin: &str, shared: &Shared) -> Result<Map, ConfError> {
    let base_dir = match Path::new(origin).parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Parser::new(text, origin, base_dir, shared, Vec::new()).parse_document()
}

struct Parser<'a> {
    src: &'a str,
    shared: &'a Shared,
    /// Byte offset of the next char.
    offset: usize,
    line: u32,
    col: u32,
    file: Arc<str>,
    base_dir: PathBuf,
    /// Maps being built, outermost first: `$VAR` looks through them from the innermost.
    scopes: Vec<Map>,
    /// Environment variables being expanded, to report `A=$B`, `B=$A` instead of looping.
    env_in_progress: Vec<String>,
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_newline(c: char) -> bool {
    c == '\n' || c == '\r'
}

/// Ends a bare string or number.
fn ends_token(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | ';' | '}' | ']')
}

fn show(c: char) -> String {
    match c {
        '\n' => "\\n".into(),
        '\r' => "\\r".into(),
        '\t' => "\\t".into(),
        c => c.to_string(),
    }
}

impl<'a> Parser<'a> {
    fn new(
        src: &'a str,
        origin: &str,
        base_dir: PathBuf,
        shared: &'a Shared,
        env_in_progress: Vec<String>,
    ) -> Self {
        Parser {
            src,
            shared,
            offset: 0,
            line: 1,
            col: 1,
            file: Arc::from(origin),
            base_dir,
            scopes: Vec::new(),
            env_in_progress,
        }
    }

    fn peek(&self) -> Option<char> {
        self.src[self.offset..].chars().next()
    }

    fn peek2(&self) -> Option<char> {
        let mut it = self.src[self.offset..].chars();
        it.next();
        it.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.offset += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn here(&self) -> Pos {
        Pos {
            file: self.file.clone(),
            line: self.line,
            col: self.col,
        }
    }

    fn syntax(&self, pos: Pos, message: impl Into<String>) -> ConfError {
        ConfError::Syntax {
            pos,
            message: message.into(),
        }
    }

    fn at_comment(&self) -> bool {
        match self.peek() {
            Some('#') => true,
            Some('/') => self.peek2() == Some('/'),
            _ => false,
        }
    }

    fn skip_comment(&mut self) {
        while let Some(c) = self.peek() {
            if is_newline(c) {
                break;
            }
            self.bump();
        }
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(is_space) {
            self.bump();
        }
    }

    /// Skips whitespace, newlines, comments and (between entries) stray separators.
    fn skip_blank(&mut self, separators: bool) {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some(';' | ',') if separators => {
                    self.bump();
                }
                Some(_) if self.at_comment() => self.skip_comment(),
                _ => break,
            }
        }
    }

    fn parse_document(mut self) -> Result<Map, ConfError> {
        self.skip_blank(false);
        // nats-server lets the whole file be wrapped in braces.
        if self.peek() == Some('{') {
            let open = self.here();
            self.bump();
            let map = self.parse_body(Some('}'), &open, 0)?;
            self.skip_blank(true);
            if let Some(c) = self.peek() {
                return Err(self.syntax(
                    self.here(),
                    format!("unexpected '{}' after the closing '}}'", show(c)),
                ));
            }
            return Ok(map);
        }
        self.parse_body(None, &self.here(), 0)
    }

    /// Entries up to `closer` (or the end of the text at the top level).
    fn parse_body(
        &mut self,
        closer: Option<char>,
        open: &Pos,
        depth: usize,
    ) -> Result<Map, ConfError> {
        self.scopes.push(Map::new());
        let result = self.parse_entries(closer, open, depth);
        let map = self.scopes.pop().unwrap_or_default();
        result.map(|()| map)
    }

    fn parse_entries(
        &mut self,
        closer: Option<char>,
        open: &Pos,
        depth: usize,
    ) -> Result<(), ConfError> {
        loop {
            self.skip_blank(true);
            match self.peek() {
                None => {
                    return match closer {
                        Some(_) => Err(self.syntax(open.clone(), "unterminated map: missing '}'")),
                        None => Ok(()),
                    };
                }
                Some(c) if Some(c) == closer => {
                    self.bump();
                    return Ok(());
                }
                Some(c @ ('}' | ']' | '=' | ':' | '{' | '[')) => {
                    return Err(self.syntax(self.here(), format!("expected a key, found '{c}'")));
                }
                Some(_) => self.parse_entry(closer, depth)?,
            }
        }
    }

    fn parse_entry(&mut self, closer: Option<char>, depth: usize) -> Result<(), ConfError> {
        let key_pos = self.here();
        let (key, quoted) = self.parse_key()?;
        if !quoted && key.eq_ignore_ascii_case("include") && self.peek().is_some_and(is_space) {
            self.parse_include(key_pos)?;
            return self.value_end(closer, "include");
        }
        self.skip_spaces();
        if matches!(self.peek(), Some('=' | ':')) {
            self.bump();
            self.skip_spaces();
        }
        match self.peek() {
            None | Some('\n' | '\r' | ';' | ',') => {
                return Err(ConfError::Invalid {
                    pos: key_pos,
                    key,
                    message: "missing value".into(),
                });
            }
            Some(c) if Some(c) == closer => {
                return Err(ConfError::Invalid {
                    pos: key_pos,
                    key,
                    message: "missing value".into(),
                });
            }
            _ => {}
        }
        let value = self.parse_value(depth + 1)?;
        self.value_end(closer, &key)?;
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(key, key_pos, value);
        }
        Ok(())
    }

    /// Returns the key and whether it was quoted (a quoted `include` is a plain key).
    fn parse_key(&mut self) -> Result<(String, bool), ConfError> {
        let start = self.here();
        if let Some(q @ ('"' | '\'')) = self.peek() {
            self.bump();
            let begin = self.offset;
            loop {
                match self.peek() {
                    None => return Err(self.syntax(start, "unterminated quoted key")),
                    Some(c) if c == q => break,
                    Some(_) => {
                        self.bump();
                    }
                }
            }
            let key = self.src[begin..self.offset].to_string();
            self.bump();
            return Ok((key, true));
        }
        let begin = self.offset;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || matches!(c, '=' | ':' | '{' | '[' | '}' | ';' | ',') {
                break;
            }
            self.bump();
        }
        Ok((self.src[begin..self.offset].to_string(), false))
    }

    fn parse_include(&mut self, pos: Pos) -> Result<(), ConfError> {
        self.skip_spaces();
        let path = match self.peek() {
            Some(q @ ('"' | '\'')) => {
                let open = self.here();
                self.bump();
                let begin = self.offset;
                loop {
                    match self.peek() {
                        None => return Err(self.syntax(open, "unterminated include path")),
                        Some(c) if c == q => break,
                        Some(_) => {
                            self.bump();
                        }
                    }
                }
                let path = self.src[begin..self.offset].to_string();
                self.bump();
                path
            }
            _ => {
                let begin = self.offset;
                while self.peek().is_some_and(|c| !ends_token(c)) {
                    self.bump();
                }
                self.src[begin..self.offset].to_string()
            }
        };
        if path.is_empty() || path.starts_with(['{', '[', '(']) {
            return Err(self.syntax(pos, "include needs a file path"));
        }
        let included = self.include_file(&path, &pos)?;
        if let Some(scope) = self.scopes.last_mut() {
            for entry in included.entries() {
                scope.insert(
                    entry.key.clone(),
                    entry.key_pos.clone(),
                    entry.value.clone(),
                );
            }
        }
        Ok(())
    }

    fn include_file(&self, path: &str, pos: &Pos) -> Result<Map, ConfError> {
        let full = self.base_dir.join(path);
        let text = read(&full, Some(pos))?;
        let chain = &self.shared.includes;
        // The file could be read, so it exists; canonicalising can still fail on a race.
        let canonical = full.canonicalize().unwrap_or_else(|_| full.clone());
        if let Some(at) = chain.iter().position(|p| *p == canonical) {
            let cycle: Vec<String> = chain[at..]
                .iter()
                .chain([&canonical])
                .map(|p| p.display().to_string())
                .collect();
            return Err(self.syntax(
                pos.clone(),
                format!(
                    "include '{path}' makes a cycle: {}",
                    cycle.join(" includes ")
                ),
            ));
        }
        if chain.len() > MAX_INCLUDE_DEPTH {
            return Err(self.syntax(
                pos.clone(),
                format!("include '{path}': includes nested more than {MAX_INCLUDE_DEPTH} deep"),
            ));
        }
        let mut includes = chain.clone();
        includes.push(canonical);
        self.shared.included.borrow_mut().push(full.clone());
        let shared = Shared {
            includes,
            expanded: Cell::new(self.shared.expanded.get()),
            included: self.shared.included.clone(),
        };
        let result = parse_text_with(&text, &full.display().to_string(), &shared);
        self.shared.expanded.set(shared.expanded.get());
        result
    }

    /// After a value in a map: only a comment, then a newline, `;`, `,` or the closer.
    fn value_end(&mut self, closer: Option<char>, key: &str) -> Result<(), ConfError> {
        self.skip_spaces();
        match self.peek() {
            None => Ok(()),
            Some('\n' | '\r' | ';' | ',') => {
                self.bump();
                Ok(())
            }
            Some(_) if self.at_comment() => {
                self.skip_comment();
                Ok(())
            }
            Some(c) if Some(c) == closer => Ok(()),
            Some(c) => {
                let close = closer.map_or(String::new(), |c| format!(" or '{c}'"));
                Err(self.syntax(
                    self.here(),
                    format!(
                        "expected a newline, ';', ','{close} after the value of '{key}', found '{}'",
                        show(c)
                    ),
                ))
            }
        }
    }

    fn parse_value(&mut self, depth: usize) -> Result<Value, ConfError> {
        let pos = self.here();
        if depth > MAX_NESTING {
            return Err(self.syntax(pos, format!("values nested more than {MAX_NESTING} deep")));
        }
        let kind = match self.peek() {
            None => return Err(self.syntax(pos, "expected a value, found the end of the text")),
            Some(c) if is_newline(c) => {
                return Err(self.syntax(pos, "expected a value, found a new line"))
            }
            Some('[') => {
                self.bump();
                ValueKind::Array(self.parse_array(&pos, depth)?)
            }
            Some('{') => {
                self.bump();
                ValueKind::Map(self.parse_body(Some('}'), &pos, depth)?)
            }
            Some('"') => {
                self.bump();
                ValueKind::String(self.parse_double_quoted(&pos)?)
            }
            Some('\'') => {
                self.bump();
                ValueKind::String(self.parse_single_quoted(&pos)?)
            }
            Some('(') => {
                self.bump();
                ValueKind::String(self.parse_block(&pos)?)
            }
            Some('.') => return Err(self.syntax(pos, "floats must start with a digit")),
            Some(_) => return self.parse_bare(pos, depth),
        };
        Ok(Value { kind, pos })
    }

    fn parse_array(&mut self, open: &Pos, depth: usize) -> Result<Vec<Value>, ConfError> {
        let mut items = Vec::new();
        loop {
            self.skip_blank(false);
            match self.peek() {
                None => return Err(self.syntax(open.clone(), "unterminated array: missing ']'")),
                Some(']') => {
                    self.bump();
                    return Ok(items);
                }
                Some(',') => return Err(self.syntax(self.here(), "unexpected ',' in array")),
                Some(_) => {}
            }
            items.push(self.parse_value(depth + 1)?);
            self.skip_spaces();
            match self.peek() {
                None => return Err(self.syntax(open.clone(), "unterminated array: missing ']'")),
                Some(']') => {
                    self.bump();
                    return Ok(items);
                }
                Some(',' | '\n' | '\r') => {
                    self.bump();
                }
                Some(_) if self.at_comment() => self.skip_comment(),
                Some(c) => {
                    return Err(self.syntax(
                        self.here(),
                        format!("expected ',' or ']' in array, found '{}'", show(c)),
                    ))
                }
            }
        }
    }

    fn parse_single_quoted(&mut self, open: &Pos) -> Result<String, ConfError> {
        let begin = self.offset;
        loop {
            match self.peek() {
                None => return Err(self.syntax(open.clone(), "unterminated string")),
                Some('\'') => break,
                Some(_) => {
                    self.bump();
                }
            }
        }
        let s = self.src[begin..self.offset].to_string();
        self.bump();
        Ok(s)
    }

    fn parse_double_quoted(&mut self, open: &Pos) -> Result<String, ConfError> {
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.syntax(open.clone(), "unterminated string")),
                Some('"') => {
                    self.bump();
                    break;
                }
                Some('\\') => self.parse_escape(&mut out)?,
                Some(c) => {
                    self.bump();
                    push_char(&mut out, c);
                }
            }
        }
        self.utf8(out, open)
    }

    fn utf8(&self, bytes: Vec<u8>, pos: &Pos) -> Result<String, ConfError> {
        String::from_utf8(bytes)
            .map_err(|_| self.syntax(pos.clone(), "\\x escapes do not form valid UTF-8"))
    }

    /// At a backslash: appends the escaped byte(s). nats-server allows exactly these escapes.
    fn parse_escape(&mut self, out: &mut Vec<u8>) -> Result<(), ConfError> {
        let pos = self.here();
        self.bump();
        let c = self.bump();
        match c {
            Some('t') => out.push(b'\t'),
            Some('n') => out.push(b'\n'),
            Some('r') => out.push(b'\r'),
            Some('"') => out.push(b'"'),
            Some('\\') => out.push(b'\\'),
            Some('x') => {
                let hex: String = [self.bump(), self.bump()].iter().flatten().collect();
                match u8::from_str_radix(&hex, 16) {
                    Ok(b) if hex.len() == 2 => out.push(b),
                    _ => {
                        return Err(self.syntax(pos, "expected two hexadecimal digits after '\\x'"))
                    }
                }
            }
            Some(c) => {
                return Err(self.syntax(
                    pos,
                    format!(
                    "invalid escape '\\{}': only \\xXX, \\t, \\n, \\r, \\\" and \\\\ are allowed",
                    show(c)
                ),
                ))
            }
            None => return Err(self.syntax(pos, "unfinished escape at the end of the text")),
        }
        Ok(())
    }

    /// `( ... )`: raw text up to a line holding only `)`; the last newline is part of it.
    fn parse_block(&mut self, open: &Pos) -> Result<String, ConfError> {
        let begin = self.offset;
        loop {
            match self.bump() {
                None => {
                    return Err(self.syntax(open.clone(), "unterminated block: missing ')' line"))
                }
                Some('\n')
                    if self.peek() == Some(')')
                        && matches!(self.peek2(), None | Some('\n' | '\r')) =>
                {
                    let text = self.src[begin..self.offset].to_string();
                    self.bump();
                    return Ok(text);
                }
                Some(_) => {}
            }
        }
    }

    /// A bare token: number, size, float, IP address, datetime, boolean, variable or string.
    fn parse_bare(&mut self, pos: Pos, depth: usize) -> Result<Value, ConfError> {
        let begin = self.offset;
        let mut unescaped = Vec::new();
        let mut escaped = false;
        while let Some(c) = self.peek() {
            if ends_token(c) {
                break;
            }
            if c == '\\' {
                escaped = true;
                self.parse_escape(&mut unescaped)?;
            } else {
                self.bump();
                push_char(&mut unescaped, c);
            }
        }
        let raw = &self.src[begin..self.offset];
        let kind = if escaped {
            ValueKind::String(self.utf8(unescaped, &pos)?)
        } else if raw.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
            classify_number(raw).map_err(|message| self.syntax(pos.clone(), message))?
        } else if let Some(b) = parse_bool(raw) {
            ValueKind::Bool(b)
        } else if let Some(name) = raw.strip_prefix('$') {
            return self.resolve_variable(name, pos, depth);
        } else {
            ValueKind::String(raw.to_string())
        };
        Ok(Value { kind, pos })
    }

    /// The value of `$name`, referenced where a value `depth` levels deep is expected.
    fn resolve_variable(&mut self, name: &str, pos: Pos, depth: usize) -> Result<Value, ConfError> {
        let value = self.lookup_variable(name, pos)?;
        let (weight, height) = weight(&value.kind);
        if depth + height > MAX_NESTING {
            return Err(self.syntax(
                value.pos,
                format!("variable '${name}' expands to values nested more than {MAX_NESTING} deep"),
            ));
        }
        let expanded = self.shared.expanded.get().saturating_add(weight);
        if expanded > MAX_EXPANSION {
            return Err(self.syntax(
                value.pos,
                format!(
                    "variable '${name}': variables expand to more than {} MiB in all (a variable repeated in one repeated in turn?)",
                    MAX_EXPANSION >> 20
                ),
            ));
        }
        self.shared.expanded.set(expanded);
        Ok(value)
    }

    fn lookup_variable(&mut self, name: &str, pos: Pos) -> Result<Value, ConfError> {
        // Bcrypt hashes start with `$2a$` etc.; nats-server keeps them as strings (it only knows
        // `2a`, the other prefixes are what other bcrypt tools write).
        if ["2a$", "2b$", "2x$", "2y$"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            return Ok(Value {
                kind: ValueKind::String(format!("${name}")),
                pos,
            });
        }
        for scope in self.scopes.iter_mut().rev() {
            if let Some(entry) = scope.get_mut(name) {
                entry.used_as_variable = true;
                let mut value = entry.value.clone();
                value.pos = pos;
                return Ok(value);
            }
        }
        if self.env_in_progress.iter().any(|n| n == name) {
            return Err(self.syntax(pos, format!("variable reference cycle for '${name}'")));
        }
        if self.env_in_progress.len() >= MAX_VARIABLE_DEPTH {
            return Err(self.syntax(
                pos,
                format!(
                    "variable '${name}': environment variables refer to each other more than {MAX_VARIABLE_DEPTH} deep"
                ),
            ));
        }
        let text = match std::env::var(name) {
            Ok(text) => text,
            Err(std::env::VarError::NotPresent) => {
                return Err(ConfError::UndefinedVariable {
                    pos,
                    name: name.to_string(),
                })
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(self.syntax(
                    pos,
                    format!("environment variable '{name}' is not valid UTF-8"),
                ))
            }
        };
        // As nats-server: the environment's text is read as a config value, so PORT=4222 is
        // an integer and a variable may hold a whole array or map.
        let kind = if text.trim().is_empty() {
            ValueKind::String(text)
        } else {
            let mut in_progress = self.env_in_progress.clone();
            in_progress.push(name.to_string());
            let snippet = format!("v={text}");
            let origin = format!("${name} (environment)");
            let sub = Parser::new(
                &snippet,
                &origin,
                self.base_dir.clone(),
                self.shared,
                in_progress,
            );
            let map = sub.parse_document()?;
            match map.entries() {
                [entry] if entry.key == "v" => entry.value.kind.clone(),
                _ => {
                    return Err(self.syntax(
                        pos,
                        format!("environment variable '{name}' does not hold a single value"),
                    ))
                }
            }
        };
        Ok(Value { kind, pos })
    }
}

/// What copying a value costs, roughly in bytes of memory (a node costs about 64), and how
/// many levels deep it is (a scalar is 0). Values are at most [`MAX_NESTING`] deep, which
/// bounds the recursion.
fn weight(kind: &ValueKind) -> (usize, usize) {
    const NODE: usize = 64;
    match kind {
        ValueKind::String(s) | ValueKind::Datetime(s) => (NODE + s.len(), 0),
        ValueKind::Integer(_) | ValueKind::Float(_) | ValueKind::Bool(_) => (NODE, 0),
        ValueKind::Array(items) => items.iter().fold((NODE, 1), |(w, h), item| {
            let (iw, ih) = weight(&item.kind);
            (w.saturating_add(iw), h.max(ih + 1))
        }),
        ValueKind::Map(map) => map.entries().iter().fold((NODE, 1), |(w, h), entry| {
            let (ew, eh) = weight(&entry.value.kind);
            (w.saturating_add(ew + NODE + entry.key.len()), h.max(eh + 1))
        }),
    }
}

fn push_char(out: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Some(true),
        "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Size suffixes: one letter is a power of 1000, with `b`, `i` or `ib` a power of 1024.
fn suffix_multiplier(suffix: &str) -> Option<i64> {
    let lower = suffix.to_ascii_lowercase();
    let mut chars = lower.chars();
    let exponent = match chars.next()? {
        'k' => 1,
        'm' => 2,
        'g' => 3,
        't' => 4,
        'p' => 5,
        'e' => 6,
        _ => return None,
    };
    let base: i64 = match chars.as_str() {
        "" => 1000,
        "b" | "i" | "ib" => 1024,
        _ => return None,
    };
    base.checked_pow(exponent)
}

/// A token that starts with a digit or `-`, classified as nats-server's lexer does.
fn classify_number(raw: &str) -> Result<ValueKind, String> {
    let negative = raw.starts_with('-');
    let body = if negative { &raw[1..] } else { raw };
    let digits = body.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!(
            "invalid number '{raw}': expected a digit after '-'"
        ));
    }
    let (int_part, rest) = body.split_at(digits);
    let not_a_number = || format!("invalid number '{raw}' (quote it to make it a string)");
    let parse_int = |text: &str| -> Result<i64, String> {
        let n: i64 = text
            .parse()
            .map_err(|_| format!("integer '{raw}' is out of range"))?;
        Ok(if negative { -n } else { n })
    };
    if rest.is_empty() {
        return Ok(ValueKind::Integer(parse_int(int_part)?));
    }
    if !negative && digits == 4 && rest.starts_with('-') {
        return parse_datetime(raw).map(|()| ValueKind::Datetime(raw.to_string()));
    }
    if rest.starts_with('-') {
        return Err(format!(
            "invalid datetime '{raw}': use the full Zulu form 2006-01-02T15:04:05Z"
        ));
    }
    if let Some(frac_and_more) = rest.strip_prefix('.') {
        let frac = frac_and_more.bytes().take_while(u8::is_ascii_digit).count();
        if frac == 0 {
            return Err(format!("invalid number '{raw}': a digit must follow '.'"));
        }
        let after = &frac_and_more[frac..];
        if after.is_empty() {
            return raw
                .parse::<f64>()
                .map(ValueKind::Float)
                .map_err(|_| not_a_number());
        }
        // A second dot makes it an IP address (possibly with a port), as in nats-server.
        if !negative
            && after.starts_with('.')
            && after
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | ':' | '-'))
        {
            return Ok(ValueKind::String(raw.to_string()));
        }
        return Err(not_a_number());
    }
    let first = rest.chars().next().unwrap_or(' ');
    if "kKmMgGtTpPeE".contains(first) {
        // `10mb` is a size but `10ms` is just a string (a duration, for the option that wants one).
        let suffix_ok = rest[1..]
            .chars()
            .all(|c| matches!(c, 'b' | 'B' | 'i' | 'I'));
        if suffix_ok {
            let multiplier = suffix_multiplier(rest)
                .ok_or_else(|| format!("invalid size suffix '{rest}' in '{raw}'"))?;
            return parse_int(int_part)?
                .checked_mul(multiplier)
                .map(ValueKind::Integer)
                .ok_or_else(|| format!("size '{raw}' is out of range"));
        }
    }
    if negative {
        return Err(not_a_number());
    }
    Ok(ValueKind::String(raw.to_string()))
}

/// Checks the exact `YYYY-MM-DDTHH:MM:SSZ` shape nats-server accepts.
fn parse_datetime(raw: &str) -> Result<(), String> {
    let shape = "0000-00-00T00:00:00Z";
    let ok = raw.len() == shape.len()
        && raw.bytes().zip(shape.bytes()).all(|(c, s)| {
            if s == b'0' {
                c.is_ascii_digit()
            } else {
                c == s
            }
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid datetime '{raw}': use the full Zulu form 2006-01-02T15:04:05Z"
        ))
    }
}
