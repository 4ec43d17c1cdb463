//! The phases that are not a request's own step, on the VM: body_filter (`ngx.arg`),
//! init_worker and the balancer's `ngx.balancer` API outside its phase.
//!
//! Every expected value here was checked against Debian's nginx 1.22.1 with
//! libnginx-mod-http-lua 0.10.23 and lua-resty-core 0.1.25, with the config in
//! `reference/phases.nginx.conf`; positions (`chunk:line:`) are left out, as they name
//! nginx.conf there.

mod support;

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use http::{HeaderMap, Method};
use outpost_lua::{BalancerState, LuaVm, Outcome, Phase, RequestState, SharedRequest};
use support::*;

fn request(path: &str) -> SharedRequest {
    let (uri, args) = match path.split_once('?') {
        Some((p, a)) => (p.to_string(), Some(a.to_string())),
        None => (path.to_string(), None),
    };
    let mut s = RequestState::new(Method::GET, uri, args, HeaderMap::new());
    s.status = Some(200);
    s.headers_sent = true;
    Rc::new(RefCell::new(s))
}

/// Runs `code` as body_filter over `chunks` and then the end of the body, as the edge does;
/// returns what the client would get.
async fn filter(vm: &LuaVm, code: &str, chunks: &[&str]) -> String {
    let state = request("/t");
    let mut out = Vec::new();
    let calls = chunks
        .iter()
        .map(|c| (Bytes::copy_from_slice(c.as_bytes()), false))
        .chain([(Bytes::new(), true)]);
    for (data, eof) in calls {
        let (data, end) = vm
            .body_filter(&[("bf", code)], &state, data, eof)
            .await
            .expect("body_filter runs");
        out.extend_from_slice(&data);
        if end {
            break;
        }
    }
    String::from_utf8(out).unwrap()
}

const THREE: &[&str] = &["one\n", "two\n", "three\n"];

#[test]
fn body_filter_replaces_drops_and_ends_the_body_through_ngx_arg() {
    let h = harness();
    block_on(async {
        let vm = &h.vm;
        assert_eq!(
            filter(vm, "ngx.arg[1] = string.upper(ngx.arg[1])", THREE).await,
            "ONE\nTWO\nTHREE\n"
        );
        // nil drops the chunk; a table is concatenated; a number is its %.14g text.
        assert_eq!(filter(vm, "ngx.arg[1] = nil", THREE).await, "");
        assert_eq!(
            filter(vm, "ngx.arg[1] = {'<', ngx.arg[1], '>'}", THREE).await,
            "<one\n><two\n><three\n><>"
        );
        assert_eq!(filter(vm, "ngx.arg[1] = 42", THREE).await, "42424242");
        assert_eq!(
            filter(
                vm,
                "if ngx.arg[1] ~= 'two\\n' then ngx.arg[1] = '' end",
                THREE
            )
            .await,
            "two\n"
        );
        // ngx.arg[2] = true ends the body with this chunk: nothing after it is sent.
        assert_eq!(
            filter(
                vm,
                "if ngx.arg[1] == 'two\\n' then ngx.arg[2] = true end",
                THREE
            )
            .await,
            "one\ntwo\n"
        );
        assert_eq!(filter(vm, "ngx.arg[2] = true", THREE).await, "one\n");
        // The last call: ("", true), where a trailer can be added.
        assert_eq!(
            filter(
                vm,
                "local c = ngx.ctx; c.calls = (c.calls or '') .. '[' .. #ngx.arg[1] .. ',' .. tostring(ngx.arg[2]) .. ']'\n\
                 if ngx.arg[2] then ngx.arg[1] = c.calls .. '\\n' end",
                &["0123456789"],
            )
            .await,
            "0123456789[10,false][0,true]\n"
        );
    });
}

#[test]
fn ngx_arg_reads_and_refuses_as_openresty_does() {
    let h = harness();
    block_on(async {
        let vm = &h.vm;
        assert_eq!(
            filter(
                vm,
                "ngx.arg[1] = type(ngx.arg) .. ' ' .. #ngx.arg .. ' ' .. type(ngx.arg[2]) .. ' ' \
                 .. tostring(ngx.arg[3]) .. ' ' .. tostring(ngx.arg[0]) .. ' ' .. tostring(ngx.arg['1']) .. '\\n'",
                &["x"],
            )
            .await,
            "table 0 boolean nil nil nil\ntable 0 boolean nil nil nil\n"
        );
        let err = |code: &str| {
            format!(
                "local ok, e = pcall(function() {code} end)\n\
                 ngx.arg[1] = tostring(e):gsub('^[^\\n]-:%d+: ', '') .. '\\n'; ngx.arg[2] = true"
            )
        };
        assert_eq!(
            filter(vm, &err("ngx.arg[1] = true"), &["x"]).await,
            "bad chunk data type: boolean\n"
        );
        assert_eq!(
            filter(vm, &err("ngx.arg[3] = 'x'"), &["x"]).await,
            "bad index: 3\n"
        );
    });
    // Outside body_filter: reading is lua-resty-core's error, writing lua-nginx-module's.
    let out = block_on(h.run(
        &get("/t"),
        &[(
            Phase::Content,
            "local function strip(e) return (tostring(e):gsub('^[^\\n]-:%d+: ', '')) end\n\
             local ok, e = pcall(function() return ngx.arg[1] end)\n\
             ngx.say(tostring(ok), ' ', strip(e))\n\
             local ok2, e2 = pcall(function() ngx.arg[1] = 'x' end)\n\
             ngx.say(tostring(ok2), ' ', strip(e2))",
        )],
    ));
    assert_eq!(
        String::from_utf8_lossy(&out.body),
        "false API disabled in the current context\n\
         false API disabled in the context of content_by_lua*\n"
    );
}

#[test]
fn body_filter_refuses_what_openresty_refuses_there() {
    let h = harness();
    let code = r#"
if not ngx.arg[2] then return end
local out = {}
local function t(name, f, ...) local ok, e = pcall(f, ...); out[#out+1] = name .. "=" .. tostring(ok) .. "," .. tostring(e) end
t("phase", ngx.get_phase)
t("say", ngx.say, "x")
t("print", ngx.print, "x")
t("sleep", ngx.sleep, 0.01)
t("tcp", ngx.socket.tcp)
t("udp", ngx.socket.udp)
t("exit", ngx.exit, 200)
t("redirect", ngx.redirect, "/x")
t("read_body", ngx.req.read_body)
t("flush", ngx.flush)
t("send_headers", ngx.send_headers)
t("header", function() ngx.header["X-Late"] = "1" end)
t("status_read", function() return ngx.status end)
t("var", function() return ngx.var.uri end)
t("timer", ngx.timer.at, 0, function() end)
t("thread", ngx.thread.spawn, function() end)
t("headers_sent", function() return ngx.headers_sent end)
ngx.arg[1] = ngx.arg[1] .. table.concat(out, "\n") .. "\n"
"#;
    let got = block_on(filter(&h.vm, code, &["body\n"]));
    assert_eq!(
        got,
        "body\n\
         phase=true,body_filter\n\
         say=false,API disabled in the context of body_filter_by_lua*\n\
         print=false,API disabled in the context of body_filter_by_lua*\n\
         sleep=false,API disabled in the context of body_filter_by_lua*\n\
         tcp=false,API disabled in the context of body_filter_by_lua*\n\
         udp=false,API disabled in the context of body_filter_by_lua*\n\
         exit=false,API disabled in the context of body_filter_by_lua*\n\
         redirect=false,API disabled in the context of body_filter_by_lua*\n\
         read_body=false,API disabled in the context of body_filter_by_lua*\n\
         flush=false,API disabled in the context of body_filter_by_lua*\n\
         send_headers=false,API disabled in the context of body_filter_by_lua*\n\
         header=true,nil\n\
         status_read=true,200\n\
         var=true,/t\n\
         timer=true,1\n\
         thread=false,API disabled in the context of body_filter_by_lua*\n\
         headers_sent=true,true\n"
    );
}

#[test]
fn init_worker_runs_on_a_stand_in_request_with_openresty_s_limits() {
    let h = harness();
    let code = r#"
local dogs = ngx.shared.dogs
local function try(name, f, ...)
    local ok, err = pcall(f, ...)
    dogs:set("iw_" .. name, tostring(ok) .. " " .. tostring(err))
end
dogs:set("iw_phase", ngx.get_phase())
try("sleep", ngx.sleep, 0.01)
try("say", ngx.say, "x")
try("tcp", ngx.socket.tcp)
try("udp", ngx.socket.udp)
try("exit", ngx.exit, 200)
try("var", function() return ngx.var.uri end)
try("ctx", function() return type(ngx.ctx) end)
try("method", ngx.req.get_method)
try("status", function() return ngx.status end)
try("arg", function() return ngx.arg[1] end)
try("thread", ngx.thread.spawn, function() end)
try("timer", ngx.timer.at, 0, function() dogs:set("iw_timer_phase", ngx.get_phase()) end)
try("workerid", ngx.worker.id)
local b = require "ngx.balancer"
dogs:set("iw_bal", tostring(select(2, b.set_current_peer("127.0.0.1", 1))))
"#;
    let got = block_on(async {
        h.vm.init_worker("init_worker", code).await.expect("runs");
        // Wait (bounded) for the timer it started to run.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let seen: Option<String> =
                h.vm.lua()
                    .load("return ngx.shared.dogs:get('iw_timer_phase')")
                    .eval()
                    .unwrap();
            if seen.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        h.vm.lua()
            .load(
                "local dogs, out = ngx.shared.dogs, {}
                 for _, k in ipairs(dogs:get_keys(0)) do
                   if k:sub(1, 3) == 'iw_' then out[#out + 1] = k .. '=' .. dogs:get(k):gsub('^[^\\n]-:%d+: ', '') end
                 end
                 table.sort(out)
                 return table.concat(out, '\\n')",
            )
            .eval::<String>()
            .unwrap()
    });
    assert_eq!(
        got,
        "iw_arg=false API disabled in the current context
iw_bal=no upstream found
iw_ctx=true table
iw_exit=false API disabled in the context of init_worker_by_lua*
iw_method=false API disabled in the current context
iw_phase=init_worker
iw_say=false API disabled in the context of init_worker_by_lua*
iw_sleep=false API disabled in the context of init_worker_by_lua*
iw_status=false API disabled in the current context
iw_tcp=false API disabled in the context of init_worker_by_lua*
iw_thread=false API disabled in the context of init_worker_by_lua*
iw_timer=true 1
iw_timer_phase=timer
iw_udp=false API disabled in the context of init_worker_by_lua*
iw_var=false API disabled in the current context
iw_workerid=true 0"
    );
}

#[test]
fn ngx_balancer_answers_no_upstream_found_before_the_upstream_and_refuses_other_phases() {
    let h = harness();
    let code = r#"
local b = require "ngx.balancer"
ngx.say(tostring(b.set_current_peer("127.0.0.1", 80)), " ", select(2, b.set_current_peer("127.0.0.1", 80)))
ngx.say(tostring(select(3, b.get_last_failure())))
ngx.say(tostring(select(2, b.set_more_tries(1))))
"#;
    let out = block_on(h.run(&get("/t"), &[(Phase::Content, code)]));
    assert_eq!(
        String::from_utf8_lossy(&out.body),
        "nil no upstream found\nno upstream found\nno upstream found\n"
    );
    // Once the request has an upstream, only the balancer phase may use it.
    let state = request("/t");
    state.borrow_mut().balancer = Some(BalancerState::default());
    let got = block_on(async {
        let code = "local b = require 'ngx.balancer'
                    ngx.arg[1] = tostring(select(2, b.set_current_peer('127.0.0.1', 80)))
                    ngx.arg[2] = true";
        h.vm.body_filter(&[("bf", code)], &state, Bytes::new(), false)
            .await
            .unwrap()
    });
    assert_eq!(got.0, "API disabled in the current context");
}

#[test]
fn the_balancer_phase_sets_the_peer_tries_and_timeouts_for_the_edge_to_read() {
    let h = harness();
    let code = r#"
local b = require "ngx.balancer"
local function t(name, f, ...) local ok, e, e2 = pcall(f, ...); ngx.ctx.log = (ngx.ctx.log or "") .. name .. "=" .. tostring(ok) .. "," .. tostring(e) .. "," .. tostring(e2) .. ";" end
t("sleep", ngx.sleep, 0.01)
t("tcp", ngx.socket.tcp)
t("say", ngx.say, "x")
t("host", b.set_current_peer, "localhost", 28502)
t("hostport", b.set_current_peer, "127.0.0.1:28502")
t("badip", b.set_current_peer, "1.2.3", 80)
t("more0", b.set_more_tries, 0)
t("to_bad", b.set_timeouts, -1, 1, 1)
t("to_ok", b.set_timeouts, 1, 2, 3)
t("to_nil", b.set_timeouts, nil, nil, 3)
t("phase", ngx.get_phase)
t("uri", function() return ngx.var.uri end)
t("timer", ngx.timer.at, 0, function() end)
t("thread", ngx.thread.spawn, function() end)
t("redirect", ngx.redirect, "/x")
t("failure", b.get_last_failure)
assert(b.set_current_peer("127.0.0.1", 28502))
local ok, warn = b.set_more_tries(5)
ngx.ctx.log = ngx.ctx.log .. "more5=" .. tostring(ok) .. "," .. tostring(warn)
"#;
    let state = request("/lb/x");
    state.borrow_mut().balancer = Some(BalancerState {
        limit: 3,
        ..Default::default()
    });
    state
        .borrow_mut()
        .balancer
        .as_mut()
        .unwrap()
        .begin_try(1, None);
    let (outcome, b) = block_on(async {
        let outcome = h.vm.run("lb", code, Phase::Balancer, &state).await.unwrap();
        (outcome, state.borrow().balancer.clone().unwrap())
    });
    assert_eq!(outcome, Outcome::Continue);
    assert_eq!(b.peer, Some("127.0.0.1:28502".parse().unwrap()));
    assert_eq!(
        b.more_tries, 2,
        "5 more on top of 1 planned, limited to 3 in all"
    );
    assert_eq!(b.read_timeout, Some(std::time::Duration::from_secs(3)));
    assert_eq!(b.connect_timeout, Some(std::time::Duration::from_secs(1)));
    let log = block_on(async {
        h.vm.run(
            "hf",
            "ngx.header['X-Log'] = ngx.ctx.log",
            Phase::HeaderFilter,
            &state,
        )
        .await
        .unwrap();
        state
            .borrow()
            .resp_headers
            .get("x-log")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap()
    });
    assert_eq!(
        log,
        "sleep=false,API disabled in the context of balancer_by_lua*,nil;\
         tcp=false,API disabled in the context of balancer_by_lua*,nil;\
         say=false,API disabled in the context of balancer_by_lua*,nil;\
         host=true,nil,no host allowed;\
         hostport=true,true,nil;\
         badip=true,nil,no host allowed;\
         more0=true,true,nil;\
         to_bad=false,bad connect timeout,nil;\
         to_ok=true,true,nil;\
         to_nil=true,true,nil;\
         phase=true,balancer,nil;\
         uri=true,/lb/x,nil;\
         timer=true,1,nil;\
         thread=false,API disabled in the context of balancer_by_lua*,nil;\
         redirect=false,API disabled in the context of balancer_by_lua*,nil;\
         failure=true,nil,nil;\
         more5=true,reduced tries due to limit"
    );
}
