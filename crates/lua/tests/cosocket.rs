//! Cosockets against real servers: a raw exchange with a local TCP server, then Debian's
//! `lua-nginx-redis` library (`require "nginx.redis"`, installed by `.ci/run`) unchanged
//! against a real `redis-server`.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outpost_lua::Phase;
use support::*;

fn get(path: &str) -> Req<'_> {
    Req {
        method: "GET",
        path,
        headers: vec![],
        body: None,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn send_receive_lines_bytes_until_and_keepalive() {
    let h = harness();
    let body = block_on(async {
        // A server that greets, echoes lines in upper case and counts connections.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::task::spawn_local(async move {
            let mut conns = 0;
            while let Ok((mut s, _)) = listener.accept().await {
                conns += 1;
                let n = conns;
                tokio::task::spawn_local(async move {
                    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
                    let (r, mut w) = s.split();
                    let mut lines = BufReader::new(r).lines();
                    w.write_all(format!("HELLO {n}\r\nabcdef--END--tail\n").as_bytes())
                        .await
                        .unwrap();
                    while let Ok(Some(l)) = lines.next_line().await {
                        w.write_all(format!("{}\n", l.to_uppercase()).as_bytes())
                            .await
                            .unwrap();
                    }
                });
            }
        });
        let code = format!(
            r#"
            local sock = ngx.socket.tcp()
            sock:settimeout(2000)
            assert(sock:connect("127.0.0.1", {port}))
            local greeting = sock:receive()
            local six = sock:receive(6)
            local read = sock:receiveuntil("--END--")
            local before = read()
            local tail = sock:receive("*l")
            sock:send({{"ping", " ", 1, "\n"}})
            local echoed = sock:receive()
            ngx.say(greeting, "|", six, "|", before, "|", tail, "|", echoed, "|", sock:getreusedtimes())
            assert(sock:setkeepalive(10000, 4))
            -- The same connection comes back from the pool: no new greeting.
            local again = ngx.socket.tcp()
            again:settimeout(2000)
            assert(again:connect("127.0.0.1", {port}))
            again:send("pong\n")
            ngx.say(again:receive(), "|", again:getreusedtimes())
            again:close()
            local s2 = ngx.socket.tcp()
            s2:settimeout(100)
            local ok, err = s2:connect("127.0.0.1", 1)
            ngx.say(ok, " ", err)
            "#
        );
        let r = h.run(&get("/t"), &[(Phase::Content, code.as_str())]).await;
        String::from_utf8_lossy(&r.body).into_owned()
    });
    assert_eq!(
        body,
        "HELLO 1|abcdef||tail|PING 1|0\nPONG|1\nnil connection refused\n"
    );
}

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn debians_lua_nginx_redis_runs_unchanged_against_redis_server() {
    assert!(
        std::path::Path::new("/usr/share/lua/5.1/nginx/redis.lua").exists(),
        "install Debian's lua-nginx-redis (and redis-server): .ci/run does"
    );
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let _redis = Redis(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let h = harness();
    let code = format!(
        r#"
        local redis = require "nginx.redis"
        local red = redis:new()
        red:set_timeout(1000)
        local ok, err = red:connect("127.0.0.1", {port})
        if not ok then ngx.say("failed to connect: ", err) return end
        ngx.say(red:set("dog", "an animal"))
        ngx.say(red:get("dog"))
        ngx.say(red:incr("counter"), " ", red:incr("counter"))
        local res = red:get("missing")
        ngx.say(res == ngx.null)
        red:init_pipeline()
        red:set("cat", "Marry")
        red:get("cat")
        local results = red:commit_pipeline()
        ngx.say(results[1], " ", results[2])
        ngx.say(red:set_keepalive(10000, 10))
        "#
    );
    let r = block_on(h.run(&get("/t"), &[(Phase::Content, code.as_str())]));
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "OK\nan animal\n1 2\ntrue\nOK Marry\n1\n"
    );
}

#[test]
fn debians_lua_nginx_cookie_runs_unchanged() {
    assert!(
        std::path::Path::new("/usr/share/lua/5.1/nginx/cookie.lua").exists(),
        "install Debian's lua-nginx-cookie: .ci/run does"
    );
    let h = harness();
    let req = Req {
        method: "GET",
        path: "/t",
        headers: vec![("Cookie".into(), "session=abc; theme=dark".into())],
        body: None,
    };
    let r = block_on(h.run(
        &req,
        &[(
            Phase::Content,
            r#"
            local ck = require "nginx.cookie"
            local cookie = ck:new()
            local all = cookie:get_all()
            -- Headers before output, as in OpenResty.
            local ok, err = cookie:set({key = "lang", value = "en", path = "/", httponly = true})
            ngx.say(cookie:get("session"), " ", all.theme)
            ngx.say(ok, " ", err)
            "#,
        )],
    ));
    assert_eq!(String::from_utf8_lossy(&r.body), "abc dark\ntrue nil\n");
    assert_eq!(
        r.headers.get("set-cookie").unwrap(),
        "lang=en; Path=/; HttpOnly"
    );
}
