//! The client side of a WebSocket connection (RFC 6455), just enough for NATS: the HTTP/1.1
//! upgrade, masked binary frames out (one frame per write), and server frames deframed
//! back into the byte stream the scanner reads. No extensions (no compression), so a
//! server frame with RSV bits set is an error.

use std::io::{self, ErrorKind, Read, Write};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use base64::Engine;

/// Appended to the client's key before hashing it into `Sec-WebSocket-Accept` (RFC 6455).
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Longest HTTP response head accepted from the server.
const MAX_HEAD: usize = 16 * 1024;
/// Raw bytes read from the socket per read call.
const RX_BUF: usize = 256 * 1024;

const OP_CONT: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;

/// Random bytes from the operating system.
fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| anyhow::anyhow!("no randomness from the operating system"))?;
    Ok(b)
}

/// What the server must answer in `Sec-WebSocket-Accept` for `key`.
fn accept_for(key: &str) -> String {
    let mut input = key.as_bytes().to_vec();
    input.extend_from_slice(ACCEPT_GUID.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// A WebSocket connection over `S` (a TCP or TLS stream).
#[derive(Debug)]
pub struct WsStream<S> {
    inner: S,
    /// Raw bytes from the server; `rx[pos..end]` is not deframed yet.
    rx: Vec<u8>,
    pos: usize,
    end: usize,
    /// Payload bytes of the current data frame still to be passed on.
    left: u64,
    /// One outgoing frame.
    tx: Vec<u8>,
    /// xorshift state for the mask keys.
    mask_state: u64,
}

impl<S: Read + Write> WsStream<S> {
    /// Sends the upgrade request for `host` (the `Host` header: `host:port`) and checks the
    /// 101 answer and its accept hash. Read timeouts are retried until `deadline`.
    pub fn upgrade(mut inner: S, host: &str, deadline: Instant) -> Result<Self> {
        let key = base64::engine::general_purpose::STANDARD.encode(random::<16>()?);
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        inner
            .write_all(request.as_bytes())
            .context("sending the WebSocket upgrade request")?;
        inner.flush()?;
        let mut rx = vec![0u8; RX_BUF];
        let mut end = 0;
        let head_len = loop {
            if let Some(i) = memchr::memmem::find(&rx[..end], b"\r\n\r\n") {
                break i + 4;
            }
            ensure!(
                end < MAX_HEAD,
                "WebSocket upgrade: response head over {MAX_HEAD} bytes"
            );
            crate::conn::check_deadline(deadline, "waiting for the WebSocket upgrade")?;
            match inner.read(&mut rx[end..MAX_HEAD]) {
                Ok(0) => bail!("server closed the connection during the WebSocket upgrade"),
                Ok(n) => end += n,
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e).context("reading the WebSocket upgrade response"),
            }
        };
        check_response(&rx[..head_len], &accept_for(&key))?;
        let seed = u64::from_le_bytes(random::<8>()?) | 1;
        Ok(WsStream {
            inner,
            rx,
            pos: head_len,
            end,
            left: 0,
            tx: Vec::with_capacity(64 * 1024 + 14),
            mask_state: seed,
        })
    }

    /// Sends `data` as one masked binary frame.
    pub fn write_frame(&mut self, data: &[u8]) -> io::Result<()> {
        let key = self.next_mask();
        self.tx.clear();
        push_header(&mut self.tx, OP_BINARY, data.len(), key);
        let start = self.tx.len();
        self.tx.extend_from_slice(data);
        apply_mask(&mut self.tx[start..], key);
        self.inner.write_all(&self.tx)
    }

    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.mask_state = x;
        (x as u32).to_le_bytes()
    }

    /// Reads the payload bytes of the server's data frames into `out`, answering pings.
    /// `Ok(0)` means the server closed the connection.
    pub fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.deframe(out)?;
            if n > 0 || out.is_empty() {
                return Ok(n);
            }
            if self.pos > 0 {
                self.rx.copy_within(self.pos..self.end, 0);
                self.end -= self.pos;
                self.pos = 0;
            }
            let n = self.inner.read(&mut self.rx[self.end..])?;
            if n == 0 {
                return Ok(0);
            }
            self.end += n;
        }
    }

    /// Moves what `rx` holds of data-frame payloads into `out`; handles control frames.
    fn deframe(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut written = 0;
        while written < out.len() && self.pos < self.end {
            if self.left > 0 {
                let avail = self.end - self.pos;
                let take = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(avail)
                    .min(out.len() - written);
                out[written..written + take].copy_from_slice(&self.rx[self.pos..self.pos + take]);
                written += take;
                self.pos += take;
                self.left -= take as u64;
                continue;
            }
            let Some(h) = parse_header(&self.rx[self.pos..self.end])? else {
                break;
            };
            match h.opcode {
                OP_CONT | OP_TEXT | OP_BINARY => {
                    self.pos += h.len;
                    self.left = h.payload;
                }
                OP_CLOSE | OP_PING | OP_PONG => {
                    // Control payloads are at most 125 bytes: wait for the whole frame.
                    let payload = usize::try_from(h.payload).unwrap_or(usize::MAX);
                    if self.end - self.pos < h.len + payload {
                        break;
                    }
                    let body = self.pos + h.len..self.pos + h.len + payload;
                    if h.opcode == OP_CLOSE {
                        if written > 0 {
                            // Pass on what came before; the close is seen next time.
                            break;
                        }
                        return Err(close_error(&self.rx[body]));
                    }
                    if h.opcode == OP_PING {
                        let key = self.next_mask();
                        let mut pong = Vec::with_capacity(payload + 6);
                        push_header(&mut pong, OP_PONG, payload, key);
                        let start = pong.len();
                        pong.extend_from_slice(&self.rx[body]);
                        apply_mask(&mut pong[start..], key);
                        self.inner.write_all(&pong)?;
                    }
                    self.pos += h.len + payload;
                }
                op => return Err(protocol_error(format!("unknown opcode {op}"))),
            }
        }
        Ok(written)
    }
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

fn check_response(head: &[u8], want_accept: &str) -> Result<()> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut words = status.split(' ');
    let (proto, code) = (words.next(), words.next());
    ensure!(
        proto.is_some_and(|p| p.starts_with("HTTP/1.")) && code == Some("101"),
        "WebSocket upgrade refused: {status:?}"
    );
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|(_, v)| v.trim().to_string())
        .context("WebSocket upgrade: no Sec-WebSocket-Accept header")?;
    ensure!(
        accept == want_accept,
        "WebSocket upgrade: Sec-WebSocket-Accept {accept:?}, expected {want_accept:?}"
    );
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
struct Header {
    opcode: u8,
    /// Header length in bytes.
    len: usize,
    payload: u64,
}

/// The header at the start of `b`, or `None` when it has not fully arrived.
fn parse_header(b: &[u8]) -> io::Result<Option<Header>> {
    let (Some(&b0), Some(&b1)) = (b.first(), b.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(protocol_error(
            "server frame with RSV bits set (no extension was negotiated)".into(),
        ));
    }
    if b1 & 0x80 != 0 {
        return Err(protocol_error("masked server frame".into()));
    }
    let opcode = b0 & 0x0f;
    let (len, payload) = match b1 & 0x7f {
        126 => match b.get(2..4) {
            Some(x) => (4, u64::from(u16::from_be_bytes([x[0], x[1]]))),
            None => return Ok(None),
        },
        127 => match b.get(2..10) {
            Some(x) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(x);
                (10, u64::from_be_bytes(a))
            }
            None => return Ok(None),
        },
        n => (2, u64::from(n)),
    };
    if opcode >= OP_CLOSE && (payload > 125 || b0 & 0x80 == 0) {
        return Err(protocol_error(
            "control frame fragmented or over 125 bytes".into(),
        ));
    }
    Ok(Some(Header {
        opcode,
        len,
        payload,
    }))
}

/// A masked client frame header (FIN set) for a payload of `len` bytes.
fn push_header(out: &mut Vec<u8>, opcode: u8, len: usize, key: [u8; 4]) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&key);
}

/// XORs `data` with the repeated 4-byte `key`, eight bytes at a time.
fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(a) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

fn close_error(body: &[u8]) -> io::Error {
    let detail = match body {
        [hi, lo, reason @ ..] => format!(
            "status {}{}{}",
            u16::from_be_bytes([*hi, *lo]),
            if reason.is_empty() { "" } else { ": " },
            String::from_utf8_lossy(reason)
        ),
        _ => "no status".to_string(),
    };
    io::Error::new(
        ErrorKind::ConnectionAborted,
        format!("server closed the WebSocket ({detail})"),
    )
}

fn protocol_error(what: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, format!("WebSocket: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A fake socket: reads come from `input` at most `chunk` bytes at a time, writes are
    /// collected.
    struct Fake {
        input: Cursor<Vec<u8>>,
        chunk: usize,
        written: Vec<u8>,
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.chunk);
            self.input.read(&mut buf[..n])
        }
    }

    impl Write for Fake {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn server_frame(out: &mut Vec<u8>, b0: u8, payload: &[u8]) {
        out.push(b0);
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 0xffff => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
    }

    fn stream_over(input: Vec<u8>, chunk: usize) -> WsStream<Fake> {
        WsStream {
            inner: Fake {
                input: Cursor::new(input),
                chunk,
                written: Vec::new(),
            },
            rx: vec![0; 1024 * 1024],
            pos: 0,
            end: 0,
            left: 0,
            tx: Vec::new(),
            mask_state: 0x1234_5678_9abc_def1,
        }
    }

    #[test]
    fn accept_hash_matches_the_rfc_example() {
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn deframes_across_any_split_and_answers_pings() {
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        server_frame(&mut wire, 0x82, b"INFO {}\r\n");
        server_frame(&mut wire, 0x89, b"hi");
        server_frame(&mut wire, 0x02, b"MSG a 1 3\r\n");
        server_frame(&mut wire, 0x80, b"abc\r\n");
        server_frame(&mut wire, 0x82, &big);
        server_frame(&mut wire, 0x82, &[0u8; 300]);
        let mut want = b"INFO {}\r\nMSG a 1 3\r\nabc\r\n".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(&[0u8; 300]);
        for chunk in [1, 2, 3, 7, 125, 4096, usize::MAX] {
            for out_len in [1, 5, 64 * 1024] {
                let mut ws = stream_over(wire.clone(), chunk);
                let mut got = Vec::new();
                let mut out = vec![0u8; out_len];
                loop {
                    let n = ws.read(&mut out).expect("read");
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&out[..n]);
                }
                assert_eq!(got, want, "chunk {chunk}, out {out_len}");
                // The pong: masked, same payload.
                let pong = &ws.inner.written;
                assert_eq!(pong.len(), 2 + 4 + 2, "chunk {chunk}");
                assert_eq!(pong[0], 0x8a);
                assert_eq!(pong[1], 0x82);
                let mut body = pong[6..].to_vec();
                apply_mask(&mut body, [pong[2], pong[3], pong[4], pong[5]]);
                assert_eq!(body, b"hi");
            }
        }
    }

    #[test]
    fn close_frame_and_bad_frames_are_errors() {
        let mut wire = Vec::new();
        server_frame(&mut wire, 0x82, b"PONG\r\n");
        let mut close = 1008u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"Authorization Violation");
        server_frame(&mut wire, 0x88, &close);
        let mut ws = stream_over(wire, usize::MAX);
        let mut out = [0u8; 64];
        assert_eq!(ws.read(&mut out).expect("data before the close"), 6);
        let e = ws.read(&mut out).expect_err("close");
        assert!(e.to_string().contains("1008"), "{e}");

        for bad in [[0xc2u8, 0x00], [0x82, 0x81], [0x83, 0x00]] {
            let mut ws = stream_over(bad.to_vec(), usize::MAX);
            assert!(ws.read(&mut out).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_frames_are_masked_binary_frames() {
        for len in [0usize, 5, 125, 126, 65_535, 65_536, 100_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut ws = stream_over(Vec::new(), 1);
            ws.write_frame(&data).expect("write");
            let w = &ws.inner.written;
            assert_eq!(w[0], 0x82);
            assert_eq!(w[1] & 0x80, 0x80, "mask bit");
            let (hlen, plen) = match w[1] & 0x7f {
                126 => (4, u16::from_be_bytes([w[2], w[3]]) as usize),
                127 => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&w[2..10]);
                    (10, u64::from_be_bytes(a) as usize)
                }
                n => (2, n as usize),
            };
            assert_eq!(plen, len);
            let key = [w[hlen], w[hlen + 1], w[hlen + 2], w[hlen + 3]];
            let mut body = w[hlen + 4..].to_vec();
            apply_mask(&mut body, key);
            assert_eq!(body, data, "len {len}");
        }
    }

    #[test]
    fn upgrade_checks_status_and_accept() {
        let want = accept_for("x");
        let ok = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nsec-websocket-accept: {want}\r\n\r\n");
        assert!(check_response(ok.as_bytes(), &want).is_ok());
        let wrong = ok.replace(&want, "AAAA");
        assert!(check_response(wrong.as_bytes(), &want).is_err());
        assert!(check_response(b"HTTP/1.1 403 Forbidden\r\n\r\n", &want).is_err());
    }
}
