//! Command-line parsing (hand-written: the bench has no CLI dependency).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub const USAGE: &str = "\
midge-bench: NATS load generator (core protocol over TCP, TLS or WebSocket)

USAGE: midge-bench <SCENARIO> [OPTIONS]     (or --scenario <SCENARIO>)

SCENARIOS:
  pub              1 publisher, no subscribers
  pubsub           1 publisher -> 1 subscriber
  fanout           1 publisher -> N subscribers (--subs), reports total delivered msgs/s
  queue            1 publisher -> N queue-group members (--subs), checks exactly-once
  reqrep           1 requester <-> 1 responder, one request at a time; latency in us
  idle             N connections (--conns) with one SUB each; server RSS (--server-pid)
  pairs            N publisher->subscriber pairs (--pairs) at once, each on its own subject;
                   with --user-prefix P pair i logs in as user/password P<i> (run it against
                   a server whose users are in one account, then in one account each)

OPTIONS:
  --url URL          nats://host:port, tls://host:port (implies --tls), ws://host:port
                     (implies --ws) or wss://host:port    [default: nats://127.0.0.1:4222]
  --sub-url URL      subscribers and responder connect here instead (another server
                     of the same cluster: measures forwarding over a route) [default: --url]
  --msgs N           messages (reqrep: requests)   [default: 1000000; reqrep 20000]
  --size BYTES       payload size                  [default: 16]
  --subs N           subscribers for fanout/queue  [default: 4]
  --conns N          connections for idle          [default: 10000]
  --pairs N          pairs for pairs               [default: 100]
  --user-prefix P    pairs: log in as P<i>/P<i>    [default: anonymous]
  --server-pid PID   server process for idle RSS (/proc/PID/status VmRSS)
  --window N         max messages the publisher may be ahead of the slowest subscriber
                     (0 = unbounded, like `nats bench`) [default: ~8 MiB of frames]
  --subject S        subject prefix                [default: bench]
  --timeout SECS     deadline for the whole run    [default: 120]
  --json             one-line JSON result
  --tls              every connection upgrades to TLS after the server's INFO (as NATS
                     clients do; with --ws: TLS before the WebSocket upgrade)
  --tls-ca PEM       CA certificate(s) the server certificate must chain to (needed by --tls)
  --tls-server-name NAME
                     name the server certificate must carry [default: the URL's host]
  --ws               NATS over WebSocket: HTTP/1.1 upgrade, then masked binary frames (one
                     per write) out, server frames deframed in; no compression. Not for idle
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Pub,
    PubSub,
    Fanout,
    Queue,
    ReqRep,
    Idle,
    Pairs,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Pub => "pub",
            Scenario::PubSub => "pubsub",
            Scenario::Fanout => "fanout",
            Scenario::Queue => "queue",
            Scenario::ReqRep => "reqrep",
            Scenario::Idle => "idle",
            Scenario::Pairs => "pairs",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pub" => Scenario::Pub,
            "pubsub" => Scenario::PubSub,
            "fanout" => Scenario::Fanout,
            "queue" => Scenario::Queue,
            "reqrep" => Scenario::ReqRep,
            "idle" => Scenario::Idle,
            "pairs" => Scenario::Pairs,
            _ => bail!("unknown scenario {s:?}\n\n{USAGE}"),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Args {
    pub scenario: Scenario,
    pub url: String,
    /// Where subscribers and the responder connect (`None`: `url`).
    pub sub_url: Option<String>,
    pub msgs: u64,
    pub size: usize,
    pub subs: usize,
    pub conns: usize,
    pub pairs: usize,
    pub user_prefix: Option<String>,
    pub server_pid: Option<u32>,
    pub window: Option<u64>,
    pub subject: String,
    pub timeout: Duration,
    pub json: bool,
    pub tls: bool,
    pub tls_ca: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    pub ws: bool,
}

/// Parses the arguments after the program name; `Ok(None)` means help was asked for.
pub fn parse(argv: impl IntoIterator<Item = String>) -> Result<Option<Args>> {
    let mut scenario = None;
    let mut url = "nats://127.0.0.1:4222".to_string();
    let mut sub_url = None;
    let mut msgs = None;
    let mut size = 16;
    let mut subs = 4;
    let mut conns = 10_000;
    let mut pairs = 100;
    let mut user_prefix = None;
    let mut server_pid = None;
    let mut window = None;
    let mut subject = "bench".to_string();
    let mut timeout = 120;
    let mut json = false;
    let mut tls = false;
    let mut tls_ca = None;
    let mut tls_server_name = None;
    let mut ws = false;

    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().with_context(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--scenario" => scenario = Some(Scenario::parse(&value()?)?),
            "--url" => url = value()?,
            "--sub-url" => sub_url = Some(value()?),
            "--msgs" => msgs = Some(number(&flag, &value()?)?),
            "--size" => size = number(&flag, &value()?)?,
            "--subs" => subs = number(&flag, &value()?)?,
            "--conns" => conns = number(&flag, &value()?)?,
            "--pairs" => pairs = number(&flag, &value()?)?,
            "--user-prefix" => user_prefix = Some(value()?),
            "--server-pid" => server_pid = Some(number(&flag, &value()?)?),
            "--window" => window = Some(number(&flag, &value()?)?),
            "--subject" => subject = value()?,
            "--timeout" => timeout = number(&flag, &value()?)?,
            "--json" => json = true,
            "--tls" => tls = true,
            "--tls-ca" => tls_ca = Some(PathBuf::from(value()?)),
            "--tls-server-name" => tls_server_name = Some(value()?),
            "--ws" => ws = true,
            s if !s.starts_with('-') && scenario.is_none() => scenario = Some(Scenario::parse(s)?),
            s => bail!("unexpected argument {s:?}\n\n{USAGE}"),
        }
    }
    let scenario = scenario.with_context(|| format!("no scenario given\n\n{USAGE}"))?;
    let msgs = msgs.unwrap_or(if scenario == Scenario::ReqRep {
        20_000
    } else {
        1_000_000
    });
    if msgs == 0 {
        bail!("--msgs must be at least 1");
    }
    if pairs == 0 && scenario == Scenario::Pairs {
        bail!("--pairs must be at least 1");
    }
    if subs == 0 && matches!(scenario, Scenario::Fanout | Scenario::Queue) {
        bail!("--subs must be at least 1");
    }
    Ok(Some(Args {
        scenario,
        url,
        sub_url,
        msgs,
        size,
        subs,
        conns,
        pairs,
        user_prefix,
        server_pid,
        window,
        subject,
        timeout: Duration::from_secs(timeout),
        json,
        tls,
        tls_ca,
        tls_server_name,
        ws,
    }))
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T> {
    v.replace('_', "")
        .parse()
        .ok()
        .with_context(|| format!("{flag}: not a number: {v:?}"))
}
