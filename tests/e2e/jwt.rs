//! Operator mode: an operator, its accounts and their users, built here with the `nkeys`
//! crate as `nsc` would (JWTs signed with ed25519, `.creds` files), and the same files given
//! to nats-server (the reference) and to midge. Logins use async-nats with `.creds` and a
//! raw client that signs the nonce itself (to present wrong signatures on purpose).

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures::StreamExt;
use midge_tests::{both, FrameRead, RawClient, ServerKind, TestServer};
use nkeys::KeyPair;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
const VIOLATION: &str = "-ERR 'Authorization Violation'\r\n";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A signed JWT: `claims` gets `iss`, `sub`, `iat` and `jti` and the given `nats` part.
fn encode(signer: &KeyPair, subject: &str, iat: i64, mut claims: Value) -> String {
    claims["iss"] = signer.public_key().into();
    claims["sub"] = subject.into();
    claims["iat"] = iat.into();
    claims["jti"] = format!("{:X}", rand_id()).into();
    let head = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{head}.{body}");
    let sig = signer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn rand_id() -> u128 {
    let k = KeyPair::new_user().public_key();
    k.bytes()
        .fold(0u128, |a, b| a.wrapping_mul(31).wrapping_add(u128::from(b)))
}

const UNLIMITED: &str = r#"{"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1}"#;

fn account_jwt(op: &KeyPair, acc: &KeyPair, extra: Value) -> String {
    account_jwt_at(op, acc, extra, now() - 10)
}

fn account_jwt_at(op: &KeyPair, acc: &KeyPair, extra: Value, iat: i64) -> String {
    let mut nats = json!({"type": "account", "version": 2,
        "limits": serde_json::from_str::<Value>(UNLIMITED).expect("limits")});
    if let (Some(n), Some(e)) = (nats.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            n.insert(k.clone(), v.clone());
        }
    }
    encode(
        op,
        &acc.public_key(),
        iat,
        json!({"name": "acc", "nats": nats}),
    )
}

/// A user JWT signed by `signer` for account `account` with extra `nats` fields.
fn user_jwt(
    signer: &KeyPair,
    account: &KeyPair,
    user: &KeyPair,
    extra: Value,
    exp: Option<i64>,
) -> String {
    let mut nats = json!({"type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1});
    if signer.public_key() != account.public_key() {
        nats["issuer_account"] = account.public_key().into();
    }
    if let (Some(n), Some(e)) = (nats.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            n.insert(k.clone(), v.clone());
        }
    }
    let mut claims = json!({"name": "user", "nats": nats});
    if let Some(exp) = exp {
        claims["exp"] = exp.into();
    }
    encode(signer, &user.public_key(), now() - 5, claims)
}

fn creds(jwt: &str, user: &KeyPair) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n",
        user.seed().expect("seed")
    )
}

/// An operator with a system account and two accounts, A (with a signing key and a
/// revoked user) and B, written as files in a temporary directory.
struct Chain {
    dir: tempfile::TempDir,
    op: KeyPair,
    sys: KeyPair,
    a: KeyPair,
    a_signer: KeyPair,
    /// A scoped signing key of A: its users may publish only to `s.>`.
    a_scoped: KeyPair,
    b: KeyPair,
    revoked: KeyPair,
    revoked_iat: i64,
}

impl Chain {
    fn new() -> Chain {
        let op = KeyPair::new_operator();
        let sys = KeyPair::new_account();
        let dir = tempfile::tempdir().expect("tempdir");
        let op_jwt = encode(
            &op,
            &op.public_key(),
            now() - 10,
            json!({"name": "op", "nats": {"type": "operator", "version": 2,
                "system_account": sys.public_key()}}),
        );
        std::fs::write(dir.path().join("op.jwt"), op_jwt).expect("write operator jwt");
        Chain {
            dir,
            op,
            sys,
            a: KeyPair::new_account(),
            a_signer: KeyPair::new_account(),
            a_scoped: KeyPair::new_account(),
            b: KeyPair::new_account(),
            revoked: KeyPair::new_user(),
            // Revokes every JWT of that user issued until a minute from now.
            revoked_iat: now() + 60,
        }
    }

    fn config(&self, a_extra: Value) -> String {
        let op_path = self.dir.path().join("op.jwt");
        let scope = json!({"kind": "user_scope", "key": self.a_scoped.public_key(), "role": "edge",
            "template": {"pub": {"allow": ["s.>"]}, "subs": -1, "data": -1, "payload": -1}});
        let mut a_nats = json!({"signing_keys": [self.a_signer.public_key(), scope],
            "revocations": {self.revoked.public_key(): self.revoked_iat},
            "exports": [{"name": "feed", "subject": "feed.>", "type": "stream"}]});
        if let (Some(n), Some(e)) = (a_nats.as_object_mut(), a_extra.as_object()) {
            for (k, v) in e {
                n.insert(k.clone(), v.clone());
            }
        }
        let b_nats = json!({"imports": [{"name": "feed", "subject": "feed.>", "account": self.a.public_key(),
            "type": "stream", "to": "from_a"}]});
        format!(
            "operator: \"{}\"\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: \"{}\"\n  {}: \"{}\"\n  {}: \"{}\"\n}}\n",
            op_path.display(),
            self.sys.public_key(),
            self.sys.public_key(),
            account_jwt(&self.op, &self.sys, json!({})),
            self.a.public_key(),
            account_jwt(&self.op, &self.a, a_nats),
            self.b.public_key(),
            account_jwt(&self.op, &self.b, b_nats),
        )
    }

    fn creds_file(&self, name: &str, jwt: &str, user: &KeyPair) -> std::path::PathBuf {
        let path = self.dir.path().join(format!("{name}.creds"));
        std::fs::write(&path, creds(jwt, user)).expect("write creds");
        path
    }
}

async fn creds_client(server: &TestServer, path: &std::path::Path) -> async_nats::Client {
    async_nats::ConnectOptions::with_credentials_file(path)
        .await
        .expect("read creds")
        .connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("{} creds login: {e}", server.kind()))
}

/// Reads INFO, then sends CONNECT with `jwt` and the nonce signed by `signer` (`None`: no
/// signature, for bearer tokens).
async fn raw_jwt_login(
    server: &TestServer,
    jwt: &str,
    signer: Option<&KeyPair>,
    what: &str,
) -> RawClient {
    let mut c = RawClient::connect(server.addr())
        .await
        .labelled(format!("{}: {what}", server.kind()));
    let info = c.read_info().await;
    let nonce = info["nonce"]
        .as_str()
        .unwrap_or_else(|| panic!("[{}] INFO without a nonce: {info}", server.kind()))
        .to_string();
    let mut connect = json!({"verbose": false, "protocol": 1, "jwt": jwt});
    if let Some(signer) = signer {
        connect["sig"] = URL_SAFE_NO_PAD
            .encode(signer.sign(nonce.as_bytes()).expect("sign"))
            .into();
    }
    c.send(format!("CONNECT {connect}\r\n").as_bytes()).await;
    c
}

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

/// The next frame other than INFO or PING is `error` (within `deadline`), then a close.
async fn expect_error_and_close(client: &mut RawClient, error: &str, deadline: Duration) {
    let until = Instant::now() + deadline;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match client.read_frame(left).await {
            FrameRead::Frame(f) if f.starts_with(b"INFO ") || f == b"PING\r\n" => {}
            FrameRead::Frame(f) => {
                assert_eq!(String::from_utf8_lossy(&f), error);
                break;
            }
            other => panic!("waiting for {error:?}: {other:?}"),
        }
    }
    client.expect_closed().await;
}

async fn next_payload(sub: &mut async_nats::Subscriber, what: &str) -> String {
    let msg = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing arrived"))
        .unwrap_or_else(|| panic!("{what}: subscription closed"));
    String::from_utf8_lossy(&msg.payload).into_owned()
}

#[tokio::test]
async fn creds_users_log_in_and_accounts_share_only_their_exports() {
    both(|kind| async move {
        let chain = Chain::new();
        let server = TestServer::start(kind, &chain.config(json!({}))).await;
        let ua = KeyPair::new_user();
        let ua2 = KeyPair::new_user();
        let ub = KeyPair::new_user();
        // One user signed by the account key, one by its signing key.
        let a_path = chain.creds_file(
            "a",
            &user_jwt(&chain.a, &chain.a, &ua, json!({}), None),
            &ua,
        );
        let a2_path = chain.creds_file(
            "a2",
            &user_jwt(&chain.a_signer, &chain.a, &ua2, json!({}), None),
            &ua2,
        );
        let b_path = chain.creds_file(
            "b",
            &user_jwt(&chain.b, &chain.b, &ub, json!({}), None),
            &ub,
        );
        let a = creds_client(&server, &a_path).await;
        let a2 = creds_client(&server, &a2_path).await;
        let b = creds_client(&server, &b_path).await;

        let mut a_sub = a.subscribe("x").await.expect("sub");
        let mut b_feed = b.subscribe("from_a.>").await.expect("sub");
        midge_tests::round_trip(&a).await;
        midge_tests::round_trip(&b).await;
        // B's "x" stays in B; A2 (same account) reaches A.
        b.publish("x", "from b".into()).await.expect("pub");
        midge_tests::round_trip(&b).await;
        a2.publish("x", "from a2".into()).await.expect("pub");
        assert_eq!(
            next_payload(&mut a_sub, &format!("[{kind}] x in A")).await,
            "from a2"
        );
        // A's exported feed reaches B under its import's prefix; wait for the
        // import's interest to be in place by publishing until it arrives.
        let deadline = Instant::now() + WAIT;
        loop {
            a.publish("feed.t", "tick".into()).await.expect("pub");
            midge_tests::round_trip(&a).await;
            if let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(100), b_feed.next()).await
            {
                assert_eq!(m.subject.as_str(), "from_a.feed.t", "[{kind}]");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "[{kind}] the import never delivered"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn bad_signatures_expired_revoked_and_foreign_users_are_refused() {
    both(|kind| async move {
        let chain = Chain::new();
        let server = TestServer::start(kind, &chain.config(json!({}))).await;
        let user = KeyPair::new_user();
        let good = user_jwt(&chain.a, &chain.a, &user, json!({}), None);
        // The right JWT and signature work: the baseline the refusals differ from.
        let mut ok = raw_jwt_login(&server, &good, Some(&user), "good").await;
        assert!(exchange(&mut ok, b"").await.is_empty(), "[{kind}]");

        let stranger_account = KeyPair::new_account();
        let other_src = user_jwt(
            &chain.a,
            &chain.a,
            &user,
            json!({"src": ["10.99.0.0/16"]}),
            None,
        );
        let expired = user_jwt(&chain.a, &chain.a, &user, json!({}), Some(now() - 2));
        let revoked = user_jwt(&chain.a, &chain.a, &chain.revoked, json!({}), None);
        let foreign = user_jwt(&stranger_account, &stranger_account, &user, json!({}), None);
        let wrong_signer = KeyPair::new_user();
        let cases: [(&str, &str, Option<&KeyPair>); 6] = [
            ("wrong signature", &good, Some(&wrong_signer)),
            ("no signature", &good, None),
            ("expired user JWT", &expired, Some(&user)),
            ("revoked user", &revoked, Some(&chain.revoked)),
            ("outside its allowed networks", &other_src, Some(&user)),
            ("account not known", &foreign, Some(&user)),
        ];
        for (what, jwt, signer) in cases {
            let mut c = raw_jwt_login(&server, jwt, signer, what).await;
            c.send(b"PING\r\n").await;
            expect_error_and_close(&mut c, VIOLATION, WAIT).await;
        }
        // No JWT at all.
        let mut c = RawClient::connect(server.addr()).await;
        c.read_info().await;
        c.send(b"CONNECT {\"verbose\":false}\r\nPING\r\n").await;
        expect_error_and_close(&mut c, VIOLATION, WAIT).await;

        // A bearer token needs no signature.
        let bearer = user_jwt(
            &chain.a,
            &chain.a,
            &user,
            json!({"bearer_token": true}),
            None,
        );
        let mut c = raw_jwt_login(&server, &bearer, None, "bearer").await;
        assert!(exchange(&mut c, b"").await.is_empty(), "[{kind}]");
    })
    .await;
}

#[tokio::test]
async fn user_jwt_permissions_and_limits_apply() {
    both(|kind| async move {
        let chain = Chain::new();
        let server = TestServer::start(kind, &chain.config(json!({}))).await;
        let user = KeyPair::new_user();
        let jwt = user_jwt(
            &chain.a,
            &chain.a,
            &user,
            json!({"pub": {"allow": ["a.>"]}, "sub": {"allow": ["a.>"]}, "subs": 1, "payload": 4,
                   "src": ["127.0.0.0/8"]}),
            None,
        );
        let mut c = raw_jwt_login(&server, &jwt, Some(&user), "limited").await;
        assert_eq!(
            exchange(
                &mut c,
                b"SUB a.x 1\r\nSUB a.y 2\r\nSUB b 3\r\nPUB a.x 2\r\nhi\r\nPUB b 1\r\nx\r\n"
            )
            .await,
            [
                "-ERR 'maximum subscriptions exceeded'\r\n",
                // Permissions are checked before the limit, as nats-server does.
                "-ERR 'Permissions Violation for Subscription to \"b\"'\r\n",
                "MSG a.x 1 2\r\nhi\r\n",
                "-ERR 'Permissions Violation for Publish to \"b\"'\r\n",
            ],
            "[{kind}]"
        );
        c.send(b"PUB a.x 5\r\nhello\r\n").await;
        expect_error_and_close(&mut c, "-ERR 'Maximum Payload Violation'\r\n", WAIT).await;
    })
    .await;
}

/// A user signed by a scoped signing key gets the key's template; its own JWT may set no
/// permissions or limits.
#[tokio::test]
async fn scoped_signing_keys_impose_their_template() {
    both(|kind| async move {
        let chain = Chain::new();
        let server = TestServer::start(kind, &chain.config(json!({}))).await;
        let user = KeyPair::new_user();
        let bare = encode(
            &chain.a_scoped,
            &user.public_key(),
            now() - 5,
            json!({"name": "edge", "nats": {"type": "user", "version": 2,
                "issuer_account": chain.a.public_key()}}),
        );
        let mut c = raw_jwt_login(&server, &bare, Some(&user), "scoped").await;
        assert_eq!(
            exchange(&mut c, b"SUB s.x 1\r\nPUB s.x 1\r\na\r\nPUB t 1\r\nb\r\n").await,
            [
                "MSG s.x 1 1\r\na\r\n",
                "-ERR 'Permissions Violation for Publish to \"t\"'\r\n"
            ],
            "[{kind}]"
        );
        // With limits of its own (user_jwt sets subs/data/payload), it is refused.
        let own = user_jwt(&chain.a_scoped, &chain.a, &user, json!({}), None);
        let mut c = raw_jwt_login(&server, &own, Some(&user), "scoped with limits").await;
        c.send(b"PING\r\n").await;
        expect_error_and_close(&mut c, VIOLATION, WAIT).await;
    })
    .await;
}

/// Limits an account JWT leaves out are 0, and 0 allows nothing (only -1 is unlimited):
/// nats-server refuses every connection of such an account, closes a user of an account
/// that allows connections but no subscriptions, and refuses users of an account whose
/// exports exceed its limits.
#[tokio::test]
async fn zero_limits_in_an_account_jwt_allow_nothing() {
    both(|kind| async move {
        // (With both `conn` and `subs` at 0, nats-server sends both errors, in either order.)
        let open = json!({"imports": -1, "exports": -1, "wildcards": true});
        let with = |k: &str, v: i64| {
            let mut l = open.clone();
            l[k] = v.into();
            l
        };
        for (limits, error) in [
            (
                with("subs", -1),
                "-ERR 'maximum account active connections exceeded'\r\n",
            ),
            (
                with("conn", -1),
                "-ERR 'maximum subscriptions exceeded'\r\n",
            ),
            // A has a wildcard export: without `wildcards` (and with 0 exports allowed) the
            // account JWT is not valid, and its users are refused.
            (json!({"conn": -1, "subs": -1}), VIOLATION),
        ] {
            let chain = Chain::new();
            let server = TestServer::start(kind, &chain.config(json!({"limits": limits}))).await;
            let user = KeyPair::new_user();
            let jwt = user_jwt(&chain.a, &chain.a, &user, json!({}), None);
            let mut c = raw_jwt_login(&server, &jwt, Some(&user), "zero limits").await;
            expect_error_and_close(&mut c, error, WAIT).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_user_whose_jwt_expires_is_disconnected() {
    both(|kind| async move {
        let chain = Chain::new();
        let server = TestServer::start(kind, &chain.config(json!({}))).await;
        let user = KeyPair::new_user();
        let jwt = user_jwt(&chain.a, &chain.a, &user, json!({}), Some(now() + 2));
        let mut c = raw_jwt_login(&server, &jwt, Some(&user), "expiring").await;
        assert!(exchange(&mut c, b"").await.is_empty(), "[{kind}]");
        expect_error_and_close(&mut c, "-ERR 'User Authentication Expired'\r\n", WAIT).await;
    })
    .await;
}

/// A reload re-reads `resolver_preload`: a user revoked in the new account JWT is closed
/// with nats-server's revocation error, others stay.
#[tokio::test]
async fn reload_with_a_revocation_closes_the_revoked_user() {
    both(reload_revocation).await;
}

async fn reload_revocation(kind: ServerKind) {
    let chain = Chain::new();
    let server = TestServer::start(kind, &chain.config(json!({}))).await;
    let (u1, u2) = (KeyPair::new_user(), KeyPair::new_user());
    let j1 = user_jwt(&chain.a, &chain.a, &u1, json!({}), None);
    let j2 = user_jwt(&chain.a, &chain.a, &u2, json!({}), None);
    let mut c1 = raw_jwt_login(&server, &j1, Some(&u1), "to revoke").await;
    let mut c2 = raw_jwt_login(&server, &j2, Some(&u2), "stays").await;
    assert!(exchange(&mut c1, b"").await.is_empty());
    assert!(exchange(&mut c2, b"").await.is_empty());
    let revocations = json!({"revocations": {u1.public_key(): now(), chain.revoked.public_key(): chain.revoked_iat}});
    std::fs::write(server.config_path(), chain.config(revocations)).expect("rewrite config");
    let status = std::process::Command::new(kind.binary())
        .arg("--signal")
        .arg(format!("reload={}", server.pid()))
        .status()
        .expect("signal");
    assert!(status.success());
    expect_error_and_close(&mut c1, "-ERR 'User Authentication Revoked'\r\n", WAIT).await;
    assert!(exchange(&mut c2, b"").await.is_empty());
    // And it cannot come back.
    let mut again = raw_jwt_login(&server, &j1, Some(&u1), "revoked again").await;
    again.send(b"PING\r\n").await;
    expect_error_and_close(&mut again, VIOLATION, WAIT).await;
}

/// A server with a directory resolver holding the system account and A, a system user's
/// client, and a connected user of A.
struct ResolverSetup {
    dir: std::path::PathBuf,
    server: TestServer,
    sys: async_nats::Client,
    a_client: RawClient,
    ua: KeyPair,
}

async fn resolver_setup(
    kind: ServerKind,
    chain: &Chain,
    tag: &str,
    resolver_extra: &str,
) -> ResolverSetup {
    let dir = chain.dir.path().join(format!("jwt{tag}-{kind}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (key, jwt) in [
        (&chain.sys, account_jwt(&chain.op, &chain.sys, json!({}))),
        (&chain.a, account_jwt(&chain.op, &chain.a, json!({}))),
    ] {
        std::fs::write(dir.join(format!("{}.jwt", key.public_key())), jwt).expect("write");
    }
    let conf = format!(
        "operator: \"{}\"\nsystem_account: {}\nresolver: {{\n  type: full\n  dir: \"{}\"\n{resolver_extra}}}\n",
        chain.dir.path().join("op.jwt").display(),
        chain.sys.public_key(),
        dir.display()
    );
    let server = TestServer::start(kind, &conf).await;
    let admin = KeyPair::new_user();
    let admin_path = chain.creds_file(
        &format!("admin{tag}-{kind}"),
        &user_jwt(&chain.sys, &chain.sys, &admin, json!({}), None),
        &admin,
    );
    let sys = creds_client(&server, &admin_path).await;
    let ua = KeyPair::new_user();
    let ua_jwt = user_jwt(&chain.a, &chain.a, &ua, json!({}), None);
    let mut a_client = raw_jwt_login(&server, &ua_jwt, Some(&ua), "user of A").await;
    assert!(exchange(&mut a_client, b"").await.is_empty(), "[{kind}]");
    ResolverSetup {
        dir,
        server,
        sys,
        a_client,
        ua,
    }
}

/// The directory resolver: accounts are files in its `dir`; the system account pushes new
/// and changed account JWTs on `$SYS.REQ.ACCOUNT.<key>.CLAIMS.UPDATE` (or
/// `$SYS.REQ.CLAIMS.UPDATE`), and `.CLAIMS.LOOKUP` answers with the stored JWT.
#[tokio::test]
async fn pushed_account_claims_add_accounts_and_revoke_users() {
    both(|kind| async move {
        let chain = Chain::new();
        let ResolverSetup {
            dir,
            server,
            sys,
            mut a_client,
            ua,
        } = resolver_setup(kind, &chain, "", "").await;

        // An account the server does not know yet: its users are refused until it is pushed.
        let c = KeyPair::new_account();
        let uc = KeyPair::new_user();
        let uc_jwt = user_jwt(&c, &c, &uc, json!({}), None);
        let mut refused = raw_jwt_login(&server, &uc_jwt, Some(&uc), "C before push").await;
        refused.send(b"PING\r\n").await;
        expect_error_and_close(&mut refused, VIOLATION, WAIT).await;

        let c_jwt = account_jwt(&chain.op, &c, json!({}));
        let reply = request(
            &sys,
            &format!("$SYS.REQ.ACCOUNT.{}.CLAIMS.UPDATE", c.public_key()),
            &c_jwt,
        )
        .await;
        assert_eq!(reply["data"]["code"], 200, "[{kind}] {reply}");
        assert_eq!(
            reply["data"]["account"],
            c.public_key().as_str(),
            "[{kind}] {reply}"
        );
        let mut welcome = raw_jwt_login(&server, &uc_jwt, Some(&uc), "C after push").await;
        assert!(exchange(&mut welcome, b"").await.is_empty(), "[{kind}]");
        let looked_up = sys
            .request(
                format!("$SYS.REQ.ACCOUNT.{}.CLAIMS.LOOKUP", c.public_key()),
                "".into(),
            )
            .await
            .expect("lookup");
        assert_eq!(
            String::from_utf8_lossy(&looked_up.payload),
            c_jwt,
            "[{kind}]"
        );
        assert!(
            dir.join(format!("{}.jwt", c.public_key())).exists(),
            "[{kind}] stored"
        );
        let listed = request(&sys, "$SYS.REQ.CLAIMS.LIST", "").await;
        let mut keys: Vec<&str> = listed["data"]
            .as_array()
            .unwrap_or_else(|| panic!("[{kind}] {listed}"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        keys.sort_unstable();
        let mut expected = [chain.sys.public_key(), chain.a.public_key(), c.public_key()];
        expected.sort();
        assert_eq!(
            keys,
            expected.iter().map(String::as_str).collect::<Vec<_>>(),
            "[{kind}] {listed}"
        );

        // A new version of A revokes its connected user.
        let a_v2 = account_jwt_at(
            &chain.op,
            &chain.a,
            json!({"revocations": {ua.public_key(): now()}}),
            now(),
        );
        let reply = request(&sys, "$SYS.REQ.CLAIMS.UPDATE", &a_v2).await;
        assert_eq!(reply["data"]["code"], 200, "[{kind}] {reply}");
        expect_error_and_close(
            &mut a_client,
            "-ERR 'User Authentication Revoked'\r\n",
            WAIT,
        )
        .await;

        // A JWT from an operator the server does not trust gives its users nothing. midge
        // refuses to store it; nats-server 2.9.10 stores it ("jwt updated") and then
        // refuses its users all the same.
        let stranger = KeyPair::new_operator();
        let bogus_account = KeyPair::new_account();
        let bogus = account_jwt(&stranger, &bogus_account, json!({}));
        let reply = request(&sys, "$SYS.REQ.CLAIMS.UPDATE", &bogus).await;
        if kind == ServerKind::Midge {
            assert_eq!(reply["error"]["code"], 500, "[{kind}] {reply}");
            assert!(reply.get("data").is_none(), "[{kind}] {reply}");
        }
        let ub = KeyPair::new_user();
        let ub_jwt = user_jwt(&bogus_account, &bogus_account, &ub, json!({}), None);
        let mut c = raw_jwt_login(&server, &ub_jwt, Some(&ub), "untrusted account").await;
        c.send(b"PING\r\n").await;
        expect_error_and_close(&mut c, VIOLATION, WAIT).await;
    })
    .await;
}

/// A generic JWT an operator key signs for itself, asking to delete `accounts`.
fn delete_request(op: &KeyPair, accounts: &[String]) -> String {
    encode(
        op,
        &op.public_key(),
        now(),
        json!({"nats": {"accounts": accounts, "type": "generic", "version": 2}}),
    )
}

/// Reads until the server closes the connection (within [`WAIT`]); the `-ERR` lines it sent.
async fn errors_until_closed(client: &mut RawClient) -> Vec<String> {
    let until = Instant::now() + WAIT;
    let mut errors = Vec::new();
    loop {
        match client
            .read_frame(until.saturating_duration_since(Instant::now()))
            .await
        {
            FrameRead::Closed => return errors,
            FrameRead::Frame(f) if f.starts_with(b"-ERR") => {
                errors.push(String::from_utf8_lossy(&f).into_owned());
            }
            FrameRead::Frame(_) => {}
            FrameRead::TimedOut => panic!("still open after {WAIT:?} (errors: {errors:?})"),
        }
    }
}

/// `$SYS.REQ.CLAIMS.DELETE` on a directory resolver with `allow_delete`: only a request an
/// operator key signed for itself is obeyed, never for the system account; the JWT is
/// renamed `<key>.jwt.deleted`, and the account's connected users are disconnected.
#[tokio::test]
async fn deleted_account_claims_disconnect_the_accounts_users() {
    both(|kind| async move {
        let chain = Chain::new();
        let ResolverSetup {
            dir,
            server: _server,
            sys,
            mut a_client,
            ..
        } = resolver_setup(kind, &chain, "-del", "  allow_delete: true\n").await;
        let a_key = chain.a.public_key();

        // Signed by an operator the server does not trust: refused.
        let stranger = KeyPair::new_operator();
        let reply = request(
            &sys,
            "$SYS.REQ.CLAIMS.DELETE",
            &delete_request(&stranger, std::slice::from_ref(&a_key)),
        )
        .await;
        assert_eq!(reply["error"]["code"], 500, "[{kind}] {reply}");
        assert!(
            reply["error"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("not trusted")),
            "[{kind}] {reply}"
        );
        // The system account cannot go.
        let reply = request(
            &sys,
            "$SYS.REQ.CLAIMS.DELETE",
            &delete_request(&chain.op, &[chain.sys.public_key()]),
        )
        .await;
        assert!(
            reply["error"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("not allowed to delete system account")),
            "[{kind}] {reply}"
        );
        assert!(dir.join(format!("{a_key}.jwt")).exists(), "[{kind}] kept");

        let reply = request(
            &sys,
            "$SYS.REQ.CLAIMS.DELETE",
            &delete_request(&chain.op, std::slice::from_ref(&a_key)),
        )
        .await;
        assert_eq!(reply["data"]["code"], 200, "[{kind}] {reply}");
        assert_eq!(
            reply["data"]["message"], "deleted 1 accounts",
            "[{kind}] {reply}"
        );
        assert!(!dir.join(format!("{a_key}.jwt")).exists(), "[{kind}] gone");
        assert!(
            dir.join(format!("{a_key}.jwt.deleted")).exists(),
            "[{kind}] renamed, not removed"
        );
        let listed = request(&sys, "$SYS.REQ.CLAIMS.LIST", "").await;
        assert_eq!(
            listed["data"],
            json!([chain.sys.public_key()]),
            "[{kind}] {listed}"
        );
        // Its user is disconnected.
        let errors = errors_until_closed(&mut a_client).await;
        assert!(errors.len() <= 1, "[{kind}] {errors:?}");
    })
    .await;
}

async fn request(c: &async_nats::Client, subject: &str, body: &str) -> Value {
    let msg = tokio::time::timeout(
        WAIT,
        c.request(subject.to_string(), body.to_string().into()),
    )
    .await
    .unwrap_or_else(|_| panic!("{subject}: no answer"))
    .unwrap_or_else(|e| panic!("{subject}: {e}"));
    serde_json::from_slice(&msg.payload).unwrap_or_else(|e| panic!("{subject}: {e}"))
}

/// `allowed_connection_types`: a user allowed only `STANDARD` logs in over TCP and not over
/// WebSocket, one allowed only `WEBSOCKET` the other way round.
#[tokio::test]
async fn connection_types_tell_tcp_from_websocket() {
    both(|kind| async move {
        let chain = Chain::new();
        let ws_port = midge_tests::free_port();
        let conf = format!(
            "{}websocket {{\n  port: {ws_port}\n  host: 127.0.0.1\n  no_tls: true\n}}\n",
            chain.config(json!({}))
        );
        let server = TestServer::start(kind, &conf).await;
        let ws_url = format!("ws://127.0.0.1:{ws_port}");
        for (types, tcp_ok, ws_ok) in [(["STANDARD"], true, false), (["WEBSOCKET"], false, true)] {
            let user = KeyPair::new_user();
            let jwt = user_jwt(
                &chain.a,
                &chain.a,
                &user,
                json!({"allowed_connection_types": types}),
                None,
            );
            let path = chain.creds_file(&format!("{kind}-{}", types[0]), &jwt, &user);
            for (url, ok) in [(server.url(), tcp_ok), (ws_url.clone(), ws_ok)] {
                let result = tokio::time::timeout(
                    WAIT,
                    async_nats::ConnectOptions::with_credentials_file(&path)
                        .await
                        .expect("creds")
                        .connect(url.as_str()),
                )
                .await
                .expect("connect finishes in time");
                match result {
                    Ok(_) => assert!(ok, "[{kind}] {types:?} logged in on {url}"),
                    Err(e) => {
                        assert!(!ok, "[{kind}] {types:?} refused on {url}: {e}");
                        assert!(
                            e.to_string().to_lowercase().contains("authorization"),
                            "[{kind}] {e}"
                        );
                    }
                }
            }
        }
    })
    .await;
}
