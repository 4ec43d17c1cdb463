use super::*;
use crate::load::{SourceFormat, parse_config};

fn errors(yaml: &str) -> Vec<String> {
    let cfg = parse_config(yaml, SourceFormat::Yaml).expect("parses");
    match validate(&cfg) {
        Ok(()) => vec![],
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

const GOOD: &str = r#"
upstreams:
  - name: web
    peers: [{address: "127.0.0.1:8000"}]
applications:
  - name: site
    domains: [example.com, "*.example.com"]
    listeners: [{address: "127.0.0.1:8080"}]
    upstream: web
    rules:
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: ["/api"]}]
        actions: [{set_request_header: {name: X-Api, value: "$host$uri"}}]
"#;

#[test]
fn a_good_config_passes() {
    assert_eq!(errors(GOOD), Vec::<String>::new());
}

#[test]
fn an_unknown_upstream_in_an_action_is_named_with_its_path() {
    let yaml = GOOD.replace(
        "actions: [{set_request_header: {name: X-Api, value: \"$host$uri\"}}]",
        "actions: [{set_request_header: {name: X-Api, value: x}}, {upstream: api-v2}]",
    );
    assert_eq!(
        errors(&yaml),
        vec![r#"applications[0].rules[0].actions[1].upstream: unknown upstream "api-v2""#]
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let yaml = r#"
upstreams:
  - name: web
    peers: [{address: "nowhere"}]
    balancer: BALANCER_CONSISTENT_HASH
    health_check: {path: "health", interval_ms: 100, timeout_ms: 500}
applications:
  - name: site
    domains: [Example.com]
    listeners: [{address: "localhost:80", tls: true}]
    upstream: nope
    rules:
      - conditions:
          - {subject: SUBJECT_HEADER, operator: OPERATOR_REGEX, values: ["(unclosed"]}
          - {subject: SUBJECT_CLIENT_ADDRESS, operator: OPERATOR_IN_CIDR, values: ["10.0.0.0/33"]}
        actions:
          - {rate_limit: {key: "$nope", requests_per_second: 0, burst: 1, delay: 2}}
          - {redirect: {location: "/x", status: 200}}
          - {}
"#;
    let errs = errors(yaml);
    let expected = [
        "applications[0].domains[0]: \"Example.com\" is not a lowercase domain name",
        "applications[0].listeners[0].address: \"localhost:80\" is not an ip:port address",
        "applications[0].certificate: a TLS listener needs a certificate",
        "applications[0].upstream: unknown upstream \"nope\"",
        "applications[0].rules[0].conditions[0].name: SUBJECT_HEADER needs a name",
        "applications[0].rules[0].conditions[0].values[0]: invalid regex",
        "applications[0].rules[0].conditions[1].values[0]: \"10.0.0.0/33\" is not a CIDR",
        "applications[0].rules[0].actions[0].rate_limit.key: unknown variable $nope",
        "applications[0].rules[0].actions[0].rate_limit.requests_per_second: must be a positive number",
        "applications[0].rules[0].actions[0].rate_limit.delay: must not exceed burst (2 > 1)",
        "applications[0].rules[0].actions[1].redirect.status: must be 301, 302, 303, 307 or 308, got 200",
        "applications[0].rules[0].actions[2]: an action must set exactly one of its kinds",
        "upstreams[0].peers[0].address: \"nowhere\" is not host:port",
        "upstreams[0].hash_key: BALANCER_CONSISTENT_HASH needs a hash_key",
        "upstreams[0].health_check.path: must start with '/'",
        "upstreams[0].health_check.timeout_ms: must not exceed interval_ms (500 > 100)",
    ];
    for want in expected {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in\n{}",
            errs.join("\n")
        );
    }
    assert_eq!(errs.len(), expected.len(), "{}", errs.join("\n"));
}

#[test]
fn two_applications_cannot_claim_one_domain_or_both_be_default() {
    let yaml = r#"
applications:
  - {name: a, domains: [x.com], is_default: true, listeners: [{address: "127.0.0.1:1"}]}
  - {name: b, domains: [x.com], is_default: true, listeners: [{address: "127.0.0.1:1", tls: true}], certificate: c}
"#;
    let errs = errors(yaml);
    assert!(
        errs.contains(
            &r#"applications[1].domains[0]: "x.com" is already served by application "a""#
                .to_string()
        ),
        "{errs:?}"
    );
    assert!(
        errs.contains(
            &r#"applications[1].is_default: application "a" is already the default"#.to_string()
        ),
        "{errs:?}"
    );
    assert!(errs.contains(&"applications[1].listeners[0].tls: 127.0.0.1:1 is plain HTTP at applications[0].listeners[0]".to_string()), "{errs:?}");
    assert!(
        errs.contains(&r#"applications[1].certificate: unknown certificate "c""#.to_string()),
        "{errs:?}"
    );
}

#[test]
fn certificates_must_hold_pem_blocks() {
    let yaml = r#"
certificates:
  - {name: c, cert_pem: "not pem", key_pem: "neither"}
"#;
    let errs = errors(yaml);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].starts_with("certificates[0].cert_pem: no CERTIFICATE block found"));
    assert!(errs[1].starts_with("certificates[0].key_pem: no usable private key"));
}

#[test]
fn duplicate_names_are_rejected() {
    let yaml = r#"
upstreams:
  - {name: web, peers: [{address: "127.0.0.1:1"}]}
  - {name: web, peers: [{address: "127.0.0.1:2"}]}
shared_dicts:
  - {name: d, capacity_bytes: 100}
"#;
    let errs = errors(yaml);
    assert_eq!(
        errs,
        vec![
            r#"upstreams[1].name: duplicate name "web""#.to_string(),
            "shared_dicts[0].capacity_bytes: must be at least 8192, got 100".to_string()
        ]
    );
}

#[test]
fn discovery_needs_a_port_for_address_records() {
    let yaml = r#"
upstreams:
  - name: svc
    discovery: {name: web.service.consul, record_type: DNS_RECORD_TYPE_A, resolver: "127.0.0.1"}
"#;
    let errs = errors(yaml);
    assert_eq!(
        errs,
        vec![
            "upstreams[0].discovery.port: A/AAAA discovery needs a port (1-65535)".to_string(),
            "upstreams[0].discovery.resolver: \"127.0.0.1\" is not an ip:port address".to_string(),
        ]
    );
}

#[test]
fn exists_takes_no_values_and_needs_none() {
    let ok = GOOD.replace(
        "conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [\"/api\"]}]",
        "conditions: [{subject: SUBJECT_COOKIE, name: s, operator: OPERATOR_EXISTS}]",
    );
    assert_eq!(errors(&ok), Vec::<String>::new());
    let bad = ok.replace(
        "operator: OPERATOR_EXISTS}",
        "operator: OPERATOR_EXISTS, values: [x]}",
    );
    assert_eq!(
        errors(&bad),
        vec!["applications[0].rules[0].conditions[0].values: OPERATOR_EXISTS takes no values"]
    );
}

#[test]
fn cache_storage_sizes_are_checked() {
    let bad = format!(
        "{GOOD}\nserver: {{cache: {{memory_bytes: 2097152, max_memory_object_bytes: 4194304, disk_bytes: 10, lock_timeout_ms: 700000}}}}\n"
    );
    assert_eq!(
        errors(&bad),
        vec![
            "server.cache.max_memory_object_bytes: must not exceed memory_bytes (4194304 > 2097152)",
            "server.cache.disk_bytes: must be 0 (default) or at least 1048576, got 10",
            "server.cache.lock_timeout_ms: must be at most 600000 (10 min), got 700000",
        ]
    );
}

#[test]
fn lua_phases_that_are_not_per_request_are_refused_where_nginx_would_refuse_them() {
    let yaml = GOOD.replace(
        "    upstream: web\n    rules:",
        "    upstream: web\n    lua: {init_worker: {inline: 'x = 1'}, balancer: {inline: 'x = 1'}, body_filter: {inline: 'x = 1'}}\n    rules:",
    );
    let errs = errors(&yaml);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with("applications[0].lua.init_worker: "),
        "{errs:?}"
    );
    assert!(errs[0].contains("lua_init_worker"), "{errs:?}");
    assert!(
        errs[1].starts_with("applications[0].lua.balancer: "),
        "{errs:?}"
    );
    assert!(errs[1].contains("lua_balancer"), "{errs:?}");
}

#[test]
fn init_worker_is_set_on_the_config_and_the_balancer_on_an_upstream() {
    let good = format!(
        "lua_init_worker: {{inline: 'ngx.timer.every(1, function() end)'}}\n{}",
        GOOD.replace(
            "    peers: [{address: \"127.0.0.1:8000\"}]",
            "    peers: []\n    lua_balancer: {module: lb}",
        )
    );
    assert_eq!(errors(&good), Vec::<String>::new());
    let empty = good
        .replace(
            "{inline: 'ngx.timer.every(1, function() end)'}",
            "{inline: ' '}",
        )
        .replace("{module: lb}", "{}");
    assert_eq!(
        errors(&empty),
        vec![
            "upstreams[0].lua_balancer: needs inline code or a module name",
            "lua_init_worker: needs inline code or a module name",
        ]
    );
}
