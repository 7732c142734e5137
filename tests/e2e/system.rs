//! The system account: connect/disconnect events, `$SYS.REQ.SERVER` services, and the
//! same requests answered by every server of a mixed midge/nats-server cluster. Every
//! single-server scenario runs on nats-server (the reference) and on midge with async-nats,
//! and checks the fields tools read.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use midge_tests::{both, ServerKind, TestServer};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

const SYSTEM: &str = "accounts {\n  SYS: { users: [{user: sys, password: sys}] }\n  A: { users: [{user: a, password: a}] }\n}\nsystem_account: SYS\n";

async fn login(server: &TestServer, user: &str, name: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), user.into())
        .name(name)
        .connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("{} login {user}: {e}", server.kind()))
}

use midge_tests::round_trip as sync;

async fn next_json(sub: &mut async_nats::Subscriber, what: &str) -> (String, Value) {
    let msg = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing arrived"))
        .unwrap_or_else(|| panic!("{what}: subscription closed"));
    let json = serde_json::from_slice(&msg.payload)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {:?}", msg.payload));
    (msg.subject.to_string(), json)
}

async fn request_json(c: &async_nats::Client, subject: &str, body: &str) -> Value {
    let reply = tokio::time::timeout(
        WAIT,
        c.request(subject.to_string(), body.to_string().into()),
    )
    .await
    .unwrap_or_else(|_| panic!("{subject}: no answer in time"))
    .unwrap_or_else(|e| panic!("{subject}: {e}"));
    serde_json::from_slice(&reply.payload).unwrap_or_else(|e| panic!("{subject}: not JSON: {e}"))
}

#[tokio::test]
async fn connect_and_disconnect_events_reach_the_system_account() {
    both(events).await;
}

async fn events(kind: ServerKind) {
    let server = TestServer::start(kind, SYSTEM).await;
    let sys = login(&server, "sys", "watcher").await;
    let server_id = sys.server_info().server_id;
    let mut connects = sys.subscribe("$SYS.ACCOUNT.*.CONNECT").await.expect("sub");
    let mut disconnects = sys
        .subscribe("$SYS.ACCOUNT.*.DISCONNECT")
        .await
        .expect("sub");
    sync(&sys).await;

    let a = login(&server, "a", "events-a").await;
    let (subject, event) = next_json(&mut connects, "connect event").await;
    assert_eq!(subject, "$SYS.ACCOUNT.A.CONNECT", "[{kind}]");
    assert_eq!(event["type"], "io.nats.server.advisory.v1.client_connect");
    assert_eq!(event["server"]["id"], server_id.as_str(), "[{kind}]");
    assert_eq!(event["client"]["acc"], "A");
    assert_eq!(event["client"]["user"], "a");
    assert_eq!(event["client"]["name"], "events-a");
    assert_eq!(event["client"]["kind"], "Client");
    assert_eq!(event["client"]["lang"], "rust");
    assert!(event["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(event["timestamp"].as_str().is_some_and(|t| t.contains('T')));
    assert!(event["client"]["id"].as_u64().is_some_and(|cid| cid > 0));

    a.publish("work", "12345".into()).await.expect("publish");
    sync(&a).await;
    drop(a);
    let (subject, event) = next_json(&mut disconnects, "disconnect event").await;
    assert_eq!(subject, "$SYS.ACCOUNT.A.DISCONNECT", "[{kind}]");
    assert_eq!(
        event["type"],
        "io.nats.server.advisory.v1.client_disconnect"
    );
    assert_eq!(event["client"]["name"], "events-a");
    // A client that closes while a server PING is on its way gets its socket reset
    // (unread data): both servers then report a read error instead, which a loaded test
    // machine makes possible.
    assert!(
        ["Client Closed", "Read Error"].contains(&event["reason"].as_str().unwrap_or("")),
        "[{kind}] {event}"
    );
    assert!(
        event["received"]["msgs"].as_u64().is_some_and(|n| n >= 1),
        "[{kind}] {event}"
    );
    assert!(event["client"]["stop"].as_str().is_some());
}

#[tokio::test]
async fn server_requests_are_answered_in_the_system_account() {
    both(requests).await;
}

async fn requests(kind: ServerKind) {
    let server = TestServer::start(kind, &format!("{SYSTEM}server_name: sys-test\n")).await;
    let sys = login(&server, "sys", "asker").await;
    let _a = login(&server, "a", "someone").await;
    let id = sys.server_info().server_id;

    let statsz = request_json(&sys, "$SYS.REQ.SERVER.PING", "").await;
    assert_eq!(statsz["server"]["id"], id.as_str(), "[{kind}] {statsz}");
    assert_eq!(statsz["server"]["name"], "sys-test");
    assert!(statsz["statsz"]["connections"]
        .as_u64()
        .is_some_and(|n| n >= 2));
    assert!(statsz["statsz"]["subscriptions"].is_u64());
    assert!(statsz["statsz"]["mem"].as_u64().is_some_and(|m| m > 0));

    if kind == ServerKind::Midge {
        // IDZ came with nats-server 2.10; the reference here is 2.9.
        let idz = request_json(&sys, "$SYS.REQ.SERVER.PING.IDZ", "").await;
        assert_eq!(idz["id"], id.as_str(), "[{kind}] {idz}");
        assert_eq!(idz["name"], "sys-test");
    }

    let varz = request_json(&sys, &format!("$SYS.REQ.SERVER.{id}.VARZ"), "").await;
    assert_eq!(varz["server"]["id"], id.as_str());
    assert_eq!(varz["data"]["server_id"], id.as_str(), "[{kind}] {varz}");
    assert!(varz["data"]["connections"].as_u64().is_some_and(|n| n >= 2));

    let connz = request_json(
        &sys,
        &format!("$SYS.REQ.SERVER.{id}.CONNZ"),
        r#"{"auth": true}"#,
    )
    .await;
    let names: BTreeSet<&str> = connz["data"]["connections"]
        .as_array()
        .unwrap_or_else(|| panic!("[{kind}] {connz}"))
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(names.contains("someone"), "[{kind}] {connz}");
    let accounts: BTreeSet<&str> = connz["data"]["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["account"].as_str())
        .collect();
    assert!(accounts.contains("A"), "[{kind}] {connz}");

    // A request for another server is not answered: sent first, its answer would be the
    // first to arrive; the answer to the second (one this server is named in) comes alone.
    let inbox = sys.new_inbox();
    let mut answers = sys.subscribe(inbox.clone()).await.expect("sub");
    sync(&sys).await;
    sys.publish_with_reply(
        "$SYS.REQ.SERVER.PING.VARZ",
        inbox.clone(),
        r#"{"server_name": "someone-else"}"#.into(),
    )
    .await
    .expect("publish");
    sys.publish_with_reply(
        "$SYS.REQ.SERVER.PING.STATSZ",
        inbox.clone(),
        r#"{"server_name": "sys-test"}"#.into(),
    )
    .await
    .expect("publish");
    let (_, first) = next_json(&mut answers, "filtered answers").await;
    assert!(
        first.get("statsz").is_some() && first.get("data").is_none(),
        "[{kind}] answered the filtered-out request: {first}"
    );
    assert_eq!(first["server"]["id"], id.as_str());
}

/// `$SYS.REQ.SERVER.PING` in a cluster of two midge and one nats-server: the system account
/// crosses routes like any other, so every server answers, whoever it is.
#[tokio::test]
async fn every_server_of_a_mixed_cluster_answers_a_ping() {
    if midge_tests::reference_only() {
        return;
    }
    let servers = midge_tests::start_mesh(
        &[ServerKind::Midge, ServerKind::NatsServer, ServerKind::Midge],
        SYSTEM,
        "sys",
    )
    .await;
    let sys = login(&servers[0], "sys", "cluster-asker").await;
    let inbox = sys.new_inbox();
    let mut answers = sys.subscribe(inbox.clone()).await.expect("sub");
    sync(&sys).await;
    // Routes and their interest take a moment: ask until all three have answered.
    let mut names = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    while names.len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {names:?} answered"
        );
        sys.publish_with_reply("$SYS.REQ.SERVER.PING", inbox.clone(), "".into())
            .await
            .expect("publish");
        let round = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some(msg)) = tokio::time::timeout_at(round, answers.next()).await {
            let json: Value = serde_json::from_slice(&msg.payload).expect("statsz JSON");
            if let Some(name) = json["server"]["name"].as_str() {
                names.insert(name.to_string());
            }
        }
    }
    assert_eq!(
        names,
        ["s0", "s1", "s2"].map(String::from).into_iter().collect()
    );
}

/// The connection names in a CONNZ answer's `data`.
fn connz_names(answer: &Value) -> BTreeSet<String> {
    answer["data"]["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect()
}

fn statz_accounts(answer: &Value) -> BTreeSet<String> {
    answer["data"]["account_statz"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["acc"].as_str().map(String::from))
        .collect()
}

#[tokio::test]
async fn account_requests_are_answered_in_the_system_account() {
    both(account_requests).await;
}

/// `$SYS.REQ.ACCOUNT.<account>.<Z>` and `$SYS.REQ.ACCOUNT.PING.STATZ`, asked by a system
/// user: each answer is about the account named, in nats-server's shape.
async fn account_requests(kind: ServerKind) {
    let server = TestServer::start(kind, SYSTEM_AB).await;
    let sys = login(&server, "sys", "asker").await;
    let a1 = login(&server, "a", "a-one").await;
    let _a2 = login(&server, "a", "a-two").await;
    let _orders = a1.subscribe("orders.>").await.expect("sub");
    a1.publish("orders.1", "12345".into()).await.expect("pub");
    sync(&a1).await;
    let id = sys.server_info().server_id;

    let connz = request_json(&sys, "$SYS.REQ.ACCOUNT.A.CONNZ", "").await;
    assert_eq!(connz["server"]["id"], id.as_str(), "[{kind}] {connz}");
    assert_eq!(
        connz_names(&connz),
        ["a-one", "a-two"].map(String::from).into(),
        "[{kind}] only A's connections: {connz}"
    );

    let subsz = request_json(&sys, "$SYS.REQ.ACCOUNT.A.SUBSZ", "").await;
    let subjects: BTreeSet<&str> = subsz["data"]["subscriptions_list"]
        .as_array()
        .unwrap_or_else(|| panic!("[{kind}] no list: {subsz}"))
        .iter()
        .filter_map(|s| s["subject"].as_str())
        .collect();
    assert!(subjects.contains("orders.>"), "[{kind}] {subsz}");

    let info = request_json(&sys, "$SYS.REQ.ACCOUNT.A.INFO", "").await;
    assert_eq!(info["data"]["account_name"], "A", "[{kind}] {info}");
    let from_system: BTreeSet<(&str, &str)> = info["data"]["imports"]
        .as_array()
        .unwrap_or_else(|| panic!("[{kind}] no imports: {info}"))
        .iter()
        .filter(|i| i["account"] == "SYS" && i["type"] == "service")
        .filter_map(|i| Some((i["subject"].as_str()?, i["to"].as_str()?)))
        .collect();
    assert_eq!(
        from_system,
        [
            ("$SYS.REQ.ACCOUNT.PING.CONNZ", "$SYS.REQ.ACCOUNT.A.CONNZ"),
            ("$SYS.REQ.ACCOUNT.PING.STATZ", "$SYS.REQ.ACCOUNT.A.STATZ"),
            ("$SYS.REQ.SERVER.PING.CONNZ", "$SYS.REQ.ACCOUNT.A.CONNZ"),
        ]
        .into(),
        "[{kind}] {info}"
    );
    let missing = request_json(&sys, "$SYS.REQ.ACCOUNT.NOPE.INFO", "").await;
    assert_eq!(missing["error"]["code"], 500, "[{kind}] {missing}");
    assert!(
        missing["error"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("NOPE")),
        "[{kind}] {missing}"
    );

    let statz = request_json(&sys, "$SYS.REQ.ACCOUNT.A.STATZ", "").await;
    assert_eq!(statz["data"]["server_id"], id.as_str(), "[{kind}] {statz}");
    let stat = &statz["data"]["account_statz"][0];
    assert_eq!(stat["acc"], "A", "[{kind}] {statz}");
    assert_eq!(stat["conns"], 2, "[{kind}] {statz}");
    assert_eq!(stat["total_conns"], 2, "[{kind}] {statz}");
    assert!(
        stat["received"]["msgs"].as_u64().is_some_and(|n| n >= 1),
        "[{kind}] {statz}"
    );
    assert!(
        stat["sent"]["msgs"].as_u64().is_some_and(|n| n >= 1),
        "[{kind}] {statz}"
    );

    let all = request_json(&sys, "$SYS.REQ.ACCOUNT.PING.STATZ", "").await;
    let accounts = statz_accounts(&all);
    assert!(
        accounts.contains("A") && accounts.contains("SYS"),
        "[{kind}] {all}"
    );
    let only = request_json(
        &sys,
        "$SYS.REQ.ACCOUNT.PING.STATZ",
        r#"{"accounts": ["A"]}"#,
    )
    .await;
    assert_eq!(
        statz_accounts(&only),
        ["A"].map(String::from).into(),
        "[{kind}] {only}"
    );

    // An account without connections here: STATZ stays silent unless asked for the unused.
    let inbox = sys.new_inbox();
    let mut answers = sys.subscribe(inbox.clone()).await.expect("sub");
    sync(&sys).await;
    for body in ["", r#"{"include_unused": true}"#] {
        sys.publish_with_reply("$SYS.REQ.ACCOUNT.B.STATZ", inbox.clone(), body.into())
            .await
            .expect("publish");
    }
    sys.publish_with_reply("$SYS.REQ.ACCOUNT.A.CONNS", inbox.clone(), "".into())
        .await
        .expect("publish");
    // Two answers, in whichever order the server's handlers sent them.
    let (_, one) = next_json(&mut answers, "statz of an unused account, CONNS").await;
    let (_, two) = next_json(&mut answers, "statz of an unused account, CONNS").await;
    let (unused, conns) = if one.get("type").is_some() {
        (two, one)
    } else {
        (one, two)
    };
    assert_eq!(
        unused["data"]["account_statz"][0]["acc"], "B",
        "[{kind}] only the include_unused request is answered: {unused}"
    );
    assert_eq!(unused["data"]["account_statz"][0]["conns"], 0, "[{kind}]");
    assert_eq!(
        conns["type"], "io.nats.server.advisory.v1.account_connections",
        "[{kind}] {conns}"
    );
    assert_eq!(conns["acc"], "A", "[{kind}] {conns}");
    assert_eq!(conns["conns"], 2, "[{kind}] {conns}");
    assert_eq!(conns["server"]["id"], id.as_str(), "[{kind}] {conns}");
}

const SYSTEM_AB: &str = "accounts {\n  SYS: { users: [{user: sys, password: sys}] }\n  A: { users: [{user: a, password: a}] }\n  B: { users: [{user: b, password: b}] }\n}\nsystem_account: SYS\n";

#[tokio::test]
async fn an_account_sees_only_its_own_connections_through_the_system_imports() {
    both(own_connections).await;
}

/// Every account imports `$SYS.REQ.SERVER.PING.CONNZ`, `$SYS.REQ.ACCOUNT.PING.CONNZ` and
/// `$SYS.REQ.ACCOUNT.PING.STATZ` from the system account, mapped to its own name: a user
/// of A asking sees A's connections and numbers, never B's or the system account's.
async fn own_connections(kind: ServerKind) {
    let server = TestServer::start(kind, SYSTEM_AB).await;
    let _sys = login(&server, "sys", "sys-user").await;
    let a = login(&server, "a", "a-asker").await;
    let _b = login(&server, "b", "b-user").await;
    for subject in ["$SYS.REQ.SERVER.PING.CONNZ", "$SYS.REQ.ACCOUNT.PING.CONNZ"] {
        let connz = request_json(&a, subject, "").await;
        assert_eq!(
            connz_names(&connz),
            ["a-asker"].map(String::from).into(),
            "[{kind}] {subject}: {connz}"
        );
    }
    let statz = request_json(&a, "$SYS.REQ.ACCOUNT.PING.STATZ", "").await;
    assert_eq!(
        statz_accounts(&statz),
        ["A"].map(String::from).into(),
        "[{kind}] {statz}"
    );
    // Other system requests stay out of reach: nobody answers them in A.
    let refused = a
        .request("$SYS.REQ.SERVER.PING.VARZ", "".into())
        .await
        .expect_err("VARZ is not imported");
    assert_eq!(
        refused.kind(),
        async_nats::RequestErrorKind::NoResponders,
        "[{kind}]"
    );
}

/// The same import in a cluster of two midge and one nats-server: a user of A on either
/// kind of server hears from every server, each telling only A's connections.
#[tokio::test]
async fn an_account_hears_every_server_of_a_mixed_cluster_about_its_connections() {
    if midge_tests::reference_only() {
        return;
    }
    let servers = midge_tests::start_mesh(
        &[ServerKind::Midge, ServerKind::NatsServer, ServerKind::Midge],
        SYSTEM_AB,
        "sys",
    )
    .await;
    let mut users = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        users.push(login(s, "a", &format!("a-on-s{i}")).await);
        users.push(login(s, "b", &format!("b-on-s{i}")).await);
    }
    for asker in [&users[0], &users[2]] {
        let inbox = asker.new_inbox();
        let mut answers = asker.subscribe(inbox.clone()).await.expect("sub");
        sync(asker).await;
        let mut seen = BTreeSet::new();
        let deadline = tokio::time::Instant::now() + WAIT * 2;
        while seen.len() < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {seen:?} answered"
            );
            asker
                .publish_with_reply("$SYS.REQ.SERVER.PING.CONNZ", inbox.clone(), "".into())
                .await
                .expect("publish");
            let round = tokio::time::Instant::now() + Duration::from_millis(500);
            while let Ok(Some(msg)) = tokio::time::timeout_at(round, answers.next()).await {
                let json: Value = serde_json::from_slice(&msg.payload).expect("connz JSON");
                let name = json["server"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let names = connz_names(&json);
                assert!(
                    names.iter().all(|n| n.starts_with("a-on-")),
                    "{name} told more than A's connections: {json}"
                );
                if names.contains(&format!("a-on-{name}")) {
                    seen.insert(name);
                }
            }
        }
        assert_eq!(
            seen,
            ["s0", "s1", "s2"].map(String::from).into_iter().collect()
        );
    }
}

#[tokio::test]
async fn account_connection_counts_are_announced() {
    both(account_conns).await;
}

/// `$SYS.ACCOUNT.<account>.SERVER.CONNS` when a client of the account comes and goes: what
/// nats-server peers count an account's connections across a cluster with.
async fn account_conns(kind: ServerKind) {
    let server = TestServer::start(kind, SYSTEM).await;
    let sys = login(&server, "sys", "watcher").await;
    let mut events = sys
        .subscribe("$SYS.ACCOUNT.A.SERVER.CONNS")
        .await
        .expect("sub");
    sync(&sys).await;
    let a = login(&server, "a", "counted").await;
    let (_, up) = next_json(&mut events, "connections up").await;
    assert_eq!(
        up["type"], "io.nats.server.advisory.v1.account_connections",
        "[{kind}] {up}"
    );
    assert_eq!(up["acc"], "A", "[{kind}] {up}");
    assert_eq!(up["conns"], 1, "[{kind}] {up}");
    assert_eq!(up["total_conns"], 1, "[{kind}] {up}");
    assert_eq!(
        up["server"]["id"],
        sys.server_info().server_id.as_str(),
        "[{kind}]"
    );
    drop(a);
    let (_, down) = next_json(&mut events, "connections down").await;
    assert_eq!(down["conns"], 0, "[{kind}] {down}");
}
