//! Feeds arbitrary bytes to every parser (client, server, route): they must never panic, must make progress on
//! every op, and must give the same answer whether the bytes arrive whole or split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use midge_proto::parser::{
    parse_client_op, parse_route_op, parse_server_op, Limits, ParseError, Parsed,
};

/// Small limits so that the limit paths are reached by short inputs.
const SMALL: Limits = Limits {
    max_control_line: 32,
    max_payload: 64,
};

/// A parse function with its op rendered as text, so ops from different buffers compare.
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

/// Parses `input` from the start until it runs out or fails; returns the ops with their end
/// offsets and how it stopped, so a split feed can be compared with a whole one.
fn run(
    input: &[u8],
    limits: &Limits,
    parse: ParseFn,
) -> (Vec<(String, usize)>, Result<usize, ParseError>) {
    let mut ends = Vec::new();
    let mut at = 0;
    loop {
        match parse(&input[at..], limits) {
            Ok(Parsed::Op(op, n)) => {
                assert!(n > 0, "no progress");
                assert!(n <= input.len() - at, "consumed past the end");
                at += n;
                ends.push((op, at));
            }
            Ok(Parsed::Incomplete { need }) => {
                assert!(need > input.len() - at, "asked for bytes it already has");
                return (ends, Ok(need));
            }
            Err(e) => return (ends, Err(e)),
        }
    }
}

/// The same, but the buffer grows in two steps split at `cut`.
fn run_split(
    input: &[u8],
    cut: usize,
    limits: &Limits,
    parse: ParseFn,
) -> (Vec<(String, usize)>, Option<ParseError>) {
    let mut ends = Vec::new();
    let mut at = 0;
    for len in [cut, input.len()] {
        loop {
            match parse(&input[at..len], limits) {
                Ok(Parsed::Op(op, n)) => {
                    at += n;
                    ends.push((op, at));
                }
                Ok(Parsed::Incomplete { .. }) => break,
                Err(e) => return (ends, Some(e)),
            }
        }
    }
    (ends, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(input.len());
    for limits in [Limits::default(), SMALL] {
        let (ends, end) = run(input, &limits, client);
        assert_eq!(
            run_split(input, cut, &limits, client),
            (ends, end.err()),
            "client parse depends on the split"
        );
        let (ends, end) = run(input, &limits, server);
        assert_eq!(
            run_split(input, cut, &limits, server),
            (ends, end.err()),
            "server parse depends on the split"
        );
        let (ends, end) = run(input, &limits, route);
        assert_eq!(
            run_split(input, cut, &limits, route),
            (ends, end.err()),
            "route parse depends on the split"
        );
    }
});
