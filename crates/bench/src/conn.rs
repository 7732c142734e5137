//! One client connection over blocking std::net: handshake, batched writes, and reads fed
//! to a [`Scanner`]. Server PINGs are answered here so that scenarios never see them.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::scan::{Event, Scanner};

pub const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"lang\":\"rust\",\"name\":\"midge-bench\",\"protocol\":1}\r\n";

/// Reads block at most this long so that every loop can check its deadline.
const READ_POLL: Duration = Duration::from_millis(100);

const READ_BUF: usize = 256 * 1024;

/// `host:port` from `nats://host:port`, `host:port` or `host`.
pub fn host_port(url: &str) -> Result<String> {
    let rest = url.strip_prefix("nats://").unwrap_or(url);
    if rest.contains("://") {
        bail!("only nats:// URLs are supported, got {url}");
    }
    let rest = rest
        .rsplit('@')
        .next()
        .unwrap_or(rest)
        .trim_end_matches('/');
    if rest.is_empty() {
        bail!("no host in URL {url}");
    }
    Ok(if rest.contains(':') {
        rest.to_string()
    } else {
        format!("{rest}:4222")
    })
}

/// Opens a TCP connection, failing after `deadline`.
pub fn dial(addr: &str, deadline: Instant) -> Result<TcpStream> {
    let sock = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))?;
    let left = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .context("deadline passed before connecting")?;
    let stream = TcpStream::connect_timeout(&sock, left).map_err(|e| {
        // EMFILE: too many open files.
        let hint = if e.raw_os_error() == Some(24) {
            " (raise `ulimit -n`)"
        } else {
            ""
        };
        anyhow::Error::new(e).context(format!("connecting to {addr}{hint}"))
    })?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(READ_POLL))?;
    Ok(stream)
}

#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    scanner: Scanner,
    buf: Vec<u8>,
    pongs: u64,
}

impl Conn {
    /// Connects, sends CONNECT plus `setup` (e.g. SUB lines), and waits for the PONG
    /// that proves the server processed them.
    pub fn open(addr: &str, setup: &[u8], scanner: Scanner, deadline: Instant) -> Result<Self> {
        Self::open_as(addr, None, setup, scanner, deadline)
    }

    /// [`Conn::open`] logged in as `user` (the password is the user name).
    pub fn open_as(
        addr: &str,
        user: Option<&str>,
        setup: &[u8],
        scanner: Scanner,
        deadline: Instant,
    ) -> Result<Self> {
        let stream = dial(addr, deadline)?;
        let mut conn = Conn {
            stream,
            scanner,
            buf: vec![0; READ_BUF],
            pongs: 0,
        };
        let mut hello = match user {
            None => CONNECT.to_vec(),
            Some(u) => format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"lang\":\"rust\",\"name\":\"midge-bench\",\"protocol\":1,\"user\":\"{u}\",\"pass\":\"{u}\"}}\r\n"
            )
            .into_bytes(),
        };
        hello.extend_from_slice(setup);
        conn.write_all(&hello)?;
        conn.flush(deadline, &mut |_| {})?;
        Ok(conn)
    }

    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        self.stream
            .write_all(data)
            .context("writing to server (connection closed?)")
    }

    /// One read: feeds whatever arrived to the scanner. Returns without events when the
    /// read timed out. Fails on EOF, on a read error, and on `-ERR`.
    pub fn read_some(&mut self, on: &mut impl FnMut(&Event<'_>)) -> Result<()> {
        let n = match self.stream.read(&mut self.buf) {
            Ok(0) => bail!("server closed the connection (slow consumer?)"),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(())
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e).context("reading from server"),
        };
        let mut pings = 0;
        let mut err: Option<String> = None;
        let pongs = &mut self.pongs;
        self.scanner.feed(&self.buf[..n], &mut |ev| {
            match ev {
                Event::Ping => pings += 1,
                Event::Pong => *pongs += 1,
                Event::Err(text) => {
                    err.get_or_insert_with(|| String::from_utf8_lossy(text).into_owned());
                }
                _ => {}
            }
            on(&ev);
        })?;
        if let Some(text) = err {
            bail!("server sent -ERR {text}");
        }
        for _ in 0..pings {
            self.write_all(b"PONG\r\n")?;
        }
        Ok(())
    }

    /// Sends PING and reads until its PONG, passing other events to `on`.
    pub fn flush(&mut self, deadline: Instant, on: &mut impl FnMut(&Event<'_>)) -> Result<()> {
        let want = self.pongs + 1;
        self.write_all(b"PING\r\n")?;
        while self.pongs < want {
            check_deadline(deadline, "waiting for PONG")?;
            self.read_some(on)?;
        }
        Ok(())
    }
}

pub fn check_deadline(deadline: Instant, what: &str) -> Result<()> {
    if Instant::now() >= deadline {
        bail!("timed out {what}");
    }
    Ok(())
}
