//! Leader election through a `coordination.k8s.io/v1` Lease, so that several operator
//! replicas can run and exactly one of them reconciles.
//!
//! kube-runtime has no elector, so this is a small one with the semantics of client-go's:
//!
//! - A candidate takes the Lease when nobody holds it, or when the holder has not renewed
//!   it for the lease duration. Expiry is judged on the candidate's own clock, from the
//!   moment it last saw the record change (its resourceVersion), never by comparing the
//!   holder's `renewTime` with local time: clocks of two nodes may disagree, and a skewed
//!   clock must not make two leaders.
//! - Every write carries the resourceVersion it was based on, so of two candidates racing
//!   for a free or expired Lease exactly one wins; the other gets 409 and keeps waiting.
//! - The leader renews every `renew_deadline / 2`. If the Lease turns out to be held by
//!   someone else, or the write conflicts, it steps down at once. Other errors (a slow or
//!   unreachable API server) are retried every `retry_period` until `renew_deadline` has
//!   passed since the last successful renewal; then it steps down. Because
//!   `renew_deadline < lease_duration`, the old leader has stopped trying to lead before a
//!   standby can see the Lease as expired.
//! - On graceful shutdown the leader clears `holderIdentity`, so a standby takes over at
//!   its next retry instead of waiting for the Lease to expire.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long a Lease is valid, how long a leader keeps trying to renew it, and how often
/// candidates retry. The defaults are client-go's (15s, 10s, 2s).
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Name of the Lease object, shared by every replica.
    pub name: String,
    /// This replica's identity (its pod name): written into `holderIdentity`.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(name: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaseConfig {
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("reading Lease {name}: {source}")]
    Get {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating Lease {name}: {source}")]
    Create {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating Lease {name}: {source}")]
    Update {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Why a leader stopped leading.
#[derive(Debug)]
pub enum StepDown {
    /// Another replica holds the Lease, or wrote it between our read and our write.
    Lost,
    /// The API server could not be reached for a whole renew deadline.
    RenewDeadline(LeaseError),
}

/// A candidate for, and possibly the holder of, one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The Lease as we last wrote it, while we hold it: the base for releasing it.
    held: Option<Lease>,
    /// Another holder's record: its resourceVersion and when we first saw that version.
    observed: Option<(String, Instant)>,
}

impl std::fmt::Debug for LeaderElector {
    // kube's Api has no Debug; the configuration and the state are what matter.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("config", &self.config)
            .field("leading", &self.held.is_some())
            .finish_non_exhaustive()
    }
}

/// Whether an API error means another writer got there first (Conflict or AlreadyExists).
fn lost_race(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

impl LeaderElector {
    /// `api` must be namespaced: the Lease lives in the operator's own namespace.
    pub fn new(api: Api<Lease>, config: LeaseConfig) -> Self {
        LeaderElector {
            api,
            config,
            held: None,
            observed: None,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// One round of the election: reads the Lease and creates, takes over or renews it as
    /// allowed. `Ok(true)` when this replica holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaseError> {
        let name = &self.config.name;
        let Some(lease) = self
            .api
            .get_opt(name)
            .await
            .map_err(|source| LeaseError::Get {
                name: name.clone(),
                source,
            })?
        else {
            return self.create().await;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let ours = holder == Some(self.config.identity.as_str());
        if let Some(holder) = holder.filter(|_| !ours) {
            self.held = None;
            let version = lease.resource_version().unwrap_or_default();
            let now = Instant::now();
            let seen = match &self.observed {
                Some((seen_version, at)) if *seen_version == version => *at,
                _ => {
                    self.observed = Some((version, now));
                    now
                }
            };
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.config.lease_duration, Duration::from_secs);
            if now < seen + duration {
                tracing::debug!(%holder, "lease held by another replica");
                return Ok(false);
            }
            tracing::info!(%holder, "lease expired, taking over");
        }
        // Free, expired, or ours: write it, based on the version just read.
        let lease = self.claim(lease, !ours);
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(written) => {
                self.held = Some(written);
                self.observed = None;
                Ok(true)
            }
            Err(error) if lost_race(&error) => {
                self.held = None;
                Ok(false)
            }
            Err(source) => Err(LeaseError::Update {
                name: name.clone(),
                source,
            }),
        }
    }

    async fn create(&mut self) -> Result<bool, LeaseError> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        let mut lease = self.claim(lease, false);
        if let Some(spec) = lease.spec.as_mut() {
            spec.acquire_time = spec.renew_time.clone();
        }
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(written) => {
                self.held = Some(written);
                Ok(true)
            }
            // Another candidate created it first: it is the leader for now.
            Err(error) if lost_race(&error) => Ok(false),
            Err(source) => Err(LeaseError::Create {
                name: self.config.name.clone(),
                source,
            }),
        }
    }

    /// The Lease with this replica as the holder, renewed now; a change of holder also
    /// counts a transition and records the acquire time.
    fn claim(&self, mut lease: Lease, new_holder: bool) -> Lease {
        let now = MicroTime(Timestamp::now());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if new_holder {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = Some(self.config.lease_seconds());
        spec.renew_time = Some(now);
        lease
    }

    /// Waits until this replica holds the Lease, trying every retry period.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "leader election attempt failed"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews the held Lease until leadership is lost, and says why.
    pub async fn hold(&mut self) -> StepDown {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.renew_deadline / 2).await;
            loop {
                match self.try_acquire_or_renew().await {
                    Ok(true) => {
                        renewed = Instant::now();
                        break;
                    }
                    Ok(false) => return StepDown::Lost,
                    Err(error) if renewed.elapsed() >= self.config.renew_deadline => {
                        self.held = None;
                        return StepDown::RenewDeadline(error);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "renewing the lease failed, retrying");
                        tokio::time::sleep(self.config.retry_period).await;
                    }
                }
            }
        }
    }

    /// Gives the Lease up, if held, so that a standby need not wait for it to expire.
    pub async fn release(&mut self) -> Result<(), LeaseError> {
        let Some(mut lease) = self.held.take() else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            // Someone else wrote it since: it is not ours to release any more.
            Err(error) if lost_race(&error) => Ok(()),
            Err(source) => Err(LeaseError::Update {
                name: self.config.name.clone(),
                source,
            }),
            Ok(_) => Ok(()),
        }
    }
}

/// Completes when the leader loop asks the work to stop. `Send + Sync` as kube's
/// `Controller::graceful_shutdown_on` requires.
#[derive(Debug)]
pub struct StopSignal(oneshot::Receiver<()>);

impl Future for StopSignal {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A dropped sender also means stop.
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// Runs `lead` only while this replica holds the Lease: waits for the Lease, starts the
/// work, and when leadership is lost tells the work to stop, waits for it, and becomes a
/// candidate again. When `shutdown` completes, stops the work and releases the Lease.
pub async fn run_while_leader<F, Fut>(
    mut elector: LeaderElector,
    shutdown: impl Future<Output = ()>,
    mut lead: F,
) where
    F: FnMut(StopSignal) -> Fut,
    Fut: Future<Output = ()>,
{
    enum End {
        Shutdown,
        WorkEnded,
        Lost(StepDown),
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            // Acquiring first: if the Lease was just won as shutdown came, release it below.
            biased;
            () = elector.acquire() => {}
            () = &mut shutdown => {
                release(&mut elector).await;
                return;
            }
        }
        tracing::info!(identity = %elector.config.identity, lease = %elector.config.name, "became leader");
        let (stop, stop_signal) = oneshot::channel();
        let work = lead(StopSignal(stop_signal));
        tokio::pin!(work);
        let end = tokio::select! {
            () = &mut shutdown => End::Shutdown,
            () = &mut work => End::WorkEnded,
            lost = elector.hold() => End::Lost(lost),
        };
        if !matches!(end, End::WorkEnded) {
            // The receiver may be gone if the work ignores it; then there is nothing to tell.
            let _ = stop.send(());
            work.await;
        }
        match end {
            End::Lost(why) => {
                tracing::warn!(reason = ?why, "lost leadership, stopped reconciling");
            }
            End::Shutdown | End::WorkEnded => {
                release(&mut elector).await;
                return;
            }
        }
    }
}

async fn release(elector: &mut LeaderElector) {
    if let Err(error) = elector.release().await {
        tracing::warn!(%error, "could not release the lease; it will expire");
    }
}

/// Lease scenarios against a scripted API server.
///
/// Leader election is a conversation with the API server under concurrency (two writers,
/// resourceVersion conflicts, time passing) that no test here could stage with a real
/// cluster: `tower_test::mock` stands in for the HTTP transport, so each scenario states
/// exactly which requests the elector makes and what the server answers, including the
/// 409 a racing replica would cause, and tokio's paused clock makes expiry deterministic.
#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;
    use kube::Client;
    use serde_json::{json, Value};

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
    type Reply = tower_test::mock::SendResponse<Response<Body>>;

    const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/midge-operator";
    const COLLECTION: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

    fn elector() -> (LeaderElector, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "ops");
        let api = Api::namespaced(client, "ops");
        (
            LeaderElector::new(api, LeaseConfig::new("midge-operator", "pod-a")),
            handle,
        )
    }

    async fn expect(handle: &mut Handle, method: &str, uri: &str) -> (Value, Reply) {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.method().as_str(), method, "{}", request.uri());
        assert_eq!(request.uri().to_string(), uri);
        let bytes = request.into_body().collect_bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("json body")
        };
        (body, send)
    }

    fn respond(send: Reply, status: u16, body: Value) {
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&body).expect("json")))
                .expect("response"),
        );
    }

    fn status(code: u16, reason: &str) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": reason, "code": code, "message": reason})
    }

    fn lease(holder: &str, version: &str, transitions: i32) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "midge-operator", "namespace": "ops", "resourceVersion": version},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "leaseTransitions": transitions,
                     "renewTime": "2026-01-01T00:00:00.000000Z"}
        })
    }

    /// Echoes a written Lease back with a new resourceVersion, as the API server does.
    fn written(mut body: Value, version: &str) -> Value {
        body["metadata"]["resourceVersion"] = json!(version);
        body
    }

    #[tokio::test]
    async fn free_lease_is_created_and_released_on_shutdown() {
        let (mut elector, mut h) = elector();
        let script = tokio::spawn(async move {
            let (_, send) = expect(&mut h, "GET", PATH).await;
            respond(send, 404, status(404, "NotFound"));
            let (body, send) = expect(&mut h, "POST", &format!("{COLLECTION}?")).await;
            assert_eq!(body["metadata"]["name"], "midge-operator");
            assert_eq!(body["spec"]["holderIdentity"], "pod-a");
            assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
            assert_eq!(body["spec"]["leaseTransitions"], 0);
            assert_eq!(body["spec"]["acquireTime"], body["spec"]["renewTime"]);
            respond(send, 201, written(body, "1"));

            let (body, send) = expect(&mut h, "PUT", &format!("{PATH}?")).await;
            assert_eq!(body["metadata"]["resourceVersion"], "1");
            assert_eq!(body["spec"].get("holderIdentity"), None);
            assert_eq!(body["spec"]["leaseDurationSeconds"], 1);
            respond(send, 200, written(body, "2"));
            h
        });
        assert!(elector.try_acquire_or_renew().await.expect("no API error"));
        elector.release().await.expect("released");
        assert_no_more_requests(script.await.expect("script")).await;
    }

    #[tokio::test(start_paused = true)]
    async fn lease_held_by_another_replica_is_left_alone_until_it_expires() {
        let (mut elector, mut h) = elector();
        let script = tokio::spawn(async move {
            // Held and renewed by pod-b: version 7, then 8 after its renewal.
            let (_, send) = expect(&mut h, "GET", PATH).await;
            respond(send, 200, lease("pod-b", "7", 3));
            let (_, send) = expect(&mut h, "GET", PATH).await;
            respond(send, 200, lease("pod-b", "8", 3));
            // pod-b stops renewing: version 8 stays for a whole lease duration.
            let (_, send) = expect(&mut h, "GET", PATH).await;
            respond(send, 200, lease("pod-b", "8", 3));
            let (_, send) = expect(&mut h, "GET", PATH).await;
            respond(send, 200, lease("pod-b", "8", 3));
            let (body, send) = expect(&mut h, "PUT", &format!("{PATH}?")).await;
            assert_eq!(
                body["metadata"]["resourceVersion"], "8",
                "optimistic update"
            );
            assert_eq!(body["spec"]["holderIdentity"], "pod-a");
            assert_eq!(body["spec"]["leaseTransitions"], 4);
            assert_eq!(body["spec"]["acquireTime"], body["spec"]["renewTime"]);
            respond(send, 200, written(body, "9"));
            h
        });
        assert!(!elector.try_acquire_or_renew().await.expect("no API error"));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(
            !elector.try_acquire_or_renew().await.expect("no API error"),
            "a renewed lease restarts the expiry clock"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(
            !elector.try_acquire_or_renew().await.expect("no API error"),
            "10s without renewal is not yet 15s"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(
            elector.try_acquire_or_renew().await.expect("no API error"),
            "15s without renewal: expired"
        );
        assert_no_more_requests(script.await.expect("script")).await;
    }

    #[tokio::test(start_paused = true)]
    async fn released_lease_is_taken_at_once() {
        let (mut elector, mut h) = elector();
        let script = tokio::spawn(async move {
            let (_, send) = expect(&mut h, "GET", PATH).await;
            respond(send, 200, lease("", "4", 1));
            let (body, send) = expect(&mut h, "PUT", &format!("{PATH}?")).await;
            assert_eq!(body["metadata"]["resourceVersion"], "4");
            assert_eq!(body["spec"]["holderIdentity"], "pod-a");
            assert_eq!(body["spec"]["leaseTransitions"], 2);
            respond(send, 200, written(body, "5"));
            h
        });
        assert!(elector.try_acquire_or_renew().await.expect("no API error"));
        assert_no_more_requests(script.await.expect("script")).await;
    }

    #[tokio::test(start_paused = true)]
    async fn racing_candidate_that_loses_the_write_keeps_waiting() {
        let (mut elector, mut h) = elector();
        let script = tokio::spawn(async move {
            let (_, send) = expect(&mut h, "GET", PATH).await;
            respond(send, 200, lease("", "4", 1));
            let (_, send) = expect(&mut h, "PUT", &format!("{PATH}?")).await;
            respond(send, 409, status(409, "Conflict"));
            h
        });
        assert!(!elector.try_acquire_or_renew().await.expect("no API error"));
        assert_no_more_requests(script.await.expect("script")).await;
    }

    #[tokio::test(start_paused = true)]
    async fn leader_renews_and_steps_down_on_conflict() {
        let (mut elector, mut h) = elector();
        let script = tokio::spawn(async move {
            let (_, send) = expect(&mut h, "GET", PATH).await;
            respond(send, 200, lease("pod-a", "10", 2));
            let (body, send) = expect(&mut h, "PUT", &format!("{PATH}?")).await;
            assert_eq!(
                body["spec"]["leaseTransitions"], 2,
                "renewing is no transition"
            );
            respond(send, 200, written(body, "11"));
            // Next renewal, 5s later: someone else wrote the Lease in between.
            let (_, send) = expect(&mut h, "GET", PATH).await;
            respond(send, 200, lease("pod-a", "11", 2));
            let (body, send) = expect(&mut h, "PUT", &format!("{PATH}?")).await;
            assert_eq!(body["metadata"]["resourceVersion"], "11");
            respond(send, 409, status(409, "Conflict"));
            h
        });
        let started = Instant::now();
        let outcome = elector.hold().await;
        assert!(matches!(outcome, StepDown::Lost), "{outcome:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(10), "renew every 5s");
        // Stepped down: nothing is left to release.
        elector.release().await.expect("nothing to do");
        assert_no_more_requests(script.await.expect("script")).await;
    }

    #[tokio::test(start_paused = true)]
    async fn leader_steps_down_when_the_api_server_is_gone_for_the_renew_deadline() {
        let (mut elector, mut h) = elector();
        let script = tokio::spawn(async move {
            // Renewals at 5s, 7s, 9s, 11s... each failing; the deadline is 10s.
            for _ in 0..4 {
                let (_, send) = expect(&mut h, "GET", PATH).await;
                respond(send, 500, status(500, "InternalError"));
            }
            h
        });
        let started = Instant::now();
        let outcome = elector.hold().await;
        assert!(
            matches!(outcome, StepDown::RenewDeadline(LeaseError::Get { .. })),
            "{outcome:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(11));
        assert_no_more_requests(script.await.expect("script")).await;
    }

    #[tokio::test(start_paused = true)]
    async fn work_runs_only_while_leading_and_stops_on_shutdown() {
        let (elector, mut h) = elector();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let script = tokio::spawn(async move {
            let (_, send) = expect(&mut h, "GET", PATH).await;
            respond(send, 200, lease("pod-b", "3", 0));
            // pod-b releases; we take it at the next retry.
            let (_, send) = expect(&mut h, "GET", PATH).await;
            respond(send, 200, lease("", "4", 0));
            let (body, send) = expect(&mut h, "PUT", &format!("{PATH}?")).await;
            respond(send, 200, written(body, "5"));
            let _ = shutdown_tx.send(());
            let (body, send) = expect(&mut h, "PUT", &format!("{PATH}?")).await;
            assert_eq!(body["metadata"]["resourceVersion"], "5");
            assert_eq!(body["spec"].get("holderIdentity"), None, "released");
            respond(send, 200, written(body, "6"));
            h
        });
        let started = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let stopped = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (s, t) = (started.clone(), stopped.clone());
        run_while_leader(
            elector,
            async move {
                let _ = shutdown_rx.await;
            },
            move |stop| {
                let (s, t) = (s.clone(), t.clone());
                async move {
                    s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    stop.await;
                    t.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            },
        )
        .await;
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(stopped.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_no_more_requests(script.await.expect("script")).await;
    }

    async fn assert_no_more_requests(mut handle: Handle) {
        if let Ok(Some((request, _))) =
            tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await
        {
            panic!("unexpected request: {} {}", request.method(), request.uri());
        }
    }
}
