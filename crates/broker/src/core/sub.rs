//! Subscriptions and the kinds of subscriber behind them.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::Account;
use crate::client::ClientShared;
use crate::cluster::Route;

/// Who receives what matches a subscription.
#[derive(Debug, Clone)]
pub(crate) enum Subscriber {
    /// A client connection: `MSG`/`HMSG` frames go to its outbound buffer.
    Client(Arc<ClientShared>),
    /// Interest a route announced (`RS+`): `RMSG` frames go to the route. A message that
    /// came over a route never goes back out to one (one hop, as in nats-server).
    Route(Arc<Route>),
    /// A handler inside the server (system account services, imports, later JetStream):
    /// gets an owned copy of the message on a channel and never touches a socket.
    Internal(Arc<InternalSub>),
    /// A service import in the importing account: a request published here goes on to the
    /// exporting account, its reply mapped back (see `core/imports.rs`). Never announced
    /// to routes: every server runs its own imports.
    Service(Arc<super::imports::ServiceImport>),
    /// The response subjects (`_R_.<id>.>`) of an exporting account: replies to requests
    /// that came in through a service import go back to the importer's reply subject.
    Responses(Arc<super::imports::Responses>),
    /// Interest a leaf node connection announced (`LS+`): `LMSG` frames go to it.
    Leaf(Arc<crate::leaf::Leaf>),
    /// A JetStream stream's subjects: the message is queued for the stream's task, never
    /// dropped; a full queue makes the publisher wait (see `jetstream::stream`). Local
    /// only: routes neither hear of it nor feed it (each server keeps its own streams).
    Stream(Arc<crate::jetstream::stream::StreamIngest>),
    /// `$JS.API.>` of a JetStream account: requests go to the API task with their account.
    /// Local only, as streams.
    JsApi(Arc<crate::jetstream::service::ApiInbox>),
}

/// A subscription: shared by its owner's table (a client's sids, a route's interest) and
/// the account's sublist.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub owner: Subscriber,
    pub account: Arc<Account>,
    pub subject: Box<[u8]>,
    pub queue: Option<Box<[u8]>>,
    pub sid: Box<[u8]>,
    /// Auto-unsubscribe after this many deliveries; 0 = never.
    pub max: AtomicU64,
    pub delivered: AtomicU64,
    pub is_wildcard: bool,
    /// Queue interest of a route: the member count on the remote server, which weights
    /// the choice of a member across the cluster. 1 for everything else.
    pub weight: AtomicU32,
    /// Set for a shadow: the subscription a client of an importing account has in the
    /// exporting account's sublist, standing for its own through a stream import.
    pub shadow: Option<Box<super::imports::Shadow>>,
}

impl Subscription {
    pub fn new(
        owner: Subscriber,
        account: Arc<Account>,
        subject: &[u8],
        queue: Option<&[u8]>,
        sid: &[u8],
    ) -> Arc<Subscription> {
        Arc::new(Subscription {
            owner,
            account,
            subject: subject.into(),
            queue: queue.map(Into::into),
            sid: sid.into(),
            max: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            is_wildcard: !midge_proto::subject::is_literal(subject),
            weight: AtomicU32::new(1),
            shadow: None,
        })
    }

    /// A shadow of `parent` in `account` (the exporter) on `subject`.
    pub fn new_shadow(
        parent: &Arc<Subscription>,
        account: Arc<Account>,
        subject: &[u8],
        shadow: super::imports::Shadow,
    ) -> Arc<Subscription> {
        Arc::new(Subscription {
            owner: parent.owner.clone(),
            account,
            subject: subject.into(),
            queue: parent.queue.clone(),
            sid: parent.sid.clone(),
            max: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            is_wildcard: !midge_proto::subject::is_literal(subject),
            weight: AtomicU32::new(1),
            shadow: Some(Box::new(shadow)),
        })
    }

    /// The weight of this member in a queue-group choice.
    pub fn weight(&self) -> u64 {
        u64::from(self.weight.load(Ordering::Relaxed).max(1))
    }
}

/// Sublist entry: subscriptions are compared by identity, not by value.
#[derive(Debug, Clone)]
pub(crate) struct SubRef(pub Arc<Subscription>);

impl PartialEq for SubRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A message as an internal subscriber receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct InternalMsg {
    pub subject: Bytes,
    pub reply: Option<Bytes>,
    pub headers: Option<Bytes>,
    pub payload: Bytes,
}

/// An internal subscriber: a bounded channel. When its consumer falls behind, messages are
/// dropped and counted rather than buffered without bound (what a slow client would get).
/// A *queued* one (a JetStream consumer's inbox: acks must not be lost) never drops: its
/// queue makes publishers wait when over its mark, as a stream's does.
pub(crate) struct InternalSub {
    inbox: Inbox,
    pub dropped: AtomicU64,
}

enum Inbox {
    Channel(mpsc::Sender<InternalMsg>),
    Queue(Arc<crate::jetstream::stream::StreamIngest>),
}

impl fmt::Debug for InternalSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InternalSub")
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish()
    }
}

impl InternalSub {
    /// A subscriber and the receiving end of its channel (`capacity` messages).
    pub fn new(capacity: usize) -> (Arc<InternalSub>, mpsc::Receiver<InternalMsg>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Arc::new(InternalSub {
                inbox: Inbox::Channel(tx),
                dropped: AtomicU64::new(0),
            }),
            rx,
        )
    }

    /// A subscriber whose messages wait in `queue` (never dropped; publishers wait when it
    /// is over its mark).
    pub fn queued(queue: Arc<crate::jetstream::stream::StreamIngest>) -> Arc<InternalSub> {
        Arc::new(InternalSub {
            inbox: Inbox::Queue(queue),
            dropped: AtomicU64::new(0),
        })
    }

    /// The queue of a queued subscriber (the router tracks it for back-pressure).
    pub fn queue(&self) -> Option<&Arc<crate::jetstream::stream::StreamIngest>> {
        match &self.inbox {
            Inbox::Queue(q) => Some(q),
            Inbox::Channel(_) => None,
        }
    }

    /// Hands a message over; false when the receiver is gone or full.
    pub fn deliver(
        &self,
        subject: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        let tx = match &self.inbox {
            Inbox::Channel(tx) => tx,
            Inbox::Queue(q) => {
                if q.is_closed() {
                    return false;
                }
                q.push(subject, reply, headers, payload);
                return true;
            }
        };
        let msg = InternalMsg {
            subject: Bytes::copy_from_slice(subject),
            reply: reply.map(Bytes::copy_from_slice),
            headers: headers.map(Bytes::copy_from_slice),
            payload: Bytes::copy_from_slice(payload),
        };
        match tx.try_send(msg) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}
