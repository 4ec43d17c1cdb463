//! Page-rule conditions, compiled once: a subject, an operator over several values (ORed),
//! optional negation and case folding.

use std::borrow::Cow;
use std::net::IpAddr;

use ipnet::IpNet;
use outpost_proto::pb;
use regex::{Regex, RegexBuilder};

use super::request_view::RequestView;

#[derive(Debug, Clone)]
pub struct Condition {
    subject: Subject,
    matcher: Matcher,
    negate: bool,
    case_insensitive: bool,
}

#[derive(Debug, Clone)]
enum Subject {
    Host,
    Uri,
    Arg(String),
    Header(String),
    Cookie(String),
    Method,
    Scheme,
    ClientAddress,
}

#[derive(Debug, Clone)]
enum Matcher {
    Equals(Vec<String>),
    Prefix(Vec<String>),
    Suffix(Vec<String>),
    Contains(Vec<String>),
    Regex(Vec<Regex>),
    InCidr(Vec<IpNet>),
    Exists,
}

impl Condition {
    pub fn compile(c: &pb::Condition) -> Result<Condition, String> {
        let subject = match pb::Subject::try_from(c.subject) {
            Ok(pb::Subject::Host) => Subject::Host,
            Ok(pb::Subject::Uri) => Subject::Uri,
            Ok(pb::Subject::Arg) => Subject::Arg(c.name.clone()),
            Ok(pb::Subject::Header) => Subject::Header(c.name.to_ascii_lowercase()),
            Ok(pb::Subject::Cookie) => Subject::Cookie(c.name.clone()),
            Ok(pb::Subject::Method) => Subject::Method,
            Ok(pb::Subject::Scheme) => Subject::Scheme,
            Ok(pb::Subject::ClientAddress) => Subject::ClientAddress,
            _ => return Err("unknown subject".into()),
        };
        let ci = c.case_insensitive;
        let fold = |v: &String| if ci { v.to_lowercase() } else { v.clone() };
        let values = || c.values.iter().map(fold).collect::<Vec<_>>();
        let matcher = match pb::Operator::try_from(c.operator) {
            Ok(pb::Operator::Equals) => Matcher::Equals(values()),
            Ok(pb::Operator::Prefix) => Matcher::Prefix(values()),
            Ok(pb::Operator::Suffix) => Matcher::Suffix(values()),
            Ok(pb::Operator::Contains) => Matcher::Contains(values()),
            Ok(pb::Operator::Regex) => Matcher::Regex(
                c.values
                    .iter()
                    .map(|v| {
                        RegexBuilder::new(v)
                            .case_insensitive(ci)
                            .build()
                            .map_err(|e| e.to_string())
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Ok(pb::Operator::InCidr) => Matcher::InCidr(
                c.values
                    .iter()
                    .map(|v| parse_cidr(v).ok_or_else(|| format!("{v:?} is not a CIDR")))
                    .collect::<Result<_, _>>()?,
            ),
            Ok(pb::Operator::Exists) => Matcher::Exists,
            _ => return Err("unknown operator".into()),
        };
        Ok(Condition {
            subject,
            matcher,
            negate: c.negate,
            case_insensitive: ci,
        })
    }

    pub fn matches(&self, r: &RequestView<'_>) -> bool {
        let value: Option<Cow<'_, str>> = match &self.subject {
            Subject::Host => Some(Cow::Borrowed(r.host)),
            Subject::Uri => Some(Cow::Borrowed(r.path)),
            Subject::Arg(name) => r.arg(name).map(Cow::Borrowed),
            Subject::Header(name) => r.header(name),
            Subject::Cookie(name) => r.cookie(name).map(Cow::Borrowed),
            Subject::Method => Some(Cow::Borrowed(r.method.as_str())),
            Subject::Scheme => Some(Cow::Borrowed(r.scheme)),
            Subject::ClientAddress => Some(Cow::Owned(r.client.ip().to_string())),
        };
        let hit = match (&self.matcher, value) {
            (Matcher::Exists, v) => v.is_some(),
            (_, None) => false,
            (Matcher::InCidr(nets), Some(v)) => {
                let ip = match &self.subject {
                    Subject::ClientAddress => Some(r.client.ip()),
                    // A header such as X-Real-IP may carry a list: the first entry counts.
                    _ => v
                        .split(',')
                        .next()
                        .and_then(|s| s.trim().parse::<IpAddr>().ok()),
                };
                ip.is_some_and(|ip| nets.iter().any(|n| n.contains(&canonical(ip))))
            }
            (Matcher::Regex(res), Some(v)) => res.iter().any(|re| re.is_match(&v)),
            (m, Some(v)) => {
                let v = if self.case_insensitive {
                    Cow::Owned(v.to_lowercase())
                } else {
                    v
                };
                match m {
                    Matcher::Equals(xs) => xs.iter().any(|x| *x == v),
                    Matcher::Prefix(xs) => xs.iter().any(|x| v.starts_with(x.as_str())),
                    Matcher::Suffix(xs) => xs.iter().any(|x| v.ends_with(x.as_str())),
                    Matcher::Contains(xs) => xs.iter().any(|x| v.contains(x.as_str())),
                    Matcher::Regex(_) | Matcher::InCidr(_) | Matcher::Exists => unreachable!(),
                }
            }
        };
        hit != self.negate
    }
}

/// A CIDR or a single address (as a /32 or /128).
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) compare as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::request_view::test_support::OwnedRequest;

    fn cond(subject: pb::Subject, name: &str, op: pb::Operator, values: &[&str]) -> pb::Condition {
        pb::Condition {
            subject: subject as i32,
            name: name.into(),
            operator: op as i32,
            values: values.iter().map(|s| s.to_string()).collect(),
            negate: false,
            case_insensitive: false,
        }
    }

    fn check(c: pb::Condition, r: &OwnedRequest) -> bool {
        Condition::compile(&c).unwrap().matches(&r.view())
    }

    use pb::Operator::*;
    use pb::Subject::*;

    #[test]
    fn every_operator() {
        let r = OwnedRequest::get("/static/app.js?v=2").header("x-tier", "Gold");
        assert!(check(cond(Uri, "", Equals, &["/x", "/static/app.js"]), &r));
        assert!(check(cond(Uri, "", Prefix, &["/static/"]), &r));
        assert!(check(cond(Uri, "", Suffix, &[".css", ".js"]), &r));
        assert!(check(cond(Uri, "", Contains, &["app"]), &r));
        assert!(check(cond(Uri, "", Regex, &[r"^/static/\w+\.js$"]), &r));
        assert!(check(
            cond(ClientAddress, "", InCidr, &["10.0.0.0/8", "192.0.2.0/24"]),
            &r
        ));
        assert!(!check(cond(ClientAddress, "", InCidr, &["10.0.0.0/8"]), &r));
        assert!(check(cond(Header, "X-Tier", Exists, &[]), &r));
        assert!(!check(cond(Header, "x-missing", Exists, &[]), &r));
        assert!(!check(cond(Header, "x-tier", Equals, &["gold"]), &r));
    }

    #[test]
    fn every_subject() {
        let r = OwnedRequest::get("/p?lang=fr")
            .header("cookie", "ab=b")
            .header("x-real-ip", "10.1.2.3");
        assert!(check(cond(Host, "", Equals, &["example.com"]), &r));
        assert!(check(cond(Arg, "lang", Equals, &["fr"]), &r));
        assert!(check(cond(Cookie, "ab", Equals, &["b"]), &r));
        assert!(check(cond(Method, "", Equals, &["GET"]), &r));
        assert!(check(cond(Scheme, "", Equals, &["http"]), &r));
        assert!(check(
            cond(Header, "x-real-ip", InCidr, &["10.0.0.0/8"]),
            &r
        ));
    }

    #[test]
    fn negation_case_folding_and_absent_values() {
        let r = OwnedRequest::get("/").header("x-tier", "Gold");
        let mut c = cond(Header, "x-tier", Equals, &["gold"]);
        c.case_insensitive = true;
        assert!(check(c.clone(), &r));
        c.negate = true;
        assert!(!check(c, &r));
        // An absent value matches no operator but EXISTS; negated, it matches.
        let mut absent = cond(Arg, "missing", Equals, &["x"]);
        assert!(!check(absent.clone(), &r));
        absent.negate = true;
        assert!(check(absent, &r));
    }
}
