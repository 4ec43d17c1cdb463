//! Upstreams: peers, balancing, timeouts, retries, TLS, health checks and DNS discovery.

use std::collections::HashSet;

use super::{FieldPath, Report, syntax};
use crate::pb::{Balancer, DnsRecordType, NextUpstream, Upstream};

pub(crate) fn check_all(upstreams: &[Upstream], root: &FieldPath, report: &mut Report) {
    let mut seen = HashSet::new();
    for (i, u) in upstreams.iter().enumerate() {
        let path = root.index("upstreams", i);
        syntax::check_object_name(&u.name, &path.field("name"), &mut seen, report);
        check_one(u, &path, report);
    }
}

fn check_one(u: &Upstream, path: &FieldPath, report: &mut Report) {
    // With lua_balancer, the script may choose every peer itself (`set_current_peer`).
    if u.peers.is_empty() && u.discovery.is_none() && u.lua_balancer.is_none() {
        report.error(
            &path.field("peers"),
            "an upstream needs peers, discovery or lua_balancer",
        );
    }
    if let Some(code) = &u.lua_balancer {
        super::rule::check_lua_code(code, &path.field("lua_balancer"), report);
    }
    if !u.peers.is_empty() && u.peers.iter().all(|p| p.backup) {
        report.error(
            &path.field("peers"),
            "at least one peer must not be a backup",
        );
    }
    for (j, p) in u.peers.iter().enumerate() {
        if let Err(e) = syntax::host_port(&p.address) {
            report.error(&path.index("peers", j).field("address"), e);
        }
    }
    match Balancer::try_from(u.balancer) {
        Err(_) => report.error(&path.field("balancer"), "unknown balancer"),
        Ok(Balancer::ConsistentHash) => {
            if u.hash_key.is_empty() {
                report.error(
                    &path.field("hash_key"),
                    "BALANCER_CONSISTENT_HASH needs a hash_key",
                );
            } else if let Err(e) = syntax::template(&u.hash_key, &[]) {
                report.error(&path.field("hash_key"), e);
            }
        }
        Ok(_) => {
            if !u.hash_key.is_empty() {
                report.error(
                    &path.field("hash_key"),
                    "only used with BALANCER_CONSISTENT_HASH",
                );
            }
        }
    }
    if u.peers.iter().any(|p| p.backup)
        && matches!(Balancer::try_from(u.balancer), Ok(Balancer::ConsistentHash))
    {
        report.error(
            &path.field("peers"),
            "backup peers cannot be used with consistent hashing (as in nginx)",
        );
    }
    for (j, n) in u.next_upstream.iter().enumerate() {
        if matches!(
            NextUpstream::try_from(*n),
            Err(_) | Ok(NextUpstream::Unspecified)
        ) {
            report.error(&path.index("next_upstream", j), "unknown condition");
        }
    }
    if u.retries > 16 {
        report.error(
            &path.field("retries"),
            format!("must be at most 16, got {}", u.retries),
        );
    }
    if let Some(tls) = &u.tls {
        let p = path.field("tls");
        if !tls.sni.is_empty()
            && let Err(e) = syntax::domain(&tls.sni.to_ascii_lowercase())
        {
            report.error(&p.field("sni"), e);
        }
        if !tls.ca_pem.is_empty() {
            match syntax::pem_certificates(&tls.ca_pem) {
                Ok(0) => report.error(&p.field("ca_pem"), "no CERTIFICATE block found"),
                Ok(_) => {}
                Err(e) => report.error(&p.field("ca_pem"), e),
            }
        }
    }
    if let Some(hc) = &u.health_check {
        let p = path.field("health_check");
        if !hc.path.starts_with('/') {
            report.error(&p.field("path"), "must start with '/'");
        }
        let interval = if hc.interval_ms == 0 {
            2000
        } else {
            hc.interval_ms
        };
        let timeout = if hc.timeout_ms == 0 {
            1000
        } else {
            hc.timeout_ms
        };
        if interval < 50 {
            report.error(
                &p.field("interval_ms"),
                format!("must be at least 50, got {interval}"),
            );
        }
        if timeout > interval {
            report.error(
                &p.field("timeout_ms"),
                format!("must not exceed interval_ms ({timeout} > {interval})"),
            );
        }
        for (j, s) in hc.expected_statuses.iter().enumerate() {
            if !(100..=599).contains(s) {
                report.error(
                    &p.index("expected_statuses", j),
                    format!("{s} is not an HTTP status"),
                );
            }
        }
    }
    if let Some(d) = &u.discovery {
        let p = path.field("discovery");
        if let Err(e) = syntax::domain(d.name.trim_end_matches('.')) {
            report.error(&p.field("name"), e);
        }
        match DnsRecordType::try_from(d.record_type) {
            Err(_) => report.error(&p.field("record_type"), "unknown record type"),
            Ok(DnsRecordType::Srv) => {}
            Ok(_) => {
                if d.port == 0 || d.port > 65535 {
                    report.error(&p.field("port"), "A/AAAA discovery needs a port (1-65535)");
                }
            }
        }
        if !d.resolver.is_empty()
            && let Err(e) = syntax::socket_addr(&d.resolver)
        {
            report.error(&p.field("resolver"), e);
        }
    }
}
