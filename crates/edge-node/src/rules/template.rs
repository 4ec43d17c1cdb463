//! Compiled `$variable` templates (parsed by `outpost_proto::expression`), rendered against a
//! [`RequestView`].

use std::fmt::Write;

use http::HeaderName;
use outpost_proto::expression::{self, Segment};

use super::request_view::RequestView;

#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    Var(Var),
}

/// A variable resolved to its getter once, at config load.
#[derive(Debug, Clone)]
pub enum Var {
    Host,
    Uri,
    Args,
    IsArgs,
    RequestUri,
    Method,
    Scheme,
    Protocol,
    RemoteAddr,
    RemotePort,
    BinaryRemoteAddr,
    ServerAddr,
    ServerPort,
    RequestId,
    Header(HeaderName),
    Arg(String),
    Cookie(String),
    Declared(String),
}

impl Var {
    /// Resolves a variable name; `None` for unknown names (the validator has rejected them).
    pub fn from_name(name: &str) -> Option<Var> {
        Some(match name {
            "host" | "server_name" => Var::Host,
            "uri" => Var::Uri,
            "args" | "query_string" => Var::Args,
            "is_args" => Var::IsArgs,
            "request_uri" => Var::RequestUri,
            "request_method" => Var::Method,
            "scheme" => Var::Scheme,
            "server_protocol" => Var::Protocol,
            "remote_addr" => Var::RemoteAddr,
            "remote_port" => Var::RemotePort,
            "binary_remote_addr" => Var::BinaryRemoteAddr,
            "server_addr" => Var::ServerAddr,
            "server_port" => Var::ServerPort,
            "request_id" => Var::RequestId,
            "content_type" => Var::Header(http::header::CONTENT_TYPE),
            "content_length" => Var::Header(http::header::CONTENT_LENGTH),
            _ => {
                if let Some(h) = name.strip_prefix("http_") {
                    Var::Header(HeaderName::from_bytes(h.replace('_', "-").as_bytes()).ok()?)
                } else if let Some(a) = name.strip_prefix("arg_") {
                    Var::Arg(a.to_string())
                } else if let Some(c) = name.strip_prefix("cookie_") {
                    Var::Cookie(c.to_string())
                } else {
                    Var::Declared(name.to_string())
                }
            }
        })
    }

    /// Appends the value (empty when absent, as nginx does).
    pub fn render(&self, r: &RequestView<'_>, out: &mut String) {
        match self {
            Var::Host => out.push_str(r.host),
            Var::Uri => out.push_str(r.path),
            Var::Args => out.push_str(r.query.unwrap_or("")),
            Var::IsArgs => {
                if r.query.is_some() {
                    out.push('?')
                }
            }
            Var::RequestUri => {
                out.push_str(r.path);
                if let Some(q) = r.query {
                    out.push('?');
                    out.push_str(q);
                }
            }
            Var::Method => out.push_str(r.method.as_str()),
            Var::Scheme => out.push_str(r.scheme),
            Var::Protocol => {
                let _ = write!(out, "{:?}", r.version);
            }
            Var::RemoteAddr => {
                let _ = write!(out, "{}", r.client.ip());
            }
            Var::RemotePort => {
                let _ = write!(out, "{}", r.client.port());
            }
            Var::BinaryRemoteAddr => match r.client.ip() {
                // Not valid UTF-8 in general: rendered as the raw octets mapped to chars, which
                // keeps it unique as a key.
                std::net::IpAddr::V4(ip) => out.extend(ip.octets().iter().map(|b| *b as char)),
                std::net::IpAddr::V6(ip) => out.extend(ip.octets().iter().map(|b| *b as char)),
            },
            Var::ServerAddr => {
                let _ = write!(out, "{}", r.local.ip());
            }
            Var::ServerPort => {
                let _ = write!(out, "{}", r.local.port());
            }
            Var::RequestId => out.push_str(r.request_id.as_str()),
            Var::Header(h) => {
                if let Some(v) = r.header(h.as_str()) {
                    out.push_str(&v)
                }
            }
            Var::Arg(a) => out.push_str(r.arg(a).unwrap_or("")),
            Var::Cookie(c) => out.push_str(r.cookie(c).unwrap_or("")),
            Var::Declared(d) => out.push_str(r.declared(d).unwrap_or("")),
        }
    }
}

impl Template {
    /// Compiles a validated template.
    pub fn compile(src: &str) -> Result<Template, String> {
        let segments = expression::parse(src).map_err(|e| e.to_string())?;
        let mut parts = Vec::with_capacity(segments.len());
        for s in segments {
            parts.push(match s {
                Segment::Literal(l) => Part::Literal(l),
                Segment::Variable(v) => {
                    Part::Var(Var::from_name(&v).ok_or_else(|| format!("unknown variable ${v}"))?)
                }
            });
        }
        Ok(Template { parts })
    }

    /// A template without variables renders to this constant.
    pub fn as_constant(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(l)] => Some(l),
            _ => None,
        }
    }

    pub fn render(&self, r: &RequestView<'_>) -> String {
        if let Some(c) = self.as_constant() {
            return c.to_string();
        }
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Var(v) => v.render(r, &mut out),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::request_view::test_support::OwnedRequest;

    #[test]
    fn renders_variables_like_nginx() {
        let r = OwnedRequest::get("/a/b?x=1&y=2").header("user-agent", "curl/8");
        let t = Template::compile(
            "$scheme://$host$request_uri|$arg_y|$http_user_agent|$remote_addr|$arg_none|",
        )
        .unwrap();
        assert_eq!(
            t.render(&r.view()),
            "http://example.com/a/b?x=1&y=2|2|curl/8|192.0.2.7||"
        );
    }

    #[test]
    fn constants_are_recognised() {
        assert_eq!(
            Template::compile("plain").unwrap().as_constant(),
            Some("plain")
        );
        assert!(Template::compile("$host").unwrap().as_constant().is_none());
    }
}
