//! Log lines in nats-server's shape, `[pid] 2006/01/02 15:04:05.000000 [INF] text`, because
//! tools and test harnesses read the bound ports and readiness out of them.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Formats events like nats-server.
#[derive(Debug, Clone)]
pub struct NatsFormat {
    pub pid: u32,
    pub logtime: bool,
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
        write!(w, "[{}] ", self.pid)?;
        if self.logtime {
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

/// Where log lines go: stderr, or a file that can be reopened (for log rotation).
#[derive(Debug, Clone)]
pub struct LogTarget {
    file: Option<Arc<Mutex<std::fs::File>>>,
}

impl LogTarget {
    pub fn stderr() -> Self {
        LogTarget { file: None }
    }

    pub fn file(path: &Path) -> std::io::Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(LogTarget {
            file: Some(Arc::new(Mutex::new(f))),
        })
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
        let _ = match &self.target.file {
            Some(f) => f.lock().write_all(&self.buf),
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

/// Installs the global subscriber: `debug` (-D) and `trace` (-V) raise the level.
pub fn init(target: LogTarget, debug: bool, trace: bool, logtime: bool) {
    let level = if trace {
        Level::TRACE
    } else if debug {
        Level::DEBUG
    } else {
        Level::INFO
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .event_format(NatsFormat {
            pid: std::process::id(),
            logtime,
        })
        .with_writer(target)
        .try_init();
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
