//! Pull requests (`$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`) and the queue of those
//! waiting for messages, with nats-server's status replies.
//!
//! A request is a batch size (a bare number, or JSON with `batch`, `max_bytes`, `expires`,
//! `no_wait`, `idle_heartbeat`). It waits in a FIFO queue; each message goes to the request
//! at the head, which then moves to the back while it wants more (so concurrent fetchers
//! share a consumer fairly). Requests end when their batch is full, their bytes are used up,
//! they expire (`408 Request Timeout`), or their requester has gone away (silently).

use std::collections::VecDeque;
use std::sync::Arc;

use serde::Deserialize;

/// A pull request's body, as JSON.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NextRequestJson {
    /// Nanoseconds.
    expires: i64,
    batch: i64,
    max_bytes: i64,
    no_wait: bool,
    /// Nanoseconds.
    idle_heartbeat: i64,
}

/// A parsed pull request, before it is queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NextRequest {
    pub batch: i64,
    pub max_bytes: i64,
    /// Relative to when it arrived, nanoseconds; 0 = never.
    pub expires: i64,
    pub no_wait: bool,
    /// Nanoseconds; 0 = none.
    pub heartbeat: i64,
}

/// Reads a request body (nats-server's `nextReqFromMsg`). The error is the text of the
/// `400 Bad Request - <text>` reply.
pub(crate) fn parse_next_request(body: &[u8]) -> Result<NextRequest, String> {
    let body = body.trim_ascii();
    let simple = |batch| NextRequest {
        batch,
        max_bytes: 0,
        expires: 0,
        no_wait: false,
        heartbeat: 0,
    };
    if body.is_empty() {
        return Ok(simple(1));
    }
    if body[0] == b'{' {
        let req: NextRequestJson = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if req.idle_heartbeat > 0 && req.idle_heartbeat.saturating_mul(2) > req.expires {
            return Err("heartbeat value too large".into());
        }
        return Ok(NextRequest {
            batch: req.batch,
            max_bytes: req.max_bytes,
            expires: req.expires.max(0),
            no_wait: req.no_wait,
            heartbeat: req.idle_heartbeat.max(0),
        });
    }
    Ok(std::str::from_utf8(body)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .map_or_else(|| simple(1), simple))
}

/// One waiting pull request.
#[derive(Debug, Clone)]
pub(crate) struct Waiting {
    pub reply: Arc<str>,
    /// Messages it still wants.
    pub n: i64,
    /// Messages it got.
    pub delivered: i64,
    /// Bytes it still accepts; 0 = no byte limit.
    pub b: i64,
    /// Unix nanoseconds; 0 = never.
    pub expires: i64,
    pub received: i64,
    pub no_wait: bool,
    pub heartbeat: i64,
    /// When the next idle heartbeat is due (Unix ns); 0 = none.
    pub next_heartbeat: i64,
    /// Until when its requester is known to listen (interest is looked up again after).
    pub listening_until: i64,
}

impl Waiting {
    pub fn new(reply: Arc<str>, req: &NextRequest, now: i64) -> Waiting {
        Waiting {
            reply,
            n: req.batch,
            delivered: 0,
            b: req.max_bytes.max(0),
            expires: if req.expires > 0 {
                now.saturating_add(req.expires)
            } else {
                0
            },
            received: now,
            no_wait: req.no_wait,
            heartbeat: req.heartbeat,
            next_heartbeat: if req.heartbeat > 0 {
                now.saturating_add(req.heartbeat)
            } else {
                0
            },
            listening_until: 0,
        }
    }

    fn expired(&self, now: i64) -> bool {
        self.expires > 0 && now >= self.expires
    }
}

/// How long a requester found listening is trusted to still listen while its batch is
/// delivered (a lookup per message would cost more than the delivery).
const INTEREST_TTL_NS: i64 = 50_000_000;

/// A status message for a requester: the header block and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Status {
    pub subject: String,
    pub reply: Option<String>,
    pub header: Vec<u8>,
}

/// `NATS/1.0 <code> <text>` with the two pending headers the clients account with.
pub(crate) fn pending_status(code: u16, text: &str, msgs: i64, bytes: i64) -> Vec<u8> {
    format!(
        "NATS/1.0 {code} {text}\r\nNats-Pending-Messages: {msgs}\r\nNats-Pending-Bytes: {bytes}\r\n\r\n"
    )
    .into_bytes()
}

/// `NATS/1.0 <code> <text>` alone.
pub(crate) fn plain_status(code: u16, text: &str) -> Vec<u8> {
    format!("NATS/1.0 {code} {text}\r\n\r\n").into_bytes()
}

/// The FIFO of waiting requests, at most `max` long.
#[derive(Debug)]
pub(crate) struct WaitQueue {
    queue: VecDeque<Waiting>,
    max: usize,
    /// When a request last arrived (or the queue was last found active): the pull
    /// consumer's activity clock for the inactivity threshold.
    pub last_active: i64,
}

impl WaitQueue {
    pub fn new(max: i64, now: i64) -> WaitQueue {
        WaitQueue {
            queue: VecDeque::new(),
            max: usize::try_from(max).unwrap_or(0),
            last_active: now,
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.queue.len() >= self.max
    }

    pub fn set_max(&mut self, max: i64) {
        self.max = usize::try_from(max).unwrap_or(0);
    }

    /// Queues a request; false when full.
    pub fn add(&mut self, w: Waiting) -> bool {
        if self.is_full() {
            return false;
        }
        self.last_active = w.received;
        self.queue.push_back(w);
        true
    }

    /// Takes every request out (the consumer is going away).
    pub fn drain(&mut self) -> impl Iterator<Item = Waiting> + '_ {
        self.queue.drain(..)
    }

    /// The request the next message of `size` bytes goes to, as nats-server's
    /// `nextWaiting`: requests whose byte budget is too small end with `409 Message Size
    /// Exceeds MaxBytes`, expired ones with `408 Request Timeout`, those nobody listens to
    /// any more silently. The request is charged one message (and `size` bytes) and moves
    /// to the back if it wants more. Returns (reply subject, messages and bytes it still
    /// wants after this one).
    pub fn take(
        &mut self,
        size: i64,
        now: i64,
        has_interest: &dyn Fn(&str) -> bool,
        statuses: &mut Vec<Status>,
    ) -> Option<(Arc<str>, i64, i64)> {
        while let Some(w) = self.queue.front_mut() {
            if w.b > 0 {
                if size <= w.b {
                    w.b -= size;
                    if w.b == 0 {
                        w.n = 1;
                    }
                } else {
                    statuses.push(Status {
                        subject: w.reply.to_string(),
                        reply: None,
                        header: pending_status(409, "Message Size Exceeds MaxBytes", w.n, w.b),
                    });
                    self.queue.pop_front();
                    continue;
                }
            }
            if w.expired(now) {
                statuses.push(Status {
                    subject: w.reply.to_string(),
                    reply: None,
                    header: pending_status(408, "Request Timeout", w.n, w.b),
                });
                self.queue.pop_front();
                continue;
            }
            if now >= w.listening_until {
                if !has_interest(&w.reply) {
                    self.queue.pop_front();
                    continue;
                }
                w.listening_until = now.saturating_add(INTEREST_TTL_NS);
            }
            w.delivered += 1;
            w.n -= 1;
            if w.heartbeat > 0 {
                w.next_heartbeat = now.saturating_add(w.heartbeat);
            }
            let out = (w.reply.clone(), w.n, w.b);
            if w.n > 0 {
                if self.queue.len() > 1 {
                    if let Some(w) = self.queue.pop_front() {
                        self.queue.push_back(w);
                    }
                }
            } else {
                self.queue.pop_front();
            }
            return Some(out);
        }
        None
    }

    /// Gives a message back to the request it was charged to (its delivery failed).
    pub fn credit(&mut self, reply: &str, size: i64) -> bool {
        if let Some(w) = self.queue.iter_mut().find(|w| &*w.reply == reply) {
            w.n += 1;
            w.delivered -= 1;
            if w.b > 0 {
                w.b += size;
            }
            return true;
        }
        false
    }

    /// nats-server's `processWaiting`: ends expired requests (and, at the end of the
    /// stream, `no_wait` ones that got something), drops those without interest, and sends
    /// due idle heartbeats (`heartbeat(reply)` builds one). Returns the messages the
    /// remaining requests want and the earliest time this must run again (0 = none).
    pub fn sweep(
        &mut self,
        now: i64,
        end_of_stream: bool,
        has_interest: &dyn Fn(&str) -> bool,
        heartbeat: &dyn Fn(&str) -> Vec<u8>,
        statuses: &mut Vec<Status>,
    ) -> (i64, i64) {
        let mut wanted = 0i64;
        let mut next = 0i64;
        let mut earliest = |t: i64| {
            if t > 0 && (next == 0 || t < next) {
                next = t;
            }
        };
        self.queue.retain_mut(|w| {
            if (end_of_stream && w.no_wait && w.delivered > 0) || w.expired(now) {
                statuses.push(Status {
                    subject: w.reply.to_string(),
                    reply: None,
                    header: pending_status(408, "Request Timeout", w.n, w.b),
                });
                return false;
            }
            if !has_interest(&w.reply) {
                return false;
            }
            wanted += w.n.max(1);
            if w.next_heartbeat > 0 {
                if now >= w.next_heartbeat {
                    statuses.push(Status {
                        subject: w.reply.to_string(),
                        reply: None,
                        header: heartbeat(&w.reply),
                    });
                    w.next_heartbeat = now.saturating_add(w.heartbeat);
                }
                earliest(w.next_heartbeat);
            }
            earliest(w.expires);
            true
        });
        (wanted, next)
    }

    /// Ends `no_wait` requests that have been served and have nothing more coming (`408`),
    /// and `no_wait` ones without an expiry that got nothing (`404 No Messages`). Called
    /// when the consumer has nothing more to deliver now.
    pub fn end_no_wait(&mut self, statuses: &mut Vec<Status>) {
        self.queue.retain(|w| {
            if !w.no_wait {
                return true;
            }
            if w.delivered > 0 {
                statuses.push(Status {
                    subject: w.reply.to_string(),
                    reply: None,
                    header: pending_status(408, "Request Timeout", w.n, w.b),
                });
                return false;
            }
            if w.expires == 0 {
                statuses.push(Status {
                    subject: w.reply.to_string(),
                    reply: None,
                    header: plain_status(404, "No Messages"),
                });
                return false;
            }
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(batch: i64) -> NextRequest {
        NextRequest {
            batch,
            max_bytes: 0,
            expires: 0,
            no_wait: false,
            heartbeat: 0,
        }
    }

    #[test]
    fn parses_requests() {
        assert_eq!(parse_next_request(b""), Ok(req(1)));
        assert_eq!(parse_next_request(b" 10 "), Ok(req(10)));
        assert_eq!(parse_next_request(b"junk"), Ok(req(1)));
        let r = parse_next_request(
            br#"{"batch":5,"max_bytes":100,"expires":2000000000,"no_wait":true,"idle_heartbeat":500000000}"#,
        )
        .expect("parses");
        assert_eq!(
            r,
            NextRequest {
                batch: 5,
                max_bytes: 100,
                expires: 2_000_000_000,
                no_wait: true,
                heartbeat: 500_000_000
            }
        );
        assert_eq!(
            parse_next_request(br#"{"batch":1,"expires":1000,"idle_heartbeat":600}"#),
            Err("heartbeat value too large".into())
        );
        assert!(parse_next_request(br#"{"batch":"x"}"#).is_err());
    }

    #[test]
    fn round_robin_and_batches() {
        let mut q = WaitQueue::new(10, 0);
        let yes = |_: &str| true;
        let mut st = Vec::new();
        assert!(q.add(Waiting::new("a".into(), &req(2), 0)));
        assert!(q.add(Waiting::new("b".into(), &req(1), 0)));
        let got: Vec<Arc<str>> = (0..4)
            .filter_map(|_| q.take(10, 0, &yes, &mut st).map(|t| t.0))
            .collect();
        assert_eq!(got, ["a".into(), "b".into(), "a".into()] as [Arc<str>; 3]);
        assert!(q.is_empty());
        assert!(st.is_empty());
    }

    #[test]
    fn max_bytes_and_expiry() {
        let mut q = WaitQueue::new(10, 0);
        let yes = |_: &str| true;
        let mut st = Vec::new();
        let mut r = req(5);
        r.max_bytes = 15;
        q.add(Waiting::new("a".into(), &r, 0));
        assert_eq!(q.take(10, 0, &yes, &mut st), Some(("a".into(), 4, 5)));
        assert_eq!(q.take(10, 0, &yes, &mut st), None);
        assert_eq!(
            st[0].header,
            b"NATS/1.0 409 Message Size Exceeds MaxBytes\r\nNats-Pending-Messages: 4\r\nNats-Pending-Bytes: 5\r\n\r\n"
        );
        st.clear();
        let mut r = req(3);
        r.expires = 100;
        q.add(Waiting::new("b".into(), &r, 0));
        let hb = |_: &str| Vec::new();
        assert_eq!(q.sweep(50, false, &yes, &hb, &mut st), (3, 100));
        assert_eq!(q.sweep(100, false, &yes, &hb, &mut st), (0, 0));
        assert_eq!(
            st[0].header,
            b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 3\r\nNats-Pending-Bytes: 0\r\n\r\n"
        );
    }

    #[test]
    fn exact_bytes_end_the_request() {
        let mut q = WaitQueue::new(10, 0);
        let yes = |_: &str| true;
        let mut st = Vec::new();
        let mut r = req(5);
        r.max_bytes = 20;
        q.add(Waiting::new("a".into(), &r, 0));
        assert_eq!(q.take(20, 0, &yes, &mut st), Some(("a".into(), 0, 0)));
        assert!(q.is_empty());
    }

    #[test]
    fn no_interest_and_no_wait() {
        let mut q = WaitQueue::new(10, 0);
        let no = |_: &str| false;
        let mut st = Vec::new();
        q.add(Waiting::new("a".into(), &req(1), 0));
        assert_eq!(q.take(1, 0, &no, &mut st), None);
        assert!(q.is_empty() && st.is_empty());
        let mut r = req(3);
        r.no_wait = true;
        q.add(Waiting::new("b".into(), &r, 0));
        q.add(Waiting::new("c".into(), &r, 0));
        let yes = |_: &str| true;
        q.take(1, 0, &yes, &mut st);
        q.end_no_wait(&mut st);
        assert_eq!(st.len(), 2);
        assert!(st[0].header.starts_with(b"NATS/1.0 404 No Messages"));
        assert!(st[1].header.starts_with(b"NATS/1.0 408 Request Timeout"));
        assert!(q.is_empty());
    }

    #[test]
    fn full_queue() {
        let mut q = WaitQueue::new(1, 0);
        assert!(q.add(Waiting::new("a".into(), &req(1), 0)));
        assert!(!q.add(Waiting::new("b".into(), &req(1), 0)));
    }

    #[test]
    fn heartbeats() {
        let mut q = WaitQueue::new(10, 0);
        let yes = |_: &str| true;
        let hb = |r: &str| r.as_bytes().to_vec();
        let mut st = Vec::new();
        let mut r = req(1);
        r.expires = 1000;
        r.heartbeat = 300;
        q.add(Waiting::new("a".into(), &r, 0));
        assert_eq!(q.sweep(100, false, &yes, &hb, &mut st), (1, 300));
        assert!(st.is_empty());
        assert_eq!(q.sweep(300, false, &yes, &hb, &mut st), (1, 600));
        assert_eq!(st.len(), 1);
    }
}
