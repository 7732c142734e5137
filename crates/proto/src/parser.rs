//! CONTRACT (to be implemented): see the issue; types below are the agreed API.

/// Limits the parser enforces while it reads a control line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest control line accepted (the line without its `\r\n`). nats-server: 4096.
    pub max_control_line: usize,
    /// Largest PUB/HPUB total size accepted. nats-server: 1 MiB. Negative sizes never parse.
    pub max_payload: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_control_line: 4096,
            max_payload: 1024 * 1024,
        }
    }
}

/// One operation a client sends. Every slice borrows from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientOp<'a> {
    /// `CONNECT <json>`: the JSON text as sent.
    Connect(&'a [u8]),
    /// `PUB <subject> [reply] <#bytes>` and its payload.
    Pub {
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
        payload: &'a [u8],
    },
    /// `HPUB <subject> [reply] <#hdr> <#total>`: `headers` is the first #hdr bytes, `payload` the rest.
    HPub {
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
        headers: &'a [u8],
        payload: &'a [u8],
    },
    /// `SUB <subject> [queue] <sid>`.
    Sub {
        subject: &'a [u8],
        queue: Option<&'a [u8]>,
        sid: &'a [u8],
    },
    /// `UNSUB <sid> [max]`.
    Unsub {
        sid: &'a [u8],
        max: Option<u64>,
    },
    Ping,
    Pong,
    /// `INFO <json>` from a client: ignored by servers, but parsed.
    Info(&'a [u8]),
    /// `+OK`.
    Ok,
    /// `-ERR <text>`: the text after the op, quotes kept.
    Err(&'a [u8]),
}

/// One operation a server sends to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerOp<'a> {
    Info(&'a [u8]),
    Msg {
        subject: &'a [u8],
        sid: &'a [u8],
        reply: Option<&'a [u8]>,
        payload: &'a [u8],
    },
    HMsg {
        subject: &'a [u8],
        sid: &'a [u8],
        reply: Option<&'a [u8]>,
        headers: &'a [u8],
        payload: &'a [u8],
    },
    Ping,
    Pong,
    Ok,
    Err(&'a [u8]),
}

/// Outcome of one parse call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<T> {
    /// A whole operation and how many bytes of the input it used.
    Op(T, usize),
    /// More input is needed; the operation is complete once the buffer holds at least
    /// `need` bytes (a lower bound: for a payload it is exact, for a control line it is
    /// `buf.len() + 1`).
    Incomplete { need: usize },
}

/// Why input was rejected. The server maps each to nats-server's reaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown protocol operation")]
    UnknownOp,
    #[error("maximum control line exceeded")]
    ControlLineTooLong,
    #[error("maximum payload exceeded: {size} > {max}")]
    PayloadTooLarge { size: usize, max: usize },
    #[error("malformed {op} arguments")]
    BadArgs { op: &'static str },
    #[error("payload not followed by CRLF")]
    MissingPayloadTerminator,
}

/// Parses one client operation from the start of `buf`.
pub fn parse_client_op<'a>(
    _buf: &'a [u8],
    _limits: &Limits,
) -> Result<Parsed<ClientOp<'a>>, ParseError> {
    Err(ParseError::UnknownOp)
}

/// Parses one server operation from the start of `buf` (for clients such as the bench tool).
pub fn parse_server_op<'a>(
    _buf: &'a [u8],
    _limits: &Limits,
) -> Result<Parsed<ServerOp<'a>>, ParseError> {
    Err(ParseError::UnknownOp)
}
