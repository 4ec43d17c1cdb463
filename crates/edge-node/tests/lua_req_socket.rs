//! The request's own sockets and a streaming content phase, end to end over real sockets:
//! `ngx.req.socket()` over the request body, `ngx.flush` sending the head and the output so
//! far while the script goes on, and `ngx.req.socket(true)` after a 101, with Debian's
//! lua-nginx-websocket (`require "nginx.websocket.server"` and `.client`) unchanged on both
//! ends. The expected outputs are what Debian's nginx with lua-nginx-module 0.10.23 answered
//! to the same code and the same requests.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn rule(path: &str, phase: &str, code: &str) -> String {
    format!(
        "      - conditions: [{{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [{path}]}}]\n        actions:\n          - lua:\n              {phase}:\n                inline: {}\n",
        serde_json::to_string(code).unwrap()
    )
}

fn app(rules: &[(&str, &str, &str)], upstream: bool) -> String {
    let mut yaml = String::from("shared_dicts: [{name: gate, capacity_bytes: 65536}]\n");
    if upstream {
        yaml.push_str("upstreams: [{name: web, peers: [{address: \"@O@\"}]}]\n");
    }
    yaml.push_str("applications:\n  - name: site\n    is_default: true\n    listeners: [{address: \"127.0.0.1:0\"}]\n");
    if upstream {
        yaml.push_str("    upstream: web\n");
    }
    yaml.push_str("    rules:\n");
    for (path, phase, code) in rules {
        yaml.push_str(&rule(path, phase, code));
    }
    yaml
}

async fn post(c: &reqwest::Client, url: String, body: &'static str) -> String {
    let r = c.post(url).body(body).send().await.unwrap();
    r.text().await.unwrap()
}

/// Sends `request` as it is and reads the answer until the edge closes.
async fn raw(addr: SocketAddr, request: &str) -> String {
    exchange_raw(addr, request.as_bytes()).await
}

const BODY: &str = "hello world\nline2\r\n--part2--rest";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_socket_reads_the_body_as_nginx_does() {
    let report = "ngx.say(tostring(d), ' ', tostring(e), ' ', tostring(p))";
    let s1 = "local sock, err = ngx.req.socket()
        for i = 1, 3 do
          local data, err, part = sock:receive(5)
          if data then ngx.say('received: ', data) else ngx.say('failed to receive: ', err, ' [', part, ']') end
        end";
    let s2 = format!(
        "local sock = ngx.req.socket() for i = 1, 4 do local d, e, p = sock:receive() {report} end"
    );
    let s3 = format!(
        "local sock = ngx.req.socket() local it = sock:receiveuntil('--')
         for i = 1, 3 do local d, e, p = it() {report} end
         ngx.say(tostring(sock:receive('*a')))"
    );
    let s4 = "ngx.req.read_body() local sock, err = ngx.req.socket() ngx.say(tostring(sock), ' ', tostring(err))";
    let s5 = "local sock, err = ngx.req.socket() ngx.say(type(sock), ' ', tostring(err))";
    let s7 = format!(
        "local sock = ngx.req.socket()
         local d, e, p = sock:receive('*a') {report}
         d, e, p = sock:receive('*a') {report}
         d, e, p = sock:receive(1) {report}"
    );
    let s8 = "local sock = ngx.req.socket()
        ngx.say(type(sock.send), ' ', type(sock.close), ' ', type(sock.receiveany), ' ', type(sock.receive), ' ', type(sock.receiveuntil), ' ', type(sock.settimeout), ' ', type(sock.settimeouts), ' ', type(sock.setkeepalive), ' ', type(sock.connect), ' ', type(sock.getreusedtimes))
        local d = sock:receive(3)
        local ok, err = pcall(ngx.req.read_body)
        ngx.say(d, ' ', tostring(ok), ' ', tostring(err), ' ', tostring(ngx.req.get_body_data()))
        local sock2, err2 = ngx.req.socket()
        ngx.say(tostring(sock2 == sock), ' ', tostring(err2))";
    let s9 = "local sock = ngx.req.socket() ngx.say(sock:receiveany(4)) ngx.say(sock:receiveany(100)) ngx.say(sock:receiveany(100))";
    let s10 = "local sock, err = ngx.req.socket() ngx.say(type(sock), ' ', tostring(err))";
    let s11_access = "local sock = ngx.req.socket() ngx.ctx.d = sock:receive(5)";
    let s11 = "ngx.say(ngx.ctx.d) ngx.req.read_body() ngx.say(tostring(ngx.req.get_body_data()))";
    let yaml = app(
        &[
            ("/s1", "content", s1),
            ("/s2", "content", &s2),
            ("/s3", "content", &s3),
            ("/s4", "content", s4),
            ("/s5", "content", s5),
            ("/s7", "content", &s7),
            ("/s8", "content", s8),
            ("/s9", "content", s9),
            ("/s10", "content", s10),
            ("/s11", "access", s11_access),
            ("/s11", "content", s11),
        ],
        false,
    );
    let node = edge(&yaml, &[]).await;
    let base = base_url(&node);
    let c = client();
    let cases: [(&str, &str); 7] = [
        (
            "/s1",
            "received: hello\nreceived:  worl\nreceived: d\nlin\n",
        ),
        (
            "/s2",
            "hello world nil nil\nline2 nil nil\nnil closed --part2--rest\nnil closed nil\n",
        ),
        (
            "/s3",
            "hello world\nline2\r\n nil nil\npart2 nil nil\nnil closed rest\nnil\n",
        ),
        (
            "/s7",
            "hello world\nline2\r\n--part2--rest nil nil\n nil nil\nnil closed \n",
        ),
        ("/s9", "hell\no world\nline2\r\n--part2--rest\nnilclosed\n"),
        ("/s10", "userdata nil\n"),
        ("/s4", "nil request body already exists\n"),
    ];
    for (path, want) in cases {
        assert_eq!(
            post(&c, format!("{base}{path}"), BODY).await,
            want,
            "{path}"
        );
    }
    // No body at all.
    let (_, _, body) = get(&c, &format!("{base}/s5")).await;
    assert_eq!(body, "nil no body\n");
    // Only the reading methods (OpenResty's socket is a table, ours a userdata).
    assert_eq!(
        post(&c, format!("{base}/s8"), "abcdef").await,
        "nil nil function function function function function nil nil nil\n\
         abc true nil nil\nfalse request body already exists\n"
    );
    // Read in access, what is left is not the content phase's.
    assert_eq!(
        post(&c, format!("{base}/s11"), "abcdefgh").await,
        "abcde\nnil\n"
    );
    // A chunked body is refused, as in lua-nginx-module 0.10.23.
    let answer = raw(
        plain_addr(&node),
        "POST /s10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n0\r\n\r\n",
    )
    .await;
    assert!(
        answer.contains("nil chunked request bodies not supported yet\n"),
        "{answer}"
    );
}

// A body no script reads streams upstream as it came; one a script read goes upstream whole,
// and so does one too large to keep in memory (the part read is sent first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_scripts_read_or_leave_still_reach_the_upstream() {
    let origin = Origin::start("o").await;
    let yaml = app(
        &[(
            "/upload",
            "access",
            "if ngx.var.arg_read then ngx.req.read_body() ngx.req.set_header('X-Kept', tostring(#(ngx.req.get_body_data() or ''))) end",
        )],
        true,
    );
    let node = edge(&yaml, &[("O", origin.addr.to_string())]).await;
    let base = base_url(&node);
    let c = client();
    let small = "x".repeat(1000);
    let large = vec![b'y'; (1 << 20) + 12345];
    for read in ["", "?read=1"] {
        let r = c
            .post(format!("{base}/upload{read}"))
            .body(small.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "1000", "{read}");
        let r = c
            .post(format!("{base}/upload{read}"))
            .body(large.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), large.len().to_string(), "{read}");
    }
    // Chunked and larger than memory: read_body reads past 1 MiB before it knows, gives that
    // back, and the upstream still gets every byte.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|_| Ok(vec![b'z'; 32 * 1024])).collect();
    let r = c
        .post(format!("{base}/upload?read=1"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            pieces,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), (40 * 32 * 1024).to_string());
}

// `ngx.flush` sends the head and what was printed, while the script goes on: the first part
// reaches the client while the script waits for a second request to open a gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_streams_the_content_phase_as_nginx_does() {
    let stream = r#"
        ngx.status = 201
        ngx.header["X-A"] = "b"
        ngx.say("one")
        ngx.say(tostring(ngx.headers_sent))
        local ok, err = ngx.flush(true)
        ngx.say(tostring(ok), " ", tostring(err), " ", tostring(ngx.headers_sent))
        ngx.flush(true)
        for i = 1, 500 do
          if ngx.shared.gate:get("open") then break end
          ngx.sleep(0.01)
        end
        local ok, err = pcall(function() ngx.header["X-B"] = "c" end)
        ngx.say("two ", tostring(ok), " ", tostring(err))
        ngx.status = 500
        ngx.say(ngx.status)
    "#;
    let yaml = app(
        &[
            ("/stream", "content", stream),
            (
                "/open",
                "content",
                "ngx.shared.gate:set('open', true) ngx.say('opened')",
            ),
            ("/eof", "content", EOF_THEN_WORK),
            (
                "/open2",
                "content",
                "ngx.shared.gate:set('open2', true) ngx.say('opened')",
            ),
            (
                "/after",
                "content",
                "ngx.say(tostring(ngx.shared.gate:get('after')))",
            ),
        ],
        false,
    );
    let node = edge(&yaml, &[]).await;
    let base = base_url(&node);
    let c = client();
    let mut r = c.get(format!("{base}/stream")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(r.headers()["x-a"], "b");
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.headers()["transfer-encoding"], "chunked");
    let mut got = String::new();
    // The gate is shut: everything up to the second flush must come without it.
    while got.len() < "one\ntrue\n1 nil true\n".len() {
        let chunk = tokio::time::timeout(Duration::from_secs(10), r.chunk())
            .await
            .expect("the flushed part arrives while the script waits")
            .unwrap()
            .expect("more body");
        got.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(got, "one\ntrue\n1 nil true\n");
    let (_, _, opened) = get(&c, &format!("{base}/open")).await;
    assert_eq!(opened, "opened\n");
    let rest = r.text().await.unwrap();
    assert_eq!(rest, "two true nil\n201\n");

    // `ngx.eof()`: the whole response reaches the client while the script, still waiting
    // for its gate, goes on afterwards.
    let r = c.get(format!("{base}/eof")).send().await.unwrap();
    assert_eq!(r.headers()["transfer-encoding"], "chunked");
    let body = tokio::time::timeout(Duration::from_secs(10), r.text())
        .await
        .expect("the response ends at ngx.eof, not with the script")
        .unwrap();
    assert_eq!(body, "done\n");
    let (_, _, after) = get(&c, &format!("{base}/after")).await;
    assert_eq!(after, "nil\n", "the script still waits");
    get(&c, &format!("{base}/open2")).await;
    let finished = eventually(Duration::from_secs(10), || {
        let c = c.clone();
        let url = format!("{base}/after");
        async move { get(&c, &url).await.2 == "1 nil\n" }
    })
    .await;
    assert!(finished, "the script ran on after ngx.eof");
}

const EOF_THEN_WORK: &str = r#"
    ngx.say("done")
    local ok, err = ngx.eof()
    for i = 1, 500 do
      if ngx.shared.gate:get("open2") then break end
      ngx.sleep(0.01)
    end
    ngx.say("dropped")
    ngx.shared.gate:set("after", tostring(ok) .. " " .. tostring(err))
"#;

const WS_SERVER: &str = r#"
    local server = require "nginx.websocket.server"
    local wb, err = server:new{ timeout = 5000, max_payload_len = 65535 }
    if not wb then ngx.log(ngx.ERR, "failed to new websocket: ", err) return ngx.exit(444) end
    while true do
      local data, typ, err = wb:recv_frame()
      if not data then ngx.log(ngx.ERR, "recv: ", err) break end
      if typ == "close" then wb:send_close(1000, "bye") break end
      if typ == "text" then wb:send_text("echo: " .. data) end
    end
"#;

const WS_CLIENT: &str = r#"
    local client = require "nginx.websocket.client"
    local wb, err = client:new{ timeout = 5000 }
    local ok, err = wb:connect("ws://127.0.0.1:" .. ngx.var.server_port .. "/ws")
    if not ok then ngx.say("failed to connect: ", err) return end
    ngx.say("sent: ", wb:send_text("hello"))
    local data, typ, err = wb:recv_frame()
    ngx.say(typ, ": ", data)
    ngx.say("close: ", wb:send_close(1000, "enough"))
    data, typ, err = wb:recv_frame()
    ngx.say(typ, ": ", string.format("%q", data), " ", tostring(err))
    data, typ, err = wb:recv_frame()
    ngx.say(tostring(typ), ": ", tostring(data), " ", tostring(err))
"#;

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = *b"abcd";
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

async fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await.unwrap();
    let mut payload = vec![0u8; (h[1] & 0x7f) as usize];
    s.read_exact(&mut payload).await.unwrap();
    (h[0], payload)
}

// lua-resty-websocket's server (Debian's lua-nginx-websocket, unchanged) on the edge: the 101
// head as nginx sends it, an echo, and the closing handshake; and its client, in another
// request, talking to that server through the edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_run_on_the_raw_request_socket() {
    assert!(
        std::path::Path::new("/usr/share/lua/5.1/nginx/websocket/server.lua").exists(),
        "install Debian's lua-nginx-websocket (./test does)"
    );
    let yaml = app(
        &[
            ("/ws", "content", WS_SERVER),
            ("/wsclient", "content", WS_CLIENT),
            (
                "/nohead",
                "content",
                "local sock, err = ngx.req.socket(true) ngx.say(tostring(sock), ' ', err)",
            ),
        ],
        false,
    );
    let node = edge(&yaml, &[]).await;
    let addr = plain_addr(&node);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 4096, "a head of reasonable size");
        let mut b = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut b))
            .await
            .expect("the 101 head arrives")
            .unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("http/1.1 101 switching protocols\r\n"),
        "{head}"
    );
    for line in [
        "connection: upgrade\r\n",
        "upgrade: websocket\r\n",
        "sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n",
    ] {
        assert!(head.contains(line), "{line} in {head}");
    }
    assert!(!head.contains("content-type"), "{head}");
    s.write_all(&masked(1, b"hi there")).await.unwrap();
    assert_eq!(read_frame(&mut s).await, (0x81, b"echo: hi there".to_vec()));
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"done");
    s.write_all(&masked(8, &close)).await.unwrap();
    let mut want = 1000u16.to_be_bytes().to_vec();
    want.extend_from_slice(b"bye");
    assert_eq!(read_frame(&mut s).await, (0x88, want));
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("the edge closes once the script is done")
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");

    let c = client();
    let (_, _, body) = get(&c, &format!("http://{addr}/wsclient")).await;
    assert_eq!(
        body,
        "sent: 11nil\ntext: echo: hello\nclose: 14nil\nclose: \"bye\" 1000\n\
         nil: nil failed to receive the first 2 bytes: closed\n"
    );
    // Without a 101 sent, the edge cannot lend the connection (nginx can; docs/lua.md).
    let (_, _, body) = get(&c, &format!("http://{addr}/nohead")).await;
    assert_eq!(
        body,
        "nil raw request socket needs a 101 response sent first\n"
    );
}
