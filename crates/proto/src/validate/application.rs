//! Applications: names, domains (no two applications claim one), listeners, the certificate
//! and upstream they reference, their rules, cache rules, variables and Lua.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use super::{FieldPath, Names, Report, rule, syntax};
use crate::pb::Application;

pub(crate) fn check_all(
    apps: &[Application],
    names: &Names<'_>,
    root: &FieldPath,
    report: &mut Report,
) {
    let mut seen_names = HashSet::new();
    let mut domain_owner: HashMap<&str, &str> = HashMap::new();
    let mut listener_tls: HashMap<SocketAddr, (bool, String)> = HashMap::new();
    let mut default_app: Option<&str> = None;

    for (i, app) in apps.iter().enumerate() {
        let path = root.index("applications", i);
        syntax::check_object_name(&app.name, &path.field("name"), &mut seen_names, report);

        if app.domains.is_empty() && !app.is_default {
            report.error(
                &path.field("domains"),
                "an application needs at least one domain, or is_default",
            );
        }
        for (j, d) in app.domains.iter().enumerate() {
            let dpath = path.index("domains", j);
            if let Err(e) = syntax::domain(d) {
                report.error(&dpath, e);
            } else if let Some(owner) = domain_owner.insert(d, &app.name) {
                report.error(
                    &dpath,
                    format!("{d:?} is already served by application {owner:?}"),
                );
            }
        }
        if app.is_default {
            if let Some(other) = default_app {
                report.error(
                    &path.field("is_default"),
                    format!("application {other:?} is already the default"),
                );
            }
            default_app = Some(&app.name);
        }

        if app.listeners.is_empty() {
            report.error(
                &path.field("listeners"),
                "an application needs at least one listener",
            );
        }
        let mut has_tls = false;
        for (j, l) in app.listeners.iter().enumerate() {
            let lpath = path.index("listeners", j);
            has_tls |= l.tls;
            match syntax::socket_addr(&l.address) {
                Err(e) => report.error(&lpath.field("address"), e),
                Ok(addr) => {
                    let here = lpath.to_string();
                    if let Some((tls, first)) = listener_tls.get(&addr) {
                        if *tls != l.tls {
                            report.error(
                                &lpath.field("tls"),
                                format!(
                                    "{addr} is {} at {first}",
                                    if *tls { "TLS" } else { "plain HTTP" }
                                ),
                            );
                        }
                    } else {
                        listener_tls.insert(addr, (l.tls, here));
                    }
                }
            }
        }

        if app.certificate.is_empty() {
            if has_tls {
                report.error(
                    &path.field("certificate"),
                    "a TLS listener needs a certificate",
                );
            }
        } else if !names.certificates.contains(app.certificate.as_str()) {
            report.error(
                &path.field("certificate"),
                format!("unknown certificate {:?}", app.certificate),
            );
        }
        if !app.upstream.is_empty() && !names.upstreams.contains(app.upstream.as_str()) {
            report.error(
                &path.field("upstream"),
                format!("unknown upstream {:?}", app.upstream),
            );
        }

        let mut seen_vars = HashSet::new();
        for (j, v) in app.variables.iter().enumerate() {
            let vpath = path.index("variables", j).field("name");
            let valid = !v.name.is_empty()
                && v.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                report.error(
                    &vpath,
                    format!("{:?} must be lowercase letters, digits and '_'", v.name),
                );
            } else if crate::expression::is_known_variable(&v.name, &[]) {
                report.error(&vpath, format!("${} is a built-in variable", v.name));
            } else if !seen_vars.insert(v.name.as_str()) {
                report.error(&vpath, format!("duplicate variable {:?}", v.name));
            }
        }
        let declared: Vec<&str> = app.variables.iter().map(|v| v.name.as_str()).collect();
        let ctx = rule::RuleContext {
            names,
            declared: &declared,
        };

        for (j, r) in app.rules.iter().enumerate() {
            rule::check_page_rule(r, &ctx, &path.index("rules", j), report);
        }
        for (j, c) in app.cache_rules.iter().enumerate() {
            rule::check_cache_rule(c, &ctx, &path.index("cache_rules", j), report);
        }
        if let Some(lua) = &app.lua {
            rule::check_lua_phases(lua, &path.field("lua"), report);
        }
        syntax::check_lua_modules(&app.lua_modules, &path, report);
    }
}
