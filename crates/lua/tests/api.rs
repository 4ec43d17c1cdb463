//! The `ngx` API through the VM, phase by phase. Expected outputs marked "nginx" were taken
//! from Debian's nginx 1.22 with lua-nginx-module 0.10.23; the full recorded corpus runs in
//! `openresty.rs`.

mod support;

use outpost_lua::Phase;
use support::*;

fn content(code: &str) -> (u16, String, http::HeaderMap) {
    let h = harness();
    let r = block_on(h.run(&get("/t?a=1&b=2&a=3"), &[(Phase::Content, code)]));
    (
        r.status,
        String::from_utf8_lossy(&r.body).into_owned(),
        r.headers,
    )
}

#[test]
fn say_print_and_the_default_content_type() {
    let (s, body, h) =
        content("ngx.say('a', 1, true, nil, ngx.null, {'x', {'y', 2}}) ngx.print(0.1, ' ', 1e20)");
    assert_eq!(s, 200);
    assert_eq!(body, "a1truenilnullxy2\n0.1 1e+20");
    assert_eq!(h.get("content-type").unwrap(), "text/plain");
}

#[test]
fn exit_status_and_headers() {
    let (s, body, h) = content(
        "ngx.status = 201 ngx.header['X_Foo'] = {'a', 'b'} ngx.header.content_type = 'application/json' ngx.say(ngx.status) return ngx.exit(200)",
    );
    assert_eq!((s, body.as_str()), (201, "201\n"));
    assert_eq!(h.get_all("x-foo").iter().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(h.get("content-type").unwrap(), "application/json");
    let (s, body, _) = content("return ngx.exit(403)");
    assert_eq!(s, 403);
    assert!(body.contains("403 Forbidden"));
    let (s, _, h) = content("return ngx.redirect('/elsewhere', 301)");
    assert_eq!(s, 301);
    assert_eq!(h.get("location").unwrap(), "/elsewhere");
}

#[test]
fn a_runtime_error_is_a_500() {
    let (s, _, _) = content("error('boom')");
    assert_eq!(s, 500);
}

#[test]
fn variables_and_request_api() {
    let (_, body, _) = content(
        r#"
        ngx.say(ngx.var.uri, ' ', ngx.var.args, ' ', ngx.var.arg_b, ' ', ngx.var.request_method)
        local args = ngx.req.get_uri_args()
        ngx.say(args.a[1], ',', args.a[2], ' ', args.b)
        ngx.say(tostring(ngx.var.no_such_thing), ' ', ngx.req.get_method(), ' ', ngx.var.is_args)
        ngx.req.set_header('X-New', 'v')
        ngx.say(ngx.var.http_x_new, ' ', ngx.req.get_headers()['X_New'])
        ngx.say(ngx.get_phase())
        "#,
    );
    assert_eq!(
        body,
        "/t a=1&b=2&a=3 2 GET\n1,3 2\nnil GET ?\nv v\ncontent\n"
    );
}

#[test]
fn ctx_survives_from_access_to_content() {
    let h = harness();
    let r = block_on(h.run(
        &get("/t"),
        &[
            (Phase::Access, "ngx.ctx.who = 'access' ngx.ctx.n = 1"),
            (
                Phase::Content,
                "ngx.ctx.n = ngx.ctx.n + 1 ngx.say(ngx.ctx.who, ngx.ctx.n)",
            ),
        ],
    ));
    assert_eq!(String::from_utf8_lossy(&r.body), "access2\n");
    // ngx.exit in access ends the request there.
    let r = block_on(h.run(
        &get("/t"),
        &[
            (Phase::Access, "ngx.exit(401)"),
            (Phase::Content, "ngx.say('no')"),
        ],
    ));
    assert_eq!(r.status, 401);
}

/// Debian's nginx with lua-nginx-module 0.10.23 answers "1 1 true" then "2 2 true" to this
/// code (and logs the `_G` write guard's warning once): globals outlive the request. Here each
/// application has its own globals; modules are shared by all.
#[test]
fn globals_outlive_requests_within_their_application() {
    let h = harness();
    let code = "foo = (foo or 0) + 1 local m = package.loaded.shared_mod or {n = 0} package.loaded.shared_mod = m m.n = m.n + 1 ngx.say(foo, ' ', tostring(_G.foo), ' ', tostring(getfenv(1) == _G), ' ', m.n)";
    let run = |globals| {
        let req = Req {
            globals,
            ..get("/t")
        };
        let r = block_on(h.run(&req, &[(Phase::Content, code)]));
        String::from_utf8_lossy(&r.body).into_owned()
    };
    assert_eq!(run(Some("a")), "1 1 true 1\n");
    assert_eq!(run(Some("a")), "2 2 true 2\n");
    assert_eq!(run(Some("b")), "1 1 true 3\n");
    assert_eq!(run(Some("a")), "3 3 true 4\n");
    // A new config starts the application's globals over, as an nginx reload does.
    h.new_config();
    assert_eq!(run(Some("a")), "1 1 true 5\n");
    assert_eq!(run(Some("a")), "2 2 true 6\n");
    // Code without an application (init_worker's) has `_G` itself.
    assert_eq!(run(None), "1 1 true 7\n");
    // Another phase of the same application sees them.
    let req = Req {
        globals: Some("a"),
        ..get("/t")
    };
    let r = block_on(h.run(
        &req,
        &[
            (Phase::Access, "bar = foo * 10"),
            (Phase::Content, "ngx.say(bar)"),
        ],
    ));
    assert_eq!(String::from_utf8_lossy(&r.body), "20\n");
}

#[test]
fn cjson_behaves_like_lua_cjson() {
    let (_, body, _) = content(
        r#"
        local cjson = require "cjson"
        ngx.say(cjson.encode({}))
        ngx.say(cjson.encode({1, 2, "a/b"}))
        ngx.say(cjson.encode({a = ngx.null}))
        ngx.say(cjson.encode(0.1), cjson.encode(1/3))
        local ok, err = pcall(cjson.encode, {[1] = 1, [100] = 2})
        ngx.say(ok, ' ', err)
        local t = cjson.decode('{"x": [1, null, "s"]}')
        ngx.say(t.x[1], ' ', t.x[2] == cjson.null, ' ', t.x[2] == ngx.null, ' ', t.x[3])
        local safe = require "cjson.safe"
        local v, e = safe.decode("{bad")
        ngx.say(v, ' ', e ~= nil)
        "#,
    );
    assert_eq!(
        body,
        "{}\n[1,2,\"a\\/b\"]\n{\"a\":null}\n0.10.33333333333333\nfalse Cannot serialise table: excessively sparse array\n1 true true s\nnil true\n"
    );
}

#[test]
fn shared_dicts_across_requests() {
    let h = harness();
    let run = |code: &str| {
        let r = block_on(h.run(&get("/t"), &[(Phase::Content, code)]));
        String::from_utf8_lossy(&r.body).into_owned()
    };
    assert_eq!(
        run(
            "local d = ngx.shared.dogs d:set('k', 'v', 0, 3) ngx.say(d:get('k')) ngx.say(d:add('k', 1)) ngx.say(d:incr('n', 5, 10))"
        ),
        "v3\nfalseexistsfalse\n15nilfalse\n"
    );
    assert_eq!(
        run("local d = ngx.shared.dogs ngx.say(d:get('n'), ' ', d:incr('k', 1))"),
        "15 nilnot a number\n"
    );
    assert_eq!(
        run("ngx.say(ngx.shared.nope == nil, ' ', ngx.shared.cats:capacity())"),
        "true 65536\n"
    );
}

#[test]
fn sleep_yields_and_timers_run_later() {
    let h = harness();
    let r = block_on(async {
        h.run(
                &get("/t"),
                &[(
                    Phase::Content,
                    "ngx.timer.at(0.01, function(premature, v) ngx.shared.dogs:set('timer', v) end, 'fired') ngx.sleep(0.05) ngx.say(ngx.shared.dogs:get('timer'))",
                )],
            )
            .await
    });
    assert_eq!(String::from_utf8_lossy(&r.body), "fired\n");
}

#[test]
fn codecs() {
    let (_, body, _) = content(
        r#"
        ngx.say(ngx.encode_base64("hello"), ' ', ngx.decode_base64("aGVsbG8="), ' ', tostring(ngx.decode_base64("!!")))
        ngx.say(ngx.md5("hello"), ' ', #ngx.md5_bin("x"), ' ', #ngx.sha1_bin("x"), ' ', ngx.crc32_long("hello"))
        ngx.say(ngx.escape_uri("a b/c~"), ' ', ngx.unescape_uri("a%20b+c"))
        ngx.say(ngx.quote_sql_str("it's"), ' ', ngx.http_time(0))
        "#,
    );
    assert_eq!(
        body,
        "aGVsbG8= hello nil\n5d41402abc4b2a76b9719d911017c592 16 20 907060870\na%20b%2Fc~ a b c\n'it\\'s' Thu, 01 Jan 1970 00:00:00 GMT\n"
    );
}

#[test]
fn header_filter_changes_the_response_head() {
    let h = harness();
    let r = block_on(h.run(
        &get("/t"),
        &[
            (Phase::Content, "ngx.say('body')"),
            (
                Phase::HeaderFilter,
                "ngx.header['X-Phase'] = ngx.get_phase() ngx.status = 202",
            ),
        ],
    ));
    assert_eq!(r.status, 202);
    assert_eq!(r.headers.get("x-phase").unwrap(), "header_filter");
}

#[test]
fn syntax_errors_name_the_line() {
    let e = outpost_lua::check_syntax("app.access", "local x = 1\nif x then\n").unwrap_err();
    assert!(
        e.line.is_some() && e.message.contains("'end' expected"),
        "{e:?}"
    );
    let e = outpost_lua::check_syntax("app.access", "local x = = 1").unwrap_err();
    assert_eq!(e.line, Some(1), "{e:?}");
    assert!(outpost_lua::check_syntax("ok", "ngx.say(1)").is_ok());
}

#[test]
fn bundled_resty_limit_and_lrucache() {
    let h = harness();
    let run = |code: &str| {
        let r = block_on(h.run(&get("/t"), &[(Phase::Content, code)]));
        String::from_utf8_lossy(&r.body).into_owned()
    };
    // One request per second, no burst: the first passes at once, the second is rejected.
    assert_eq!(
        run(r#"
            local limit_req = require "resty.limit.req"
            local lim = limit_req.new("dogs", 1, 0)
            local d1, e1 = lim:incoming("k", true)
            local d2, e2 = lim:incoming("k", true)
            ngx.say(d1, " ", e1, " ", d2, " ", e2)
            local lim2 = limit_req.new("dogs", 1, 5)
            local d3 = lim2:incoming("k2", true)
            local d4 = lim2:incoming("k2", true)
            ngx.say(d3, " ", d4 > 0.9 and d4 <= 1)
            ngx.say(tostring(limit_req.new("nope", 1, 1)))
        "#),
        "0 0 nil rejected\n0 true\nnil\n"
    );
    assert_eq!(
        run(r#"
            local limit_count = require "resty.limit.count"
            local lim = limit_count.new("dogs", 2, 60)
            local a, ra = lim:incoming("c", true)
            local b, rb = lim:incoming("c", true)
            local c, rc = lim:incoming("c", true)
            ngx.say(a, ra, " ", b, rb, " ", c, rc)
        "#),
        "01 00 nilrejected\n"
    );
    assert_eq!(
        run(r#"
            local lrucache = require "resty.lrucache"
            local c = lrucache.new(2)
            c:set("a", 1) c:set("b", 2)
            c:get("a")          -- a is now the most recent
            c:set("c", 3)       -- evicts b
            ngx.say(c:get("a"), " ", c:get("b"), " ", c:get("c"), " ", c:count())
            c:set("t", "x", -1)
        "#),
        "1 nil 3 2\n"
    );
}

/// lua-resty-string's modules, used as its README shows; the digests are the standard test
/// vectors (what OpenSSL, and so lua-resty-string on nginx, gives).
#[test]
fn resty_string_digests_hex_and_random() {
    let (s, body, _) = content(
        r#"
        local resty_sha256 = require "resty.sha256"
        local resty_md5 = require "resty.md5"
        local resty_sha1 = require "resty.sha1"
        local resty_sha512 = require "resty.sha512"
        local str = require "resty.string"
        local random = require "resty.random"

        local sha256 = resty_sha256:new()
        sha256:update("a")
        sha256:update("bc")
        ngx.say(str.to_hex(sha256:final()))
        -- final starts the state again, as OpenSSL's does
        ngx.say(str.to_hex(sha256:final()))
        sha256:update("junk")
        sha256:reset()
        sha256:update("abc")
        ngx.say(str.to_hex(sha256:final()))

        local md5 = resty_md5:new()
        md5:update("abc")
        ngx.say(str.to_hex(md5:final()))
        local sha1 = resty_sha1:new()
        sha1:update("abc")
        ngx.say(str.to_hex(sha1:final()))
        local sha512 = resty_sha512:new()
        sha512:update("abc")
        ngx.say(#sha512:final())

        ngx.say(str.atoi("  42abc"), " ", str.atoi("-7"), " ", str.atoi("x"))
        local r = random.bytes(16, true)
        ngx.say(#r, " ", r ~= random.bytes(16), " ", tostring(random.bytes(0)))
        "#,
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
         ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n\
         900150983cd24fb0d6963f7d28e17f72\n\
         a9993e364706816aba3e25717850c26c9cd0d89d\n\
         64\n\
         42 -7 0\n\
         16 true nil\n"
    );
}

/// resty.lock as lua-resty-lock's README uses it: one holder at a time, waiting with ngx.sleep,
/// a timeout, and unlock/expire only by the holder.
#[test]
fn resty_lock_one_holder_at_a_time() {
    let (s, body, _) = content(
        r#"
        local resty_lock = require "resty.lock"
        ngx.say(select(2, resty_lock:new("nope")))
        local a = resty_lock:new("dogs")
        local b = resty_lock:new("dogs", { timeout = 0.05, step = 0.01 })
        ngx.say(a:lock("k"))
        ngx.say(a:lock("k"))
        ngx.say(b:lock("k"))
        ngx.say(a:unlock())
        ngx.say(a:unlock())
        ngx.say(b:lock("k"))
        ngx.say(b:expire(10))
        -- a holder in a light thread releases it a moment later; the waiter gets it then
        local c = resty_lock:new("dogs", { timeout = 2, step = 0.01 })
        local t = ngx.thread.spawn(function()
            ngx.sleep(0.05)
            b:unlock()
        end)
        local elapsed = c:lock("k")
        ngx.say(elapsed > 0, " ", elapsed < 2)
        ngx.thread.wait(t)
        ngx.say(c:unlock())
        "#,
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body,
        "dictionary not found\n0\nnillocked\nniltimeout\n1\nnilunlocked\n0\ntrue\ntrue true\n1\n"
    );
}

#[test]
fn ngx_process_reports_a_worker_and_a_graceful_exit_retires_the_vm() {
    let h = harness();
    let code = r#"
        local process = require "ngx.process"
        ngx.say(process.type(), ' ', process.get_master_pid() == ngx.worker.pid())
        ngx.say(tostring(ngx.worker.exiting()), ' ', select('#', process.enable_privileged_agent()))
        ngx.say(process.enable_privileged_agent())
        process.signal_graceful_exit()
        ngx.say(tostring(ngx.worker.exiting()))
    "#;
    assert!(!h.vm.needs_recycle() && !h.vm.exiting());
    let r = block_on(h.run(&get("/t"), &[(Phase::Content, code)]));
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "worker true\nfalse 2\nnilAPI disabled in the current context\ntrue\n"
    );
    assert!(h.vm.needs_recycle(), "the worker should build a fresh VM");
    assert!(h.vm.exiting());
}

/// lua-nginx-module's `ngx.resp.get_headers()` reports the connection's fate (`r->keepalive`):
/// `close` when the client asked for it, `keep-alive` otherwise over HTTP/1.1.
#[test]
fn resp_get_headers_reports_the_connection() {
    let h = harness();
    let code = "ngx.say(ngx.resp.get_headers().connection)";
    let run = |headers: Vec<(String, String)>| {
        let req = Req {
            headers,
            ..get("/t")
        };
        let r = block_on(h.run(&req, &[(Phase::Content, code)]));
        String::from_utf8_lossy(&r.body).into_owned()
    };
    assert_eq!(run(vec![]), "keep-alive\n");
    assert_eq!(run(vec![("Connection".into(), "Close".into())]), "close\n");
    assert_eq!(
        run(vec![("Connection".into(), "keep-alive".into())]),
        "keep-alive\n"
    );
}

/// The `d` flag (PCRE's DFA matcher: the longest match, no groups), with the output Debian's
/// nginx with lua-nginx-module 0.10.23 gives the same code.
#[test]
fn ngx_re_dfa_mode_matches_the_longest_and_has_no_groups() {
    let (_, body, _) = content(
        r#"
local m = ngx.re.match('abc', '(a)|(ab)', 'd'); ngx.say(m[0], ' ', tostring(m[1]), ' ', tostring(m[2]))
local m2 = ngx.re.match('hello', '(?<x>l+)', 'd'); ngx.say(m2[0], ' ', tostring(m2.x), ' ', tostring(m2[1]))
ngx.say(ngx.re.gsub('aaa bbb', 'a|aa', 'X', 'd'))
local from, to = ngx.re.find('xabc', 'a|ab', 'd'); ngx.say(from, ' ', to)
local it = ngx.re.gmatch('ab ab', 'a|ab', 'd'); local a = it(); local b = it(); ngx.say(a[0], ' ', b[0])
ngx.say(ngx.re.sub('abc', 'a|ab', '[$0]', 'd'))
ngx.say(ngx.re.match('ABC', 'a|ab', 'di')[0])
local ok, err = ngx.re.match('abc', 'a|ab', 'ad'); ngx.say(ok and ok[0])
ngx.say(tostring(ngx.re.match('xabc', 'a|ab', 'ad')))
"#,
    );
    assert_eq!(
        body,
        "ab nil nil\nll nil nil\nXX bbb2\n2 3\nab ab\n[ab]c1\nAB\nab\nnil\n"
    );
}

/// `ngx.say`, `ngx.var` and the shared dict's `get`/`set`/`incr` have C fast paths that hand
/// anything unusual to the full implementations: both must answer alike. A zone table without
/// its number at `[2]` always takes the full methods.
#[test]
fn fast_paths_answer_as_the_full_ones() {
    let h = harness();
    let path = format!("/t?a=1&long={}", "y".repeat(300));
    let code = r#"
        local dogs = ngx.shared.dogs
        local slow = setmetatable({ rawget(dogs, 1) }, getmetatable(dogs))
        local function run(z, p)
            local out = {}
            local function rec(...)
                local t = {}
                for i = 1, select('#', ...) do t[i] = tostring((select(i, ...))) end
                out[#out + 1] = select('#', ...) .. ':' .. table.concat(t, ',')
            end
            rec(z:get(p .. 'a'))
            rec(z:set(p .. 'a', 'v', 0, 7))
            rec(z:get(p .. 'a'))
            rec(z:set(p .. 'n', 1.5))
            rec(z:incr(p .. 'n', 2))
            rec(z:incr(p .. 'm', 1, 10))
            rec(z:incr(p .. 'a', 1))
            rec(z:incr(p .. 'none', 1))
            rec(z:set(p .. 'b', true))
            rec(z:get(p .. 'b'))
            rec(z:set(p .. 'long', string.rep('x', 300)))
            rec(#z:get(p .. 'long'))
            rec(z:set(p .. 'b', nil))
            rec(z:get(p .. 'b'))
            rec(pcall(z.set, z, p .. 'c', 1, -1))
            rec(z:get(''))
            rec(z:incr(p .. 'n', '3'))
            return table.concat(out, ' ')
        end
        local fast, full = run(dogs, 'f'), run(slow, 's')
        ngx.say(fast == full and 'same' or ('differ: ' .. fast .. ' | ' .. full))
        ngx.say(fast)
        -- A zone whose number was changed reaches its own dict through the full methods.
        rawset(dogs, 2, 'x')
        ngx.say(dogs:get('fn'))
        rawset(dogs, 2, 12345)
        ngx.say(dogs:incr('fn', 1))
        ngx.say(ngx.var.URI, ' ', ngx.var.Arg_A, ' ', tostring(ngx.var[1]), ' ', #ngx.var.arg_long)
        ngx.say(-0, ' ', math.huge, ' ', 2^53, ' ', 0.1)
        ngx.print('a', 1, true, nil, ngx.null)
        ngx.print({ 'b', { 'c' } }, '\n')
        "#;
    let r = block_on(h.run(&get(&path), &[(Phase::Content, code)]));
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "same", "{body}");
    assert_eq!(
        lines[1],
        "1:nil 3:true,nil,false 2:v,7 3:true,nil,false 1:3.5 3:11,nil,false 2:nil,not a number \
         2:nil,not found 3:true,nil,false 1:true 3:true,nil,false 1:300 3:true,nil,false 1:nil \
         2:false,bad \"exptime\" argument 2:nil,empty key 1:6.5"
    );
    assert_eq!(
        &lines[2..],
        [
            "6.5",
            "7.5",
            "/t 1 nil 300",
            "0 inf 9.007199254741e+15 0.1",
            "a1truenilnullbc"
        ]
    );
}
