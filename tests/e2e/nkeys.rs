//! nkey users: the server sends a nonce in INFO, the client signs it with its seed and
//! sends `nkey` and `sig` in CONNECT. Every scenario runs the same config file on
//! nats-server (the reference) and on midge, with async-nats (`with_nkey`) and with a raw
//! client that signs the nonce itself (to send wrong signatures on purpose).

use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::StreamExt;
use midge_tests::{both, FrameRead, RawClient, ServerKind, TestServer};
use nkeys::KeyPair;

const WAIT: Duration = Duration::from_secs(10);

/// Three nkey users: `a` in account A, `b` in account B, `g` in `$G` with permissions.
struct Keys {
    a: KeyPair,
    b: KeyPair,
    g: KeyPair,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            a: KeyPair::new_user(),
            b: KeyPair::new_user(),
            g: KeyPair::new_user(),
        }
    }

    fn config(&self) -> String {
        format!(
            "authorization {{\n  users: [{{nkey: {g}, permissions: {{publish: \"g.>\", subscribe: \"g.>\"}}}}]\n}}\n\
             accounts {{\n  A: {{ users: [{{nkey: {a}}}] }}\n  B: {{ users: [{{nkey: {b}}}] }}\n}}\n",
            g = self.g.public_key(),
            a = self.a.public_key(),
            b = self.b.public_key(),
        )
    }
}

fn seed(kp: &KeyPair) -> String {
    kp.seed().expect("a generated key pair has its seed")
}

async fn nkey_client(server: &TestServer, kp: &KeyPair) -> async_nats::Client {
    async_nats::ConnectOptions::with_nkey(seed(kp))
        .connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("{} nkey login: {e}", server.kind()))
}

/// How the raw client signs the nonce.
#[derive(Clone, Copy)]
enum Sig {
    /// base64url without padding (what the official clients send).
    RawUrl,
    /// standard base64 with padding (accepted too).
    Std,
    /// A valid signature of other bytes.
    OtherBytes,
    /// No `sig` at all.
    Missing,
}

/// Reads INFO (asserting its nonce), sends CONNECT for `nkey` signed by `signer`.
async fn raw_login(server: &TestServer, nkey: &KeyPair, signer: &KeyPair, sig: Sig) -> RawClient {
    let mut c = RawClient::connect(server.addr())
        .await
        .labelled(server.kind().to_string());
    let info = c.read_info().await;
    assert_eq!(info["auth_required"], true, "[{}] {info}", server.kind());
    let nonce = info["nonce"]
        .as_str()
        .unwrap_or_else(|| panic!("[{}] INFO without a nonce: {info}", server.kind()))
        .to_string();
    assert_eq!(nonce.len(), 15, "[{}] nonce {nonce:?}", server.kind());
    let signed = |bytes: &[u8]| signer.sign(bytes).expect("sign");
    let sig = match sig {
        Sig::RawUrl => {
            Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signed(nonce.as_bytes())))
        }
        Sig::Std => {
            Some(base64::engine::general_purpose::STANDARD.encode(signed(nonce.as_bytes())))
        }
        Sig::OtherBytes => {
            Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signed(b"not the nonce")))
        }
        Sig::Missing => None,
    };
    let mut connect = serde_json::json!({
        "verbose": false,
        "protocol": 1,
        "nkey": nkey.public_key(),
    });
    if let Some(sig) = sig {
        connect["sig"] = sig.into();
    }
    c.send(format!("CONNECT {connect}\r\n").as_bytes()).await;
    c
}

/// Sends `ops` then PING; returns the frames before the PONG, leaving out async INFOs.
async fn exchange(client: &mut RawClient, ops: &[u8]) -> Vec<String> {
    client.send(ops).await;
    client.send(b"PING\r\n").await;
    let mut frames = Vec::new();
    loop {
        match client.read_frame(midge_tests::DEADLINE).await {
            FrameRead::Frame(f) if f == b"PONG\r\n" => return frames,
            FrameRead::Frame(f) if f.starts_with(b"INFO ") || f == b"PING\r\n" => {}
            FrameRead::Frame(f) => frames.push(String::from_utf8_lossy(&f).into_owned()),
            other => panic!("waiting for PONG: {other:?} after {frames:?}"),
        }
    }
}

/// The next frame (other than an async INFO or a PING) is `error`, or with `None`
/// the connection closes at once; then the connection is closed.
async fn expect_error_and_close(client: &mut RawClient, error: Option<&str>) {
    loop {
        match client.read_frame(midge_tests::DEADLINE).await {
            FrameRead::Frame(f) if f.starts_with(b"INFO ") || f == b"PING\r\n" => {}
            FrameRead::Frame(f) => {
                assert_eq!(Some(String::from_utf8_lossy(&f).as_ref()), error);
                break;
            }
            FrameRead::Closed if error.is_none() => return,
            other => panic!("waiting for {error:?}: {other:?}"),
        }
    }
    client.expect_closed().await;
}

const VIOLATION: &str = "-ERR 'Authorization Violation'\r\n";

async fn next_payload(sub: &mut async_nats::Subscriber, what: &str) -> String {
    let msg = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing arrived"))
        .unwrap_or_else(|| panic!("{what}: subscription closed"));
    String::from_utf8_lossy(&msg.payload).into_owned()
}

#[tokio::test]
async fn nkey_users_log_in_with_async_nats_into_their_accounts() {
    both(|kind| async move {
        let keys = Keys::new();
        let server = TestServer::start(kind, &keys.config()).await;
        let a = nkey_client(&server, &keys.a).await;
        let b = nkey_client(&server, &keys.b).await;
        let mut sub = a.subscribe("x").await.expect("subscribe");
        midge_tests::round_trip(&a).await;
        // B's message stays in account B: A's own later message is the first to arrive.
        b.publish("x", "from b".into()).await.expect("publish");
        midge_tests::round_trip(&b).await;
        a.publish("x", "from a".into()).await.expect("publish");
        assert_eq!(
            next_payload(&mut sub, &format!("[{kind}] x in A")).await,
            "from a"
        );

        // The global user has its permissions.
        let mut g = raw_login(&server, &keys.g, &keys.g, Sig::RawUrl).await;
        assert_eq!(
            exchange(&mut g, b"SUB g.x 1\r\nPUB g.x 2\r\nhi\r\nPUB h 1\r\nx\r\n").await,
            [
                "MSG g.x 1 2\r\nhi\r\n",
                "-ERR 'Permissions Violation for Publish to \"h\"'\r\n"
            ],
            "[{kind}]"
        );
    })
    .await;
}

#[tokio::test]
async fn wrong_missing_or_foreign_signatures_are_refused() {
    both(|kind| async move {
        let keys = Keys::new();
        let server = TestServer::start(kind, &keys.config()).await;
        // Both encodings of a right signature are accepted.
        for sig in [Sig::RawUrl, Sig::Std] {
            let mut c = raw_login(&server, &keys.a, &keys.a, sig).await;
            assert!(exchange(&mut c, b"").await.is_empty(), "[{kind}]");
        }
        let stranger = KeyPair::new_user();
        let refused = [
            (
                "signature of other bytes",
                &keys.a,
                &keys.a,
                Sig::OtherBytes,
            ),
            ("no signature", &keys.a, &keys.a, Sig::Missing),
            ("signed by another key", &keys.a, &keys.b, Sig::RawUrl),
            ("unknown nkey", &stranger, &stranger, Sig::RawUrl),
        ];
        for (what, nkey, signer, sig) in refused {
            let mut c = raw_login(&server, nkey, signer, sig)
                .await
                .labelled(format!("{kind}: {what}"));
            c.send(b"PING\r\n").await;
            expect_error_and_close(&mut c, Some(VIOLATION)).await;
        }
        // async-nats with a seed that is not configured gets the same refusal.
        let err = async_nats::ConnectOptions::with_nkey(seed(&stranger))
            .connect(server.url())
            .await
            .expect_err("an unknown nkey must be refused");
        assert!(
            err.to_string().to_lowercase().contains("authorization"),
            "[{kind}] {err}"
        );
    })
    .await;
}

#[tokio::test]
async fn no_nonce_without_nkey_users() {
    both(|kind| async move {
        let server =
            TestServer::start(kind, "authorization { users: [{user: u, password: p}] }\n").await;
        let mut c = RawClient::connect(server.addr()).await;
        let info = c.read_info().await;
        assert!(info.get("nonce").is_none(), "[{kind}] {info}");
    })
    .await;
}

fn signal_reload(server: &TestServer) {
    let status = std::process::Command::new(server.kind().binary())
        .arg("--signal")
        .arg(format!("reload={}", server.pid()))
        .status()
        .unwrap_or_else(|e| panic!("run {} --signal: {e}", server.kind()));
    assert!(
        status.success(),
        "{} --signal reload: {status}",
        server.kind()
    );
}

async fn wait_for_log(server: &TestServer, needle: &str, count: usize) {
    let until = Instant::now() + WAIT;
    while server.log_text().matches(needle).count() < count {
        assert!(
            Instant::now() < until,
            "[{}] {needle:?} not logged {count} time(s):\n{}",
            server.kind(),
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn reload_adds_and_removes_nkey_users() {
    both(|kind| async move {
        let keys = Keys::new();
        let server = TestServer::start(kind, &keys.config()).await;
        let mut a = raw_login(&server, &keys.a, &keys.a, Sig::RawUrl).await;
        let mut g = raw_login(&server, &keys.g, &keys.g, Sig::RawUrl).await;
        assert!(exchange(&mut a, b"SUB x 1\r\n").await.is_empty());
        assert!(exchange(&mut g, b"").await.is_empty());

        // g goes, c joins account A, and a's permissions change.
        let c = KeyPair::new_user();
        let conf = format!(
            "accounts {{\n  A: {{ users: [{{nkey: {a}, permissions: {{publish: \"x\"}}}}, {{nkey: {c}}}] }}\n  B: {{ users: [{{nkey: {b}}}] }}\n}}\n",
            a = keys.a.public_key(),
            b = keys.b.public_key(),
            c = c.public_key(),
        );
        std::fs::write(server.config_path(), conf).expect("rewrite config");
        signal_reload(&server);
        wait_for_log(&server, "Reloaded server configuration", 1).await;

        // nats-server 2.9.10 closes a removed user without a word; midge says why.
        let why = match kind {
            ServerKind::Midge => Some(VIOLATION),
            ServerKind::NatsServer => None,
        };
        expect_error_and_close(&mut g, why).await;
        // a keeps its connection, under its new permissions.
        assert_eq!(
            exchange(&mut a, b"PUB y 1\r\nz\r\nPUB x 1\r\nz\r\n").await,
            [
                "-ERR 'Permissions Violation for Publish to \"y\"'\r\n",
                "MSG x 1 1\r\nz\r\n"
            ],
            "[{kind}]"
        );
        // The new user logs in, into A.
        let cc = nkey_client(&server, &c).await;
        cc.publish("x", "from c".into()).await.expect("publish");
        midge_tests::round_trip(&cc).await;
        assert_eq!(exchange(&mut a, b"").await, ["MSG x 1 6\r\nfrom c\r\n"], "[{kind}]");
    })
    .await;
}
