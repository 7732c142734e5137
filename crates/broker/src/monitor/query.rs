//! Query strings and the typed parameters of the monitoring endpoints. Parse errors become
//! 400 answers whose text follows nats-server's (`Error decoding int for 'limit': ...`).

/// A bad query parameter, answered with 400 and this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum QueryError {
    #[error("Error decoding query string: bad percent-encoding in {0:?}")]
    Encoding(String),
    #[error("Error decoding boolean for '{param}': invalid syntax {value:?}")]
    Bool { param: &'static str, value: String },
    #[error("Error decoding int for '{param}': invalid syntax {value:?}")]
    Int { param: &'static str, value: String },
    #[error("Error decoding uint64 for '{param}': invalid syntax {value:?}")]
    Uint { param: &'static str, value: String },
    #[error("Error decoding state for {0}")]
    State(String),
    #[error("invalid sorting option: {0}")]
    Sort(String),
    #[error("sort by {0} only valid on closed connections")]
    SortNeedsClosed(&'static str),
    #[error("invalid test subject, must be valid publish subject: {0}")]
    TestSubject(String),
    #[error("Account {0} does not exist")]
    Account(String),
}

/// Decoded `key=value` pairs in order; like Go's `Query().Get`, the first value wins.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: &str) -> Result<Query, QueryError> {
        let mut pairs = Vec::new();
        for part in raw.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            pairs.push((decode(k)?, decode(v)?));
        }
        Ok(Query { pairs })
    }

    /// The options of a `$SYS.REQ.SERVER` request body (nats-server's `ConnzOptions`,
    /// `SubszOptions`, ... as JSON) as the HTTP endpoints' query parameters.
    pub fn from_json(body: Option<&serde_json::Value>) -> Query {
        let mut pairs = Vec::new();
        let Some(serde_json::Value::Object(map)) = body else {
            return Query { pairs };
        };
        for (key, value) in map {
            let value = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => continue,
            };
            let key = match key.as_str() {
                "subscriptions" => "subs",
                "subscriptions_detail" if value == "true" => {
                    pairs.push(("subs".to_string(), "detail".to_string()));
                    continue;
                }
                "account" | "account_id" => "acc",
                other => other,
            };
            pairs.push((key.to_string(), value));
        }
        // `subs=detail` (pushed where it was met) wins over `subs=true` as in nats-server.
        pairs.sort_by_key(|(k, v)| (k != "subs" || v != "detail", k.clone()));
        Query { pairs }
    }

    /// Sets `key` to `value`, whatever the query said of it.
    pub fn set(&mut self, key: &str, value: &str) {
        self.pairs.retain(|(k, _)| k != key);
        self.pairs.insert(0, (key.to_string(), value.to_string()));
    }

    /// The value of `key`, or `None` when absent or empty (nats-server treats both alike).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Go's `strconv.ParseBool` spellings, so `?subs=1` and `?auth=true` both work.
    pub fn bool(&self, param: &'static str) -> Result<bool, QueryError> {
        match self.get(param) {
            None => Ok(false),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
            Some(v) => Err(QueryError::Bool {
                param,
                value: v.to_string(),
            }),
        }
    }

    pub fn int(&self, param: &'static str) -> Result<i64, QueryError> {
        match self.get(param) {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| QueryError::Int {
                param,
                value: v.to_string(),
            }),
        }
    }

    pub fn uint(&self, param: &'static str) -> Result<u64, QueryError> {
        match self.get(param) {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| QueryError::Uint {
                param,
                value: v.to_string(),
            }),
        }
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn decode(s: &str) -> Result<String, QueryError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| QueryError::Encoding(s.to_string()))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| QueryError::Encoding(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_pairs_first_value_wins() {
        let q = Query::parse("a=1&b=x+y%21&a=2&empty=&flag").expect("valid");
        assert_eq!(q.get("a"), Some("1"));
        assert_eq!(q.get("b"), Some("x y!"));
        assert_eq!(q.get("empty"), None);
        assert_eq!(q.get("flag"), None);
        assert_eq!(q.get("missing"), None);
    }

    #[test]
    fn rejects_bad_percent_encoding() {
        assert!(Query::parse("a=%zz").is_err());
        assert!(Query::parse("a=%4").is_err());
        assert!(Query::parse("a=%ff").is_err(), "not UTF-8");
    }

    #[test]
    fn typed_values() {
        let q = Query::parse("t=true&o=1&f=F&n=-3&u=7&bad=yes").expect("valid");
        assert_eq!(q.bool("t"), Ok(true));
        assert_eq!(q.bool("o"), Ok(true));
        assert_eq!(q.bool("f"), Ok(false));
        assert_eq!(q.bool("none"), Ok(false));
        assert!(q.bool("bad").is_err());
        assert_eq!(q.int("n"), Ok(-3));
        assert_eq!(q.uint("u"), Ok(7));
        assert!(q.uint("n").is_err());
        assert_eq!(
            q.int("bad").map_err(|e| e.to_string()),
            Err("Error decoding int for 'bad': invalid syntax \"yes\"".to_string())
        );
    }
}
