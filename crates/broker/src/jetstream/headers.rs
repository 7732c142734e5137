//! The NATS header block (`NATS/1.0[ status]\r\nKey: value\r\n...\r\n\r\n`): reading the
//! `Nats-*` headers JetStream acts on, and adding the ones it sends.

pub const MSG_ID: &str = "Nats-Msg-Id";
pub const EXPECTED_STREAM: &str = "Nats-Expected-Stream";
pub const EXPECTED_LAST_SEQ: &str = "Nats-Expected-Last-Sequence";
pub const EXPECTED_LAST_SUBJECT_SEQ: &str = "Nats-Expected-Last-Subject-Sequence";
pub const EXPECTED_LAST_MSG_ID: &str = "Nats-Expected-Last-Msg-Id";
pub const ROLLUP: &str = "Nats-Rollup";
pub const STREAM: &str = "Nats-Stream";
pub const SUBJECT: &str = "Nats-Subject";
pub const SEQUENCE: &str = "Nats-Sequence";
pub const TIME_STAMP: &str = "Nats-Time-Stamp";
pub const LAST_SEQUENCE: &str = "Nats-Last-Sequence";
pub const MSG_SIZE: &str = "Nats-Msg-Size";
pub const STREAM_SOURCE: &str = "Nats-Stream-Source";

/// The value of header `key` (name compared without case), trimmed.
pub fn get<'a>(block: &'a [u8], key: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(block).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
    })
}

/// A header block with `key: value` added after the existing headers (a status line and
/// other headers kept).
pub fn append(block: Option<&[u8]>, key: &str, value: &str) -> Vec<u8> {
    let mut out = match block {
        Some(b) if b.ends_with(b"\r\n\r\n") => b[..b.len() - 2].to_vec(),
        _ => b"NATS/1.0\r\n".to_vec(),
    };
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out
}

/// A header block with only a status line (`NATS/1.0 404 Message Not Found`).
pub fn status(code: u16, text: &str) -> Vec<u8> {
    format!("NATS/1.0 {code} {text}\r\n\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_and_append() {
        let block = b"NATS/1.0\r\nNats-Msg-Id: 7\r\nnats-rollup:  sub \r\n\r\n";
        assert_eq!(get(block, MSG_ID), Some("7"));
        assert_eq!(get(block, ROLLUP), Some("sub"));
        assert_eq!(get(block, EXPECTED_STREAM), None);
        let out = append(Some(block), STREAM, "S");
        assert_eq!(get(&out, STREAM), Some("S"));
        assert_eq!(get(&out, MSG_ID), Some("7"));
        assert!(out.ends_with(b"Nats-Stream: S\r\n\r\n"));
        let fresh = append(None, SEQUENCE, "1");
        assert_eq!(fresh, b"NATS/1.0\r\nNats-Sequence: 1\r\n\r\n");
        assert_eq!(
            status(404, "Message Not Found"),
            b"NATS/1.0 404 Message Not Found\r\n\r\n"
        );
    }
}
