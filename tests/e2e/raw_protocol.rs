//! Byte-exact client protocol: every core op and every error, as nats-server sends them.
//!
//! Each scenario runs against every server kind (see `midge_tests::kinds`) and, where the
//! input can be split, with the input written whole and one byte at a time, so the parser is
//! exercised at every state boundary. Expected bytes were taken from nats-server 2.9.10
//! itself; where that differs from docs/nats-protocol.md the test follows the server and
//! says so in a comment.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use midge_tests::{both, connect, matrix, Feed, FrameRead, RawClient, ServerKind, TestServer};

const QUIET_CONNECT: &str = r#"{"verbose":false}"#;
const HEADERS_CONNECT: &str = r#"{"verbose":false,"headers":true}"#;

/// A client past INFO + CONNECT + PING/PONG.
async fn ready(server: &TestServer, feed: Feed, connect_json: &str) -> RawClient {
    let mut client = connect(server, feed).await;
    client.handshake(connect_json).await;
    client
}

/// Sends PING and returns every frame received before the PONG.
async fn frames_before_pong(client: &mut RawClient) -> Vec<Vec<u8>> {
    client.send(b"PING\r\n").await;
    let mut frames = Vec::new();
    loop {
        match client.read_frame(midge_tests::DEADLINE).await {
            FrameRead::Frame(frame) if frame == b"PONG\r\n" => return frames,
            FrameRead::Frame(frame) => frames.push(frame),
            other => panic!("waiting for PONG: {other:?} after {frames:?}"),
        }
    }
}

/// Sends `input` on a fresh connection and asserts `-ERR '<error>'` followed by a close.
async fn expect_fatal(server: &TestServer, feed: Feed, input: &[u8], error: &str) {
    let mut client = connect(server, feed).await;
    client.read_info().await;
    client.send_until_closed(input).await;
    client
        .expect(format!("-ERR '{error}'\r\n").as_bytes())
        .await;
    client.expect_closed().await;
}

#[tokio::test]
async fn info_on_accept_has_the_reference_keys_and_types() {
    both(|kind| async move {
        let server = TestServer::start(kind, "").await;
        let mut client = connect(&server, Feed::Whole).await;
        let info = client.read_info().await;
        let keys: BTreeSet<&str> = info
            .as_object()
            .expect("INFO is a JSON object")
            .keys()
            .map(String::as_str)
            .collect();
        // nats-server omits false/empty fields (auth_required, tls_*, connect_urls, ldm...).
        let expected: BTreeSet<&str> = [
            "server_id",
            "server_name",
            "version",
            "proto",
            "go",
            "host",
            "port",
            "headers",
            "max_payload",
            "client_id",
            "client_ip",
        ]
        .into();
        assert_eq!(keys, expected, "INFO keys: {info}");
        for key in [
            "server_id",
            "server_name",
            "version",
            "go",
            "host",
            "client_ip",
        ] {
            assert!(info[key].is_string(), "{key} is a string: {info}");
        }
        assert_eq!(
            info["server_name"], info["server_id"],
            "name defaults to id"
        );
        let version: Vec<u64> = info["version"]
            .as_str()
            .unwrap_or_default()
            .split('.')
            .map(|part| part.parse().expect("numeric version part"))
            .collect();
        assert!(version.len() == 3 && version[0] == 2, "version {version:?}");
        assert_eq!(info["proto"], 1);
        assert_eq!(info["headers"], true);
        assert_eq!(info["max_payload"], 1_048_576);
        assert_eq!(info["host"], "127.0.0.1");
        assert_eq!(info["port"], server.port());
        assert_eq!(info["client_ip"], "127.0.0.1");
        let first_id = info["client_id"].as_u64().expect("client_id is a number");

        let mut second = connect(&server, Feed::Whole).await;
        let second_id = second.read_info().await["client_id"]
            .as_u64()
            .expect("client_id is a number");
        assert!(second_id > first_id, "client ids increase");
    })
    .await;
}

#[tokio::test]
async fn info_advertises_auth_required_and_configured_limits() {
    both(|kind| async move {
        let server =
            TestServer::start(kind, "authorization { token: s3cret }\nmax_payload: 2048\n").await;
        let mut client = connect(&server, Feed::Whole).await;
        let info = client.read_info().await;
        assert_eq!(info["auth_required"], true, "{info}");
        assert_eq!(info["max_payload"], 2048, "{info}");
    })
    .await;
}

#[tokio::test]
async fn connect_is_acknowledged_when_verbose() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        for connect_json in [r#"{"verbose":true}"#, "{}"] {
            let mut client = connect(&server, feed).await;
            client.read_info().await;
            client
                .send(format!("CONNECT {connect_json}\r\nPING\r\n").as_bytes())
                .await;
            client.expect(b"+OK\r\nPONG\r\n").await;
        }
        let mut client = connect(&server, feed).await;
        client.read_info().await;
        client
            .send(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
            .await;
        client.expect(b"PONG\r\n").await;
    })
    .await;
}

#[tokio::test]
async fn connect_accepts_client_fields_unknown_fields_and_lower_case() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        for line in [
            r#"CONNECT {"verbose":false,"pedantic":false,"tls_required":false,"name":"n","lang":"rust","version":"1.2.3","protocol":1,"echo":true,"headers":true,"no_responders":true}"#,
            r#"CONNECT {"verbose":false,"protocol":0}"#,
            r#"CONNECT {"verbose":false,"some_future_field":[1,2]}"#,
            r#"connect {"verbose":false}"#,
            "CONNECT\t{\"verbose\":false}",
        ] {
            let mut client = connect(&server, feed).await;
            client.read_info().await;
            client.send(format!("{line}\r\nPING\r\n").as_bytes()).await;
            client.expect(b"PONG\r\n").await;
        }
        // A second CONNECT on the same connection is accepted too.
        let mut client = ready(&server, feed, QUIET_CONNECT).await;
        client.send(b"CONNECT {\"verbose\":false}\r\n").await;
        client.ping_pong().await;
    })
    .await;
}

#[tokio::test]
async fn ops_before_connect_use_default_options_when_no_auth() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut client = connect(&server, feed).await;
        client.read_info().await;
        // Without CONNECT the defaults apply, and verbose defaults to true.
        client
            .send(b"SUB foo 1\r\nPUB foo 2\r\nhi\r\nPING\r\n")
            .await;
        client
            .expect(b"+OK\r\n+OK\r\nMSG foo 1 2\r\nhi\r\nPONG\r\n")
            .await;
    })
    .await;
}

#[tokio::test]
async fn ping_is_answered_with_pong_whatever_follows_it() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut client = ready(&server, feed, QUIET_CONNECT).await;
        client
            .send(b"PING\r\nping\r\nPiNg\r\nPING\nPING foo bar\r\n")
            .await;
        client
            .expect(b"PONG\r\nPONG\r\nPONG\r\nPONG\r\nPONG\r\n")
            .await;
        // PONG, INFO and +OK from a client are ignored.
        client.send(b"PONG\r\nPONG xyz\r\nINFO {}\r\n+OK\r\n").await;
        client.ping_pong().await;
        client.expect_nothing().await;
    })
    .await;
}

#[tokio::test]
async fn pub_sub_msg_without_and_with_reply() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut client = ready(&server, feed, QUIET_CONNECT).await;
        client.send(b"SUB foo 1\r\n").await;
        client.send(b"PUB foo 5\r\nhello\r\n").await;
        client.expect(b"MSG foo 1 5\r\nhello\r\n").await;
        client.send(b"PUB foo bar.reply 5\r\nhello\r\n").await;
        client.expect(b"MSG foo 1 bar.reply 5\r\nhello\r\n").await;
        client.send(b"PUB foo 0\r\n\r\n").await;
        client.expect(b"MSG foo 1 0\r\n\r\n").await;
        // The payload is opaque: CRLF inside it is data.
        client.send(b"PUB foo 6\r\na\r\nb\r\n\r\n").await;
        client.expect(b"MSG foo 1 6\r\na\r\nb\r\n\r\n").await;
        client.send(b"PUB other 1\r\nx\r\n").await;
        client.ping_pong().await;
    })
    .await;
}

#[tokio::test]
async fn pub_sub_across_connections() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut subscriber = ready(&server, feed, QUIET_CONNECT).await;
        let mut publisher = ready(&server, feed, QUIET_CONNECT).await;
        subscriber.send(b"SUB greet.* 42\r\n").await;
        subscriber.ping_pong().await;
        publisher
            .send(b"PUB greet.joe _INBOX.abc 2\r\nhi\r\n")
            .await;
        publisher.ping_pong().await;
        subscriber
            .expect(b"MSG greet.joe 42 _INBOX.abc 2\r\nhi\r\n")
            .await;
        publisher.expect_nothing().await;
    })
    .await;
}

#[tokio::test]
async fn separators_may_be_runs_of_spaces_and_tabs_and_lines_may_end_in_lf() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut client = ready(&server, feed, QUIET_CONNECT).await;
        client
            .send(b"SUB\tfoo \t 1\r\nPUB\t foo  r\t 1 \r\nx\r\nSUB bar 2\nPUB bar 1\nx\r\nPING\n")
            .await;
        client
            .expect(b"MSG foo 1 r 1\r\nx\r\nMSG bar 2 1\r\nx\r\nPONG\r\n")
            .await;
    })
    .await;
}

#[tokio::test]
async fn hpub_delivers_hmsg_to_header_subscribers() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut client = ready(&server, feed, HEADERS_CONNECT).await;
        client.send(b"SUB foo 1\r\n").await;
        client
            .send(b"HPUB foo 24 26\r\nNATS/1.0\r\nA: B\r\nC: D\r\n\r\nhi\r\n")
            .await;
        client
            .expect(b"HMSG foo 1 24 26\r\nNATS/1.0\r\nA: B\r\nC: D\r\n\r\nhi\r\n")
            .await;
        client
            .send(b"HPUB foo reply 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")
            .await;
        client
            .expect(b"HMSG foo 1 reply 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")
            .await;
        client
            .send(b"HPUB foo 23 23\r\nNATS/1.0 503 No One\r\n\r\n\r\n")
            .await;
        client
            .expect(b"HMSG foo 1 23 23\r\nNATS/1.0 503 No One\r\n\r\n\r\n")
            .await;
        // The header block is opaque to the server.
        client.send(b"HPUB foo 2 4\r\nxxyy\r\n").await;
        client.expect(b"HMSG foo 1 2 4\r\nxxyy\r\n").await;
        // A plain PUB reaches a header subscriber as MSG.
        client.send(b"PUB foo 2\r\nhi\r\n").await;
        client.expect(b"MSG foo 1 2\r\nhi\r\n").await;
        client.ping_pong().await;
    })
    .await;
}

#[tokio::test]
async fn headers_are_stripped_for_subscribers_without_headers_support() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut subscriber = ready(&server, feed, QUIET_CONNECT).await;
        let mut publisher = ready(&server, feed, HEADERS_CONNECT).await;
        subscriber.send(b"SUB foo 1\r\n").await;
        subscriber.ping_pong().await;
        publisher
            .send(b"HPUB foo 18 20\r\nNATS/1.0\r\nA: B\r\n\r\nhi\r\nHPUB foo r 18 20\r\nNATS/1.0\r\nA: B\r\n\r\nhi\r\nHPUB foo 18 18\r\nNATS/1.0\r\nA: B\r\n\r\n\r\n")
            .await;
        publisher.ping_pong().await;
        subscriber
            .expect(b"MSG foo 1 2\r\nhi\r\nMSG foo 1 r 2\r\nhi\r\nMSG foo 1 0\r\n\r\n")
            .await;
        subscriber.ping_pong().await;
    })
    .await;
}

#[tokio::test]
async fn hpub_without_headers_support_closes_without_error() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        for connect_json in [QUIET_CONNECT, r#"{"verbose":false,"headers":false}"#] {
            let mut client = ready(&server, feed, connect_json).await;
            client
                .send_until_closed(b"HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")
                .await;
            client.expect_closed().await;
        }
    })
    .await;
}

#[tokio::test]
async fn unsub_stops_delivery_and_unknown_sids_are_ignored() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut client = ready(&server, feed, QUIET_CONNECT).await;
        client
            .send(b"SUB foo 1\r\nSUB foo 2\r\nUNSUB 1\r\nUNSUB 99\r\nPUB foo 1\r\nx\r\nPING\r\n")
            .await;
        client.expect(b"MSG foo 2 1\r\nx\r\nPONG\r\n").await;
    })
    .await;
}

#[tokio::test]
async fn unsub_with_max_removes_after_the_max_th_delivery() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut client = ready(&server, feed, QUIET_CONNECT).await;
        client
            .send(b"SUB foo 1\r\nUNSUB 1 2\r\nPUB foo 1\r\na\r\nPUB foo 1\r\nb\r\nPUB foo 1\r\nc\r\nPING\r\n")
            .await;
        client
            .expect(b"MSG foo 1 1\r\na\r\nMSG foo 1 1\r\nb\r\nPONG\r\n")
            .await;
        // The sid is gone: subscribing it again works like a new subscription.
        client
            .send(b"SUB foo 1\r\nPUB foo 1\r\nd\r\nPING\r\n")
            .await;
        client.expect(b"MSG foo 1 1\r\nd\r\nPONG\r\n").await;
    })
    .await;
}

#[tokio::test]
async fn unsub_with_max_already_reached_removes_immediately() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut client = ready(&server, feed, QUIET_CONNECT).await;
        client
            .send(b"SUB foo 1\r\nPUB foo 1\r\na\r\nPUB foo 1\r\nb\r\nPING\r\n")
            .await;
        client
            .expect(b"MSG foo 1 1\r\na\r\nMSG foo 1 1\r\nb\r\nPONG\r\n")
            .await;
        client
            .send(b"UNSUB 1 2\r\nPUB foo 1\r\nc\r\nPING\r\n")
            .await;
        client.expect(b"PONG\r\n").await;
        client
            .send(b"SUB bar 2\r\nPUB bar 1\r\na\r\nPING\r\n")
            .await;
        client.expect(b"MSG bar 2 1\r\na\r\nPONG\r\n").await;
        client
            .send(b"UNSUB 2 1\r\nPUB bar 1\r\nb\r\nPING\r\n")
            .await;
        client.expect(b"PONG\r\n").await;
    })
    .await;
}

#[tokio::test]
async fn duplicate_sid_is_ignored() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut client = ready(&server, feed, QUIET_CONNECT).await;
        client
            .send(b"SUB a 1\r\nSUB b 1\r\nPUB a 1\r\nx\r\nPUB b 1\r\ny\r\nPING\r\n")
            .await;
        client.expect(b"MSG a 1 1\r\nx\r\nPONG\r\n").await;
        // nats-server looks the sid up before validating the subject: no -ERR here.
        client.send(b"SUB foo..bar 1\r\nPING\r\n").await;
        client.expect(b"PONG\r\n").await;
    })
    .await;
}

#[tokio::test]
async fn wildcards_match_one_token_and_the_tail() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut client = ready(&server, feed, QUIET_CONNECT).await;
        client
            .send(b"SUB a.* 1\r\nSUB a.> 2\r\nSUB > 3\r\nSUB *.b 4\r\nSUB a.b.c 5\r\nSUB a*b 6\r\nSUB A.b 7\r\n")
            .await;
        client.ping_pong().await;
        let cases: [(&[u8], &[&str]); 5] = [
            (b"a.b", &["1", "2", "3", "4"]),
            (b"a.b.c", &["2", "3", "5"]),
            (b"a", &["3"]),
            (b"a*b", &["3", "6"]),
            (b"x.b", &["3", "4"]),
        ];
        for (subject, sids) in cases {
            let mut publish = b"PUB ".to_vec();
            publish.extend_from_slice(subject);
            publish.extend_from_slice(b" 1\r\nx\r\n");
            client.send(&publish).await;
            let got: BTreeSet<Vec<u8>> = frames_before_pong(&mut client).await.into_iter().collect();
            let subject = String::from_utf8_lossy(subject);
            let want: BTreeSet<Vec<u8>> = sids
                .iter()
                .map(|sid| format!("MSG {subject} {sid} 1\r\nx\r\n").into_bytes())
                .collect();
            assert_eq!(got, want, "deliveries for {subject}");
        }
    })
    .await;
}

/// A burst of publishes in one write, as a streaming publisher sends them: runs of PUBs
/// to one subject (midge routes a run as one batch), broken by another subject, a reply,
/// headers, a SUB and a PING. Every subscriber gets exactly its messages, in order, with
/// its own sid: two connections sharing a sid, a wildcard with another sid, one with an
/// auto-unsubscribe limit that ends mid-run, a subscriber that joins mid-burst, and the
/// publisher's own subscription with echo off.
#[tokio::test]
async fn a_burst_of_publishes_reaches_each_subscriber_in_order() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut a = ready(&server, feed, HEADERS_CONNECT).await;
        let mut b = ready(&server, feed, QUIET_CONNECT).await;
        let mut wild = ready(&server, feed, QUIET_CONNECT).await;
        let mut limited = ready(&server, feed, QUIET_CONNECT).await;
        let mut late = ready(&server, feed, QUIET_CONNECT).await;
        let mut publisher = ready(
            &server,
            feed,
            r#"{"verbose":false,"headers":true,"echo":false}"#,
        )
        .await;
        a.send(b"SUB burst.x 1\r\n").await;
        b.send(b"SUB burst.x 1\r\n").await;
        wild.send(b"SUB burst.* 7\r\n").await;
        limited.send(b"SUB burst.x 1\r\nUNSUB 1 5\r\n").await;
        publisher.send(b"SUB burst.x 9\r\n").await;
        for c in [&mut a, &mut b, &mut wild, &mut limited, &mut publisher] {
            c.ping_pong().await;
        }
        let mut input = Vec::new();
        let mut x = Vec::new(); // what a subscriber of burst.x with sid 1 gets
        let mut other = Vec::new(); // burst.y, for the wildcard
        for i in 0..30 {
            input.extend_from_slice(
                format!("PUB burst.x {}\r\nm{i}\r\n", 1 + i.to_string().len()).as_bytes(),
            );
            x.push(format!(
                "MSG burst.x 1 {}\r\nm{i}\r\n",
                1 + i.to_string().len()
            ));
            if i == 9 {
                input.extend_from_slice(b"PUB burst.y 1\r\ny\r\n");
                other.push((x.len(), "MSG burst.y 7 1\r\ny\r\n".to_string()));
            }
            if i == 14 {
                input.extend_from_slice(b"PUB burst.x r.1 1\r\nr\r\n");
                x.push("MSG burst.x 1 r.1 1\r\nr\r\n".to_string());
            }
            if i == 19 {
                input.extend_from_slice(b"HPUB burst.x 12 13\r\nNATS/1.0\r\n\r\nh\r\n");
                x.push("HMSG burst.x 1 12 13\r\nNATS/1.0\r\n\r\nh\r\n".to_string());
            }
        }
        publisher.send_whole(&input).await;
        publisher.ping_pong().await;
        // The late subscriber subscribes, then a second burst follows.
        late.send(b"SUB burst.x 3\r\n").await;
        late.ping_pong().await;
        let mut second = Vec::new();
        for i in 0..20 {
            second.extend_from_slice(format!("PUB burst.x 2\r\nn{}\r\n", i % 10).as_bytes());
            x.push(format!("MSG burst.x 1 2\r\nn{}\r\n", i % 10));
        }
        publisher.send_whole(&second).await;
        publisher.ping_pong().await;

        let text = |frames: Vec<Vec<u8>>| -> Vec<String> {
            frames
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect()
        };
        // `a` negotiated headers and gets the HMSG; `b` gets it with the headers stripped.
        assert_eq!(text(frames_before_pong(&mut a).await), x, "a");
        let stripped: Vec<String> = x
            .iter()
            .map(|f| {
                if f.starts_with("HMSG") {
                    "MSG burst.x 1 1\r\nh\r\n".to_string()
                } else {
                    f.clone()
                }
            })
            .collect();
        assert_eq!(text(frames_before_pong(&mut b).await), stripped, "b");
        let mut wild_want: Vec<String> = stripped
            .iter()
            .map(|f| f.replacen("burst.x 1 ", "burst.x 7 ", 1))
            .collect();
        for (at, frame) in other.into_iter().rev() {
            wild_want.insert(at, frame);
        }
        assert_eq!(
            text(frames_before_pong(&mut wild).await),
            wild_want,
            "wildcard"
        );
        assert_eq!(
            text(frames_before_pong(&mut limited).await),
            stripped[..5].to_vec(),
            "limit 5"
        );
        let late_want: Vec<String> = stripped[stripped.len() - 20..]
            .iter()
            .map(|f| f.replacen("burst.x 1 ", "burst.x 3 ", 1))
            .collect();
        assert_eq!(text(frames_before_pong(&mut late).await), late_want, "late");
        assert!(
            frames_before_pong(&mut publisher).await.is_empty(),
            "echo off"
        );
    })
    .await;
}

#[tokio::test]
async fn queue_group_members_share_and_plain_subscribers_get_all() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut member1 = ready(&server, feed, QUIET_CONNECT).await;
        let mut member2 = ready(&server, feed, QUIET_CONNECT).await;
        let mut plain = ready(&server, feed, QUIET_CONNECT).await;
        let mut publisher = ready(&server, feed, QUIET_CONNECT).await;
        member1.send(b"SUB jobs workers 1\r\n").await;
        member2.send(b"SUB jobs workers 2\r\n").await;
        plain.send(b"SUB jobs 3\r\n").await;
        for client in [&mut member1, &mut member2, &mut plain] {
            client.ping_pong().await;
        }
        let count = 40;
        let mut input = Vec::new();
        for i in 0..count {
            input.extend_from_slice(format!("PUB jobs 2\r\n{i:02}\r\n").as_bytes());
        }
        publisher.send_whole(&input).await;
        publisher.ping_pong().await;

        let payloads = |frames: Vec<Vec<u8>>, sid: &str| -> Vec<String> {
            frames
                .iter()
                .map(|frame| {
                    let text = String::from_utf8_lossy(frame).into_owned();
                    let prefix = format!("MSG jobs {sid} 2\r\n");
                    text.strip_prefix(&prefix)
                        .and_then(|rest| rest.strip_suffix("\r\n"))
                        .unwrap_or_else(|| panic!("unexpected frame {text:?}"))
                        .to_owned()
                })
                .collect()
        };
        let got1 = payloads(frames_before_pong(&mut member1).await, "1");
        let got2 = payloads(frames_before_pong(&mut member2).await, "2");
        let got_plain = payloads(frames_before_pong(&mut plain).await, "3");
        let all: Vec<String> = (0..count).map(|i| format!("{i:02}")).collect();
        assert_eq!(
            got_plain, all,
            "the plain subscriber gets every message in order"
        );
        let mut shared: Vec<String> = got1.iter().chain(&got2).cloned().collect();
        shared.sort();
        assert_eq!(shared, all, "each message goes to exactly one member");
    })
    .await;
}

#[tokio::test]
async fn queue_group_on_one_connection_delivers_once() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut client = ready(&server, feed, QUIET_CONNECT).await;
        client
            .send(b"SUB q g 1\r\nSUB q g 2\r\nSUB q 3\r\nPUB q 1\r\nx\r\n")
            .await;
        let frames = frames_before_pong(&mut client).await;
        assert_eq!(frames.len(), 2, "{frames:?}");
        assert!(
            frames.contains(&b"MSG q 3 1\r\nx\r\n".to_vec()),
            "{frames:?}"
        );
        assert!(
            frames.contains(&b"MSG q 1 1\r\nx\r\n".to_vec())
                || frames.contains(&b"MSG q 2 1\r\nx\r\n".to_vec()),
            "{frames:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn echo_false_skips_own_subscriptions_only() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut other = ready(&server, feed, QUIET_CONNECT).await;
        let mut client = ready(&server, feed, r#"{"verbose":false,"echo":false}"#).await;
        other.send(b"SUB foo 7\r\n").await;
        other.ping_pong().await;
        client
            .send(b"SUB foo 1\r\nPUB foo 1\r\nx\r\nPING\r\n")
            .await;
        client.expect(b"PONG\r\n").await;
        other.expect(b"MSG foo 7 1\r\nx\r\n").await;
        other.send(b"PUB foo 1\r\ny\r\n").await;
        other.expect(b"MSG foo 7 1\r\ny\r\n").await;
        other.ping_pong().await;
        client.expect(b"MSG foo 1 1\r\ny\r\n").await;
    })
    .await;
}

#[tokio::test]
async fn verbose_acknowledges_every_accepted_op() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut client = connect(&server, feed).await;
        client.read_info().await;
        client
            .send(b"CONNECT {\"verbose\":true,\"headers\":true}\r\nPING\r\n")
            .await;
        client.expect(b"+OK\r\nPONG\r\n").await;
        client.send(b"SUB foo 1\r\n").await;
        client.expect(b"+OK\r\n").await;
        client.send(b"PUB foo 2\r\nhi\r\n").await;
        client.expect(b"+OK\r\nMSG foo 1 2\r\nhi\r\n").await;
        client
            .send(b"HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")
            .await;
        client
            .expect(b"+OK\r\nHMSG foo 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")
            .await;
        client.send(b"UNSUB 1\r\nUNSUB 99 5\r\n").await;
        client.expect(b"+OK\r\n+OK\r\n").await;
        // A duplicate sid is acknowledged although ignored.
        client.send(b"SUB a 2\r\nSUB b 2\r\n").await;
        client.expect(b"+OK\r\n+OK\r\n").await;
        // PING, PONG, INFO and +OK from the client get no +OK.
        client.send(b"PONG\r\nINFO {}\r\n+OK\r\nPING\r\n").await;
        client.expect(b"PONG\r\n").await;
        // An op answered with -ERR gets no +OK.
        client.send(b"SUB foo..bar 3\r\nPING\r\n").await;
        client.expect(b"-ERR 'Invalid Subject'\r\nPONG\r\n").await;
    })
    .await;
}

/// Expects `-ERR 'Invalid Publish Subject'`. nats-server 2.9.10 parses the PUB line a
/// second time when the payload arrives in a later read (clonePubArg) and then sends the
/// error twice; only the reference is allowed that duplicate.
async fn expect_invalid_publish_subject(client: &mut RawClient, kind: ServerKind) {
    const ERR: &[u8] = b"-ERR 'Invalid Publish Subject'\r\n";
    client.expect(ERR).await;
    if kind == ServerKind::NatsServer {
        client.skip_if_next(ERR).await;
    }
}

#[tokio::test]
async fn pedantic_flags_invalid_publish_subjects_but_still_delivers() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut client = ready(&server, feed, r#"{"verbose":false,"pedantic":true}"#).await;
        client
            .send(b"SUB foo.* 1\r\nPUB foo.* 1\r\nx\r\nPUB foo..bar 1\r\ny\r\nPING\r\n")
            .await;
        expect_invalid_publish_subject(&mut client, kind).await;
        client.expect(b"MSG foo.* 1 1\r\nx\r\n").await;
        expect_invalid_publish_subject(&mut client, kind).await;
        client.expect(b"PONG\r\n").await;

        // Omitted pedantic means true, as nats-server's client defaults.
        let mut default = ready(&server, feed, QUIET_CONNECT).await;
        default.send(b"PUB foo.> 1\r\nx\r\nPING\r\n").await;
        expect_invalid_publish_subject(&mut default, kind).await;
        default.expect(b"PONG\r\n").await;

        // With verbose the PUB is still acknowledged, after the -ERR.
        let mut verbose = ready(&server, feed, r#"{"verbose":true,"pedantic":true}"#).await;
        verbose.send(b"PUB foo.* 1\r\nx\r\nPING\r\n").await;
        expect_invalid_publish_subject(&mut verbose, kind).await;
        verbose.expect(b"+OK\r\nPONG\r\n").await;
    })
    .await;
}

#[tokio::test]
async fn non_pedantic_publishes_to_wildcard_subjects_silently() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut client = ready(&server, feed, r#"{"verbose":false,"pedantic":false}"#).await;
        client
            .send(b"SUB foo.* 1\r\nPUB foo.* 1\r\nx\r\nPING\r\n")
            .await;
        client.expect(b"MSG foo.* 1 1\r\nx\r\nPONG\r\n").await;
    })
    .await;
}

#[tokio::test]
async fn unknown_protocol_operation_closes() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let connect = b"CONNECT {\"verbose\":false}\r\n";
        for op in [
            &b"FOO bar\r\n"[..],
            b"\r\n",
            b"SUB\r\n",
            b"UNSUB\r\n",
            b"PUBLISH foo 1\r\n",
            // A payload not followed by CRLF: the extra bytes are parsed as an op.
            b"PUB foo 2\r\nhiXX\r\n",
            b"PUB foo 3\r\nhi\r\n\r\n",
        ] {
            let mut input = connect.to_vec();
            input.extend_from_slice(op);
            expect_fatal(&server, feed, &input, "Unknown Protocol Operation").await;
        }
    })
    .await;
}

#[tokio::test]
async fn maximum_control_line_exceeded_closes() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "max_control_line: 32\n").await;
        // nats-server measures the arguments after the op name, not the whole line.
        let mut at_limit = ready(&server, feed, QUIET_CONNECT).await;
        let args_of_32 = format!("SUB {} 1\r\n", "a".repeat(30));
        at_limit.send(args_of_32.as_bytes()).await;
        at_limit.ping_pong().await;

        let args_of_33 = format!(
            "CONNECT {{\"verbose\":false}}\r\nSUB {} 1\r\n",
            "a".repeat(31)
        );
        expect_fatal(
            &server,
            feed,
            args_of_33.as_bytes(),
            "maximum control line exceeded",
        )
        .await;
        // Without an end of line too: the server must not buffer without bound.
        let endless = format!("CONNECT {{\"verbose\":false}}\r\nPUB {}", "a".repeat(100));
        expect_fatal(
            &server,
            feed,
            endless.as_bytes(),
            "maximum control line exceeded",
        )
        .await;
        // CONNECT is subject to the limit as well.
        let long_connect = format!(
            "CONNECT {{\"verbose\":false,\"name\":\"{}\"}}\r\n",
            "n".repeat(20)
        );
        expect_fatal(
            &server,
            feed,
            long_connect.as_bytes(),
            "maximum control line exceeded",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn maximum_payload_violation_closes() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "max_payload: 16\n").await;
        let mut at_limit = ready(&server, feed, HEADERS_CONNECT).await;
        at_limit
            .send(b"SUB foo 1\r\nPUB foo 16\r\n0123456789abcdef\r\n")
            .await;
        at_limit
            .expect(b"MSG foo 1 16\r\n0123456789abcdef\r\n")
            .await;
        at_limit.ping_pong().await;

        let connect = "CONNECT {\"verbose\":false,\"headers\":true}\r\n";
        for op in [
            "PUB foo 17\r\n",
            "PUB foo reply 17\r\n",
            "HPUB foo 12 17\r\n",
        ] {
            let input = format!("{connect}{op}");
            expect_fatal(&server, feed, input.as_bytes(), "Maximum Payload Violation").await;
        }
    })
    .await;
}

#[tokio::test]
async fn invalid_subject_keeps_the_connection_open() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut client = ready(&server, feed, QUIET_CONNECT).await;
        for (sid, subject) in ["foo..bar", "foo.>.bar", ".foo", "foo.", ">.foo"]
            .into_iter()
            .enumerate()
        {
            client
                .send(format!("SUB {subject} {}\r\n", sid + 10).as_bytes())
                .await;
            client.expect(b"-ERR 'Invalid Subject'\r\n").await;
        }
        client.ping_pong().await;
        // Queue names are not validated like subjects.
        client
            .send(b"SUB foo q.x 1\r\nSUB foo q* 2\r\nPING\r\n")
            .await;
        client.expect(b"PONG\r\n").await;
    })
    .await;
}

#[tokio::test]
async fn maximum_subscriptions_exceeded_keeps_the_connection_open() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "max_subscriptions: 2\n").await;
        let mut client = ready(&server, feed, QUIET_CONNECT).await;
        client
            .send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\nPING\r\n")
            .await;
        client
            .expect(b"-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n")
            .await;
        client
            .send(b"PUB c 1\r\nx\r\nPUB b 1\r\ny\r\nPING\r\n")
            .await;
        client.expect(b"MSG b 2 1\r\ny\r\nPONG\r\n").await;
    })
    .await;
}

#[tokio::test]
async fn maximum_connections_exceeded_after_info() {
    both(|kind| async move {
        let server = TestServer::start(kind, "max_connections: 1\n").await;
        let _first = ready(&server, Feed::Whole, QUIET_CONNECT).await;
        let mut second = connect(&server, Feed::Whole).await;
        second.read_info().await;
        second
            .expect(b"-ERR 'maximum connections exceeded'\r\n")
            .await;
        second.expect_closed().await;
    })
    .await;
}

#[tokio::test]
async fn authorization_violation_with_token() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "authorization { token: s3cret }\n").await;
        for input in [
            &b"PING\r\n"[..],
            b"SUB foo 1\r\n",
            b"PUB foo 1\r\nx\r\n",
            b"CONNECT {\"verbose\":false,\"auth_token\":\"nope\"}\r\n",
            b"CONNECT {\"verbose\":false}\r\n",
            b"CONNECT {\"verbose\":false,\"user\":\"s3cret\"}\r\n",
        ] {
            expect_fatal(&server, feed, input, "Authorization Violation").await;
        }
        ready(&server, feed, r#"{"verbose":false,"auth_token":"s3cret"}"#).await;
        let mut verbose = connect(&server, feed).await;
        verbose.read_info().await;
        verbose
            .send(b"CONNECT {\"verbose\":true,\"auth_token\":\"s3cret\"}\r\nPING\r\n")
            .await;
        verbose.expect(b"+OK\r\nPONG\r\n").await;
    })
    .await;
}

#[tokio::test]
async fn authorization_violation_with_user_and_password() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "authorization { user: alice, password: pw }\n").await;
        for input in [
            &b"CONNECT {\"verbose\":false,\"user\":\"alice\",\"pass\":\"x\"}\r\n"[..],
            b"CONNECT {\"verbose\":false,\"user\":\"bob\",\"pass\":\"pw\"}\r\n",
            b"CONNECT {\"verbose\":false,\"user\":\"alice\"}\r\n",
        ] {
            expect_fatal(&server, feed, input, "Authorization Violation").await;
        }
        ready(
            &server,
            feed,
            r#"{"verbose":false,"user":"alice","pass":"pw"}"#,
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn authentication_timeout_closes_silent_clients() {
    both(|kind| async move {
        let server = TestServer::start(kind, "authorization { token: t, timeout: 0.5 }\n").await;
        let mut client = connect(&server, Feed::Whole).await;
        let accepted = Instant::now();
        client.read_info().await;
        client.expect(b"-ERR 'Authentication Timeout'\r\n").await;
        client.expect_closed().await;
        let elapsed = accepted.elapsed();
        assert!(
            elapsed >= Duration::from_millis(400),
            "timed out after {elapsed:?}, configured 0.5s"
        );
    })
    .await;
}

#[tokio::test]
async fn invalid_client_protocol_closes() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        for protocol in ["2", "-1", "100"] {
            let input = format!("CONNECT {{\"verbose\":false,\"protocol\":{protocol}}}\r\n");
            expect_fatal(&server, feed, input.as_bytes(), "invalid client protocol").await;
        }
    })
    .await;
}

#[tokio::test]
async fn no_responders_requires_headers() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        for connect_json in [
            r#"{"verbose":false,"no_responders":true}"#,
            r#"{"verbose":false,"no_responders":true,"headers":false}"#,
        ] {
            let input = format!("CONNECT {connect_json}\r\n");
            expect_fatal(
                &server,
                feed,
                input.as_bytes(),
                "no responders requires headers support",
            )
            .await;
        }
    })
    .await;
}

#[tokio::test]
async fn no_responders_sends_a_503_hmsg() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        let mut client = ready(
            &server,
            feed,
            r#"{"verbose":false,"headers":true,"no_responders":true}"#,
        )
        .await;
        client.send(b"SUB _INBOX.r.* 1\r\n").await;
        client.send(b"PUB service _INBOX.r.1 2\r\nhi\r\n").await;
        // nats-server 2.9.10 sends no Nats-Subject header; current nats-server releases
        // (2.10 and later) name the request subject in it, and midge does the same.
        let (first, second): (&[u8], &[u8]) = match kind {
            ServerKind::NatsServer => (
                b"HMSG _INBOX.r.1 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n",
                b"HMSG _INBOX.r.2 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n",
            ),
            ServerKind::Midge => (
                b"HMSG _INBOX.r.1 1 39 39\r\nNATS/1.0 503\r\nNats-Subject: service\r\n\r\n\r\n",
                b"HMSG _INBOX.r.2 1 39 39\r\nNATS/1.0 503\r\nNats-Subject: service\r\n\r\n\r\n",
            ),
        };
        client.expect(first).await;
        client
            .send(b"HPUB service _INBOX.r.2 12 14\r\nNATS/1.0\r\n\r\nhi\r\n")
            .await;
        client.expect(second).await;
        // Nothing when no subscription of the requester matches the reply subject,
        // or when there is no reply subject.
        client
            .send(b"PUB service elsewhere 2\r\nhi\r\nPUB service 2\r\nhi\r\nPING\r\n")
            .await;
        client.expect(b"PONG\r\n").await;
        // Nothing when someone received the message.
        client
            .send(b"SUB service 2\r\nPUB service _INBOX.r.3 2\r\nhi\r\nPING\r\n")
            .await;
        client
            .expect(b"MSG service 2 _INBOX.r.3 2\r\nhi\r\nPONG\r\n")
            .await;

        // Nothing without no_responders.
        let mut plain = ready(&server, feed, HEADERS_CONNECT).await;
        plain
            .send(b"SUB _INBOX.p.* 1\r\nPUB nobody _INBOX.p.1 2\r\nhi\r\nPING\r\n")
            .await;
        plain.expect(b"PONG\r\n").await;
    })
    .await;
}

const PERMISSIONS: &str = r#"
authorization { users: [
  { user: a, password: a, permissions: {
      publish: { allow: ["foo.>", "_INBOX.>"], deny: ["foo.bar"] }
      subscribe: { allow: ["foo.*", "_INBOX.>"], deny: ["foo.baz"] }
  } }
  { user: r, password: r, permissions: {
      publish: { deny: ">" }
      subscribe: { allow: "foo.req" }
      allow_responses: true
  } }
] }
"#;

#[tokio::test]
async fn permissions_violations_keep_the_connection_open() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, PERMISSIONS).await;
        let mut client = ready(&server, feed, r#"{"verbose":false,"user":"a","pass":"a"}"#).await;
        client
            .send(b"PUB foo.bar 1\r\nx\r\nPUB bar 1\r\nx\r\nSUB bar 1\r\nSUB foo.baz 2\r\nSUB foo.baz q 3\r\nSUB foo.x 4\r\nPUB foo.x 1\r\ny\r\nPING\r\n")
            .await;
        client
            .expect(
                concat!(
                    "-ERR 'Permissions Violation for Publish to \"foo.bar\"'\r\n",
                    "-ERR 'Permissions Violation for Publish to \"bar\"'\r\n",
                    "-ERR 'Permissions Violation for Subscription to \"bar\"'\r\n",
                    "-ERR 'Permissions Violation for Subscription to \"foo.baz\"'\r\n",
                    "-ERR 'Permissions Violation for Subscription to \"foo.baz\" using queue \"q\"'\r\n",
                    "MSG foo.x 4 1\r\ny\r\n",
                    "PONG\r\n",
                )
                .as_bytes(),
            )
            .await;

        // With verbose, denied ops get the -ERR instead of +OK.
        let mut verbose = connect(&server, feed).await;
        verbose.read_info().await;
        verbose
            .send(b"CONNECT {\"verbose\":true,\"user\":\"a\",\"pass\":\"a\"}\r\nPUB bar 1\r\nx\r\nSUB bar 1\r\nPING\r\n")
            .await;
        verbose
            .expect(b"+OK\r\n-ERR 'Permissions Violation for Publish to \"bar\"'\r\n-ERR 'Permissions Violation for Subscription to \"bar\"'\r\nPONG\r\n")
            .await;
    })
    .await;
}

#[tokio::test]
async fn allow_responses_permits_one_reply_to_a_received_request() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, PERMISSIONS).await;
        let mut responder =
            ready(&server, feed, r#"{"verbose":false,"user":"r","pass":"r"}"#).await;
        let mut requester =
            ready(&server, feed, r#"{"verbose":false,"user":"a","pass":"a"}"#).await;
        responder.send(b"SUB foo.req 1\r\n").await;
        responder.ping_pong().await;
        requester
            .send(b"SUB _INBOX.x 1\r\nPUB foo.req _INBOX.x 1\r\nq\r\n")
            .await;
        requester.ping_pong().await;
        responder
            .expect(b"MSG foo.req 1 _INBOX.x 1\r\nq\r\n")
            .await;
        responder
            .send(b"PUB _INBOX.x 1\r\na\r\nPUB _INBOX.x 1\r\nb\r\nPUB foo.other 1\r\nc\r\nPING\r\n")
            .await;
        responder
            .expect(b"-ERR 'Permissions Violation for Publish to \"_INBOX.x\"'\r\n-ERR 'Permissions Violation for Publish to \"foo.other\"'\r\nPONG\r\n")
            .await;
        requester.expect(b"MSG _INBOX.x 1 1\r\na\r\n").await;
        requester.ping_pong().await;
        requester.expect_nothing().await;
    })
    .await;
}

#[tokio::test]
async fn malformed_arguments_close_without_error() {
    matrix(|kind, feed| async move {
        let server = TestServer::start(kind, "").await;
        for input in [
            &b"PUB foo\r\n"[..],
            b"PUB foo x\r\n",
            b"PUB foo bar x\r\n",
            b"PUB foo -1\r\n",
            b"PUB foo bar baz 1\r\n",
            b"SUB a b c d\r\n",
            b"HPUB foo 20 10\r\n",
            b"HPUB foo 10\r\n",
            b"-ERR 'from the client'\r\n",
        ] {
            let mut client = ready(&server, feed, HEADERS_CONNECT).await;
            client.send_until_closed(input).await;
            client.expect_closed().await;
        }
        for connect_line in [
            &b"CONNECT {verbose\r\n"[..],
            b"CONNECT\r\n",
            b"CONNECT {} junk\r\n",
        ] {
            let mut client = connect(&server, feed).await;
            client.read_info().await;
            client.send_until_closed(connect_line).await;
            client.expect_closed().await;
        }
    })
    .await;
}

#[tokio::test]
async fn stale_connection_after_unanswered_pings() {
    both(|kind| async move {
        let server = TestServer::start(kind, "ping_interval: \"100ms\"\nping_max: 1\n").await;
        let mut client = connect(&server, Feed::Whole).await;
        client.read_info().await;
        client.send(b"CONNECT {\"verbose\":false}\r\n").await;
        client.expect(b"PING\r\n-ERR 'Stale Connection'\r\n").await;
        client.expect_closed().await;
    })
    .await;
}

#[tokio::test]
async fn answered_server_pings_keep_the_connection_alive() {
    both(|kind| async move {
        let server = TestServer::start(kind, "ping_interval: \"100ms\"\nping_max: 1\n").await;
        let mut client = connect(&server, Feed::Whole).await;
        client.read_info().await;
        client.send(b"CONNECT {\"verbose\":false}\r\n").await;
        for _ in 0..4 {
            client.expect(b"PING\r\n").await;
            client.send(b"PONG\r\n").await;
        }
    })
    .await;
}

#[tokio::test]
async fn server_pings_a_connected_client_with_default_settings() {
    both(|kind| async move {
        let server = TestServer::start(kind, "").await;
        let mut client = ready(&server, Feed::Whole, QUIET_CONNECT).await;
        let connected = Instant::now();
        // The first server PING comes about 2s after CONNECT.
        client.expect(b"PING\r\n").await;
        let elapsed = connected.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1000),
            "first PING after {elapsed:?}"
        );
        client.send(b"PONG\r\n").await;
        client.ping_pong().await;
    })
    .await;
}

/// A subject of 100,000 tokens fits a raised max_control_line. Each token is a level of the
/// subscription trie: a recursive insert, match, remove or drop would overflow the server's
/// stack and take it down. midge only: the point is midge's own trie.
#[tokio::test]
async fn a_subject_of_a_hundred_thousand_tokens_does_not_crash_the_server() {
    const TOKENS: usize = 100_000;
    let server = TestServer::start(ServerKind::Midge, "max_control_line: 1MB\n").await;
    let literal = vec!["a"; TOKENS].join(".");
    let stars = vec!["*"; TOKENS].join(".");
    let shorter = vec!["a"; TOKENS - 1].join(".");

    let mut sub = ready(&server, Feed::Whole, QUIET_CONNECT).await;
    sub.send(format!("SUB {literal} 1\r\nSUB {stars} 2\r\nSUB {shorter}.> 3\r\n").as_bytes())
        .await;
    sub.ping_pong().await;

    let mut publisher = ready(&server, Feed::Whole, QUIET_CONNECT).await;
    publisher
        .send(format!("PUB {literal} 5\r\nhello\r\n").as_bytes())
        .await;
    publisher.ping_pong().await;
    let mut sids = BTreeSet::new();
    for _ in 0..3 {
        let line = sub.read_line().await;
        let head = format!("MSG {literal} ");
        assert!(
            line.starts_with(head.as_bytes()),
            "a MSG on the deep subject"
        );
        let args = String::from_utf8_lossy(&line[head.len()..]).into_owned();
        sids.insert(args.trim_end().to_string());
        sub.expect(b"hello\r\n").await;
    }
    assert_eq!(
        sids,
        BTreeSet::from(["1 5".into(), "2 5".into(), "3 5".into()])
    );

    // Removing subscriptions prunes the deep chains; what is left still matches.
    sub.send(b"UNSUB 1\r\nUNSUB 3\r\n").await;
    sub.ping_pong().await;
    publisher
        .send(format!("PUB {literal} 2\r\nhi\r\n").as_bytes())
        .await;
    publisher.ping_pong().await;
    sub.expect(format!("MSG {literal} 2 2\r\nhi\r\n").as_bytes())
        .await;
    sub.ping_pong().await;

    // Closing the subscriber removes its last deep subscription; the server carries on.
    drop(sub);
    publisher
        .send(format!("PUB {literal} 0\r\n\r\n").as_bytes())
        .await;
    publisher.ping_pong().await;
    let mut fresh = ready(&server, Feed::Whole, QUIET_CONNECT).await;
    fresh.send(b"SUB x 1\r\n").await;
    fresh.ping_pong().await;
    publisher.send(b"PUB x 2\r\nok\r\n").await;
    fresh.expect(b"MSG x 1 2\r\nok\r\n").await;
}
