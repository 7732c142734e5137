//! Appends protocol operations to an output buffer.
//!
//! Each function reserves the exact length it is about to write and then copies slices in,
//! so a connection's outbound buffer grows at most once per operation and, once it has
//! reached its working size, never allocates again. Numbers are formatted with `itoa` on
//! the stack. Nothing here validates its input: the caller decides what is legal to send
//! (the parser produced it, or the subject rules checked it).

/// Server keep-alive probe, and a client's answer to one.
pub const PING: &[u8] = b"PING\r\n";
/// Answer to a `PING`.
pub const PONG: &[u8] = b"PONG\r\n";
/// Acknowledgement sent for every accepted op in verbose mode.
pub const OK: &[u8] = b"+OK\r\n";

/// Appends `MSG <subject> <sid> [reply] <#bytes>\r\n<payload>\r\n`.
pub fn msg(out: &mut Vec<u8>, subject: &[u8], sid: &[u8], reply: Option<&[u8]>, payload: &[u8]) {
    let mut size = itoa::Buffer::new();
    let size = size.format(payload.len()).as_bytes();
    out.reserve(
        4 + subject.len()
            + 1
            + sid.len()
            + reply.map_or(0, |r| r.len() + 1)
            + 1
            + size.len()
            + 2
            + payload.len()
            + 2,
    );
    out.extend_from_slice(b"MSG ");
    out.extend_from_slice(subject);
    out.push(b' ');
    out.extend_from_slice(sid);
    push_optional(out, reply);
    out.push(b' ');
    out.extend_from_slice(size);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Appends `HMSG <subject> <sid> [reply] <#hdr> <#total>\r\n<headers><payload>\r\n`.
///
/// `headers` is the whole header block including its final blank line; the total size
/// counts headers and payload together, as the protocol requires.
pub fn hmsg(
    out: &mut Vec<u8>,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    headers: &[u8],
    payload: &[u8],
) {
    let mut hdr = itoa::Buffer::new();
    let hdr = hdr.format(headers.len()).as_bytes();
    let mut total = itoa::Buffer::new();
    let total = total.format(headers.len() + payload.len()).as_bytes();
    out.reserve(
        5 + subject.len()
            + 1
            + sid.len()
            + reply.map_or(0, |r| r.len() + 1)
            + 1
            + hdr.len()
            + 1
            + total.len()
            + 2
            + headers.len()
            + payload.len()
            + 2,
    );
    out.extend_from_slice(b"HMSG ");
    out.extend_from_slice(subject);
    out.push(b' ');
    out.extend_from_slice(sid);
    push_optional(out, reply);
    out.push(b' ');
    out.extend_from_slice(hdr);
    out.push(b' ');
    out.extend_from_slice(total);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(headers);
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Appends a routed message: `RMSG <account> <subject> [reply] <#bytes>`, or with queue names
/// `RMSG <account> <subject> + <reply> <q>... <#bytes>` / `... | <q>... <#bytes>`; with
/// `headers`, `HMSG` with the same forms and `<#hdr> <#total>`.
#[allow(clippy::too_many_arguments)]
pub fn rmsg<'q>(
    out: &mut Vec<u8>,
    account: &[u8],
    subject: &[u8],
    reply: Option<&[u8]>,
    queues: impl Iterator<Item = &'q [u8]> + Clone,
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    routed(
        out,
        b"RMSG ",
        Some(account),
        subject,
        reply,
        queues,
        headers,
        payload,
    );
}

/// Appends a message for a leaf node connection: `LMSG <subject> [reply | + reply queues |
/// \| queues] <size>`, or `HMSG` with the header size before the total when it has headers
/// (nats-server's leaf form: no account, the connection is bound to one).
pub fn lmsg<'q>(
    out: &mut Vec<u8>,
    subject: &[u8],
    reply: Option<&[u8]>,
    queues: impl Iterator<Item = &'q [u8]> + Clone,
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    routed(
        out, b"LMSG ", None, subject, reply, queues, headers, payload,
    );
}

#[allow(clippy::too_many_arguments)]
fn routed<'q>(
    out: &mut Vec<u8>,
    plain_op: &[u8; 5],
    account: Option<&[u8]>,
    subject: &[u8],
    reply: Option<&[u8]>,
    queues: impl Iterator<Item = &'q [u8]> + Clone,
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    let queue_len: usize = queues.clone().map(|q| q.len() + 1).sum();
    let mut hdr = itoa::Buffer::new();
    let hdr = headers.map(|h| hdr.format(h.len()).as_bytes());
    let mut total = itoa::Buffer::new();
    let total = total
        .format(headers.map_or(0, <[u8]>::len) + payload.len())
        .as_bytes();
    out.reserve(
        5 + account.map_or(0, |a| a.len() + 1)
            + subject.len()
            + 2
            + reply.map_or(0, |r| r.len() + 1)
            + queue_len
            + hdr.map_or(0, |h| h.len() + 1)
            + 1
            + total.len()
            + 2
            + headers.map_or(0, <[u8]>::len)
            + payload.len()
            + 2,
    );
    out.extend_from_slice(if headers.is_some() {
        b"HMSG "
    } else {
        plain_op
    });
    if let Some(account) = account {
        out.extend_from_slice(account);
        out.push(b' ');
    }
    out.extend_from_slice(subject);
    if queue_len > 0 {
        match reply {
            Some(r) => {
                out.extend_from_slice(b" + ");
                out.extend_from_slice(r);
            }
            None => out.extend_from_slice(b" |"),
        }
        for q in queues {
            out.push(b' ');
            out.extend_from_slice(q);
        }
    } else {
        push_optional(out, reply);
    }
    out.push(b' ');
    if let Some(h) = hdr {
        out.extend_from_slice(h);
        out.push(b' ');
    }
    out.extend_from_slice(total);
    out.extend_from_slice(b"\r\n");
    if let Some(h) = headers {
        out.extend_from_slice(h);
    }
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Appends `LS+ <subject>[ <queue> <weight>]\r\n` (leaf node interest).
pub fn ls_sub(out: &mut Vec<u8>, subject: &[u8], queue: Option<(&[u8], u32)>) {
    out.extend_from_slice(b"LS+ ");
    out.extend_from_slice(subject);
    if let Some((q, weight)) = queue {
        out.push(b' ');
        out.extend_from_slice(q);
        out.push(b' ');
        out.extend_from_slice(itoa::Buffer::new().format(weight).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `LS- <subject>[ <queue>]\r\n`.
pub fn ls_unsub(out: &mut Vec<u8>, subject: &[u8], queue: Option<&[u8]>) {
    out.extend_from_slice(b"LS- ");
    out.extend_from_slice(subject);
    if let Some(q) = queue {
        out.push(b' ');
        out.extend_from_slice(q);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `LS+ <origin> <account> <subject>[ <queue> <weight>]\r\n`: route interest that
/// came from the leaf cluster `origin` (for peers that announced `lnoc`).
pub fn ls_sub_origin(
    out: &mut Vec<u8>,
    origin: &[u8],
    account: &[u8],
    subject: &[u8],
    queue: Option<(&[u8], u32)>,
) {
    out.extend_from_slice(b"LS+ ");
    out.extend_from_slice(origin);
    out.push(b' ');
    out.extend_from_slice(account);
    out.push(b' ');
    out.extend_from_slice(subject);
    if let Some((q, weight)) = queue {
        out.push(b' ');
        out.extend_from_slice(q);
        out.push(b' ');
        out.extend_from_slice(itoa::Buffer::new().format(weight).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a routed message from the leaf cluster `origin`: `LMSG <origin> <account>
/// <subject> [reply | + reply queues | \| queues] <header size> <total size>` (the header
/// size always present, 0 without headers).
#[allow(clippy::too_many_arguments)]
pub fn lmsg_origin<'q>(
    out: &mut Vec<u8>,
    origin: &[u8],
    account: &[u8],
    subject: &[u8],
    reply: Option<&[u8]>,
    queues: impl Iterator<Item = &'q [u8]> + Clone,
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    out.extend_from_slice(b"LMSG ");
    out.extend_from_slice(origin);
    out.push(b' ');
    out.extend_from_slice(account);
    out.push(b' ');
    out.extend_from_slice(subject);
    let mut queues = queues.peekable();
    if queues.peek().is_some() {
        match reply {
            Some(r) => {
                out.extend_from_slice(b" + ");
                out.extend_from_slice(r);
            }
            None => out.extend_from_slice(b" |"),
        }
        for q in queues {
            out.push(b' ');
            out.extend_from_slice(q);
        }
    } else if let Some(r) = reply {
        out.push(b' ');
        out.extend_from_slice(r);
    }
    let hdr = headers.map_or(0, <[u8]>::len);
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(hdr).as_bytes());
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(hdr + payload.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(h) = headers {
        out.extend_from_slice(h);
    }
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Appends `RS+ <account> <subject>[ <queue> <weight>]\r\n`.
pub fn rs_sub(out: &mut Vec<u8>, account: &[u8], subject: &[u8], queue: Option<(&[u8], u32)>) {
    out.extend_from_slice(b"RS+ ");
    out.extend_from_slice(account);
    out.push(b' ');
    out.extend_from_slice(subject);
    if let Some((q, weight)) = queue {
        out.push(b' ');
        out.extend_from_slice(q);
        out.push(b' ');
        out.extend_from_slice(itoa::Buffer::new().format(weight).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `RS- <account> <subject>[ <queue>]\r\n`.
pub fn rs_unsub(out: &mut Vec<u8>, account: &[u8], subject: &[u8], queue: Option<&[u8]>) {
    out.extend_from_slice(b"RS- ");
    out.extend_from_slice(account);
    out.push(b' ');
    out.extend_from_slice(subject);
    push_optional(out, queue);
    out.extend_from_slice(b"\r\n");
}

/// Appends `-ERR '<text>'\r\n`, the exact form clients match on (some compare the quotes).
pub fn err(out: &mut Vec<u8>, text: &str) {
    out.reserve(6 + text.len() + 3);
    out.extend_from_slice(b"-ERR '");
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"'\r\n");
}

/// Appends `INFO <json>\r\n`.
pub fn info(out: &mut Vec<u8>, json: &[u8]) {
    line_with_json(out, b"INFO ", json);
}

/// Appends `CONNECT <json>\r\n`.
pub fn connect(out: &mut Vec<u8>, json: &[u8]) {
    line_with_json(out, b"CONNECT ", json);
}

/// Appends `PUB <subject> [reply] <#bytes>\r\n<payload>\r\n`.
pub fn publish(out: &mut Vec<u8>, subject: &[u8], reply: Option<&[u8]>, payload: &[u8]) {
    let mut size = itoa::Buffer::new();
    let size = size.format(payload.len()).as_bytes();
    out.reserve(
        4 + subject.len()
            + reply.map_or(0, |r| r.len() + 1)
            + 1
            + size.len()
            + 2
            + payload.len()
            + 2,
    );
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject);
    push_optional(out, reply);
    out.push(b' ');
    out.extend_from_slice(size);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Appends `HPUB <subject> [reply] <#hdr> <#total>\r\n<headers><payload>\r\n`.
pub fn hpublish(
    out: &mut Vec<u8>,
    subject: &[u8],
    reply: Option<&[u8]>,
    headers: &[u8],
    payload: &[u8],
) {
    let mut hdr = itoa::Buffer::new();
    let hdr = hdr.format(headers.len()).as_bytes();
    let mut total = itoa::Buffer::new();
    let total = total.format(headers.len() + payload.len()).as_bytes();
    out.reserve(
        5 + subject.len()
            + reply.map_or(0, |r| r.len() + 1)
            + 1
            + hdr.len()
            + 1
            + total.len()
            + 2
            + headers.len()
            + payload.len()
            + 2,
    );
    out.extend_from_slice(b"HPUB ");
    out.extend_from_slice(subject);
    push_optional(out, reply);
    out.push(b' ');
    out.extend_from_slice(hdr);
    out.push(b' ');
    out.extend_from_slice(total);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(headers);
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// Appends `SUB <subject> [queue] <sid>\r\n`.
pub fn sub(out: &mut Vec<u8>, subject: &[u8], queue: Option<&[u8]>, sid: &[u8]) {
    out.reserve(4 + subject.len() + queue.map_or(0, |q| q.len() + 1) + 1 + sid.len() + 2);
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject);
    push_optional(out, queue);
    out.push(b' ');
    out.extend_from_slice(sid);
    out.extend_from_slice(b"\r\n");
}

/// Appends `UNSUB <sid> [max]\r\n`.
pub fn unsub(out: &mut Vec<u8>, sid: &[u8], max: Option<u64>) {
    let mut n = itoa::Buffer::new();
    let max = max.map(|m| n.format(m).as_bytes());
    out.reserve(6 + sid.len() + max.map_or(0, |m| m.len() + 1) + 2);
    out.extend_from_slice(b"UNSUB ");
    out.extend_from_slice(sid);
    push_optional(out, max);
    out.extend_from_slice(b"\r\n");
}

/// Appends ` <arg>` when there is an optional middle argument (reply, queue, max).
#[inline]
fn push_optional(out: &mut Vec<u8>, arg: Option<&[u8]>) {
    if let Some(arg) = arg {
        out.push(b' ');
        out.extend_from_slice(arg);
    }
}

fn line_with_json(out: &mut Vec<u8>, op: &[u8], json: &[u8]) {
    out.reserve(op.len() + json.len() + 2);
    out.extend_from_slice(op);
    out.extend_from_slice(json);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod route_tests {
    use super::*;

    #[test]
    fn routed_forms() {
        let none = std::iter::empty::<&[u8]>();
        let mut out = Vec::new();
        rmsg(&mut out, b"$G", b"foo", None, none.clone(), None, b"hi");
        rmsg(&mut out, b"$G", b"foo", Some(b"r"), none, None, b"hi");
        let qs = [&b"q1"[..], b"q2"];
        rmsg(
            &mut out,
            b"$G",
            b"foo",
            Some(b"r"),
            qs.iter().copied(),
            None,
            b"hi",
        );
        rmsg(
            &mut out,
            b"$G",
            b"foo",
            None,
            qs.iter().copied(),
            Some(b"H\r\n\r\n"),
            b"hi",
        );
        rs_sub(&mut out, b"$G", b"foo", None);
        rs_sub(&mut out, b"$G", b"foo", Some((b"q", 12)));
        rs_unsub(&mut out, b"$G", b"foo", Some(b"q"));
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "RMSG $G foo 2\r\nhi\r\nRMSG $G foo r 2\r\nhi\r\nRMSG $G foo + r q1 q2 2\r\nhi\r\n\
             HMSG $G foo | q1 q2 5 7\r\nH\r\n\r\nhi\r\nRS+ $G foo\r\nRS+ $G foo q 12\r\nRS- $G foo q\r\n"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(f: impl FnOnce(&mut Vec<u8>)) -> String {
        // Appenders must append, not overwrite.
        let mut v = b"<".to_vec();
        f(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    }

    #[test]
    fn server_ops() {
        assert_eq!(
            out(|o| msg(o, b"foo.bar", b"9", None, b"hello")),
            "<MSG foo.bar 9 5\r\nhello\r\n"
        );
        assert_eq!(
            out(|o| msg(o, b"foo", b"1", Some(b"_INBOX.a"), b"")),
            "<MSG foo 1 _INBOX.a 0\r\n\r\n"
        );
        assert_eq!(
            out(|o| hmsg(o, b"foo", b"1", None, b"NATS/1.0\r\n\r\n", b"hi")),
            "<HMSG foo 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"
        );
        assert_eq!(
            out(|o| hmsg(o, b"foo", b"1", Some(b"r"), b"NATS/1.0\r\n\r\n", b"")),
            "<HMSG foo 1 r 12 12\r\nNATS/1.0\r\n\r\n\r\n"
        );
        assert_eq!(
            out(|o| err(o, "Unknown Protocol Operation")),
            "<-ERR 'Unknown Protocol Operation'\r\n"
        );
        assert_eq!(
            out(|o| err(o, r#"Permissions Violation for Publish to "x""#)),
            "<-ERR 'Permissions Violation for Publish to \"x\"'\r\n"
        );
        assert_eq!(out(|o| info(o, b"{}")), "<INFO {}\r\n");
        assert_eq!(PING, b"PING\r\n");
        assert_eq!(PONG, b"PONG\r\n");
        assert_eq!(OK, b"+OK\r\n");
    }

    #[test]
    fn client_ops() {
        assert_eq!(
            out(|o| connect(o, br#"{"verbose":false}"#)),
            "<CONNECT {\"verbose\":false}\r\n"
        );
        assert_eq!(
            out(|o| publish(o, b"foo", None, b"hello")),
            "<PUB foo 5\r\nhello\r\n"
        );
        assert_eq!(
            out(|o| publish(o, b"foo", Some(b"bar"), b"")),
            "<PUB foo bar 0\r\n\r\n"
        );
        assert_eq!(
            out(|o| hpublish(o, b"foo", None, b"NATS/1.0\r\n\r\n", b"hi")),
            "<HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"
        );
        assert_eq!(
            out(|o| hpublish(o, b"foo", Some(b"r"), b"", b"hi")),
            "<HPUB foo r 0 2\r\nhi\r\n"
        );
        assert_eq!(out(|o| sub(o, b"foo.*", None, b"1")), "<SUB foo.* 1\r\n");
        assert_eq!(
            out(|o| sub(o, b"foo.>", Some(b"q"), b"22")),
            "<SUB foo.> q 22\r\n"
        );
        assert_eq!(out(|o| unsub(o, b"1", None)), "<UNSUB 1\r\n");
        assert_eq!(
            out(|o| unsub(o, b"1", Some(u64::MAX))),
            "<UNSUB 1 18446744073709551615\r\n"
        );
    }

    #[test]
    fn reserves_exactly_once() {
        let mut v = Vec::new();
        hmsg(
            &mut v,
            b"a.b",
            b"12",
            Some(b"reply"),
            b"NATS/1.0\r\n\r\n",
            &[7; 300],
        );
        assert_eq!(v.len(), v.capacity());
        let mut v = Vec::new();
        publish(&mut v, b"a.b", Some(b"reply"), &[7; 1000]);
        assert_eq!(v.len(), v.capacity());
    }
}
