//! Exact outcomes of the parser for every op and every error, each input fed whole and
//! one byte at a time, plus a property test over random streams split at random points.

use midge_proto::parser::{
    parse_client_op, parse_route_op, parse_server_op, ClientOp, Limits, ParseError, Parsed,
    RouteOp, ServerOp,
};
use proptest::prelude::*;

/// A parse function with its op rendered as text, so one harness serves both directions
/// and ops borrowed from different buffers compare equal when their bytes are equal.
type ParseFn = fn(&[u8], &Limits) -> Result<Parsed<String>, ParseError>;

fn client(buf: &[u8], limits: &Limits) -> Result<Parsed<String>, ParseError> {
    parse_client_op(buf, limits).map(|p| match p {
        Parsed::Op(op, n) => Parsed::Op(format!("{op:?}"), n),
        Parsed::Incomplete { need } => Parsed::Incomplete { need },
    })
}

fn server(buf: &[u8], limits: &Limits) -> Result<Parsed<String>, ParseError> {
    parse_server_op(buf, limits).map(|p| match p {
        Parsed::Op(op, n) => Parsed::Op(format!("{op:?}"), n),
        Parsed::Incomplete { need } => Parsed::Incomplete { need },
    })
}

fn route(buf: &[u8], limits: &Limits) -> Result<Parsed<String>, ParseError> {
    parse_route_op(buf, limits).map(|p| match p {
        Parsed::Op(op, n) => Parsed::Op(format!("{op:?}"), n),
        Parsed::Incomplete { need } => Parsed::Incomplete { need },
    })
}

/// Every op parsed from `input` and how the stream ended: `None` if all input was used
/// (and the parser then asks for more), otherwise the error.
type Outcome = (Vec<String>, Option<ParseError>);

fn parse_whole(parse: ParseFn, input: &[u8], limits: &Limits) -> Outcome {
    let mut ops = Vec::new();
    let mut at = 0;
    loop {
        match parse(&input[at..], limits) {
            Ok(Parsed::Op(op, n)) => {
                assert!(n > 0 && n <= input.len() - at, "consumed {n}");
                ops.push(op);
                at += n;
            }
            Ok(Parsed::Incomplete { need }) => {
                assert!(need > input.len() - at, "need {need} already available");
                assert_eq!(at, input.len(), "stream ends inside an op");
                return (ops, None);
            }
            Err(e) => return (ops, Some(e)),
        }
    }
}

/// Feeds `input` through a buffer that grows by the given chunk sizes (cycled), parsing
/// after each append as a connection would, and checks the `need` contract on the way.
fn parse_chunked(parse: ParseFn, input: &[u8], limits: &Limits, chunks: &[usize]) -> Outcome {
    let mut ops = Vec::new();
    let mut buf = Vec::new();
    let mut at = 0;
    let mut need = 0;
    let mut fed = 0;
    let mut chunk = chunks.iter().cycle();
    while fed < input.len() {
        let n = (*chunk.next().unwrap_or(&1)).clamp(1, input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        loop {
            match parse(&buf[at..], limits) {
                Ok(Parsed::Op(op, n)) => {
                    assert!(n > 0 && n <= buf.len() - at);
                    assert!(n >= need, "op of {n} bytes completed before need {need}");
                    ops.push(op);
                    at += n;
                    need = 0;
                }
                Ok(Parsed::Incomplete { need: n }) => {
                    assert!(n > buf.len() - at, "need {n} already available");
                    need = n;
                    break;
                }
                Err(e) => return (ops, Some(e)),
            }
        }
    }
    (ops, None)
}

/// Asserts that `input` yields `ops` and then `end`, whether fed whole or byte by byte.
#[track_caller]
fn check(parse: ParseFn, input: &[u8], limits: &Limits, ops: &[String], end: Option<ParseError>) {
    let want = (ops.to_vec(), end);
    assert_eq!(
        parse_whole(parse, input, limits),
        want,
        "whole: {:?}",
        show(input)
    );
    assert_eq!(
        parse_chunked(parse, input, limits, &[1]),
        want,
        "byte by byte: {:?}",
        show(input)
    );
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn c(op: ClientOp<'_>) -> String {
    format!("{op:?}")
}

fn s(op: ServerOp<'_>) -> String {
    format!("{op:?}")
}

#[track_caller]
fn client_ok(input: &[u8], ops: &[ClientOp<'_>]) {
    let ops: Vec<String> = ops.iter().map(|&op| c(op)).collect();
    check(client, input, &Limits::default(), &ops, None);
}

#[track_caller]
fn client_err(input: &[u8], err: ParseError) {
    check(client, input, &Limits::default(), &[], Some(err));
}

#[track_caller]
fn server_ok(input: &[u8], ops: &[ServerOp<'_>]) {
    let ops: Vec<String> = ops.iter().map(|&op| s(op)).collect();
    check(server, input, &Limits::default(), &ops, None);
}

#[track_caller]
fn server_err(input: &[u8], err: ParseError) {
    check(server, input, &Limits::default(), &[], Some(err));
}

fn bad(op: &'static str) -> ParseError {
    ParseError::BadArgs { op }
}

#[test]
fn connect() {
    let json = br#"{"verbose":false,"pedantic":false,"name":"a b"}"#;
    client_ok(
        &[&b"CONNECT "[..], json, b"\r\n"].concat(),
        &[ClientOp::Connect(json)],
    );
    client_ok(b"connect {}\n", &[ClientOp::Connect(b"{}")]);
    client_ok(b"CoNnEcT\t  {} \t\r\n", &[ClientOp::Connect(b"{}")]);
    // As in nats-server, the JSON may follow the name directly, and may be missing (the
    // server then fails to decode it).
    client_ok(b"CONNECT{}\r\n", &[ClientOp::Connect(b"{}")]);
    client_ok(b"CONNECT\r\n", &[ClientOp::Connect(b"")]);
}

#[test]
fn pub_() {
    client_ok(
        b"PUB foo 5\r\nhello\r\n",
        &[ClientOp::Pub {
            subject: b"foo",
            reply: None,
            payload: b"hello",
        }],
    );
    client_ok(
        b"pub\tfoo.bar \t _INBOX.1  5 \r\nhello\r\n",
        &[ClientOp::Pub {
            subject: b"foo.bar",
            reply: Some(b"_INBOX.1"),
            payload: b"hello",
        }],
    );
    client_ok(
        b"PUB foo 0\r\n\r\n",
        &[ClientOp::Pub {
            subject: b"foo",
            reply: None,
            payload: b"",
        }],
    );
    // The payload is skipped by length, never scanned: CRLFs inside it are data.
    client_ok(
        b"PUB foo 6\nPING\r\n\r\n",
        &[ClientOp::Pub {
            subject: b"foo",
            reply: None,
            payload: b"PING\r\n",
        }],
    );
}

#[test]
fn hpub() {
    client_ok(
        b"HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
        &[ClientOp::HPub {
            subject: b"foo",
            reply: None,
            headers: b"NATS/1.0\r\n\r\n",
            payload: b"hi",
        }],
    );
    client_ok(
        b"hpub foo bar 12 12\r\nNATS/1.0\r\n\r\n\r\n",
        &[ClientOp::HPub {
            subject: b"foo",
            reply: Some(b"bar"),
            headers: b"NATS/1.0\r\n\r\n",
            payload: b"",
        }],
    );
    client_ok(
        b"HPUB foo 0 2\r\nhi\r\n",
        &[ClientOp::HPub {
            subject: b"foo",
            reply: None,
            headers: b"",
            payload: b"hi",
        }],
    );
}

#[test]
fn sub_unsub() {
    client_ok(
        b"SUB foo.* 1\r\nsub foo.> q 22\nUNSUB 1\r\nunsub\t22\t10\r\n",
        &[
            ClientOp::Sub {
                subject: b"foo.*",
                queue: None,
                sid: b"1",
            },
            ClientOp::Sub {
                subject: b"foo.>",
                queue: Some(b"q"),
                sid: b"22",
            },
            ClientOp::Unsub {
                sid: b"1",
                max: None,
            },
            ClientOp::Unsub {
                sid: b"22",
                max: Some(10),
            },
        ],
    );
    client_ok(
        b"UNSUB 1 18446744073709551615\r\n",
        &[ClientOp::Unsub {
            sid: b"1",
            max: Some(u64::MAX),
        }],
    );
}

#[test]
fn ping_pong_info_ok_err() {
    client_ok(
        b"PING\r\nping\npong\r\nPONG whatever\r\nPINGX\r\n",
        &[
            ClientOp::Ping,
            ClientOp::Ping,
            ClientOp::Pong,
            ClientOp::Pong,
            ClientOp::Ping,
        ],
    );
    client_ok(
        b"INFO {\"server_id\":\"x\"}\r\n+OK\r\n+ok\n-ERR 'Unknown Protocol Operation'\r\n",
        &[
            ClientOp::Info(br#"{"server_id":"x"}"#),
            ClientOp::Ok,
            ClientOp::Ok,
            ClientOp::Err(b"'Unknown Protocol Operation'"),
        ],
    );
    client_ok(b"-err \t x y \r\n", &[ClientOp::Err(b"x y")]);
}

#[test]
fn unknown_ops() {
    for input in [
        &b"FOO\r\n"[..],
        b"MSG foo 1 0\r\n\r\n",
        b"HMSG foo 1 0 0\r\n\r\n",
        b"PUBX foo 1\r\n",
        b"PUB\r\n",
        b"PUB",
        b"SUBfoo 1\r\n",
        b"UNSUB\r\n",
        b"HPUB\r\n",
        b"-ERR\r\n",
        b"PIN\r\n",
        b"PI\r\n",
        b"\r\n",
        b"\n",
        b" PING\r\n",
        b"+O\r\n",
        b"CONNEC\r\n",
    ] {
        let ends_early = !input.ends_with(b"\n");
        if ends_early {
            // "PUB" alone is still a possible prefix: only whole-line rejection applies.
            assert_eq!(
                client(input, &Limits::default()),
                Ok(Parsed::Incomplete {
                    need: input.len() + 1
                })
            );
        } else {
            client_err(input, ParseError::UnknownOp);
        }
    }
}

#[test]
fn unknown_op_is_detected_without_a_newline() {
    let l = Limits::default();
    for input in [&b"F"[..], b"PX", b"PUBX", b"MSG", b"\r", b" ", b"SUB\r"] {
        let input_len = input.len();
        assert_eq!(
            client(input, &l),
            Err(ParseError::UnknownOp),
            "{:?} ({input_len})",
            show(input)
        );
    }
    for input in [&b"P"[..], b"PU", b"PUB", b"PUB ", b"CONNECT", b"+", b"-ERR"] {
        assert_eq!(
            client(input, &l),
            Ok(Parsed::Incomplete {
                need: input.len() + 1
            }),
            "{:?}",
            show(input)
        );
    }
    for input in [&b"PUB"[..], b"C", b"SUB a 1\r"] {
        assert_eq!(
            server(input, &l),
            Err(ParseError::UnknownOp),
            "{:?}",
            show(input)
        );
    }
    assert_eq!(
        server(b"HMS", &l),
        Ok(Parsed::Incomplete { need: 4 }),
        "HMSG prefix"
    );
}

#[test]
fn bad_args() {
    for (input, op) in [
        (&b"PUB \r\n"[..], "PUB"),
        (b"PUB foo\r\n", "PUB"),
        (b"PUB foo bar baz 5\r\n", "PUB"),
        (b"PUB foo -1\r\n", "PUB"),
        (b"PUB foo +1\r\n", "PUB"),
        (b"PUB foo 1x\r\n", "PUB"),
        (b"PUB foo x\r\n", "PUB"),
        (b"PUB foo 99999999999999999999999\r\n", "PUB"),
        (b"HPUB foo 5\r\n", "HPUB"),
        (b"HPUB foo 5 4\r\n", "HPUB"),
        (b"HPUB foo a 4\r\n", "HPUB"),
        (b"HPUB foo 1 -4\r\n", "HPUB"),
        (b"HPUB foo bar baz 1 4\r\n", "HPUB"),
        (b"SUB foo\r\n", "SUB"),
        (b"SUB  \r\n", "SUB"),
        (b"SUB a b c d\r\n", "SUB"),
        (b"UNSUB \r\n", "UNSUB"),
        (b"UNSUB 1 x\r\n", "UNSUB"),
        (b"UNSUB 1 -1\r\n", "UNSUB"),
        (b"UNSUB 1 2 3\r\n", "UNSUB"),
        (b"UNSUB 1 18446744073709551616\r\n", "UNSUB"),
    ] {
        client_err(input, bad(op));
    }
}

#[test]
fn control_line_limit() {
    let l = Limits {
        max_control_line: 16,
        max_payload: 1024,
    };
    // As in nats-server, only the arguments count: the op name and the blanks after it
    // do not.
    let at_limit = b"SUB  abcdefghijklmn 1\r\n"; // 16 argument bytes before CRLF
    let over = b"SUB abcdefghijklmno 1\r\n";
    let ok = vec![c(ClientOp::Sub {
        subject: b"abcdefghijklmn",
        queue: None,
        sid: b"1",
    })];
    check(client, at_limit, &l, &ok, None);
    check(client, b"SUB abcdefghijklmn 1\n", &l, &ok, None);
    check(client, over, &l, &[], Some(ParseError::ControlLineTooLong));
    check(
        client,
        b"SUB abcdefghijklmno 1\n",
        &l,
        &[],
        Some(ParseError::ControlLineTooLong),
    );
    // Refused as soon as the line is known to be too long, before any newline.
    assert_eq!(client(&over[..20], &l), Ok(Parsed::Incomplete { need: 21 }));
    assert_eq!(client(&over[..21], &l), Err(ParseError::ControlLineTooLong));
    // A `\r` right after the limit may still be the end of the line.
    assert_eq!(
        client(&at_limit[..22], &l),
        Ok(Parsed::Incomplete { need: 23 })
    );
    // A huge buffer without a newline is refused without scanning all of it.
    let mut long = b"PUB ".to_vec();
    long.resize(1 << 20, b'a');
    assert_eq!(client(&long, &l), Err(ParseError::ControlLineTooLong));
    // A bad op name wins over the length, as it would byte by byte.
    let mut junk = b"XUB ".to_vec();
    junk.resize(100, b'a');
    junk.extend_from_slice(b"\r\n");
    check(client, &junk, &l, &[], Some(ParseError::UnknownOp));
    // The limit does not apply to payloads.
    let payload = [b'x'; 100];
    let input = [&b"PUB a 100\r\n"[..], &payload, b"\r\n"].concat();
    let op = c(ClientOp::Pub {
        subject: b"a",
        reply: None,
        payload: &payload,
    });
    check(client, &input, &l, &[op], None);
    check(
        server,
        b"INFO {\"a_longer_key\":1}\r\n",
        &l,
        &[],
        Some(ParseError::ControlLineTooLong),
    );
}

#[test]
fn payload_limit() {
    let l = Limits {
        max_control_line: 4096,
        max_payload: 10,
    };
    let too_large = ParseError::PayloadTooLarge { size: 11, max: 10 };
    // Refused from the control line alone: the payload never has to arrive.
    check(client, b"PUB foo 11\r\n", &l, &[], Some(too_large.clone()));
    check(
        client,
        b"HPUB foo 2 11\r\n",
        &l,
        &[],
        Some(too_large.clone()),
    );
    check(
        server,
        b"MSG foo 1 11\r\n",
        &l,
        &[],
        Some(too_large.clone()),
    );
    check(server, b"HMSG foo 1 r 0 11\r\n", &l, &[], Some(too_large));
    let op = c(ClientOp::Pub {
        subject: b"foo",
        reply: None,
        payload: b"0123456789",
    });
    check(client, b"PUB foo 10\r\n0123456789\r\n", &l, &[op], None);
    check(
        client,
        b"PUB foo 100000000000000000000\r\n",
        &l,
        &[],
        Some(bad("PUB")),
    );
    check(
        client,
        b"PUB foo 10000000000\r\n",
        &l,
        &[],
        Some(ParseError::PayloadTooLarge {
            size: 10_000_000_000,
            max: 10,
        }),
    );
}

#[test]
fn payload_terminator() {
    for input in [
        &b"PUB foo 2\r\nabc\r\n"[..],
        b"PUB foo 2\r\nab\rX",
        b"PUB foo 2\r\nab\n\r",
        b"PUB foo 2\r\nab\r\r\n",
        b"HPUB foo 1 2\r\nabc\r\n",
    ] {
        client_err(input, ParseError::MissingPayloadTerminator);
    }
    server_err(
        b"MSG foo 1 2\r\nabc\r\n",
        ParseError::MissingPayloadTerminator,
    );
}

#[test]
fn need_is_exact_for_payloads() {
    let l = Limits::default();
    let input = b"PUB foo 5\r\nhello\r\n";
    assert_eq!(client(b"", &l), Ok(Parsed::Incomplete { need: 1 }));
    assert_eq!(client(&input[..6], &l), Ok(Parsed::Incomplete { need: 7 }));
    for len in 11..input.len() {
        assert_eq!(
            client(&input[..len], &l),
            Ok(Parsed::Incomplete { need: input.len() }),
            "len {len}"
        );
    }
    let hmsg = b"HMSG a 1 2 4\r\nh\nxy\r\n";
    for len in 14..hmsg.len() {
        assert_eq!(
            server(&hmsg[..len], &l),
            Ok(Parsed::Incomplete { need: hmsg.len() }),
            "len {len}"
        );
    }
}

#[test]
fn consumed_stops_at_the_op() {
    let l = Limits::default();
    let input = b"PUB foo 1\r\nx\r\nPING\r\n";
    let Ok(Parsed::Op(_, n)) = parse_client_op(input, &l) else {
        panic!("no op");
    };
    assert_eq!(n, 14);
    assert_eq!(
        parse_client_op(&input[n..], &l),
        Ok(Parsed::Op(ClientOp::Ping, 6))
    );
}

#[test]
fn server_ops() {
    server_ok(
        b"INFO {\"max_payload\":1048576} \r\nMSG foo.bar 9 5\r\nhello\r\nmsg foo 9 _INBOX.x 0\r\n\r\n",
        &[
            ServerOp::Info(br#"{"max_payload":1048576}"#),
            ServerOp::Msg {
                subject: b"foo.bar",
                sid: b"9",
                reply: None,
                payload: b"hello",
            },
            ServerOp::Msg {
                subject: b"foo",
                sid: b"9",
                reply: Some(b"_INBOX.x"),
                payload: b"",
            },
        ],
    );
    server_ok(
        b"HMSG foo 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\nhmsg foo 1 r 12 12\r\nNATS/1.0\r\n\r\n\r\n",
        &[
            ServerOp::HMsg {
                subject: b"foo",
                sid: b"1",
                reply: None,
                headers: b"NATS/1.0\r\n\r\n",
                payload: b"hi",
            },
            ServerOp::HMsg {
                subject: b"foo",
                sid: b"1",
                reply: Some(b"r"),
                headers: b"NATS/1.0\r\n\r\n",
                payload: b"",
            },
        ],
    );
    server_ok(
        b"PING\r\nPONG\r\n+OK\r\n-ERR 'Stale Connection'\r\n",
        &[
            ServerOp::Ping,
            ServerOp::Pong,
            ServerOp::Ok,
            ServerOp::Err(b"'Stale Connection'"),
        ],
    );
}

#[test]
fn server_errors() {
    for input in [
        &b"PUB foo 1\r\nx\r\n"[..],
        b"CONNECT {}\r\n",
        b"SUB a 1\r\n",
    ] {
        server_err(input, ParseError::UnknownOp);
    }
    for (input, op) in [
        (&b"MSG foo 5\r\n"[..], "MSG"),
        (b"MSG foo 1 r x 5\r\n", "MSG"),
        (b"MSG foo 1 -5\r\n", "MSG"),
        (b"HMSG foo 1 5\r\n", "HMSG"),
        (b"HMSG foo 1 5 4\r\n", "HMSG"),
        (b"HMSG foo 1 r x 1 4\r\n", "HMSG"),
    ] {
        server_err(input, bad(op));
    }
}

#[test]
fn ops_before_an_error_are_returned() {
    check(
        client,
        b"PING\r\nSUB foo 1\r\nBAD\r\n",
        &Limits::default(),
        &[
            c(ClientOp::Ping),
            c(ClientOp::Sub {
                subject: b"foo",
                queue: None,
                sid: b"1",
            }),
        ],
        Some(ParseError::UnknownOp),
    );
}

/// A client op with owned data, so proptest can generate it.
#[derive(Debug, Clone)]
enum TestOp {
    Connect(Vec<u8>),
    Pub(Vec<u8>, Option<Vec<u8>>, Vec<u8>),
    HPub(Vec<u8>, Option<Vec<u8>>, Vec<u8>, Vec<u8>),
    Sub(Vec<u8>, Option<Vec<u8>>, Vec<u8>),
    Unsub(Vec<u8>, Option<u64>),
    Ping,
    Pong,
    Info(Vec<u8>),
    Ok,
    Err(Vec<u8>),
}

impl TestOp {
    fn as_op(&self) -> ClientOp<'_> {
        match self {
            TestOp::Connect(j) => ClientOp::Connect(j),
            TestOp::Pub(s, r, p) => ClientOp::Pub {
                subject: s,
                reply: r.as_deref(),
                payload: p,
            },
            TestOp::HPub(s, r, h, p) => ClientOp::HPub {
                subject: s,
                reply: r.as_deref(),
                headers: h,
                payload: p,
            },
            TestOp::Sub(s, q, sid) => ClientOp::Sub {
                subject: s,
                queue: q.as_deref(),
                sid,
            },
            TestOp::Unsub(sid, max) => ClientOp::Unsub { sid, max: *max },
            TestOp::Ping => ClientOp::Ping,
            TestOp::Pong => ClientOp::Pong,
            TestOp::Info(j) => ClientOp::Info(j),
            TestOp::Ok => ClientOp::Ok,
            TestOp::Err(t) => ClientOp::Err(t),
        }
    }
}

/// How an op is spelled on the wire: the parser must not care.
#[derive(Debug, Clone)]
struct Style {
    lower: bool,
    sep: &'static str,
    eol: &'static str,
}

fn render(op: &TestOp, st: &Style, out: &mut Vec<u8>) {
    let name = |n: &str| {
        if st.lower {
            n.to_ascii_lowercase()
        } else {
            n.to_string()
        }
    };
    let mut line = |name: String, args: &[&[u8]]| {
        out.extend_from_slice(name.as_bytes());
        for a in args {
            out.extend_from_slice(st.sep.as_bytes());
            out.extend_from_slice(a);
        }
        out.extend_from_slice(st.eol.as_bytes());
    };
    let mut args: Vec<&[u8]> = Vec::new();
    let sizes: Vec<Vec<u8>>;
    match op {
        TestOp::Connect(j) => line(name("CONNECT"), &[j]),
        TestOp::Info(j) => line(name("INFO"), &[j]),
        TestOp::Err(t) => line(name("-ERR"), &[t]),
        TestOp::Ping => line(name("PING"), &[]),
        TestOp::Pong => line(name("PONG"), &[]),
        TestOp::Ok => line(name("+OK"), &[]),
        TestOp::Sub(s, q, sid) => {
            args.push(s);
            args.extend(q.as_deref());
            args.push(sid);
            line(name("SUB"), &args);
        }
        TestOp::Unsub(sid, max) => {
            sizes = max.iter().map(|m| m.to_string().into_bytes()).collect();
            args.push(sid);
            args.extend(sizes.iter().map(Vec::as_slice));
            line(name("UNSUB"), &args);
        }
        TestOp::Pub(s, r, p) => {
            sizes = vec![p.len().to_string().into_bytes()];
            args.push(s);
            args.extend(r.as_deref());
            args.push(&sizes[0]);
            line(name("PUB"), &args);
            out.extend_from_slice(p);
            out.extend_from_slice(b"\r\n");
        }
        TestOp::HPub(s, r, h, p) => {
            sizes = vec![
                h.len().to_string().into_bytes(),
                (h.len() + p.len()).to_string().into_bytes(),
            ];
            args.push(s);
            args.extend(r.as_deref());
            args.push(&sizes[0]);
            args.push(&sizes[1]);
            line(name("HPUB"), &args);
            out.extend_from_slice(h);
            out.extend_from_slice(p);
            out.extend_from_slice(b"\r\n");
        }
    }
}

fn token() -> impl Strategy<Value = Vec<u8>> {
    "[!-~]{1,12}".prop_map(String::into_bytes)
}

/// Text with no blanks at either end, as the parser trims them.
fn text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof!["[!-~]{0,1}", "[!-~][ -~]{0,30}[!-~]"].prop_map(String::into_bytes)
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..40)
}

fn test_op() -> impl Strategy<Value = TestOp> {
    prop_oneof![
        text().prop_map(TestOp::Connect),
        (token(), prop::option::of(token()), bytes()).prop_map(|(s, r, p)| TestOp::Pub(s, r, p)),
        (token(), prop::option::of(token()), bytes(), bytes())
            .prop_map(|(s, r, h, p)| TestOp::HPub(s, r, h, p)),
        (token(), prop::option::of(token()), token()).prop_map(|(s, q, i)| TestOp::Sub(s, q, i)),
        (token(), prop::option::of(any::<u64>())).prop_map(|(i, m)| TestOp::Unsub(i, m)),
        Just(TestOp::Ping),
        Just(TestOp::Pong),
        text().prop_map(TestOp::Info),
        Just(TestOp::Ok),
        // `-ERR` needs a separator, so an empty text would be an unknown op.
        "[!-~]|[!-~][ -~]{0,30}[!-~]".prop_map(|t| TestOp::Err(t.into_bytes())),
    ]
}

fn style() -> impl Strategy<Value = Style> {
    (
        any::<bool>(),
        prop::sample::select(vec![" ", "\t", "  ", " \t "]),
        prop::sample::select(vec!["\r\n", "\n", " \r\n", "\t\n"]),
    )
        .prop_map(|(lower, sep, eol)| Style { lower, sep, eol })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_client_streams_split_anywhere(
        ops in prop::collection::vec((test_op(), style()), 1..12),
        chunks in prop::collection::vec(1usize..64, 1..8),
    ) {
        let mut input = Vec::new();
        for (op, st) in &ops {
            render(op, st, &mut input);
        }
        let want: Vec<String> = ops.iter().map(|(op, _)| c(op.as_op())).collect();
        let limits = Limits::default();
        prop_assert_eq!(parse_whole(client, &input, &limits), (want.clone(), None));
        prop_assert_eq!(parse_chunked(client, &input, &limits, &chunks), (want.clone(), None));
        prop_assert_eq!(parse_chunked(client, &input, &limits, &[1]), (want, None));
    }

    #[test]
    fn random_server_streams_split_anywhere(
        ops in prop::collection::vec(
            (token(), token(), prop::option::of(token()), prop::option::of(bytes()), bytes()),
            1..12,
        ),
        chunks in prop::collection::vec(1usize..64, 1..8),
    ) {
        let mut input = Vec::new();
        let mut want = Vec::new();
        for (subject, sid, reply, headers, payload) in &ops {
            match headers {
                Some(h) => {
                    midge_proto::encode::hmsg(&mut input, subject, sid, reply.as_deref(), h, payload);
                    want.push(s(ServerOp::HMsg {
                        subject, sid, reply: reply.as_deref(), headers: h, payload,
                    }));
                }
                None => {
                    midge_proto::encode::msg(&mut input, subject, sid, reply.as_deref(), payload);
                    want.push(s(ServerOp::Msg { subject, sid, reply: reply.as_deref(), payload }));
                }
            }
            input.extend_from_slice(midge_proto::encode::PING);
            want.push(s(ServerOp::Ping));
        }
        let limits = Limits::default();
        prop_assert_eq!(parse_whole(server, &input, &limits), (want.clone(), None));
        prop_assert_eq!(parse_chunked(server, &input, &limits, &chunks), (want, None));
    }

    /// Routed messages in every form (reply, `+ reply queues`, `| queues`, headers) and
    /// interest ops, as the encoder writes them, come back whole however they are split.
    #[test]
    fn random_route_streams_split_anywhere(
        ops in prop::collection::vec(
            (
                token(),
                prop::option::of(token()),
                prop::collection::vec(token(), 0..3),
                prop::option::of(bytes()),
                bytes(),
            ),
            1..10,
        ),
        chunks in prop::collection::vec(1usize..64, 1..8),
    ) {
        let mut input = Vec::new();
        let mut want = Vec::new();
        for (subject, reply, queues, headers, payload) in &ops {
            let qs = queues.iter().map(|q| q.as_slice());
            midge_proto::encode::rmsg(
                &mut input, b"$G", subject, reply.as_deref(), qs, headers.as_deref(), payload,
            );
            let joined = queues.join(&b' ');
            want.push(format!("{:?}", RouteOp::Msg {
                origin: None,
                account: b"$G",
                subject,
                reply: reply.as_deref(),
                queues: &joined,
                headers: headers.as_deref(),
                payload,
            }));
            let queue = queues.first().map(|q| (q.as_slice(), 3));
            midge_proto::encode::rs_sub(&mut input, b"$G", subject, queue);
            want.push(format!("{:?}", RouteOp::Sub { origin: None, account: b"$G", subject, queue }));
        }
        let limits = Limits::default();
        prop_assert_eq!(parse_whole(route, &input, &limits), (want.clone(), None));
        prop_assert_eq!(parse_chunked(route, &input, &limits, &chunks), (want, None));
    }

    /// Whatever the input, feeding it in pieces never changes what comes out.
    #[test]
    fn arbitrary_bytes_split_anywhere_agree(
        input in prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(b"PUBSHMGINFOCTRK+-|$\r\n 0123456789\t.".to_vec()),
                1 => any::<u8>(),
            ],
            0..80,
        ),
        chunks in prop::collection::vec(1usize..16, 1..8),
    ) {
        let limits = Limits { max_control_line: 24, max_payload: 16 };
        for parse in [client as ParseFn, server, route] {
            let whole = parse_whole_or_partial(parse, &input, &limits);
            let (ops, err) = parse_chunked(parse, &input, &limits, &chunks);
            prop_assert_eq!(&ops, &whole.0);
            prop_assert_eq!(err, whole.1);
        }
    }
}

/// Like [`parse_whole`] but allows the input to end inside an op.
fn parse_whole_or_partial(parse: ParseFn, input: &[u8], limits: &Limits) -> Outcome {
    let mut ops = Vec::new();
    let mut at = 0;
    loop {
        match parse(&input[at..], limits) {
            Ok(Parsed::Op(op, n)) => {
                ops.push(op);
                at += n;
            }
            Ok(Parsed::Incomplete { .. }) => return (ops, None),
            Err(e) => return (ops, Some(e)),
        }
    }
}
