//! The HTTP cache end to end, through the edge, on real sockets. Each test names the RFC
//! section it checks. The origin's `/c/...` objects take their caching headers from the query
//! and put the origin's hit count in the body, so a body tells where it came from.

mod support;

use std::time::Duration;

use outpost_edge_node::EdgeSettings;
use support::*;

const CACHED: &str = r#"
upstreams: [{name: web, peers: [{address: "@O@"}]}]
applications:
  - name: site
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    upstream: web
    cache_rules:
      - conditions: [{subject: SUBJECT_ARG, name: rule, operator: OPERATOR_EQUALS, values: [ttl]}]
        default_ttl_seconds: 60
      - conditions: [{subject: SUBJECT_ARG, name: rule, operator: OPERATOR_EQUALS, values: [enforce]}]
        default_ttl_seconds: 60
        enforce: true
        browser_ttl_seconds: 30
      - conditions: [{subject: SUBJECT_ARG, name: rule, operator: OPERATOR_EQUALS, values: [nocache]}]
        bypass: true
      - conditions: [{subject: SUBJECT_ARG, name: rule, operator: OPERATOR_EQUALS, values: [sie]}]
        stale_if_error_seconds: 600
      - {}
"#;

async fn cached_edge(origin: &Origin) -> std::sync::Arc<outpost_edge_node::EdgeNode> {
    edge(CACHED, &[("O", origin.addr.to_string())]).await
}

fn cache_status(h: &reqwest::header::HeaderMap) -> String {
    h.get("cache-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_response_is_served_from_the_cache_with_age_rfc9111_4_2_and_cache_status_rfc9211() {
    let origin = Origin::start("o").await;
    let node = cached_edge(&origin).await;
    let url = format!("{}/c/a?cc=max-age=60", base_url(&node));
    let c = client();
    let (s1, h1, b1) = get(&c, &url).await;
    assert_eq!(s1, 200);
    assert!(
        cache_status(&h1).contains("fwd=miss") && cache_status(&h1).contains("stored"),
        "{h1:?}"
    );
    let (s2, h2, b2) = get(&c, &url).await;
    assert_eq!((s2, b2), (200, b1), "the second answer is the stored one");
    assert_eq!(origin.hits(), 1);
    assert!(cache_status(&h2).starts_with("outpost; hit"), "{h2:?}");
    assert!(
        h2.get("age").is_some(),
        "RFC 9111 §5.1: a cached response carries Age"
    );
    // Another URL, another key.
    get(&c, &format!("{}/c/b?cc=max-age=60", base_url(&node))).await;
    assert_eq!(origin.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_private_set_cookie_and_missing_freshness_are_not_stored_rfc9111_3() {
    let origin = Origin::start("o").await;
    let node = cached_edge(&origin).await;
    let c = client();
    let base = base_url(&node);
    for (i, q) in [
        "cc=no-store",
        "cc=private",
        "cc=max-age=60&cookie=1",
        "x=no-freshness",
    ]
    .iter()
    .enumerate()
    {
        let url = format!("{base}/c/n{i}?{q}");
        let (_, h, _) = get(&c, &url).await;
        assert!(!cache_status(&h).contains("stored"), "{q}: {h:?}");
        get(&c, &url).await;
        assert_eq!(
            origin.hits(),
            2 * (i + 1),
            "{q} must not be served from the cache"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_default_ttl_covers_only_responses_without_freshness_rfc9111_4_2_2() {
    let origin = Origin::start("o").await;
    let node = cached_edge(&origin).await;
    let c = client();
    let base = base_url(&node);
    // No freshness information: the rule's default TTL applies.
    let url = format!("{base}/c/t?rule=ttl");
    get(&c, &url).await;
    let before = origin.hits();
    get(&c, &url).await;
    assert_eq!(origin.hits(), before, "stored for the rule's default TTL");
    // The origin's own max-age=0 still wins over the default TTL.
    let url = format!("{base}/c/t2?rule=ttl&cc=max-age=0");
    get(&c, &url).await;
    let before = origin.hits();
    get(&c, &url).await;
    assert_eq!(origin.hits(), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_ignores_the_origin_and_browser_ttl_rewrites_what_clients_see() {
    let origin = Origin::start("o").await;
    let node = cached_edge(&origin).await;
    let c = client();
    let url = format!("{}/c/e?rule=enforce&cc=no-store", base_url(&node));
    get(&c, &url).await;
    let (_, h, _) = get(&c, &url).await;
    assert_eq!(origin.hits(), 1, "enforce stores even no-store");
    assert_eq!(h.get("cache-control").unwrap(), "max-age=30");
    // A bypass rule never stores.
    let url = format!("{}/c/b?rule=nocache&cc=max-age=60", base_url(&node));
    get(&c, &url).await;
    get(&c, &url).await;
    assert_eq!(origin.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_response_is_revalidated_and_a_304_refreshes_it_rfc9111_4_3() {
    let origin = Origin::start("o").await;
    let node = cached_edge(&origin).await;
    let c = client();
    // Age 100 > max-age 10: stale as soon as it is stored.
    let url = format!("{}/c/r?cc=max-age=10&etag=v1&age=100", base_url(&node));
    let (_, _, first) = get(&c, &url).await;
    let (s, h, body) = get(&c, &url).await;
    assert_eq!(s, 200);
    assert_eq!(origin.hits(), 2, "revalidation went to the origin");
    assert_eq!(body, first, "a 304 keeps the stored body");
    let st = cache_status(&h);
    assert!(
        st.contains("fwd=stale") && st.contains("fwd-status=304"),
        "{st}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_conditionals_ranges_and_head_are_answered_from_the_cache_rfc9110_13_14() {
    let origin = Origin::start("o").await;
    let node = cached_edge(&origin).await;
    let c = client();
    let url = format!("{}/c/cond?cc=max-age=60&etag=abc&size=100", base_url(&node));
    get(&c, &url).await;
    let r = c
        .get(&url)
        .header("if-none-match", "\"abc\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers().get("etag").unwrap(), "\"abc\"");
    let r = c
        .get(&url)
        .header("if-none-match", "W/\"abc\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304, "If-None-Match uses the weak comparison");
    let r = c
        .get(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers().get("content-range").unwrap(), "bytes 10-19/100");
    assert_eq!(r.bytes().await.unwrap().len(), 10);
    let r = c
        .get(&url)
        .header("range", "bytes=500-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers().get("content-range").unwrap(), "bytes */100");
    let r = c.head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("content-length").unwrap(), "100");
    assert_eq!(
        origin.hits(),
        1,
        "all of these came from the one stored GET"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_variants_apart_rfc9111_4_1() {
    let origin = Origin::start("o").await;
    let node = cached_edge(&origin).await;
    let c = client();
    let url = format!("{}/c/v?cc=max-age=60&vary=X-Lang", base_url(&node));
    let en = c
        .get(&url)
        .header("x-lang", "en")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let fr = c
        .get(&url)
        .header("x-lang", "fr")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_ne!(en, fr);
    assert_eq!(origin.hits(), 2);
    let en2 = c
        .get(&url)
        .header("x-lang", "en")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let fr2 = c
        .get(&url)
        .header("x-lang", "fr")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!((en2, fr2), (en, fr));
    assert_eq!(origin.hits(), 2);
    // Vary: * never matches a stored response.
    let star = format!("{}/c/star?cc=max-age=60&vary=*", base_url(&node));
    get(&c, &star).await;
    get(&c, &star).await;
    assert_eq!(origin.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafe_method_invalidates_the_stored_response_rfc9111_4_4() {
    let origin = Origin::start("o").await;
    let node = cached_edge(&origin).await;
    let c = client();
    let url = format!("{}/c/inv?cc=max-age=60", base_url(&node));
    get(&c, &url).await;
    get(&c, &url).await;
    assert_eq!(origin.hits(), 1);
    let r = c.post(&url).body("x").send().await.unwrap();
    assert_eq!(r.status(), 200);
    get(&c, &url).await;
    assert_eq!(
        origin.hits(),
        3,
        "the POST invalidated it; the next GET went to the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_cache_control_overrides_cache_control_rfc9213() {
    let origin = Origin::start("o").await;
    let node = cached_edge(&origin).await;
    let c = client();
    let url = format!("{}/c/cdn?cc=no-store&cdncc=max-age=60", base_url(&node));
    get(&c, &url).await;
    get(&c, &url).await;
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background_rfc5861_3() {
    let origin = Origin::start("o").await;
    let node = cached_edge(&origin).await;
    let c = client();
    let url = format!(
        "{}/c/swr?cc=max-age=10,%20stale-while-revalidate=600&age=20",
        base_url(&node)
    );
    let (_, _, first) = get(&c, &url).await;
    let (_, h, second) = get(&c, &url).await;
    assert_eq!(second, first, "served stale");
    assert!(cache_status(&h).contains("hit"), "{h:?}");
    assert!(
        eventually(Duration::from_secs(5), || async { origin.hits() == 2 }).await,
        "the background refresh reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_the_stored_response_when_the_origin_is_down_rfc5861_4() {
    let origin = Origin::start("o").await;
    let node = cached_edge(&origin).await;
    let c = client();
    let url = format!(
        "{}/c/sie?cc=max-age=10,%20stale-if-error=600&age=20",
        base_url(&node)
    );
    let (_, _, first) = get(&c, &url).await;
    origin.kill();
    let (s, h, body) = get(&c, &url).await;
    assert_eq!((s, body), (200, first));
    assert!(cache_status(&h).contains("stale-if-error"), "{h:?}");
    // Without stale-if-error, a stale object is not served on error.
    let origin2 = Origin::start("o2").await;
    let node2 = cached_edge(&origin2).await;
    let url2 = format!("{}/c/nosie?cc=max-age=10&age=20", base_url(&node2));
    get(&c, &url2).await;
    origin2.kill();
    let (s, _, _) = get(&c, &url2).await;
    assert_eq!(s, 502);
}

// RFC 9111 §4.2.4: serving stale while disconnected, by the operator's rule (nginx's
// `proxy_cache_use_stale`), unless the response forbids it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_serves_stale_when_the_origin_is_down_unless_the_response_forbids_it_rfc9111_4_2_4()
{
    let origin = Origin::start("o").await;
    let node = cached_edge(&origin).await;
    let c = client();
    let base = base_url(&node);
    let url = format!("{base}/c/rsie?cc=max-age=10&age=20&rule=sie");
    let strict = format!("{base}/c/rsie-mr?cc=max-age=10,%20must-revalidate&age=20&rule=sie");
    let (_, _, first) = get(&c, &url).await;
    get(&c, &strict).await;
    origin.kill();
    let (s, h, body) = get(&c, &url).await;
    assert_eq!((s, body), (200, first));
    assert!(cache_status(&h).contains("stale-if-error"), "{h:?}");
    let (s, _, _) = get(&c, &strict).await;
    assert_eq!(s, 502, "must-revalidate forbids serving stale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_misses_reach_the_origin_once() {
    let origin = Origin::start("o").await;
    let node = cached_edge(&origin).await;
    let c = client();
    let url = format!("{}/c/herd?cc=max-age=60&delay=300", base_url(&node));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { get(&c, &url).await })
        })
        .collect();
    let mut bodies = std::collections::HashSet::new();
    let mut collapsed = 0;
    for t in tasks {
        let (s, h, b) = t.await.unwrap();
        assert_eq!(s, 200);
        collapsed += cache_status(&h).contains("collapsed") as usize;
        bodies.insert(b);
    }
    assert_eq!(
        origin.hits(),
        1,
        "one origin request for 100 concurrent misses"
    );
    assert_eq!(bodies.len(), 1);
    assert!(collapsed >= 90, "{collapsed} collapsed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_url_prefix_and_tag_soft_and_hard() {
    let origin = Origin::start("o").await;
    let settings = EdgeSettings {
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    let node = edge_with(settings, CACHED, &[("O", origin.addr.to_string())]).await;
    let admin = format!("http://{}/cache/purge", node.admin_addr().unwrap());
    let base = base_url(&node);
    let c = client();
    let a = format!("{base}/c/p/a?cc=max-age=60&etag=a&tags=red%20blue");
    let b = format!("{base}/c/p/b?cc=max-age=60&tags=blue");
    let d = format!("{base}/c/q/d?cc=max-age=60");
    for u in [&a, &b, &d] {
        get(&c, u).await;
    }
    assert_eq!(origin.hits(), 3);
    let purge = |body: serde_json::Value| {
        let (c, admin) = (c.clone(), admin.clone());
        async move {
            let r = c.post(&admin).body(body.to_string()).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            v["purged"].as_u64().unwrap()
        }
    };
    // Hard purge by URL: the next request goes to the origin.
    let url_b = b.replace(&base, &format!("http://{}", node_host(&node)));
    assert_eq!(purge(serde_json::json!({"url": url_b})).await, 1);
    get(&c, &b).await;
    assert_eq!(origin.hits(), 4);
    // Soft purge by tag: stale from now, so revalidated (If-None-Match -> 304).
    assert_eq!(
        purge(serde_json::json!({"tag": "red", "soft": true})).await,
        1
    );
    let (_, h, _) = get(&c, &a).await;
    assert_eq!(origin.hits(), 5);
    assert!(cache_status(&h).contains("fwd-status=304"), "{h:?}");
    // Hard purge by prefix takes both /c/p/ objects, not /c/q/.
    let prefix = format!("http://{}/c/p/", node_host(&node));
    assert_eq!(purge(serde_json::json!({"prefix": prefix})).await, 2);
    get(&c, &d).await;
    assert_eq!(origin.hits(), 5, "outside the prefix: still cached");
    // The metrics count what the cache did.
    let metrics = c
        .get(format!("http://{}/metrics", node.admin_addr().unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        r#"outpost_edge_cache_requests_total{application="site",result="miss"} 4"#,
        r#"outpost_edge_cache_requests_total{application="site",result="revalidated"} 1"#,
        r#"outpost_edge_cache_requests_total{application="site",result="hit"} 1"#,
        r#"outpost_edge_cache_objects{tier="memory"} 1"#,
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }
    // Bad requests name the problem.
    let r = c.post(&admin).body("{\"tag\": 1}").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("tag"));
}

/// The Host the edge sees from reqwest: `127.0.0.1:PORT`, lower-cased without the port for
/// the key's host part; URLs stored for purges carry it as the client sent it.
fn node_host(node: &outpost_edge_node::EdgeNode) -> String {
    plain_addr(node).ip().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_live_on_disk_stream_to_followers_and_survive_a_restart() {
    let origin = Origin::start("o").await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "server: {{cache: {{disk_path: {:?}, memory_bytes: 4194304, max_memory_object_bytes: 1048576}}}}\n{CACHED}",
        dir.path().display().to_string()
    );
    let vars = [("O", origin.addr.to_string())];
    let size = 12 << 20;
    let url_path = format!("/c/big?cc=max-age=600&size={size}&delay=200");
    {
        let node = edge(&yaml, &vars).await;
        let c = client();
        let url = format!("{}{url_path}", base_url(&node));
        // Two at once: the second follows the first's fill past the memory limit, from disk.
        let (a, b) = tokio::join!(get(&c, &url), get(&c, &url));
        assert_eq!((a.2.len(), b.2.len()), (size, size));
        assert_eq!(origin.hits(), 1);
        let (_, h, body) = get(&c, &url).await;
        assert_eq!(body.len(), size);
        assert!(cache_status(&h).contains("hit"));
        node.shutdown(Duration::from_secs(1)).await;
    }
    let node = edge(&yaml, &vars).await;
    let (_, h, body) = get(&client(), &format!("{}{url_path}", base_url(&node))).await;
    assert_eq!(body.len(), size);
    assert!(
        cache_status(&h).contains("hit"),
        "served from disk after a restart: {h:?}"
    );
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_goes_upstream_with_the_forwarding_headers_and_without_client_conditionals() {
    let origin = Origin::start("o").await;
    let node = cached_edge(&origin).await;
    let c = client();
    let url = format!("{}/echo-headers?rule=ttl", base_url(&node));
    let seen = c
        .get(&url)
        .header("if-none-match", "\"zzz\"")
        .header("range", "bytes=0-1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(seen.contains("x-forwarded-for: 127.0.0.1"), "{seen}");
    assert!(seen.contains("via: 1.1 outpost"), "{seen}");
    assert!(seen.contains("x-request-id: "), "{seen}");
    assert!(
        !seen.contains("if-none-match"),
        "the cache asks for the full response: {seen}"
    );
    assert!(!seen.contains("range:"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_sets_the_key_and_skips_lookup_or_store_like_srcache() {
    let origin = Origin::start("o").await;
    let yaml = r#"
upstreams: [{name: web, peers: [{address: "@O@"}]}]
applications:
  - name: site
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    upstream: web
    cache_rules: [{}]
    lua:
      access:
        inline: |
          local cache = require "outpost.cache"
          if ngx.var.arg_k then cache.set_key("custom:" .. ngx.var.arg_k) end
          if ngx.var.arg_fresh then cache.skip_lookup() end
          if ngx.var.arg_nostore then cache.skip_store() end
"#;
    let node = edge(yaml, &[("O", origin.addr.to_string())]).await;
    let base = base_url(&node);
    let c = client();
    // Two URLs, one key chosen by the script: the second is a hit.
    let (_, _, a) = get(&c, &format!("{base}/c/x?cc=max-age=60&k=same")).await;
    let (_, h, b) = get(&c, &format!("{base}/c/y?cc=max-age=60&k=same")).await;
    assert_eq!((origin.hits(), a), (1, b));
    assert!(cache_status(&h).contains("hit"));
    // skip_lookup: goes to the origin, and its answer replaces the stored one.
    let (_, h, fresh) = get(&c, &format!("{base}/c/x?cc=max-age=60&k=same&fresh=1")).await;
    assert_eq!(origin.hits(), 2, "{h:?}");
    assert!(cache_status(&h).contains("stored"));
    let (_, _, after) = get(&c, &format!("{base}/c/x?cc=max-age=60&k=same")).await;
    assert_eq!(after, fresh);
    // skip_store: fetched, not kept.
    let url = format!("{base}/c/n?cc=max-age=60&nostore=1");
    get(&c, &url).await;
    get(&c, &url).await;
    assert_eq!(origin.hits(), 4);
}
