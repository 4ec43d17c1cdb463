//! The Lua compile check run on the working config before an edit is stored: every inline
//! phase handler and every module is compiled (never run) by LuaJIT, and each syntax error is
//! reported with its field path, as the edge would refuse it.

use outpost_proto::FieldError;
use outpost_proto::pb::{self, Config};

/// Every Lua syntax error in `config`, by field path.
pub fn check(config: &Config) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut compile = |path: String, code: &str| {
        if let Err(e) = outpost_lua::check_syntax(&path, code) {
            errors.push(FieldError {
                path,
                message: format!("Lua syntax error: {}", e.message),
            });
        }
    };
    for (i, m) in config.lua_modules.iter().enumerate() {
        compile(format!("lua_modules[{i}].code"), &m.code);
    }
    if let Some(code) = inline(&config.lua_init_worker) {
        compile("lua_init_worker.inline".into(), code);
    }
    for (u, upstream) in config.upstreams.iter().enumerate() {
        if let Some(code) = inline(&upstream.lua_balancer) {
            compile(format!("upstreams[{u}].lua_balancer.inline"), code);
        }
    }
    for (a, app) in config.applications.iter().enumerate() {
        for (i, m) in app.lua_modules.iter().enumerate() {
            compile(format!("applications[{a}].lua_modules[{i}].code"), &m.code);
        }
        if let Some(phases) = &app.lua {
            phases_of(&format!("applications[{a}].lua"), phases, &mut compile);
        }
        if let Some(code) = inline(&app.lua_ssl_certificate) {
            compile(
                format!("applications[{a}].lua_ssl_certificate.inline"),
                code,
            );
        }
        for (r, rule) in app.rules.iter().enumerate() {
            for (x, action) in rule.actions.iter().enumerate() {
                if let Some(pb::action::Action::Lua(phases)) = &action.action {
                    let at = format!("applications[{a}].rules[{r}].actions[{x}].lua");
                    phases_of(&at, phases, &mut compile);
                }
            }
        }
    }
    errors
}

fn inline(code: &Option<pb::LuaCode>) -> Option<&str> {
    match code {
        Some(pb::LuaCode {
            source: Some(pb::lua_code::Source::Inline(code)),
        }) => Some(code),
        _ => None,
    }
}

fn phases_of(at: &str, p: &pb::LuaPhases, compile: &mut impl FnMut(String, &str)) {
    let phases = [
        ("init_worker", &p.init_worker),
        ("rewrite", &p.rewrite),
        ("access", &p.access),
        ("content", &p.content),
        ("balancer", &p.balancer),
        ("header_filter", &p.header_filter),
        ("body_filter", &p.body_filter),
        ("log", &p.log),
    ];
    for (phase, code) in phases {
        if let Some(pb::LuaCode {
            source: Some(pb::lua_code::Source::Inline(code)),
        }) = code
        {
            compile(format!("{at}.{phase}.inline"), code);
        }
    }
}
