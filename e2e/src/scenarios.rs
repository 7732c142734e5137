//! The scenarios, written once against [`ClusterDriver`]. Each asserts what a user would
//! see (messages arrive, requests are answered once, routes follow membership) and fills in
//! the counts of its report row. Every wait is a condition with a deadline; loops are
//! bounded by a count or a deadline.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use futures::StreamExt as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::driver::{wait_for, ClusterDriver};
use crate::http;
use crate::report::{Counts, Report, Row};

/// How long servers may take to pass their readiness probes: ARM servers run under qemu
/// in the docker driver, and kind may still be pulling.
pub(crate) const READY_WITHIN: Duration = Duration::from_secs(300);
/// Routes re-form after a membership change: DNS, a reload, reconnect back-off.
pub(crate) const MESH_WITHIN: Duration = Duration::from_secs(120);
/// A disconnected node is noticed by ping timeouts (pingInterval x pingMax, plus one).
const NOTICE_LOSS_WITHIN: Duration = Duration::from_secs(150);
pub(crate) const POLL: Duration = Duration::from_millis(250);
const MESSAGES: u64 = 500;

/// The pools of the cloud + edge sample the scenarios act on.
#[derive(Debug, Clone)]
pub struct Layout {
    pub cloud: String,
    pub edge: String,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            cloud: "cloud".into(),
            edge: "edge".into(),
        }
    }
}

/// Deploys `manifest` and runs every scenario in order on the one cluster.
pub async fn run_all<D: ClusterDriver>(driver: &mut D, manifest: &str, layout: &Layout) -> Report {
    let mut report = Report::new(driver.name());
    let started = Instant::now();
    let mut counts = Counts::default();
    let outcome = cloud_and_edge(driver, manifest, layout, &mut counts).await;
    let deployed = outcome.is_ok();
    push(
        &mut report,
        "1 cloud+edge ready, both ways",
        started,
        counts,
        outcome,
    );
    for server in driver.servers() {
        let machine = driver
            .machine(&server.name)
            .await
            .unwrap_or_else(|e| format!("unknown ({e:#})"));
        report.machines.push((server.name, machine));
    }
    if !deployed {
        return report;
    }

    let started = Instant::now();
    let mut counts = Counts::default();
    let outcome = queue_workers_scale(driver, layout, &mut counts).await;
    push(
        &mut report,
        "2 queue workers 1->5->1",
        started,
        counts,
        outcome,
    );

    let started = Instant::now();
    let mut counts = Counts::default();
    let outcome = cluster_scale(driver, layout, &mut counts).await;
    push(
        &mut report,
        "3 cluster scale 3->5->3",
        started,
        counts,
        outcome,
    );

    let started = Instant::now();
    let mut counts = Counts::default();
    let outcome = kill_and_lose_edge(driver, layout, &mut counts).await;
    push(
        &mut report,
        "4 kill -9 + lost edge node",
        started,
        counts,
        outcome,
    );

    let started = Instant::now();
    let mut counts = Counts::default();
    let outcome = rolling_restart(driver, layout, &mut counts).await;
    push(
        &mut report,
        "5 rolling restart under load",
        started,
        counts,
        outcome,
    );

    let started = Instant::now();
    let mut counts = Counts::default();
    let outcome = config_rotation(driver, layout, &mut counts).await;
    push(
        &mut report,
        "6 config rotation (reload)",
        started,
        counts,
        outcome,
    );
    report
}

pub(crate) fn push(
    report: &mut Report,
    scenario: &str,
    started: Instant,
    counts: Counts,
    outcome: anyhow::Result<String>,
) {
    report.rows.push(Row {
        scenario: scenario.to_string(),
        duration: started.elapsed(),
        counts,
        outcome: outcome.map_err(|e| format!("{e:#}")),
    });
}

/// What a client presents to servers that ask for more than a connection: the TLS
/// configuration it trusts servers with, and a token it reads on every (re)connect from
/// where the application keeps it (set it to rotate).
#[derive(Debug, Clone, Default)]
pub(crate) struct Access {
    pub tls: Option<rustls::ClientConfig>,
    pub token: Option<Arc<Mutex<String>>>,
}

/// A client that may use any of `urls` (and whatever servers they advertise), reconnecting
/// forever: what an application in the cluster would run.
async fn connect<U: AsRef<str>>(urls: &[U]) -> anyhow::Result<async_nats::Client> {
    connect_with(urls, &Access::default()).await
}

/// [`connect`] with `access`.
pub(crate) async fn connect_with<U: AsRef<str>>(
    urls: &[U],
    access: &Access,
) -> anyhow::Result<async_nats::Client> {
    let list: Vec<&str> = urls.iter().map(AsRef::as_ref).collect();
    let mut options = match access.token.clone() {
        Some(token) => async_nats::ConnectOptions::with_auth_callback(move |_nonce| {
            let token = token.lock().map(|t| t.clone()).ok();
            async move {
                let mut auth = async_nats::Auth::new();
                auth.token = token;
                Ok(auth)
            }
        }),
        None => async_nats::ConnectOptions::new(),
    };
    options = options
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(5)));
    if let Some(tls) = &access.tls {
        options = options.require_tls(true).tls_client_config(tls.clone());
    }
    tokio::time::timeout(Duration::from_secs(15), options.connect(list.clone()))
        .await
        .with_context(|| format!("connecting to {list:?} timed out"))?
        .with_context(|| format!("connecting to {list:?}"))
}

pub(crate) async fn client_for<D: ClusterDriver>(
    driver: &D,
    server: &str,
) -> anyhow::Result<async_nats::Client> {
    connect(&[driver.client_url(server).await?]).await
}

pub(crate) fn pod<D: ClusterDriver>(
    driver: &D,
    pool: &str,
    ordinal: u32,
) -> anyhow::Result<String> {
    driver
        .servers()
        .into_iter()
        .find(|s| s.pool == pool && s.ordinal == ordinal)
        .map(|s| s.name)
        .with_context(|| format!("pool {pool} has no server {ordinal}"))
}

/// Publishes `n` numbered messages on `subject` from `from` and counts what a subscriber
/// on `to` gets. Interest crosses routes asynchronously, so probes go first until one
/// arrives; they are not counted.
pub(crate) async fn exchange(
    from: &async_nats::Client,
    to: &async_nats::Client,
    subject: &str,
    n: u64,
    counts: &mut Counts,
) -> anyhow::Result<()> {
    let mut sub = to.subscribe(subject.to_string()).await?;
    to.flush().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        from.publish(subject.to_string(), "probe".into()).await?;
        from.flush().await?;
        match tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            Ok(Some(m)) if m.payload.as_ref() == b"probe" => break,
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => bail!("the subscription on {subject} ended"),
        }
        ensure!(
            Instant::now() < deadline,
            "interest in {subject} never reached the publisher's server"
        );
    }
    for i in 0..n {
        from.publish(subject.to_string(), format!("m-{i}").into())
            .await?;
    }
    from.flush().await?;
    counts.sent += n;

    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (seen.len() as u64) < n {
        let Ok(next) = tokio::time::timeout_at(deadline, sub.next()).await else {
            break;
        };
        let Some(m) = next else { break };
        let Some(i) = std::str::from_utf8(&m.payload)
            .ok()
            .and_then(|p| p.strip_prefix("m-"))
            .and_then(|i| i.parse::<u64>().ok())
        else {
            continue;
        };
        if !seen.insert(i) {
            counts.duplicates += 1;
        }
    }
    let got = seen.len() as u64;
    counts.received += got;
    counts.lost += n - got;
    sub.unsubscribe().await?;
    ensure!(got == n, "{subject}: {got} of {n} messages arrived");
    Ok(())
}

/// 1: the cloud + edge sample becomes ready and a message crosses both ways.
async fn cloud_and_edge<D: ClusterDriver>(
    driver: &mut D,
    manifest: &str,
    layout: &Layout,
    counts: &mut Counts,
) -> anyhow::Result<String> {
    driver.deploy(manifest).await?;
    driver.wait_ready(READY_WITHIN).await?;
    let servers = driver.servers();
    wait_full_mesh(driver, layout, &names(&servers)).await?;
    // Each edge server holds its uplink: one leaf node connection to a cloud server.
    for edge in servers.iter().filter(|s| s.pool == layout.edge) {
        wait_for(
            &format!("{}'s /leafz to show its uplink", edge.name),
            MESH_WITHIN,
            POLL,
            || async {
                let url = format!("{}/leafz", driver.monitor_url(&edge.name).await?);
                let leafz = http::get_json(&url, Duration::from_secs(3)).await?;
                match leafz["leafnodes"].as_u64() {
                    Some(1) => Ok(Some(())),
                    n => bail!("leafnodes {n:?}"),
                }
            },
        )
        .await?;
    }
    let cloud_name = pod(driver, &layout.cloud, 0)?;
    let mut notes = Vec::new();
    for edge in servers.iter().filter(|s| s.pool == layout.edge) {
        let cloud = client_for(driver, &cloud_name).await?;
        let edge_client = client_for(driver, &edge.name).await?;
        exchange(&cloud, &edge_client, "e2e.cloud-to-edge", MESSAGES, counts).await?;
        exchange(&edge_client, &cloud, "e2e.edge-to-cloud", MESSAGES, counts).await?;
        notes.push(format!(
            "{}: {}",
            edge.name,
            driver.machine(&edge.name).await?
        ));
    }
    Ok(notes.join(", "))
}

/// Each server's pool, by server name.
fn pools_of<D: ClusterDriver>(driver: &D) -> BTreeMap<String, String> {
    driver
        .servers()
        .into_iter()
        .map(|s| (s.name, s.pool))
        .collect()
}

pub(crate) fn names(servers: &[crate::driver::Server]) -> BTreeSet<String> {
    servers.iter().map(|s| s.name.clone()).collect()
}

/// The names of the peers `/routez` of `server` lists.
async fn route_peers<D: ClusterDriver>(
    driver: &D,
    server: &str,
) -> anyhow::Result<BTreeSet<String>> {
    let url = format!("{}/routez", driver.monitor_url(server).await?);
    let routez = http::get_json(&url, Duration::from_secs(3)).await?;
    Ok(routez["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["remote_name"].as_str().map(String::from))
        .collect())
}

/// Waits until every server in `members` routes to exactly the others.
/// Waits until each of `members` routes to exactly the others of its mesh: the core
/// servers form one, each leaf (edge) pool its own, and no route crosses between them.
pub(crate) async fn wait_full_mesh<D: ClusterDriver>(
    driver: &D,
    layout: &Layout,
    members: &BTreeSet<String>,
) -> anyhow::Result<()> {
    let pools = pools_of(driver);
    let mesh = |server: &str| {
        let pool = pools.get(server).map(String::as_str).unwrap_or_default();
        if pool == layout.edge {
            pool.to_string()
        } else {
            String::new()
        }
    };
    for server in members {
        let mut expected: BTreeSet<String> = members
            .iter()
            .filter(|m| mesh(m) == mesh(server))
            .cloned()
            .collect();
        expected.remove(server);
        wait_for(
            &format!("{server}'s /routez to list {expected:?}"),
            MESH_WITHIN,
            POLL,
            || async {
                let peers = route_peers(driver, server).await?;
                if peers == expected {
                    Ok(Some(()))
                } else {
                    anyhow::bail!("it lists {peers:?}")
                }
            },
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn varz<D: ClusterDriver>(
    driver: &D,
    server: &str,
) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}/varz", driver.monitor_url(server).await?);
    http::get_json(&url, Duration::from_secs(3)).await
}

/// `start` and `config_digest` from each server's `/varz`.
pub(crate) async fn starts_and_digests<D: ClusterDriver>(
    driver: &D,
) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    let mut out = BTreeMap::new();
    for s in driver.servers() {
        let v = varz(driver, &s.name).await?;
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        out.insert(s.name, (field("start"), field("config_digest")));
    }
    Ok(out)
}

/// 3: the cloud pool grows 3 -> 5 and shrinks back; every server's routes follow through
/// a config reload, none restarts.
async fn cluster_scale<D: ClusterDriver>(
    driver: &mut D,
    layout: &Layout,
    counts: &mut Counts,
) -> anyhow::Result<String> {
    let before = starts_and_digests(driver).await?;
    let base = driver
        .servers()
        .iter()
        .filter(|s| s.pool == layout.cloud)
        .count() as u32;
    let grown = base + 2;

    driver.scale(&layout.cloud, grown).await?;
    driver.wait_ready(READY_WITHIN).await?;
    let members = names(&driver.servers());
    wait_full_mesh(driver, layout, &members).await?;
    // Gossip alone completes the mesh; the route lists must follow too (a server restarted
    // later dials from its list), through a reload of the new ConfigMap. Only the cloud
    // servers read it: the edge pool's ConfigMap names the cloud's leaf node Service,
    // which scaling does not change.
    let cloud_before: BTreeMap<_, _> = before
        .iter()
        .filter(|(name, _)| pools_of(driver).get(*name) == Some(&layout.cloud))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    wait_reloaded(driver, &cloud_before, grown as usize).await?;
    let after = starts_and_digests(driver).await?;
    let members_grown = after.len();
    for (server, (start, _)) in &before {
        let (now_start, _) = after
            .get(server)
            .with_context(|| format!("{server} disappeared"))?;
        ensure!(now_start == start, "{server} restarted while scaling up");
    }
    // The newest server carries traffic to the edge.
    let newest = pod(driver, &layout.cloud, grown - 1)?;
    let edge = pod(driver, &layout.edge, 0)?;
    let a = client_for(driver, &newest).await?;
    let b = client_for(driver, &edge).await?;
    exchange(&a, &b, "e2e.scaled", MESSAGES, counts).await?;
    drop((a, b));

    let scale_down = Instant::now();
    driver.scale(&layout.cloud, base).await?;
    let drained = scale_down.elapsed();
    let members = names(&driver.servers());
    wait_full_mesh(driver, layout, &members).await?;
    let still: BTreeMap<_, _> = after
        .into_iter()
        .filter(|(name, _)| {
            members.contains(name) && pools_of(driver).get(name) == Some(&layout.cloud)
        })
        .collect();
    wait_reloaded(driver, &still, base as usize).await?;
    let shrunk = starts_and_digests(driver).await?;
    for (server, (start, _)) in &shrunk {
        let (was, _) = before
            .get(server)
            .with_context(|| format!("{server} is new"))?;
        ensure!(was == start, "{server} restarted while scaling down");
    }
    Ok(format!(
        "{} -> {} -> {} servers, /routez and route lists agreed, no restarts, \
         scale-down (preStop + stop) {:.1} s",
        before.len(),
        members_grown,
        shrunk.len(),
        drained.as_secs_f64()
    ))
}

/// Waits until each server in `before` runs a config other than the one it had (its
/// `config_digest` moved) whose route list names `routes` servers (`/varz` cluster.urls).
async fn wait_reloaded<D: ClusterDriver>(
    driver: &D,
    before: &BTreeMap<String, (String, String)>,
    routes: usize,
) -> anyhow::Result<()> {
    for (server, (_, digest)) in before {
        wait_for(
            &format!("{server} to reload a route list of {routes}"),
            MESH_WITHIN,
            POLL,
            || async {
                let v = varz(driver, server).await?;
                let urls = v["cluster"]["urls"].as_array().map_or(0, Vec::len);
                let now = v["config_digest"].as_str().unwrap_or_default();
                if now != digest && urls == routes {
                    Ok(Some(()))
                } else {
                    bail!("digest {now}, {urls} route URLs")
                }
            },
        )
        .await?;
    }
    Ok(())
}

/// A queue worker: answers requests on `e2e.work` in group `workers` with their payload,
/// counting how often it handled each payload. Told to stop, it drains: unsubscribes, answers what was already
/// delivered to it, then closes.
pub(crate) struct Worker {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
    handled: Arc<AtomicU64>,
}

const WORK_SUBJECT: &str = "e2e.work";

pub(crate) type Handled = Arc<Mutex<HashMap<String, u32>>>;

pub(crate) async fn start_worker(
    client: async_nats::Client,
    ids: Handled,
) -> anyhow::Result<Worker> {
    let mut sub = client
        .queue_subscribe(WORK_SUBJECT, "workers".into())
        .await?;
    client.flush().await?;
    let handled = Arc::new(AtomicU64::new(0));
    let (stop, mut stopped) = oneshot::channel();
    let count = handled.clone();
    let task = tokio::spawn(async move {
        let mut draining = false;
        loop {
            let message = tokio::select! {
                m = sub.next() => m,
                _ = &mut stopped, if !draining => {
                    draining = true;
                    sub.drain().await?;
                    continue;
                }
            };
            let Some(message) = message else { break };
            let Some(reply) = message.reply else { continue };
            if let Ok(mut ids) = ids.lock() {
                let key = String::from_utf8_lossy(&message.payload).into_owned();
                *ids.entry(key).or_default() += 1;
            }
            count.fetch_add(1, Ordering::Relaxed);
            client.publish(reply, message.payload).await?;
        }
        client.flush().await?;
        Ok(())
    });
    Ok(Worker {
        stop,
        task,
        handled,
    })
}

impl Worker {
    pub(crate) async fn drain(self, within: Duration) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(within, self.task)
            .await
            .context("a worker did not finish draining")??
    }
}

/// How a retrying client sends one request: up to `ATTEMPTS` tries, each tagged
/// `id.attempt`, so a worker handling the same try twice shows as a duplicate delivery
/// while a retry after a lost try does not.
const ATTEMPTS: u32 = 10;
const TRY_TIMEOUT: Duration = Duration::from_secs(2);

async fn request_with_retries(client: &async_nats::Client, id: u64) -> (bool, u32) {
    for attempt in 0..ATTEMPTS {
        let payload = format!("{id}.{attempt}");
        let answer = tokio::time::timeout(
            TRY_TIMEOUT,
            client.request(WORK_SUBJECT, payload.clone().into()),
        )
        .await;
        if let Ok(Ok(reply)) = answer {
            if reply.payload.as_ref() == payload.as_bytes() {
                return (true, attempt);
            }
        }
        // Back off a little: a client mid-reconnect answers at once with an error.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (false, ATTEMPTS)
}

#[derive(Debug, Default)]
struct LoadCounts {
    sent: AtomicU64,
    answered: AtomicU64,
    /// Requests whose first try went unanswered (answered by a retry or not at all).
    retried: AtomicU64,
    retried_ids: Mutex<Vec<u64>>,
}

/// What a finished load did.
#[derive(Debug)]
pub(crate) struct LoadTotals {
    sent: u64,
    answered: u64,
    /// Ids whose first try went unanswered within `TRY_TIMEOUT`.
    retried: Vec<u64>,
}

/// A steady stream of requests (16 in flight at most, one started every `pace`) from one
/// client that retries, until stopped.
pub(crate) struct Load {
    counts: Arc<LoadCounts>,
    running: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Load {
    pub(crate) fn start(client: async_nats::Client, pace: Duration) -> Self {
        let counts = Arc::new(LoadCounts::default());
        let running = Arc::new(AtomicBool::new(true));
        let task = {
            let (counts, running) = (counts.clone(), running.clone());
            tokio::spawn(async move {
                let mut in_flight = tokio::task::JoinSet::new();
                let mut ticks = tokio::time::interval(pace);
                let mut id = 0u64;
                while running.load(Ordering::Relaxed) {
                    ticks.tick().await;
                    while in_flight.len() >= 16 {
                        in_flight.join_next().await;
                    }
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                    let (client, counts) = (client.clone(), counts.clone());
                    let this = id;
                    id += 1;
                    in_flight.spawn(async move {
                        let (ok, attempts) = request_with_retries(&client, this).await;
                        if ok {
                            counts.answered.fetch_add(1, Ordering::Relaxed);
                        }
                        if attempts > 0 {
                            counts.retried.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut ids) = counts.retried_ids.lock() {
                                ids.push(this);
                            }
                        }
                    });
                }
                while in_flight.join_next().await.is_some() {}
            })
        };
        Self {
            counts,
            running,
            task,
        }
    }

    /// Waits until `more` further requests have been answered.
    pub(crate) async fn progress(&self, more: u64) -> anyhow::Result<()> {
        let answered = &self.counts.answered;
        let target = answered.load(Ordering::Relaxed) + more;
        wait_for(
            &format!("{more} more answered requests"),
            Duration::from_secs(60),
            Duration::from_millis(50),
            || async { Ok((answered.load(Ordering::Relaxed) >= target).then_some(())) },
        )
        .await
    }

    /// Stops starting requests and waits for those in flight to finish their retries.
    pub(crate) async fn stop(self) -> anyhow::Result<LoadTotals> {
        self.running.store(false, Ordering::Relaxed);
        let retries = TRY_TIMEOUT * ATTEMPTS + Duration::from_secs(5);
        tokio::time::timeout(retries, self.task)
            .await
            .context("the requests in flight did not finish")?
            .context("the load task panicked")?;
        let c = &self.counts;
        Ok(LoadTotals {
            sent: c.sent.load(Ordering::Relaxed),
            answered: c.answered.load(Ordering::Relaxed),
            retried: c
                .retried_ids
                .lock()
                .map(|ids| ids.clone())
                .unwrap_or_default(),
        })
    }
}

/// Fills in `counts` from a finished load and the workers' record, and checks that every
/// request was answered and no try reached two workers. Returns a note on the first tries
/// that went unanswered: slow (a worker got it) or dropped (no worker ever saw it).
pub(crate) fn settle(
    counts: &mut Counts,
    totals: LoadTotals,
    handled: &Handled,
) -> anyhow::Result<(String, Vec<u64>)> {
    let LoadTotals {
        sent,
        answered,
        retried,
    } = totals;
    let handled = handled
        .lock()
        .map_err(|_| anyhow::anyhow!("a worker panicked"))?;
    let duplicates = handled.values().filter(|&&n| n > 1).count() as u64;
    let mut dropped: Vec<u64> = retried
        .iter()
        .copied()
        .filter(|id| !handled.contains_key(&format!("{id}.0")))
        .collect();
    dropped.sort_unstable();
    counts.sent = sent;
    counts.received = answered;
    counts.lost = sent - answered.min(sent);
    counts.duplicates = duplicates;
    ensure!(
        answered == sent,
        "{} of {sent} requests never answered, retries included",
        sent - answered.min(sent)
    );
    ensure!(
        duplicates == 0,
        "{duplicates} tries were delivered to two workers"
    );
    let note = format!(
        "{} first tries unanswered in {TRY_TIMEOUT:?} ({} reached no worker), \
         all answered on retry",
        retried.len(),
        dropped.len()
    );
    Ok((note, dropped))
}

/// 2: queue-group workers grow 1 -> 5 -> 1 under a steady stream of requests. Every
/// request must be answered, each try handled by exactly one worker, also while four
/// drain. A try lost in the moment a draining worker's interest is still being withdrawn
/// across a route is counted (`first tries lost`) and answered by the client's retry.
async fn queue_workers_scale<D: ClusterDriver>(
    driver: &mut D,
    layout: &Layout,
    counts: &mut Counts,
) -> anyhow::Result<String> {
    let mut urls = Vec::new();
    for s in driver.servers().iter().filter(|s| s.pool == layout.cloud) {
        urls.push(driver.client_url(&s.name).await?);
    }
    ensure!(!urls.is_empty(), "no cloud servers");
    let handled: Handled = Arc::default();
    let first = start_worker(connect(&urls[..1]).await?, handled.clone()).await?;
    let load = Load::start(connect(&urls[..1]).await?, Duration::from_millis(2));

    // Request ids are numbered in order, so the ids sent around each change say which
    // change a dropped try coincided with (16 were in flight before each).
    let sent_now = || load.counts.sent.load(Ordering::Relaxed);
    let result: anyhow::Result<[(u64, u64); 2]> = async {
        load.progress(200).await?;
        let join_start = sent_now().saturating_sub(16);
        let mut extra = Vec::new();
        for i in 1..5 {
            let url = [&urls[i % urls.len()]];
            extra.push(start_worker(connect(&url).await?, handled.clone()).await?);
        }
        // Each of the five must be handed work: the group spans the cluster.
        for (i, w) in std::iter::once(&first).chain(&extra).enumerate() {
            let done = &w.handled;
            let floor = done.load(Ordering::Relaxed) + 20;
            wait_for(
                &format!("worker {i} to handle 20 more requests"),
                Duration::from_secs(60),
                Duration::from_millis(50),
                || async { Ok((done.load(Ordering::Relaxed) >= floor).then_some(())) },
            )
            .await?;
        }
        let join = (join_start, sent_now());
        let drain_start = sent_now().saturating_sub(16);
        let drains = extra.into_iter().map(|w| w.drain(Duration::from_secs(30)));
        for r in futures::future::join_all(drains).await {
            r?;
        }
        let drain = (drain_start, sent_now());
        load.progress(200).await?;
        Ok([join, drain])
    }
    .await;

    let totals = load.stop().await;
    let drained = first.drain(Duration::from_secs(30)).await;
    let (retries, dropped) = settle(counts, totals?, &handled)?;
    let [join, drain] = result?;
    drained?;
    let within =
        |(from, to): (u64, u64)| dropped.iter().filter(|&&id| id >= from && id <= to).count();
    Ok(format!(
        "{retries}: {} while 4 joined, {} while 4 drained",
        within(join),
        within(drain)
    ))
}

/// 4: a cloud server is killed with SIGKILL and an edge node drops off the network. The
/// others keep serving; once the mesh has noticed, both come back and rejoin.
async fn kill_and_lose_edge<D: ClusterDriver>(
    driver: &mut D,
    layout: &Layout,
    counts: &mut Counts,
) -> anyhow::Result<String> {
    let killed = pod(driver, &layout.cloud, 1)?;
    let lost = pod(driver, &layout.edge, 1)?;
    let cloud = pod(driver, &layout.cloud, 0)?;
    let edge = pod(driver, &layout.edge, 0)?;
    let all = names(&driver.servers());

    driver.kill(&killed).await?;
    driver.disconnect(&lost).await?;
    let outage = Instant::now();
    let a = client_for(driver, &cloud).await?;
    let b = client_for(driver, &edge).await?;
    exchange(&a, &b, "e2e.outage.down", MESSAGES, counts).await?;
    exchange(&b, &a, "e2e.outage.up", MESSAGES, counts).await?;

    // The survivors drop both from their routes: the killed one at once (its socket is
    // reset), the lost one when its pings go unanswered.
    let mut survivors = all.clone();
    survivors.remove(&killed);
    survivors.remove(&lost);
    for server in &survivors {
        wait_for(
            &format!("{server} to drop its routes to {killed} and {lost}"),
            NOTICE_LOSS_WITHIN,
            POLL,
            || async {
                let peers = route_peers(driver, server).await?;
                Ok((!peers.contains(&killed) && !peers.contains(&lost)).then_some(()))
            },
        )
        .await?;
    }
    let noticed = outage.elapsed();
    exchange(&a, &b, "e2e.outage.after", MESSAGES, counts).await?;

    driver.start(&killed).await?;
    driver.reconnect(&lost).await?;
    let back = Instant::now();
    driver.wait_ready(READY_WITHIN).await?;
    wait_full_mesh(driver, layout, &all).await?;
    let rejoined = back.elapsed();
    let c = client_for(driver, &killed).await?;
    let d = client_for(driver, &lost).await?;
    exchange(&c, &d, "e2e.rejoined", MESSAGES, counts).await?;
    Ok(format!(
        "loss noticed after {:.0} s, full mesh {:.0} s after restart",
        noticed.as_secs_f64(),
        rejoined.as_secs_f64()
    ))
}

/// What midge logs when lame duck mode starts.
pub(crate) const LAME_DUCK: &str = "Entering lame duck mode";

/// 5: every server restarted one by one (preStop into lame duck, stop, start, wait until
/// it is ready and meshed again) while a client that retries sends requests to three
/// queue workers. Nothing is lost for it, and no try is delivered to two workers.
async fn rolling_restart<D: ClusterDriver>(
    driver: &mut D,
    layout: &Layout,
    counts: &mut Counts,
) -> anyhow::Result<String> {
    let servers = driver.servers();
    let all = names(&servers);
    let mut urls = Vec::new();
    for s in servers.iter().filter(|s| s.pool == layout.cloud) {
        urls.push(driver.client_url(&s.name).await?);
    }
    ensure!(!urls.is_empty(), "no cloud servers");
    let handled: Handled = Arc::default();
    let mut workers = Vec::new();
    for i in 0..3 {
        let mut mine = urls.clone();
        mine.rotate_left(i % urls.len());
        workers.push(start_worker(connect(&mine).await?, handled.clone()).await?);
    }
    let load = Load::start(connect(&urls).await?, Duration::from_millis(5));

    let result: anyhow::Result<()> = async {
        load.progress(100).await?;
        for server in &servers {
            // The preStop hook must put the server in lame duck mode, so that clients
            // are told to move before it stops (the image has no PATH: an absolute path).
            let before = driver.logs(&server.name).await?.matches(LAME_DUCK).count();
            let log = driver.stop(&server.name).await?;
            ensure!(
                log.matches(LAME_DUCK).count() > before,
                "{} stopped without entering lame duck mode",
                server.name
            );
            driver.start(&server.name).await?;
            driver.wait_ready(READY_WITHIN).await?;
            wait_full_mesh(driver, layout, &all).await?;
            load.progress(50).await?;
        }
        Ok(())
    }
    .await;

    let totals = load.stop().await;
    let mut drained = Ok(());
    for w in workers {
        if let Err(e) = w.drain(Duration::from_secs(30)).await {
            drained = Err(e);
        }
    }
    let (retries, _) = settle(counts, totals?, &handled)?;
    result?;
    drained?;
    Ok(format!(
        "{} servers restarted one by one, each through lame duck mode; {retries}",
        servers.len()
    ))
}

/// 6: a broker setting changed in the NatsCluster (maxPayload) reaches every running
/// server through the ConfigMap and a reload, without a restart, and clients see it.
async fn config_rotation<D: ClusterDriver>(
    driver: &mut D,
    layout: &Layout,
    counts: &mut Counts,
) -> anyhow::Result<String> {
    const MAX_PAYLOAD: u64 = 3 * 1024 * 1024;
    let before = starts_and_digests(driver).await?;
    let manifest =
        crate::rendered::with_broker_setting(driver.manifest(), "maxPayload", MAX_PAYLOAD.into())?;
    driver.apply(&manifest).await?;
    let started = Instant::now();
    for server in before.keys() {
        wait_for(
            &format!("{server} to serve max_payload {MAX_PAYLOAD}"),
            MESH_WITHIN,
            POLL,
            || async {
                let v = varz(driver, server).await?;
                Ok((v["max_payload"].as_u64() == Some(MAX_PAYLOAD)).then_some(()))
            },
        )
        .await?;
    }
    let reloaded = started.elapsed();
    let after = starts_and_digests(driver).await?;
    for (server, (start, digest)) in &before {
        let (now_start, now_digest) = after
            .get(server)
            .with_context(|| format!("{server} disappeared"))?;
        ensure!(
            now_start == start,
            "{server} restarted for a reloadable change"
        );
        ensure!(
            now_digest != digest,
            "{server} reports its old config digest"
        );
    }
    // A message only the new limit admits, from the cloud to the edge.
    let cloud = client_for(driver, &pod(driver, &layout.cloud, 0)?).await?;
    let edge = client_for(driver, &pod(driver, &layout.edge, 1)?).await?;
    ensure!(
        cloud.server_info().max_payload as u64 == MAX_PAYLOAD,
        "a new client is told max_payload {}",
        cloud.server_info().max_payload
    );
    let mut sub = edge.subscribe("e2e.big").await?;
    edge.flush().await?;
    let big = bytes_of(MAX_PAYLOAD as usize - 1024);
    // Interest reaches the cloud server asynchronously: a bounded number of tries.
    let mut arrived = false;
    for _ in 0..15 {
        counts.sent += 1;
        cloud.publish("e2e.big", big.clone()).await?;
        cloud.flush().await?;
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
            ensure!(m.payload == big, "the large message arrived altered");
            arrived = true;
            break;
        }
    }
    ensure!(
        arrived,
        "no message of {} bytes reached the edge",
        big.len()
    );
    counts.received += 1;
    Ok(format!(
        "max_payload {MAX_PAYLOAD} on all {} servers {:.1} s after the apply, no restarts",
        before.len(),
        reloaded.as_secs_f64()
    ))
}

fn bytes_of(len: usize) -> bytes::Bytes {
    (0..len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}
