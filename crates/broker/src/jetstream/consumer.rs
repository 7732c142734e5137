//! Consumers (`$JS.API.CONSUMER.>`): not built yet. The consumer work replaces this stub:
//! [`api`] answers every consumer request, [`Consumer`] is what a stream lists.

use super::api::{self, ApiError};
use super::service::{Reply, Request};

/// A consumer of a stream.
#[derive(Debug)]
pub(crate) struct Consumer {
    /// Subjects it delivers (empty: all of the stream's).
    pub filter_subjects: Vec<String>,
}

impl Consumer {
    /// Whether it delivers `subject` (interest retention keeps only what someone wants).
    pub fn wants(&self, subject: &str) -> bool {
        self.filter_subjects.is_empty()
            || self
                .filter_subjects
                .iter()
                .any(|f| midge_store::filter_matches(Some(f), subject))
    }

    /// The stream is going away.
    pub fn stop(&self) {}
}

/// A `$JS.API.CONSUMER.<op>...` request (`op` is the subject after `CONSUMER.`).
pub(crate) fn api(req: &Request<'_>, op: &str) -> Reply {
    let kind = match op.split('.').next().unwrap_or_default() {
        "CREATE" | "DURABLE" => api::types::CONSUMER_CREATE,
        "INFO" => api::types::CONSUMER_INFO,
        "NAMES" => api::types::CONSUMER_NAMES,
        "LIST" => api::types::CONSUMER_LIST,
        "DELETE" => api::types::CONSUMER_DELETE,
        _ => api::types::SYSTEM,
    };
    let _ = req;
    Reply::error(
        kind,
        ApiError::general("consumers are not supported by midge yet"),
    )
}
