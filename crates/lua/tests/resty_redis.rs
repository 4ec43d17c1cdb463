//! Our `resty.redis` against a real `redis-server`, side by side with lua-resty-redis itself:
//! each script runs once with Debian's copy (`require "nginx.redis"`, package
//! `lua-nginx-redis`, which `./test` installs) and once with ours, and the two outputs must be
//! the same byte for byte (and what the test expects). What lua-resty-redis 0.27 cannot do
//! (`set_timeouts`, TLS, argument checks) and where ours differs on purpose is checked on ours
//! alone at the end.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outpost_lua::Phase;
use support::*;

/// A `redis-server` of this test's own on a free port and a unix socket, gone on drop.
struct Redis {
    child: Child,
    port: u16,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start(extra: &[&str]) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("redis.sock");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--unixsocket", socket.to_str().unwrap()])
            .args(extra)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (./test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() || !socket.exists() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            child,
            port,
            socket,
            _dir: dir,
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Helpers every script gets: `show` renders a reply so that types show (strings quoted,
/// `null` for ngx.null, tables as `[...]`), `say` prints values with it, `connect()` gives a
/// connected client. `LIB`, `PORT` and `SOCKET` are filled in.
const PRELUDE: &str = r##"
local redis = require "LIB"
local function show(v)
    if v == nil then return "nil" end
    if v == ngx.null then return "null" end
    if type(v) == "string" then return string.format("%q", v) end
    if type(v) == "table" then
        local parts = {}
        for i = 1, #v do parts[i] = show(v[i]) end
        return "[" .. table.concat(parts, ",") .. "]"
    end
    return tostring(v)
end
local function say(...)
    local out = {}
    for i = 1, select("#", ...) do out[i] = show(select(i, ...)) end
    ngx.say(table.concat(out, " "))
end
local function connect()
    local red = redis:new()
    red:set_timeout(2000)
    local ok, err = red:connect("127.0.0.1", PORT)
    if not ok then error("connect: " .. tostring(err)) end
    return red
end
"##;

/// The script's output with the given library, in a thread of its own so that each run has
/// its own keep-alive pool (the pool is per worker thread).
fn run_with(lib: &str, redis: &Redis, script: &str, trust: Option<String>) -> String {
    let code = format!("{PRELUDE}\n{script}")
        .replace("LIB", lib)
        .replace("PORT", &redis.port.to_string())
        .replace("SOCKET", redis.socket.to_str().unwrap());
    let lib = lib.to_string();
    std::thread::spawn(move || {
        let h = harness();
        if let Some(pem) = trust {
            h.vm.set_ssl_trusted_certificate(&pem).unwrap();
        }
        let req = get("/t");
        let r = block_on(h.run(&req, &[(Phase::Content, code.as_str())]));
        assert_eq!(r.status, 200, "{lib}: {}", String::from_utf8_lossy(&r.body));
        String::from_utf8_lossy(&r.body).into_owned()
    })
    .join()
    .unwrap()
}

/// Runs the script with lua-resty-redis, then (on an emptied server) with ours; both must
/// print `expected`.
fn both_print(redis: &Redis, script: &str, expected: &str) {
    assert!(
        std::path::Path::new("/usr/share/lua/5.1/nginx/redis.lua").exists(),
        "install Debian's lua-nginx-redis (./test does)"
    );
    let script = format!("connect():flushall()\n{script}");
    let theirs = run_with("nginx.redis", redis, &script, None);
    let ours = run_with("resty.redis", redis, &script, None);
    assert_eq!(
        ours, theirs,
        "ours (left) and lua-resty-redis (right) differ"
    );
    assert_eq!(ours, expected);
}

#[test]
fn strings_counters_and_missing_keys_read_as_with_lua_resty_redis() {
    let redis = Redis::start(&[]);
    both_print(
        &redis,
        r##"
        local red = connect()
        say(red:set("dog", "an animal"))
        say(red:get("dog"))
        say(red:incr("n"), red:incr("n"), red:incrby("n", 40), red:decr("n"))
        say(red:get("n"))
        say(red:get("missing"))
        say(red:mget("dog", "missing", "n"))
        say(red:del("dog", "n", "missing"))
        say(red:exists("dog"))
        say(red:lrange("nothing", 0, -1))
        say(red:rpush("list", "a", 1, 2.5), red:lrange("list", 0, -1))
        say(red:set("k", "v", "NX"), red:set("k", "v", "XX"))
        say(red:ping(), red:echo(""))
        "##,
        "\"OK\"\n\"an animal\"\n1 2 42 41\n\"41\"\nnull\n[\"an animal\",null,\"41\"]\n2\n0\n[]\n\
         3 [\"a\",\"1\",\"2.5\"]\n\"OK\" \"OK\"\n\"PONG\" \"\"\n",
    );
}

#[test]
fn hmset_takes_a_table_and_hgetall_gives_a_flat_array() {
    let redis = Redis::start(&[]);
    both_print(
        &redis,
        r##"
        local red = connect()
        say(red:hmset("h", { name = "rex", legs = 4 }))
        say(red:hmset("h", "colour", "brown", "age", 3))
        local flat = red:hgetall("h")
        say(#flat)
        local h = red:array_to_hash(flat)
        local keys = {}
        for k in pairs(h) do keys[#keys + 1] = k end
        table.sort(keys)
        for _, k in ipairs(keys) do say(k, h[k]) end
        say(red:hget("h", "legs"), red:hget("h", "wings"), red:hmget("h", "name", "wings"))
        say(red:hgetall("no-such-hash"))
        say(red:hincrby("h", "legs", -1))
        "##,
        "\"OK\"\n\"OK\"\n8\n\"age\" \"3\"\n\"colour\" \"brown\"\n\"legs\" \"4\"\n\
         \"name\" \"rex\"\n\"4\" null [\"rex\",null]\n[]\n3\n",
    );
}

#[test]
fn error_replies_are_false_and_the_servers_text() {
    let redis = Redis::start(&[]);
    both_print(
        &redis,
        r##"
        local red = connect()
        red:set("s", "text")
        say(red:lpush("s", "x"))
        say(red:incr("s"))
        say(red:get())
        say(red:select(99))
        say(red:select(1), red:get("s"), red:select(0), red:get("s"))
        say(red:auth("nope"))
        say(red:eval("return redis.error_reply('boom')", 0))
        -- Nested arrays, and an error inside an array as {false, text}.
        say(red:eval("return {1, {2, 'x', {}}, redis.status_reply('fine'), redis.error_reply('bad')}", 0))
        say(red:get("s"))
        "##,
        "false \"WRONGTYPE Operation against a key holding the wrong kind of value\"\n\
         false \"ERR value is not an integer or out of range\"\n\
         false \"ERR wrong number of arguments for 'get' command\"\n\
         false \"ERR DB index is out of range\"\n\
         \"OK\" null \"OK\" \"text\"\n\
         false \"ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\"\n\
         false \"ERR boom\"\n\
         [1,[2,\"x\",[]],\"fine\",[false,\"ERR bad\"]]\n\
         \"text\"\n",
    );
}

#[test]
fn pipelines_return_every_reply_in_order() {
    let redis = Redis::start(&[]);
    both_print(
        &redis,
        r##"
        local red = connect()
        say(red:commit_pipeline())
        red:init_pipeline()
        say(select("#", red:set("a", "1")))
        red:incr("a")
        red:hmset("h", { f = "v" })
        red:get("missing")
        red:lpush("a", "x")
        red:hgetall("h")
        say(red:commit_pipeline())
        say(red:commit_pipeline())
        red:init_pipeline(2)
        red:set("a", "never")
        red:cancel_pipeline()
        say(red:commit_pipeline())
        say(red:get("a"))
        red:init_pipeline()
        say(red:commit_pipeline())
        "##,
        "nil \"no pipeline\"\n0\n\
         [\"OK\",2,\"OK\",null,[false,\"WRONGTYPE Operation against a key holding the wrong kind of value\"],[\"f\",\"v\"]]\n\
         nil \"no pipeline\"\nnil \"no pipeline\"\n\"2\"\n[]\n",
    );
}

#[test]
fn a_subscriber_in_a_light_thread_reads_what_another_connection_publishes() {
    let redis = Redis::start(&[]);
    both_print(
        &redis,
        r##"
        local lines = {}
        local function note(...)
            local out = {}
            for i = 1, select("#", ...) do out[i] = show(select(i, ...)) end
            lines[#lines + 1] = table.concat(out, " ")
        end
        local sub = connect()
        note(sub:read_reply())
        local listener = ngx.thread.spawn(function()
            note(sub:subscribe("dog"))
            note(sub:psubscribe("ca*"))
            note(sub:set_keepalive())
            note(sub:read_reply())
            note(sub:read_reply())
            note(sub:unsubscribe("dog"))
            note(sub:punsubscribe("ca*"))
            note(sub:read_reply())
            note(sub:get("after"))
        end)
        local pub = connect()
        -- Publish once both subscriptions are in place.
        for _ = 1, 500 do
            local dogs = pub:pubsub("numsub", "dog")
            if dogs[2] == 1 and pub:pubsub("numpat") == 1 then break end
            ngx.sleep(0.01)
        end
        -- The publisher's lines after the listener's, so that the order is fixed.
        local published = { pub:publish("dog", "woof"), pub:publish("cat", "meow") }
        say(ngx.thread.wait(listener))
        for _, line in ipairs(lines) do ngx.say(line) end
        say(published[1], published[2])
        "##,
        "true\nnil \"not subscribed\"\n[\"subscribe\",\"dog\",1]\n[\"psubscribe\",\"ca*\",2]\n\
         nil \"subscribed state\"\n[\"message\",\"dog\",\"woof\"] nil\n\
         [\"pmessage\",\"ca*\",\"cat\",\"meow\"] nil\n[\"unsubscribe\",\"dog\",1] nil\n\
         [\"punsubscribe\",\"ca*\",0] nil\nnil \"not subscribed\"\nnull\n1 1\n",
    );
}

#[test]
fn a_subscriber_waiting_past_its_read_timeout_stays_subscribed() {
    let redis = Redis::start(&[]);
    both_print(
        &redis,
        r##"
        local sub = connect()
        say(sub:subscribe("quiet"))
        sub:set_timeout(50)
        say(sub:read_reply())
        sub:set_timeout(2000)
        local pub = connect()
        say(pub:publish("quiet", "now"))
        say(sub:read_reply())
        say(sub:unsubscribe())
        say(sub:set_keepalive())
        "##,
        "[\"subscribe\",\"quiet\",1]\nnil \"timeout\"\n1\n[\"message\",\"quiet\",\"now\"] nil\n\
         [\"unsubscribe\",\"quiet\",0] nil\n1\n",
    );
}

#[test]
fn a_read_timeout_outside_pub_sub_closes_the_connection() {
    let redis = Redis::start(&[]);
    both_print(
        &redis,
        r##"
        local red = connect()
        red:set_timeout(50)
        say(red:blpop("empty", 0))
        say(red:get("x"))
        "##,
        "nil \"timeout\"\nnil \"closed\"\n",
    );
}

#[test]
fn keepalive_hands_the_connection_to_the_next_client_and_counts_reuses() {
    let redis = Redis::start(&[]);
    both_print(
        &redis,
        r##"
        for i = 1, 3 do
            local red = connect()
            say(i, red:get_reused_times(), red:incr("hits"))
            say(red:set_keepalive(10000, 10))
            say(red:get("hits"))
        end
        -- A pool of its own name does not take the connection above.
        local red = redis:new()
        say(red:connect("127.0.0.1", PORT, { pool = "other", pool_size = 5, backlog = 2 }))
        say(red:get_reused_times())
        red:close()
        -- The unix socket, and its own pool.
        for _ = 1, 2 do
            red = redis:new()
            say(red:connect("unix:SOCKET"))
            say(red:get_reused_times(), red:get("hits"))
            say(red:set_keepalive())
        end
        say(red:connect("unix:SOCKET.missing"))
        local closed = require("LIB"):new()
        closed:set_timeout(1000)
        say(closed:connect("127.0.0.1", 1))
        "##,
        "1 0 1\n1\nnil \"closed\"\n2 1 2\n1\nnil \"closed\"\n3 2 3\n1\nnil \"closed\"\n\
         1\n0\n1\n0 \"3\"\n1\n1\n1 \"3\"\n1\n\
         nil \"no such file or directory\"\nnil \"connection refused\"\n",
    );
}

#[test]
fn auth_against_a_server_that_wants_a_password() {
    let redis = Redis::start(&["--requirepass", "s3cret"]);
    both_print(
        &redis,
        r##"
        local red = redis:new()
        red:set_timeout(2000)
        say(red:connect("127.0.0.1", PORT))
        say(red:get("k"))
        say(red:auth("wrong"))
        say(red:auth("s3cret"))
        say(red:set("k", "v"), red:get("k"))
        "##,
        "1\nfalse \"NOAUTH Authentication required.\"\n\
         false \"WRONGPASS invalid username-password pair or user is disabled.\"\n\
         \"OK\"\n\"OK\" \"v\"\n",
    );
}

#[test]
fn large_and_binary_values_round_trip_unchanged() {
    let redis = Redis::start(&[]);
    both_print(
        &redis,
        r##"
        local red = connect()
        local big = string.rep("0123456789abcdef", 65536)
        say(#big, red:set("big", big))
        local got = red:get("big")
        say(#got, got == big)
        local bin = "a\0b\r\nc\0\255$3\r\n*1"
        say(red:set(bin, bin))
        say(red:get(bin), red:strlen(bin))
        red:init_pipeline()
        red:append("big", bin)
        red:get("big")
        red:get(bin)
        local res = red:commit_pipeline()
        say(res[1], #res[2], res[2] == big .. bin, res[3])
        say(red:hmset("bh", { [bin] = big }), #red:hget("bh", bin))
        "##,
        "1048576 \"OK\"\n1048576 true\n\"OK\"\n\"a\\0b\\13\\\nc\\0\u{fffd}$3\\13\\\n*1\" 14\n\
         1048590 1048590 true \"a\\0b\\13\\\nc\\0\u{fffd}$3\\13\\\n*1\"\n\"OK\" 1048576\n",
    );
}

/// Ours alone: what lua-resty-redis 0.27 predates (`set_timeouts`, argument checks in
/// `connect`) and where ours goes its own way (commands sent upper-case).
#[test]
fn newer_api_argument_checks_and_upper_case_commands() {
    let redis = Redis::start(&[]);
    let out = run_with(
        "resty.redis",
        &redis,
        r##"
        local red = redis:new()
        say(red:set_timeouts(1000, 1000, 1000))
        say(pcall(red.connect, red, 6379))
        say(pcall(red.connect, red, "127.0.0.1", "x"))
        say(pcall(red.connect, red, "127.0.0.1", PORT, "opts"))
        say(pcall(red.connect, red, "unix:SOCKET", 1))
        say(red:connect("127.0.0.1", tostring(PORT)))
        say(red:no_such_command("a"))
        redis.add_commands("object")
        say(rawget(redis, "object") ~= nil, red:set("k", "v"), red:object("encoding", "k"))
        say(redis:array_to_hash({ "a", 1, "b", 2, "odd" }).b)
        say(red:set_keepalive())
        say(red:get("k"))
        "##,
        None,
    );
    assert_eq!(
        out,
        "\n\
         false \"bad argument #1 host: string expected, got number\"\n\
         false \"bad argument #2 port: number expected, got string\"\n\
         false \"bad argument #3 opts: nil or table expected, got string\"\n\
         false \"bad argument #2 opts: nil or table expected, got number\"\n\
         1\n\
         false \"ERR unknown command 'NO_SUCH_COMMAND', with args beginning with: 'a' \"\n\
         true \"OK\" \"embstr\"\n2\n1\nnil \"closed\"\n"
    );
}

/// Ours alone: lua-resty-redis 0.27 hands the first in-flight message to `unsubscribe`.
#[test]
fn messages_in_flight_at_unsubscribe_are_kept_for_read_reply() {
    let redis = Redis::start(&[]);
    let out = run_with(
        "resty.redis",
        &redis,
        r##"
        local sub, pub = connect(), connect()
        say(sub:subscribe("news"))
        -- Each publish counts one receiver once the message is in the subscriber's stream.
        say(pub:publish("news", "one"), pub:publish("news", "two"))
        say(sub:unsubscribe("news"))
        say(sub:read_reply())
        say(sub:read_reply())
        say(sub:read_reply())
        say(sub:set_keepalive())
        "##,
        None,
    );
    assert_eq!(
        out,
        "[\"subscribe\",\"news\",1]\n1 1\n[\"unsubscribe\",\"news\",0] nil\n\
         [\"message\",\"news\",\"one\"]\n[\"message\",\"news\",\"two\"]\n\
         nil \"not subscribed\"\n1\n"
    );
}

#[test]
fn tls_connections_verify_the_server_and_are_pooled() {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    let tls_port = free_port();
    let redis = Redis::start(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server's TLS port did not open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let script = r##"
        local opts = { ssl = true, ssl_verify = true, server_name = "localhost" }
        for _ = 1, 2 do
            local red = redis:new()
            red:set_timeout(2000)
            say(red:connect("127.0.0.1", TLS_PORT, opts))
            say(red:get_reused_times(), red:incr("tls"))
            say(red:set_keepalive())
        end
        local red = redis:new()
        red:set_timeout(2000)
        say(red:connect("127.0.0.1", TLS_PORT, { ssl = true, ssl_verify = true, server_name = "example.com", pool = "other" }))
        "##
    .replace("TLS_PORT", &tls_port.to_string());
    let out = run_with("resty.redis", &redis, &script, Some(c.cert.pem()));
    assert_eq!(
        out,
        "1\n0 1\n1\n1\n1 2\n1\n\
         nil \"failed to do ssl handshake: certificate host mismatch\"\n"
    );
}
