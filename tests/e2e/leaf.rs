//! Leaf nodes: a leaf server dials a hub and the two share one account's subject space.
//! Every topology runs with real processes and async-nats clients: midge hub + midge leaf,
//! midge hub + nats-server leaf, nats-server hub + midge leaf (the protocol is
//! nats-server 2.9's), and nats-server on both sides as the reference.
//!
//! Interest crosses the leaf connection a moment after a SUB, so each check publishes until
//! the first message arrives (bounded by a deadline), then checks exact counts.

use std::time::Duration;

use futures::StreamExt;
use midge_tests::{free_port, ServerKind, TestServer};

const WAIT: Duration = Duration::from_secs(10);

async fn client(server: &TestServer) -> async_nats::Client {
    async_nats::connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("{} connect: {e}", server.kind()))
}

use midge_tests::round_trip as sync;

/// A hub listening for leafs on `leaf_port` (with `extra` config), and a leaf dialling it.
async fn pair(
    hub: ServerKind,
    leaf: ServerKind,
    hub_extra: &str,
    remote_url: &str,
) -> (TestServer, TestServer) {
    let hub = TestServer::start(hub, hub_extra).await;
    let leaf = TestServer::start(
        leaf,
        &format!("leafnodes {{\n  remotes: [{{url: \"{remote_url}\"}}]\n}}\n"),
    )
    .await;
    (hub, leaf)
}

/// Publishes `subject` from `publisher` until `sub` receives something (interest has
/// crossed); drains the probes.
async fn until_crossed(
    publisher: &async_nats::Client,
    sub: &mut async_nats::Subscriber,
    subject: &str,
    what: &str,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        publisher
            .publish(subject.to_string(), "probe".into())
            .await
            .expect("publish");
        sync(publisher).await;
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: never crossed"
        );
    }
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {}
}

/// Pub/sub both ways, request/reply across, and a queue group with members on both sides:
/// each message once, the publisher's side preferred.
async fn hub_and_leaf(hub_kind: ServerKind, leaf_kind: ServerKind) {
    let port = free_port();
    let label = format!("hub {hub_kind}, leaf {leaf_kind}");
    let (hub, leaf) = pair(
        hub_kind,
        leaf_kind,
        &format!("leafnodes {{\n  listen: 127.0.0.1:{port}\n}}\n"),
        &format!("nats-leaf://127.0.0.1:{port}"),
    )
    .await;
    let on_hub = client(&hub).await;
    let on_leaf = client(&leaf).await;

    // Hub -> leaf and leaf -> hub.
    let mut leaf_sub = on_leaf.subscribe("down.>").await.expect("sub");
    sync(&on_leaf).await;
    until_crossed(
        &on_hub,
        &mut leaf_sub,
        "down.probe",
        &format!("{label}: hub -> leaf"),
    )
    .await;
    let mut hub_sub = on_hub.subscribe("up.>").await.expect("sub");
    sync(&on_hub).await;
    until_crossed(
        &on_leaf,
        &mut hub_sub,
        "up.probe",
        &format!("{label}: leaf -> hub"),
    )
    .await;
    for i in 0..50 {
        on_hub
            .publish(format!("down.{i}"), "d".into())
            .await
            .expect("pub");
        on_leaf
            .publish(format!("up.{i}"), "u".into())
            .await
            .expect("pub");
    }
    sync(&on_hub).await;
    sync(&on_leaf).await;
    for i in 0..50 {
        let m = tokio::time::timeout(WAIT, leaf_sub.next())
            .await
            .expect("in time")
            .expect("open");
        assert_eq!(m.subject.as_str(), format!("down.{i}"), "{label}");
        let m = tokio::time::timeout(WAIT, hub_sub.next())
            .await
            .expect("in time")
            .expect("open");
        assert_eq!(m.subject.as_str(), format!("up.{i}"), "{label}");
    }
    // A message never comes back over the connection it crossed: one copy each.
    let mut echo_check = on_hub.subscribe("down.>").await.expect("sub");
    sync(&on_hub).await;
    on_hub.publish("down.once", "x".into()).await.expect("pub");
    sync(&on_hub).await;
    assert_eq!(
        tokio::time::timeout(WAIT, echo_check.next())
            .await
            .expect("in time")
            .expect("open")
            .subject
            .as_str(),
        "down.once"
    );
    on_hub.publish("down.mark", "x".into()).await.expect("pub");
    sync(&on_hub).await;
    assert_eq!(
        tokio::time::timeout(WAIT, echo_check.next())
            .await
            .expect("in time")
            .expect("open")
            .subject
            .as_str(),
        "down.mark",
        "{label}: down.once came back over the leaf"
    );

    // Request/reply: a service on the leaf answers a requester on the hub.
    let mut service = on_leaf.subscribe("svc.time").await.expect("sub");
    sync(&on_leaf).await;
    let responder = {
        let c = on_leaf.clone();
        tokio::spawn(async move {
            while let Some(req) = service.next().await {
                if let Some(reply) = req.reply {
                    let _ = c.publish(reply, "now".into()).await;
                    let _ = c.flush().await;
                }
            }
        })
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout(
            Duration::from_secs(1),
            on_hub.request("svc.time", "?".into()),
        )
        .await
        {
            Ok(Ok(answer)) => {
                assert_eq!(&answer.payload[..], b"now", "{label}");
                break;
            }
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "{label}: no answer across the leaf: {other:?}"
            ),
        }
    }
    responder.abort();

    // Queue group with a member on each side: everything published on the hub goes to the
    // hub's member while it is there, each message exactly once.
    let mut hub_worker = on_hub
        .queue_subscribe("jobs", "w".into())
        .await
        .expect("qsub");
    let mut leaf_worker = on_leaf
        .queue_subscribe("jobs", "w".into())
        .await
        .expect("qsub");
    sync(&on_hub).await;
    sync(&on_leaf).await;
    // The leaf's member is known on the hub once a plain probe subject crosses after it.
    let mut probe = on_leaf.subscribe("probe.after.queue").await.expect("sub");
    sync(&on_leaf).await;
    until_crossed(
        &on_hub,
        &mut probe,
        "probe.after.queue",
        &format!("{label}: queue probe"),
    )
    .await;
    for _ in 0..100 {
        on_hub.publish("jobs", "j".into()).await.expect("pub");
    }
    sync(&on_hub).await;
    let mut on_hub_side = 0;
    while let Ok(Some(_)) =
        tokio::time::timeout(Duration::from_millis(300), hub_worker.next()).await
    {
        on_hub_side += 1;
    }
    let mut on_leaf_side = 0;
    while let Ok(Some(_)) =
        tokio::time::timeout(Duration::from_millis(300), leaf_worker.next()).await
    {
        on_leaf_side += 1;
    }
    assert_eq!(on_hub_side + on_leaf_side, 100, "{label}: each job once");
    assert_eq!(
        on_hub_side, 100,
        "{label}: the publisher's side is preferred"
    );
    // Without a member on the hub, the leaf's member gets them.
    drop(hub_worker);
    sync(&on_hub).await;
    for _ in 0..20 {
        on_hub.publish("jobs", "j".into()).await.expect("pub");
    }
    sync(&on_hub).await;
    let mut got = 0;
    while let Ok(Some(_)) =
        tokio::time::timeout(Duration::from_millis(500), leaf_worker.next()).await
    {
        got += 1;
    }
    assert_eq!(got, 20, "{label}: the leaf's member takes over");
}

#[tokio::test]
async fn midge_hub_and_midge_leaf() {
    if midge_tests::reference_only() {
        return;
    }
    hub_and_leaf(ServerKind::Midge, ServerKind::Midge).await;
}

#[tokio::test]
async fn midge_hub_and_nats_server_leaf() {
    if midge_tests::reference_only() {
        return;
    }
    hub_and_leaf(ServerKind::Midge, ServerKind::NatsServer).await;
}

#[tokio::test]
async fn nats_server_hub_and_midge_leaf() {
    if midge_tests::reference_only() {
        return;
    }
    hub_and_leaf(ServerKind::NatsServer, ServerKind::Midge).await;
}

#[tokio::test]
async fn nats_server_hub_and_leaf_reference() {
    hub_and_leaf(ServerKind::NatsServer, ServerKind::NatsServer).await;
}

/// Credentials: a leaf with the right user gets in (bound to the user's account), one
/// with a wrong password never connects, both on a midge hub and on nats-server.
#[tokio::test]
async fn leaf_credentials_and_account_binding() {
    midge_tests::both(|hub_kind| async move {
        let port = free_port();
        let hub_conf = format!(
            "accounts {{\n  EDGE: {{ users: [{{user: e, password: e}}] }}\n  OTHER: {{ users: [{{user: o, password: o}}] }}\n}}\nleafnodes {{\n  listen: 127.0.0.1:{port}\n  authorization {{ users: [{{user: leaf, password: s3cret, account: EDGE}}] }}\n}}\n"
        );
        let hub = TestServer::start(hub_kind, &hub_conf).await;
        let leaf_kind = ServerKind::Midge;
        let good = TestServer::start(
            leaf_kind,
            &format!("leafnodes {{ remotes: [{{url: \"nats-leaf://leaf:s3cret@127.0.0.1:{port}\"}}] }}\n"),
        )
        .await;
        let bad = TestServer::start(
            leaf_kind,
            &format!("leafnodes {{ remotes: [{{url: \"nats-leaf://leaf:wrong@127.0.0.1:{port}\"}}] }}\n"),
        )
        .await;
        let edge = async_nats::ConnectOptions::with_user_and_password("e".into(), "e".into())
            .connect(hub.url())
            .await
            .expect("login EDGE");
        let other = async_nats::ConnectOptions::with_user_and_password("o".into(), "o".into())
            .connect(hub.url())
            .await
            .expect("login OTHER");
        let on_good = client(&good).await;
        let mut from_edge = on_good.subscribe("edge.>").await.expect("sub");
        sync(&on_good).await;
        until_crossed(&edge, &mut from_edge, "edge.x", &format!("[{hub_kind}] EDGE -> leaf")).await;
        // OTHER's messages stay in OTHER.
        other.publish("edge.other", "no".into()).await.expect("pub");
        sync(&other).await;
        edge.publish("edge.mark", "yes".into()).await.expect("pub");
        sync(&edge).await;
        let m = tokio::time::timeout(WAIT, from_edge.next()).await.expect("in time").expect("open");
        assert_eq!(m.subject.as_str(), "edge.mark", "[{hub_kind}] OTHER leaked to the leaf");
        // The leaf with the wrong password gets nothing across.
        let on_bad = client(&bad).await;
        let mut nothing = on_bad.subscribe("edge.>").await.expect("sub");
        sync(&on_bad).await;
        for _ in 0..5 {
            edge.publish("edge.y", "y".into()).await.expect("pub");
        }
        sync(&edge).await;
        assert!(
            tokio::time::timeout(Duration::from_millis(500), nothing.next()).await.is_err(),
            "[{hub_kind}] a leaf with a wrong password got messages"
        );
    })
    .await;
}

/// The hub goes away (kill -9) and comes back on the same port: the leaf keeps serving its
/// own clients meanwhile, reconnects by itself, and interest is sent again.
#[tokio::test]
async fn leaf_survives_the_hub_and_reconnects() {
    if midge_tests::reference_only() {
        return;
    }
    let port = free_port();
    let client_port = free_port();
    let hub_conf = format!("leafnodes {{\n  listen: 127.0.0.1:{port}\n}}\n");
    let start_hub = || {
        TestServer::builder(ServerKind::Midge)
            .config(&hub_conf)
            .arg("-p")
            .arg(&client_port.to_string())
            .start()
    };
    let hub = start_hub().await;
    let leaf = TestServer::start(
        ServerKind::Midge,
        &format!("leafnodes {{\n  remotes: [{{url: \"nats-leaf://127.0.0.1:{port}\"}}]\n  reconnect: \"200ms\"\n}}\n"),
    )
    .await;
    let on_leaf = client(&leaf).await;
    let mut sub = on_leaf.subscribe("edge.data").await.expect("sub");
    sync(&on_leaf).await;
    {
        let on_hub = client(&hub).await;
        until_crossed(&on_hub, &mut sub, "edge.data", "before the outage").await;
    }
    drop(hub); // killed
               // Local traffic on the leaf goes on during the outage.
    let local = client(&leaf).await;
    let mut local_sub = local.subscribe("local.only").await.expect("sub");
    sync(&local).await;
    on_leaf
        .publish("local.only", "still".into())
        .await
        .expect("pub");
    sync(&on_leaf).await;
    let m = tokio::time::timeout(WAIT, local_sub.next())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(&m.payload[..], b"still");
    // The hub returns; the leaf reconnects and sends its interest again.
    let hub = start_hub().await;
    let on_hub = client(&hub).await;
    until_crossed(&on_hub, &mut sub, "edge.data", "after the hub came back").await;
    on_hub
        .publish("edge.data", "after".into())
        .await
        .expect("pub");
    sync(&on_hub).await;
    let m = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(&m.payload[..], b"after");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.next())
            .await
            .is_err(),
        "a message was delivered twice after the reconnect"
    );
}

/// A leaf cluster (two midge servers routed together, cluster `edge`) attached to one hub:
/// every message is delivered once, whichever server publishes and subscribes.
#[tokio::test]
async fn leaf_cluster_on_one_hub_delivers_once() {
    if midge_tests::reference_only() {
        return;
    }
    let port = free_port();
    let hub = TestServer::start(
        ServerKind::Midge,
        &format!("leafnodes {{\n  listen: 127.0.0.1:{port}\n}}\n"),
    )
    .await;
    let (r1, r2) = (free_port(), free_port());
    let mut edges = Vec::new();
    for (mine, other) in [(r1, r2), (r2, r1)] {
        edges.push(
            TestServer::start(
                ServerKind::Midge,
                &format!(
                    "cluster {{\n  name: edge\n  listen: 127.0.0.1:{mine}\n  routes: [\"nats://127.0.0.1:{other}\"]\n}}\nleafnodes {{\n  remotes: [{{url: \"nats-leaf://127.0.0.1:{port}\"}}]\n}}\n"
                ),
            )
            .await,
        );
    }
    let on_hub = client(&hub).await;
    let e1 = client(&edges[0]).await;
    let e2 = client(&edges[1]).await;
    // Subscribers on the second edge server and on the hub.
    let mut at_e2 = e2.subscribe("t.>").await.expect("sub");
    let mut at_hub = on_hub.subscribe("t.>").await.expect("sub");
    sync(&e2).await;
    sync(&on_hub).await;
    until_crossed(&e1, &mut at_e2, "t.probe", "edge 1 -> edge 2").await;
    until_crossed(&e1, &mut at_hub, "t.probe2", "edge 1 -> hub").await;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), at_e2.next()).await {}
    for (name, publisher) in [("edge 1", &e1), ("hub", &on_hub)] {
        for i in 0..20 {
            publisher
                .publish(format!("t.{i}"), "x".into())
                .await
                .expect("pub");
        }
        sync(publisher).await;
        let mut got = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), at_e2.next()).await
        {
            got += 1;
        }
        assert_eq!(got, 20, "from {name}: edge 2 got each message once");
        if name == "edge 1" {
            let mut got = 0;
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(500), at_hub.next()).await
            {
                got += 1;
            }
            assert_eq!(got, 20, "from edge 1: the hub got each message once");
        }
    }
}

/// Two servers that are each other's hub and leaf form a loop: it is detected and the
/// connection that closed it is refused.
#[tokio::test]
async fn a_leaf_loop_is_detected() {
    if midge_tests::reference_only() {
        return;
    }
    let (pa, pb) = (free_port(), free_port());
    let a = TestServer::start(
        ServerKind::Midge,
        &format!("leafnodes {{\n  listen: 127.0.0.1:{pa}\n  remotes: [{{url: \"nats-leaf://127.0.0.1:{pb}\"}}]\n}}\n"),
    )
    .await;
    let b = TestServer::start(
        ServerKind::Midge,
        &format!("leafnodes {{\n  listen: 127.0.0.1:{pb}\n  remotes: [{{url: \"nats-leaf://127.0.0.1:{pa}\"}}]\n}}\n"),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let logs = format!("{}\n{}", a.log_text(), b.log_text());
        if logs.contains("Loop detected for leafnode account") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no loop detected:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A remote's deny lists: `deny_imports` keeps the hub's messages on those subjects off the
/// leaf, `deny_exports` keeps the leaf's off the hub; everything else crosses.
#[tokio::test]
async fn deny_imports_and_exports_on_a_remote() {
    if midge_tests::reference_only() {
        return;
    }
    let port = free_port();
    let hub = TestServer::start(
        ServerKind::Midge,
        &format!("leafnodes {{\n  listen: 127.0.0.1:{port}\n}}\n"),
    )
    .await;
    let leaf = TestServer::start(
        ServerKind::Midge,
        &format!("leafnodes {{\n  remotes: [{{url: \"nats-leaf://127.0.0.1:{port}\", deny_imports: [\"secret.>\"], deny_exports: \"private.*\"}}]\n}}\n"),
    )
    .await;
    let on_hub = client(&hub).await;
    let on_leaf = client(&leaf).await;
    // Hub -> leaf.
    let mut secret = on_leaf.subscribe("secret.>").await.expect("sub");
    let mut open = on_leaf.subscribe("open.>").await.expect("sub");
    sync(&on_leaf).await;
    until_crossed(&on_hub, &mut open, "open.probe", "open subjects cross").await;
    on_hub.publish("secret.1", "no".into()).await.expect("pub");
    on_hub.publish("open.1", "yes".into()).await.expect("pub");
    sync(&on_hub).await;
    let m = tokio::time::timeout(WAIT, open.next())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(m.subject.as_str(), "open.1");
    // Published before open.1 on the same path, it would be here by now.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), secret.next())
            .await
            .is_err(),
        "a denied import reached the leaf"
    );
    // Leaf -> hub.
    let mut private = on_hub.subscribe("private.*").await.expect("sub");
    let mut public = on_hub.subscribe("public.*").await.expect("sub");
    sync(&on_hub).await;
    until_crossed(
        &on_leaf,
        &mut public,
        "public.probe",
        "public subjects cross",
    )
    .await;
    on_leaf
        .publish("private.1", "no".into())
        .await
        .expect("pub");
    on_leaf
        .publish("public.1", "yes".into())
        .await
        .expect("pub");
    sync(&on_leaf).await;
    let m = tokio::time::timeout(WAIT, public.next())
        .await
        .expect("in time")
        .expect("open");
    assert_eq!(m.subject.as_str(), "public.1");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), private.next())
            .await
            .is_err(),
        "a denied export reached the hub"
    );
}

/// A throwaway CA and a server certificate for 127.0.0.1, as PEM files.
struct LeafPki {
    dir: tempfile::TempDir,
}

impl LeafPki {
    fn new() -> LeafPki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "leaf test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, "hub");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca).expect("certificate");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
        std::fs::write(dir.path().join("hub.pem"), cert.pem()).expect("write");
        std::fs::write(dir.path().join("hub-key.pem"), key.serialize_pem()).expect("write");
        LeafPki { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// TLS on the leaf connection, in every combination of midge and nats-server: the hub
/// requires it, the leaf verifies the hub's certificate against its CA.
#[tokio::test]
async fn leaf_connections_over_tls() {
    let pki = LeafPki::new();
    let combos: Vec<(ServerKind, ServerKind)> = if midge_tests::reference_only() {
        vec![(ServerKind::NatsServer, ServerKind::NatsServer)]
    } else {
        vec![
            (ServerKind::Midge, ServerKind::Midge),
            (ServerKind::Midge, ServerKind::NatsServer),
            (ServerKind::NatsServer, ServerKind::Midge),
            (ServerKind::NatsServer, ServerKind::NatsServer),
        ]
    };
    for (hub_kind, leaf_kind) in combos {
        let label = format!("TLS hub {hub_kind}, leaf {leaf_kind}");
        let port = free_port();
        let hub = TestServer::start(
            hub_kind,
            &format!(
                "leafnodes {{\n  listen: 127.0.0.1:{port}\n  tls {{ cert_file: \"{}\", key_file: \"{}\" }}\n}}\n",
                pki.path("hub.pem"),
                pki.path("hub-key.pem")
            ),
        )
        .await;
        let leaf = TestServer::start(
            leaf_kind,
            &format!(
                "leafnodes {{\n  remotes: [{{url: \"tls://127.0.0.1:{port}\", tls: {{ca_file: \"{}\"}}}}]\n}}\n",
                pki.path("ca.pem")
            ),
        )
        .await;
        let on_hub = client(&hub).await;
        let on_leaf = client(&leaf).await;
        let mut down = on_leaf.subscribe("secure.down").await.expect("sub");
        sync(&on_leaf).await;
        until_crossed(
            &on_hub,
            &mut down,
            "secure.down",
            &format!("{label}: hub -> leaf"),
        )
        .await;
        let mut up = on_hub.subscribe("secure.up").await.expect("sub");
        sync(&on_hub).await;
        until_crossed(
            &on_leaf,
            &mut up,
            "secure.up",
            &format!("{label}: leaf -> hub"),
        )
        .await;
        // A large message crosses the encrypted link intact.
        let big = vec![b'z'; 256 * 1024];
        on_hub
            .publish("secure.down", big.clone().into())
            .await
            .expect("pub");
        sync(&on_hub).await;
        let m = tokio::time::timeout(WAIT, down.next())
            .await
            .expect("in time")
            .expect("open");
        assert_eq!(m.payload.len(), big.len(), "{label}");
        assert!(m.payload.iter().all(|&b| b == b'z'), "{label}");
    }
}

/// A leaf that does not trust the hub's certificate never connects.
#[tokio::test]
async fn a_leaf_refuses_a_hub_it_cannot_verify() {
    if midge_tests::reference_only() {
        return;
    }
    let pki = LeafPki::new();
    let other = LeafPki::new();
    let port = free_port();
    let hub = TestServer::start(
        ServerKind::Midge,
        &format!(
            "leafnodes {{\n  listen: 127.0.0.1:{port}\n  tls {{ cert_file: \"{}\", key_file: \"{}\" }}\n}}\n",
            pki.path("hub.pem"),
            pki.path("hub-key.pem")
        ),
    )
    .await;
    let leaf = TestServer::start(
        ServerKind::Midge,
        &format!(
            "leafnodes {{\n  remotes: [{{url: \"tls://127.0.0.1:{port}\", tls: {{ca_file: \"{}\"}}}}]\n  reconnect: \"200ms\"\n}}\n",
            other.path("ca.pem")
        ),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !leaf.log_text().contains("TLS handshake with") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no TLS failure logged:\n{}",
            leaf.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !leaf.log_text().contains("Leafnode connection to"),
        "{}",
        leaf.log_text()
    );
    drop(hub);
}

/// Certificate rotation on the hub without a restart: a leaf that trusts only the new CA
/// cannot connect until the hub's `leafnodes { tls {} }` is reloaded with the new
/// certificate, and then connects by itself.
#[tokio::test]
async fn hub_leaf_certificate_rotates_by_reload() {
    if midge_tests::reference_only() {
        return;
    }
    let (old_pki, new_pki) = (LeafPki::new(), LeafPki::new());
    let port = free_port();
    let hub_conf = |pki: &LeafPki| {
        format!(
            "leafnodes {{\n  listen: 127.0.0.1:{port}\n  tls {{ cert_file: \"{}\", key_file: \"{}\" }}\n}}\n",
            pki.path("hub.pem"),
            pki.path("hub-key.pem")
        )
    };
    let hub = TestServer::start(ServerKind::Midge, &hub_conf(&old_pki)).await;
    let leaf = TestServer::start(
        ServerKind::Midge,
        &format!(
            "leafnodes {{\n  remotes: [{{url: \"tls://127.0.0.1:{port}\", tls: {{ca_file: \"{}\"}}}}]\n  reconnect: \"100ms\"\n}}\n",
            new_pki.path("ca.pem")
        ),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !leaf.log_text().contains("TLS handshake with") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old certificate was accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(hub.config_path(), hub_conf(&new_pki)).expect("rewrite config");
    let status = std::process::Command::new(ServerKind::Midge.binary())
        .arg("--signal")
        .arg(format!("reload={}", hub.pid()))
        .status()
        .expect("signal");
    assert!(status.success());
    let on_hub = client(&hub).await;
    let on_leaf = client(&leaf).await;
    let mut sub = on_leaf.subscribe("rotated").await.expect("sub");
    sync(&on_leaf).await;
    until_crossed(&on_hub, &mut sub, "rotated", "after the certificate reload").await;
}

/// A leaf cluster of two attached to a hub cluster of two, each edge server to a different
/// hub server: every message is delivered once wherever it is published and received (the
/// hub's routes carry the leaf cluster's name, nats-server's `lnoc`). `hub_kinds` lets the
/// hub cluster mix midge and nats-server.
async fn leaf_cluster_on_hub_cluster(hub_kinds: [ServerKind; 2]) {
    let label = format!("hub cluster {} + {}", hub_kinds[0], hub_kinds[1]);
    let (l1, l2) = (free_port(), free_port());
    let (hr1, hr2) = (free_port(), free_port());
    let mut hubs = Vec::new();
    for (i, (kind, leaf_port, mine)) in [(hub_kinds[0], l1, hr1), (hub_kinds[1], l2, hr2)]
        .into_iter()
        .enumerate()
    {
        hubs.push(
            TestServer::start(
                kind,
                &format!(
                    "server_name: hub{i}\ncluster {{\n  name: hub\n  listen: 127.0.0.1:{mine}\n  routes: [\"nats://127.0.0.1:{hr1}\", \"nats://127.0.0.1:{hr2}\"]\n}}\nleafnodes {{\n  listen: 127.0.0.1:{leaf_port}\n}}\n"
                ),
            )
            .await,
        );
    }
    let (er1, er2) = (free_port(), free_port());
    let mut edges = Vec::new();
    for (i, (leaf_port, mine)) in [(l1, er1), (l2, er2)].into_iter().enumerate() {
        edges.push(
            TestServer::start(
                ServerKind::Midge,
                &format!(
                    "server_name: edge{i}\ncluster {{\n  name: edge\n  listen: 127.0.0.1:{mine}\n  routes: [\"nats://127.0.0.1:{er1}\", \"nats://127.0.0.1:{er2}\"]\n}}\nleafnodes {{\n  remotes: [{{url: \"nats-leaf://127.0.0.1:{leaf_port}\"}}]\n}}\n"
                ),
            )
            .await,
        );
    }
    let h1 = client(&hubs[0]).await;
    let h2 = client(&hubs[1]).await;
    let e1 = client(&edges[0]).await;
    let e2 = client(&edges[1]).await;
    let mut at_e2 = e2.subscribe("t.>").await.expect("sub");
    let mut at_h1 = h1.subscribe("t.>").await.expect("sub");
    sync(&e2).await;
    sync(&h1).await;
    until_crossed(&e1, &mut at_e2, "t.p1", &format!("{label}: edge1 -> edge2")).await;
    until_crossed(&h2, &mut at_e2, "t.p2", &format!("{label}: hub2 -> edge2")).await;
    until_crossed(&h1, &mut at_e2, "t.p3", &format!("{label}: hub1 -> edge2")).await;
    until_crossed(&e1, &mut at_h1, "t.p4", &format!("{label}: edge1 -> hub1")).await;
    until_crossed(&e2, &mut at_h1, "t.p5", &format!("{label}: edge2 -> hub1")).await;
    // Everything settled: drain leftovers of the probes, then count exactly.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), at_e2.next()).await {}
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(300), at_h1.next()).await {}
    for (name, publisher) in [("edge1", &e1), ("hub1", &h1), ("hub2", &h2)] {
        for i in 0..20 {
            publisher
                .publish(format!("t.{i}"), "x".into())
                .await
                .expect("pub");
        }
        sync(publisher).await;
        let mut got = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), at_e2.next()).await
        {
            got += 1;
        }
        assert_eq!(got, 20, "{label}: from {name}, edge2 got each message once");
        let mut got = 0;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), at_h1.next()).await
        {
            got += 1;
        }
        assert_eq!(got, 20, "{label}: from {name}, hub1 got each message once");
    }
}

#[tokio::test]
async fn leaf_cluster_of_two_on_a_hub_cluster_of_two() {
    if midge_tests::reference_only() {
        return;
    }
    leaf_cluster_on_hub_cluster([ServerKind::Midge, ServerKind::Midge]).await;
}

#[tokio::test]
async fn leaf_cluster_on_a_mixed_hub_cluster() {
    if midge_tests::reference_only() {
        return;
    }
    leaf_cluster_on_hub_cluster([ServerKind::Midge, ServerKind::NatsServer]).await;
}

/// Lame duck mode on a hub: its leaf port stops accepting (leafs go to another hub URL), the
/// leaf already attached keeps working until the hub stops.
#[tokio::test]
async fn lame_duck_hub_stops_taking_leafs_and_keeps_the_attached_one() {
    if midge_tests::reference_only() {
        return;
    }
    let port = free_port();
    let hub = TestServer::start(
        ServerKind::Midge,
        &format!("lame_duck_duration: \"30s\"\nlame_duck_grace_period: \"10s\"\nleafnodes {{\n  listen: 127.0.0.1:{port}\n}}\n"),
    )
    .await;
    let leaf = TestServer::start(
        ServerKind::Midge,
        &format!("leafnodes {{\n  remotes: [{{url: \"nats-leaf://127.0.0.1:{port}\"}}]\n}}\n"),
    )
    .await;
    let on_leaf = client(&leaf).await;
    let mut sub = on_leaf.subscribe("ldm.test").await.expect("sub");
    sync(&on_leaf).await;
    // A client stays on the hub: without clients lame duck mode ends at once (as in
    // nats-server), and the test is about the time in between.
    let on_hub = client(&hub).await;
    until_crossed(&on_hub, &mut sub, "ldm.test", "before lame duck").await;
    let status = std::process::Command::new(ServerKind::Midge.binary())
        .arg("--signal")
        .arg(format!("ldm={}", hub.pid()))
        .status()
        .expect("signal");
    assert!(status.success());
    let deadline = tokio::time::Instant::now() + WAIT;
    while !hub
        .log_text()
        .contains("no longer accepting leafnode connections")
    {
        assert!(tokio::time::Instant::now() < deadline, "{}", hub.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect attempt in time");
    assert!(
        refused.is_err(),
        "a new leaf was accepted in lame duck mode"
    );
    // The attached leaf still carries the leaf's own traffic to its hub-side interest:
    // interest from the hub side is still there (the hub's clients are closed gradually).
    assert!(
        leaf.log_text().contains("Leafnode connection to"),
        "{}",
        leaf.log_text()
    );
    assert!(
        !leaf.log_text().contains("closed"),
        "the attached leaf was dropped at once: {}",
        leaf.log_text()
    );
}

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect monitor");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut body = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut body))
        .await
        .expect("answer in time")
        .expect("read");
    String::from_utf8_lossy(&body).into_owned()
}

/// `/leafz` (with `subs=1`), `/varz` and `/metrics` on a hub tell the truth about its leaf.
#[tokio::test]
async fn leaf_monitoring_on_the_hub() {
    if midge_tests::reference_only() {
        return;
    }
    let (port, http) = (free_port(), free_port());
    let hub = TestServer::start(
        ServerKind::Midge,
        &format!("http_port: {http}\nleafnodes {{\n  listen: 127.0.0.1:{port}\n}}\n"),
    )
    .await;
    let leaf = TestServer::start(
        ServerKind::Midge,
        &format!("server_name: edge-1\nleafnodes {{\n  remotes: [{{url: \"nats-leaf://127.0.0.1:{port}\"}}]\n}}\n"),
    )
    .await;
    let on_leaf = client(&leaf).await;
    let mut sub = on_leaf.subscribe("watched.subject").await.expect("sub");
    sync(&on_leaf).await;
    let on_hub = client(&hub).await;
    until_crossed(&on_hub, &mut sub, "watched.subject", "hub -> leaf").await;
    let leafz = http_get(http, "/leafz?subs=1").await;
    let json: serde_json::Value =
        serde_json::from_str(leafz.split_once("\r\n\r\n").map_or("", |(_, b)| b)).expect("JSON");
    assert_eq!(json["leafnodes"], 1, "{json}");
    assert_eq!(json["leafs"][0]["name"], "edge-1", "{json}");
    assert_eq!(json["leafs"][0]["account"], "$G");
    let subs = json["leafs"][0]["subscriptions_list"]
        .as_array()
        .expect("list");
    assert!(subs.iter().any(|s| s == "watched.subject"), "{json}");
    let varz = http_get(http, "/varz").await;
    assert!(varz.contains("\"leafnodes\": 1"), "{varz}");
    let metrics = http_get(http, "/metrics").await;
    let out = metrics
        .lines()
        .find(|l| l.starts_with("midge_leafz_out_msgs{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(out > 0, "{metrics}");
    assert!(metrics.contains("gnatsd_varz_leafnodes{"), "{metrics}");
}
