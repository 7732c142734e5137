#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::options::{
    AccountOptions, Authorization, Options, Permissions, ResponsePermission, SubjectPermission,
    User,
};

fn parse(text: &str) -> Map {
    match parse_str(text, "test.conf") {
        Ok(m) => m,
        Err(e) => panic!("{e}"),
    }
}

fn kind<'a>(map: &'a Map, key: &str) -> &'a ValueKind {
    &map.get(key)
        .unwrap_or_else(|| panic!("no key {key}"))
        .value
        .kind
}

fn err(text: &str) -> String {
    match parse_str(text, "test.conf") {
        Ok(m) => panic!("parsed: {m:?}"),
        Err(e) => e.to_string(),
    }
}

fn load(text: &str) -> Result<LoadedConfig, ConfError> {
    Options::from_conf(&parse_str(text, "test.conf")?)
}

fn load_ok(text: &str) -> LoadedConfig {
    load(text).unwrap_or_else(|e| panic!("{e}"))
}

fn load_err(text: &str) -> String {
    match load(text) {
        Ok(l) => panic!("loaded: {l:?}"),
        Err(e) => e.to_string(),
    }
}

fn s(v: &str) -> ValueKind {
    ValueKind::String(v.into())
}

#[test]
fn key_value_separators() {
    let m = parse("a = 1\nb: 2\nc 3\nd=4;e:5, f 6\n");
    for (k, n) in [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5), ("f", 6)] {
        assert_eq!(kind(&m, k), &ValueKind::Integer(n), "{k}");
    }
}

#[test]
fn positions_are_one_based() {
    let m = parse("# comment\n  port: 4222\n");
    let e = m.get("port").unwrap();
    assert_eq!((e.key_pos.line, e.key_pos.col), (2, 3));
    assert_eq!((e.value.pos.line, e.value.pos.col), (2, 9));
    assert_eq!(&*e.value.pos.file, "test.conf");
}

#[test]
fn comments() {
    let m = parse("# one\n// two\na: 1 # after\nb: 2 // after\nc: x#y\n");
    assert_eq!(kind(&m, "a"), &ValueKind::Integer(1));
    assert_eq!(kind(&m, "b"), &ValueKind::Integer(2));
    assert_eq!(kind(&m, "c"), &s("x#y"));
    assert_eq!(m.len(), 3);
}

#[test]
fn strings() {
    let m = parse(concat!(
        "bare: hello.world\n",
        "dq: \"a \\\"b\\\" \\t\\n\\\\ \\x41\"\n",
        "sq: 'no \\escapes here'\n",
        "url: nats://host:4222\n",
        "quoted_key_1: 'x'\n",
        "\"quoted key\": 1\n",
        "'single key': 2\n",
    ));
    assert_eq!(kind(&m, "bare"), &s("hello.world"));
    assert_eq!(kind(&m, "dq"), &s("a \"b\" \t\n\\ A"));
    assert_eq!(kind(&m, "sq"), &s("no \\escapes here"));
    assert_eq!(kind(&m, "url"), &s("nats://host:4222"));
    assert_eq!(kind(&m, "quoted key"), &ValueKind::Integer(1));
    assert_eq!(kind(&m, "single key"), &ValueKind::Integer(2));
}

#[test]
fn multi_line_block() {
    let m = parse("text (\nline one\n  line two\n)\nafter: 1\n");
    assert_eq!(kind(&m, "text"), &s("\nline one\n  line two\n"));
    assert_eq!(kind(&m, "after"), &ValueKind::Integer(1));
}

#[test]
fn numbers_and_sizes() {
    let m = parse(concat!(
        "i: 42\nneg: -7\nf: 2.5\nnf: -0.5\n",
        "k: 1k\nkb: 1kb\nKB: 1KB\nki: 2ki\nkib: 1KiB\n",
        "m: 1m\nmb: 1MB\ng: 2g\ngb: 1gb\nt: 1T\n",
    ));
    let want = [
        ("i", 42),
        ("neg", -7),
        ("k", 1000),
        ("kb", 1024),
        ("KB", 1024),
        ("ki", 2048),
        ("kib", 1024),
        ("m", 1_000_000),
        ("mb", 1_048_576),
        ("g", 2_000_000_000),
        ("gb", 1 << 30),
        ("t", 1_000_000_000_000),
    ];
    for (k, n) in want {
        assert_eq!(kind(&m, k), &ValueKind::Integer(n), "{k}");
    }
    assert_eq!(kind(&m, "f"), &ValueKind::Float(2.5));
    assert_eq!(kind(&m, "nf"), &ValueKind::Float(-0.5));
}

#[test]
fn digit_led_strings_ips_and_dates() {
    let m = parse("ip: 127.0.0.1\nlisten: 0.0.0.0:4222\nd: 10s\nms: 500ms\nhm: 1h30m\nwhen: 2024-01-02T03:04:05Z\n");
    assert_eq!(kind(&m, "ip"), &s("127.0.0.1"));
    assert_eq!(kind(&m, "listen"), &s("0.0.0.0:4222"));
    assert_eq!(kind(&m, "d"), &s("10s"));
    assert_eq!(kind(&m, "ms"), &s("500ms"));
    assert_eq!(kind(&m, "hm"), &s("1h30m"));
    assert_eq!(
        kind(&m, "when"),
        &ValueKind::Datetime("2024-01-02T03:04:05Z".into())
    );
}

#[test]
fn booleans_any_case() {
    let m = parse("a: true\nb: FALSE\nc: Yes\nd: no\ne: ON\nf: off\ng: \"true\"\n");
    for (k, b) in [
        ("a", true),
        ("b", false),
        ("c", true),
        ("d", false),
        ("e", true),
        ("f", false),
    ] {
        assert_eq!(kind(&m, k), &ValueKind::Bool(b), "{k}");
    }
    assert_eq!(kind(&m, "g"), &s("true"));
}

#[test]
fn maps_arrays_and_top_level_braces() {
    let m = parse("{\n  outer { inner: { x: 1 }, list: [1, two, \"3\"] }\n  arr: [\n    a # c\n    b,\n    c,\n  ]\n}\n");
    let ValueKind::Map(outer) = kind(&m, "outer") else {
        panic!()
    };
    let ValueKind::Map(inner) = kind(outer, "inner") else {
        panic!()
    };
    assert_eq!(kind(inner, "x"), &ValueKind::Integer(1));
    let ValueKind::Array(list) = kind(outer, "list") else {
        panic!()
    };
    let kinds: Vec<_> = list.iter().map(|v| v.kind.clone()).collect();
    assert_eq!(kinds, vec![ValueKind::Integer(1), s("two"), s("3")]);
    let ValueKind::Array(arr) = kind(&m, "arr") else {
        panic!()
    };
    assert_eq!(arr.len(), 3);
    assert_eq!(arr[0].kind, s("a"));
}

#[test]
fn later_keys_replace_earlier() {
    let m = parse("a: 1\nb: 2\na: 3\n");
    assert_eq!(kind(&m, "a"), &ValueKind::Integer(3));
    assert_eq!(m.entries()[0].key, "a");
}

#[test]
fn variables_from_maps_and_environment() {
    std::env::set_var("MIDGE_TEST_PORT", "4333");
    std::env::set_var("MIDGE_TEST_LIST", "[a, b]");
    let m = parse(concat!(
        "NAME: midge\n",
        "server_name: $NAME\n",
        "port: $MIDGE_TEST_PORT\n",
        "list: $MIDGE_TEST_LIST\n",
        "outer { X: 1, inner { y: $X, z: $NAME } }\n",
        "hash: $2a$11$abc\n",
    ));
    assert_eq!(kind(&m, "server_name"), &s("midge"));
    assert_eq!(kind(&m, "port"), &ValueKind::Integer(4333));
    assert!(matches!(kind(&m, "list"), ValueKind::Array(a) if a.len() == 2));
    let ValueKind::Map(outer) = kind(&m, "outer") else {
        panic!()
    };
    let ValueKind::Map(inner) = kind(outer, "inner") else {
        panic!()
    };
    assert_eq!(kind(inner, "y"), &ValueKind::Integer(1));
    assert_eq!(kind(inner, "z"), &s("midge"));
    assert_eq!(kind(&m, "hash"), &s("$2a$11$abc"));
    assert!(m.get("NAME").unwrap().used_as_variable);
    // The value carries the position of the reference.
    assert_eq!(m.get("server_name").unwrap().value.pos.line, 2);
}

#[test]
fn variable_errors() {
    assert_eq!(
        err("a: 1\nb: $MIDGE_SURELY_UNDEFINED_VAR\n"),
        "test.conf:2:4: variable '$MIDGE_SURELY_UNDEFINED_VAR' is not defined"
    );
    // Defined later does not count.
    assert!(err("b: $later\nlater: 1\n").contains("is not defined"));
    std::env::set_var("MIDGE_TEST_CYCLE_A", "$MIDGE_TEST_CYCLE_B");
    std::env::set_var("MIDGE_TEST_CYCLE_B", "$MIDGE_TEST_CYCLE_A");
    assert!(err("x: $MIDGE_TEST_CYCLE_A\n").contains("cycle"));
}

#[test]
fn includes_are_relative_to_the_including_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(
        dir.path().join("main.conf"),
        "port: 1\ninclude ./sub/auth.conf\nserver_name: main\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sub/auth.conf"),
        "authorization { include 'token.conf' }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("sub/token.conf"), "token: secret\n").unwrap();
    let m = parse_file(dir.path().join("main.conf")).unwrap();
    let ValueKind::Map(auth) = kind(&m, "authorization") else {
        panic!()
    };
    assert_eq!(kind(auth, "token"), &s("secret"));
    let pos = &auth.get("token").unwrap().key_pos;
    assert!(pos.file.ends_with("token.conf"), "{pos}");
    let loaded = Options::from_file(dir.path().join("main.conf")).unwrap();
    assert_eq!(loaded.options.auth.token.as_deref(), Some("secret"));
    assert_eq!(
        loaded.options.config_file,
        Some(dir.path().join("main.conf"))
    );
}

/// The config watcher watches included files too: every include is reported, nested ones
/// included, by the path the directive resolved to.
#[test]
fn includes_are_reported_with_the_parse() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(
        dir.path().join("main.conf"),
        "port: 1\ninclude ./sub/auth.conf\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sub/auth.conf"),
        "authorization { include 'token.conf' }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("sub/token.conf"), "token: secret\n").unwrap();
    let (m, included) = super::parse_file_with_includes(dir.path().join("main.conf")).unwrap();
    assert!(m.get("authorization").is_some());
    assert_eq!(
        included,
        vec![
            dir.path().join("./sub/auth.conf"),
            dir.path().join("sub").join("token.conf")
        ]
    );
    let (_, none) = super::parse_file_with_includes(dir.path().join("sub/token.conf")).unwrap();
    assert!(none.is_empty());
}

#[test]
fn missing_include_names_the_directive() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("main.conf");
    std::fs::write(&main, "port: 1\n\ninclude missing.conf\n").unwrap();
    let e = parse_file(&main).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}:3:1: cannot read '", main.display())),
        "{e}"
    );
    assert!(e.contains("missing.conf"), "{e}");
}

#[test]
fn include_cycle_is_an_error_naming_the_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.conf"), "port: 1\ninclude b.conf\n").unwrap();
    std::fs::write(dir.path().join("b.conf"), "\ninclude ./a.conf\n").unwrap();
    let e = parse_file(dir.path().join("a.conf"))
        .unwrap_err()
        .to_string();
    let (a, b) = (
        dir.path().join("a.conf").canonicalize().unwrap(),
        dir.path().join("b.conf").canonicalize().unwrap(),
    );
    assert_eq!(
        e,
        format!(
            "{}:2:1: include './a.conf' makes a cycle: {} includes {} includes {}",
            dir.path().join("b.conf").display(),
            a.display(),
            b.display(),
            a.display()
        )
    );

    std::fs::write(dir.path().join("self.conf"), "include self.conf\n").unwrap();
    let e = parse_file(dir.path().join("self.conf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("include 'self.conf' makes a cycle"), "{e}");
}

#[test]
fn a_file_included_twice_without_a_cycle_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("common.conf"), "X: 1\n").unwrap();
    std::fs::write(
        dir.path().join("left.conf"),
        "include common.conf\nleft: $X\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("main.conf"),
        "include left.conf\ninclude common.conf\n",
    )
    .unwrap();
    let m = parse_file(dir.path().join("main.conf")).unwrap();
    assert_eq!(kind(&m, "left"), &ValueKind::Integer(1));
    assert_eq!(kind(&m, "X"), &ValueKind::Integer(1));
}

#[test]
fn a_long_include_chain_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..40 {
        let next = format!("include {}.conf\n", i + 1);
        std::fs::write(dir.path().join(format!("{i}.conf")), next).unwrap();
    }
    let e = parse_file(dir.path().join("0.conf"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("includes nested more than 16 deep"), "{e}");
}

#[test]
fn variables_repeated_inside_repeated_variables_are_bounded() {
    // Each level is ten copies of the one before: 10^9 strings at the last, if expanded.
    let mut text = String::from("l0: \"0123456789\"\n");
    for level in 1..10 {
        let refs = vec![format!("$l{}", level - 1); 10].join(", ");
        text.push_str(&format!("l{level}: [{refs}]\n"));
    }
    let started = std::time::Instant::now();
    let e = err(&text);
    assert!(
        e.contains("variables expand to more than 16 MiB in all"),
        "{e}"
    );
    assert!(
        e.starts_with("test.conf:7:"),
        "the first level over the limit: {e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn variables_nested_in_variables_are_bounded_in_depth() {
    let mut text = String::from("v0: 1\n");
    for level in 1..80 {
        text.push_str(&format!("v{level}: [$v{}]\n", level - 1));
    }
    let e = err(&text);
    assert!(
        e.starts_with("test.conf:65:7: variable '$v63' expands to values nested more than 64 deep"),
        "{e}"
    );
    // Up to the limit it works.
    let ok: String = text.lines().take(64).map(|l| format!("{l}\n")).collect();
    parse(&ok);
}

#[test]
fn environment_variables_referring_to_each_other_are_bounded_in_depth() {
    for i in 0..30 {
        std::env::set_var(
            format!("MIDGE_TEST_CHAIN_{i}"),
            format!("$MIDGE_TEST_CHAIN_{}", i + 1),
        );
    }
    std::env::set_var("MIDGE_TEST_CHAIN_30", "1");
    let e = err("x: $MIDGE_TEST_CHAIN_0\n");
    assert!(e.contains("refer to each other more than 16 deep"), "{e}");
    assert_eq!(
        kind(&parse("x: $MIDGE_TEST_CHAIN_20\n"), "x"),
        &ValueKind::Integer(1)
    );
}

#[test]
fn durations_over_a_year_are_refused() {
    assert_eq!(
        load_err("port: 1\nping_interval: \"8761h\"\n"),
        "test.conf:2:16: ping_interval: 8761h is longer than the maximum of 1 year (8760h)"
    );
    assert_eq!(
        load_ok("ping_interval: \"8760h\"\n").options.ping_interval,
        Duration::from_secs(365 * 24 * 3600)
    );
    assert_eq!(
        load_err("write_deadline: 40000000\n"),
        "test.conf:1:17: write_deadline: 11111h6m40s is longer than the maximum of 1 year (8760h)"
    );
    assert_eq!(
        load_err("lame_duck_duration: \"2562047h\"\n"),
        "test.conf:1:21: lame_duck_duration: 2562047h is longer than the maximum of 1 year (8760h)"
    );
    assert!(load_err("lame_duck_grace_period: \"9000h\"\n")
        .starts_with("test.conf:1:25: lame_duck_grace_period: 9000h is longer"));
    assert!(
        load_err("authorization { token: t, timeout: 1e10 }\n").contains("authorization.timeout: ")
    );
    assert!(load_err("authorization { token: t, timeout: 40000000 }\n")
        .starts_with("test.conf:1:36: authorization.timeout: 11111h6m40s is longer"));
    let e = load_err(concat!(
        "authorization { users: [ { user: a, password: b, permissions: {\n",
        "  allow_responses: { expires: \"10000h\" } } } ] }\n",
    ));
    assert!(
        e.contains("allow_responses.expires: 10000h is longer than the maximum of 1 year"),
        "{e}"
    );
}

#[test]
fn syntax_errors_have_exact_positions() {
    assert_eq!(
        err("a: 1\nb: \"open\n"),
        "test.conf:2:4: unterminated string"
    );
    assert_eq!(err("a: 'open"), "test.conf:1:4: unterminated string");
    assert_eq!(
        err("a {\n  b: 1\n"),
        "test.conf:1:3: unterminated map: missing '}'"
    );
    assert_eq!(
        err("a: [1, 2\n"),
        "test.conf:1:4: unterminated array: missing ']'"
    );
    assert_eq!(
        err("a: (\nno end\n"),
        "test.conf:1:4: unterminated block: missing ')' line"
    );
    assert_eq!(
        err("a: 1 2\n"),
        "test.conf:1:6: expected a newline, ';', ',' after the value of 'a', found '2'"
    );
    assert_eq!(err("a:\n"), "test.conf:1:1: a: missing value");
    assert_eq!(
        err("a: \"\\q\"\n"),
        "test.conf:1:5: invalid escape '\\q': only \\xXX, \\t, \\n, \\r, \\\" and \\\\ are allowed"
    );
    assert_eq!(
        err("a: 1.5s\n"),
        "test.conf:1:4: invalid number '1.5s' (quote it to make it a string)"
    );
    assert_eq!(
        err("a: 10kbb\n"),
        "test.conf:1:4: invalid size suffix 'kbb' in '10kbb'"
    );
    assert_eq!(err("a: [1,,2]\n"), "test.conf:1:7: unexpected ',' in array");
    assert_eq!(
        err("a: 99999999999999999999\n"),
        "test.conf:1:4: integer '99999999999999999999' is out of range"
    );
    assert_eq!(
        err("a: 2024-01-02\n"),
        "test.conf:1:4: invalid datetime '2024-01-02': use the full Zulu form 2006-01-02T15:04:05Z"
    );
    assert_eq!(
        err("{ a: 1 } b\n"),
        "test.conf:1:10: unexpected 'b' after the closing '}'"
    );
}

#[test]
fn minimal_options() {
    let loaded = load_ok("port: 4333\n");
    assert_eq!(loaded.options.port, 4333);
    assert!(loaded.warnings.is_empty());
}

#[test]
fn all_supported_options() {
    let loaded = load_ok(concat!(
        "listen: 127.0.0.1:4333\n",
        "server_name: n1\n",
        "client_advertise: \"example.com:4222\"\n",
        "http: 127.0.0.1:8333\n",
        "max_payload: 2MB\n",
        "max_control_line: 8kb\n",
        "max_pending: 128MB\n",
        "max_connections: 100\n",
        "max_subs: 10\n",
        "ping_interval: \"30s\"\n",
        "ping_max: 3\n",
        "write_deadline: \"5s\"\n",
        "spin_wait: \"250us\"\n",
        "lame_duck_duration: \"1m\"\n",
        "lame_duck_grace_period: \"5s\"\n",
        "debug: true\ntrace: on\nlogtime: false\n",
        "log_file: /tmp/midge.log\n",
        "pid_file: '/tmp/midge.pid'\n",
    ));
    let o = loaded.options;
    assert_eq!(o.host, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(o.port, 4333);
    assert_eq!(o.server_name.as_deref(), Some("n1"));
    assert_eq!(o.client_advertise.as_deref(), Some("example.com:4222"));
    assert_eq!(o.http_host, Some(IpAddr::from([127, 0, 0, 1])));
    assert_eq!(o.http_port, Some(8333));
    assert_eq!(o.max_payload, 2 << 20);
    assert_eq!(o.max_control_line, 8192);
    assert_eq!(o.max_pending, 128 << 20);
    assert_eq!(o.max_connections, 100);
    assert_eq!(o.max_subscriptions, 10);
    assert_eq!(o.ping_interval, Duration::from_secs(30));
    assert_eq!(o.ping_max, 3);
    assert_eq!(o.write_deadline, Duration::from_secs(5));
    assert_eq!(o.spin_wait, Duration::from_micros(250));
    assert_eq!(o.lame_duck_duration, Duration::from_secs(60));
    assert_eq!(o.lame_duck_grace_period, Duration::from_secs(5));
    assert!(o.debug && o.trace && !o.logtime);
    assert_eq!(o.log_file, Some(PathBuf::from("/tmp/midge.log")));
    assert_eq!(o.pid_file, Some(PathBuf::from("/tmp/midge.pid")));
}

use std::net::IpAddr;

#[test]
fn aliases_and_case_insensitive_keys() {
    let o = load_ok(
        "Port: 1\nnet: 10.0.0.1\nmonitor_port: 8222\nmax_conn: 5\nLOGFILE: x\npidfile: y\n",
    )
    .options;
    assert_eq!(o.port, 1);
    assert_eq!(o.host, IpAddr::from([10, 0, 0, 1]));
    assert_eq!(o.http_port, Some(8222));
    assert_eq!(o.max_connections, 5);
    assert!(o.log_file.is_some() && o.pid_file.is_some());
    assert_eq!(load_ok("port: -1\n").options.port, 0);
    assert_eq!(load_ok("listen: 4555\n").options.port, 4555);
    assert_eq!(load_ok("http: 8555\n").options.http_port, Some(8555));
    assert_eq!(load_ok("http_port: 0\n").options.http_port, None);
}

#[test]
fn integer_seconds_are_accepted_with_a_warning() {
    let loaded = load_ok("ping_interval: 120\nwrite_deadline: 3\n");
    assert_eq!(loaded.options.ping_interval, Duration::from_secs(120));
    assert_eq!(loaded.options.write_deadline, Duration::from_secs(3));
    assert_eq!(loaded.warnings.len(), 2);
    assert_eq!(
        loaded.warnings[0].to_string(),
        "test.conf:1:16: ping_interval: a number of seconds is deprecated, write \"120s\""
    );
}

#[test]
fn key_errors() {
    assert_eq!(
        load_err("port: 1\nbogus: 2\n"),
        "test.conf:2:1: unknown key 'bogus'"
    );
    assert_eq!(
        load_err("port: \"x\"\n"),
        "test.conf:1:7: port: expected an integer, got string"
    );
    assert_eq!(
        load_err("debug: 1\n"),
        "test.conf:1:8: debug: expected a boolean, got integer"
    );
    assert_eq!(
        load_err("ping_interval: \"2x\"\n"),
        "test.conf:1:16: ping_interval: unknown unit \"x\" in duration \"2x\""
    );
    assert_eq!(
        load_err("lame_duck_duration: \"10s\"\n"),
        "test.conf:1:21: lame_duck_duration: 10s is too short, the minimum is 30s"
    );
    assert_eq!(
        load_err("spin_wait: \"2ms\"\n"),
        "test.conf:1:12: spin_wait: 2ms is too long, the maximum is 1ms"
    );
    assert_eq!(
        load_err("port: 70000\n"),
        "test.conf:1:7: port: port must be -1 or 0..65535"
    );
    assert_eq!(
        load_err("server_name: \"a b\"\n"),
        "test.conf:1:14: server_name: server name cannot contain spaces"
    );
    assert_eq!(
        load_err("host: example.com\n"),
        "test.conf:1:7: host: \"example.com\" is not an IP address"
    );
    assert_eq!(
        load_err("authorization { usr: a }\n"),
        "test.conf:1:17: unknown key 'authorization.usr'"
    );
    // All errors are reported at once.
    assert_eq!(
        load_err("a: 1\nb: 2\n"),
        "test.conf:1:1: unknown key 'a'\ntest.conf:2:1: unknown key 'b'"
    );
    // A key used as a variable is not an unknown option.
    assert_eq!(load_ok("P: 4999\nport: $P\n").options.port, 4999);
}

#[test]
fn unsupported_features_and_ignored_options() {
    for key in [
        "accounts { A: { mappings: {} } }",
        "leafnodes { remotes: [{url: \"nats-leaf://h\", credentials: \"/x.creds\"}] }",
        "websocket { port: 1, no_tls: true, headers { A: b } }",
        "mqtt {}",
        "gateway {}",
    ] {
        let e = load_err(key);
        assert!(e.ends_with("not supported by midge yet"), "{e}");
    }
    match load("gateway { port: 7222 }\n") {
        Err(ConfError::Unsupported { key, value, .. }) => {
            assert_eq!(key, "gateway");
            assert!(matches!(value.kind, ValueKind::Map(_)));
        }
        other => panic!("{other:?}"),
    }
    let loaded = load_ok("max_traced_msg_len: 10\n");
    assert_eq!(loaded.warnings.len(), 1);
    assert!(loaded.warnings[0]
        .to_string()
        .starts_with("test.conf:1:21: max_traced_msg_len: ignored"));
    assert!(load_err("jetstream { key: s3cr3t }\n").ends_with("not supported by midge yet"));
}

#[test]
fn jetstream_block() {
    use crate::options::{JetStreamOptions, JetStreamSync};
    for text in [
        "jetstream: enabled\n",
        "jetstream: true\n",
        "jetstream {}\n",
    ] {
        let js = load_ok(text).options.jetstream;
        assert_eq!(js, Some(JetStreamOptions::default()), "{text}");
    }
    for text in ["jetstream: disabled\n", "jetstream: false\n"] {
        let loaded = load_ok(text);
        assert!(loaded.options.jetstream_enabled().is_none(), "{text}");
        assert!(loaded.warnings.is_empty());
    }
    let js = load_ok(
        "jetstream {\n  store_dir: /data\n  max_memory_store: 1G\n  max_file_store: \"512M\"\n  \
         domain: hub\n  sync_interval: 10s\n}\n",
    )
    .options
    .jetstream
    .unwrap();
    assert!(js.enabled);
    assert_eq!(js.store_dir, Some(PathBuf::from("/data")));
    // An unquoted suffix is the config lexer's (powers of 1000 for one letter); a string is
    // nats-server's getStorageSize (powers of 1024).
    assert_eq!(js.max_memory, Some(1_000_000_000));
    assert_eq!(js.max_file, Some(512 << 20));
    assert_eq!(js.domain.as_deref(), Some("hub"));
    assert_eq!(js.sync, JetStreamSync::Interval(Duration::from_secs(10)));
    let js = load_ok(
        "jetstream { storedir: \"/d\", max_mem: 512MB, max_file: \"2GB\", sync: always }\n",
    )
    .options
    .jetstream
    .unwrap();
    assert_eq!(js.max_memory, Some(512 << 20));
    assert_eq!(js.max_file, Some(2 << 30));
    assert_eq!(js.sync, JetStreamSync::Always);
    // A block that says enabled: false keeps its settings for -js.
    let js = load_ok("jetstream { enabled: false, store_dir: /d }\n").options;
    assert!(js.jetstream_enabled().is_none());
    assert_eq!(js.jetstream.unwrap().store_dir, Some(PathBuf::from("/d")));
    // Top-level store_dir: where, not whether; before or after the block.
    let o = load_ok("store_dir: /top\n").options;
    assert!(o.jetstream_enabled().is_none());
    let o = load_ok("store_dir: /top\njetstream: enabled\n").options;
    assert_eq!(
        o.jetstream_enabled().unwrap().store_dir,
        Some(PathBuf::from("/top"))
    );
    let o = load_ok("jetstream: enabled\nstoredir: /top\n").options;
    assert_eq!(
        o.jetstream_enabled().unwrap().store_dir,
        Some(PathBuf::from("/top"))
    );
    assert!(
        load_err("store_dir: /a\njetstream { store_dir: /b }\n").contains("duplicate 'store_dir'")
    );
    assert!(load_err("jetstream: maybe\n").contains("expected 'enabled' or 'disabled'"));
    assert!(load_err("jetstream { max_mem: \"1X\" }\n").contains("suffix must be K, M, G or T"));
    assert!(load_err("jetstream { domain: \"a.b\" }\n").contains("invalid domain"));
    assert!(load_err("jetstream { colour: red }\n").contains("unknown key 'jetstream.colour'"));
    let loaded = load_ok("jetstream { unique_tag: az }\n");
    assert_eq!(loaded.warnings.len(), 1);
}

#[test]
fn account_jetstream() {
    use crate::options::AccountJetStreamLimits;
    let o = load_ok(
        "jetstream: enabled\naccounts {\n  A: { jetstream: enabled }\n  B: { jetstream: disabled }\n  \
         C: { jetstream { max_mem: 1M, max_file: \"1G\", max_streams: 10, max_consumers: 100 } }\n  \
         D: {}\n}\n",
    )
    .options;
    let by_name = |n: &str| o.accounts.iter().find(|a| a.name == n).unwrap().jetstream;
    assert_eq!(by_name("A"), Some(AccountJetStreamLimits::default()));
    assert_eq!(by_name("B"), None);
    assert_eq!(
        by_name("C"),
        Some(AccountJetStreamLimits {
            max_memory: 1_000_000,
            max_store: 1 << 30,
            max_streams: 10,
            max_consumers: 100,
            ..AccountJetStreamLimits::default()
        })
    );
    assert_eq!(o.jetstream_accounts(), ["A", "C"]);
    assert!(o.jetstream_account_limits("$G").is_none());
    assert!(o.jetstream_account_limits("D").is_none());
    // Without accounts the global account has JetStream; never the system account.
    let o = load_ok("jetstream: enabled\n").options;
    assert_eq!(o.jetstream_accounts(), ["$G"]);
    assert!(o.jetstream_account_limits("$SYS").is_none());
    // Without JetStream on the server, no account has it.
    let o = load_ok("accounts { A: { jetstream: enabled } }\n").options;
    assert!(o.jetstream_accounts().is_empty());
    let rendered = load_ok(
        "jetstream { max_mem: 1M, store_dir: \"/d d\", domain: x, sync: always }\naccounts { A: { jetstream { max_streams: 3 } } }\n",
    )
    .options;
    let back = load_ok(&rendered.to_conf_string()).options;
    assert_eq!(back, rendered, "{}", rendered.to_conf_string());
}

#[test]
fn cluster_block() {
    let c = load_ok(
        "cluster {\n  name: demo\n  listen: 127.0.0.1:-1\n  routes: [nats://a:6222, \"nats://u:p@b.demo-headless\"]\n  authorization { user: ru, password: rp, timeout: 3 }\n  advertise: \"10.0.0.1:6222\"\n  no_advertise: true\n  connect_retries: 5\n}\n",
    )
    .options
    .cluster;
    assert_eq!(c.name.as_deref(), Some("demo"));
    assert_eq!(c.host, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(c.port, Some(0));
    assert_eq!(c.routes, ["nats://a:6222", "nats://u:p@b.demo-headless"]);
    assert_eq!(
        (c.user.as_deref(), c.password.as_deref()),
        (Some("ru"), Some("rp"))
    );
    assert_eq!(c.auth_timeout, Duration::from_secs(3));
    assert_eq!(c.advertise.as_deref(), Some("10.0.0.1:6222"));
    assert!(c.no_advertise && c.enabled());
    assert_eq!(c.connect_retries, 5);
    assert!(!load_ok("cluster { routes: [] }\n")
        .options
        .cluster
        .enabled());
    assert!(
        load_err("cluster { port: 1, authorization { token: t } }\n")
            .contains("does not support tokens")
    );
    assert!(load_err("cluster { port: 1, routes: [\"http://x:1\"] }\n").contains("scheme"));
    assert!(load_err("cluster { port: 1, bogus: 1 }\n").contains("unknown key 'cluster.bogus'"));
}

#[test]
fn authorization_forms() {
    let a = load_ok("authorization { user: u, password: p, timeout: 1.5 }\n")
        .options
        .auth;
    assert_eq!(
        (a.user.as_deref(), a.password.as_deref()),
        (Some("u"), Some("p"))
    );
    assert_eq!(a.timeout, Duration::from_millis(1500));
    assert!(a.required());
    let a = load_ok("authorization { token: \"$2a$11$xyz\", timeout: \"3s\" }\n")
        .options
        .auth;
    assert_eq!(a.token.as_deref(), Some("$2a$11$xyz"));
    assert_eq!(a.timeout, Duration::from_secs(3));
    assert_eq!(
        load_ok("authorization { pass: x, user: y, timeout: 4 }\n")
            .options
            .auth
            .timeout,
        Duration::from_secs(4)
    );
}

#[test]
fn nkey_users_in_authorization_and_accounts() {
    let a = &nkeys::KeyPair::new_user().public_key();
    let b = &nkeys::KeyPair::new_user().public_key();
    let text = format!(
        "authorization {{ default_permissions: {{publish: \"x\"}}\n users: [{{nkey: {a}}}, {{user: u, password: p}}] }}\n\
         accounts {{ A: {{ users: [{{nkey: {b}, permissions: {{subscribe: \"s\"}}}}] }} }}\n"
    );
    let opts = load(&text).expect("loads").options;
    assert_eq!(opts.auth.users.len(), 1);
    assert_eq!(opts.auth.nkeys.len(), 2);
    assert_eq!(opts.auth.nkeys[0].nkey, *a);
    assert_eq!(opts.auth.nkeys[0].account, None);
    assert!(
        opts.auth.nkeys[0].permissions.is_some(),
        "default permissions apply"
    );
    assert_eq!(opts.auth.nkeys[1].account.as_deref(), Some("A"));
    assert!(opts.auth.nonce_required());
    // The rendered config reads back the same.
    let again = load_ok(&opts.to_conf_string()).options;
    assert_eq!(again.auth.nkeys, opts.auth.nkeys);

    assert!(load_err(&format!(
        "authorization {{ users: [{{nkey: {a}, user: x}}] }}"
    ))
    .contains("nkey users do not take usernames or passwords"));
    let line = load_err("authorization {\n users: [{nkey: UBAD}] }");
    assert!(
        line.contains("test.conf:2:") && line.contains("not a valid public nkey for a user"),
        "{line}"
    );
    // An account key is not a user key.
    let account = nkeys::KeyPair::new_account().public_key();
    assert!(
        load_err(&format!("authorization {{ users: [{{nkey: {account}}}] }}"))
            .contains("not a valid public nkey")
    );
    assert!(load_err(&format!(
        "authorization {{ users: [{{nkey: {a}}}, {{nkey: {a}}}] }}"
    ))
    .contains("duplicate nkey user"));
    assert!(load_err(&format!(
        "authorization {{ token: t, users: [{{nkey: {a}}}] }}"
    ))
    .contains("cannot have a token and a users array"));
}

#[test]
fn operator_mode_loads_verified_accounts_and_refuses_the_rest() {
    use crate::jwt::encode;
    let op = nkeys::KeyPair::new_operator();
    let sys = nkeys::KeyPair::new_account();
    let acc = nkeys::KeyPair::new_account();
    let op_jwt = encode(
        &op,
        &serde_json::json!({"iss": op.public_key(), "sub": op.public_key(),
            "nats": {"type": "operator", "version": 2, "system_account": sys.public_key()}}),
    );
    let account = |signer: &nkeys::KeyPair, key: &nkeys::KeyPair| {
        encode(
            signer,
            &serde_json::json!({"iss": signer.public_key(), "sub": key.public_key(),
                "nats": {"type": "account", "version": 2,
                    "limits": {"conn": 5, "subs": -1, "payload": 1024},
                    "exports": [{"subject": "svc.>", "type": "service"}]}}),
        )
    };
    let conf = |preload: &str| {
        format!("operator: {op_jwt}\nresolver: MEMORY\nresolver_preload: {{\n{preload}\n}}\n")
    };
    let good = conf(&format!(
        "  {}: {}\n  {}: {}",
        sys.public_key(),
        account(&op, &sys),
        acc.public_key(),
        account(&op, &acc)
    ));
    let opts = load_ok(&good).options;
    assert_eq!(
        opts.system_account.as_deref(),
        Some(sys.public_key().as_str())
    );
    let a = opts
        .accounts
        .iter()
        .find(|a| a.name == acc.public_key())
        .expect("account from its JWT");
    assert_eq!(a.limits.max_connections, 5);
    assert_eq!(a.limits.max_subscriptions, 0, "-1 is unlimited");
    assert_eq!(a.limits.max_payload, 1024);
    assert_eq!(a.exports[0].kind, crate::options::ExportKind::Service);
    assert!(opts.auth.required() && opts.auth.nonce_required());

    // Signed by an operator nobody trusts; listed under another key; not a JWT.
    let stranger = nkeys::KeyPair::new_operator();
    let e = load_err(&conf(&format!(
        "  {}: {}",
        acc.public_key(),
        account(&stranger, &acc)
    )));
    assert!(
        e.contains("test.conf:4:") && e.contains("not signed by a trusted operator"),
        "{e}"
    );
    let e = load_err(&conf(&format!(
        "  {}: {}",
        sys.public_key(),
        account(&op, &acc)
    )));
    assert!(e.contains("the JWT is for account"), "{e}");
    assert!(load_err(&conf("  AXX: notajwt")).contains("account JWT: not a JWT"));
    // Operator mode wants a resolver and no configured users.
    assert!(load_err(&format!("operator: {op_jwt}\n")).contains("needs a resolver"));
    assert!(load_err(&format!(
        "operator: {op_jwt}\nresolver: MEMORY\nauthorization {{ users: [{{user: a, password: b}}] }}\n"
    ))
    .contains("operator mode takes its users from JWTs"));
    let e = load_err(&format!(
        "operator: {op_jwt}\nresolver: {{type: cache, dir: \"/nonexistent/jwt\"}}\n"
    ));
    assert!(
        e.contains("resolver type \"cache\" is not supported"),
        "{e}"
    );
    assert!(
        load_err(&format!("operator: {op_jwt}\nresolver: {{type: full}}\n"))
            .contains("a full resolver needs a dir")
    );
    // A directory resolver reads the account JWTs stored in its directory.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join(format!("{}.jwt", acc.public_key())),
        account(&op, &acc),
    )
    .expect("write");
    std::fs::write(dir.path().join("README"), "not a JWT").expect("write");
    let opts = load_ok(&format!(
        "operator: {op_jwt}\nresolver: {{type: full, dir: \"{}\"}}\n",
        dir.path().display()
    ))
    .options;
    assert!(opts.accounts.iter().any(|a| a.name == acc.public_key()));
    assert!(
        load_err("operator: /nonexistent/op.jwt\nresolver: MEMORY\n")
            .contains("cannot read JWT file /nonexistent/op.jwt")
    );
}

#[test]
fn rejected_auth_combinations() {
    assert_eq!(
        load_err("authorization {\n token: t\n user: u\n}\n"),
        "test.conf:1:15: authorization: cannot have a user/password and a token"
    );
    assert!(load_err("authorization { token: t, users: [{user: a}] }")
        .contains("cannot have a token and a users array"));
    assert!(load_err("authorization { user: t, users: [{user: a}] }")
        .contains("cannot have a single user/password and a users array"));
    assert!(load_err("authorization { users: [{user: a}, {user: a}] }")
        .contains("duplicate user \"a\""));
    assert!(
        load_err("authorization { users: [{password: a}] }").contains("a user entry needs 'user'")
    );
    assert!(
        load_err("authorization { users: [{user: a}] }\nno_auth_user: b\n")
            .contains("no_auth_user \"b\" is not one of")
    );
    assert_eq!(
        load_ok("authorization { users: [{user: a}] }\nno_auth_user: a\n")
            .options
            .no_auth_user
            .as_deref(),
        Some("a")
    );
}

#[test]
fn permission_forms() {
    let o = load_ok(concat!(
        "authorization {\n",
        "  default_permissions: { publish: \"_INBOX.>\" }\n",
        "  users: [\n",
        "    {user: a, password: pa, permissions: {publish: \"foo.*\", subscribe: [\"bar\", \"baz.> q\"]}}\n",
        "    {user: b, password: pb, permissions: {publish: {allow: [\"x\"], deny: \"y\"}, subscribe: {deny: [\">\"]}, allow_responses: true}}\n",
        "    {user: c, password: pc, permissions: {pub: {}, sub: x, allow_responses: {max: 5, expires: \"1m\"}}}\n",
        "    {user: d, password: pd, permissions: {allow_responses: {max: -1, expires: \"-1s\"}}}\n",
        "    {user: e, password: pe}\n",
        "  ]\n",
        "}\n",
    ))
    .options;
    let users = &o.auth.users;
    let perms = |i: usize| users[i].permissions.clone().unwrap();
    let allow = |v: &[&str]| SubjectPermission {
        allow: v.iter().map(|s| s.to_string()).collect(),
        deny: vec![],
    };
    assert_eq!(perms(0).publish, Some(allow(&["foo.*"])));
    assert_eq!(perms(0).subscribe, Some(allow(&["bar", "baz.> q"])));
    assert_eq!(
        perms(1).publish,
        Some(SubjectPermission {
            allow: vec!["x".into()],
            deny: vec!["y".into()]
        })
    );
    assert_eq!(
        perms(1).subscribe,
        Some(SubjectPermission {
            allow: vec![],
            deny: vec![">".into()]
        })
    );
    assert_eq!(
        perms(1).allow_responses,
        Some(ResponsePermission::default())
    );
    assert_eq!(perms(2).publish, None);
    assert_eq!(
        perms(2).allow_responses,
        Some(ResponsePermission {
            max_msgs: 5,
            expires: Duration::from_secs(60)
        })
    );
    assert_eq!(
        perms(3).allow_responses,
        Some(ResponsePermission {
            max_msgs: 0,
            expires: Duration::ZERO
        })
    );
    // Users without permissions get the defaults.
    assert_eq!(perms(4).publish, Some(allow(&["_INBOX.>"])));

    assert!(
        load_err("authorization { users: [{user: a, permissions: {publish: \"a b\"}}] }")
            .contains("subject \"a b\" is not a valid subject")
    );
    assert!(
        load_err("authorization { users: [{user: a, permissions: {publish: {allow: 1}}}] }")
            .contains("expected a subject or an array of subjects, got integer")
    );
    assert!(
        load_err("authorization { users: [{user: a, permissions: {pubish: x}}] }")
            .contains("unknown key 'authorization.users[0].permissions.pubish'")
    );
    assert!(
        load_err("authorization { users: [{user: a, permissions: {allow_responses: 1}}] }")
            .contains("expected a boolean or a map, got integer")
    );
}

#[test]
fn exports_and_imports_are_checked_like_nats_server() {
    let base = "accounts {\n  A: { exports: [{stream: \"pub.>\"}, {stream: \"priv.>\", accounts: [B]}, {service: \"svc\", response_type: stream}] }\n  B: {}\n  C: {}\n";
    let ok = load_ok(&format!(
        "{base}  D: {{ imports: [{{stream: {{account: A, subject: \"pub.x\"}}, prefix: p}}, {{service: {{account: A, subject: svc}}, to: s}}] }}\n}}\n"
    ));
    let d = &ok.options.accounts[3];
    assert_eq!(d.imports[0].local_subject(), "p.pub.x");
    assert_eq!(d.imports[1].local_subject(), "s");
    assert_eq!(
        ok.options.accounts[0].exports[2].response_type,
        crate::options::ResponseType::Stream
    );
    // Private export, importer not listed: refused with nats-server's words and the line.
    let e = load_err(&format!(
        "{base}  D: {{ imports: [{{stream: {{account: A, subject: \"priv.x\"}}}}] }}\n}}\n"
    ));
    assert!(e.contains("test.conf:5:"), "{e}");
    assert!(
        e.contains("Error adding stream import \"priv.x\": stream import not authorized"),
        "{e}"
    );
    let e = load_err(&format!(
        "{base}  D: {{ imports: [{{service: {{account: A, subject: nope}}}}] }}\n}}\n"
    ));
    assert!(e.contains("service import not authorized"), "{e}");
    let e = load_err(&format!(
        "{base}  D: {{ imports: [{{stream: {{account: Z, subject: x}}}}] }}\n}}\n"
    ));
    assert!(
        e.contains("\"Z\" account not defined for stream import"),
        "{e}"
    );
    let e = load_err("accounts { A: { exports: [{stream: x, response_type: stream}] } }\n");
    assert!(e.contains("response directive on non-service"), "{e}");
    let limits = load_ok(
        "accounts { A: { limits: {max_connections: 2, max_subs: 5, max_payload: 100} } }\n",
    );
    assert_eq!(
        limits.options.accounts[0].limits,
        crate::options::AccountLimits {
            max_connections: 2,
            max_subscriptions: 5,
            max_payload: 100
        }
    );
}

#[test]
fn system_account_must_exist() {
    let opts = load_ok("accounts { SYS: {} }\nsystem_account: SYS\n").options;
    assert_eq!(opts.system_account_name(), Some("SYS"));
    assert_eq!(load_ok("").options.system_account_name(), Some("$SYS"));
    assert_eq!(
        load_ok("no_system_account: true\n")
            .options
            .system_account_name(),
        None
    );
    assert!(load_err("system_account: NOPE\n")
        .contains("system_account \"NOPE\" is not one of the accounts"));
}

#[test]
fn cross_option_validation() {
    assert!(load_err("max_payload: 2MB\nmax_pending: 1MB\n")
        .contains("max_payload (2097152) cannot be higher than max_pending (1048576)"));
    assert!(
        load_err("lame_duck_duration: \"30s\"\nlame_duck_grace_period: \"30s\"\n")
            .contains("must be shorter")
    );
}

fn sample_options() -> Options {
    Options {
        server_name: Some("n-1".into()),
        host: IpAddr::from([127, 0, 0, 1]),
        port: 0,
        client_advertise: Some("a.example:4222".into()),
        http_port: Some(8222),
        http_host: Some("::1".parse().unwrap()),
        https_port: None,
        max_payload: 123_456,
        max_control_line: 1000,
        max_pending: 1 << 30,
        max_connections: 0,
        max_subscriptions: 7,
        ping_interval: Duration::from_millis(1500),
        ping_max: 9,
        write_deadline: Duration::from_secs(3),
        spin_wait: Duration::from_micros(40),
        lame_duck_duration: Duration::from_secs(3600),
        lame_duck_grace_period: Duration::ZERO,
        auth: Authorization {
            users: vec![
                User {
                    user: "alice".into(),
                    password: "$2a$11$hash\"with\\odd chars".into(),
                    permissions: Some(Permissions {
                        publish: Some(SubjectPermission {
                            allow: vec!["a.>".into()],
                            deny: vec!["a.b".into()],
                        }),
                        subscribe: Some(SubjectPermission {
                            allow: vec![],
                            deny: vec![],
                        }),
                        allow_responses: Some(ResponsePermission {
                            max_msgs: 0,
                            expires: Duration::ZERO,
                        }),
                    }),
                    account: None,
                },
                User {
                    user: "bob".into(),
                    password: "true".into(),
                    permissions: None,
                    account: Some("B".into()),
                },
            ],
            timeout: Duration::from_millis(2500),
            ..Authorization::default()
        },
        no_auth_user: Some("bob".into()),
        accounts: vec![
            AccountOptions {
                name: "B".into(),
                exports: vec![
                    crate::options::Export {
                        kind: crate::options::ExportKind::Stream,
                        subject: "feed.>".into(),
                        accounts: None,
                        response_type: crate::options::ResponseType::Singleton,
                        response_threshold: crate::options::DEFAULT_RESPONSE_THRESHOLD,
                    },
                    crate::options::Export {
                        kind: crate::options::ExportKind::Service,
                        subject: "svc.*".into(),
                        accounts: Some(vec!["empty".into()]),
                        response_type: crate::options::ResponseType::Stream,
                        response_threshold: Duration::from_secs(5),
                    },
                ],
                limits: crate::options::AccountLimits {
                    max_connections: 10,
                    max_subscriptions: 0,
                    max_payload: 1024,
                },
                ..AccountOptions::default()
            },
            AccountOptions {
                name: "empty".into(),
                imports: vec![
                    crate::options::Import {
                        kind: crate::options::ExportKind::Stream,
                        account: "B".into(),
                        subject: "feed.x".into(),
                        to: None,
                        prefix: Some("b".into()),
                    },
                    crate::options::Import {
                        kind: crate::options::ExportKind::Service,
                        account: "B".into(),
                        subject: "svc.echo".into(),
                        to: Some("echo".into()),
                        prefix: None,
                    },
                ],
                ..AccountOptions::default()
            },
        ],
        system_account: Some("B".into()),
        no_system_account: false,
        tls: None,
        debug: true,
        trace: false,
        logtime: false,
        log_file: Some("/var/log/midge log".into()),
        log_json: true,
        pid_file: Some("C:\\midge.pid".into()),
        config_file: None,
        cluster: crate::options::ClusterOptions {
            name: Some("demo".into()),
            host: IpAddr::from([10, 0, 0, 1]),
            port: Some(6222),
            routes: vec![
                "nats://demo-0.demo-headless:6222".into(),
                "nats://u:p@[::1]:7".into(),
            ],
            user: Some("ru".into()),
            password: Some("r p".into()),
            auth_timeout: Duration::from_secs(3),
            advertise: Some("demo-0:6222".into()),
            no_advertise: true,
            connect_retries: 7,
            tls: None,
        },
        leafnodes: crate::options::LeafOptions {
            port: Some(7422),
            advertise: Some("hub.example:7422".into()),
            users: vec![User {
                user: "edge".into(),
                password: "e p".into(),
                permissions: None,
                account: Some("B".into()),
            }],
            remotes: vec![crate::options::RemoteLeaf {
                urls: vec!["nats-leaf://u:p@cloud:7422".into(), "nats://other".into()],
                account: Some("B".into()),
                deny_imports: vec!["secret.>".into()],
                deny_exports: vec!["local.*".into(), "x".into()],
                tls: None,
            }],
            ..crate::options::LeafOptions::default()
        },
        config_watch: true,
        jetstream: Some(crate::options::JetStreamOptions {
            store_dir: Some("/var/lib/midge".into()),
            max_memory: Some(1 << 30),
            max_file: Some(10 << 30),
            domain: Some("edge".into()),
            sync: crate::options::JetStreamSync::Always,
            ..crate::options::JetStreamOptions::default()
        }),
        allow_non_tls: true,
        websocket: crate::options::WebsocketOptions {
            host: IpAddr::from([127, 0, 0, 1]),
            port: Some(8080),
            advertise: Some("ws.example:443".into()),
            no_tls: true,
            same_origin: true,
            allowed_origins: vec!["https://app.example".into()],
            compression: true,
            handshake_timeout: Duration::from_secs(5),
            no_auth_user: Some("bob".into()),
            auth_timeout: Some(Duration::from_millis(1500)),
            ..crate::options::WebsocketOptions::default()
        },
    }
}

#[test]
fn websocket_block() {
    let ws = load_ok(
        "websocket {\n  listen: \"127.0.0.1:8443\"\n  no_tls: true\n  compression: true\n  allowed_origins: [\"http://a.example:8080\"]\n  authorization { user: u, password: p, timeout: 3 }\n}\n",
    )
    .options
    .websocket;
    assert_eq!(ws.port, Some(8443));
    assert!(ws.compression && ws.no_tls);
    assert_eq!(ws.user.as_deref(), Some("u"));
    assert_eq!(ws.auth_timeout, Some(Duration::from_secs(3)));
    assert_eq!(
        load_err("websocket {\n  port: 8443\n}\n"),
        "test.conf:1:11: websocket: websocket requires TLS configuration (a tls {} block, or no_tls: true)"
    );
    let e =
        load_err("websocket {\n  port: 1\n  no_tls: true\n  allowed_origins: [\"ftp://x\"]\n}\n");
    assert!(
        e.starts_with("test.conf:4:") && e.contains("the scheme must be http or https"),
        "{e}"
    );
    let e = load_err("websocket { port: 1, no_tls: true, no_auth_user: ghost }\n");
    assert!(
        e.contains("no_auth_user \"ghost\" is not one of the authorization users"),
        "{e}"
    );
    let e = load_err(
        "authorization { users: [{user: a, password: b}] }\nwebsocket { port: 1, no_tls: true, authorization { token: t } }\n",
    );
    assert!(
        e.contains("token not compatible with presence of users"),
        "{e}"
    );
    let loaded = load_ok("websocket { port: 1, no_tls: true, jwt_cookie: my_jwt }\n");
    assert_eq!(
        loaded.options.websocket.jwt_cookie.as_deref(),
        Some("my_jwt")
    );
    assert_eq!(loaded.warnings.len(), 1);
}

#[test]
fn tls_handshake_first() {
    let pki = crate::tls::test_pki::generate();
    let (cert, key) = (pki.cert.display(), pki.key.display());
    let text =
        format!("tls {{ cert_file: \"{cert}\", key_file: \"{key}\", handshake_first: true }}\n");
    let opts = load_ok(&text).options;
    let tls = opts.tls.as_ref().expect("tls");
    assert!(tls.handshake_first);
    assert_eq!(load_ok(&opts.to_conf_string()).options.tls, opts.tls);
    let e = load_err(&format!(
        "tls {{ cert_file: \"{cert}\", key_file: \"{key}\", handshake_first: \"300ms\" }}\n"
    ));
    assert!(e.contains("a fallback delay is not supported yet"), "{e}");
    let e = load_err(&format!(
        "leafnodes {{ port: 1, tls {{ cert_file: \"{cert}\", key_file: \"{key}\", handshake_first: true }} }}\n"
    ));
    assert!(
        e.contains("handshake_first is supported for client connections only"),
        "{e}"
    );
}

#[test]
fn to_conf_string_round_trips() {
    let cases = [
        Options::default(),
        sample_options(),
        Options {
            auth: Authorization {
                token: Some("$secret".into()),
                ..Authorization::default()
            },
            ..Options::default()
        },
        Options {
            auth: Authorization {
                user: Some("u".into()),
                password: Some("p w".into()),
                ..Authorization::default()
            },
            ..Options::default()
        },
    ];
    for options in cases {
        let text = options.to_conf_string();
        let back = load(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back.options, options, "{text}");
        assert!(back.warnings.is_empty(), "{:?}", back.warnings);
    }
}

#[test]
fn tls_block() {
    let pki = crate::tls::test_pki::generate();
    let (cert, key, ca) = (
        pki.cert.display().to_string(),
        pki.key.display().to_string(),
        pki.ca.display().to_string(),
    );
    let text = format!(
        "tls {{\n  cert_file: \"{cert}\"\n  key_file: \"{key}\"\n  ca_file: \"{ca}\"\n  \
         verify: true\n  timeout: 0.5\n  cipher_suites: [\"TLS_AES_128_GCM_SHA256\"]\n}}\n"
    );
    let loaded = load_ok(&text);
    let tls = loaded.options.tls.clone().unwrap();
    assert_eq!(tls.cert_file, pki.cert);
    assert_eq!(tls.ca_file.as_ref(), Some(&pki.ca));
    assert!(tls.verify);
    assert_eq!(tls.timeout, Duration::from_millis(500));
    // nats-server: with TLS, the auth timeout defaults to the TLS timeout plus a second.
    assert_eq!(loaded.options.auth_timeout(), Duration::from_millis(1500));
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(loaded.warnings[0]
        .to_string()
        .contains("cipher_suites: ignored"));
    let rendered = loaded.options.to_conf_string();
    assert_eq!(load_ok(&rendered).options, loaded.options, "{rendered}");
    assert!(!loaded.options.allow_non_tls);

    // allow_non_tls: at the top level as in nats-server (before or after the block), or
    // inside the block.
    let block = format!("tls {{ cert_file: \"{cert}\", key_file: \"{key}\" }}\n");
    for text in [
        format!("allow_non_tls: true\n{block}"),
        format!("{block}allow_non_tls: true\n"),
        format!("tls {{ cert_file: \"{cert}\", key_file: \"{key}\", allow_non_tls: true }}\n"),
    ] {
        assert!(load_ok(&text).options.allow_non_tls, "{text}");
    }
    assert!(load_err("allow_non_tls: 1\n").contains("allow_non_tls: expected a boolean"));

    // File problems point at the line that names the file, and name it.
    let e = load_err(&format!(
        "tls {{\n  cert_file: \"{cert}\"\n  key_file: \"/nonexistent/k.pem\"\n}}\n"
    ));
    assert!(e.starts_with("test.conf:3:"), "{e}");
    assert!(
        e.contains("tls.key_file: cannot read key file '/nonexistent/k.pem'"),
        "{e}"
    );
    let other = pki.other_key.display().to_string();
    let e = load_err(&format!(
        "tls {{\n  cert_file: \"{cert}\"\n  key_file: \"{other}\"\n}}\n"
    ));
    assert!(
        e.starts_with("test.conf:3:") && e.contains("cannot be used together"),
        "{e}"
    );
    let e = load_err(&format!(
        "tls {{\n  cert_file: \"{key}\"\n  key_file: \"{key}\"\n}}\n"
    ));
    assert!(
        e.starts_with("test.conf:2:") && e.contains("no PEM certificate"),
        "{e}"
    );
    let e = load_err(&format!(
        "tls {{\n  cert_file: \"{cert}\"\n  key_file: \"{key}\"\n  verify: true\n}}\n"
    ));
    assert!(
        e.starts_with("test.conf:4:") && e.contains("verify needs ca_file"),
        "{e}"
    );
    assert!(load_err("tls {}\n").contains("cert_file and key_file are both required"));
    assert!(load_err("tls { verify_and_map: true }\n").contains("cert_file and key_file"));
    assert!(load_err("tls { cert_store: x }\n").ends_with("not supported by midge yet"));
    assert!(load_err("tls { colour: red }\n").contains("unknown key 'tls.colour'"));
}

proptest::proptest! {
    #[test]
    fn parser_never_panics(text in "\\PC{0,200}") {
        let _ = parse_str(&text, "fuzz.conf").map(|m| Options::from_conf(&m));
    }

    #[test]
    fn parser_never_panics_on_config_alphabet(text in "[a-z0-9 \t\n{}\\[\\]:=;,#/\"'()$.\\\\-]{0,200}") {
        let _ = parse_str(&text, "fuzz.conf").map(|m| Options::from_conf(&m));
    }
}

#[test]
fn accounts_and_their_users() {
    let loaded = load_ok(
        "no_auth_user: guest\n\
         authorization { users: [{user: admin, password: a}] }\n\
         accounts {\n  A: { users: [{user: alice, password: a1}, {user: guest, password: g}] }\n  B: {}\n}\n",
    );
    let o = &loaded.options;
    let names: Vec<&str> = o.account_names().collect();
    assert_eq!(names, ["A", "B"]);
    let account_of = |name: &str| {
        o.auth
            .users
            .iter()
            .find(|u| u.user == name)
            .map(|u| u.account.clone())
    };
    assert_eq!(account_of("admin"), Some(None));
    assert_eq!(account_of("alice"), Some(Some("A".into())));
    assert_eq!(account_of("guest"), Some(Some("A".into())));
}

#[test]
fn account_errors_name_the_place() {
    let e = load_err("authorization { users: [{user: a, password: x}] }\naccounts { A: { users: [{user: a, password: y}] } }\n");
    assert!(
        e.contains("test.conf:2") && e.contains("duplicate user \"a\""),
        "{e}"
    );
    let e = load_err("accounts { A: { users: [{user: a, password: y}], colour: red } }\n");
    assert!(e.contains("accounts.A.colour"), "{e}");
    let e = load_err("accounts { \"a b\": {} }\n");
    assert!(e.contains("invalid account name"), "{e}");
}

/// The operator checks a config before the Secret volumes holding its certificates exist:
/// everything but the files is checked as by `midge -c`.
#[test]
fn without_files_checks_everything_but_the_certificates() {
    let text = "tls {\n  cert_file: \"/absent/tls.crt\"\n  key_file: \"/absent/tls.key\"\n  ca_file: \"/absent/ca.crt\"\n  verify: true\n}\n\
                leafnodes {\n  remotes: [{url: \"nats://hub:7422\", tls: {ca_file: \"/absent/ca.crt\"}}]\n}\n";
    let map = parse(text);
    let e = Options::from_conf(&map).unwrap_err().to_string();
    assert!(e.contains("cannot read"), "{e}");
    let loaded =
        Options::from_conf_without_files(&map, std::path::Path::new("/etc/midge/midge.conf"))
            .unwrap_or_else(|e| panic!("{e}"));
    let tls = loaded.options.tls.expect("tls kept");
    assert_eq!(tls.cert_file, PathBuf::from("/absent/tls.crt"));
    assert!(tls.verify);
    assert_eq!(
        loaded.options.config_file,
        Some(PathBuf::from("/etc/midge/midge.conf"))
    );

    // Whatever is refused for another reason still is.
    let e = Options::from_conf_without_files(
        &parse("cluster {\n  port: 6222\n  tls {\n    cert_file: \"/a\"\n    key_file: \"/b\"\n  }\n}\nlame_duck_duration: \"10s\"\n"),
        std::path::Path::new("midge.conf"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("test.conf:3:7: cluster.tls: cluster tls needs ca_file"),
        "{e}"
    );
    assert!(e.contains("lame_duck_duration: 10s is too short"), "{e}");
    let e = Options::from_conf_without_files(
        &parse("lame_duck_duration: \"30s\"\nlame_duck_grace_period: \"40s\"\n"),
        std::path::Path::new("/etc/midge/midge.conf"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("/etc/midge/midge.conf: lame_duck_grace_period"),
        "{e}"
    );
}

#[test]
fn pinned_certs_and_cluster_tls_errors_name_the_line() {
    let e = load_err("tls { cert_file: c, key_file: k, pinned_certs: [\"abc\"] }\n");
    assert!(
        e.starts_with("test.conf:1:") && e.contains("64 hex digits"),
        "{e}"
    );
    let e = load_err("cluster { port: 1, tls { cert_file: c, key_file: k, insecure: true } }\n");
    assert!(e.contains("always verifies route certificates"), "{e}");
    let e = load_err(
        "websocket { port: 1, tls { cert_file: c, key_file: k, verify_and_map: true } }\n",
    );
    assert!(e.contains("top-level tls block only"), "{e}");
}
