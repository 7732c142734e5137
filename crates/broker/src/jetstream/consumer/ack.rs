//! Ack reply subjects and what an ack says.
//!
//! Every delivered message carries the reply subject
//! `$JS.ACK.<stream>.<consumer>.<delivered count>.<stream seq>.<consumer seq>.<timestamp ns>.<pending>`
//! (the v1 form the clients parse for `Message::info`); whatever the client publishes there
//! is an ack: empty or `+ACK` (or the old `+OK`), `-NAK` with an optional delay (`{"delay":
//! ns}` or a Go duration), `+WPI` (in progress: the ack timer starts again), `+NXT` (ack and
//! ask for more, with an optional pull request after it), `+TERM` with an optional reason.

use serde::Deserialize;

use super::time::parse_go_duration;

/// The prefix of every ack subject.
pub(crate) const ACK_PREFIX: &str = "$JS.ACK.";

/// The subject a consumer listens on for its acks: `$JS.ACK.<stream>.<consumer>.>`.
pub(crate) fn ack_subscription(stream: &str, consumer: &str) -> String {
    format!("{ACK_PREFIX}{stream}.{consumer}.>")
}

/// What an ack reply subject tells about one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// How many times this message was delivered, this time included.
    pub delivered: u64,
    pub stream_seq: u64,
    pub consumer_seq: u64,
    /// When the stream stored the message.
    pub timestamp_ns: i64,
    /// Messages left for the consumer after this one.
    pub pending: u64,
}

/// Appends the ack reply subject of one delivery to `out`.
pub(crate) fn write_ack_reply(out: &mut String, stream: &str, consumer: &str, d: &Delivery) {
    let mut num = itoa::Buffer::new();
    out.reserve(ACK_PREFIX.len() + stream.len() + consumer.len() + 64);
    out.push_str(ACK_PREFIX);
    out.push_str(stream);
    out.push('.');
    out.push_str(consumer);
    for n in [d.delivered, d.stream_seq, d.consumer_seq] {
        out.push('.');
        out.push_str(num.format(n));
    }
    out.push('.');
    out.push_str(num.format(d.timestamp_ns));
    out.push('.');
    out.push_str(num.format(d.pending));
}

/// The sequence numbers an ack subject names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckTarget {
    pub delivered: u64,
    pub stream_seq: u64,
    pub consumer_seq: u64,
}

fn number(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 20 {
        return None;
    }
    token.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Parses an ack subject of the v1 form (exactly nine tokens; nats-server ignores any other
/// shape). Stream and consumer names cannot contain dots, so the positions are fixed.
pub(crate) fn parse_ack_subject(subject: &str) -> Option<AckTarget> {
    let rest = subject.strip_prefix(ACK_PREFIX)?.as_bytes();
    let mut tokens = rest.split(|&b| b == b'.');
    let _stream = tokens.next()?;
    let _consumer = tokens.next()?;
    let delivered = number(tokens.next()?)?;
    let stream_seq = number(tokens.next()?)?;
    let consumer_seq = number(tokens.next()?)?;
    let _ts = tokens.next()?;
    let _pending = tokens.next()?;
    if tokens.next().is_some() {
        return None;
    }
    Some(AckTarget {
        delivered,
        stream_seq,
        consumer_seq,
    })
}

/// What an ack asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AckKind {
    Ack,
    /// Redeliver, after `delay` nanoseconds when given.
    Nak {
        delay: Option<i64>,
    },
    Progress,
    /// Ack, then treat what follows as a pull request (its body, possibly empty).
    Next(Vec<u8>),
    Term {
        reason: Option<String>,
    },
    /// Something else: ignored, as nats-server does.
    Unknown,
}

#[derive(Deserialize)]
struct NakOptions {
    #[serde(default)]
    delay: i64,
}

/// Reads an ack body (the payload after any headers).
pub(crate) fn parse_ack(body: &[u8]) -> AckKind {
    if body.is_empty() || body == b"+ACK" || body == b"+OK" {
        return AckKind::Ack;
    }
    if let Some(rest) = body.strip_prefix(b"+NXT") {
        return AckKind::Next(rest.to_vec());
    }
    if let Some(rest) = body.strip_prefix(b"-NAK") {
        let arg = rest.trim_ascii();
        if arg.is_empty() {
            return AckKind::Nak { delay: None };
        }
        let delay = if arg.first() == Some(&b'{') {
            serde_json::from_slice::<NakOptions>(arg)
                .ok()
                .map(|o| o.delay)
        } else {
            std::str::from_utf8(arg).ok().and_then(parse_go_duration)
        };
        if delay.is_none() {
            tracing::warn!(
                "JetStream consumer: bad NAK delay value {:?}",
                String::from_utf8_lossy(arg)
            );
        }
        return AckKind::Nak { delay };
    }
    if body == b"+WPI" {
        return AckKind::Progress;
    }
    if let Some(rest) = body.strip_prefix(b"+TERM") {
        let reason = String::from_utf8_lossy(rest.trim_ascii()).into_owned();
        return AckKind::Term {
            reason: (!reason.is_empty()).then_some(reason),
        };
    }
    AckKind::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_round_trip() {
        let mut s = String::new();
        let d = Delivery {
            delivered: 2,
            stream_seq: 100,
            consumer_seq: 7,
            timestamp_ns: 1_700_000_000_000_000_000,
            pending: 42,
        };
        write_ack_reply(&mut s, "S", "D", &d);
        assert_eq!(s, "$JS.ACK.S.D.2.100.7.1700000000000000000.42");
        assert_eq!(
            parse_ack_subject(&s),
            Some(AckTarget {
                delivered: 2,
                stream_seq: 100,
                consumer_seq: 7
            })
        );
    }

    #[test]
    fn bad_subjects() {
        for bad in [
            "$JS.ACK.S.D.1.2.3.4",
            "$JS.ACK.S.D.1.2.3.4.5.6",
            "$JS.ACK.S.D.x.2.3.4.5",
            "$JS.ACK.S.D.1..3.4.5",
            "$JS.NAK.S.D.1.2.3.4.5",
            "",
        ] {
            assert_eq!(parse_ack_subject(bad), None, "{bad}");
        }
    }

    #[test]
    fn ack_kinds() {
        assert_eq!(parse_ack(b""), AckKind::Ack);
        assert_eq!(parse_ack(b"+ACK"), AckKind::Ack);
        assert_eq!(parse_ack(b"+OK"), AckKind::Ack);
        assert_eq!(parse_ack(b"-NAK"), AckKind::Nak { delay: None });
        assert_eq!(
            parse_ack(br#"-NAK {"delay": 2000000000}"#),
            AckKind::Nak {
                delay: Some(2_000_000_000)
            }
        );
        assert_eq!(
            parse_ack(b"-NAK 1.5s"),
            AckKind::Nak {
                delay: Some(1_500_000_000)
            }
        );
        assert_eq!(parse_ack(b"-NAK nonsense"), AckKind::Nak { delay: None });
        assert_eq!(parse_ack(b"+WPI"), AckKind::Progress);
        assert_eq!(parse_ack(b"+NXT"), AckKind::Next(Vec::new()));
        assert_eq!(
            parse_ack(br#"+NXT {"batch":5}"#),
            AckKind::Next(br#" {"batch":5}"#.to_vec())
        );
        assert_eq!(parse_ack(b"+TERM"), AckKind::Term { reason: None });
        assert_eq!(
            parse_ack(b"+TERM bad input "),
            AckKind::Term {
                reason: Some("bad input".into())
            }
        );
        assert_eq!(parse_ack(b"hello"), AckKind::Unknown);
    }
}
