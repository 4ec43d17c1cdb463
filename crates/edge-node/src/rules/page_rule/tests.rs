use super::*;
use crate::rules::request_view::test_support::OwnedRequest;
use outpost_proto::{SourceFormat, parse_config};

/// Rules from YAML (the list under `rules:`), compiled.
fn rules(yaml: &str) -> Vec<PageRule> {
    let cfg = parse_config(
        &format!("applications:\n  - name: a\n    rules:\n{}", indent(yaml)),
        SourceFormat::Yaml,
    )
    .unwrap();
    cfg.applications[0]
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| PageRule::compile(r, &format!("a/{i}")).unwrap())
        .collect()
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("      {l}\n")).collect()
}

fn run(rules: &[PageRule], req: &OwnedRequest, limiter: &RateLimiter, now_ms: u64) -> RuleEffects {
    evaluate(rules, &req.view(), limiter, || now_ms)
}

#[test]
fn a_rewrite_is_seen_by_later_rules_and_last_stops_evaluation() {
    let rs = rules(
        r#"
- conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: ["/old/"]}]
  actions: [{rewrite_uri: {pattern: "^/old/(.*)$", replacement: "/new/$1"}}]
- conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: ["/new/"]}]
  actions: [{upstream: v2}, {set_request_header: {name: X-Path, value: "$uri"}}]
  last: true
- actions: [{upstream: never}]
"#,
    );
    let fx = run(
        &rs,
        &OwnedRequest::get("/old/page"),
        &RateLimiter::default(),
        0,
    );
    assert_eq!(fx.rewritten_path.as_deref(), Some("/new/page"));
    assert_eq!(fx.upstream.as_deref(), Some("v2"));
    assert_eq!(fx.request_headers[0].value.as_ref().unwrap(), "/new/page");
}

#[test]
fn the_first_answering_action_ends_evaluation() {
    let rs = rules(
        r#"
- actions:
  - {set_response_header: {name: X-Seen, value: "1"}}
  - {redirect: {location: "https://$host$request_uri", status: 301}}
  - {set_response_header: {name: X-Never, value: "1"}}
- actions: [{respond: {status: 200, body: never}}]
"#,
    );
    let fx = run(
        &rs,
        &OwnedRequest::get("/a?b=1"),
        &RateLimiter::default(),
        0,
    );
    let resp = fx.respond.unwrap();
    assert_eq!(resp.status, 301);
    assert_eq!(resp.headers[0].1, "https://example.com/a?b=1");
    assert_eq!(fx.response_headers.len(), 1);
}

#[test]
fn access_control_takes_the_first_matching_entry() {
    let rs = rules(
        r#"
- actions:
  - access_control:
      entries:
        - {allow: true, addresses: ["192.0.2.7"]}
        - {allow: false, addresses: ["192.0.2.0/24"]}
"#,
    );
    let limiter = RateLimiter::default();
    assert!(
        run(&rs, &OwnedRequest::get("/"), &limiter, 0)
            .respond
            .is_none()
    );
    let mut other = OwnedRequest::get("/");
    other.client = "192.0.2.8:1".parse().unwrap();
    assert_eq!(run(&rs, &other, &limiter, 0).respond.unwrap().status, 403);
    other.client = "198.51.100.1:1".parse().unwrap();
    assert!(run(&rs, &other, &limiter, 0).respond.is_none());
}

#[test]
fn rate_limits_delay_then_reject_per_key() {
    let rs = rules(
        r#"
- actions: [{rate_limit: {key: "$http_x_key", requests_per_second: 10, burst: 2, delay: 1, status: 429}}]
"#,
    );
    let limiter = RateLimiter::default();
    let req = OwnedRequest::get("/").header("x-key", "k1");
    let outcomes: Vec<_> = (0..4)
        .map(|_| {
            let fx = run(&rs, &req, &limiter, 5_000);
            (fx.delay, fx.respond.map(|r| r.status.as_u16()))
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (Duration::ZERO, None),
            (Duration::ZERO, None),
            (Duration::from_millis(100), None),
            (Duration::ZERO, Some(429))
        ]
    );
    let other = OwnedRequest::get("/").header("x-key", "k2");
    assert!(run(&rs, &other, &limiter, 5_000).respond.is_none());
}

#[test]
fn lua_actions_compile_and_phases_that_are_not_per_request_are_refused_with_their_path() {
    let ok = parse_config(
        "applications:\n  - name: a\n    rules:\n      - actions: [{lua: {access: {inline: 'ngx.exit(403)'}}}]\n",
        SourceFormat::Yaml,
    )
    .unwrap();
    assert!(PageRule::compile(&ok.applications[0].rules[0], "a/0").is_ok());
    let filter = parse_config(
        "applications:\n  - name: a\n    rules:\n      - actions: [{lua: {body_filter: {inline: 'ngx.arg[1] = ngx.arg[1]:upper()'}}}]\n",
        SourceFormat::Yaml,
    )
    .unwrap();
    assert!(PageRule::compile(&filter.applications[0].rules[0], "a/0").is_ok());
    let bad = parse_config(
        "applications:\n  - name: a\n    rules:\n      - actions: [{lua: {balancer: {inline: 'x = 1'}}}]\n",
        SourceFormat::Yaml,
    )
    .unwrap();
    let err = PageRule::compile(&bad.applications[0].rules[0], "a/0").unwrap_err();
    assert_eq!(err.0, "actions[0].lua.balancer");
    assert!(err.1.contains("lua_balancer"), "{}", err.1);
}
