//! Lua in the edge, end to end over real sockets: the phases, shared dicts across workers,
//! modules, errors, and config checks.

mod support;

use std::time::Duration;

use support::*;

const LUA_APP: &str = r#"
shared_dicts: [{name: counters, capacity_bytes: 1048576}]
lua_modules:
  - name: greet
    code: |
      local _M = {}
      local calls = 0
      function _M.hello(who) calls = calls + 1 return "hello " .. who .. " #" .. calls end
      return _M
upstreams: [{name: web, peers: [{address: "@O@"}]}]
applications:
  - name: site
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    upstream: web
    rules:
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/api/hello]}]
        actions:
          - lua:
              content:
                inline: |
                  local cjson = require "cjson"
                  ngx.header.content_type = "application/json"
                  ngx.say(cjson.encode({message = "Hello, World!", status = "success"}))
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/greet]}]
        actions:
          - lua: {content: {inline: "ngx.say(require('greet').hello(ngx.var.arg_who or 'nobody'))"}}
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/deny]}]
        actions:
          - lua: {access: {inline: "return ngx.exit(ngx.HTTP_FORBIDDEN)"}}
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/boom]}]
        actions:
          - lua: {content: {inline: "error('boom')"}}
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/logged]}]
        actions:
          - lua: {content: {inline: "ngx.print(ngx.shared.counters:get('logged') or 0)"}}
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/fixed]}]
        actions:
          - respond: {status: 200, body: "fixed\n"}
      - conditions: [{subject: SUBJECT_ARG, name: m, operator: OPERATOR_EQUALS, values: [put]}]
        actions:
          - lua: {rewrite: {inline: "ngx.req.set_method(ngx.HTTP_PUT)"}}
      - conditions: [{subject: SUBJECT_ARG, name: u, operator: OPERATOR_EQUALS, values: [show]}]
        actions:
          - lua: {rewrite: {inline: "ngx.req.set_header('X-Seen-Uri', ngx.var.uri)"}}
      - conditions: [{subject: SUBJECT_ARG, name: u, operator: OPERATOR_EQUALS, values: [set]}]
        actions:
          - lua: {rewrite: {inline: "ngx.req.set_uri('/echo-headers/x y#')"}}
      - conditions: [{subject: SUBJECT_ARG, name: hf, operator: OPERATOR_EQUALS, values: [deny]}]
        actions:
          - lua: {header_filter: {inline: "if ngx.status == 200 then return ngx.exit(403) end"}}
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/post]}]
        actions:
          - lua: {content: {inline: "ngx.req.read_body() ngx.say(ngx.req.get_method(), ' ', ngx.req.get_body_data())"}}
    lua:
      access:
        inline: |
          local n = ngx.shared.counters:incr("hits", 1, 0)
          ngx.req.set_header("X-Hits", n)
          ngx.ctx.started = ngx.now()
      header_filter:
        inline: |
          ngx.header["X-Lua-Phase"] = ngx.get_phase()
          ngx.header["X-Had-Ctx"] = tostring(ngx.ctx.started ~= nil)
      log:
        inline: |
          ngx.shared.counters:incr("logged", 1, 0)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_run_in_order_around_the_upstream() {
    let origin = Origin::start("origin").await;
    let node = edge(LUA_APP, &[("O", origin.addr.to_string())]).await;
    let base = base_url(&node);
    let c = client();

    // access sets a request header the origin sees; header_filter adds response headers.
    let r = c.get(format!("{base}/echo-headers")).send().await.unwrap();
    assert_eq!(r.headers().get("x-lua-phase").unwrap(), "header_filter");
    assert_eq!(
        r.headers().get("x-had-ctx").unwrap(),
        "true",
        "ngx.ctx crosses phases"
    );
    let seen = r.text().await.unwrap();
    assert!(seen.contains("x-hits: 1"), "{seen}");

    // ngx.req.set_method changes the method the origin sees.
    let (_, _, seen) = get(&c, &format!("{base}/echo-headers?m=put")).await;
    assert!(seen.starts_with("PUT /echo-headers?m=put\n"), "{seen}");

    // Lua sees $uri decoded and normalised; untouched, the client's target goes upstream
    // byte for byte. A URI a script sets goes upstream escaped, as nginx's proxy does.
    let (_, _, seen) = get(&c, &format!("{base}/echo-headers/a%20b//%41?u=show")).await;
    assert!(
        seen.starts_with("GET /echo-headers/a%20b//%41?u=show\n"),
        "{seen}"
    );
    assert!(seen.contains("x-seen-uri: /echo-headers/a b/A\n"), "{seen}");
    let (_, _, seen) = get(&c, &format!("{base}/echo-headers/old?u=set")).await;
    assert!(
        seen.starts_with("GET /echo-headers/x%20y%23?u=set\n"),
        "{seen}"
    );

    // A rule's respond is nginx's `return`: no access code (X-Had-Ctx false), but the
    // header_filter runs on its response, as header_filter_by_lua does on a `return`.
    let r = c.get(format!("{base}/fixed")).send().await.unwrap();
    assert_eq!(r.headers().get("x-lua-phase").unwrap(), "header_filter");
    assert_eq!(r.headers().get("x-had-ctx").unwrap(), "false");
    assert_eq!(r.text().await.unwrap(), "fixed\n");

    // The json-hello example from ../shared/examples, unchanged.
    let r = c.get(format!("{base}/api/hello")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("content-type").unwrap(), "application/json");
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"message": "Hello, World!", "status": "success"})
    );

    // access can end the request; a Lua error is a 500 and the worker keeps serving.
    assert_eq!(
        c.get(format!("{base}/deny")).send().await.unwrap().status(),
        403
    );
    assert_eq!(
        c.get(format!("{base}/boom")).send().await.unwrap().status(),
        500
    );
    // ngx.exit in header_filter replaces the origin's response with the status's own page,
    // as nginx finalises the request there.
    let r = c
        .get(format!("{base}/echo-headers?hf=deny"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let page = r.text().await.unwrap();
    assert!(page.contains("403 Forbidden"), "{page}");
    assert!(
        !page.contains("GET /echo-headers"),
        "the origin's body leaked: {page}"
    );
    let r = c
        .post(format!("{base}/post"))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "POST payload\n");

    // The log phase ran after each of the 8 responses so far (it may trail them).
    let logged = eventually(Duration::from_secs(5), || {
        let c = c.clone();
        let url = format!("{base}/logged");
        async move {
            let n: f64 = c
                .get(url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
                .parse()
                .unwrap_or(0.0);
            n >= 8.0
        }
    })
    .await;
    assert!(logged, "the log phase counted every request");
    assert_eq!(
        origin.hits(),
        5,
        "only the /echo-headers requests reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_dicts_are_shared_by_workers_and_modules_keep_state_per_worker() {
    let origin = Origin::start("origin").await;
    let node = edge(LUA_APP, &[("O", origin.addr.to_string())]).await;
    let base = base_url(&node);
    // Separate connections land on both workers; the counter is one.
    for _ in 0..20 {
        let c = client();
        c.get(format!("{base}/api/hello")).send().await.unwrap();
    }
    let r = client()
        .get(format!("{base}/echo-headers"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(r.contains("x-hits: 21"), "one counter across workers: {r}");
    // A module's upvalue counts calls per worker VM: it grows.
    let c = client();
    let first = c
        .get(format!("{base}/greet?who=al"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(first.starts_with("hello al #"), "{first}");
    let mut grew = false;
    for _ in 0..10 {
        let next = c
            .get(format!("{base}/greet?who=al"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        grew |= next != first;
    }
    assert!(grew, "module state persists between requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_with_a_syntax_error_is_refused_with_its_path_and_line() {
    let origin = Origin::start("origin").await;
    let node = edge_in_front_of(origin.addr).await;
    let bad = fill(
        r#"
upstreams: [{name: web, peers: [{address: "@O@"}]}]
applications:
  - name: site
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    upstream: web
    lua: {access: {inline: "local x = = 1"}}
"#,
        &[("O", origin.addr.to_string())],
    );
    let cfg = outpost_proto::parse_config(&bad, outpost_proto::SourceFormat::Yaml).unwrap();
    let err = node.apply(cfg).await.unwrap_err().to_string();
    assert!(
        err.contains("applications[0].lua.access.inline") && err.contains("site.access:1:"),
        "{err}"
    );
    // The old config keeps serving.
    let r = client()
        .get(format!("{}/status/200", base_url(&node)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The access_by_lua_block of `../shared/examples/limit-req.conf`, byte for byte, with its
/// `lua_shared_dict my_limit_req_store 100m` as a shared dict.
const LIMIT_REQ_EXAMPLE: &str = r#"
                local limit_req = require "resty.limit.req"
                local lim, err = limit_req.new("my_limit_req_store", 200, 100)
                if not lim then
                    ngx.log(ngx.ERR, "failed to instantiate limit req object: ", err)
                    return ngx.exit(500)
                end
                local key = ngx.var.binary_remote_addr
                local delay, err = lim:incoming(key, true)
                if not delay then
                    if err == "rejected" then
                        return ngx.exit(503)
                    end
                    ngx.log(ngx.ERR, "failed to limit req: ", err)
                    return ngx.exit(500)
                end
                if delay >= 0.001 then
                    ngx.sleep(delay)
                end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_req_example_runs_unchanged_and_rejects_above_its_burst() {
    let origin = Origin::start("origin").await;
    let yaml = format!(
        r#"
shared_dicts: [{{name: my_limit_req_store, capacity_bytes: 104857600}}]
upstreams: [{{name: web, peers: [{{address: "{}"}}]}}]
applications:
  - name: site
    is_default: true
    listeners: [{{address: "127.0.0.1:0"}}]
    upstream: web
    lua:
      access:
        inline: {}
"#,
        origin.addr,
        serde_json::to_string(LIMIT_REQ_EXAMPLE).unwrap()
    );
    let node = edge(&yaml, &[]).await;
    let base = base_url(&node);
    // 400 concurrent requests at once: 200/s with a burst of 100 lets about 100 through at
    // once (the rest of those are delayed) and rejects the others with 503.
    let c = client();
    let tasks: Vec<_> = (0..400)
        .map(|_| {
            let (c, url) = (c.clone(), format!("{base}/status/200"));
            tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let (mut ok, mut rejected) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(200) => ok += 1,
            Ok(503) => rejected += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        ok >= 100 && rejected >= 100,
        "{ok} passed, {rejected} rejected"
    );
}

// `ngx.req.set_body_data` in access replaces the body that goes upstream, with its length, as
// in nginx (the origin's `/upload` answers the number of body bytes it received).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_set_in_access_goes_upstream_with_its_length() {
    let origin = Origin::start("o").await;
    let yaml = r#"
upstreams: [{name: web, peers: [{address: "@O@"}]}]
applications:
  - name: site
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    upstream: web
    lua:
      access:
        inline: |
          ngx.req.read_body()
          if ngx.var.arg_replace then ngx.req.set_body_data(ngx.var.arg_replace) end
"#;
    let node = edge(yaml, &[("O", origin.addr.to_string())]).await;
    let c = client();
    let post = |q: &'static str| {
        let url = format!("{}/upload{q}", base_url(&node));
        let c = c.clone();
        async move {
            let r = c.post(url).body("orig").send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(post("").await, (200, "4".to_string()));
    assert_eq!(post("?replace=replaced").await, (200, "8".to_string()));
    assert_eq!(post("?replace=").await, (200, "0".to_string()));
}

fn exec_rule(path: &str, phase: &str, code: &str) -> String {
    format!(
        "      - conditions: [{{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [{path}]}}]\n        actions:\n          - lua:\n              {phase}:\n                inline: {}\n",
        serde_json::to_string(code).unwrap()
    )
}

// `ngx.exec` redirects internally, as in nginx: the expected bodies are what Debian's nginx
// with lua-nginx-module 0.10.23 answered to the same code in locations of the same paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ngx_exec_redirects_internally_as_nginx_does() {
    let report = "ngx.say(ngx.var.uri, ' ', tostring(ngx.var.args), ' ', ngx.var.request_uri, ' ', tostring(ngx.req.is_internal()), ' ', tostring(ngx.ctx.x), ' ', ngx.req.get_method())";
    let mut yaml = String::from(
        "applications:\n  - name: site\n    is_default: true\n    listeners: [{address: \"127.0.0.1:0\"}]\n    rules:\n",
    );
    for (path, phase, code) in [
        (
            "/a",
            "content",
            "ngx.ctx.x = 1; ngx.exec('/b', {k = 'v w'}) ngx.say('not here')",
        ),
        ("/a2", "access", "ngx.exec('/b?q=1')"),
        ("/a2", "content", "ngx.say('not here')"),
        (
            "/a3",
            "content",
            "ngx.say('out'); local ok, e = pcall(ngx.exec, '/b'); ngx.say(ok, ' ', e)",
        ),
        ("/loop", "content", "ngx.exec('/loop')"),
        ("/named", "content", "ngx.exec('@foo')"),
        (
            "/empty",
            "content",
            "local ok, e = pcall(ngx.exec, ''); ngx.say(ok, ' ', e)",
        ),
        ("/b", "content", report),
    ] {
        yaml.push_str(&exec_rule(path, phase, code));
    }
    let node = edge(&yaml, &[]).await;
    let base = base_url(&node);
    let c = client();
    let (status, _, body) = get(&c, &format!("{base}/a?z=1")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "/b k=v%20w /a?z=1 true nil GET\n")
    );
    let (status, _, body) = get(&c, &format!("{base}/a2")).await;
    assert_eq!((status, body.as_str()), (200, "/b q=1 /a2 true nil GET\n"));
    let (status, _, body) = get(&c, &format!("{base}/a3")).await;
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            "out\nfalse attempt to call ngx.exec after sending out response headers\n"
        )
    );
    let (status, _, body) = get(&c, &format!("{base}/empty")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "false The uri argument is empty\n")
    );
    // A redirect cycle ends after 10 redirects; a named location does not exist here.
    assert_eq!(get(&c, &format!("{base}/loop")).await.0, 500);
    assert_eq!(get(&c, &format!("{base}/named")).await.0, 500);
    // The method and the body go along.
    let r = c
        .post(format!("{base}/a"))
        .body("data")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "/b k=v%20w /a true nil POST\n");
}
