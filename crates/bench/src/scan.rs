//! Incremental scanner for what a NATS server sends to a client. No IO: bytes go in
//! through [`Scanner::feed`] in chunks of any size and events come out through a callback.
//!
//! Payloads are not copied unless asked for: the scanner only remembers how many bytes of
//! the current payload are still to be skipped, so a MSG costs one `memchr` for its control
//! line and a parse of its size. Only a control line split across two chunks is copied, and
//! a captured payload split across chunks (JetStream replies, see [`Capture`]).

use anyhow::{bail, ensure, Context, Result};

/// Longest control line accepted from a server (nats-server's max_control_line is 4096;
/// leave room for a long INFO).
const MAX_LINE: usize = 64 * 1024;

/// Bytes at the start of each payload that carry the publisher's sequence number.
pub const SEQ_BYTES: usize = 8;

/// Longest payload reported whole by [`Capture`] (a bigger one is skipped unseen).
const MAX_CAPTURE: usize = 1 << 20;

/// Which payloads a [`Scanner`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Capture {
    /// None: only control lines.
    #[default]
    Nothing,
    /// The first [`SEQ_BYTES`] of each MSG payload, as [`Event::Seq`].
    Seq,
    /// Whole HMSG payloads, as [`Event::Payload`]: the status messages of a pull
    /// consumer's inbox, whose stream messages (plain MSGs) stay uncopied.
    Headered,
    /// Every payload, as [`Event::Payload`] (JetStream API replies and acks).
    All,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A MSG or HMSG control line. `args` are the arguments after the op, `size` the total
    /// payload length (headers included for HMSG).
    Msg {
        args: &'a [u8],
        size: usize,
        headers: bool,
    },
    /// The first [`SEQ_BYTES`] of the payload of the preceding Msg, little-endian (only when
    /// sequence capture is on and the payload is at least that long).
    Seq(u64),
    /// The payload of the preceding Msg, split into its header block (empty for MSG) and
    /// body, when [`Capture`] asks for it.
    Payload {
        headers: &'a [u8],
        body: &'a [u8],
    },
    Ping,
    Pong,
    Info,
    Ok,
    Err(&'a [u8]),
}

impl Event<'_> {
    /// The subject of a Msg event.
    pub fn subject(&self) -> Option<&[u8]> {
        let Event::Msg { args, .. } = self else {
            return None;
        };
        args.split(|b| *b == b' ' || *b == b'\t')
            .find(|t| !t.is_empty())
    }

    /// The reply subject of a Msg event, if any.
    pub fn reply(&self) -> Option<&[u8]> {
        let Event::Msg { args, headers, .. } = self else {
            return None;
        };
        let mut tokens = args
            .split(|b| *b == b' ' || *b == b'\t')
            .filter(|t| !t.is_empty());
        let with_reply = if *headers { 5 } else { 4 };
        if tokens.clone().count() != with_reply {
            return None;
        }
        tokens.nth(2)
    }
}

#[derive(Debug, Default)]
pub struct Scanner {
    /// Start of a control line whose end has not arrived yet.
    partial: Vec<u8>,
    /// Payload bytes plus the trailing CRLF still to skip.
    skip: usize,
    capture: Capture,
    seq_want: usize,
    seq_have: usize,
    seq: [u8; SEQ_BYTES],
    /// The payload being captured: its total and header lengths, and the bytes so far when
    /// it arrives in more than one chunk.
    payload_want: Option<(usize, usize)>,
    payload: Vec<u8>,
}

impl Scanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// A scanner that also reports the sequence number at the start of each payload.
    pub fn with_seq_capture() -> Self {
        Self::capturing(Capture::Seq)
    }

    /// A scanner that also reports the payloads `capture` asks for.
    pub fn capturing(capture: Capture) -> Self {
        Self {
            capture,
            ..Self::default()
        }
    }

    /// Scans `data`, the next bytes of the stream, and calls `on` for each event.
    pub fn feed(&mut self, data: &[u8], on: &mut impl FnMut(Event<'_>)) -> Result<()> {
        let mut i = 0;
        while i < data.len() {
            if self.skip > 0 {
                i += self.skip_payload(&data[i..], on);
                continue;
            }
            let rest = &data[i..];
            let Some(nl) = memchr::memchr(b'\n', rest) else {
                if self.partial.len() + rest.len() > MAX_LINE {
                    bail!("control line from server longer than {MAX_LINE} bytes");
                }
                self.partial.extend_from_slice(rest);
                break;
            };
            if self.partial.is_empty() {
                self.control(&rest[..nl], on)?;
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&rest[..nl]);
                let result = self.control(&line, on);
                line.clear();
                self.partial = line;
                result?;
            }
            i += nl + 1;
        }
        Ok(())
    }

    fn skip_payload(&mut self, data: &[u8], on: &mut impl FnMut(Event<'_>)) -> usize {
        if let Some((want, hdr_len)) = self.payload_want {
            let have = self.payload.len();
            if have == 0 && data.len() >= want {
                self.payload_want = None;
                self.skip -= want;
                let (headers, body) = data[..want].split_at(hdr_len);
                on(Event::Payload { headers, body });
                return want;
            }
            let take = (want - have).min(data.len());
            self.payload.extend_from_slice(&data[..take]);
            self.skip -= take;
            if self.payload.len() == want {
                self.payload_want = None;
                let (headers, body) = self.payload.split_at(hdr_len);
                on(Event::Payload { headers, body });
                self.payload.clear();
            }
            return take;
        }
        if self.seq_have < self.seq_want {
            let take = (self.seq_want - self.seq_have).min(data.len());
            self.seq[self.seq_have..self.seq_have + take].copy_from_slice(&data[..take]);
            self.seq_have += take;
            self.skip -= take;
            if self.seq_have == self.seq_want {
                on(Event::Seq(u64::from_le_bytes(self.seq)));
            }
            return take;
        }
        let n = self.skip.min(data.len());
        self.skip -= n;
        n
    }

    fn control(&mut self, line: &[u8], on: &mut impl FnMut(Event<'_>)) -> Result<()> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let op_end = line
            .iter()
            .position(|b| *b == b' ' || *b == b'\t')
            .unwrap_or(line.len());
        let (op, args) = line.split_at(op_end);
        let args = args.trim_ascii();
        let headers = if op.eq_ignore_ascii_case(b"MSG") {
            false
        } else if op.eq_ignore_ascii_case(b"HMSG") {
            true
        } else {
            on(if op.eq_ignore_ascii_case(b"PING") {
                Event::Ping
            } else if op.eq_ignore_ascii_case(b"PONG") {
                Event::Pong
            } else if op.eq_ignore_ascii_case(b"INFO") {
                Event::Info
            } else if op.eq_ignore_ascii_case(b"+OK") {
                Event::Ok
            } else if op.eq_ignore_ascii_case(b"-ERR") {
                Event::Err(args)
            } else {
                bail!(
                    "unexpected line from server: {:?}",
                    String::from_utf8_lossy(&line[..line.len().min(80)])
                );
            });
            return Ok(());
        };
        let bad = || {
            format!(
                "bad size in {:?}",
                String::from_utf8_lossy(&line[..line.len().min(80)])
            )
        };
        let (rest, size) = last_number(args).with_context(bad)?;
        let hdr_len = if headers {
            let (_, h) = last_number(rest.trim_ascii_end()).with_context(bad)?;
            ensure!(h <= size, "{}: header block longer than the message", bad());
            h
        } else {
            0
        };
        on(Event::Msg {
            args,
            size,
            headers,
        });
        self.skip = size + 2;
        self.seq_have = 0;
        self.seq_want = if self.capture == Capture::Seq && !headers && size >= SEQ_BYTES {
            SEQ_BYTES
        } else {
            0
        };
        let capture = match self.capture {
            Capture::All => true,
            Capture::Headered => headers,
            Capture::Nothing | Capture::Seq => false,
        };
        self.payload_want = None;
        if capture && size <= MAX_CAPTURE {
            if size == 0 {
                on(Event::Payload {
                    headers: &[],
                    body: &[],
                });
            } else {
                self.payload_want = Some((size, hdr_len));
            }
        }
        Ok(())
    }
}

/// The decimal number that ends `args`, and what comes before it.
fn last_number(args: &[u8]) -> Option<(&[u8], usize)> {
    let start = args
        .iter()
        .rposition(|b| *b == b' ' || *b == b'\t')
        .map_or(0, |p| p + 1);
    let digits = &args[start..];
    if digits.is_empty() || digits.len() > 12 {
        return None;
    }
    let n = digits.iter().try_fold(0usize, |n, d| {
        d.is_ascii_digit().then(|| n * 10 + usize::from(d - b'0'))
    })?;
    Some((&args[..start], n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq)]
    struct Counts {
        msgs: u64,
        payload: u64,
        pings: u64,
        pongs: u64,
        infos: u64,
        replies: Vec<Vec<u8>>,
        seqs: Vec<u64>,
    }

    fn scan(chunks: &[&[u8]]) -> Counts {
        let mut s = Scanner::with_seq_capture();
        let mut c = Counts::default();
        for chunk in chunks {
            s.feed(chunk, &mut |ev| {
                if let Some(r) = ev.reply() {
                    c.replies.push(r.to_vec());
                }
                match ev {
                    Event::Msg { size, .. } => {
                        c.msgs += 1;
                        c.payload += size as u64;
                    }
                    Event::Seq(n) => c.seqs.push(n),
                    Event::Ping => c.pings += 1,
                    Event::Pong => c.pongs += 1,
                    Event::Info => c.infos += 1,
                    Event::Ok | Event::Err(_) | Event::Payload { .. } => {}
                }
            })
            .expect("valid stream");
        }
        c
    }

    fn stream() -> Vec<u8> {
        let mut v = b"INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\n".to_vec();
        for i in 0u64..200 {
            let mut payload = i.to_le_bytes().to_vec();
            payload.extend(std::iter::repeat_n(b'\n', (i % 13) as usize));
            match i % 5 {
                0 => v.extend_from_slice(format!("MSG foo.bar 1 {}\r\n", payload.len()).as_bytes()),
                1 => v.extend_from_slice(
                    format!("msg foo  2\t_INBOX.x.{i} {}\r\n", payload.len()).as_bytes(),
                ),
                2 => v.extend_from_slice(b"PING\r\nPONG\r\n+OK\r\n"),
                3 => {
                    v.extend_from_slice(
                        format!("HMSG h 3 12 {}\r\n", payload.len() + 12).as_bytes(),
                    );
                    v.extend_from_slice(b"NATS/1.0\r\n\r\n");
                }
                _ => v.extend_from_slice(format!("MSG a 9 {}\n", payload.len()).as_bytes()),
            }
            if i % 5 != 2 {
                v.extend_from_slice(&payload);
                v.extend_from_slice(b"\r\n");
            }
        }
        v
    }

    #[test]
    fn split_points_do_not_change_counts() {
        let data = stream();
        let whole = scan(&[&data]);
        assert_eq!(whole.msgs, 160);
        assert_eq!(whole.pings, 40);
        assert_eq!(whole.pongs, 40);
        assert_eq!(whole.infos, 1);
        assert_eq!(whole.replies.len(), 40);
        // HMSG payloads start with the header block, so only MSG sequences are reported.
        assert_eq!(whole.seqs.len(), 120);

        // Deterministic pseudo-random split points (xorshift), plus every byte on its own.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..500 {
            let mut cuts = Vec::new();
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                cuts.push((x % data.len() as u64) as usize);
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&data[at..c]);
                at = c;
            }
            chunks.push(&data[at..]);
            assert_eq!(scan(&chunks), whole);
        }
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(scan(&bytes), whole);
    }

    /// Every (headers, body) pair reported by a scanner capturing `capture`.
    fn payloads(capture: Capture, chunks: &[&[u8]]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut s = Scanner::capturing(capture);
        let mut out = Vec::new();
        for chunk in chunks {
            s.feed(chunk, &mut |ev| {
                if let Event::Payload { headers, body } = ev {
                    out.push((headers.to_vec(), body.to_vec()));
                }
            })
            .expect("valid stream");
        }
        out
    }

    #[test]
    fn captures_payloads_across_any_split() {
        let data: &[u8] = b"MSG _INBOX.a.1 1 22\r\n{\"stream\":\"S\",\"seq\":1}\r\n\
            HMSG _INBOX.a.2 1 28 28\r\nNATS/1.0 408 Request Timeout\r\n\
            MSG x 1 0\r\n\r\n\
            HMSG k 1 $JS.ACK.x 18 22\r\nNATS/1.0\r\nA: b\r\n\r\nabcd\r\n";
        let all = payloads(Capture::All, &[data]);
        let expected: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"".to_vec(), br#"{"stream":"S","seq":1}"#.to_vec()),
            (b"NATS/1.0 408 Request Timeout".to_vec(), b"".to_vec()),
            (b"".to_vec(), b"".to_vec()),
            (b"NATS/1.0\r\nA: b\r\n\r\n".to_vec(), b"abcd".to_vec()),
        ];
        assert_eq!(all, expected);
        let headered: Vec<_> = expected
            .iter()
            .filter(|(h, _)| !h.is_empty())
            .cloned()
            .collect();
        assert_eq!(payloads(Capture::Headered, &[data]), headered);
        assert!(payloads(Capture::Nothing, &[data]).is_empty());
        for cut in 0..data.len() {
            assert_eq!(payloads(Capture::All, &[&data[..cut], &data[cut..]]), all);
        }
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(payloads(Capture::All, &bytes), all);
        assert_eq!(payloads(Capture::Headered, &bytes), headered);
    }

    #[test]
    fn subject_of_a_message() {
        let mut subjects = Vec::new();
        Scanner::new()
            .feed(
                b"MSG  a.b 1 r 0\r\n\r\nHMSG c 2 4 4\r\nNATS\r\n",
                &mut |ev| {
                    if let Some(s) = ev.subject() {
                        subjects.push(s.to_vec());
                    }
                },
            )
            .expect("valid stream");
        assert_eq!(subjects, vec![b"a.b".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn rejects_header_longer_than_message() {
        let mut s = Scanner::new();
        assert!(s.feed(b"HMSG a 1 9 4\r\n", &mut |_| {}).is_err());
    }

    #[test]
    fn rejects_garbage_and_bad_sizes() {
        let mut s = Scanner::new();
        assert!(s.feed(b"MSG a 1 x\r\n", &mut |_| {}).is_err());
        let mut s = Scanner::new();
        assert!(s.feed(b"BOGUS\r\n", &mut |_| {}).is_err());
        let mut s = Scanner::new();
        let mut errs = 0;
        s.feed(b"-ERR 'Stale Connection'\r\n", &mut |ev| {
            if let Event::Err(text) = ev {
                assert_eq!(text, b"'Stale Connection'");
                errs += 1;
            }
        })
        .expect("valid stream");
        assert_eq!(errs, 1);
    }
}
