//! Page rules, their conditions and actions, and cache rules.

use super::{FieldPath, Names, Report, syntax};
use crate::pb::{
    Action, CacheRule, Condition, LuaCode, LuaPhases, Operator, PageRule, Subject, action,
    cache_key_part, lua_code,
};

pub(crate) struct RuleContext<'a> {
    pub names: &'a Names<'a>,
    pub declared: &'a [&'a str],
}

pub(crate) fn check_page_rule(
    rule: &PageRule,
    ctx: &RuleContext<'_>,
    path: &FieldPath,
    report: &mut Report,
) {
    for (i, c) in rule.conditions.iter().enumerate() {
        check_condition(c, &path.index("conditions", i), report);
    }
    if rule.actions.is_empty() {
        report.error(&path.field("actions"), "a rule needs at least one action");
    }
    for (i, a) in rule.actions.iter().enumerate() {
        check_action(a, ctx, &path.index("actions", i), report);
    }
}

pub(crate) fn check_condition(c: &Condition, path: &FieldPath, report: &mut Report) {
    let subject = Subject::try_from(c.subject).unwrap_or(Subject::Unspecified);
    let operator = Operator::try_from(c.operator).unwrap_or(Operator::Unspecified);
    if subject == Subject::Unspecified {
        report.error(
            &path.field("subject"),
            "must be set (SUBJECT_HOST, SUBJECT_URI, ...)",
        );
    }
    let named = matches!(subject, Subject::Arg | Subject::Header | Subject::Cookie);
    if named && c.name.is_empty() {
        report.error(
            &path.field("name"),
            format!("{} needs a name", subject.as_str_name()),
        );
    }
    if !named && !c.name.is_empty() && subject != Subject::Unspecified {
        report.error(
            &path.field("name"),
            format!("{} takes no name", subject.as_str_name()),
        );
    }
    if subject == Subject::Header
        && !c.name.is_empty()
        && let Err(e) = syntax::header_name(&c.name)
    {
        report.error(&path.field("name"), e);
    }
    match operator {
        Operator::Unspecified => report.error(
            &path.field("operator"),
            "must be set (OPERATOR_EQUALS, OPERATOR_PREFIX, ...)",
        ),
        Operator::Exists if !c.values.is_empty() => {
            report.error(&path.field("values"), "OPERATOR_EXISTS takes no values");
        }
        Operator::Exists => {}
        _ if c.values.is_empty() => report.error(&path.field("values"), "needs at least one value"),
        Operator::Regex => {
            for (i, v) in c.values.iter().enumerate() {
                if let Err(e) = syntax::regex(v) {
                    report.error(&path.index("values", i), e);
                }
            }
        }
        Operator::InCidr => {
            for (i, v) in c.values.iter().enumerate() {
                if let Err(e) = syntax::cidr(v) {
                    report.error(&path.index("values", i), e);
                }
            }
        }
        _ => {}
    }
}

fn check_action(a: &Action, ctx: &RuleContext<'_>, path: &FieldPath, report: &mut Report) {
    let Some(kind) = &a.action else {
        report.error(path, "an action must set exactly one of its kinds");
        return;
    };
    let template = |v: &str, p: FieldPath, report: &mut Report| {
        if let Err(e) = syntax::template(v, ctx.declared) {
            report.error(&p, e);
        }
    };
    let header_template = |v: &str, p: FieldPath, report: &mut Report| {
        if let Err(e) = syntax::header_template(v, ctx.declared) {
            report.error(&p, e);
        }
    };
    match kind {
        action::Action::SetRequestHeader(h) | action::Action::SetResponseHeader(h) => {
            let name = match kind {
                action::Action::SetRequestHeader(_) => "set_request_header",
                _ => "set_response_header",
            };
            let p = path.field(name);
            if let Err(e) = syntax::header_name(&h.name) {
                report.error(&p.field("name"), e);
            }
            header_template(&h.value, p.field("value"), report);
        }
        action::Action::RemoveRequestHeader(h) => {
            if let Err(e) = syntax::header_name(h) {
                report.error(&path.field("remove_request_header"), e);
            }
        }
        action::Action::RemoveResponseHeader(h) => {
            if let Err(e) = syntax::header_name(h) {
                report.error(&path.field("remove_response_header"), e);
            }
        }
        action::Action::RewriteUri(r) => {
            let p = path.field("rewrite_uri");
            if !r.pattern.is_empty()
                && let Err(e) = syntax::regex(&r.pattern)
            {
                report.error(&p.field("pattern"), e);
            }
            if r.pattern.is_empty() && !r.replacement.starts_with('/') {
                report.error(
                    &p.field("replacement"),
                    "a whole-path rewrite must start with '/'",
                );
            }
        }
        action::Action::Redirect(r) => {
            let p = path.field("redirect");
            if r.location.is_empty() {
                report.error(&p.field("location"), "must not be empty");
            }
            header_template(&r.location, p.field("location"), report);
            if !matches!(r.status, 0 | 301 | 302 | 303 | 307 | 308) {
                report.error(
                    &p.field("status"),
                    format!("must be 301, 302, 303, 307 or 308, got {}", r.status),
                );
            }
        }
        action::Action::Respond(r) => {
            let p = path.field("respond");
            if !(100..=599).contains(&r.status) {
                report.error(
                    &p.field("status"),
                    format!("must be between 100 and 599, got {}", r.status),
                );
            }
            template(&r.body, p.field("body"), report);
            if r.content_type.bytes().any(|b| b.is_ascii_control()) {
                report.error(
                    &p.field("content_type"),
                    "must not contain control characters",
                );
            }
        }
        action::Action::Upstream(u) => {
            if !ctx.names.upstreams.contains(u.as_str()) {
                report.error(&path.field("upstream"), format!("unknown upstream {u:?}"));
            }
        }
        action::Action::RateLimit(r) => {
            let p = path.field("rate_limit");
            if r.key.is_empty() {
                report.error(&p.field("key"), "must not be empty (e.g. $remote_addr)");
            }
            template(&r.key, p.field("key"), report);
            if !(r.requests_per_second.is_finite() && r.requests_per_second > 0.0) {
                report.error(&p.field("requests_per_second"), "must be a positive number");
            }
            if r.delay > r.burst {
                report.error(
                    &p.field("delay"),
                    format!("must not exceed burst ({} > {})", r.delay, r.burst),
                );
            }
            if r.status != 0 && !(400..=599).contains(&r.status) {
                report.error(
                    &p.field("status"),
                    format!("must be between 400 and 599, got {}", r.status),
                );
            }
        }
        action::Action::AccessControl(ac) => {
            let p = path.field("access_control");
            if ac.entries.is_empty() {
                report.error(&p.field("entries"), "needs at least one entry");
            }
            for (i, e) in ac.entries.iter().enumerate() {
                let ep = p.index("entries", i);
                if e.addresses.is_empty() {
                    report.error(
                        &ep.field("addresses"),
                        "needs at least one address or `all`",
                    );
                }
                for (j, a) in e.addresses.iter().enumerate() {
                    if a != "all"
                        && let Err(err) = syntax::cidr(a)
                    {
                        report.error(&ep.index("addresses", j), err);
                    }
                }
            }
            if ac.status != 0 && !(400..=599).contains(&ac.status) {
                report.error(
                    &p.field("status"),
                    format!("must be between 400 and 599, got {}", ac.status),
                );
            }
        }
        action::Action::Cache(c) => check_cache_rule(c, ctx, &path.field("cache"), report),
        action::Action::Lua(l) => check_lua_phases(l, &path.field("lua"), report),
    }
}

pub(crate) fn check_cache_rule(
    c: &CacheRule,
    ctx: &RuleContext<'_>,
    path: &FieldPath,
    report: &mut Report,
) {
    let _ = ctx;
    for (i, cond) in c.conditions.iter().enumerate() {
        check_condition(cond, &path.index("conditions", i), report);
    }
    for (i, k) in c.key.iter().enumerate() {
        let p = path.index("key", i);
        let kind =
            cache_key_part::Kind::try_from(k.kind).unwrap_or(cache_key_part::Kind::Unspecified);
        let named = matches!(
            kind,
            cache_key_part::Kind::Arg | cache_key_part::Kind::Header | cache_key_part::Kind::Cookie
        );
        if kind == cache_key_part::Kind::Unspecified {
            report.error(&p.field("kind"), "must be set");
        } else if named && k.name.is_empty() {
            report.error(
                &p.field("name"),
                format!("{} needs a name", kind.as_str_name()),
            );
        }
    }
    if c.enforce && c.default_ttl_seconds == 0 {
        report.error(
            &path.field("default_ttl_seconds"),
            "enforce needs a default TTL",
        );
    }
}

pub(crate) fn check_lua_phases(l: &LuaPhases, path: &FieldPath, report: &mut Report) {
    let phases: [(&str, &Option<LuaCode>); 8] = [
        ("init_worker", &l.init_worker),
        ("rewrite", &l.rewrite),
        ("access", &l.access),
        ("content", &l.content),
        ("balancer", &l.balancer),
        ("header_filter", &l.header_filter),
        ("body_filter", &l.body_filter),
        ("log", &l.log),
    ];
    for (name, code) in phases {
        if let Some(code) = code {
            let empty = match &code.source {
                None => true,
                Some(lua_code::Source::Inline(s)) | Some(lua_code::Source::Module(s)) => {
                    s.trim().is_empty()
                }
            };
            if empty {
                report.error(&path.field(name), "needs inline code or a module name");
            }
        }
    }
    if l.init_worker.is_some() {
        report.error(
            &path.field("init_worker"),
            "init_worker runs once per worker, not per request: set it in the config's \
             lua_init_worker (nginx's init_worker_by_lua is in the http block)",
        );
    }
    if l.balancer.is_some() {
        report.error(
            &path.field("balancer"),
            "the balancer runs where a peer is picked: set it in the upstream's lua_balancer \
             (nginx's balancer_by_lua is in an upstream block)",
        );
    }
}

/// A `LuaCode` outside `LuaPhases` (`lua_init_worker`, `lua_balancer`): code or a module name.
pub(crate) fn check_lua_code(code: &LuaCode, path: &FieldPath, report: &mut Report) {
    let empty = match &code.source {
        None => true,
        Some(lua_code::Source::Inline(s)) | Some(lua_code::Source::Module(s)) => {
            s.trim().is_empty()
        }
    };
    if empty {
        report.error(path, "needs inline code or a module name");
    }
}
