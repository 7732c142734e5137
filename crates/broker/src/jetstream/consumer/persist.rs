//! Durable consumers on disk: `<stream dir>/consumers/<name>/meta.json` (the config and
//! when it was created) and `state.json` (delivered, ack floor, pending with redelivery
//! counts). Each file is replaced whole: written to a temporary file, fsynced, renamed
//! over the old one and the directory fsynced, so a crash leaves the old or the new
//! version, never a torn one. Blocking IO: callers run it off the async runtime.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::ConsumerConfig;
use super::engine::SavedState;

const META: &str = "meta.json";
const STATE: &str = "state.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// Unix nanoseconds.
    pub created: i64,
    pub config: ConsumerConfig,
}

/// A consumer found on disk.
#[derive(Debug, Clone)]
pub(crate) struct Recovered {
    pub name: String,
    pub meta: Meta,
    pub state: Option<SavedState>,
}

/// The directory of consumer `name` of the stream stored in `stream_dir`.
pub(crate) fn consumer_dir(stream_dir: &Path, name: &str) -> PathBuf {
    stream_dir.join("consumers").join(name)
}

/// Replaces `path` with `bytes` atomically.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent directory"))?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

pub(crate) fn write_meta(dir: &Path, meta: &Meta) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let bytes = serde_json::to_vec(meta).map_err(io::Error::other)?;
    write_atomic(&dir.join(META), &bytes)?;
    if let Some(parent) = dir.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

pub(crate) fn write_state(dir: &Path, state: &SavedState) -> io::Result<()> {
    let bytes = serde_json::to_vec(state).map_err(io::Error::other)?;
    write_atomic(&dir.join(STATE), &bytes)
}

pub(crate) fn remove(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Every consumer saved under `stream_dir`. A consumer whose meta cannot be read is
/// skipped with a warning; an unreadable state means starting from the config (its
/// deliver policy), with a warning.
pub(crate) fn load_all(stream_dir: &Path) -> Vec<Recovered> {
    let root = stream_dir.join("consumers");
    let entries = match fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!("JetStream: cannot read {}: {e}", root.display());
            }
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        let meta: Meta = match fs::read(dir.join(META))
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("JetStream: consumer {} not recovered: {e}", dir.display());
                continue;
            }
        };
        let state = match fs::read(dir.join(STATE)) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(
                        "JetStream: consumer {} state unreadable, starting over: {e}",
                        dir.display()
                    );
                    None
                }
            },
            Err(_) => None,
        };
        out.push(Recovered { name, meta, state });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg: ConsumerConfig = serde_json::from_str(
            r#"{"durable_name":"D","ack_policy":"explicit","opt_start_time":null}"#,
        )
        .expect("ok");
        let dir = consumer_dir(tmp.path(), "D");
        write_meta(
            &dir,
            &Meta {
                created: 5,
                config: cfg.clone(),
            },
        )
        .expect("meta");
        let state = SavedState {
            delivered: (3, 7),
            ack_floor: (1, 4),
            pending: vec![(6, 2, 100), (7, 3, 200)],
            redelivered: vec![(6, 1)],
        };
        write_state(&dir, &state).expect("state");
        let all = load_all(tmp.path());
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, "D");
        assert_eq!(all[0].meta.config, cfg);
        assert_eq!(all[0].state.as_ref(), Some(&state));
        fs::write(dir.join(STATE), b"{torn").expect("write");
        assert_eq!(load_all(tmp.path())[0].state, None);
        remove(&dir).expect("remove");
        assert!(load_all(tmp.path()).is_empty());
    }
}
