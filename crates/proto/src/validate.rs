//! The whole-config validator: every error, each with the field path that holds it.
//!
//! `applications[2].rules[0].actions[1].upstream: unknown upstream "api-v2"`
//!
//! Paths use the proto field names (snake_case), as the YAML files and docs do. The edge runs
//! this on every load; the control plane runs it before storing anything. It checks what can be
//! checked without I/O: names, references between objects, addresses, regexes, CIDRs, PEM
//! blocks, `$variable` templates, ranges. (The Lua compile check lives with the Lua runtime.)

mod application;
mod field_path;
mod lua_runtime;
mod rule;
mod syntax;
mod upstream;

use std::collections::HashSet;
use std::fmt;

use crate::pb::Config;
pub use field_path::FieldPath;

/// One problem, where it is and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a config, in document order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error(s):", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// Collects errors while walking the config.
#[derive(Default)]
pub(crate) struct Report {
    errors: Vec<FieldError>,
}

impl Report {
    pub(crate) fn error(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.to_string(),
            message: message.into(),
        });
    }
}

/// The names of the objects a config defines, for checking references.
pub(crate) struct Names<'a> {
    pub upstreams: HashSet<&'a str>,
    pub certificates: HashSet<&'a str>,
}

/// Checks a whole config. `Ok` means the edge can load it.
pub fn validate(config: &Config) -> Result<(), ValidationErrors> {
    let mut report = Report::default();
    let root = FieldPath::root();
    let names = Names {
        upstreams: config.upstreams.iter().map(|u| u.name.as_str()).collect(),
        certificates: config
            .certificates
            .iter()
            .map(|c| c.name.as_str())
            .collect(),
    };

    application::check_all(&config.applications, &names, &root, &mut report);
    upstream::check_all(&config.upstreams, &root, &mut report);
    check_certificates(config, &root, &mut report);
    check_shared_dicts(config, &root, &mut report);
    check_global_lua_modules(config, &root, &mut report);
    if let Some(server) = &config.server {
        check_server(server, &root.field("server"), &mut report);
    }
    if let Some(rt) = &config.lua_runtime {
        lua_runtime::check(rt, &root.field("lua_runtime"), &mut report);
    }
    if let Some(gslb) = &config.gslb
        && let Err(e) = crate::validate_gslb::validate_gslb_section(gslb)
    {
        for mut error in e.0 {
            error.path = format!("gslb.{}", error.path);
            report.errors.push(error);
        }
    }

    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(report.errors))
    }
}

fn check_certificates(config: &Config, root: &FieldPath, report: &mut Report) {
    let mut seen = HashSet::new();
    for (i, cert) in config.certificates.iter().enumerate() {
        let path = root.index("certificates", i);
        syntax::check_object_name(&cert.name, &path.field("name"), &mut seen, report);
        match syntax::pem_certificates(&cert.cert_pem) {
            Ok(0) => report.error(&path.field("cert_pem"), "no CERTIFICATE block found"),
            Ok(_) => {}
            Err(e) => report.error(&path.field("cert_pem"), e),
        }
        if let Err(e) = syntax::pem_private_key(&cert.key_pem) {
            report.error(&path.field("key_pem"), e);
        }
    }
}

fn check_shared_dicts(config: &Config, root: &FieldPath, report: &mut Report) {
    let mut seen = HashSet::new();
    for (i, dict) in config.shared_dicts.iter().enumerate() {
        let path = root.index("shared_dicts", i);
        syntax::check_object_name(&dict.name, &path.field("name"), &mut seen, report);
        if dict.capacity_bytes < 8192 {
            report.error(
                &path.field("capacity_bytes"),
                format!("must be at least 8192, got {}", dict.capacity_bytes),
            );
        }
    }
}

fn check_global_lua_modules(config: &Config, root: &FieldPath, report: &mut Report) {
    syntax::check_lua_modules(&config.lua_modules, root, report);
    if let Some(code) = &config.lua_init_worker {
        rule::check_lua_code(code, &root.field("lua_init_worker"), report);
    }
}

fn check_server(server: &crate::pb::ServerSettings, path: &FieldPath, report: &mut Report) {
    let h = server.max_header_bytes;
    if h != 0 && !(8192..=1 << 20).contains(&h) {
        report.error(
            &path.field("max_header_bytes"),
            format!("must be 0 (default) or between 8192 and 1048576, got {h}"),
        );
    }
    for (name, value) in [
        ("header_timeout_ms", server.header_timeout_ms),
        ("idle_timeout_ms", server.idle_timeout_ms),
    ] {
        if value != 0 && value < 100 {
            report.error(
                &path.field(name),
                format!("must be 0 (default) or at least 100, got {value}"),
            );
        }
    }
    if crate::pb::AccessLogFormat::try_from(server.access_log_format).is_err() {
        report.error(&path.field("access_log_format"), "unknown format");
    }
    if let Some(cache) = &server.cache {
        check_cache_storage(cache, &path.field("cache"), report);
    }
}

fn check_cache_storage(c: &crate::pb::CacheStorage, path: &FieldPath, report: &mut Report) {
    let memory = if c.memory_bytes == 0 {
        256 << 20
    } else {
        c.memory_bytes
    };
    if c.memory_bytes != 0 && c.memory_bytes < 1 << 20 {
        report.error(
            &path.field("memory_bytes"),
            format!(
                "must be 0 (default) or at least 1048576, got {}",
                c.memory_bytes
            ),
        );
    }
    if c.max_memory_object_bytes > memory {
        report.error(
            &path.field("max_memory_object_bytes"),
            format!(
                "must not exceed memory_bytes ({} > {memory})",
                c.max_memory_object_bytes
            ),
        );
    }
    if c.disk_path.contains('\0') {
        report.error(&path.field("disk_path"), "must not contain NUL");
    }
    if c.disk_bytes != 0 && c.disk_bytes < 1 << 20 {
        report.error(
            &path.field("disk_bytes"),
            format!(
                "must be 0 (default) or at least 1048576, got {}",
                c.disk_bytes
            ),
        );
    }
    if c.lock_timeout_ms > 600_000 {
        report.error(
            &path.field("lock_timeout_ms"),
            format!("must be at most 600000 (10 min), got {}", c.lock_timeout_ms),
        );
    }
}

#[cfg(test)]
mod tests;
