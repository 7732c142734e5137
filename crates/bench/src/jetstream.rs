//! The JetStream scenarios: acked publishing, pull and push consumers, KV put and get, and
//! the fill and recovery halves of the restart measurement. Each creates what it needs
//! through `$JS.API` on a connection of its own ([`Api`]) and deletes it at the end
//! (except `js-fill`, whose stream is meant to outlive the server).
//!
//! Every reply is checked: PubAcks must carry strictly increasing sequence numbers and no
//! error, consumers must deliver exactly the stream's messages, direct gets must return the
//! value stored under the key asked for, and the stream or consumer state is read back at
//! the end (message count, ack floor).

use std::collections::{BTreeMap, VecDeque};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::args::{AckPolicy, Args, Scenario};
use crate::conn::{check_deadline, Conn, Endpoint};
use crate::js::{self, Api};
use crate::scan::{Capture, Event, Scanner, SEQ_BYTES};
use crate::scenario::Report;

/// Requests or acks outstanding when `--window` is not given.
const DEFAULT_WINDOW: u64 = 256;
/// Acked publishes before the measured ones of js-pub and js-pub-async.
const WARMUP: u64 = 100;
/// Target size of one batched write.
const BATCH_BYTES: usize = 64 * 1024;
/// How long a pull request waits for messages (`expires`).
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// The KV bucket the kv scenarios create.
const BUCKET: &str = "BENCH";
/// Pause between connection attempts of js-recover.
const RETRY: Duration = Duration::from_millis(5);
/// How long one STREAM.INFO request of js-recover may take before it is sent again.
const INFO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long js-recover waits for a short message count to grow before calling the rest lost.
const RECOVER_STALL: Duration = Duration::from_secs(10);

pub fn run(args: &Args, ep: &Endpoint, deadline: Instant) -> Result<Report> {
    match args.scenario {
        Scenario::JsPub | Scenario::JsPubAsync => publish(args, ep, deadline),
        Scenario::JsPull => pull(args, ep, deadline),
        Scenario::JsPush => push(args, ep, deadline),
        Scenario::KvPut => kv_put(args, ep, deadline),
        Scenario::KvGet => kv_get(args, ep, deadline),
        Scenario::JsFill => fill_only(args, ep, deadline),
        Scenario::JsRecover => recover(args, ep, deadline),
        Scenario::JsInfo => info(ep, deadline),
        s => bail!("{} is not a JetStream scenario", s.name()),
    }
}

/// The stream a scenario creates (names may not contain `.`, `*`, `>` or spaces).
fn stream_name(args: &Args) -> String {
    let raw = format!("{}_{}", args.subject, args.scenario.name());
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn window(args: &Args) -> u64 {
    args.window.unwrap_or(DEFAULT_WINDOW)
}

/// Start, end and per-request latencies of a [`pipeline`] run.
#[derive(Debug)]
struct Timing {
    start: Instant,
    end: Instant,
    latencies_ns: Vec<u64>,
}

impl Timing {
    fn secs(&self) -> f64 {
        self.end.duration_since(self.start).as_secs_f64()
    }

    /// `(name, value)` rows of the latency percentiles, in microseconds.
    fn latency_rows(&mut self) -> Report {
        let s = &mut self.latencies_ns;
        if s.is_empty() {
            return Vec::new();
        }
        s.sort_unstable();
        let us = |ns: u64| ns as f64 / 1000.0;
        let pct = |p: f64| {
            let idx = ((s.len() as f64 * p).ceil() as usize).clamp(1, s.len()) - 1;
            us(s[idx])
        };
        let avg = us(s.iter().sum::<u64>()) / s.len() as f64;
        vec![
            ("p50_us", json!(pct(0.50))),
            ("p90_us", json!(pct(0.90))),
            ("p99_us", json!(pct(0.99))),
            ("avg_us", json!(avg)),
            ("max_us", json!(us(s[s.len() - 1]))),
        ]
    }
}

/// Sends `n` requests on `conn`, at most `window` of them unanswered: `frame(i, out)`
/// appends request `i`, and `reply(event)` reads what arrives, returning whether the event
/// completes a request (replies complete them in order). The clock starts before the first
/// write and stops at the last reply; each request's latency is taken from its write to its
/// reply.
fn pipeline(
    conn: &mut Conn,
    n: u64,
    window: u64,
    deadline: Instant,
    mut frame: impl FnMut(u64, &mut Vec<u8>),
    mut reply: impl FnMut(&Event<'_>) -> Result<bool>,
) -> Result<Timing> {
    let mut sent = 0u64;
    let mut done = 0u64;
    let mut sent_at: VecDeque<Instant> = VecDeque::with_capacity(window as usize);
    let mut latencies_ns = Vec::with_capacity(usize::try_from(n)?);
    let mut out = Vec::with_capacity(BATCH_BYTES + 1024);
    let start = Instant::now();
    while done < n {
        if sent < n && sent - done < window {
            out.clear();
            let room = (window - (sent - done)).min(n - sent);
            let now = Instant::now();
            for _ in 0..room {
                frame(sent, &mut out);
                sent_at.push_back(now);
                sent += 1;
                if out.len() >= BATCH_BYTES {
                    break;
                }
            }
            conn.write_all(&out)?;
        }
        check_deadline(deadline, &format!("{done} of {n} replies received"))?;
        let mut failed = None;
        conn.read_some(&mut |ev| {
            if failed.is_some() {
                return;
            }
            match reply(ev) {
                Ok(false) => {}
                Ok(true) => match sent_at.pop_front() {
                    Some(at) => {
                        done += 1;
                        latencies_ns.push(at.elapsed().as_nanos() as u64);
                    }
                    None => failed = Some(anyhow::anyhow!("a reply to no request")),
                },
                Err(e) => failed = Some(e),
            }
        })?;
        if let Some(e) = failed {
            return Err(e.context(format!("after {done} of {n} replies")));
        }
    }
    Ok(Timing {
        start,
        end: Instant::now(),
        latencies_ns,
    })
}

/// Checks the PubAcks arriving on one inbox: each must be for that inbox, carry no error,
/// and have a sequence number above the previous one.
#[derive(Debug)]
struct AckCheck {
    inbox: Vec<u8>,
    mine: bool,
    last_seq: u64,
}

impl AckCheck {
    fn new(inbox: &str, last_seq: u64) -> Self {
        AckCheck {
            inbox: inbox.as_bytes().to_vec(),
            mine: false,
            last_seq,
        }
    }

    fn on(&mut self, ev: &Event<'_>) -> Result<bool> {
        match *ev {
            Event::Msg { .. } => {
                self.mine = ev.subject() == Some(self.inbox.as_slice());
                Ok(false)
            }
            Event::Payload { headers, body } if self.mine => {
                if let Some((code, text)) = js::status(headers) {
                    bail!("publish answered with status {code} {text}");
                }
                let seq = js::pub_ack_seq(body)?;
                ensure!(
                    seq > self.last_seq,
                    "PubAck sequence {seq} after {}",
                    self.last_seq
                );
                self.last_seq = seq;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// A connection that publishes with acks to its own inbox.
#[derive(Debug)]
struct AckedPublisher {
    conn: Conn,
    inbox: String,
}

impl AckedPublisher {
    fn open(ep: &Endpoint, deadline: Instant) -> Result<Self> {
        let inbox = js::inbox("ack");
        let conn = Conn::open(
            ep,
            format!("SUB {inbox} 1\r\n").as_bytes(),
            Scanner::capturing(Capture::All),
            deadline,
        )?;
        Ok(AckedPublisher { conn, inbox })
    }

    /// Publishes `n` messages of `size` bytes to `subject` with `window` acks outstanding,
    /// into a stream whose last sequence is `after_seq`.
    fn publish(
        &mut self,
        subject: &str,
        size: usize,
        n: u64,
        window: u64,
        after_seq: u64,
        deadline: Instant,
    ) -> Result<Timing> {
        let frame = pub_frame(subject, &self.inbox, size);
        let mut check = AckCheck::new(&self.inbox, after_seq);
        pipeline(
            &mut self.conn,
            n,
            window,
            deadline,
            |_, out| out.extend_from_slice(&frame),
            |ev| check.on(ev),
        )
    }
}

/// One `PUB subject reply size` frame with a payload of `size` bytes of `x`.
fn pub_frame(subject: &str, reply: &str, size: usize) -> Vec<u8> {
    let mut f = format!("PUB {subject} {reply} {size}\r\n").into_bytes();
    f.resize(f.len() + size, b'x');
    f.extend_from_slice(b"\r\n");
    f
}

fn rate(n: u64, secs: f64) -> f64 {
    n as f64 / secs
}

/// `js-pub` (one publish in flight) and `js-pub-async` (`--window` in flight).
fn publish(args: &Args, ep: &Endpoint, deadline: Instant) -> Result<Report> {
    let window = if args.scenario == Scenario::JsPub {
        1
    } else {
        window(args)
    };
    let name = stream_name(args);
    let subject = format!("{}.{}", args.subject, args.scenario.name());
    let mut api = Api::open(ep, deadline)?;
    api.create_stream(&js::stream_config(&name, &[&subject], args.storage))?;
    let mut publisher = AckedPublisher::open(ep, deadline)?;
    publisher.publish(&subject, args.size, WARMUP, window, 0, deadline)?;
    let mut timing = publisher.publish(&subject, args.size, args.msgs, window, WARMUP, deadline)?;
    let stored = api.stream_messages(&name)?;
    ensure!(
        stored == WARMUP + args.msgs,
        "stream {name} holds {stored} messages, {} were acked",
        WARMUP + args.msgs
    );
    api.delete_stream(&name)?;
    let secs = timing.secs();
    let mut report: Report = vec![
        ("scenario", json!(args.scenario.name())),
        ("msgs", json!(args.msgs)),
        ("size", json!(args.size)),
        ("storage", json!(args.storage.name())),
        ("window", json!(window)),
        ("msgs_per_s", json!(rate(args.msgs, secs))),
        (
            "mb_per_s",
            json!(args.msgs as f64 * args.size as f64 / 1e6 / secs),
        ),
        ("secs", json!(secs)),
    ];
    report.extend(timing.latency_rows());
    Ok(report)
}

/// Creates the scenario's stream and fills it with `--msgs` acked messages; returns the
/// stream name, its subject and the fill's rate.
fn prefilled_stream(
    args: &Args,
    api: &mut Api,
    ep: &Endpoint,
    deadline: Instant,
) -> Result<(String, f64)> {
    let name = stream_name(args);
    let subject = format!("{}.{}", args.subject, args.scenario.name());
    api.create_stream(&js::stream_config(&name, &[&subject], args.storage))?;
    let mut publisher = AckedPublisher::open(ep, deadline)?;
    let timing = publisher.publish(&subject, args.size, args.msgs, window(args), 0, deadline)?;
    let stored = api.stream_messages(&name)?;
    ensure!(
        stored == args.msgs,
        "stream {name} holds {stored} messages after filling it with {}",
        args.msgs
    );
    Ok((name, rate(args.msgs, timing.secs())))
}

/// Appends `PUB <reply> 4\r\n+ACK\r\n`: a positive ack of the message `reply` came with.
fn push_ack(out: &mut Vec<u8>, reply: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(reply);
    out.extend_from_slice(b" 4\r\n+ACK\r\n");
}

/// `js-pull`: a durable pull consumer with explicit ack drains the pre-filled stream,
/// `--batch` messages per pull request, acking every message.
///
/// Each pull request has its own reply subject (`<inbox>.<id>`), where the server sends
/// that request's messages and its status (408 when it expires owing messages, which are
/// then asked for again); a new request goes out when at most half a batch is still owed,
/// so the server always has one queued (at most two are outstanding).
fn pull(args: &Args, ep: &Endpoint, deadline: Instant) -> Result<Report> {
    let n = args.msgs;
    let batch = args.batch.min(n);
    let mut api = Api::open(ep, deadline)?;
    let (stream, fill_rate) = prefilled_stream(args, &mut api, ep, deadline)?;
    let consumer = "BENCH_PULL";
    api.create_consumer(
        &stream,
        js::consumer_config(consumer, AckPolicy::Explicit, (4 * batch).max(1000), None),
    )?;

    let inbox = js::inbox("pull");
    let mut conn = Conn::open(
        ep,
        format!("SUB {inbox}.* 1\r\n").as_bytes(),
        Scanner::capturing(Capture::Headered),
        deadline,
    )?;
    let next_subject = format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}");
    let prefix = format!("{inbox}.");
    // Messages each outstanding request is still owed, by request id.
    let mut owed: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next_id = 0u64;
    let mut requested = 0u64;
    let mut received = 0u64;
    let mut out = Vec::with_capacity(BATCH_BYTES);
    let mut status_for: Option<u64> = None;
    let mut last = None;
    let start = Instant::now();
    while received < n {
        out.clear();
        while requested < n && requested - received <= batch / 2 && owed.len() < 2 {
            let b = batch.min(n - requested);
            let body = format!("{{\"batch\":{b},\"expires\":{}}}", PULL_EXPIRES.as_nanos());
            out.extend_from_slice(
                format!(
                    "PUB {next_subject} {prefix}{next_id} {}\r\n{body}\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            owed.insert(next_id, b);
            next_id += 1;
            requested += b;
        }
        if !out.is_empty() {
            conn.write_all(&out)?;
            out.clear();
        }
        check_deadline(deadline, &format!("received {received} of {n}"))?;
        let before = received;
        let mut failed: Option<anyhow::Error> = None;
        conn.read_some(&mut |ev| {
            if failed.is_some() {
                return;
            }
            let result = (|| -> Result<()> {
                match *ev {
                    // Status messages come on the request's own reply subject; stream
                    // messages carry their original subject and serve the requests in order.
                    Event::Msg { headers: true, .. } => {
                        let id = ev
                            .subject()
                            .and_then(|s| s.strip_prefix(prefix.as_bytes()))
                            .and_then(|t| std::str::from_utf8(t).ok())
                            .and_then(|t| t.parse::<u64>().ok())
                            .context("a status message on an unknown inbox")?;
                        status_for = Some(id);
                    }
                    Event::Msg { .. } => {
                        let mut oldest = owed
                            .first_entry()
                            .context("a message beyond what was pulled")?;
                        *oldest.get_mut() -= 1;
                        if *oldest.get() == 0 {
                            oldest.remove();
                        }
                        received += 1;
                        let reply = ev
                            .reply()
                            .context("a pulled message without an ack subject")?;
                        push_ack(&mut out, reply);
                    }
                    Event::Payload { headers, .. } => {
                        let id = status_for.take().context("a payload out of turn")?;
                        match js::status(headers) {
                            Some((100, _)) => {}
                            // The request expired (408) owing messages: ask again for them.
                            Some((408, _)) => {
                                if let Some(left) = owed.remove(&id) {
                                    requested -= left;
                                }
                            }
                            Some((code, text)) => bail!("pull request {id}: status {code} {text}"),
                            None => bail!("pull request {id}: a message with headers"),
                        }
                    }
                    _ => {}
                }
                Ok(())
            })();
            if let Err(e) = result {
                failed = Some(e);
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if received != before {
            last = Some(Instant::now());
        }
        if !out.is_empty() {
            conn.write_all(&out)?;
        }
    }
    let end = last.unwrap_or(start);
    api.await_acked(&stream, consumer, n)?;
    let acked = start.elapsed().as_secs_f64();
    let secs = end.duration_since(start).as_secs_f64();
    api.delete_stream(&stream)?;
    Ok(vec![
        ("scenario", json!("js-pull")),
        ("msgs", json!(n)),
        ("size", json!(args.size)),
        ("storage", json!(args.storage.name())),
        ("batch", json!(batch)),
        ("ack", json!("explicit")),
        ("msgs_per_s", json!(rate(n, secs))),
        ("mb_per_s", json!(n as f64 * args.size as f64 / 1e6 / secs)),
        ("secs", json!(secs)),
        ("all_acked_secs", json!(acked)),
        ("fill_msgs_per_s", json!(fill_rate)),
    ])
}

/// `js-push`: a durable push consumer delivers the pre-filled stream to an inbox; with
/// `--ack explicit` each message is acked and the consumer's max_ack_pending is `--window`
/// (default 1000, the server default). The clock starts at the consumer create request
/// and stops at the last message.
fn push(args: &Args, ep: &Endpoint, deadline: Instant) -> Result<Report> {
    let n = args.msgs;
    let mut api = Api::open(ep, deadline)?;
    let (stream, fill_rate) = prefilled_stream(args, &mut api, ep, deadline)?;
    let consumer = "BENCH_PUSH";
    let deliver = js::inbox("push");
    let mut conn = Conn::open(
        ep,
        format!("SUB {deliver} 1\r\n").as_bytes(),
        Scanner::capturing(Capture::Headered),
        deadline,
    )?;
    let ack = args.ack;
    let size = args.size;
    let reader =
        thread::Builder::new()
            .name("push".into())
            .spawn(move || -> Result<Option<Instant>> {
                let mut received = 0u64;
                let mut last = None;
                let mut out = Vec::with_capacity(BATCH_BYTES);
                while received < n {
                    check_deadline(deadline, &format!("push: received {received} of {n}"))?;
                    let before = received;
                    let mut bad = None;
                    conn.read_some(&mut |ev| match *ev {
                        Event::Msg { headers: true, .. } => {
                            bad.get_or_insert("a message with headers (status?)".to_string());
                        }
                        Event::Msg { size: got, .. } => {
                            received += 1;
                            if got != size {
                                bad.get_or_insert(format!("a {got}-byte message, expected {size}"));
                            }
                            if ack == AckPolicy::Explicit {
                                match ev.reply() {
                                    Some(r) => push_ack(&mut out, r),
                                    None => {
                                        bad.get_or_insert(
                                            "a message without an ack subject".into(),
                                        );
                                    }
                                }
                            }
                        }
                        _ => {}
                    })?;
                    if let Some(b) = bad {
                        bail!("push: {b}");
                    }
                    if received != before {
                        last = Some(Instant::now());
                    }
                    if !out.is_empty() {
                        conn.write_all(&out)?;
                        out.clear();
                    }
                }
                let mut extra = 0u64;
                conn.flush(deadline, &mut |ev| {
                    if matches!(ev, Event::Msg { .. }) {
                        extra += 1;
                    }
                })?;
                ensure!(extra == 0, "push: {extra} messages beyond the stream's {n}");
                Ok(last)
            })?;
    let start = Instant::now();
    api.create_consumer(
        &stream,
        js::consumer_config(consumer, ack, args.window.unwrap_or(1000), Some(&deliver)),
    )?;
    let last = reader
        .join()
        .map_err(|_| anyhow::anyhow!("push reader panicked"))??;
    let secs = last.unwrap_or(start).duration_since(start).as_secs_f64();
    let mut report: Report = vec![
        ("scenario", json!("js-push")),
        ("msgs", json!(n)),
        ("size", json!(args.size)),
        ("storage", json!(args.storage.name())),
        ("ack", json!(ack.name())),
        ("msgs_per_s", json!(rate(n, secs))),
        ("mb_per_s", json!(n as f64 * args.size as f64 / 1e6 / secs)),
        ("secs", json!(secs)),
    ];
    if ack == AckPolicy::Explicit {
        api.await_acked(&stream, consumer, n)?;
        report.push(("all_acked_secs", json!(start.elapsed().as_secs_f64())));
    }
    report.push(("fill_msgs_per_s", json!(fill_rate)));
    api.delete_stream(&stream)?;
    Ok(report)
}

/// The value stored under key `i`: `i` in the first 8 bytes, then `x` up to `size`.
fn kv_value(i: u64, size: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&i.to_le_bytes());
    out.resize(out.len() + size - SEQ_BYTES, b'x');
}

/// Puts keys `k0..k<n>` of the bucket, `window` acks outstanding.
fn kv_fill(args: &Args, ep: &Endpoint, deadline: Instant) -> Result<Timing> {
    let AckedPublisher { mut conn, inbox } = AckedPublisher::open(ep, deadline)?;
    let inbox = inbox.as_str();
    let size = args.size;
    let mut num = itoa::Buffer::new();
    let mut check = AckCheck::new(inbox, 0);
    pipeline(
        &mut conn,
        args.msgs,
        window(args),
        deadline,
        |i, out| {
            out.extend_from_slice(format!("PUB $KV.{BUCKET}.k").as_bytes());
            out.extend_from_slice(num.format(i).as_bytes());
            out.push(b' ');
            out.extend_from_slice(inbox.as_bytes());
            out.push(b' ');
            out.extend_from_slice(num.format(size).as_bytes());
            out.extend_from_slice(b"\r\n");
            kv_value(i, size, out);
            out.extend_from_slice(b"\r\n");
        },
        |ev| check.on(ev),
    )
}

fn kv_bucket(args: &Args, api: &mut Api) -> Result<String> {
    ensure!(
        args.size >= SEQ_BYTES,
        "kv scenarios need --size >= {SEQ_BYTES}: the value carries its key's number"
    );
    api.create_stream(&js::kv_config(BUCKET, args.storage))?;
    Ok(format!("KV_{BUCKET}"))
}

fn kv_report(args: &Args, timing: &mut Timing) -> Report {
    let secs = timing.secs();
    let mut report: Report = vec![
        ("scenario", json!(args.scenario.name())),
        ("ops", json!(args.msgs)),
        ("size", json!(args.size)),
        ("storage", json!(args.storage.name())),
        ("window", json!(window(args))),
        ("ops_per_s", json!(rate(args.msgs, secs))),
        ("secs", json!(secs)),
    ];
    report.extend(timing.latency_rows());
    report
}

/// `kv-put`: `--msgs` puts of distinct keys, each acked.
fn kv_put(args: &Args, ep: &Endpoint, deadline: Instant) -> Result<Report> {
    let mut api = Api::open(ep, deadline)?;
    let stream = kv_bucket(args, &mut api)?;
    let mut timing = kv_fill(args, ep, deadline)?;
    let stored = api.stream_messages(&stream)?;
    ensure!(
        stored == args.msgs,
        "bucket holds {stored} keys after {} puts",
        args.msgs
    );
    api.delete_stream(&stream)?;
    Ok(kv_report(args, &mut timing))
}

/// `kv-get`: the bucket filled with `--msgs` keys, then a direct get
/// (`$JS.API.DIRECT.GET.KV_<bucket>.$KV.<bucket>.<key>`, no body) of each; the value must be
/// the one put under that key.
fn kv_get(args: &Args, ep: &Endpoint, deadline: Instant) -> Result<Report> {
    let mut api = Api::open(ep, deadline)?;
    let stream = kv_bucket(args, &mut api)?;
    kv_fill(args, ep, deadline)?;

    let inbox = js::inbox("get");
    let mut conn = Conn::open(
        ep,
        format!("SUB {inbox}.* 1\r\n").as_bytes(),
        Scanner::capturing(Capture::All),
        deadline,
    )?;
    let prefix = format!("{inbox}.");
    let size = args.size;
    let mut num = itoa::Buffer::new();
    let mut key: Option<u64> = None;
    let mut timing = pipeline(
        &mut conn,
        args.msgs,
        window(args),
        deadline,
        |i, out| {
            let k = num.format(i);
            out.extend_from_slice(
                format!("PUB $JS.API.DIRECT.GET.{stream}.$KV.{BUCKET}.k{k} {prefix}{k} 0\r\n\r\n")
                    .as_bytes(),
            );
        },
        |ev| match *ev {
            Event::Msg { .. } => {
                key = Some(
                    ev.subject()
                        .and_then(|s| s.strip_prefix(prefix.as_bytes()))
                        .and_then(|t| std::str::from_utf8(t).ok())
                        .and_then(|t| t.parse().ok())
                        .context("a reply on an unknown inbox")?,
                );
                Ok(false)
            }
            Event::Payload { headers, body } => {
                let k = key.take().context("a payload out of turn")?;
                if let Some((code, text)) = js::status(headers) {
                    bail!("direct get of k{k}: status {code} {text}");
                }
                let mut want = Vec::with_capacity(size);
                kv_value(k, size, &mut want);
                ensure!(body == want.as_slice(), "direct get of k{k}: wrong value");
                Ok(true)
            }
            _ => Ok(false),
        },
    )?;
    api.delete_stream(&stream)?;
    Ok(kv_report(args, &mut timing))
}

/// `js-fill`: creates stream `--stream` and fills it with `--msgs` messages; leaves it.
fn fill_only(args: &Args, ep: &Endpoint, deadline: Instant) -> Result<Report> {
    let name = &args.stream;
    let subject = format!("{}.fill", args.subject);
    let mut api = Api::open(ep, deadline)?;
    api.create_stream(&js::stream_config(name, &[&subject], args.storage))?;
    let mut publisher = AckedPublisher::open(ep, deadline)?;
    let timing = publisher.publish(&subject, args.size, args.msgs, window(args), 0, deadline)?;
    let stored = api.stream_messages(name)?;
    ensure!(
        stored == args.msgs,
        "stream {name} holds {stored} messages, {} were acked",
        args.msgs
    );
    let secs = timing.secs();
    Ok(vec![
        ("scenario", json!("js-fill")),
        ("stream", json!(name)),
        ("msgs", json!(args.msgs)),
        ("size", json!(args.size)),
        ("storage", json!(args.storage.name())),
        ("msgs_per_s", json!(rate(args.msgs, secs))),
        (
            "mb_per_s",
            json!(args.msgs as f64 * args.size as f64 / 1e6 / secs),
        ),
        ("secs", json!(secs)),
    ])
}

/// `js-info`: the account's JetStream usage from `$JS.API.INFO`; fails when nothing
/// answers there (JetStream off or not implemented) or the reply is an error.
fn info(ep: &Endpoint, deadline: Instant) -> Result<Report> {
    let mut api = Api::open(ep, deadline)?;
    let v = api.call("$JS.API.INFO", &Value::Null)?;
    Ok(vec![
        ("scenario", json!("js-info")),
        ("streams", v["streams"].clone()),
        ("consumers", v["consumers"].clone()),
        ("memory", v["memory"].clone()),
        ("storage", v["storage"].clone()),
    ])
}

/// `js-recover`: connects (retrying until the server accepts), then asks for the stream's
/// info until it reports at least `--msgs` messages (failing when a lower count stays the
/// same for [`RECOVER_STALL`]: messages lost). Reports the seconds since
/// `--started-at-ms` to the first accepted connection, the first answer, and the full count.
fn recover(args: &Args, ep: &Endpoint, deadline: Instant) -> Result<Report> {
    let now_ms = || -> Result<u64> {
        Ok(u64::try_from(
            SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis(),
        )?)
    };
    let origin = match args.started_at_ms {
        Some(ms) => ms,
        None => now_ms()?,
    };
    let since = |ms: u64| ms.saturating_sub(origin) as f64 / 1000.0;
    let subject = format!("$JS.API.STREAM.INFO.{}", args.stream);
    let mut api = loop {
        check_deadline(deadline, "connecting to the restarted server")?;
        let attempt = Instant::now() + INFO_TIMEOUT;
        match Api::open(ep, attempt.min(deadline)) {
            Ok(api) => break api,
            Err(_) => thread::sleep(RETRY),
        }
    };
    let connected = since(now_ms()?);
    let mut first_answer: Option<(f64, u64)> = None;
    let mut not_found = 0u64;
    let mut count_since: Option<(u64, Instant)> = None;
    loop {
        check_deadline(
            deadline,
            &format!(
                "waiting for {} to report {} messages (first answer (secs, messages): {:?}; \
                 {not_found} answers without the stream)",
                args.stream, args.msgs, first_answer
            ),
        )?;
        let attempt = (Instant::now() + INFO_TIMEOUT).min(deadline);
        let reply = match api.request_until(&subject, b"", attempt) {
            Ok(r) => r,
            // JetStream not serving yet (no responders) or a slow answer: ask again.
            Err(_) => {
                thread::sleep(RETRY);
                continue;
            }
        };
        let at = since(now_ms()?);
        let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        let Some(messages) = v["state"]["messages"].as_u64() else {
            // Not (yet) known: the server is still restoring its streams, or lost it.
            not_found += 1;
            thread::sleep(RETRY);
            continue;
        };
        first_answer.get_or_insert((at, messages));
        match count_since {
            Some((c, since)) if c == messages => ensure!(
                since.elapsed() < RECOVER_STALL,
                "{} reports {messages} of {} messages, unchanged for {RECOVER_STALL:?}: \
                 {} acked messages lost",
                args.stream,
                args.msgs,
                args.msgs.saturating_sub(messages)
            ),
            _ => count_since = Some((messages, Instant::now())),
        }
        if messages >= args.msgs {
            let (first_secs, first_messages) = first_answer.unwrap_or((at, messages));
            return Ok(vec![
                ("scenario", json!("js-recover")),
                ("stream", json!(args.stream)),
                ("msgs", json!(messages)),
                ("bytes", json!(v["state"]["bytes"])),
                ("connected_secs", json!(connected)),
                ("first_answer_secs", json!(first_secs)),
                ("first_answer_msgs", json!(first_messages)),
                ("full_secs", json!(at)),
                ("answers_without_stream", json!(not_found)),
            ]);
        }
        thread::sleep(RETRY);
    }
}
