//! Subject and queue-name rules, and wildcard matching.
//!
//! Subjects are `.`-separated tokens. A token that is exactly `*` matches any one token and
//! a last token that is exactly `>` matches one or more tokens. As in nats-server, `*` and
//! `>` are wildcards only when they are a whole token: `foo*` or `a>b` are ordinary literal
//! tokens, so a client may publish to them and subscribe to them.
//!
//! Every function is a byte loop over the input with no allocation: these run for each SUB
//! and, in pedantic mode, each PUB.

const SEP: u8 = b'.';

/// Whitespace nats-server refuses inside a subject.
#[inline]
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

/// Whether `subject` may be subscribed to: non-empty tokens, no whitespace, and a `>`
/// token only in last position.
pub fn is_valid_subject(subject: &[u8]) -> bool {
    if subject.is_empty() {
        return false;
    }
    let mut after_fwc = false;
    for token in subject.split(|&b| b == SEP) {
        if token.is_empty() || after_fwc {
            return false;
        }
        if token == b">" {
            after_fwc = true;
        } else if token.iter().any(|&b| is_space(b)) {
            return false;
        }
    }
    true
}

/// Whether `subject` contains no wildcard token. Does not check validity, so the
/// subscription cache can use it on subjects that were checked before.
pub fn is_literal(subject: &[u8]) -> bool {
    !subject.split(|&b| b == SEP).any(|t| t == b"*" || t == b">")
}

/// Whether `subject` may be published to: valid and without wildcards. The server only
/// warns about violations, and only in pedantic mode, as nats-server does.
pub fn is_valid_literal_subject(subject: &[u8]) -> bool {
    is_valid_subject(subject) && is_literal(subject)
}

/// Whether `queue` may name a queue group: non-empty and without whitespace. Dots and
/// wildcard characters carry no meaning in a queue name, so they are allowed.
pub fn is_valid_queue_name(queue: &[u8]) -> bool {
    !queue.is_empty() && !queue.iter().any(|&b| is_space(b))
}

/// Whether the literal `subject` is matched by `pattern` (which may contain wildcards).
///
/// Both are assumed valid (see [`is_valid_subject`]); for a `>` that is not last the
/// result is unspecified but never a panic.
pub fn matches(pattern: &[u8], subject: &[u8]) -> bool {
    if pattern.is_empty() || subject.is_empty() {
        return false;
    }
    let mut pattern = pattern.split(|&b| b == SEP);
    let mut subject = subject.split(|&b| b == SEP);
    loop {
        match (pattern.next(), subject.next()) {
            (None, None) => return true,
            (Some(b">"), Some(_)) => return true,
            (Some(b"*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            _ => return false,
        }
    }
}

/// Whether every subject matched by `subject` is also matched by `test` (both may contain
/// wildcards). Permission checks use this to decide whether a wildcard subscription stays
/// inside what a user is allowed.
pub fn subset_match(subject: &[u8], test: &[u8]) -> bool {
    if subject.is_empty() || test.is_empty() {
        return false;
    }
    let mut subject = subject.split(|&b| b == SEP);
    let mut test = test.split(|&b| b == SEP);
    loop {
        match (test.next(), subject.next()) {
            (None, None) => return true,
            (Some(b">"), Some(_)) => return true,
            // `>` in the subject covers more than any single test token can.
            (Some(_), Some(b">")) => return false,
            (Some(b"*"), Some(_)) => {}
            // A literal test token cannot cover a `*` in the subject.
            (Some(t), Some(s)) if t == s && s != b"*" => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_subjects() {
        for s in [
            &b"foo"[..],
            b"foo.bar",
            b"*",
            b">",
            b"foo.*",
            b"foo.>",
            b"*.bar.>",
            b"foo*.b>r",
            b"a.*.*.c",
            b"_INBOX.abc.*",
        ] {
            assert!(is_valid_subject(s), "{:?}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn invalid_subjects() {
        for s in [
            &b""[..],
            b".",
            b"foo.",
            b".foo",
            b"foo..bar",
            b"foo bar",
            b"foo\tbar",
            b"foo\r",
            b"foo\n.bar",
            b"foo\x0c",
            b">.foo",
            b"foo.>.bar",
            b"foo.>.>",
        ] {
            assert!(!is_valid_subject(s), "{:?}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn literal_subjects() {
        assert!(is_valid_literal_subject(b"foo.bar"));
        assert!(is_valid_literal_subject(b"foo*.>bar"));
        assert!(!is_valid_literal_subject(b"foo.*"));
        assert!(!is_valid_literal_subject(b"foo.>"));
        assert!(!is_valid_literal_subject(b"*"));
        assert!(!is_valid_literal_subject(b"foo..bar"));
        assert!(!is_valid_literal_subject(b""));
        assert!(is_literal(b"a.b.c"));
        assert!(!is_literal(b"a.*.c"));
        assert!(!is_literal(b">"));
    }

    #[test]
    fn queue_names() {
        assert!(is_valid_queue_name(b"workers"));
        assert!(is_valid_queue_name(b"workers.v1"));
        assert!(!is_valid_queue_name(b""));
        assert!(!is_valid_queue_name(b"a b"));
        assert!(!is_valid_queue_name(b"a\tb"));
    }

    #[test]
    fn wildcard_matching() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"foo", b"foo", true),
            (b"foo", b"bar", false),
            (b"foo", b"foo.bar", false),
            (b"foo.bar", b"foo", false),
            (b"foo.*", b"foo.bar", true),
            (b"foo.*", b"foo", false),
            (b"foo.*", b"foo.bar.baz", false),
            (b"*.bar", b"foo.bar", true),
            (b"*", b"foo", true),
            (b"*", b"foo.bar", false),
            (b">", b"foo", true),
            (b">", b"foo.bar.baz", true),
            (b"foo.>", b"foo", false),
            (b"foo.>", b"foo.bar", true),
            (b"foo.>", b"foo.bar.baz", true),
            (b"foo.*.>", b"foo.bar", false),
            (b"foo.*.>", b"foo.bar.baz", true),
            (b"foo*", b"foo*", true),
            (b"foo*", b"fooX", false),
            (b"", b"foo", false),
            (b"foo", b"", false),
        ];
        for &(p, s, want) in cases {
            assert_eq!(
                matches(p, s),
                want,
                "{} ~ {}",
                String::from_utf8_lossy(p),
                String::from_utf8_lossy(s)
            );
        }
    }

    #[test]
    fn subset_matching() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            (b"foo.bar", b"foo.bar", true),
            (b"foo.bar", b"foo.*", true),
            (b"foo.bar", b">", true),
            (b"foo.*", b"foo.*", true),
            (b"foo.*", b"foo.>", true),
            (b"foo.*", b"foo.bar", false),
            (b"foo.>", b"foo.*", false),
            (b"foo.>", b"foo.>", true),
            (b">", b"foo.>", false),
            (b"foo", b"foo.>", false),
            (b"foo.bar.baz", b"foo.*", false),
        ];
        for &(s, t, want) in cases {
            assert_eq!(
                subset_match(s, t),
                want,
                "{} <= {}",
                String::from_utf8_lossy(s),
                String::from_utf8_lossy(t)
            );
        }
    }
}
