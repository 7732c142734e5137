//! The scenarios. Every client is a blocking socket on its own thread; the publisher runs
//! on the calling thread.
//!
//! Timing: the clock starts just before the publisher's first write. The publisher's time
//! ends when the PONG to its final PING arrives (the server has processed every PUB); the
//! subscribers' time ends at the last message received by any of them.
//!
//! Flow control: subscribers publish their progress in atomics after each read, and the
//! publisher never runs more than `window` messages ahead of the slowest subscriber (for
//! a queue group: of all members together). This keeps a server's outbound buffers
//! bounded, so a server that does not throttle fast producers is not made to drop slow
//! consumers; with `--window 0` the publisher is unbounded, as in `nats bench`.

use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::args::{Args, Scenario};
use crate::conn::{check_deadline, dial, Conn, Endpoint, CONNECT};
use crate::jetstream;
use crate::scan::{Event, Scanner, SEQ_BYTES};

/// Ordered `(name, value)` results of one run.
pub type Report = Vec<(&'static str, Value)>;

/// Target size of one batched write.
const BATCH_BYTES: usize = 64 * 1024;
/// Unmeasured requests before the reqrep samples.
const REQREP_WARMUP: u64 = 100;
/// Connections opened before their PONGs are collected in the idle scenario.
const IDLE_BATCH: usize = 256;

pub fn run(args: &Args) -> Result<Report> {
    let addr = Endpoint::new(&args.url, args)?;
    let sub_addr = match &args.sub_url {
        Some(url) => Endpoint::new(url, args)?,
        None => addr.clone(),
    };
    let deadline = Instant::now() + args.timeout;
    let addrs = Addrs {
        publisher: &addr,
        subscribers: &sub_addr,
    };
    match args.scenario {
        Scenario::Pub => throughput(args, addrs, 0, false, deadline),
        Scenario::PubSub => throughput(args, addrs, 1, false, deadline),
        Scenario::Fanout => throughput(args, addrs, args.subs, false, deadline),
        Scenario::Queue => throughput(args, addrs, args.subs, true, deadline),
        Scenario::ReqRep => reqrep(args, addrs, deadline),
        Scenario::Ping => ping(args, &addr, deadline),
        Scenario::Idle => idle(args, &addr, deadline),
        Scenario::Pairs => pairs(args, &addr, deadline),
        _ => jetstream::run(args, &addr, deadline),
    }
}

/// Where the publishing side and the receiving side connect (two servers of a cluster, or
/// the same server twice).
#[derive(Debug, Clone, Copy)]
struct Addrs<'a> {
    publisher: &'a Endpoint,
    subscribers: &'a Endpoint,
}

/// When the receivers are on another server, their interest reaches the sending server over
/// a route some time after their SUBs: waits until a probe subscribed on `to` after them (so
/// announced after them, on the same ordered route) receives what a connection on `from`
/// publishes.
fn await_route_interest(
    from: &Endpoint,
    to: &Endpoint,
    subject: &str,
    deadline: Instant,
) -> Result<()> {
    if from.addr == to.addr {
        return Ok(());
    }
    let probe_subject = format!("{subject}.probe");
    let mut probe = Conn::open(
        to,
        format!("SUB {probe_subject} 1\r\n").as_bytes(),
        Scanner::new(),
        deadline,
    )?;
    let mut sender = Conn::open(from, b"", Scanner::new(), deadline)?;
    let frame = format!("PUB {probe_subject} 0\r\n\r\n");
    loop {
        check_deadline(deadline, "waiting for route interest")?;
        sender.write_all(frame.as_bytes())?;
        sender.flush(deadline, &mut |_| {})?;
        let mut seen = false;
        probe.flush(deadline, &mut |ev| {
            if matches!(ev, Event::Msg { .. }) {
                seen = true;
            }
        })?;
        if seen {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// State shared between the publisher and its subscribers.
#[derive(Debug)]
struct Shared {
    /// Messages received so far, per subscriber.
    progress: Vec<AtomicU64>,
    publisher_waiting: AtomicBool,
    publisher: Thread,
    queue: bool,
}

impl Shared {
    /// How far the subscribers have got: the slowest one, or a queue group's total.
    fn done(&self) -> u64 {
        let each = self.progress.iter().map(|p| p.load(Ordering::Acquire));
        if self.queue {
            each.sum()
        } else {
            each.min().unwrap_or(u64::MAX)
        }
    }
}

#[derive(Debug)]
struct SubResult {
    conn: Conn,
    received: u64,
    bad_sizes: u64,
    /// Last time this subscriber received a message.
    last: Option<Instant>,
    /// Queue mode: the sequence numbers seen, one bit each, plus duplicates and strays.
    seen: Vec<u64>,
    dup_or_stray: u64,
}

fn throughput(
    args: &Args,
    addrs: Addrs<'_>,
    subs: usize,
    queue: bool,
    deadline: Instant,
) -> Result<Report> {
    let total = args.msgs;
    let size = args.size;
    if queue {
        ensure!(
            size >= SEQ_BYTES,
            "queue needs --size >= {SEQ_BYTES} to carry a sequence number"
        );
    }
    let subject = format!("{}.{}", args.subject, args.scenario.name());
    let words = if queue {
        usize::try_from(total.div_ceil(64))?
    } else {
        0
    };

    let mut sub_conns = Vec::with_capacity(subs);
    for i in 0..subs {
        let sub = if queue {
            format!("SUB {subject} workers {}\r\n", i + 1)
        } else {
            format!("SUB {subject} {}\r\n", i + 1)
        };
        let scanner = if queue {
            Scanner::with_seq_capture()
        } else {
            Scanner::new()
        };
        sub_conns.push(Conn::open(
            addrs.subscribers,
            sub.as_bytes(),
            scanner,
            deadline,
        )?);
    }
    let mut publisher = Conn::open(addrs.publisher, b"", Scanner::new(), deadline)?;
    if subs > 0 {
        await_route_interest(addrs.publisher, addrs.subscribers, &subject, deadline)?;
    }

    let shared = Arc::new(Shared {
        progress: (0..subs).map(|_| AtomicU64::new(0)).collect(),
        publisher_waiting: AtomicBool::new(false),
        publisher: thread::current(),
        queue,
    });
    let handles: Vec<_> = sub_conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("sub-{i}"))
                .spawn(move || subscribe(conn, i, &shared, total, size, words, deadline))
        })
        .collect::<std::io::Result<_>>()?;

    let window = match args.window {
        _ if subs == 0 => 0,
        Some(w) => w,
        None => (8 << 20) / (size as u64 + 48) + 64,
    };
    // On error the subscriber threads are left to the process exit.
    let (start, pub_end) = publish(
        &mut publisher,
        &subject,
        args,
        window,
        queue,
        &shared,
        deadline,
    )?;

    let mut results = Vec::with_capacity(subs);
    for h in handles {
        results.push(
            h.join()
                .map_err(|_| anyhow::anyhow!("subscriber thread panicked"))??,
        );
    }

    // Anything delivered beyond the expected count is in flight before the PONG to this
    // PING, because the server processed every PUB before answering the publisher's PING.
    let mut extra = 0u64;
    for r in &mut results {
        r.conn.flush(deadline, &mut |ev| {
            if matches!(ev, Event::Msg { .. }) {
                extra += 1;
            }
        })?;
    }

    let pub_secs = pub_end.duration_since(start).as_secs_f64();
    let payload_mb = |n: u64| n as f64 * size as f64 / 1e6;
    let mut report: Report = vec![
        ("scenario", json!(args.scenario.name())),
        ("msgs", json!(total)),
        ("size", json!(size)),
        ("pub_msgs_per_s", json!(rate(total, pub_secs))),
        ("pub_mb_per_s", json!(payload_mb(total) / pub_secs)),
        ("pub_secs", json!(pub_secs)),
    ];
    if subs == 0 {
        return Ok(report);
    }

    let delivered: u64 = results.iter().map(|r| r.received).sum();
    let bad_sizes: u64 = results.iter().map(|r| r.bad_sizes).sum();
    let last = results
        .iter()
        .filter_map(|r| r.last)
        .max()
        .context("no subscriber received anything")?;
    let secs = last.duration_since(start).as_secs_f64();
    let expected = if queue { total } else { total * subs as u64 };
    ensure!(
        bad_sizes == 0,
        "{bad_sizes} messages had the wrong payload size"
    );
    ensure!(
        delivered == expected && extra == 0,
        "delivered {delivered} + {extra} late, expected exactly {expected}"
    );
    if queue {
        check_exactly_once(&results, total)?;
        let per_member: Vec<u64> = results.iter().map(|r| r.received).collect();
        report.push(("per_member", json!(per_member)));
    }
    report.extend([
        ("subs", json!(subs)),
        ("window", json!(window)),
        ("delivered", json!(delivered)),
        ("sub_msgs_per_s", json!(rate(delivered, secs))),
        ("sub_mb_per_s", json!(payload_mb(delivered) / secs)),
        (
            "per_sub_msgs_per_s",
            json!(rate(delivered, secs) / subs as f64),
        ),
        ("secs", json!(secs)),
    ]);
    Ok(report)
}

/// Publishes `args.msgs` identical frames in batches; returns the start and end times.
fn publish(
    conn: &mut Conn,
    subject: &str,
    args: &Args,
    window: u64,
    queue: bool,
    shared: &Shared,
    deadline: Instant,
) -> Result<(Instant, Instant)> {
    let mut header = format!("PUB {subject} {}\r\n", args.size).into_bytes();
    let seq_at = header.len();
    header.resize(seq_at + args.size, b'x');
    header.extend_from_slice(b"\r\n");
    let frame = header;
    let per_batch = (BATCH_BYTES / frame.len()).max(1);
    let mut batch = Vec::with_capacity(per_batch * frame.len());
    for _ in 0..per_batch {
        batch.extend_from_slice(&frame);
    }

    let total = args.msgs;
    let mut sent = 0u64;
    let start = Instant::now();
    while sent < total {
        let mut room = per_batch as u64;
        if window > 0 {
            room = room.min(wait_for_room(shared, sent, window, deadline)?);
        }
        let n = usize::try_from(room.min(total - sent))?;
        if queue {
            for (i, f) in batch.chunks_exact_mut(frame.len()).take(n).enumerate() {
                f[seq_at..seq_at + SEQ_BYTES].copy_from_slice(&(sent + i as u64).to_le_bytes());
            }
        }
        conn.write_all(&batch[..n * frame.len()])?;
        sent += n as u64;
    }
    conn.flush(deadline, &mut |_| {})?;
    Ok((start, Instant::now()))
}

/// Blocks until the publisher may send more; returns how many messages.
fn wait_for_room(shared: &Shared, sent: u64, window: u64, deadline: Instant) -> Result<u64> {
    loop {
        let limit = shared.done().saturating_add(window);
        if limit > sent {
            return Ok(limit - sent);
        }
        check_deadline(deadline, "waiting for subscribers to catch up")?;
        shared.publisher_waiting.store(true, Ordering::SeqCst);
        if shared.done().saturating_add(window) <= sent {
            thread::park_timeout(Duration::from_millis(1));
        }
        shared.publisher_waiting.store(false, Ordering::SeqCst);
    }
}

fn subscribe(
    mut conn: Conn,
    index: usize,
    shared: &Shared,
    total: u64,
    size: usize,
    words: usize,
    deadline: Instant,
) -> Result<SubResult> {
    let mut received = 0u64;
    let mut bad_sizes = 0u64;
    let mut seen = vec![0u64; words];
    let mut dup_or_stray = 0u64;
    let mut last = None;
    loop {
        let finished = if shared.queue {
            shared.done() >= total
        } else {
            received >= total
        };
        if finished {
            break;
        }
        check_deadline(
            deadline,
            &format!("subscriber {index}: received {received} of {total}"),
        )?;
        let before = received;
        conn.read_some(&mut |ev| match *ev {
            Event::Msg { size: n, .. } => {
                received += 1;
                if n != size {
                    bad_sizes += 1;
                }
            }
            Event::Seq(seq) => {
                let word = usize::try_from(seq / 64).unwrap_or(usize::MAX);
                let bit = 1u64 << (seq % 64);
                match seen.get_mut(word) {
                    Some(w) if *w & bit == 0 => *w |= bit,
                    _ => dup_or_stray += 1,
                }
            }
            _ => {}
        })?;
        if received != before {
            last = Some(Instant::now());
            shared.progress[index].store(received, Ordering::Release);
            if shared.publisher_waiting.load(Ordering::SeqCst) {
                shared.publisher.unpark();
            }
        }
    }
    Ok(SubResult {
        conn,
        received,
        bad_sizes,
        last,
        seen,
        dup_or_stray,
    })
}

fn check_exactly_once(results: &[SubResult], total: u64) -> Result<()> {
    let dups: u64 = results.iter().map(|r| r.dup_or_stray).sum();
    ensure!(
        dups == 0,
        "{dups} messages delivered twice to one member or unknown"
    );
    let words = results.first().map_or(0, |r| r.seen.len());
    let mut missing = 0u64;
    let mut twice = 0u64;
    for w in 0..words {
        let mut any = 0u64;
        for r in results {
            twice += u64::from((any & r.seen[w]).count_ones());
            any |= r.seen[w];
        }
        let valid_bits = (total - w as u64 * 64).min(64);
        let mask = if valid_bits == 64 {
            u64::MAX
        } else {
            (1u64 << valid_bits) - 1
        };
        missing += u64::from((!any & mask).count_ones());
    }
    ensure!(
        missing == 0 && twice == 0,
        "queue group: {missing} messages never delivered, {twice} delivered to two members"
    );
    Ok(())
}

fn rate(n: u64, secs: f64) -> f64 {
    n as f64 / secs
}

fn reqrep(args: &Args, addrs: Addrs<'_>, deadline: Instant) -> Result<Report> {
    let size = args.size;
    let total = args.msgs + REQREP_WARMUP;
    let service = format!("{}.reqrep", args.subject);
    let inbox = format!("_INBOX.midge-bench.{}", std::process::id());
    let payload = vec![b'x'; size];

    let responder = Conn::open(
        addrs.subscribers,
        format!("SUB {service} 1\r\n").as_bytes(),
        Scanner::new(),
        deadline,
    )?;
    let mut requester = Conn::open(
        addrs.publisher,
        format!("SUB {inbox}.* 1\r\n").as_bytes(),
        Scanner::new(),
        deadline,
    )?;
    // Requests travel one way and replies the other: wait for interest in both directions.
    await_route_interest(addrs.publisher, addrs.subscribers, &service, deadline)?;
    // (Two tokens after the inbox: the requester's `<inbox>.*` must not see the probes.)
    await_route_interest(
        addrs.subscribers,
        addrs.publisher,
        &format!("{inbox}.probe"),
        deadline,
    )?;
    let responder = thread::Builder::new()
        .name("responder".into())
        .spawn(move || respond(responder, total, payload, deadline))?;

    let mut request = format!("PUB {service} {inbox}.1 {size}\r\n").into_bytes();
    request.resize(request.len() + size, b'x');
    request.extend_from_slice(b"\r\n");
    let mut samples = Vec::with_capacity(usize::try_from(args.msgs)?);
    for i in 0..total {
        let t0 = Instant::now();
        requester.write_all(&request)?;
        let mut got = 0u32;
        let mut wrong = None;
        while got == 0 {
            check_deadline(deadline, &format!("waiting for reply {i}"))?;
            requester.read_some(&mut |ev| {
                if let Event::Msg {
                    size: n, headers, ..
                } = *ev
                {
                    got += 1;
                    if headers || n != size {
                        wrong = Some((headers, n));
                    }
                }
            })?;
        }
        let elapsed = t0.elapsed();
        if let Some((headers, n)) = wrong {
            bail!("reply {i}: unexpected reply (headers: {headers}, size {n}; no responders?)");
        }
        ensure!(got == 1, "request {i} got {got} replies");
        if i >= REQREP_WARMUP {
            samples.push(elapsed.as_nanos() as u64);
        }
    }
    let answered = responder
        .join()
        .map_err(|_| anyhow::anyhow!("responder thread panicked"))??;
    ensure!(
        answered == total,
        "responder answered {answered}, expected {total}"
    );

    Ok(latency_report("reqrep", size, samples))
}

/// Percentiles of round-trip `samples` (nanoseconds) as a report.
fn latency_report(scenario: &str, size: usize, mut samples: Vec<u64>) -> Report {
    samples.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    let pct = |p: f64| {
        let idx = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        us(samples[idx])
    };
    let sum: u64 = samples.iter().sum();
    vec![
        ("scenario", json!(scenario)),
        ("msgs", json!(samples.len())),
        ("size", json!(size)),
        ("p50_us", json!(pct(0.50))),
        ("p90_us", json!(pct(0.90))),
        ("p99_us", json!(pct(0.99))),
        ("avg_us", json!(us(sum) / samples.len() as f64)),
        ("min_us", json!(us(samples[0]))),
        ("max_us", json!(us(samples[samples.len() - 1]))),
    ]
}

/// PING/PONG round trips on one connection, one at a time: what one wake-up of the server
/// and of the client cost on this machine, with nothing routed or stored in between (the
/// floor of `reqrep` and `js-pub`).
fn ping(args: &Args, addr: &Endpoint, deadline: Instant) -> Result<Report> {
    let total = args.msgs + REQREP_WARMUP;
    let mut conn = Conn::open(addr, b"", Scanner::new(), deadline)?;
    let mut samples = Vec::with_capacity(usize::try_from(args.msgs)?);
    for i in 0..total {
        let t0 = Instant::now();
        conn.write_all(b"PING\r\n")?;
        let mut pongs = 0u32;
        while pongs == 0 {
            check_deadline(deadline, &format!("waiting for PONG {i}"))?;
            conn.read_some(&mut |ev| {
                if matches!(ev, Event::Pong) {
                    pongs += 1;
                }
            })?;
        }
        let elapsed = t0.elapsed();
        ensure!(pongs == 1, "PING {i} got {pongs} PONGs");
        if i >= REQREP_WARMUP {
            samples.push(elapsed.as_nanos() as u64);
        }
    }
    Ok(latency_report("ping", 0, samples))
}

/// Answers each request with a same-sized reply; returns how many it answered.
fn respond(mut conn: Conn, total: u64, payload: Vec<u8>, deadline: Instant) -> Result<u64> {
    let mut answered = 0u64;
    let mut out = Vec::with_capacity(4096);
    let mut size_buf = itoa::Buffer::new();
    let size = size_buf.format(payload.len()).as_bytes().to_vec();
    while answered < total {
        check_deadline(deadline, "responder waiting for requests")?;
        let mut no_reply = false;
        conn.read_some(&mut |ev| {
            if let Some(reply) = ev.reply() {
                out.extend_from_slice(b"PUB ");
                out.extend_from_slice(reply);
                out.push(b' ');
                out.extend_from_slice(&size);
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&payload);
                out.extend_from_slice(b"\r\n");
                answered += 1;
            } else if matches!(ev, Event::Msg { .. }) {
                no_reply = true;
            }
        })?;
        ensure!(!no_reply, "responder got a request without a reply subject");
        if !out.is_empty() {
            conn.write_all(&out)?;
            out.clear();
        }
    }
    Ok(answered)
}

fn idle(args: &Args, ep: &Endpoint, deadline: Instant) -> Result<Report> {
    ensure!(
        ep.is_plain(),
        "idle measures plain TCP connections only (no --tls or --ws)"
    );
    let addr = ep.addr.as_str();
    let rss_before = args.server_pid.map(rss_kb).transpose()?;
    let mut conns: Vec<TcpStream> = Vec::with_capacity(args.conns);
    let mut buf = vec![0u8; 16 * 1024];
    let mut hello = Vec::with_capacity(CONNECT.len() + 64);
    let started = Instant::now();
    while conns.len() < args.conns {
        let first = conns.len();
        let batch = IDLE_BATCH.min(args.conns - first);
        for i in first..first + batch {
            let mut stream = dial(addr, deadline)
                .with_context(|| format!("opening connection {} of {}", i + 1, args.conns))?;
            hello.clear();
            hello.extend_from_slice(CONNECT);
            hello.extend_from_slice(
                format!("SUB {}.idle.{i} 1\r\nPING\r\n", args.subject).as_bytes(),
            );
            std::io::Write::write_all(&mut stream, &hello)?;
            conns.push(stream);
        }
        for (i, stream) in conns[first..].iter_mut().enumerate() {
            await_pong(stream, &mut buf, deadline)
                .with_context(|| format!("connection {}", first + i + 1))?;
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    let mut report: Report = vec![
        ("scenario", json!("idle")),
        ("conns", json!(conns.len())),
        ("open_secs", json!(open_secs)),
    ];
    if let (Some(pid), Some(before)) = (args.server_pid, rss_before) {
        let after = rss_kb(pid)?;
        let delta = after.saturating_sub(before);
        report.extend([
            ("rss_before_kb", json!(before)),
            ("rss_after_kb", json!(after)),
            ("rss_delta_kb", json!(delta)),
            (
                "rss_delta_bytes_per_conn",
                json!(delta as f64 * 1024.0 / conns.len().max(1) as f64),
            ),
        ]);
    }
    Ok(report)
}

fn await_pong(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Result<()> {
    let mut scanner = Scanner::new();
    let mut pong = false;
    let mut err = None;
    while !pong {
        check_deadline(deadline, "waiting for PONG")?;
        let n = match stream.read(buf) {
            Ok(0) => bail!("server closed the connection"),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e).context("reading from server"),
        };
        scanner.feed(&buf[..n], &mut |ev| match ev {
            Event::Pong => pong = true,
            Event::Err(text) => err = Some(String::from_utf8_lossy(text).into_owned()),
            _ => {}
        })?;
        if let Some(text) = err.take() {
            bail!("server sent -ERR {text}");
        }
    }
    Ok(())
}

/// The resident set size of a process in KiB, from /proc/PID/status.
fn rss_kb(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

/// `pairs`: N publishers, each with its own subscriber on its own subject, all at once.
/// Each publisher sends `msgs / pairs` messages; every subscriber must get exactly its own
/// publisher's (with one account per pair on the same subject names, anything else would
/// show a leak). Throughput is all deliveries over the time to the last one.
fn pairs(args: &Args, addr: &Endpoint, deadline: Instant) -> Result<Report> {
    let n = args.pairs;
    let per_pair = (args.msgs / n as u64).max(1);
    let size = args.size;
    let user = |i: usize| args.user_prefix.as_ref().map(|p| format!("{p}{i}"));
    let mut subs = Vec::with_capacity(n);
    let mut pubs = Vec::with_capacity(n);
    for i in 0..n {
        let subject = format!("{}.pairs.{i}", args.subject);
        let setup = format!("SUB {subject} 1\r\n");
        let u = user(i);
        subs.push(Conn::open_as(
            addr,
            u.as_deref(),
            setup.as_bytes(),
            Scanner::new(),
            deadline,
        )?);
        pubs.push((
            Conn::open_as(addr, u.as_deref(), b"", Scanner::new(), deadline)?,
            subject,
        ));
    }
    let start_gate = Arc::new(std::sync::Barrier::new(2 * n + 1));
    let mut handles = Vec::with_capacity(2 * n);
    for (i, mut conn) in subs.into_iter().enumerate() {
        let gate = Arc::clone(&start_gate);
        handles.push(thread::Builder::new().name(format!("pair-sub-{i}")).spawn(
            move || -> Result<(u64, Option<Instant>)> {
                gate.wait();
                let mut received = 0u64;
                let mut last = None;
                while received < per_pair {
                    check_deadline(
                        deadline,
                        &format!("pair {i}: received {received} of {per_pair}"),
                    )?;
                    let before = received;
                    conn.read_some(&mut |ev| {
                        if let Event::Msg { size: got, .. } = *ev {
                            if got == size {
                                received += 1;
                            }
                        }
                    })?;
                    if received != before {
                        last = Some(Instant::now());
                    }
                }
                // Anything more before the PONG would be someone else's message.
                let mut extra = 0u64;
                conn.flush(deadline, &mut |ev| {
                    if matches!(ev, Event::Msg { .. }) {
                        extra += 1;
                    }
                })?;
                ensure!(extra == 0, "pair {i}: {extra} messages it was not sent");
                Ok((received, last))
            },
        )?);
    }
    for (i, (mut conn, subject)) in pubs.into_iter().enumerate() {
        let gate = Arc::clone(&start_gate);
        handles.push(thread::Builder::new().name(format!("pair-pub-{i}")).spawn(
            move || -> Result<(u64, Option<Instant>)> {
                let mut frame = format!("PUB {subject} {size}\r\n").into_bytes();
                frame.resize(frame.len() + size, b'x');
                frame.extend_from_slice(b"\r\n");
                let per_batch = (BATCH_BYTES / frame.len()).max(1);
                let batch: Vec<u8> = frame.repeat(per_batch);
                gate.wait();
                let mut sent = 0u64;
                while sent < per_pair {
                    let k = usize::try_from((per_pair - sent).min(per_batch as u64))?;
                    conn.write_all(&batch[..k * frame.len()])?;
                    sent += k as u64;
                }
                conn.flush(deadline, &mut |_| {})?;
                Ok((0, None))
            },
        )?);
    }
    start_gate.wait();
    let start = Instant::now();
    let mut delivered = 0u64;
    let mut last = start;
    for h in handles {
        let (got, at) = h
            .join()
            .map_err(|_| anyhow::anyhow!("pair thread panicked"))??;
        delivered += got;
        if let Some(at) = at {
            last = last.max(at);
        }
    }
    let expected = per_pair * n as u64;
    ensure!(
        delivered == expected,
        "delivered {delivered}, expected {expected}"
    );
    let secs = last.duration_since(start).as_secs_f64();
    Ok(vec![
        ("scenario", json!("pairs")),
        ("pairs", json!(n)),
        ("msgs", json!(expected)),
        ("size", json!(size)),
        ("sub_msgs_per_s", json!(rate(delivered, secs))),
        ("secs", json!(secs)),
    ])
}
