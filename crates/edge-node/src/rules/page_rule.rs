//! Page rules: compiled from the config, evaluated in order against a request.
//!
//! Semantics (documented in docs/configuration.md): rules run in order; a rule whose
//! conditions all hold runs its actions in order. Header and upstream actions accumulate; a
//! URI rewrite is seen by the conditions of later rules; the first action that answers the
//! request (respond, redirect, a denied address, a rejected rate) ends the evaluation. A rule
//! with `last` ends it after its own actions.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use ipnet::IpNet;
use outpost_proto::pb::{self, action};
use regex::Regex;

use super::cache_rule::CacheRule;
use super::condition::{Condition, canonical, parse_cidr};
use super::lua_code::LuaHandlers;
use super::rate_limit::{LimitDecision, LimitParams, RateLimiter};
use super::request_view::RequestView;
use super::template::Template;

#[derive(Debug)]
pub struct PageRule {
    conditions: Vec<Condition>,
    actions: Vec<Action>,
    last: bool,
}

#[derive(Debug)]
enum Action {
    SetRequestHeader(HeaderName, Template),
    RemoveRequestHeader(HeaderName),
    SetResponseHeader(HeaderName, Template),
    RemoveResponseHeader(HeaderName),
    RewriteUri {
        pattern: Option<Regex>,
        replacement: String,
    },
    Redirect {
        location: Template,
        status: StatusCode,
    },
    Respond {
        status: StatusCode,
        body: Template,
        content_type: HeaderValue,
    },
    Upstream(Arc<str>),
    RateLimit {
        id: u64,
        key: Template,
        params: LimitParams,
        status: StatusCode,
    },
    AccessControl {
        entries: Vec<(bool, Vec<IpNet>)>,
        status: StatusCode,
    },
    Cache(Arc<CacheRule>),
    Lua(LuaHandlers),
}

/// A header change to apply: `None` removes the header.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderOp {
    pub name: HeaderName,
    pub value: Option<HeaderValue>,
}

/// A response made by the edge itself.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalResponse {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl LocalResponse {
    pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Self {
        LocalResponse {
            status,
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            body: body.into(),
        }
    }
}

/// What the rules decided for one request.
#[derive(Debug, Default)]
pub struct RuleEffects {
    pub request_headers: Vec<HeaderOp>,
    pub response_headers: Vec<HeaderOp>,
    pub rewritten_path: Option<String>,
    pub upstream: Option<Arc<str>>,
    pub delay: Duration,
    pub respond: Option<LocalResponse>,
    /// The last matching rule's cache action, which wins over the application's cache rules.
    pub cache: Option<Arc<CacheRule>>,
    /// Lua from matching rules, run after the application's own for each phase. `None` for
    /// most requests: an empty `LuaHandlers` is six reference counts on shared empty lists,
    /// touched twice per request by every worker.
    pub lua: Option<LuaHandlers>,
}

/// Things an action cannot do in this build; the edge refuses such a config with this path.
#[derive(Debug)]
pub struct Unsupported(pub String);

impl PageRule {
    /// `scope` names the rule for stable rate-limit state across reloads
    /// (e.g. `site/rules[2]`).
    pub fn compile(rule: &pb::PageRule, scope: &str) -> Result<PageRule, (String, String)> {
        let conditions = rule
            .conditions
            .iter()
            .enumerate()
            .map(|(i, c)| Condition::compile(c).map_err(|e| (format!("conditions[{i}]"), e)))
            .collect::<Result<_, _>>()?;
        let mut actions = Vec::with_capacity(rule.actions.len());
        for (i, a) in rule.actions.iter().enumerate() {
            let at = |field: &str| format!("actions[{i}].{field}");
            let Some(kind) = &a.action else {
                return Err((format!("actions[{i}]"), "empty action".into()));
            };
            let header = |n: &str, field: &str| {
                HeaderName::from_bytes(n.as_bytes()).map_err(|e| (at(field), e.to_string()))
            };
            let template = |t: &str, field: &str| Template::compile(t).map_err(|e| (at(field), e));
            actions.push(match kind {
                action::Action::SetRequestHeader(h) => Action::SetRequestHeader(
                    header(&h.name, "set_request_header.name")?,
                    template(&h.value, "set_request_header.value")?,
                ),
                action::Action::RemoveRequestHeader(h) => {
                    Action::RemoveRequestHeader(header(h, "remove_request_header")?)
                }
                action::Action::SetResponseHeader(h) => Action::SetResponseHeader(
                    header(&h.name, "set_response_header.name")?,
                    template(&h.value, "set_response_header.value")?,
                ),
                action::Action::RemoveResponseHeader(h) => {
                    Action::RemoveResponseHeader(header(h, "remove_response_header")?)
                }
                action::Action::RewriteUri(r) => Action::RewriteUri {
                    pattern: if r.pattern.is_empty() {
                        None
                    } else {
                        Some(
                            Regex::new(&r.pattern)
                                .map_err(|e| (at("rewrite_uri.pattern"), e.to_string()))?,
                        )
                    },
                    replacement: r.replacement.clone(),
                },
                action::Action::Redirect(r) => Action::Redirect {
                    location: template(&r.location, "redirect.location")?,
                    status: status(if r.status == 0 { 302 } else { r.status })
                        .map_err(|e| (at("redirect.status"), e))?,
                },
                action::Action::Respond(r) => Action::Respond {
                    status: status(r.status).map_err(|e| (at("respond.status"), e))?,
                    body: template(&r.body, "respond.body")?,
                    content_type: HeaderValue::from_str(if r.content_type.is_empty() {
                        "text/plain; charset=utf-8"
                    } else {
                        &r.content_type
                    })
                    .map_err(|e| (at("respond.content_type"), e.to_string()))?,
                },
                action::Action::Upstream(u) => Action::Upstream(Arc::from(u.as_str())),
                action::Action::RateLimit(r) => {
                    let mut h = DefaultHasher::new();
                    (scope, i).hash(&mut h);
                    Action::RateLimit {
                        id: h.finish(),
                        key: template(&r.key, "rate_limit.key")?,
                        params: LimitParams {
                            rate_per_second: r.requests_per_second,
                            burst: r.burst,
                            delay: r.delay,
                        },
                        status: status(if r.status == 0 { 503 } else { r.status })
                            .map_err(|e| (at("rate_limit.status"), e))?,
                    }
                }
                action::Action::AccessControl(ac) => Action::AccessControl {
                    entries: ac
                        .entries
                        .iter()
                        .map(|e| {
                            let nets = e
                                .addresses
                                .iter()
                                .map(|a| {
                                    if a == "all" {
                                        Ok(vec![
                                            "0.0.0.0/0".parse().unwrap(),
                                            "::/0".parse().unwrap(),
                                        ])
                                    } else {
                                        parse_cidr(a).map(|n| vec![n]).ok_or_else(|| {
                                            (at("access_control"), format!("{a:?} is not a CIDR"))
                                        })
                                    }
                                })
                                .collect::<Result<Vec<_>, _>>()?;
                            Ok::<_, (String, String)>((
                                e.allow,
                                nets.into_iter().flatten().collect(),
                            ))
                        })
                        .collect::<Result<_, _>>()?,
                    status: status(if ac.status == 0 { 403 } else { ac.status })
                        .map_err(|e| (at("access_control.status"), e))?,
                },
                action::Action::Cache(c) => Action::Cache(Arc::new(
                    CacheRule::compile(c).map_err(|(f, m)| (format!("{}.{f}", at("cache")), m))?,
                )),
                action::Action::Lua(phases) => Action::Lua(
                    LuaHandlers::compile(phases, &format!("{scope}.actions[{i}]"))
                        .map_err(|(f, m)| (format!("{}.{f}", at("lua")), m))?,
                ),
            });
        }
        Ok(PageRule {
            conditions,
            actions,
            last: rule.last,
        })
    }
}

fn status(code: u32) -> Result<StatusCode, String> {
    u16::try_from(code)
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| format!("{code} is not an HTTP status"))
}

/// Runs the rules against a request; `now_ms` is the rate limiter's clock, read only when a
/// rate limit applies.
pub fn evaluate(
    rules: &[PageRule],
    request: &RequestView<'_>,
    limiter: &RateLimiter,
    now_ms: impl Fn() -> u64,
) -> RuleEffects {
    let original_path = request.path;
    let mut fx = RuleEffects::default();
    for rule in rules {
        let path = fx.rewritten_path.clone();
        let r = RequestView {
            path: path.as_deref().unwrap_or(original_path),
            ..*request
        };
        if !rule.conditions.iter().all(|c| c.matches(&r)) {
            continue;
        }
        for action in &rule.actions {
            match action {
                Action::SetRequestHeader(name, t) => fx.request_headers.push(HeaderOp {
                    name: name.clone(),
                    value: header_value(&t.render(&r)),
                }),
                Action::RemoveRequestHeader(name) => fx.request_headers.push(HeaderOp {
                    name: name.clone(),
                    value: None,
                }),
                Action::SetResponseHeader(name, t) => fx.response_headers.push(HeaderOp {
                    name: name.clone(),
                    value: header_value(&t.render(&r)),
                }),
                Action::RemoveResponseHeader(name) => fx.response_headers.push(HeaderOp {
                    name: name.clone(),
                    value: None,
                }),
                Action::RewriteUri {
                    pattern,
                    replacement,
                } => {
                    let current = fx.rewritten_path.as_deref().unwrap_or(original_path);
                    let new = match pattern {
                        None => replacement.clone(),
                        Some(re) => re.replace(current, replacement.as_str()).into_owned(),
                    };
                    fx.rewritten_path = Some(if new.starts_with('/') {
                        new
                    } else {
                        format!("/{new}")
                    });
                }
                Action::Redirect { location, status } => {
                    let loc = location.render(&r);
                    let mut resp = LocalResponse::text(*status, Bytes::new());
                    resp.headers.clear();
                    if let Some(v) = header_value(&loc) {
                        resp.headers.push((http::header::LOCATION, v));
                    }
                    fx.respond = Some(resp);
                    return fx;
                }
                Action::Respond {
                    status,
                    body,
                    content_type,
                } => {
                    fx.respond = Some(LocalResponse {
                        status: *status,
                        headers: vec![(http::header::CONTENT_TYPE, content_type.clone())],
                        body: Bytes::from(body.render(&r)),
                    });
                    return fx;
                }
                Action::Upstream(name) => fx.upstream = Some(name.clone()),
                Action::RateLimit {
                    id,
                    key,
                    params,
                    status,
                } => match limiter.check(*id, key.render(&r), params, now_ms()) {
                    LimitDecision::Pass => {}
                    LimitDecision::Delay(d) => fx.delay = fx.delay.max(d),
                    LimitDecision::Reject => {
                        fx.respond = Some(LocalResponse::text(*status, "rate limit exceeded\n"));
                        return fx;
                    }
                },
                Action::AccessControl { entries, status } => {
                    let ip = canonical(r.client.ip());
                    let allowed = entries
                        .iter()
                        .find(|(_, nets)| nets.iter().any(|n| n.contains(&ip)))
                        .is_none_or(|(allow, _)| *allow);
                    if !allowed {
                        fx.respond = Some(LocalResponse::text(*status, "forbidden\n"));
                        return fx;
                    }
                }
                Action::Cache(c) => {
                    if c.matches(&r) {
                        fx.cache = Some(c.clone());
                    }
                }
                Action::Lua(h) => fx.lua.get_or_insert_with(LuaHandlers::default).extend(h),
            }
        }
        if rule.last {
            break;
        }
    }
    fx
}

fn header_value(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

#[cfg(test)]
mod tests;
