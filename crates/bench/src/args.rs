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
  ping             PING/PONG round trips on one connection, one at a time; latency in us
                   (the loopback floor under reqrep and js-pub: no routing, no store)
  idle             N connections (--conns) with one SUB each; server RSS (--server-pid)
  pairs            N publisher->subscriber pairs (--pairs) at once, each on its own subject;
                   with --user-prefix P pair i logs in as user/password P<i> (run it against
                   a server whose users are in one account, then in one account each)

JETSTREAM SCENARIOS (each creates its stream or bucket through $JS.API and deletes it at
the end; the acks, PubAcks and replies are all checked):
  js-pub           acked publish, one in flight: msgs/s and ack latency
  js-pub-async     acked publish, up to --window acks outstanding: msgs/s
  js-pull          --msgs messages pre-filled, a durable pull consumer with explicit ack
                   fetching --batch at a time (the next fetch sent when the current one is
                   half received, as clients' consume loops do), each message acked: msgs/s
  js-push          --msgs messages pre-filled, a durable push consumer on an inbox deliver
                   subject (--ack none, or explicit: each message acked): msgs/s
  kv-put           a KV bucket (stream KV_<bucket>, as the clients create it), --msgs puts
                   of distinct keys, up to --window outstanding: ops/s
  kv-get           the same bucket filled with --msgs keys, then a direct get of each, up to
                   --window outstanding, each value checked: ops/s
  js-fill          fills file stream --stream with --msgs messages and leaves it in place
  js-info          asks $JS.API.INFO once (does the server serve JetStream?)
  js-recover       waits until $JS.API.STREAM.INFO.<--stream> answers with at least --msgs
                   messages, retrying connections; times from --started-at-ms

OPTIONS:
  --url URL          nats://host:port, tls://host:port (implies --tls), ws://host:port
                     (implies --ws) or wss://host:port    [default: nats://127.0.0.1:4222]
  --sub-url URL      subscribers and responder connect here instead (another server
                     of the same cluster: measures forwarding over a route) [default: --url]
  --msgs N           messages (reqrep: requests)   [default: 1000000; reqrep, ping 20000;
                     js-pub 10000; other JetStream scenarios 100000; js-fill, js-recover:
                     required]
  --size BYTES       payload size                  [default: 16]
  --subs N           subscribers for fanout/queue  [default: 4]
  --conns N          connections for idle          [default: 10000]
  --pairs N          pairs for pairs               [default: 100]
  --user-prefix P    pairs: log in as P<i>/P<i>    [default: anonymous]
  --server-pid PID   server process for idle RSS (/proc/PID/status VmRSS)
  --window N         max messages the publisher may be ahead of the slowest subscriber
                     (0 = unbounded, like `nats bench`) [default: ~8 MiB of frames];
                     JetStream: requests or acks outstanding [default: 256]; js-push with
                     --ack explicit: the consumer's max_ack_pending [default: 1000]
  --subject S        subject prefix                [default: bench]
  --storage KIND     JetStream: file or memory     [default: file]
  --batch N          js-pull: messages per fetch   [default: 256]
  --ack POLICY       js-push: none or explicit     [default: none]
  --stream NAME      js-fill, js-recover: the stream [default: BENCH_RECOVERY]
  --started-at-ms MS js-recover: Unix time in ms the clock starts at (when the server was
                     started)                      [default: when midge-bench starts]
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
    Ping,
    Idle,
    Pairs,
    JsPub,
    JsPubAsync,
    JsPull,
    JsPush,
    KvPut,
    KvGet,
    JsFill,
    JsRecover,
    JsInfo,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Pub => "pub",
            Scenario::PubSub => "pubsub",
            Scenario::Fanout => "fanout",
            Scenario::Queue => "queue",
            Scenario::ReqRep => "reqrep",
            Scenario::Ping => "ping",
            Scenario::Idle => "idle",
            Scenario::Pairs => "pairs",
            Scenario::JsPub => "js-pub",
            Scenario::JsPubAsync => "js-pub-async",
            Scenario::JsPull => "js-pull",
            Scenario::JsPush => "js-push",
            Scenario::KvPut => "kv-put",
            Scenario::KvGet => "kv-get",
            Scenario::JsFill => "js-fill",
            Scenario::JsRecover => "js-recover",
            Scenario::JsInfo => "js-info",
        }
    }

    fn is_jetstream(self) -> bool {
        matches!(
            self,
            Scenario::JsPub
                | Scenario::JsPubAsync
                | Scenario::JsPull
                | Scenario::JsPush
                | Scenario::KvPut
                | Scenario::KvGet
                | Scenario::JsFill
                | Scenario::JsRecover
                | Scenario::JsInfo
        )
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pub" => Scenario::Pub,
            "pubsub" => Scenario::PubSub,
            "fanout" => Scenario::Fanout,
            "queue" => Scenario::Queue,
            "reqrep" => Scenario::ReqRep,
            "ping" => Scenario::Ping,
            "idle" => Scenario::Idle,
            "pairs" => Scenario::Pairs,
            "js-pub" => Scenario::JsPub,
            "js-pub-async" => Scenario::JsPubAsync,
            "js-pull" => Scenario::JsPull,
            "js-push" => Scenario::JsPush,
            "kv-put" => Scenario::KvPut,
            "kv-get" => Scenario::KvGet,
            "js-fill" => Scenario::JsFill,
            "js-recover" => Scenario::JsRecover,
            "js-info" => Scenario::JsInfo,
            _ => bail!("unknown scenario {s:?}\n\n{USAGE}"),
        })
    }
}

/// Where a JetStream stream keeps its messages (`storage` in the stream config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    File,
    Memory,
}

impl Storage {
    pub fn name(self) -> &'static str {
        match self {
            Storage::File => "file",
            Storage::Memory => "memory",
        }
    }
}

/// A consumer's `ack_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckPolicy {
    None,
    Explicit,
}

impl AckPolicy {
    pub fn name(self) -> &'static str {
        match self {
            AckPolicy::None => "none",
            AckPolicy::Explicit => "explicit",
        }
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
    pub storage: Storage,
    pub batch: u64,
    pub ack: AckPolicy,
    pub stream: String,
    /// js-recover: the start of the clock, in ms since the Unix epoch.
    pub started_at_ms: Option<u64>,
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
    let mut storage = Storage::File;
    let mut batch = 256;
    let mut ack = AckPolicy::None;
    let mut stream = "BENCH_RECOVERY".to_string();
    let mut started_at_ms = None;

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
            "--storage" => {
                storage = match value()?.as_str() {
                    "file" => Storage::File,
                    "memory" => Storage::Memory,
                    v => bail!("--storage: file or memory, not {v:?}"),
                }
            }
            "--batch" => batch = number(&flag, &value()?)?,
            "--ack" => {
                ack = match value()?.as_str() {
                    "none" => AckPolicy::None,
                    "explicit" => AckPolicy::Explicit,
                    v => bail!("--ack: none or explicit, not {v:?}"),
                }
            }
            "--stream" => stream = value()?,
            "--started-at-ms" => started_at_ms = Some(number(&flag, &value()?)?),
            s if !s.starts_with('-') && scenario.is_none() => scenario = Some(Scenario::parse(s)?),
            s => bail!("unexpected argument {s:?}\n\n{USAGE}"),
        }
    }
    let scenario = scenario.with_context(|| format!("no scenario given\n\n{USAGE}"))?;
    let msgs = match (msgs, scenario) {
        (Some(n), _) => n,
        (None, Scenario::JsFill | Scenario::JsRecover) => {
            bail!("{} needs --msgs", scenario.name())
        }
        (None, Scenario::ReqRep | Scenario::Ping) => 20_000,
        (None, Scenario::JsPub) => 10_000,
        (None, s) if s.is_jetstream() => 100_000,
        (None, _) => 1_000_000,
    };
    if msgs == 0 {
        bail!("--msgs must be at least 1");
    }
    if pairs == 0 && scenario == Scenario::Pairs {
        bail!("--pairs must be at least 1");
    }
    if subs == 0 && matches!(scenario, Scenario::Fanout | Scenario::Queue) {
        bail!("--subs must be at least 1");
    }
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    if scenario.is_jetstream() && window == Some(0) {
        bail!("--window must be at least 1 for JetStream scenarios");
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
        storage,
        batch,
        ack,
        stream,
        started_at_ms,
    }))
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T> {
    v.replace('_', "")
        .parse()
        .ok()
        .with_context(|| format!("{flag}: not a number: {v:?}"))
}
