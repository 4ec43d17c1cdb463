//! The Lua phases around the request: body_filter on every response body, the upstream's
//! balancer before every try, and init_worker once per worker VM. Real sockets throughout.
//!
//! The expected values were checked against Debian's nginx 1.22.1 with libnginx-mod-http-lua
//! 0.10.23 and lua-resty-core 0.1.25, running the same scripts (`proxy_pass` to a test origin,
//! `proxy_cache`, `balancer_by_lua_block` in an `upstream {}` block with a placeholder server,
//! `init_worker_by_lua_block` in `http {}`: `crates/lua/tests/reference/phases.nginx.conf`);
//! docs/lua.md lists what differs.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;

const FILTERS: &str = r#"
shared_dicts: [{name: counters, capacity_bytes: 1048576}]
upstreams:
  - {name: web, peers: [{address: "@O@"}]}
  - {name: held, peers: [{address: "@H@"}]}
applications:
  - name: site
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    upstream: web
    cache_rules:
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/c/]}]
    lua:
      access:
        inline: |
          if ngx.var.arg_k then require("outpost.cache").set_key(ngx.var.arg_k) end
    rules:
      - conditions: [{subject: SUBJECT_ARG, name: f, operator: OPERATOR_EQUALS, values: [upper]}]
        actions: [{lua: {body_filter: {inline: "ngx.arg[1] = string.upper(ngx.arg[1])"}}}]
      - conditions: [{subject: SUBJECT_ARG, name: f, operator: OPERATOR_EQUALS, values: [calls]}]
        actions:
          - lua:
              header_filter: {inline: "ngx.header.content_length = nil"}
              body_filter:
                inline: |
                  local ctx = ngx.ctx
                  ctx.calls = (ctx.calls or "") .. "[" .. #ngx.arg[1] .. "," .. tostring(ngx.arg[2]) .. "]"
                  if ngx.arg[2] then ngx.arg[1] = ngx.arg[1] .. ctx.calls .. "\n" end
      - conditions: [{subject: SUBJECT_ARG, name: f, operator: OPERATOR_EQUALS, values: [longer]}]
        actions: [{lua: {body_filter: {inline: "if ngx.arg[2] then ngx.arg[1] = 'XYZ' end"}}}]
      - conditions: [{subject: SUBJECT_ARG, name: f, operator: OPERATOR_EQUALS, values: [shorter]}]
        actions: [{lua: {body_filter: {inline: "ngx.arg[1] = ''"}}}]
      - conditions: [{subject: SUBJECT_ARG, name: f, operator: OPERATOR_EQUALS, values: [count]}]
        actions:
          - lua:
              body_filter:
                inline: |
                  local c = ngx.ctx
                  c.n = (c.n or 0) + 1
                  c.b = (c.b or 0) + #ngx.arg[1]
                  if ngx.arg[2] then
                    ngx.arg[1] = "calls=" .. c.n .. " bytes=" .. c.b
                  else
                    ngx.arg[1] = ""
                  end
      - conditions: [{subject: SUBJECT_ARG, name: f, operator: OPERATOR_EQUALS, values: [stop]}]
        actions: [{lua: {body_filter: {inline: "ngx.arg[2] = true"}}}]
      - conditions: [{subject: SUBJECT_ARG, name: f, operator: OPERATOR_EQUALS, values: [boom]}]
        actions: [{lua: {body_filter: {inline: "error('bf boom')"}}}]
      - conditions: [{subject: SUBJECT_ARG, name: f, operator: OPERATOR_EQUALS, values: [seen]}]
        actions: [{lua: {body_filter: {inline: "ngx.shared.counters:incr('seen', 1, 0)"}}}]
      - conditions: [{subject: SUBJECT_ARG, name: f, operator: OPERATOR_EQUALS, values: [logged]}]
        actions:
          - lua:
              body_filter: {inline: "ngx.ctx.body = (ngx.ctx.body or '') .. ngx.arg[1]"}
              log: {inline: "ngx.shared.counters:set('logged_body', ngx.ctx.body)"}
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/say]}]
        actions: [{lua: {content: {inline: "ngx.say('a') ngx.say('b')"}}}]
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/counter]}]
        actions: [{lua: {content: {inline: "ngx.print(ngx.shared.counters:get(ngx.var.arg_name) or 0)"}}}]
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/held]}]
        actions: [{upstream: held}]
"#;

async fn counter(c: &reqwest::Client, base: &str, name: &str) -> String {
    c.get(format!("{base}/counter?name={name}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_filter_rewrites_upstream_cached_and_content_bodies_and_the_cache_keeps_the_origin_s()
{
    let origin = Origin::start("origin-name").await;
    let HeldOrigin {
        addr: held,
        release: _release,
        ..
    } = held_origin().await;
    let node = edge(
        FILTERS,
        &[("O", origin.addr.to_string()), ("H", held.to_string())],
    )
    .await;
    let base = base_url(&node);
    let c = client();

    // Same length: nginx keeps the origin's Content-Length, and so does the edge.
    let r = c.get(format!("{base}/?f=upper")).send().await.unwrap();
    assert_eq!(r.headers().get("content-length").unwrap(), "11");
    assert_eq!(r.text().await.unwrap(), "ORIGIN-NAME");

    // One call per chunk, then ("", true); the script cleared Content-Length, so chunked.
    let r = c
        .get(format!("{base}/c/a?cc=max-age=60&k=one&f=calls"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-length").is_none());
    assert_eq!(r.headers().get("transfer-encoding").unwrap(), "chunked");
    assert_eq!(
        r.text().await.unwrap(),
        "origin-name /c/a hit 2[22,false][0,true]\n"
    );
    // The cache stored the origin's body, not the filtered one: the same key without the
    // filter is a hit with the origin's bytes (nginx's proxy_cache stores before filters)...
    let r = c
        .get(format!("{base}/c/a?cc=max-age=60&k=one"))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()
            .get("cache-status")
            .is_some_and(|v| v.to_str().unwrap().contains("hit")),
        "{:?}",
        r.headers()
    );
    assert_eq!(r.text().await.unwrap(), "origin-name /c/a hit 2");
    // ... and a hit through the filter is filtered again, once.
    let r = c
        .get(format!("{base}/c/a?cc=max-age=60&k=one&f=calls"))
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    assert!(
        body.starts_with("origin-name /c/a hit 2[") && body.ends_with(",true]\n"),
        "{body}"
    );
    assert_eq!(body.matches("origin-name").count(), 1, "{body}");
    assert_eq!(origin.hits(), 2, "the two hits did not reach the origin");

    // A content phase's output goes through it too (chunked, as nginx's content_by_lua).
    let r = c.get(format!("{base}/say?f=upper")).send().await.unwrap();
    assert_eq!(r.headers().get("transfer-encoding").unwrap(), "chunked");
    assert_eq!(r.text().await.unwrap(), "A\nB\n");

    // HEAD has no body: the filter does not run (nginx skips header-only responses).
    let r = c.head(format!("{base}/?f=seen")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(counter(&c, &base, "seen").await, "0");
    c.get(format!("{base}/?f=seen"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // At least one data chunk and the end of the body (which may run just after the client
    // has its 11 bytes).
    let seen = eventually(Duration::from_secs(10), || {
        let (c, base) = (c.clone(), base.clone());
        async move { counter(&c, &base, "seen").await.parse::<u32>().unwrap() >= 2 }
    })
    .await;
    assert!(seen, "{}", counter(&c, &base, "seen").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_filter_streams_each_chunk_without_waiting_for_the_whole_body() {
    let origin = Origin::start("origin-name").await;
    let HeldOrigin {
        addr: held,
        release,
        ..
    } = held_origin().await;
    let node = edge(
        FILTERS,
        &[("O", origin.addr.to_string()), ("H", held.to_string())],
    )
    .await;
    let base = base_url(&node);
    let c = client();

    // The origin holds its second chunk until the client has the first, filtered.
    let mut r = c.get(format!("{base}/held?f=upper")).send().await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), r.chunk())
        .await
        .expect("the first chunk arrives while the origin still holds the rest")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"FIRST\n");
    release.send(()).unwrap();
    let mut rest = Vec::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"SECOND\n");

    // A megabyte in many chunks: one call each, and all of it seen.
    let r = c
        .get(format!("{base}/bytes/1048576?f=count"))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    let calls: usize = text
        .strip_prefix("calls=")
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(calls > 2, "{text}");
    assert!(text.ends_with(" bytes=1048576"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_filter_ends_bodies_early_keeps_content_length_as_nginx_and_cuts_on_errors() {
    let origin = Origin::start("origin-name").await;
    let HeldOrigin {
        addr: held,
        release: _release,
        ..
    } = held_origin().await;
    let node = edge(
        FILTERS,
        &[("O", origin.addr.to_string()), ("H", held.to_string())],
    )
    .await;
    let base = base_url(&node);
    let c = client();

    // ngx.arg[2] = true: the body ends with that chunk, a complete response.
    let r = c
        .get(format!("{base}/bytes/1048576?f=stop"))
        .send()
        .await
        .unwrap();
    let body = r.bytes().await.expect("a complete response");
    assert!(!body.is_empty() && body.len() < 1048576, "{}", body.len());

    // A longer body under the origin's Content-Length, which the script did not clear: the
    // client reads the declared 11 bytes, as nginx's clients do.
    let r = c.get(format!("{base}/?f=longer")).send().await.unwrap();
    assert_eq!(r.headers().get("content-length").unwrap(), "11");
    assert_eq!(r.text().await.unwrap(), "origin-name");

    // A shorter one cannot meet the declared length: the connection is closed after it (nginx
    // leaves the client waiting for the missing bytes).
    let broken = match c.get(format!("{base}/?f=shorter")).send().await {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(
        broken,
        "a body shorter than its Content-Length is not complete"
    );

    // A Lua error cuts the response (nginx closes the connection); the worker keeps serving.
    let broken = match c.get(format!("{base}/?f=boom")).send().await {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(
        broken,
        "an error in body_filter must not look like a complete response"
    );
    let r = c.get(format!("{base}/?f=upper")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ORIGIN-NAME");

    // The log phase runs after the body: it sees what body_filter gathered.
    c.get(format!("{base}/?f=logged"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let logged = eventually(Duration::from_secs(10), || {
        let c = c.clone();
        let base = base.clone();
        async move { counter(&c, &base, "logged_body").await == "origin-name" }
    })
    .await;
    assert!(logged, "the log phase saw the whole body");
}

const BALANCER: &str = r#"
upstreams:
  - name: lb
    peers: [{address: "@GOOD@"}]
    next_upstream: [NEXT_UPSTREAM_ERROR, NEXT_UPSTREAM_TIMEOUT, NEXT_UPSTREAM_HTTP_500]
    lua_balancer:
      inline: |
        local b = require "ngx.balancer"
        local ctx = ngx.ctx
        ctx.n = (ctx.n or 0) + 1
        local state, code = b.get_last_failure()
        local log = (ctx.log or "") .. "try" .. ctx.n .. ":" .. tostring(state) .. "," .. tostring(code) .. ";"
        local mode = ngx.var.arg_mode
        if mode == "retry" then
          if ctx.n == 1 then
            local ok, err = b.set_more_tries(1)
            log = log .. "more=" .. tostring(ok) .. "," .. tostring(err) .. ";"
            assert(b.set_current_peer("127.0.0.1", @DEAD_PORT@))
          else
            assert(b.set_current_peer("127.0.0.1", @GOOD_PORT@))
          end
        elseif mode == "retry500" then
          if ctx.n == 1 then
            b.set_more_tries(1)
            assert(b.set_current_peer("127.0.0.1:@FIVE_PORT@"))
          else
            assert(b.set_current_peer("127.0.0.1", @GOOD_PORT@))
          end
        elseif mode == "nomore" then
          assert(b.set_current_peer("127.0.0.1", @DEAD_PORT@))
        elseif mode == "timeout" then
          b.set_timeouts(0.2, 0.2, 0.2)
          if ctx.n == 1 then
            b.set_more_tries(1)
            assert(b.set_current_peer("127.0.0.1", @SLOW_PORT@))
          else
            assert(b.set_current_peer("127.0.0.1", @GOOD_PORT@))
          end
        elseif mode == "exit" then
          ngx.exit(503)
        elseif mode == "boom" then
          error("balancer boom")
        elseif mode == "none" then
          -- no peer set: the upstream's own
        else
          assert(b.set_current_peer("127.0.0.1", @OTHER_PORT@))
        end
        ctx.log = log
applications:
  - name: site
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    upstream: lb
    lua:
      header_filter: {inline: "ngx.header['X-Log'] = ngx.ctx.log"}
"#;

/// A server that answers every request with a 500.
async fn failing_origin() -> SocketAddr {
    canned_origin(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 13\r\nConnection: close\r\n\r\nfive hundred\n").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_s_balancer_picks_each_try_and_sees_how_the_last_one_failed() {
    let good = Origin::start("good").await;
    let other = Origin::start("other").await;
    let slow = Origin::start_slow("slow", Duration::from_secs(5)).await;
    let five = failing_origin().await;
    let dead = free_addr();
    let vars = [
        ("GOOD", good.addr.to_string()),
        ("GOOD_PORT", good.addr.port().to_string()),
        ("OTHER_PORT", other.addr.port().to_string()),
        ("SLOW_PORT", slow.addr.port().to_string()),
        ("FIVE_PORT", five.port().to_string()),
        ("DEAD_PORT", dead.port().to_string()),
    ];
    let node = edge(BALANCER, &vars).await;
    let base = base_url(&node);
    let c = client();
    let get = |mode: &str| {
        let (c, url) = (c.clone(), format!("{base}/lb/x?mode={mode}"));
        async move {
            let r = c.get(url).send().await.unwrap();
            let log = r
                .headers()
                .get("x-log")
                .map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), log, r.text().await.unwrap())
        }
    };

    // The script's peer, not the upstream's.
    let (status, log, body) = get("").await;
    assert_eq!((status, body.as_str()), (200, "other"));
    assert_eq!(log.as_deref(), Some("try1:nil,nil;"));
    // No peer set: the upstream's own peers.
    assert_eq!(get("none").await.2, "good");
    // A refused connection, one more try: the balancer runs again and sees "failed", 502.
    let (status, log, body) = get("retry").await;
    assert_eq!((status, body.as_str()), (200, "good"));
    assert_eq!(
        log.as_deref(),
        Some("try1:nil,nil;more=true,nil;try2:failed,502;")
    );
    // A 500 listed in next_upstream: "failed", 500.
    let (status, log, body) = get("retry500").await;
    assert_eq!((status, body.as_str()), (200, "good"));
    assert_eq!(log.as_deref(), Some("try1:nil,nil;try2:failed,500;"));
    // This try's timeouts (set_timeouts), then "failed", 504.
    let (status, log, body) = get("timeout").await;
    assert_eq!((status, body.as_str()), (200, "good"));
    assert_eq!(log.as_deref(), Some("try1:nil,nil;try2:failed,504;"));
    // No more tries: the failure is the answer.
    let (status, log, _) = get("nomore").await;
    assert_eq!((status, log.as_deref()), (502, Some("try1:nil,nil;")));
    // ngx.exit(503) and a Lua error in the balancer: 500, as nginx answers.
    let (status, log, _) = get("exit").await;
    assert_eq!((status, log.as_deref()), (500, Some("try1:nil,nil;")));
    let (status, log, _) = get("boom").await;
    assert_eq!((status, log), (500, None));
    // The worker keeps serving.
    assert_eq!(get("").await.2, "other");

    // Balancer and init_worker code with a syntax error is refused with its path and line.
    for (from, to, path) in [
        (
            "        local b = require \"ngx.balancer\"\n",
            "        local b = = 1\n",
            "upstreams[0].lua_balancer.inline",
        ),
        (
            "upstreams:\n",
            "lua_init_worker: {inline: 'x = = 1'}\nupstreams:\n",
            "lua_init_worker.inline",
        ),
    ] {
        let bad = fill(&BALANCER.replacen(from, to, 1), &vars);
        let cfg = outpost_proto::parse_config(&bad, outpost_proto::SourceFormat::Yaml).unwrap();
        let err = node.apply(cfg).await.unwrap_err().to_string();
        assert!(err.contains(path) && err.contains(":1:"), "{err}");
    }
    assert_eq!(get("").await.2, "other", "the old config keeps serving");
}

const INIT_WORKER: &str = r#"
shared_dicts: [{name: iw, capacity_bytes: 1048576}]
lua_init_worker:
  inline: |
    local iw = ngx.shared.iw
    iw:set("phase", ngx.get_phase())
    iw:set("worker" .. ngx.worker.id(), "@GEN@")
    iw:incr("runs", 1, 0)
    ngx.timer.every(0.02, function(premature)
      if not premature then iw:incr("ticks" .. ngx.worker.id(), 1, 0) end
    end)
    @EXTRA@
upstreams: [{name: web, peers: [{address: "@O@"}]}]
applications:
  - name: site
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    upstream: web
    rules:
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/iw]}]
        actions:
          - lua:
              content:
                inline: |
                  local iw = ngx.shared.iw
                  local t0, t1 = iw:get("ticks0") or 0, iw:get("ticks1") or 0
                  ngx.print(iw:get("phase"), " ", iw:get("worker0"), " ", iw:get("worker1"), " ",
                    iw:get("runs"), " ", tostring(t0 >= 3 and t1 >= 3))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_worker_runs_once_per_worker_vm_starts_timers_and_its_errors_do_not_stop_workers() {
    let origin = Origin::start("origin").await;
    let vars = |generation: &str, extra: &str| {
        [
            ("O", origin.addr.to_string()),
            ("GEN", generation.to_string()),
            ("EXTRA", extra.to_string()),
        ]
    };
    let node = edge(INIT_WORKER, &vars("one", "")).await;
    let base = base_url(&node);
    let c = client();
    let state = || {
        let (c, url) = (c.clone(), format!("{base}/iw"));
        async move { c.get(url).send().await.unwrap().text().await.unwrap() }
    };
    // Both workers ran it as they started, before any request, and their timers tick.
    let ran = eventually(Duration::from_secs(10), || async {
        state().await == "init_worker one one 2 true"
    })
    .await;
    assert!(ran, "{}", state().await);

    // A reload that changes the Lua: each worker's new VM runs it again; an error in it is
    // logged and the workers serve on.
    let next = fill(INIT_WORKER, &vars("two", "error('init_worker boom')"));
    let cfg = outpost_proto::parse_config(&next, outpost_proto::SourceFormat::Yaml).unwrap();
    node.apply(cfg).await.unwrap();
    let reran = eventually(Duration::from_secs(10), || async {
        state().await.starts_with("init_worker two two 4 ")
    })
    .await;
    assert!(reran, "{}", state().await);
    let r = c.get(format!("{base}/status/200")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
