//! The recorded OpenResty corpus: 307 snippets with the responses Debian's nginx 1.22 +
//! lua-nginx-module 0.10.23 gave (`openresty_cases.json`, made by `capture_openresty.py`),
//! replayed through our VM.
//!
//! Cases we do not match yet are listed in `openresty_known_differences.txt`. The test fails
//! when a case outside that list fails (a regression) and when a listed case passes (so the
//! list only shrinks). Connection-level outcomes (a response cut off, no response at all) are
//! not comparable without a socket and are skipped here.

mod support;

use outpost_lua::Phase;
use serde_json::Value;
use support::*;

fn phase_of(name: &str) -> Phase {
    match name {
        "access" => Phase::Access,
        "rewrite" => Phase::Rewrite,
        "header_filter" => Phase::HeaderFilter,
        "body_filter" => Phase::BodyFilter,
        _ => Phase::Content,
    }
}

/// Why a case's response differs from the recording, or `None` when it matches.
fn compare(case: &Value, status: u16, headers: &http::HeaderMap, body: &[u8]) -> Option<String> {
    let exp = &case["expected"];
    let want_status = exp["status"].as_u64().unwrap_or(0) as u16;
    if status != want_status {
        return Some(format!("status {status}, want {want_status}"));
    }
    if exp["body_match"] == "exact" {
        let want = exp["body"].as_str().unwrap_or("");
        if body != want.as_bytes() {
            return Some(format!(
                "body {:?}, want {want:?}",
                String::from_utf8_lossy(body)
            ));
        }
    }
    if let Some(hs) = exp["headers"].as_object() {
        for (k, v) in hs {
            let got = headers
                .get_all(k.as_str())
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", ");
            match v {
                Value::Null if !got.is_empty() => {
                    return Some(format!("header {k} present: {got:?}"));
                }
                Value::String(w) if *w != got => {
                    return Some(format!("header {k} = {got:?}, want {w:?}"));
                }
                _ => {}
            }
        }
    }
    None
}

#[test]
fn the_recorded_openresty_corpus() {
    // Deeply nested cases (cjson's 1000 levels) need more stack than a test thread's 2 MiB.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(corpus)
        .unwrap()
        .join()
        .unwrap();
}

fn corpus() {
    let cases: Vec<Value> =
        serde_json::from_str(include_str!("openresty_cases.json")).expect("corpus parses");
    let known: std::collections::HashSet<&str> = include_str!("openresty_known_differences.txt")
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect();
    let h = harness();
    let (mut passed, mut skipped) = (0, 0);
    let mut regressions = Vec::new();
    let mut now_passing = Vec::new();
    let mut differences = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap_or("?");
        let exp = &case["expected"];
        if exp.get("incomplete").is_some()
            || exp.get("closed_without_response").is_some()
            || exp.get("no_response_timeout").is_some()
        {
            skipped += 1;
            continue;
        }
        let req = &case["request"];
        // A list value is a header sent once per element, in order (as the capture sent it).
        let headers = req["headers"]
            .as_object()
            .map(|m| {
                m.iter()
                    .flat_map(|(k, v)| {
                        match v {
                            Value::Array(vs) => vs.iter().collect::<Vec<_>>(),
                            v => vec![v],
                        }
                        .into_iter()
                        .map(move |v| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let r = Req {
            method: req["method"].as_str().unwrap_or("GET"),
            path: req["path"].as_str().unwrap_or("/t"),
            headers,
            body: req["body"].as_str().map(|b| b.as_bytes().to_vec()),
            globals: None,
        };
        let code = case["code"].as_str().unwrap_or("");
        let phase = phase_of(case["phase"].as_str().unwrap_or("content"));
        let content = case["content_code"].as_str().unwrap_or(match phase {
            Phase::HeaderFilter | Phase::BodyFilter => "ngx.say(\"body\")",
            _ => "ngx.say(\"content\")",
        });
        let phases: Vec<(Phase, &str)> = match phase {
            Phase::Content => vec![(Phase::Content, code)],
            Phase::HeaderFilter => vec![(Phase::Content, content), (Phase::HeaderFilter, code)],
            Phase::BodyFilter => vec![(Phase::Content, content), (Phase::BodyFilter, code)],
            p => vec![(p, code), (Phase::Content, content)],
        };
        let resp = block_on(h.run(&r, &phases));
        match compare(case, resp.status, &resp.headers, &resp.body) {
            None => {
                passed += 1;
                if known.contains(name) {
                    now_passing.push(name.to_string());
                }
            }
            Some(why) => {
                differences.push(format!("{name}: {why}"));
                if !known.contains(name) {
                    regressions.push(format!("{name}: {why}"));
                }
            }
        }
    }
    eprintln!(
        "OpenResty corpus: {passed} match, {} differ, {skipped} skipped (connection-level), of {}",
        differences.len(),
        cases.len()
    );
    if std::env::var_os("OPENRESTY_DIFF").is_some() {
        for d in &differences {
            eprintln!("  {d}");
        }
    }
    assert!(
        regressions.is_empty(),
        "new differences from OpenResty:\n{}",
        regressions.join("\n")
    );
    assert!(
        now_passing.is_empty(),
        "these now match OpenResty; remove them from openresty_known_differences.txt:\n{}",
        now_passing.join("\n")
    );
}
