//! The user a client certificate names (`tls { verify_and_map: true }`), found the way
//! nats-server finds it: the certificate's SAN e-mail addresses, then its SAN DNS names, then
//! its SAN URIs, each looked up as a user name; then its subject as a distinguished name,
//! compared with every user name that parses as one (RFC 4514: attribute types without case,
//! values exactly; first in order, then in any order of the RDNs); last the subject written
//! as Go writes it (`CN=alice,OU=eng,O=Acme,C=US`: a fixed attribute order, other
//! attributes left out), looked up literally.

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::options::User;

/// Attribute types nats-server names in subject DNs; a subject with any other attribute is
/// not compared as a DN (only its Go string form is looked up).
const ATTRIBUTE_NAMES: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.5", "SERIALNUMBER"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.9", "STREET"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.17", "POSTALCODE"),
    ("0.9.2342.19200300.100.1.25", "DC"),
];

/// Go's `pkix.Name` string order, reversed: the attributes it knows, last RDN first.
const GO_STRING_ORDER: &[&str] = &[
    "SERIALNUMBER",
    "CN",
    "OU",
    "O",
    "POSTALCODE",
    "STREET",
    "L",
    "ST",
    "C",
];

/// One attribute of an RDN: its short type name (upper case) and value.
type Attribute = (String, String);
/// A distinguished name: RDNs in RFC 4514 order (most specific first).
type Dn = Vec<Vec<Attribute>>;

/// The user `cert` (DER) maps to among `users`, if any.
pub(crate) fn user_for<'a>(cert: &[u8], users: &'a [User]) -> Option<&'a User> {
    let (_, cert) = X509Certificate::from_der(cert).ok()?;
    let by_name = |name: &str| users.iter().find(|u| u.user == name);
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let names = &san.value.general_names;
        let emails = names.iter().filter_map(|n| match n {
            GeneralName::RFC822Name(e) => Some(*e),
            _ => None,
        });
        let dns = names.iter().filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(*d),
            _ => None,
        });
        let uris = names.iter().filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        });
        if let Some(user) = emails.chain(dns).chain(uris).find_map(by_name) {
            return Some(user);
        }
    }
    let subject = subject_dn(&cert);
    if let Some(dn) = subject
        .as_ref()
        .filter(|dn| dn.iter().all(|rdn| !rdn.is_empty()))
    {
        let parsed: Vec<(&User, Dn)> = users
            .iter()
            .filter_map(|u| parse_dn(&u.user).map(|d| (u, d)))
            .collect();
        if let Some((user, _)) = parsed.iter().find(|(_, d)| dn_equal(d, dn)) {
            return Some(user);
        }
        if let Some((user, _)) = parsed.iter().find(|(_, d)| rdns_match(d, dn)) {
            return Some(user);
        }
    }
    by_name(&go_subject_string(&cert))
}

/// The subject as a DN of named attributes; `None` when an attribute is not one nats-server
/// names or its value is not a string.
fn subject_dn(cert: &X509Certificate<'_>) -> Option<Dn> {
    let mut dn = Vec::new();
    for rdn in cert.subject().iter_rdn() {
        let mut attrs = Vec::new();
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let (_, name) = ATTRIBUTE_NAMES.iter().find(|(o, _)| *o == oid)?;
            attrs.push((name.to_string(), atv.as_str().ok()?.to_string()));
        }
        dn.push(attrs);
    }
    dn.reverse();
    Some(dn)
}

/// The subject the way Go's `pkix.Name.String()` writes it for a parsed certificate.
fn go_subject_string(cert: &X509Certificate<'_>) -> String {
    let mut values: Vec<(&str, Vec<String>)> =
        GO_STRING_ORDER.iter().map(|n| (*n, Vec::new())).collect();
    for rdn in cert.subject().iter_rdn() {
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let Some((_, name)) = ATTRIBUTE_NAMES.iter().find(|(o, _)| *o == oid) else {
                continue;
            };
            if let (Some(slot), Ok(v)) = (values.iter_mut().find(|(n, _)| n == name), atv.as_str())
            {
                slot.1.push(v.to_string());
            }
        }
    }
    values
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(name, vs)| {
            // Several values of one type are one multi-valued RDN in Go's form.
            let parts: Vec<String> = vs.iter().map(|v| format!("{name}={}", escape(v))).collect();
            parts.join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// RFC 2253 escaping as Go applies it.
fn escape(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        let special = match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => true,
            ' ' => i == 0 || i == last,
            '#' => i == 0,
            _ => false,
        };
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Parses an RFC 4514 string (`CN=alice,O=Acme`, `+` between attributes of one RDN,
/// `\,` and `\2C` escapes). `None` when it is not one (no `type=value` pairs).
fn parse_dn(text: &str) -> Option<Dn> {
    let mut dn: Dn = Vec::new();
    let mut rdn: Vec<Attribute> = Vec::new();
    let mut kind = String::new();
    let mut value = String::new();
    let mut in_value = false;
    // Unescaped spaces at the end of a value are not part of it.
    let mut trailing_spaces = 0;
    let mut chars = text.chars().peekable();
    let finish = |kind: &mut String, value: &mut String, trailing: &mut usize| {
        let v = value[..value.len() - *trailing].to_string();
        *trailing = 0;
        value.clear();
        let k = kind.trim().to_ascii_uppercase();
        kind.clear();
        (!k.is_empty()).then_some((k, v))
    };
    while let Some(c) = chars.next() {
        if !in_value {
            match c {
                '=' => in_value = true,
                ',' | '+' => return None,
                c => kind.push(c),
            }
            continue;
        }
        match c {
            '\\' => {
                let first = chars.next()?;
                let decoded = match chars.peek() {
                    Some(&second) if first.is_ascii_hexdigit() && second.is_ascii_hexdigit() => {
                        chars.next();
                        let byte = u8::from_str_radix(&format!("{first}{second}"), 16).ok()?;
                        char::from(byte)
                    }
                    _ => first,
                };
                value.push(decoded);
                trailing_spaces = 0;
            }
            ',' | '+' => {
                rdn.push(finish(&mut kind, &mut value, &mut trailing_spaces)?);
                in_value = false;
                if c == ',' {
                    dn.push(std::mem::take(&mut rdn));
                }
            }
            ' ' if value.is_empty() => {}
            ' ' => {
                value.push(' ');
                trailing_spaces += 1;
            }
            c => {
                value.push(c);
                trailing_spaces = 0;
            }
        }
    }
    if !in_value {
        return None;
    }
    rdn.push(finish(&mut kind, &mut value, &mut trailing_spaces)?);
    dn.push(rdn);
    Some(dn)
}

fn rdn_equal(a: &[Attribute], b: &[Attribute]) -> bool {
    let has = |x: &[Attribute], y: &[Attribute]| {
        y.iter().all(|(k, v)| {
            x.iter()
                .any(|(k2, v2)| k.eq_ignore_ascii_case(k2) && v == v2)
        })
    };
    a.len() == b.len() && has(a, b) && has(b, a)
}

fn dn_equal(a: &Dn, b: &Dn) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| rdn_equal(x, y))
}

/// The same RDNs, in any order.
fn rdns_match(a: &Dn, b: &Dn) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.iter().any(|y| rdn_equal(x, y)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    use super::*;

    fn user(name: &str) -> User {
        User {
            user: name.to_string(),
            password: String::new(),
            permissions: None,
            account: None,
        }
    }

    fn cert(sans: Vec<SanType>, dn: &[(DnType, &str)]) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn sans_come_first_email_then_dns_then_uri() {
        let users = [
            user("svc.example.com"),
            user("alice@example.com"),
            user("CN=alice"),
        ];
        let both = cert(
            vec![
                SanType::DnsName("svc.example.com".try_into().unwrap()),
                SanType::Rfc822Name("alice@example.com".try_into().unwrap()),
            ],
            &[(DnType::CommonName, "alice")],
        );
        assert_eq!(user_for(&both, &users).unwrap().user, "alice@example.com");
        let dns = cert(
            vec![SanType::DnsName("svc.example.com".try_into().unwrap())],
            &[(DnType::CommonName, "alice")],
        );
        assert_eq!(user_for(&dns, &users).unwrap().user, "svc.example.com");
        let uri = cert(
            vec![SanType::URI("spiffe://example/alice".try_into().unwrap())],
            &[],
        );
        assert!(user_for(&uri, &users).is_none());
        assert_eq!(
            user_for(&uri, &[user("spiffe://example/alice")])
                .unwrap()
                .user,
            "spiffe://example/alice"
        );
    }

    #[test]
    fn the_subject_matches_as_a_dn_in_any_order_or_as_go_writes_it() {
        let c = cert(
            vec![],
            &[
                (DnType::CountryName, "US"),
                (DnType::OrganizationName, "Acme, Inc."),
                (DnType::CommonName, "alice"),
            ],
        );
        for name in [
            "CN=alice,O=Acme\\, Inc.,C=US",
            "cn=alice, o=Acme\\2C Inc., c=US",
            "C=US,CN=alice,O=Acme\\, Inc.",
        ] {
            assert_eq!(
                user_for(&c, &[user("bob"), user(name)]).unwrap().user,
                name,
                "{name}"
            );
        }
        for name in [
            "CN=alice",
            "CN=alice,O=Acme,C=US",
            "CN=Alice,O=Acme\\, Inc.,C=US",
        ] {
            assert!(user_for(&c, &[user(name)]).is_none(), "{name}");
        }
        // An attribute nats-server does not name: no DN comparison, only Go's string,
        // which leaves it out.
        let with_uid = cert(
            vec![],
            &[
                (DnType::CommonName, "carol"),
                (
                    DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 1]),
                    "c1",
                ),
            ],
        );
        assert_eq!(
            user_for(&with_uid, &[user("CN=carol")]).unwrap().user,
            "CN=carol"
        );
    }

    #[test]
    fn go_escaping() {
        assert_eq!(escape(" a,b+c "), "\\ a\\,b\\+c\\ ");
        assert_eq!(escape("#x#"), "\\#x#");
        assert!(parse_dn("alice").is_none());
        assert_eq!(
            parse_dn("CN=a\\,b+OU=x , O=y").unwrap(),
            vec![
                vec![("CN".into(), "a,b".into()), ("OU".into(), "x".into())],
                vec![("O".into(), "y".into())]
            ]
        );
    }
}
