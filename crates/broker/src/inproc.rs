//! In-process publish and subscribe: an embedding program talks to its broker without a
//! socket. Subscriptions made here are internal subscribers of an account (the kind the
//! system account and JetStream build on); messages published here go through the same
//! router as a client's, to clients, routes and other internal subscribers alike.

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use crate::core::router::{self, Origin, Router};
use crate::core::{Account, InternalMsg, InternalSub, Subscriber, Subscription};
use crate::server::{Server, ServerInner};

/// Why an in-process publish or subscribe was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PubSubError {
    #[error("account \"{0}\" does not exist")]
    UnknownAccount(String),
    #[error("invalid subject \"{0}\"")]
    InvalidSubject(String),
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Messages a [`Server::subscribe`] subscription receives, until it is dropped (which
/// unsubscribes). Holds up to `capacity` undelivered messages; past that, messages for it
/// are dropped and counted ([`LocalSubscription::dropped`]), as a slow client is cut off.
#[derive(Debug)]
pub struct LocalSubscription {
    rx: mpsc::Receiver<InternalMsg>,
    handler: Arc<InternalSub>,
    sub: Arc<Subscription>,
    srv: Weak<ServerInner>,
}

impl LocalSubscription {
    /// The next message; `None` once the server is gone.
    pub async fn next(&mut self) -> Option<InternalMsg> {
        self.rx.recv().await
    }

    /// A message if one is waiting.
    pub fn try_next(&mut self) -> Option<InternalMsg> {
        self.rx.try_recv().ok()
    }

    /// Messages dropped because this subscription was full.
    pub fn dropped(&self) -> u64 {
        self.handler
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for LocalSubscription {
    fn drop(&mut self) {
        if let Some(srv) = self.srv.upgrade() {
            router::unsubscribe(&srv, &self.sub);
        }
    }
}

/// Default number of messages a local subscription holds before it drops.
pub const LOCAL_SUBSCRIPTION_CAPACITY: usize = 64 * 1024;

impl Server {
    fn account(&self, account: Option<&str>) -> Result<Arc<Account>, PubSubError> {
        match account {
            None => Ok(self.inner.accounts.global().clone()),
            Some(name) => self
                .inner
                .accounts
                .get(name)
                .ok_or_else(|| PubSubError::UnknownAccount(name.to_string())),
        }
    }

    /// Subscribes inside the server to `subject` (wildcards allowed) in `account` (`None`:
    /// the global account), optionally as a member of queue group `queue`. Routes learn of
    /// the interest as they do of a client's.
    pub fn subscribe(
        &self,
        account: Option<&str>,
        subject: &str,
        queue: Option<&str>,
    ) -> Result<LocalSubscription, PubSubError> {
        self.subscribe_with_capacity(account, subject, queue, LOCAL_SUBSCRIPTION_CAPACITY)
    }

    /// [`Server::subscribe`] with room for `capacity` undelivered messages.
    pub fn subscribe_with_capacity(
        &self,
        account: Option<&str>,
        subject: &str,
        queue: Option<&str>,
        capacity: usize,
    ) -> Result<LocalSubscription, PubSubError> {
        let account = self.account(account)?;
        let (handler, rx) = InternalSub::new(capacity);
        let sub = Subscription::new(
            Subscriber::Internal(handler.clone()),
            account,
            subject.as_bytes(),
            queue.map(str::as_bytes),
            b"",
        );
        router::subscribe(&self.inner, &sub)
            .map_err(|_| PubSubError::InvalidSubject(subject.to_string()))?;
        Ok(LocalSubscription {
            rx,
            handler,
            sub,
            srv: Arc::downgrade(&self.inner),
        })
    }

    /// Publishes a message in `account` (`None`: the global account) to every subscriber
    /// of any kind. Returns whether anyone received it (no-responders for a request).
    pub fn publish(
        &self,
        account: Option<&str>,
        subject: &str,
        reply: Option<&str>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<bool, PubSubError> {
        if self
            .inner
            .shutting_down
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(PubSubError::ShuttingDown);
        }
        if !midge_proto::subject::is_valid_literal_subject(subject.as_bytes()) {
            return Err(PubSubError::InvalidSubject(subject.to_string()));
        }
        let account = self.account(account)?;
        let result = account.sublist.matches(subject.as_bytes());
        let mut router = Router::new(self.inner.clone(), rand::random());
        let delivered = router.route(
            &account,
            &result,
            Origin::Internal,
            subject.as_bytes(),
            reply.map(str::as_bytes),
            headers,
            payload,
        );
        router.flush(true);
        Ok(delivered)
    }
}
