//! JetStream in an embedded server: the API and streams driven through in-process
//! publish/subscribe (no sockets), for what needs the server around a stream: accounts,
//! imports, advisories, reload.

use std::time::Duration;

use serde_json::Value;

use crate::conf::parse_str;
use crate::{Options, Server};

const WAIT: Duration = Duration::from_secs(10);

async fn server(conf: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("store dir");
    let text = format!(
        "listen: \"127.0.0.1:-1\"\njetstream {{ store_dir: \"{}\" }}\n{conf}",
        dir.path().display()
    );
    let map = parse_str(&text, "test.conf").expect("config parses");
    let opts = Options::from_conf(&map).expect("valid config").options;
    (Server::start(opts).await.expect("server starts"), dir)
}

/// A request in `account`, its JSON answer.
async fn request(srv: &Server, account: Option<&str>, subject: &str, body: &str) -> Value {
    let inbox = format!("_INBOX.{}", crate::sys::random_id(8));
    let mut sub = srv.subscribe(account, &inbox, None).expect("subscribe");
    assert!(
        srv.publish(account, subject, Some(&inbox), None, body.as_bytes())
            .expect("publish"),
        "{subject}: nobody listens"
    );
    let msg = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap_or_else(|_| panic!("{subject}: no answer"))
        .expect("answer");
    serde_json::from_slice(&msg.payload).expect("JSON answer")
}

#[tokio::test]
async fn a_stream_stores_what_its_account_imports() {
    let (srv, _dir) = server(
        "accounts {\n  A: { exports: [{stream: \"ev.>\"}] }\n  \
         B: { imports: [{stream: {account: A, subject: \"ev.>\"}}], jetstream: enabled }\n}\n",
    )
    .await;
    let created = request(
        &srv,
        Some("B"),
        "$JS.API.STREAM.CREATE.EV",
        r#"{"name":"EV","subjects":["ev.>"],"storage":"memory"}"#,
    )
    .await;
    assert!(created["error"].is_null(), "{created}");
    srv.publish(Some("A"), "ev.1", None, None, b"x")
        .expect("publish");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = request(&srv, Some("B"), "$JS.API.STREAM.INFO.EV", "").await;
        if info["state"]["messages"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{info}");
        tokio::task::yield_now().await;
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn pub_acks_domain_and_interest_retention() {
    let (srv, _dir) = server("").await;
    let created = request(
        &srv,
        None,
        "$JS.API.STREAM.CREATE.I",
        r#"{"name":"I","subjects":["i.*"],"storage":"memory","retention":"interest"}"#,
    )
    .await;
    assert_eq!(created["config"]["retention"], "interest", "{created}");
    // No consumer: the sequence is used, nothing is kept.
    let ack = request(&srv, None, "i.a", "x").await;
    assert_eq!(
        (ack["stream"].as_str(), ack["seq"].as_u64()),
        (Some("I"), Some(1))
    );
    let info = request(&srv, None, "$JS.API.STREAM.INFO.I", "").await;
    assert_eq!(info["state"]["messages"], 0, "{info}");
    assert_eq!(info["state"]["last_seq"], 1, "{info}");
    srv.shutdown().await;
}

#[tokio::test]
async fn updates_resubscribe_and_enforce_new_limits() {
    let (srv, _dir) = server("").await;
    request(
        &srv,
        None,
        "$JS.API.STREAM.CREATE.U",
        r#"{"name":"U","subjects":["u.a"],"storage":"memory"}"#,
    )
    .await;
    for _ in 0..5 {
        request(&srv, None, "u.a", "x").await;
    }
    let updated = request(
        &srv,
        None,
        "$JS.API.STREAM.UPDATE.U",
        r#"{"name":"U","subjects":["u.a","u.b"],"storage":"memory","max_msgs":2}"#,
    )
    .await;
    assert_eq!(updated["state"]["messages"], 2, "{updated}");
    let ack = request(&srv, None, "u.b", "x").await;
    assert_eq!(ack["seq"], 6, "{ack}");
    let old_subject_gone = request(
        &srv,
        None,
        "$JS.API.STREAM.UPDATE.U",
        r#"{"name":"U","subjects":["u.b"],"storage":"memory","max_msgs":2}"#,
    )
    .await;
    assert!(old_subject_gone["error"].is_null());
    assert!(!srv.publish(None, "u.a", None, None, b"").expect("publish"));
    srv.shutdown().await;
}

/// Waits until `stream` of `account` holds `n` messages; its info then.
async fn wait_messages(srv: &Server, account: Option<&str>, stream: &str, n: u64) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let info = request(srv, account, &format!("$JS.API.STREAM.INFO.{stream}"), "").await;
        if info["state"]["messages"] == n {
            return info;
        }
        assert!(tokio::time::Instant::now() < deadline, "{info}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn sources_and_mirrors_copy_within_the_server() {
    let (srv, _dir) = server("").await;
    for (name, body) in [
        (
            "O",
            r#"{"name":"O","subjects":["o.*"],"storage":"memory","allow_direct":true}"#,
        ),
        ("P", r#"{"name":"P","subjects":["p.*"],"storage":"memory"}"#),
        (
            "AGG",
            r#"{"name":"AGG","storage":"memory","sources":[{"name":"O","filter_subject":"o.keep"},{"name":"P","subject_transforms":[{"src":"p.*","dest":"moved.$1"}]}]}"#,
        ),
        (
            "M",
            r#"{"name":"M","storage":"memory","mirror":{"name":"O"}}"#,
        ),
    ] {
        let created = request(&srv, None, &format!("$JS.API.STREAM.CREATE.{name}"), body).await;
        assert!(created["error"].is_null(), "{name}: {created}");
    }
    for subject in ["o.keep", "o.drop", "p.x", "o.keep"] {
        request(&srv, None, subject, "m").await;
    }
    // Origin O: 1 o.keep, 2 o.drop, 3 o.keep.
    let agg = wait_messages(&srv, None, "AGG", 3).await;
    assert_eq!(agg["sources"][0]["name"], "O", "{agg}");
    let last = request(
        &srv,
        None,
        "$JS.API.STREAM.MSG.GET.AGG",
        r#"{"last_by_subj":"moved.x"}"#,
    )
    .await;
    assert_eq!(last["message"]["subject"], "moved.x", "{last}");
    let mirror = wait_messages(&srv, None, "M", 3).await;
    assert_eq!(mirror["state"]["last_seq"], 3, "{mirror}");
    assert_eq!(mirror["config"]["mirror_direct"], true, "{mirror}");
    let m3 = request(&srv, None, "$JS.API.STREAM.MSG.GET.M", r#"{"seq":3}"#).await;
    assert_eq!(m3["message"]["subject"], "o.keep", "{m3}");
    // A gap in the origin stays a gap in a mirror made afterwards.
    request(&srv, None, "$JS.API.STREAM.MSG.DELETE.O", r#"{"seq":2}"#).await;
    request(
        &srv,
        None,
        "$JS.API.STREAM.CREATE.M2",
        r#"{"name":"M2","storage":"memory","mirror":{"name":"O"}}"#,
    )
    .await;
    let m2 = wait_messages(&srv, None, "M2", 2).await;
    assert_eq!(
        (
            m2["state"]["first_seq"].as_u64(),
            m2["state"]["last_seq"].as_u64()
        ),
        (Some(1), Some(3)),
        "{m2}"
    );
    // A stream that would source itself through another is refused.
    let cycle = request(
        &srv,
        None,
        "$JS.API.STREAM.UPDATE.P",
        r#"{"name":"P","subjects":["p.*"],"storage":"memory","sources":[{"name":"AGG"}]}"#,
    )
    .await;
    assert_eq!(cycle["error"]["description"], "detected cycle", "{cycle}");
    srv.shutdown().await;
}
