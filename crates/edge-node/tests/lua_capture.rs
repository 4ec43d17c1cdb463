//! `ngx.location.capture` and `capture_multi` end to end: subrequests through the edge's own
//! pipeline (page rules, Lua content, the origin), their options, concurrency, nesting and
//! the phases that refuse them. Expected words and values were checked against Debian's nginx
//! 1.22 + lua-nginx-module 0.10.23 with `crates/lua/tests/reference/capture.nginx.conf`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use outpost_edge_node::EdgeSettings;
use support::*;

const APP: &str = r#"
shared_dicts: [{name: counters, capacity_bytes: 1048576}]
upstreams:
  - {name: web, peers: [{address: "@O@"}]}
  - {name: broken, peers: [{address: "@B@"}]}
applications:
  - name: site
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    upstream: web
    variables: [{name: dog, default_value: "default"}]
    cache_rules:
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/c/]}]
        default_ttl_seconds: 60
    rules:
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/fixed]}]
        actions: [{respond: {status: 200, body: "fixed\n"}}]
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/broken]}]
        actions: [{upstream: broken}]
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/sub/echo]}]
        actions:
          - lua:
              content:
                inline: |
                  ngx.req.read_body()
                  ngx.header["X-Multi"] = {"a", "b"}
                  ngx.say(ngx.req.get_method(), " ", ngx.var.uri, " args=", ngx.var.args,
                    " body=", ngx.req.get_body_data(), " dog=", ngx.var.dog,
                    " sub=", tostring(ngx.is_subrequest), " internal=", tostring(ngx.req.is_internal()),
                    " xf=", ngx.var.http_x_foo, " ctx=", tostring(ngx.ctx.foo))
                  ngx.ctx.from_sub = "set by sub"
                  ngx.var.dog = "changed by sub"
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/sub/sleepy]}]
        actions:
          - lua:
              content:
                inline: |
                  local d = ngx.shared.counters
                  local n = d:incr("running", 1, 0)
                  if n > (d:get("max") or 0) then d:set("max", n) end
                  ngx.sleep(0.2)
                  d:incr("running", -1)
                  ngx.say("slept ", ngx.var.arg_n)
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/sub/loop]}]
        actions:
          - lua:
              content:
                inline: |
                  local n = ngx.shared.counters:incr("loop", 1, 0)
                  local ok, res = pcall(ngx.location.capture, "/sub/loop")
                  if not ok then ngx.status = 500 ngx.say("err ", res) return end
                  ngx.status = res.status
                  ngx.print(res.body)
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/sub/phases]}]
        actions:
          - lua:
              rewrite: {inline: "ngx.ctx.rw = ngx.location.capture('/fixed').status"}
              access: {inline: "ngx.ctx.ac = ngx.location.capture('/fixed').status"}
              content:
                inline: |
                  ngx.timer.at(0, function()
                    local ok, err = pcall(ngx.location.capture, "/fixed")
                    ngx.shared.counters:set("timer", tostring(err))
                  end)
                  ngx.say(ngx.ctx.rw, " ", ngx.ctx.ac)
              header_filter:
                inline: |
                  local ok, err = pcall(ngx.location.capture, "/fixed")
                  ngx.header["X-Err"] = err
              log:
                inline: |
                  local ok, err = pcall(ngx.location.capture, "/fixed")
                  ngx.shared.counters:set("log", tostring(err))
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/sub/counter]}]
        actions: [{lua: {content: {inline: "ngx.print(ngx.shared.counters:get(ngx.var.arg_name))"}}}]
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/cap]}]
        actions:
          - lua:
              content:
                inline: |
                  local function dump(res)
                    local ks = {}
                    for k in pairs(res.header) do ks[#ks + 1] = k end
                    table.sort(ks)
                    local hs = {}
                    for _, k in ipairs(ks) do
                      local v = res.header[k]
                      if type(v) == "table" then v = "[" .. table.concat(v, ",") .. "]" end
                      hs[#hs + 1] = k .. "=" .. v
                    end
                    ngx.say("status=", res.status, " truncated=", tostring(res.truncated),
                      " multi=", tostring(res.header["x-multi"] and table.concat(res.header["x-multi"], ",")))
                    ngx.print("body: ", res.body)
                  end
                  local mode = ngx.var.arg_mode
                  if mode == "routes" then
                    local a = ngx.location.capture("/fixed")
                    ngx.print("fixed: ", a.status, " ", a.body)
                    dump(ngx.location.capture("/sub/echo"))
                    local c = ngx.location.capture("/echo-headers")
                    ngx.say("origin: ", c.status, " ", c.header["X-Origin"], " ", tostring(c.truncated))
                    ngx.print(c.body)
                  elseif mode == "post" then
                    dump(ngx.location.capture("/sub/echo", {method = ngx.HTTP_POST, body = "hello"}))
                  elseif mode == "args" then
                    dump(ngx.location.capture("/sub/echo?x=1", {args = {b = "2 3"}}))
                    dump(ngx.location.capture("/sub/echo", {args = "q=1&r"}))
                  elseif mode == "vars" then
                    ngx.var.dog = "parent dog"
                    dump(ngx.location.capture("/sub/echo", {vars = {dog = "sub dog"}}))
                    dump(ngx.location.capture("/sub/echo"))
                    dump(ngx.location.capture("/sub/echo", {copy_all_vars = true}))
                    ngx.say("parent dog=", ngx.var.dog)
                    dump(ngx.location.capture("/sub/echo", {share_all_vars = true}))
                    ngx.say("parent dog=", ngx.var.dog)
                  elseif mode == "ctx" then
                    local c = {foo = "bar"}
                    dump(ngx.location.capture("/sub/echo", {ctx = c}))
                    ngx.say("ctx.from_sub=", c.from_sub)
                    ngx.ctx.foo = "mine"
                    dump(ngx.location.capture("/sub/echo", {ctx = ngx.ctx}))
                    ngx.say("ngx.ctx.from_sub=", ngx.ctx.from_sub)
                  elseif mode == "fwd" then
                    -- As nginx: a body nobody read yet goes to no subrequest.
                    dump(ngx.location.capture("/sub/echo", {method = ngx.HTTP_PUT}))
                    ngx.req.read_body()
                    dump(ngx.location.capture("/sub/echo"))
                    dump(ngx.location.capture("/sub/echo", {method = ngx.HTTP_PUT}))
                    dump(ngx.location.capture("/sub/echo", {always_forward_body = true}))
                    dump(ngx.location.capture("/sub/echo", {method = ngx.HTTP_HEAD}))
                  elseif mode == "multi" then
                    local a, b = ngx.location.capture_multi({
                      {"/sub/sleepy", {args = {n = 1}}},
                      {"/sub/sleepy?n=2"},
                    })
                    ngx.print(a.body, b.body)
                    ngx.say("max=", ngx.shared.counters:get("max"))
                  elseif mode == "cached" then
                    for _ = 1, 2 do
                      local r = ngx.location.capture("/c/obj")
                      ngx.say(r.status, " ", r.body, " | ", r.header["Cache-Status"])
                    end
                  elseif mode == "broken" then
                    dump(ngx.location.capture("/broken"))
                  elseif mode == "errors" then
                    local cases = {
                      function() return ngx.location.capture("/../x") end,
                      function() return ngx.location.capture("") end,
                      function() return ngx.location.capture("http://example.com/x").status end,
                      function() return ngx.location.capture("/x", {method = "POST"}) end,
                      function() return ngx.location.capture("/x", {method = 12345}) end,
                      function() return ngx.location.capture("/x", "x") end,
                      function() return ngx.location.capture("/x", {args = true}) end,
                      function() return ngx.location.capture("/x", {vars = {nosuch = "x"}}) end,
                      function() return ngx.location.capture("/x", {vars = {uri = "x"}}) end,
                      function() return ngx.location.capture("/x", {vars = {dog = true}}) end,
                      function() return ngx.location.capture("/x", {ctx = "x"}) end,
                      function() return ngx.location.capture("/x", {body = {}}) end,
                      function() return ngx.location.capture("/x", {copy_all_vars = "yes"}) end,
                      function() return ngx.location.capture() end,
                      function() return ngx.location.capture(nil) end,
                      function() return ngx.location.capture_multi({}) end,
                      function() return ngx.location.capture_multi({"/x"}) end,
                      function() return ngx.location.capture_multi("/x") end,
                    }
                    for i, f in ipairs(cases) do
                      local ok, res = pcall(f)
                      ngx.say(i, ": ", tostring(ok), " ", tostring(res))
                    end
                  end
"#;

/// An origin that promises 100 bytes, sends 4, and closes the connection.
async fn broken_origin() -> SocketAddr {
    canned_origin(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf").await
}

async fn start(settings: EdgeSettings) -> (Origin, std::sync::Arc<outpost_edge_node::EdgeNode>) {
    let origin = Origin::start("origin").await;
    let broken = broken_origin().await;
    let node = edge_with(
        settings,
        APP,
        &[("O", origin.addr.to_string()), ("B", broken.to_string())],
    )
    .await;
    (origin, node)
}

async fn get(c: &reqwest::Client, url: String) -> (u16, String) {
    let r = c.get(url).header("x-foo", "foo").send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_reaches_a_page_rule_a_content_handler_and_the_origin() {
    let (origin, node) = start(EdgeSettings::default()).await;
    let base = base_url(&node);
    let c = client();
    let (status, body) = get(&c, format!("{base}/cap?mode=routes")).await;
    assert_eq!(status, 200, "{body}");
    let mut lines = body.lines();
    assert_eq!(lines.next(), Some("fixed: 200 fixed"));
    // Multi-value headers are arrays; names are found whatever their case.
    assert_eq!(lines.next(), Some("status=200 truncated=false multi=a,b"));
    assert_eq!(
        lines.next(),
        Some(
            "body: GET /sub/echo args=nil body=nil dog=default sub=true internal=true xf=foo ctx=nil"
        )
    );
    assert_eq!(lines.next(), Some("origin: 200 origin false"));
    // The parent's request headers go with the subrequest, up to the origin.
    assert_eq!(lines.next(), Some("GET /echo-headers"));
    let rest: Vec<&str> = lines.collect();
    assert!(rest.contains(&"x-foo: foo"), "{rest:?}");
    assert_eq!(origin.hits(), 1);

    // The same handler, asked by a client, is no subrequest.
    let (_, body) = get(&c, format!("{base}/sub/echo")).await;
    assert!(body.contains(" sub=false internal=false "), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subrequest_is_served_from_the_cache() {
    let (origin, node) = start(EdgeSettings::default()).await;
    let base = base_url(&node);
    let (_, body) = get(&client(), format!("{base}/cap?mode=cached")).await;
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 2, "{body}");
    assert!(
        lines[0].starts_with("200 origin /c/obj hit 1 | outpost; fwd=miss;"),
        "{body}"
    );
    assert!(
        lines[1].starts_with("200 origin /c/obj hit 1 | outpost; hit;"),
        "{body}"
    );
    assert_eq!(origin.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_sends_the_method_body_and_args_it_is_given() {
    let (_origin, node) = start(EdgeSettings::default()).await;
    let base = base_url(&node);
    let c = client();
    let (_, body) = get(&c, format!("{base}/cap?mode=post")).await;
    assert!(
        body.contains("body: POST /sub/echo args=nil body=hello "),
        "{body}"
    );
    // The URI's own arguments come first, then the option's, encoded as ngx.encode_args.
    let (_, body) = get(&c, format!("{base}/cap?mode=args")).await;
    assert!(body.contains(" args=x=1&b=2%203 "), "{body}");
    assert!(body.contains(" args=q=1&r "), "{body}");

    // The parent's body, once read (Debian's nginx answers nil before), goes with PUT and
    // POST, and with always_forward_body; a HEAD
    // subrequest gets no body back.
    let r = c
        .post(format!("{base}/cap?mode=fwd"))
        .body("parentbody")
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    let bodies: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("body: "))
        .map(|l| {
            l.split(" body=")
                .nth(1)
                .unwrap_or("")
                .split(' ')
                .next()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(
        bodies,
        ["nil", "nil", "parentbody", "parentbody", ""],
        "{body}"
    );
    assert!(
        body.ends_with("body: "),
        "the HEAD answer has no body: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_sets_declared_variables_and_shares_ctx() {
    let (_origin, node) = start(EdgeSettings::default()).await;
    let base = base_url(&node);
    let c = client();
    let (_, body) = get(&c, format!("{base}/cap?mode=vars")).await;
    let dogs: Vec<&str> = body
        .lines()
        .filter_map(|l| {
            l.split(" dog=")
                .nth(1)
                .map(|s| s.split(" sub=").next().unwrap_or(""))
                .or_else(|| l.strip_prefix("parent dog="))
        })
        .collect();
    // vars; the application's default; copy_all_vars (the sub's change stays there);
    // share_all_vars (it comes back).
    assert_eq!(
        dogs,
        [
            "sub dog",
            "default",
            "parent dog",
            "parent dog",
            "parent dog",
            "changed by sub"
        ],
        "{body}"
    );

    let (_, body) = get(&c, format!("{base}/cap?mode=ctx")).await;
    assert!(body.contains(" ctx=bar\n"), "{body}");
    assert!(body.contains("\nctx.from_sub=set by sub\n"), "{body}");
    assert!(body.contains(" ctx=mine\n"), "{body}");
    assert!(body.ends_with("\nngx.ctx.from_sub=set by sub\n"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_multi_runs_its_subrequests_at_once_and_answers_in_order() {
    let (_origin, node) = start(EdgeSettings::default()).await;
    let base = base_url(&node);
    let (status, body) = get(&client(), format!("{base}/cap?mode=multi")).await;
    assert_eq!(status, 200);
    // Both subrequests were sleeping at the same moment.
    assert_eq!(body, "slept 1\nslept 2\nmax=2\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subrequest_capturing_itself_stops_at_nginx_s_depth_with_a_500() {
    let (_origin, node) = start(EdgeSettings::default()).await;
    let base = base_url(&node);
    let c = client();
    let (status, body) = get(&c, format!("{base}/sub/loop")).await;
    assert_eq!(status, 500);
    assert_eq!(body, "err failed to issue subrequest: -1\n");
    // The main request and 51 levels of subrequests ran, as in nginx.
    let (_, n) = get(&c, format!("{base}/sub/counter?name=loop")).await;
    assert_eq!(n, "52");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_runs_in_rewrite_access_and_content_only() {
    let (_origin, node) = start(EdgeSettings::default()).await;
    let base = base_url(&node);
    let c = client();
    let r = c.get(format!("{base}/sub/phases")).send().await.unwrap();
    assert_eq!(
        r.headers().get("x-err").unwrap(),
        "API disabled in the context of header_filter_by_lua*"
    );
    assert_eq!(r.text().await.unwrap(), "200 200\n");
    for (name, expected) in [
        ("log", "API disabled in the context of log_by_lua*"),
        ("timer", "API disabled in the context of ngx.timer"),
    ] {
        let url = format!("{base}/sub/counter?name={name}");
        let seen = eventually(Duration::from_secs(5), || {
            let (c, url) = (c.clone(), url.clone());
            async move { c.get(url).send().await.unwrap().text().await.unwrap() == expected }
        })
        .await;
        let (_, last) = get(&c, url).await;
        assert!(seen, "{name}: {last}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subrequest_whose_origin_breaks_mid_body_is_truncated() {
    let (_origin, node) = start(EdgeSettings::default()).await;
    let base = base_url(&node);
    let (status, body) = get(&client(), format!("{base}/cap?mode=broken")).await;
    assert_eq!(status, 200);
    assert_eq!(body, "status=200 truncated=true multi=nil\nbody: half");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_raise_openresty_s_errors() {
    let (_origin, node) = start(EdgeSettings::default()).await;
    let base = base_url(&node);
    let (status, body) = get(&client(), format!("{base}/cap?mode=errors")).await;
    assert_eq!(status, 200);
    let expected = [
        "1: false unsafe uri in argument #1: /../x",
        "2: false unsafe uri in argument #1: ",
        // nginx has no location for it: a 404, nothing raised.
        "3: true 404",
        "4: false Bad http request method",
        "5: false failed to adjust the subrequest: -1",
        "6: false expecting table as the 2nd argument for subrequest 0, but got string",
        "7: false Bad args option value",
        "8: false failed to adjust the subrequest: -1",
        "9: false failed to adjust the subrequest: 500",
        "10: false attempt to use bad variable value type boolean",
        "11: false Bad ctx option value type string, expected a Lua table",
        "12: false Bad http request body",
        "13: false Bad copy_all_vars option value",
        "14: false expecting one or two arguments",
        "15: false query argument 0 expecting one or two arguments",
        "16: false at least one subrequest should be specified",
        "17: false the query argument 0 is not a table, but a string",
        "18: false bad argument #1 to 'capture_multi' (table expected, got string)",
    ];
    assert_eq!(body.lines().collect::<Vec<_>>(), expected, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subrequests_are_not_in_the_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let settings = EdgeSettings {
        access_log: Some(path.clone()),
        ..Default::default()
    };
    let (_origin, node) = start(settings).await;
    let base = base_url(&node);
    let c = client();
    let (status, _) = get(&c, format!("{base}/cap?mode=routes")).await;
    assert_eq!(status, 200);
    // A second request: once its line is there, the first request's subrequests (done
    // before it) would be too.
    get(&c, format!("{base}/fixed")).await;
    let mut lines = Vec::new();
    let logged = eventually(Duration::from_secs(5), || {
        lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        let done = lines.iter().any(|l| l.contains("/fixed"));
        async move { done }
    })
    .await;
    assert!(logged, "{lines:?}");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("/cap?mode=routes"), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subrequest_spends_its_parent_s_budget() {
    let yaml = r#"
lua_runtime: {instructions_per_request: 100000}
shared_dicts: [{name: counters, capacity_bytes: 65536}]
upstreams: [{name: web, peers: [{address: "@O@"}]}]
applications:
  - name: site
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    upstream: web
    rules:
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/spin]}]
        actions: [{lua: {content: {inline: "while true do end"}}}]
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/parent]}]
        actions:
          - lua:
              content:
                inline: |
                  local ok, res = pcall(ngx.location.capture, "/spin")
                  ngx.shared.counters:set("after", "the parent went on")
                  ngx.say(tostring(ok))
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/after]}]
        actions: [{lua: {content: {inline: "ngx.print(tostring(ngx.shared.counters:get('after')))"}}}]
"#;
    let origin = Origin::start("origin").await;
    let node = edge(yaml, &[("O", origin.addr.to_string())]).await;
    let base = base_url(&node);
    let c = client();
    // The budget is spent in the subrequest; the parent cannot catch that and stops too.
    let (status, _) = get(&c, format!("{base}/parent")).await;
    assert_eq!(status, 500);
    let (_, after) = get(&c, format!("{base}/after")).await;
    assert_eq!(after, "nil");
}
