//! Cosockets against real servers: a raw exchange with a local TCP server, then Debian's
//! `lua-nginx-redis` library (`require "nginx.redis"`, installed by `.ci/run`) unchanged
//! against a real `redis-server`.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use outpost_lua::Phase;
use support::*;

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

/// Scripts' own coroutines may wait on cosockets and `ngx.sleep` (lua-resty-http reads a
/// body through `coroutine.wrap`): the wait goes up to the request and the coroutine goes on,
/// also two coroutines deep, with `coroutine.yield` values still reaching their resumer.
#[test]
fn cosockets_and_sleep_wait_inside_the_scripts_own_coroutines() {
    let h = harness();
    let body = block_on(async {
        // Sends three lines, one every 20 ms, so each read waits.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::task::spawn_local(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::task::spawn_local(async move {
                    use tokio::io::AsyncWriteExt;
                    for line in ["one", "two", "three"] {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        if s.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let code = format!(
            r#"
            local sock = ngx.socket.tcp()
            sock:settimeout(2000)
            assert(sock:connect("127.0.0.1", {port}))
            local reader = coroutine.wrap(function()
                while true do
                    local line, err = sock:receive()
                    if not line then return nil, err end
                    coroutine.yield(line)
                end
            end)
            local outer = coroutine.create(function()
                local got = {{}}
                for _ = 1, 3 do
                    ngx.sleep(0.001)
                    got[#got + 1] = reader()
                end
                local back = coroutine.yield(table.concat(got, ","))
                return back .. "!"
            end)
            local ok1, lines = coroutine.resume(outer)
            local ok2, last = coroutine.resume(outer, "done")
            ngx.say(tostring(ok1), " ", lines, " ", tostring(ok2), " ", last, " ", coroutine.status(outer))
            sock:close()
            "#
        );
        let r = h.run(&get("/t"), &[(Phase::Content, code.as_str())]).await;
        String::from_utf8_lossy(&r.body).into_owned()
    });
    assert_eq!(body, "true one,two,three true done! dead\n");
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
        globals: None,
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

/// `require "resty.http"` against a real HTTP/1.1 server on a socket: Content-Length, chunked
/// and close-delimited bodies, a POST with headers, keep-alive reuse, and errors.
#[test]
fn resty_http_request_uri_against_a_real_server() {
    let h = harness();
    let body = block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::task::spawn_local(async move {
            let mut conns = 0;
            while let Ok((s, _)) = listener.accept().await {
                conns += 1;
                let n = conns;
                tokio::task::spawn_local(serve_http(s, n));
            }
        });
        let code = format!(
            r#"
            local http = require "resty.http"
            local base = "http://127.0.0.1:{port}"
            local httpc = http.new()
            httpc:set_timeout(2000)
            local res, err = httpc:request_uri(base .. "/len?x=1")
            ngx.say(res.status, " ", res.body, " ", res.headers["x-test"], " ", res.headers["X-Test"])
            res = http.new():request_uri(base .. "/chunked")
            ngx.say(res.status, " ", res.reason, " ", res.body)
            res = http.new():request_uri(base .. "/close")
            ngx.say(res.status, " ", res.body)
            res = http.new():request_uri(base .. "/echo", {{
                method = "POST", body = "abcdef", headers = {{ ["X-A"] = "1" }},
            }})
            ngx.say(res.body)
            -- From the keep-alive pool: the same connection again.
            ngx.say(http.new():request_uri(base .. "/echo").body)
            ngx.say(select(2, http.new():request_uri("http://127.0.0.1:1/")))
            ngx.say(select(2, http.new():request_uri("nope")))
            local u = http:parse_uri("https://[::1]:8443/a/b?c=d")
            ngx.say(u[1], " ", u[2], " ", u[3], " ", u[4], " ", u[5])
            "#
        );
        let r = h.run(&get("/t"), &[(Phase::Content, code.as_str())]).await;
        String::from_utf8_lossy(&r.body).into_owned()
    });
    assert_eq!(
        body,
        "200 hello a a\n\
         201 Created abcde\n\
         200 until close\n\
         POST /echo x-a=1 body=abcdef conn=2\n\
         GET /echo x-a= body= conn=2\n\
         connection refused\n\
         bad uri: nope\n\
         https ::1 8443 /a/b c=d\n",
        "/len, /chunked and /close share connection 1 (kept alive until the server closed it); \
         both echoes share connection 2"
    );
}

/// A tiny HTTP/1.1 server: reads each request head (and a Content-Length body), answers by
/// path, keeps the connection unless it answered `/close`.
async fn serve_http(mut s: tokio::net::TcpStream, conn: usize) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let (r, mut w) = s.split();
    let mut r = BufReader::new(r);
    loop {
        let mut request_line = String::new();
        if r.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        let mut x_a = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').unwrap_or((line, ""));
            match k.to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "x-a" => x_a = v.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        r.read_exact(&mut body).await.unwrap();
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        let reply = match path {
            "/len" => "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Test: a\r\n\r\nhello".to_string(),
            "/chunked" => {
                "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                    .to_string()
            }
            "/close" => "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close".to_string(),
            _ => {
                let text = format!(
                    "{method} {path} x-a={x_a} body={} conn={conn}",
                    String::from_utf8_lossy(&body)
                );
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len())
            }
        };
        if w.write_all(reply.as_bytes()).await.is_err() || path == "/close" {
            return;
        }
    }
}

/// `require "resty.dns.resolver"` against a real DNS server on a UDP socket (answers written
/// here byte by byte): A, AAAA (formatted as lua-resty-dns does), CNAME chains, MX, an error
/// code, and retries against a server that does not answer.
#[test]
fn resty_dns_resolver_against_a_real_udp_server() {
    let h = harness();
    let body = block_on(async {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        tokio::task::spawn_local(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = server.recv_from(&mut buf).await {
                if let Some(reply) = dns_reply(&buf[..n]) {
                    let _ = server.send_to(&reply, from).await;
                }
            }
        });
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        let code = format!(
            r#"
            local resolver = require "resty.dns.resolver"
            local r = assert(resolver:new{{
                nameservers = {{ {{"127.0.0.1", {port}}} }}, retrans = 2, timeout = 1000,
            }})
            local ans = assert(r:query("www.example.com", {{ qtype = r.TYPE_A }}))
            local a = ans[1]
            ngx.say(#ans, " ", a.name, " ", a.address, " ", a.ttl, " ", a.type, " ", a.section, " ", a.class)
            ans = r:query("www.example.com", {{ qtype = r.TYPE_AAAA }})
            ngx.say(ans[1].address)
            ans = r:query("alias.example.com")
            ngx.say(ans[1].cname, " ", ans[2].name, " ", ans[2].address)
            ans = r:query("nx.example.com")
            ngx.say(ans.errcode, " ", ans.errstr, " ", #ans)
            ans = r:query("mx.example.com", {{ qtype = r.TYPE_MX }})
            ngx.say(ans[1].preference, " ", ans[1].exchange)
            local quiet = resolver:new{{
                nameservers = {{ {{"127.0.0.1", {silent_port}}} }}, retrans = 2, timeout = 50,
            }}
            local none, err, tries = quiet:query("www.example.com")
            ngx.say(none, " ", #tries)
            ngx.say(select(2, resolver:new{{}}))
            "#
        );
        let r = h.run(&get("/t"), &[(Phase::Content, code.as_str())]).await;
        drop(silent);
        String::from_utf8_lossy(&r.body).into_owned()
    });
    assert_eq!(
        body,
        "1 www.example.com 127.0.0.1 300 1 1 1\n\
         ff01:0:0:0:0:0:0:101\n\
         www.example.com www.example.com 127.0.0.1\n\
         3 name error 0\n\
         10 mail.example.com\n\
         nil 2\n\
         no nameservers specified\n"
    );
}

/// The reply to one DNS query, by name and type.
fn dns_reply(q: &[u8]) -> Option<Vec<u8>> {
    fn name(n: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in n.split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }
    fn record(owner: &[u8], rtype: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
        let mut r = owner.to_vec();
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&1u16.to_be_bytes());
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(rdata);
        r
    }
    // The question: the name's labels from byte 12, then type and class.
    let mut pos = 12;
    let mut labels = Vec::new();
    while *q.get(pos)? != 0 {
        let len = q[pos] as usize;
        labels.push(String::from_utf8_lossy(q.get(pos + 1..pos + 1 + len)?).into_owned());
        pos += len + 1;
    }
    let qtype = u16::from_be_bytes([*q.get(pos + 1)?, *q.get(pos + 2)?]);
    let question = &q[12..pos + 5];
    let qname = labels.join(".");
    let at_qname = [0xc0, 0x0c];
    let (rcode, answers): (u8, Vec<Vec<u8>>) = match (qname.as_str(), qtype) {
        ("www.example.com", 1) => (0, vec![record(&at_qname, 1, 300, &[127, 0, 0, 1])]),
        ("www.example.com", 28) => {
            let mut v6 = [0u8; 16];
            v6[0] = 0xff;
            v6[1] = 0x01;
            v6[14] = 0x01;
            v6[15] = 0x01;
            (0, vec![record(&at_qname, 28, 60, &v6)])
        }
        ("alias.example.com", _) => (
            0,
            vec![
                record(&at_qname, 5, 30, &name("www.example.com")),
                record(&name("www.example.com"), 1, 300, &[127, 0, 0, 1]),
            ],
        ),
        ("mx.example.com", 15) => {
            let mut rdata = 10u16.to_be_bytes().to_vec();
            rdata.extend(name("mail.example.com"));
            (0, vec![record(&at_qname, 15, 60, &rdata)])
        }
        _ => (3, vec![]),
    };
    let mut reply = vec![q[0], q[1], 0x81, 0x80 | rcode];
    reply.extend_from_slice(&1u16.to_be_bytes());
    reply.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(question);
    for a in answers {
        reply.extend(a);
    }
    Some(reply)
}

/// `receiveuntil`'s iterator with and without a size, and `inclusive`, over a real TCP
/// server that sends two parts and a tail, then closes. The expected lines are what Debian's
/// nginx with lua-nginx-module 0.10.23 printed for the same script and the same bytes.
#[test]
fn receiveuntil_with_a_size_reads_parts_in_pieces_as_nginx_does() {
    let h = harness();
    let run = |size: &str, inclusive: bool| {
        block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::task::spawn_local(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                if let Ok((mut s, _)) = listener.accept().await {
                    let mut one = [0u8; 1];
                    let _ = s.read(&mut one).await;
                    let payload = b"hello, world\r\n--abcedhbNEXT part\r\n--abcedhbtail";
                    let _ = s.write_all(payload).await;
                }
            });
            let code = format!(
                r#"
                local sock = ngx.socket.tcp()
                sock:settimeout(2000)
                assert(sock:connect("127.0.0.1", {port}))
                sock:send("x")
                local reader = sock:receiveuntil("\r\n--abcedhb", {{inclusive = {inclusive}}})
                local size = {size}
                for i = 1, 12 do
                  local data, err, partial
                  if size then data, err, partial = reader(size) else data, err, partial = reader() end
                  ngx.say(i, ": ", tostring(data), " ", tostring(err), " ", tostring(partial))
                  if err then break end
                end
                "#
            );
            let r = h.run(&get("/t"), &[(Phase::Content, code.as_str())]).await;
            String::from_utf8_lossy(&r.body).into_owned()
        })
    };
    assert_eq!(
        run("4", false),
        "1: hell nil nil\n2: o, w nil nil\n3: orld nil nil\n4:  nil nil\n5: nil nil nil\n\
         6: NEXT nil nil\n7:  par nil nil\n8: t nil nil\n9: nil nil nil\n10: tail nil nil\n\
         11: nil closed \n"
    );
    assert_eq!(
        run("5", false),
        "1: hello nil nil\n2: , wor nil nil\n3: ld nil nil\n4: nil nil nil\n5: NEXT  nil nil\n\
         6: part nil nil\n7: nil nil nil\n8: nil closed tail\n"
    );
    assert_eq!(
        run("4", true),
        "1: hell nil nil\n2: o, w nil nil\n3: orld nil nil\n4: \r\n--abcedhb nil nil\n\
         5: nil nil nil\n6: NEXT nil nil\n7:  par nil nil\n8: t\r\n--abcedhb nil nil\n\
         9: nil nil nil\n10: tail nil nil\n11: nil closed \n"
    );
    assert_eq!(
        run("100", false),
        "1: hello, world nil nil\n2: nil nil nil\n3: NEXT part nil nil\n4: nil nil nil\n\
         5: nil closed tail\n"
    );
    assert_eq!(
        run("nil", false),
        "1: hello, world nil nil\n2: NEXT part nil nil\n3: nil closed tail\n"
    );
    // nginx takes 0 or less as no size, and cuts a fraction.
    assert_eq!(run("0", false), run("nil", false));
    assert_eq!(run("-1", false), run("nil", false));
    assert_eq!(run("2.5", false), run("2", false));
    assert_eq!(
        run("nil", true),
        "1: hello, world\r\n--abcedhb nil nil\n2: NEXT part\r\n--abcedhb nil nil\n\
         3: nil closed tail\n"
    );
}
