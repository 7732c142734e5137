//! A raw TCP client that asserts on the exact bytes a server sends.
//!
//! Every wait has a deadline. The only fixed-length wait is [`RawClient::expect_nothing`],
//! which exists to assert absence; to know that a server has processed earlier ops, use a
//! PING/PONG round trip ([`RawClient::ping_pong`]) instead.

use std::fmt;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// The default deadline for every expectation.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// How long [`RawClient::expect_nothing`] watches by default. Short on purpose: it only
/// proves absence, and the PING/PONG barrier before it already proved the server is caught up.
pub const QUIET: Duration = Duration::from_millis(200);

/// How bytes are written to the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feed {
    /// Each `send` is one write.
    Whole,
    /// One byte per write, flushed, with TCP_NODELAY: exercises every parser state boundary.
    Bytewise,
}

impl fmt::Display for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Feed::Whole => "whole",
            Feed::Bytewise => "bytewise",
        })
    }
}

/// Bytes shown with `\r`, `\n`, `\t` and non-printables escaped, for assertion messages.
pub fn escaped(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// One raw connection.
#[derive(Debug)]
pub struct RawClient {
    stream: TcpStream,
    feed: Feed,
    buf: Vec<u8>,
    eof: bool,
    deadline: Duration,
    label: String,
}

enum Fill {
    Data,
    Closed,
    TimedOut,
}

impl RawClient {
    /// Connects to `addr`; `send` writes whole.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = tokio::time::timeout(DEADLINE, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
            .unwrap_or_else(|err| panic!("connect to {addr}: {err}"));
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        RawClient {
            stream,
            feed: Feed::Whole,
            buf: Vec::new(),
            eof: false,
            deadline: DEADLINE,
            label: addr.to_string(),
        }
    }

    /// Makes `send` use `feed`.
    pub fn feeding(mut self, feed: Feed) -> Self {
        self.feed = feed;
        self
    }

    /// Names this client in assertion messages (e.g. "nats-server bytewise subscriber").
    pub fn labelled(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Changes the deadline of every later expectation.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Writes `bytes` according to the client's [`Feed`]; panics if the write fails.
    pub async fn send(&mut self, bytes: &[u8]) {
        if let Err(err) = self.write(bytes, self.feed).await {
            panic!("[{}] write {:?}: {err}", self.label, escaped(bytes));
        }
    }

    /// Writes `bytes` in one write.
    pub async fn send_whole(&mut self, bytes: &[u8]) {
        if let Err(err) = self.write(bytes, Feed::Whole).await {
            panic!("[{}] write {:?}: {err}", self.label, escaped(bytes));
        }
    }

    /// Writes `bytes` one byte per write.
    pub async fn send_bytewise(&mut self, bytes: &[u8]) {
        if let Err(err) = self.write(bytes, Feed::Bytewise).await {
            panic!("[{}] write {:?}: {err}", self.label, escaped(bytes));
        }
    }

    /// Like [`send`](Self::send), for input that makes the server close the connection
    /// part-way: a write failing because the peer is gone is expected and ignored.
    pub async fn send_until_closed(&mut self, bytes: &[u8]) {
        let _ = self.write(bytes, self.feed).await;
    }

    async fn write(&mut self, bytes: &[u8], feed: Feed) -> std::io::Result<()> {
        match feed {
            Feed::Whole => {
                self.stream.write_all(bytes).await?;
                self.stream.flush().await
            }
            Feed::Bytewise => {
                for byte in bytes {
                    self.stream.write_all(std::slice::from_ref(byte)).await?;
                    self.stream.flush().await?;
                }
                Ok(())
            }
        }
    }

    /// Reads more bytes into the buffer, waiting at most until `until`.
    async fn fill(&mut self, until: Instant) -> Fill {
        if self.eof {
            return Fill::Closed;
        }
        let mut chunk = [0u8; 16 * 1024];
        match timeout_at(until, self.stream.read(&mut chunk)).await {
            Err(_) => Fill::TimedOut,
            Ok(Ok(0)) => {
                self.eof = true;
                Fill::Closed
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Fill::Data
            }
            Ok(Err(err))
                if matches!(
                    err.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                self.eof = true;
                Fill::Closed
            }
            Ok(Err(err)) => panic!("[{}] read: {err}", self.label),
        }
    }

    /// Asserts that the next bytes from the server are exactly `want`.
    pub async fn expect(&mut self, want: &[u8]) {
        self.expect_within(want, self.deadline).await;
    }

    /// [`expect`](Self::expect) with an explicit deadline.
    pub async fn expect_within(&mut self, want: &[u8], deadline: Duration) {
        let until = Instant::now() + deadline;
        loop {
            let have = self.buf.len().min(want.len());
            if self.buf[..have] != want[..have] {
                panic!(
                    "[{}] unexpected bytes\n  want: {}\n  got:  {}",
                    self.label,
                    escaped(want),
                    escaped(&self.buf)
                );
            }
            if have == want.len() {
                self.buf.drain(..have);
                return;
            }
            match self.fill(until).await {
                Fill::Data => {}
                Fill::Closed => panic!(
                    "[{}] connection closed\n  want: {}\n  got:  {}",
                    self.label,
                    escaped(want),
                    escaped(&self.buf)
                ),
                Fill::TimedOut => panic!(
                    "[{}] no complete answer within {deadline:?}\n  want: {}\n  got:  {}",
                    self.label,
                    escaped(want),
                    escaped(&self.buf)
                ),
            }
        }
    }

    /// Consumes `bytes` if they are what comes next and returns whether they were; waits
    /// (up to the deadline) only until enough bytes arrived to decide.
    pub async fn skip_if_next(&mut self, bytes: &[u8]) -> bool {
        let until = Instant::now() + self.deadline;
        loop {
            let have = self.buf.len().min(bytes.len());
            if self.buf[..have] != bytes[..have] {
                return false;
            }
            if have == bytes.len() {
                self.buf.drain(..have);
                return true;
            }
            match self.fill(until).await {
                Fill::Data => {}
                Fill::Closed | Fill::TimedOut => return false,
            }
        }
    }

    /// Reads up to and including the next `\r\n` and returns it (with the `\r\n`).
    pub async fn read_line(&mut self) -> Vec<u8> {
        let until = Instant::now() + self.deadline;
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return self.buf.drain(..end + 2).collect();
            }
            match self.fill(until).await {
                Fill::Data => {}
                Fill::Closed | Fill::TimedOut => panic!(
                    "[{}] no complete line within {:?}; got: {}",
                    self.label,
                    self.deadline,
                    escaped(&self.buf)
                ),
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let until = Instant::now() + self.deadline;
        while self.buf.len() < n {
            match self.fill(until).await {
                Fill::Data => {}
                Fill::Closed | Fill::TimedOut => panic!(
                    "[{}] wanted {n} bytes within {:?}; got: {}",
                    self.label,
                    self.deadline,
                    escaped(&self.buf)
                ),
            }
        }
        self.buf.drain(..n).collect()
    }

    /// Reads the next line, which must be `INFO <json> \r\n` (nats-server puts a space
    /// before the CRLF), and returns the JSON.
    pub async fn read_info(&mut self) -> serde_json::Value {
        let line = self.read_line().await;
        let text = String::from_utf8(line.clone())
            .unwrap_or_else(|_| panic!("[{}] INFO is not UTF-8: {}", self.label, escaped(&line)));
        let json = text
            .strip_prefix("INFO ")
            .and_then(|rest| rest.strip_suffix(" \r\n"))
            .unwrap_or_else(|| {
                panic!(
                    "[{}] not an `INFO {{..}} \\r\\n` line: {text:?}",
                    self.label
                )
            });
        serde_json::from_str(json)
            .unwrap_or_else(|err| panic!("[{}] INFO JSON {json:?}: {err}", self.label))
    }

    /// Reads the next line and asserts `matches` accepts it (given without the `\r\n`);
    /// `what` describes the expectation for the failure message.
    pub async fn expect_line_matching(
        &mut self,
        what: &str,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let line = self.read_line().await;
        let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
        assert!(
            matches(&text),
            "[{}] line {text:?} is not {what}",
            self.label
        );
        text
    }

    /// Asserts the server closes the connection (EOF or reset) without sending anything more.
    pub async fn expect_closed(&mut self) {
        self.expect_closed_within(self.deadline).await;
    }

    /// [`expect_closed`](Self::expect_closed) with an explicit deadline.
    pub async fn expect_closed_within(&mut self, deadline: Duration) {
        let until = Instant::now() + deadline;
        loop {
            if !self.buf.is_empty() {
                panic!(
                    "[{}] expected the connection to close, got: {}",
                    self.label,
                    escaped(&self.buf)
                );
            }
            match self.fill(until).await {
                Fill::Data => {}
                Fill::Closed => return,
                Fill::TimedOut => {
                    panic!("[{}] connection still open after {deadline:?}", self.label)
                }
            }
        }
    }

    /// Asserts that nothing arrives (and the connection stays open) for [`QUIET`].
    pub async fn expect_nothing(&mut self) {
        self.expect_nothing_for(QUIET).await;
    }

    /// Asserts that nothing arrives for `quiet`: the one sanctioned fixed-time wait.
    pub async fn expect_nothing_for(&mut self, quiet: Duration) {
        let until = Instant::now() + quiet;
        loop {
            if !self.buf.is_empty() {
                panic!(
                    "[{}] expected silence, got: {}",
                    self.label,
                    escaped(&self.buf)
                );
            }
            match self.fill(until).await {
                Fill::Data => {}
                Fill::Closed => panic!("[{}] expected silence, connection closed", self.label),
                Fill::TimedOut => return,
            }
        }
    }

    /// PING/PONG round trip: afterwards the server has processed everything sent before.
    /// Anything else arriving first fails the expectation.
    pub async fn ping_pong(&mut self) {
        self.send(b"PING\r\n").await;
        self.expect(b"PONG\r\n").await;
    }

    /// Reads INFO, sends `CONNECT <connect_json>` and does a PING/PONG round trip.
    /// With `"verbose":true` (or verbose omitted) the CONNECT's `+OK` is expected too.
    pub async fn handshake(&mut self, connect_json: &str) -> serde_json::Value {
        let info = self.read_info().await;
        self.send(format!("CONNECT {connect_json}\r\n").as_bytes())
            .await;
        let connect: serde_json::Value = serde_json::from_str(connect_json)
            .unwrap_or_else(|err| panic!("test bug: CONNECT JSON {connect_json:?}: {err}"));
        if connect.get("verbose").and_then(serde_json::Value::as_bool) != Some(false) {
            self.expect(b"+OK\r\n").await;
        }
        self.ping_pong().await;
        info
    }

    /// Bytes received but not yet consumed by an expectation.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}

/// The result of [`RawClient::read_frame`].
#[derive(Debug, PartialEq, Eq)]
pub enum FrameRead {
    /// One protocol frame: a control line, or a MSG/HMSG line with its payload and CRLF.
    /// When the server closes mid-frame, the incomplete bytes come as a last frame.
    Frame(Vec<u8>),
    /// The server closed the connection (EOF or reset) and nothing is left unread.
    Closed,
    /// Nothing complete arrived in time.
    TimedOut,
}

impl RawClient {
    /// Reads one whole frame, waiting at most `wait`; never panics on close or timeout.
    pub async fn read_frame(&mut self, wait: Duration) -> FrameRead {
        let until = Instant::now() + wait;
        loop {
            if let Some(len) = complete_frame_len(&self.buf) {
                return FrameRead::Frame(self.buf.drain(..len).collect());
            }
            match self.fill(until).await {
                Fill::Data => {}
                Fill::Closed if self.buf.is_empty() => return FrameRead::Closed,
                Fill::Closed => return FrameRead::Frame(std::mem::take(&mut self.buf)),
                Fill::TimedOut => return FrameRead::TimedOut,
            }
        }
    }
}

/// The length of the first complete frame in `buf`, if there is one.
fn complete_frame_len(buf: &[u8]) -> Option<usize> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")? + 2;
    let line = &buf[..line_end - 2];
    let is_msg = line.starts_with(b"MSG ") || line.starts_with(b"HMSG ");
    if !is_msg {
        return Some(line_end);
    }
    let total: usize = std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.split_ascii_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let frame_len = line_end + total + 2;
    (buf.len() >= frame_len).then_some(frame_len)
}
