//! JetStream over the core protocol: the `$JS.API` requests the JetStream scenarios make
//! (JSON bodies, replies on an inbox), and the checks of what comes back: PubAcks, API
//! errors and the status line of a header block. The parsing functions do no IO.
//!
//! Field names and JSON shapes are those of nats-server's JetStream API (2.9 and later):
//! stream and consumer configs, `{"stream":..,"seq":..}` PubAcks, and `{"error":{"code":..,
//! "err_code":..,"description":..}}` on failure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::args::{AckPolicy, Storage};
use crate::conn::{check_deadline, Conn, Endpoint};
use crate::scan::{Capture, Event, Scanner};

/// How long a consumer waits for an ack before redelivering (`ack_wait`); long enough that
/// nothing is redelivered during a run.
const ACK_WAIT: Duration = Duration::from_secs(60);
/// Pause between polls of a consumer's or stream's state.
const POLL: Duration = Duration::from_millis(1);

/// A fresh inbox subject: unique per process and call.
pub fn inbox(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("_INBOX.mb{}n{n}.{tag}", std::process::id())
}

/// What a request got back.
#[derive(Debug, Default)]
pub struct Reply {
    /// The header block (empty for a MSG).
    pub headers: Vec<u8>,
    pub body: Vec<u8>,
}

/// A connection for `$JS.API` requests, one at a time.
#[derive(Debug)]
pub struct Api {
    conn: Conn,
    inbox: String,
    next: u64,
    deadline: Instant,
}

impl Api {
    pub fn open(ep: &Endpoint, deadline: Instant) -> Result<Self> {
        let inbox = inbox("api");
        let conn = Conn::open(
            ep,
            format!("SUB {inbox}.* 1\r\n").as_bytes(),
            Scanner::capturing(Capture::All),
            deadline,
        )?;
        Ok(Api {
            conn,
            inbox,
            next: 0,
            deadline,
        })
    }

    /// Sends `body` to `subject` and waits until `deadline` for the reply; replies to
    /// earlier, abandoned requests are dropped.
    pub fn request_until(
        &mut self,
        subject: &str,
        body: &[u8],
        deadline: Instant,
    ) -> Result<Reply> {
        self.next += 1;
        let reply_to = format!("{}.{}", self.inbox, self.next);
        let mut frame = format!("PUB {subject} {reply_to} {}\r\n", body.len()).into_bytes();
        frame.extend_from_slice(body);
        frame.extend_from_slice(b"\r\n");
        self.conn.write_all(&frame)?;
        let mut mine = false;
        let mut reply = None;
        while reply.is_none() {
            check_deadline(deadline, &format!("waiting for the reply to {subject}"))?;
            self.conn.read_some(&mut |ev| match ev {
                Event::Msg { .. } => mine = ev.subject() == Some(reply_to.as_bytes()),
                Event::Payload { headers, body } if mine => {
                    reply = Some(Reply {
                        headers: headers.to_vec(),
                        body: body.to_vec(),
                    });
                }
                _ => {}
            })?;
        }
        let reply = reply.unwrap_or_default();
        if let Some((503, _)) = status(&reply.headers) {
            bail!("no responders on {subject}: is JetStream enabled on the server?");
        }
        Ok(reply)
    }

    /// A `$JS.API` request with a JSON body; fails if the reply carries an `error`.
    pub fn call(&mut self, subject: &str, body: &Value) -> Result<Value> {
        let v = self.call_raw(subject, body)?;
        if let Some(e) = api_error(&v) {
            bail!("{subject}: {e}");
        }
        Ok(v)
    }

    /// A `$JS.API` request whose reply is returned as it is, `error` or not.
    pub fn call_raw(&mut self, subject: &str, body: &Value) -> Result<Value> {
        let body = if body.is_null() {
            Vec::new()
        } else {
            serde_json::to_vec(body)?
        };
        let reply = self.request_until(subject, &body, self.deadline)?;
        serde_json::from_slice(&reply.body).with_context(|| {
            format!(
                "{subject}: reply is not JSON: {:?}",
                String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)])
            )
        })
    }

    /// Creates a stream from `config`, deleting any stream of the same name first (left over
    /// by an interrupted run).
    pub fn create_stream(&mut self, config: &Value) -> Result<()> {
        let name = config["name"]
            .as_str()
            .context("stream config without a name")?;
        self.delete_stream_if_any(name)?;
        self.call(&format!("$JS.API.STREAM.CREATE.{name}"), config)?;
        Ok(())
    }

    pub fn delete_stream(&mut self, name: &str) -> Result<()> {
        self.call(&format!("$JS.API.STREAM.DELETE.{name}"), &Value::Null)?;
        Ok(())
    }

    fn delete_stream_if_any(&mut self, name: &str) -> Result<()> {
        let v = self.call_raw(&format!("$JS.API.STREAM.DELETE.{name}"), &Value::Null)?;
        match v["error"]["code"].as_u64() {
            None | Some(404) => Ok(()),
            Some(_) => bail!(
                "deleting the leftover stream {name}: {}",
                api_error(&v).unwrap_or_default()
            ),
        }
    }

    /// The number of messages in stream `name` (`state.messages` of its info).
    pub fn stream_messages(&mut self, name: &str) -> Result<u64> {
        let v = self.call(&format!("$JS.API.STREAM.INFO.{name}"), &Value::Null)?;
        v["state"]["messages"]
            .as_u64()
            .with_context(|| format!("stream info of {name} without state.messages: {v}"))
    }

    /// Creates durable consumer `config.durable_name` on `stream`.
    pub fn create_consumer(&mut self, stream: &str, config: Value) -> Result<()> {
        let name = config["durable_name"]
            .as_str()
            .context("consumer config without a durable name")?
            .to_string();
        self.call(
            &format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{name}"),
            &json!({ "stream_name": stream, "config": config }),
        )?;
        Ok(())
    }

    /// Polls the consumer's info until its ack floor reaches `last_seq` with nothing
    /// pending: every ack sent has been processed.
    pub fn await_acked(&mut self, stream: &str, consumer: &str, last_seq: u64) -> Result<()> {
        let subject = format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}");
        loop {
            let v = self.call(&subject, &Value::Null)?;
            let floor = v["ack_floor"]["stream_seq"].as_u64().unwrap_or(0);
            let pending = v["num_ack_pending"].as_u64().unwrap_or(0);
            if floor >= last_seq && pending == 0 {
                return Ok(());
            }
            check_deadline(
                self.deadline,
                &format!("consumer {consumer}: ack floor {floor} of {last_seq}, {pending} pending"),
            )?;
            thread::sleep(POLL);
        }
    }
}

/// A stream config as the clients send it: limits retention, no limits, one replica.
pub fn stream_config(name: &str, subjects: &[&str], storage: Storage) -> Value {
    json!({
        "name": name,
        "subjects": subjects,
        "retention": "limits",
        "max_consumers": -1,
        "max_msgs": -1,
        "max_bytes": -1,
        "max_age": 0,
        "max_msgs_per_subject": -1,
        "max_msg_size": -1,
        "discard": "old",
        "storage": storage.name(),
        "num_replicas": 1,
    })
}

/// The stream behind KV bucket `bucket` as the clients create it (history 1): stream
/// `KV_<bucket>` on `$KV.<bucket>.>`, one message per subject, discard new, rollups allowed,
/// deletes denied, direct get allowed.
pub fn kv_config(bucket: &str, storage: Storage) -> Value {
    json!({
        "name": format!("KV_{bucket}"),
        "subjects": [format!("$KV.{bucket}.>")],
        "retention": "limits",
        "max_consumers": -1,
        "max_msgs": -1,
        "max_bytes": -1,
        "max_age": 0,
        "max_msgs_per_subject": 1,
        "max_msg_size": -1,
        "discard": "new",
        "storage": storage.name(),
        "num_replicas": 1,
        "duplicate_window": 120_000_000_000u64,
        "allow_rollup_hdrs": true,
        "deny_delete": true,
        "allow_direct": true,
    })
}

/// A durable consumer of every message, replayed as fast as possible. With a deliver
/// subject it is a push consumer, without one a pull consumer.
pub fn consumer_config(
    durable: &str,
    ack: AckPolicy,
    max_ack_pending: u64,
    deliver_subject: Option<&str>,
) -> Value {
    let mut c = json!({
        "durable_name": durable,
        "deliver_policy": "all",
        "ack_policy": ack.name(),
        "replay_policy": "instant",
        "max_deliver": -1,
        "num_replicas": 0,
    });
    if ack == AckPolicy::Explicit {
        c["ack_wait"] = json!(ACK_WAIT.as_nanos() as u64);
        c["max_ack_pending"] = json!(max_ack_pending);
    }
    if let Some(s) = deliver_subject {
        c["deliver_subject"] = json!(s);
    }
    c
}

/// The description of an API reply's `error`, if it has one.
pub fn api_error(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    Some(format!(
        "error {} (err_code {}): {}",
        e["code"],
        e["err_code"],
        e["description"].as_str().unwrap_or("")
    ))
}

/// The status code and description of a header block that starts with one
/// (`NATS/1.0 408 Request Timeout`).
pub fn status(headers: &[u8]) -> Option<(u16, String)> {
    let line = headers.split(|b| *b == b'\n').next()?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line.strip_prefix(b"NATS/1.0")?.trim_ascii_start();
    let code_end = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    if code_end != 3 {
        return None;
    }
    let code = std::str::from_utf8(&rest[..3]).ok()?.parse().ok()?;
    let text = String::from_utf8_lossy(rest[3..].trim_ascii()).into_owned();
    Some((code, text))
}

/// The sequence number a PubAck assigns, or why the publish failed. The common reply
/// (`{"stream":"S","seq":42}`) is read without a JSON parser; anything else goes through one.
pub fn pub_ack_seq(body: &[u8]) -> Result<u64> {
    if memchr::memmem::find(body, b"\"error\"").is_none() {
        if let Some(at) = memchr::memmem::find(body, b"\"seq\":") {
            let digits = body[at + 6..].trim_ascii_start();
            let end = digits
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(digits.len());
            if let Some(seq) = std::str::from_utf8(&digits[..end])
                .ok()
                .and_then(|d| d.parse().ok())
            {
                return Ok(seq);
            }
        }
    }
    let shown = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    let v: Value = serde_json::from_slice(body)
        .with_context(|| format!("PubAck is not JSON: {:?}", shown()))?;
    if let Some(e) = api_error(&v) {
        bail!("publish failed: {e}");
    }
    v["seq"]
        .as_u64()
        .with_context(|| format!("PubAck without seq: {:?}", shown()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pub_acks() {
        assert_eq!(pub_ack_seq(br#"{"stream":"S","seq":42}"#).ok(), Some(42));
        assert_eq!(
            pub_ack_seq(br#"{"stream":"S", "seq": 7, "duplicate":true}"#).ok(),
            Some(7)
        );
        assert_eq!(
            pub_ack_seq(br#"{ "stream" : "S" , "seq" : 9 }"#).ok(),
            Some(9)
        );
        let err = pub_ack_seq(
            br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"S","seq":0}"#,
        )
        .expect_err("an error reply");
        assert!(err.to_string().contains("maximum messages exceeded"));
        assert!(pub_ack_seq(b"+OK").is_err());
        assert!(pub_ack_seq(br#"{"stream":"S"}"#).is_err());
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            status(b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 3\r\n\r\n"),
            Some((408, "Request Timeout".to_string()))
        );
        assert_eq!(status(b"NATS/1.0 503\r\n\r\n"), Some((503, String::new())));
        assert_eq!(status(b"NATS/1.0\r\nNats-Stream: KV_B\r\n\r\n"), None);
        assert_eq!(status(b""), None);
        assert_eq!(status(b"NATS/1.0 12345 x\r\n"), None);
    }

    #[test]
    fn api_errors() {
        let v: Value = serde_json::from_str(
            r#"{"type":"x","error":{"code":404,"err_code":10059,"description":"stream not found"}}"#,
        )
        .expect("json");
        assert_eq!(
            api_error(&v).as_deref(),
            Some("error 404 (err_code 10059): stream not found")
        );
        assert_eq!(api_error(&json!({"success": true})), None);
    }

    #[test]
    fn kv_stream_as_clients_make_it() {
        let c = kv_config("B", Storage::Memory);
        assert_eq!(c["name"], "KV_B");
        assert_eq!(c["subjects"], json!(["$KV.B.>"]));
        assert_eq!(c["max_msgs_per_subject"], 1);
        assert_eq!(c["allow_direct"], true);
        assert_eq!(c["storage"], "memory");
    }
}
