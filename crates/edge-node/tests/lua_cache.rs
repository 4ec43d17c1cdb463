//! Lua reading and writing the edge's cache (`require "outpost.cache"`: `get`, `set`,
//! `delete`, `purge_tag`, `key`), end to end: what a script stores is what a plain request
//! hits, and what a proxied request stored is what a script reads. The origin counts its
//! requests, so a hit is one it never saw.

mod support;

use std::time::Duration;

use support::*;

/// `/c/...` is cached under the default key parts. `/lua/*` are scripts taking the object's
/// path (`p`, percent-encoded) and their other inputs from the query.
const APP: &str = r#"
server: {cache: {@DISK@}}
upstreams: [{name: web, peers: [{address: "@O@"}]}]
lua_modules:
  - name: keyof
    code: |
      local cache = require "outpost.cache"
      return function()
        return cache.key("http://" .. ngx.var.host .. ngx.unescape_uri(ngx.var.arg_p))
      end
applications:
  - name: site
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    upstream: web
    cache_rules:
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/c/]}]
    rules:
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/lua/set]}]
        actions:
          - lua:
              content:
                inline: |
                  local cache = require "outpost.cache"
                  local a = ngx.req.get_uri_args()
                  local ok, err = cache.set(require("keyof")(), {
                    status = 200,
                    header = {["Content-Type"] = "text/plain", ["X-From"] = "lua"},
                    body = a.body,
                    ttl = tonumber(a.ttl),
                    tags = {a.tag},
                  })
                  ngx.say(tostring(ok), " ", tostring(err))
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/lua/get]}]
        actions:
          - lua:
              content:
                inline: |
                  local res, err = require("outpost.cache").get(require("keyof")())
                  if not res then return ngx.say("nil ", tostring(err)) end
                  ngx.say(res.status, " ", res.header.x_origin, " ", res.header["Content-Length"],
                    " age=", res.age, " ttl>0=", tostring(res.ttl > 0),
                    " stale=", tostring(res.stale), " body=", res.body)
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/lua/delete]}]
        actions:
          - lua: {content: {inline: "ngx.say(tostring(require('outpost.cache').delete(require('keyof')())))"}}
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/lua/purge]}]
        actions:
          - lua: {content: {inline: "ngx.say(require('outpost.cache').purge_tag(ngx.var.arg_tag))"}}
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/lua/timer]}]
        actions:
          - lua:
              content:
                inline: |
                  local key = require("keyof")()
                  local ok, err = ngx.timer.at(0, function()
                    require("outpost.cache").set(key, {body = "from-timer", ttl = 60})
                  end)
                  ngx.say(ok and "true" or "false", " ", tostring(err))
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/lua/hf]}]
        actions:
          - lua:
              content: {inline: "ngx.say('body')"}
              header_filter:
                inline: |
                  local ok, err = pcall(require("outpost.cache").get, "k")
                  ngx.header["X-Ok"] = tostring(ok)
                  ngx.header["X-Err"] = err
"#;

async fn start(
    origin: &Origin,
    disk: Option<&std::path::Path>,
) -> std::sync::Arc<outpost_edge_node::EdgeNode> {
    let disk = disk.map_or(String::new(), |d| {
        format!("disk_path: {:?}", d.to_str().unwrap())
    });
    edge(APP, &[("O", origin.addr.to_string()), ("DISK", disk)]).await
}

async fn get(c: &reqwest::Client, url: &str) -> (reqwest::header::HeaderMap, String) {
    let r = c.get(url).send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    let headers = r.headers().clone();
    (headers, r.text().await.unwrap())
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> String {
    h.get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn is_hit(h: &reqwest::header::HeaderMap) -> bool {
    header(h, "cache-status").contains("; hit")
}

/// `/lua/NAME?p=PATH&rest`, with PATH percent-encoded.
fn lua_url(base: &str, name: &str, path: &str, rest: &str) -> String {
    let p = path
        .replace('%', "%25")
        .replace('?', "%3F")
        .replace('&', "%26")
        .replace('=', "%3D");
    format!("{base}/lua/{name}?p={p}&{rest}")
}

async fn an_object_a_script_sets_is_a_hit_for_a_plain_request(disk: Option<&std::path::Path>) {
    let origin = Origin::start("o").await;
    let node = start(&origin, disk).await;
    let (base, c) = (base_url(&node), client());
    let (_, said) = get(
        &c,
        &lua_url(&base, "set", "/c/set", "body=from-lua&ttl=60&tag=t"),
    )
    .await;
    assert_eq!(said, "true nil\n");
    for _ in 0..2 {
        // Two workers: whichever takes the request finds it.
        let (h, body) = get(&c, &format!("{base}/c/set")).await;
        assert_eq!(body, "from-lua");
        assert!(is_hit(&h), "{h:?}");
        assert_eq!(header(&h, "x-from"), "lua");
        assert_eq!(header(&h, "content-type"), "text/plain");
        assert!(h.contains_key("age"));
        assert!(
            !h.contains_key("surrogate-control"),
            "the TTL field is the cache's own"
        );
    }
    assert_eq!(origin.hits(), 0, "the origin never saw the request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_a_script_sets_under_a_rule_key_is_a_hit_without_the_origin() {
    an_object_a_script_sets_is_a_hit_for_a_plain_request(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_a_script_sets_is_a_hit_with_a_disk_tier_too() {
    let dir = tempfile::tempdir().unwrap();
    an_object_a_script_sets_is_a_hit_for_a_plain_request(Some(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_reads_what_a_proxied_request_stored() {
    let origin = Origin::start("o").await;
    let node = start(&origin, None).await;
    let (base, c) = (base_url(&node), client());
    let path = "/c/read?cc=max-age=60";
    let (h, stored_body) = get(&c, &format!("{base}{path}")).await;
    assert!(header(&h, "cache-status").contains("stored"), "{h:?}");
    let (_, said) = get(&c, &lua_url(&base, "get", path, "")).await;
    let len = stored_body.len();
    assert!(
        said.starts_with(&format!("200 o {len} age=")),
        "status, a header (case-folded lookup) and its length: {said}"
    );
    assert!(
        said.ends_with(&format!(" ttl>0=true stale=false body={stored_body}\n")),
        "{said}"
    );
    assert_eq!(origin.hits(), 1);
    let (_, said) = get(&c, &lua_url(&base, "get", "/c/never", "")).await;
    assert_eq!(said, "nil nil\n", "absent is nil without an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_makes_the_next_request_a_miss() {
    let origin = Origin::start("o").await;
    let node = start(&origin, None).await;
    let (base, c) = (base_url(&node), client());
    let path = "/c/del?cc=max-age=60";
    get(&c, &format!("{base}{path}")).await;
    let (h, _) = get(&c, &format!("{base}{path}")).await;
    assert!(is_hit(&h));
    assert_eq!(origin.hits(), 1);
    let (_, said) = get(&c, &lua_url(&base, "delete", path, "")).await;
    assert_eq!(said, "true\n");
    let (_, said) = get(&c, &lua_url(&base, "delete", path, "")).await;
    assert_eq!(said, "false\n", "nothing left to delete");
    let (h, _) = get(&c, &format!("{base}{path}")).await;
    assert!(!is_hit(&h), "{h:?}");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_set_with_a_short_ttl_expires() {
    let origin = Origin::start("o").await;
    let node = start(&origin, None).await;
    let (base, c) = (base_url(&node), client());
    let (_, said) = get(
        &c,
        &lua_url(&base, "set", "/c/ttl", "body=short&ttl=1&tag=t"),
    )
    .await;
    assert_eq!(said, "true nil\n");
    let (h, _) = get(&c, &format!("{base}/c/ttl")).await;
    assert!(is_hit(&h), "fresh at first: {h:?}");
    // Polled, bounded: gone once its second has passed.
    let mut expired = false;
    for _ in 0..60 {
        let (_, said) = get(&c, &lua_url(&base, "get", "/c/ttl", "")).await;
        if said == "nil nil\n" {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(expired, "get stops returning the object once it is stale");
    let (h, body) = get(&c, &format!("{base}/c/ttl")).await;
    assert!(!is_hit(&h), "{h:?}");
    assert_ne!(body, "short");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_tag_removes_objects_a_script_set() {
    let origin = Origin::start("o").await;
    let node = start(&origin, None).await;
    let (base, c) = (base_url(&node), client());
    for p in ["/c/p1", "/c/p2"] {
        get(
            &c,
            &lua_url(&base, "set", p, "body=tagged&ttl=60&tag=group"),
        )
        .await;
    }
    get(
        &c,
        &lua_url(&base, "set", "/c/p3", "body=tagged&ttl=60&tag=other"),
    )
    .await;
    let (_, said) = get(&c, &format!("{base}/lua/purge?tag=group")).await;
    assert_eq!(said, "2\n");
    let (h, _) = get(&c, &format!("{base}/c/p1")).await;
    assert!(!is_hit(&h), "{h:?}");
    let (h, _) = get(&c, &format!("{base}/c/p3")).await;
    assert!(is_hit(&h), "another tag stays: {h:?}");
    // The admin's purge by tag finds them too.
    let purged = node.purge(&outpost_cache::PurgeSelector::Tag("other".into()), false);
    assert_eq!(purged, 1);
    let (h, _) = get(&c, &format!("{base}/c/p3")).await;
    assert!(!is_hit(&h), "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_calls_are_disabled_in_header_filter() {
    let origin = Origin::start("o").await;
    let node = start(&origin, None).await;
    let (h, body) = get(&client(), &format!("{}/lua/hf", base_url(&node))).await;
    assert_eq!(body, "body\n");
    assert_eq!(header(&h, "x-ok"), "false");
    assert_eq!(
        header(&h, "x-err"),
        "API disabled in the context of header_filter_by_lua*"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_can_store_objects() {
    let origin = Origin::start("o").await;
    let node = start(&origin, None).await;
    let (base, c) = (base_url(&node), client());
    let (_, said) = get(&c, &lua_url(&base, "timer", "/c/timer", "")).await;
    assert_eq!(said, "true nil\n");
    // The timer runs after the request; poll the object, bounded, with the script's get.
    let mut stored = false;
    for _ in 0..50 {
        let (_, said) = get(&c, &lua_url(&base, "get", "/c/timer", "")).await;
        if said.ends_with("body=from-timer\n") {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stored, "the timer's set is visible");
    let (h, body) = get(&c, &format!("{base}/c/timer")).await;
    assert!(is_hit(&h) && body == "from-timer", "{h:?} {body}");
    assert_eq!(origin.hits(), 0);
}
