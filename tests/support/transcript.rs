//! Scripted sessions recorded as normalised transcripts, for comparing two servers.
//!
//! A transcript is the list of frames a client received, one string per frame, with the
//! values that legitimately differ between runs or implementations masked:
//! - INFO becomes its sorted key set, with server_id, server_name, version, go, host, port,
//!   client_id, client_ip and nonce replaced by their JSON type; every other value
//!   (proto, headers, max_payload, auth_required, ...) must match exactly.
//! - Within a run of consecutive MSG/HMSG frames, frames are stably ordered by sid: the order
//!   in which one message fans out to several subscriptions of a connection is unspecified,
//!   the order of messages on one subscription is not (and is kept).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::client::{escaped, Feed, FrameRead, QUIET};
use crate::server::TestServer;

/// One step of a scripted session.
#[derive(Debug, Clone)]
pub enum Step {
    /// Bytes to send (the session's [`Feed`] decides how).
    Send(Vec<u8>),
    /// `PING`, then record frames up to and including the `PONG`.
    Barrier,
    /// Record frames until the server closes the connection.
    UntilClosed,
    /// Record whatever arrives within [`QUIET`] (usually nothing).
    Quiet,
}

/// Shorthand for [`Step::Send`].
pub fn send(bytes: impl AsRef<[u8]>) -> Step {
    Step::Send(bytes.as_ref().to_vec())
}

/// A named session: a config file for a fresh server, and the client's steps.
#[derive(Debug, Clone)]
pub struct Script {
    pub name: &'static str,
    pub config: &'static str,
    pub steps: Vec<Step>,
}

/// How long a step may wait for its frames.
const STEP_DEADLINE: Duration = Duration::from_secs(5);

/// Connects to `server`, runs `steps` fed as `feed`, and returns the normalised transcript,
/// starting with the INFO received on accept.
pub async fn record(server: &TestServer, steps: &[Step], feed: Feed) -> Vec<String> {
    let mut client = crate::connect(server, feed).await;
    let mut transcript = Vec::new();
    let mut segment = Vec::new();
    match client.read_frame(STEP_DEADLINE).await {
        FrameRead::Frame(info) => transcript.push(normalise_frame(&info)),
        other => panic!("{}: no INFO on accept: {other:?}", server.kind()),
    }
    let mut closed = false;
    for step in steps {
        match step {
            Step::Send(bytes) => {
                if !closed {
                    client.send_until_closed(bytes).await;
                }
            }
            Step::Barrier => {
                if !closed {
                    client.send_until_closed(b"PING\r\n").await;
                }
                loop {
                    match client.read_frame(STEP_DEADLINE).await {
                        FrameRead::Frame(frame) => {
                            let done = frame == b"PONG\r\n";
                            segment.push(frame);
                            if done {
                                break;
                            }
                        }
                        FrameRead::Closed => {
                            closed = true;
                            segment.push(b"<closed>".to_vec());
                            break;
                        }
                        FrameRead::TimedOut => {
                            segment.push(b"<timed out waiting for PONG>".to_vec());
                            break;
                        }
                    }
                }
            }
            Step::UntilClosed => loop {
                match client.read_frame(STEP_DEADLINE).await {
                    FrameRead::Frame(frame) => segment.push(frame),
                    FrameRead::Closed => {
                        closed = true;
                        segment.push(b"<closed>".to_vec());
                        break;
                    }
                    FrameRead::TimedOut => {
                        segment.push(b"<still open>".to_vec());
                        break;
                    }
                }
            },
            Step::Quiet => loop {
                match client.read_frame(QUIET).await {
                    FrameRead::Frame(frame) => segment.push(frame),
                    FrameRead::Closed => {
                        closed = true;
                        segment.push(b"<closed>".to_vec());
                        break;
                    }
                    FrameRead::TimedOut => break,
                }
            },
        }
        transcript.extend(normalise_segment(std::mem::take(&mut segment)));
    }
    transcript
}

/// The INFO keys whose values differ per run or per implementation; only their type counts.
const MASKED_INFO_KEYS: &[&str] = &[
    "server_id",
    "server_name",
    "version",
    "go",
    "host",
    "port",
    "client_id",
    "client_ip",
    "nonce",
];

fn normalise_segment(frames: Vec<Vec<u8>>) -> Vec<String> {
    let mut out: Vec<(Option<String>, String)> = frames
        .iter()
        .map(|frame| (msg_sid(frame), normalise_frame(frame)))
        .collect();
    let mut start = 0;
    while start < out.len() {
        let len = out[start..]
            .iter()
            .take_while(|(sid, _)| sid.is_some())
            .count();
        out[start..start + len].sort_by(|a, b| a.0.cmp(&b.0));
        start += len.max(1);
    }
    out.into_iter().map(|(_, text)| text).collect()
}

fn msg_sid(frame: &[u8]) -> Option<String> {
    if !(frame.starts_with(b"MSG ") || frame.starts_with(b"HMSG ")) {
        return None;
    }
    let line = frame.split(|&b| b == b'\r').next()?;
    let sid = std::str::from_utf8(line)
        .ok()?
        .split_ascii_whitespace()
        .nth(2)?;
    Some(sid.to_owned())
}

/// One frame as a transcript entry.
pub fn normalise_frame(frame: &[u8]) -> String {
    if let Some(info) = frame.strip_prefix(b"INFO ") {
        let json = std::str::from_utf8(info).unwrap_or_default().trim_end();
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(json) {
            return format!("INFO {}", normalise_info(map.into_iter()));
        }
    }
    escaped(frame)
}

fn normalise_info(fields: impl Iterator<Item = (String, Value)>) -> String {
    let sorted: BTreeMap<String, Value> = fields
        .map(|(key, value)| {
            let value = if MASKED_INFO_KEYS.contains(&key.as_str()) {
                Value::String(format!("<{}>", json_type(&value)))
            } else {
                value
            };
            (key, value)
        })
        .collect();
    serde_json::to_string(&sorted).unwrap_or_default()
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_masked_and_sorted() {
        let a =
            normalise_frame(br#"INFO {"server_id":"A","port":1,"headers":true,"max_payload":10} "#);
        let b =
            normalise_frame(br#"INFO {"max_payload":10,"headers":true,"server_id":"B","port":2} "#);
        assert_eq!(a, b);
        assert_eq!(
            a,
            r#"INFO {"headers":true,"max_payload":10,"port":"<number>","server_id":"<string>"}"#
        );
    }

    #[test]
    fn fan_out_order_is_normalised_per_run_of_msgs() {
        let seg = |frames: &[&[u8]]| normalise_segment(frames.iter().map(|f| f.to_vec()).collect());
        let a = seg(&[b"MSG a 2 1\r\nx\r\n", b"MSG a 1 1\r\nx\r\n", b"PONG\r\n"]);
        let b = seg(&[b"MSG a 1 1\r\nx\r\n", b"MSG a 2 1\r\nx\r\n", b"PONG\r\n"]);
        assert_eq!(a, b);
        let c = seg(&[b"MSG a 1 1\r\nx\r\n", b"MSG a 1 1\r\ny\r\n"]);
        let d = seg(&[b"MSG a 1 1\r\ny\r\n", b"MSG a 1 1\r\nx\r\n"]);
        assert_ne!(c, d, "order on one sid is significant");
    }
}
