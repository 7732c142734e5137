//! Subject transforms of streams (`subject_transform`, `republish`): a source subject with
//! wildcards and a destination that places the tokens the wildcards matched, written
//! `{{wildcard(n)}}` or `$n` (the n-th wildcard of the source, from 1), or a `*` (the next
//! `*` of the source, in order) and a final `>` (the tokens the source's `>` matched).
//! nats-server's other functions (`partition`, `split`, ...) are refused.

/// One token of a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// The n-th (0-based) single-token wildcard of the source.
    Wildcard(usize),
    /// The tokens the source's `>` matched.
    Tail,
}

/// A checked transform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transform {
    src: String,
    dest: Vec<Part>,
}

impl Transform {
    /// `src` (empty: `>`) to `dest`; an error says what is wrong.
    pub fn new(src: &str, dest: &str) -> Result<Transform, String> {
        let src = if src.is_empty() { ">" } else { src };
        if !midge_proto::subject::is_valid_subject(src.as_bytes()) {
            return Err(format!("invalid transform source {src:?}"));
        }
        let stars = src.split('.').filter(|t| *t == "*").count();
        let src_tail = src.ends_with('>') && (src == ">" || src.ends_with(".>"));
        let mut parts = Vec::new();
        let mut next_star = 0;
        let tokens: Vec<&str> = dest.split('.').collect();
        for (i, token) in tokens.iter().enumerate() {
            let part = if let Some(n) = wildcard_ref(token)? {
                if n == 0 || n > stars {
                    return Err(format!(
                        "transform destination {dest:?} names wildcard {n} of a source with {stars}"
                    ));
                }
                Part::Wildcard(n - 1)
            } else if *token == "*" {
                if next_star >= stars {
                    return Err(format!(
                        "transform destination {dest:?} has more wildcards than its source"
                    ));
                }
                next_star += 1;
                Part::Wildcard(next_star - 1)
            } else if *token == ">" {
                if i + 1 != tokens.len() || !src_tail {
                    return Err(format!(
                        "transform destination {dest:?}: '>' needs a source ending in '>'"
                    ));
                }
                Part::Tail
            } else if token.is_empty() || token.contains(['*', '>', ' ']) {
                return Err(format!("invalid transform destination {dest:?}"));
            } else {
                Part::Literal((*token).to_string())
            };
            parts.push(part);
        }
        Ok(Transform {
            src: src.to_string(),
            dest: parts,
        })
    }

    /// The transformed subject, `None` when `subject` does not match the source.
    pub fn apply(&self, subject: &str) -> Option<String> {
        if !midge_proto::subject::matches(self.src.as_bytes(), subject.as_bytes()) {
            return None;
        }
        let src: Vec<&str> = self.src.split('.').collect();
        let subj: Vec<&str> = subject.split('.').collect();
        let mut stars = Vec::new();
        let mut tail = "";
        for (i, t) in src.iter().enumerate() {
            match *t {
                "*" => stars.push(*subj.get(i)?),
                ">" => {
                    let offset: usize = subj[..i].iter().map(|s| s.len() + 1).sum();
                    tail = subject.get(offset..)?;
                }
                _ => {}
            }
        }
        let mut out = String::with_capacity(subject.len() + 8);
        for (i, part) in self.dest.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Wildcard(n) => out.push_str(stars.get(*n)?),
                Part::Tail => out.push_str(tail),
            }
        }
        Some(out)
    }
}

/// `{{wildcard(n)}}` (any case, spaces allowed) or `$n`: `Some(n)`; another function: an
/// error; a plain token: `None`.
fn wildcard_ref(token: &str) -> Result<Option<usize>, String> {
    if let Some(n) = token.strip_prefix('$') {
        return n
            .parse()
            .map(Some)
            .map_err(|_| format!("invalid transform reference {token:?}"));
    }
    let Some(inner) = token
        .strip_prefix("{{")
        .and_then(|t| t.strip_suffix("}}"))
        .map(str::trim)
    else {
        return Ok(None);
    };
    let lower = inner.to_ascii_lowercase();
    let arg = lower
        .strip_prefix("wildcard(")
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("transform function {inner:?} is not supported by midge yet"))?;
    arg.trim()
        .parse()
        .map(Some)
        .map_err(|_| format!("invalid transform reference {token:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_move_to_their_places() {
        let t = Transform::new("orders.*.*", "shipped.{{wildcard(2)}}.$1").expect("valid");
        assert_eq!(t.apply("orders.eu.42").as_deref(), Some("shipped.42.eu"));
        assert_eq!(t.apply("other.eu.42"), None);
        let t = Transform::new("a.*.>", "b.*.>").expect("valid");
        assert_eq!(t.apply("a.x.y.z").as_deref(), Some("b.x.y.z"));
        let t = Transform::new("", "archive.>").expect("valid");
        assert_eq!(t.apply("k.v").as_deref(), Some("archive.k.v"));
        let t = Transform::new("in", "out").expect("valid");
        assert_eq!(t.apply("in").as_deref(), Some("out"));
    }

    #[test]
    fn bad_transforms_are_refused() {
        assert!(Transform::new("a.*", "b.$2").is_err());
        assert!(Transform::new("a.*", "b.*.*").is_err());
        assert!(Transform::new("a.*", "b.>").is_err());
        assert!(Transform::new("a.*", "{{partition(3,1)}}").is_err());
        assert!(Transform::new("a..b", "c").is_err());
    }
}
