//! Log lines in nats-server's shape, `[pid] 2006/01/02 15:04:05.000000 [INF] text`, because
//! tools and test harnesses read the bound ports and readiness out of them; or, with
//! `log_json`, one JSON object a line.
//!
//! What [`init`] installs can be changed while the server runs, which is how a config reload
//! applies `debug`, `trace`, `logtime`, `log_json` and `logfile` ([`apply`]), and how SIGUSR1
//! reopens the log file after a rotation ([`reopen`]).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{reload, Registry};

use crate::options::Options;

/// Formats events like nats-server (or as JSON objects). The switches are shared so that a
/// reload can flip them while the subscriber is installed.
#[derive(Debug, Clone)]
pub struct NatsFormat {
    pub pid: u32,
    pub logtime: Arc<AtomicBool>,
    pub json: Arc<AtomicBool>,
}

impl<S, N> FormatEvent<S, N> for NatsFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.json.load(Ordering::Relaxed) {
            return write_json(&mut w, self.pid, event);
        }
        write!(w, "[{}] ", self.pid)?;
        if self.logtime.load(Ordering::Relaxed) {
            write_timestamp(&mut w, SystemTime::now())?;
            w.write_char(' ')?;
        }
        let level = match *event.metadata().level() {
            Level::ERROR => "[ERR]",
            Level::WARN => "[WRN]",
            Level::INFO => "[INF]",
            Level::DEBUG => "[DBG]",
            Level::TRACE => "[TRC]",
        };
        write!(w, "{level} ")?;
        let mut v = Fields {
            message: None,
            extra: String::new(),
        };
        event.record(&mut v);
        let Fields { message, extra } = v;
        if !extra.is_empty() {
            write!(w, "{extra} - ")?;
        }
        if let Some(m) = message {
            w.write_str(&m)?;
        }
        w.write_char('\n')
    }
}

/// `{"time":"2026-01-02T15:04:05.000000Z","level":"info","pid":1,"msg":"...","cid":"5"}`:
/// the text of a line, with each structured field as its own key.
fn write_json(w: &mut Writer<'_>, pid: u32, event: &Event<'_>) -> fmt::Result {
    let mut fields = JsonFields::default();
    event.record(&mut fields);
    let mut obj = serde_json::Map::new();
    let mut time = String::new();
    write_rfc3339(&mut time, SystemTime::now())?;
    obj.insert("time".into(), time.into());
    let level = match *event.metadata().level() {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    };
    obj.insert("level".into(), level.into());
    obj.insert("pid".into(), pid.into());
    obj.insert("msg".into(), fields.message.unwrap_or_default().into());
    for (k, v) in fields.extra {
        obj.entry(k).or_insert(v.into());
    }
    let line = serde_json::Value::Object(obj).to_string();
    w.write_str(&line)?;
    w.write_char('\n')
}

#[derive(Default)]
struct JsonFields {
    message: Option<String>,
    extra: Vec<(String, String)>,
}

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.extra.push((field.name().to_string(), text));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            self.extra
                .push((field.name().to_string(), value.to_string()));
        }
    }
}

struct Fields {
    message: Option<String>,
    extra: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        } else {
            if !self.extra.is_empty() {
                self.extra.push(' ');
            }
            let _ = write!(self.extra, "{}:{:?}", field.name(), value);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            self.record_debug(field, &value);
        }
    }
}

/// `2006/01/02 15:04:05.000000` in UTC.
fn write_timestamp(w: &mut Writer<'_>, t: SystemTime) -> fmt::Result {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    write!(
        w,
        "{y:04}/{m:02}/{day:02} {:02}:{:02}:{:02}.{:06}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_micros()
    )
}

/// `2006-01-02T15:04:05.000000Z` (UTC), for JSON lines.
fn write_rfc3339(w: &mut impl fmt::Write, t: SystemTime) -> fmt::Result {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    write!(
        w,
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_micros()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's method).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Where log lines go: stderr, or a file that can be reopened (log rotation) or replaced
/// (a reload that changes `logfile`).
#[derive(Debug, Clone)]
pub struct LogTarget {
    sink: Arc<Mutex<Sink>>,
}

#[derive(Debug)]
struct Sink {
    path: Option<PathBuf>,
    file: Option<std::fs::File>,
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

impl LogTarget {
    pub fn stderr() -> Self {
        LogTarget {
            sink: Arc::new(Mutex::new(Sink {
                path: None,
                file: None,
            })),
        }
    }

    pub fn file(path: &Path) -> std::io::Result<Self> {
        let file = open_append(path)?;
        Ok(LogTarget {
            sink: Arc::new(Mutex::new(Sink {
                path: Some(path.to_path_buf()),
                file: Some(file),
            })),
        })
    }

    /// The file lines go to (`None`: stderr).
    pub fn path(&self) -> Option<PathBuf> {
        self.sink.lock().path.clone()
    }

    /// Opens the log file again by its path, so that lines go to a new file after the old
    /// one was renamed. False when logging to stderr (nothing to reopen).
    pub fn reopen(&self) -> std::io::Result<bool> {
        let mut sink = self.sink.lock();
        let Some(path) = sink.path.clone() else {
            return Ok(false);
        };
        sink.file = Some(open_append(&path)?);
        Ok(true)
    }

    /// Sends lines to another file, or to stderr. On error nothing changes.
    pub fn set_path(&self, path: Option<&Path>) -> std::io::Result<()> {
        let file = path.map(open_append).transpose()?;
        let mut sink = self.sink.lock();
        sink.path = path.map(Path::to_path_buf);
        sink.file = file;
        Ok(())
    }
}

/// One writer per event; writes the whole line at once.
#[derive(Debug)]
pub struct LogWriter {
    target: LogTarget,
    buf: Vec<u8>,
}

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let mut sink = self.target.sink.lock();
        let _ = match &mut sink.file {
            Some(f) => f.write_all(&self.buf),
            None => std::io::stderr().write_all(&self.buf),
        };
    }
}

impl<'a> MakeWriter<'a> for LogTarget {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter {
            target: self.clone(),
            buf: Vec::with_capacity(128),
        }
    }
}

/// What [`init`] installed, kept so that it can be changed at run time.
struct Control {
    target: LogTarget,
    level: reload::Handle<LevelFilter, Registry>,
    logtime: Arc<AtomicBool>,
    json: Arc<AtomicBool>,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

fn level_filter(debug: bool, trace: bool) -> LevelFilter {
    if trace {
        LevelFilter::TRACE
    } else if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    }
}

/// Installs the global subscriber: `debug` (-D) and `trace` (-V) raise the level.
pub fn init(target: LogTarget, debug: bool, trace: bool, logtime: bool) {
    init_with(target, debug, trace, logtime, false);
}

/// [`init`] with every logging option of [`Options`], including `log_json`.
pub fn init_from(target: LogTarget, opts: &Options) {
    init_with(target, opts.debug, opts.trace, opts.logtime, opts.log_json);
}

fn init_with(target: LogTarget, debug: bool, trace: bool, logtime: bool, json: bool) {
    let (filter, handle) = reload::Layer::new(level_filter(debug, trace));
    let logtime = Arc::new(AtomicBool::new(logtime));
    let json = Arc::new(AtomicBool::new(json));
    let format = NatsFormat {
        pid: std::process::id(),
        logtime: logtime.clone(),
        json: json.clone(),
    };
    let subscriber = tracing_subscriber::registry().with(filter).with(
        tracing_subscriber::fmt::layer()
            .event_format(format)
            .with_writer(target.clone()),
    );
    if tracing::subscriber::set_global_default(subscriber).is_ok() {
        let _ = CONTROL.set(Control {
            target,
            level: handle,
            logtime,
            json,
        });
    }
}

/// Why the logging options could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open log file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot change the log level: {0}")]
    Level(String),
}

/// Applies the logging options of `opts` to what [`init`] installed (nothing happens when
/// logging was set up some other way, e.g. by a program embedding the server). The log file
/// is only reopened when its path changed.
pub fn apply(opts: &Options) -> Result<(), LogError> {
    let Some(c) = CONTROL.get() else {
        return Ok(());
    };
    if c.target.path() != opts.log_file {
        c.target
            .set_path(opts.log_file.as_deref())
            .map_err(|source| LogError::Open {
                path: opts.log_file.clone().unwrap_or_default(),
                source,
            })?;
    }
    c.logtime.store(opts.logtime, Ordering::Relaxed);
    c.json.store(opts.log_json, Ordering::Relaxed);
    c.level
        .modify(|f| *f = level_filter(opts.debug, opts.trace))
        .map_err(|e| LogError::Level(e.to_string()))
}

/// Reopens the log file (SIGUSR1, after a log rotation renamed it). `Ok(false)` when there
/// is no log file to reopen.
pub fn reopen() -> Result<bool, LogError> {
    let Some(c) = CONTROL.get() else {
        return Ok(false);
    };
    c.target.reopen().map_err(|source| LogError::Open {
        path: c.target.path().unwrap_or_default(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
