//! Lame duck mode (SIGUSR2, `--signal ldm`, [`Server::lame_duck_mode`]), as nats-server:
//! stop accepting clients (the listener closes), tell the clients that take INFO updates
//! with an INFO carrying `"ldm":true`, wait `lame_duck_grace_period`, close the remaining
//! clients spread over what is left of `lame_duck_duration`, then shut down.
//!
//! While in lame duck mode the server has no client listener, so it is not ready for
//! connections: nats-server's `/healthz` then answers 500 with an error, which takes the pod
//! out of a Kubernetes Service while clients migrate. Monitoring reads
//! [`Server::is_lame_duck`].

use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::client::CloseReason;
use crate::server::{Server, ServerInner};

impl Server {
    /// Enters lame duck mode and returns when the server has shut down (at once when it is
    /// already in lame duck mode or shutting down). Shutting the server down meanwhile ends
    /// it early.
    ///
    /// Options built in code may use any `lame_duck_duration`; the config file keeps
    /// nats-server's 30 s minimum.
    pub async fn lame_duck_mode(&self) {
        lame_duck_mode(&self.inner).await;
    }

    /// True from the moment lame duck mode starts.
    pub fn is_lame_duck(&self) -> bool {
        self.inner.ops.is_lame_duck()
    }
}

/// How the closes are spread: one close every `interval` (randomised between half of it and
/// all of it), or `batch` closes back to back when there are more clients than nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pace {
    interval: Duration,
    batch: usize,
}

/// nats-server's pacing: the time left after the grace period (at least 1 s) divided by the
/// number of clients, at most 1 s between two closes.
fn pace(duration: Duration, grace: Duration, clients: usize) -> Pace {
    let left = duration.saturating_sub(grace).max(Duration::from_secs(1));
    let n = clients.max(1) as u128;
    let per_client = left.as_nanos() / n;
    if per_client < 1 {
        Pace {
            interval: Duration::from_nanos(1),
            batch: (n / left.as_nanos().max(1)) as usize,
        }
    } else {
        Pace {
            interval: Duration::from_nanos(per_client.min(1_000_000_000) as u64),
            batch: 1,
        }
    }
}

async fn shutting_down(rx: &mut tokio::sync::watch::Receiver<bool>) {
    // A closed channel means the server is gone: same as shutting down.
    let _ = rx.wait_for(|down| *down).await;
}

pub(crate) async fn lame_duck_mode(inner: &Arc<ServerInner>) {
    let mut shutdown = inner.shutdown_signal();
    if *shutdown.borrow() || !inner.ops.enter_lame_duck() {
        return;
    }
    info!("Entering lame duck mode, stop accepting new clients");
    crate::sys::server_event(inner, "LAMEDUCK");
    // The accept loop sees the lame duck flag and returns, closing the listener; wait for
    // it so that no client slips in after the list below is taken.
    if let Some(accept) = inner.ops.take_accept_task() {
        let _ = accept.await;
    }
    let opts = inner.opts();
    let grace = opts.lame_duck_grace_period;
    let clients: Vec<_> = inner.clients.lock().values().cloned().collect();
    if clients.is_empty() || *shutdown.borrow() {
        inner.shutdown_and_wait().await;
        return;
    }
    let pace = pace(opts.lame_duck_duration, grace, clients.len());
    notify_routes(inner);
    notify_clients(inner, &clients);
    tokio::select! {
        _ = tokio::time::sleep(grace) => info!("Closing existing clients"),
        _ = shutting_down(&mut shutdown) => return,
    }
    let last = clients.len() - 1;
    for (i, client) in clients.iter().enumerate() {
        client.close(CloseReason::ServerShutdown);
        if i == last {
            break;
        }
        if pace.batch == 1 || i % pace.batch == 0 {
            let max = pace.interval.as_nanos() as u64;
            let wait = rand::random_range(max / 2..=max.max(1));
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_nanos(wait)) => {}
                _ = shutting_down(&mut shutdown) => return,
            }
        }
    }
    inner.shutdown_and_wait().await;
}

/// Routes learn about lame duck mode first, so that the cluster stops sending this server's
/// URL to clients.
fn notify_routes(inner: &ServerInner) {
    crate::cluster::announce_lame_duck(inner);
}

/// An async INFO with `"ldm":true` to every client that takes INFO updates (CONNECT with
/// protocol >= 1). Its `connect_urls` list only the other servers: none without a cluster.
fn notify_clients(inner: &ServerInner, clients: &[Arc<crate::client::ClientShared>]) {
    let mut info = inner.info_template();
    info.ldm = true;
    // Only the other servers: this one is going away.
    match &inner.cluster {
        Some(c) => info.connect_urls.retain(|u| !c.own_client_urls.contains(u)),
        None => info.connect_urls.clear(),
    }
    for c in clients.iter().filter(|c| c.wants_async_info()) {
        info.client_id = c.cid;
        info.client_ip = c.peer.ip().to_string();
        c.enqueue(|buf| info.encode(buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_follows_nats_server() {
        let s = Duration::from_secs;
        // 120 s, 10 s grace, 10 clients: 11 s each, capped to 1 s.
        assert_eq!(
            pace(s(120), s(10), 10),
            Pace {
                interval: s(1),
                batch: 1
            }
        );
        // 1 s left over 4 clients: 250 ms each.
        assert_eq!(pace(s(2), s(1), 4).interval, Duration::from_millis(250));
        // The grace period longer than the duration still leaves 1 s.
        assert_eq!(pace(s(1), s(5), 2).interval, Duration::from_millis(500));
        assert_eq!(pace(s(30), s(10), 0).interval, s(1));
    }
}
