//! `ngx.socket.udp` against a local UDP echo server, and `tcpsock:sslhandshake` against a
//! local tokio-rustls server with an rcgen certificate. The expected bodies are what Debian's
//! nginx 1.22 + lua-nginx-module 0.10.23 printed for the same scripts against equivalent
//! servers (run by hand: these need servers the recorded corpus cannot start).

mod support;

use std::sync::Arc;

use outpost_lua::Phase;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn content(h: &Harness, code: &str) -> String {
    let r = h.run(&get("/t"), &[(Phase::Content, code)]).await;
    assert_eq!(r.status, 200, "body: {}", String::from_utf8_lossy(&r.body));
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Echoes each datagram, except `silent` (no answer) and `big` (20000 bytes back). Stops
/// after `limit` datagrams.
async fn udp_echo(limit: usize) -> u16 {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    tokio::task::spawn_local(async move {
        let mut buf = vec![0u8; 65536];
        for _ in 0..limit {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let reply = match &buf[..n] {
                b"silent" => continue,
                b"big" => vec![b'x'; 20000],
                d => d.to_vec(),
            };
            let _ = sock.send_to(&reply, from).await;
        }
    });
    port
}

#[test]
fn udp_sends_and_receives_datagrams_with_openresty_results() {
    let h = harness();
    let body = block_on(async {
        let port = udp_echo(100).await;
        let code = format!(
            r#"
            local u = ngx.socket.udp()
            ngx.say("send before: ", u:send("x"))
            ngx.say("recv before: ", u:receive())
            ngx.say("close before: ", u:close())
            ngx.say("bad port: ", u:setpeername("127.0.0.1", 70000))
            ngx.say("peer: ", u:setpeername("127.0.0.1", {port}))
            ngx.say("send: ", u:send("hello"))
            ngx.say("recv: ", u:receive())
            ngx.say("send tbl: ", u:send({{"a", "b", 1, {{"c"}}}}))
            ngx.say("recv: ", u:receive())
            ngx.say("send num: ", u:send(3.5))
            ngx.say("recv: ", u:receive())
            ngx.say("send nil: ", u:send(nil))
            ngx.say("recv: ", u:receive())
            ngx.say("send true: ", u:send(true))
            ngx.say("recv: ", u:receive())
            ngx.say("send hello: ", u:send("hello"))
            ngx.say("recv 3: ", u:receive(3))
            ngx.say("send big: ", u:send("big"))
            local d, e = u:receive()
            ngx.say("recv big: ", d and #d, " ", e)
            ngx.say("send big: ", u:send("big"))
            local d, e = u:receive(100000)
            ngx.say("recv big 100000: ", d and #d, " ", e)
            u:settimeout(100)
            ngx.say("send silent: ", u:send("silent"))
            ngx.say("recv silent: ", u:receive())
            ngx.say("send after timeout: ", u:send("again"))
            ngx.say("recv after timeout: ", u:receive())
            ngx.say("pcall bad type: ", pcall(u.send, u, function() end))
            ngx.say("pcall recv bad: ", pcall(u.receive, u, "x"))
            ngx.say("close: ", u:close())
            ngx.say("close again: ", u:close())
            ngx.say("send after close: ", u:send("x"))
            local n = ngx.socket.udp()
            ngx.say("hostport: ", n:setpeername("127.0.0.1:{port}"))
            ngx.say("bad: ", n:setpeername("", 1))
            ngx.say("pcall args: ", pcall(n.setpeername, n))
            ngx.say("pcall settimeout: ", pcall(n.settimeout, n))
            "#
        );
        content(&h, &code).await
    });
    assert_eq!(
        body,
        "send before: nilclosed\n\
         recv before: nilclosed\n\
         close before: nilclosed\n\
         bad port: nilbad port number: 70000\n\
         peer: 1\n\
         send: 1\n\
         recv: hello\n\
         send tbl: 1\n\
         recv: ab1c\n\
         send num: 1\n\
         recv: 3.5\n\
         send nil: 1\n\
         recv: nil\n\
         send true: 1\n\
         recv: true\n\
         send hello: 1\n\
         recv 3: hel\n\
         send big: 1\n\
         recv big: 20000 nil\n\
         send big: 1\n\
         recv big 100000: 20000 nil\n\
         send silent: 1\n\
         recv silent: niltimeout\n\
         send after timeout: 1\n\
         recv after timeout: again\n\
         pcall bad type: falsebad argument #2 to '?' (string, number, boolean, nil, or array table expected, got function)\n\
         pcall recv bad: falsebad argument #2 to '?' (number expected, got string)\n\
         close: 1\n\
         close again: nilclosed\n\
         send after close: nilclosed\n\
         hostport: 1\n\
         bad: nilfailed to parse host name \"\": no host\n\
         pcall args: falsengx.socket.udp setpeername: expecting 2 or 3 arguments (including the object), but seen 1\n\
         pcall settimeout: falsengx.socket settimeout: expecting at least 2 arguments (including the object) but seen 1\n"
    );
}

#[test]
fn udp_reports_connection_refused_from_a_closed_port() {
    // A port that was free a moment ago: the kernel answers with ICMP port unreachable.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let h = harness();
    let code = format!(
        r#"
        local r = ngx.socket.udp()
        ngx.say("peer refused: ", r:setpeername("127.0.0.1", {closed}))
        ngx.say("send refused: ", r:send("x"))
        r:settimeout(200)
        ngx.say("recv refused: ", r:receive())
        ngx.say("recv refused 2: ", r:receive())
        "#
    );
    let body = block_on(content(&h, &code));
    assert_eq!(
        body,
        "peer refused: 1\nsend refused: 1\nrecv refused: nilconnection refused\nrecv refused 2: niltimeout\n"
    );
}

#[test]
fn udp_resolves_host_names_and_refuses_a_second_waiter() {
    let h = harness();
    let body = block_on(async {
        let port = udp_echo(10).await;
        let code = format!(
            r#"
            local u = ngx.socket.udp()
            -- Names go to the system resolver (OpenResty needs a `resolver` directive).
            ngx.say("name: ", u:setpeername("localhost", {port}))
            ngx.say(u:send("by name"), " ", u:receive())
            u:settimeout(200)
            local t = ngx.thread.spawn(function() return u:receive() end)
            ngx.sleep(0.01) -- the thread runs now and waits in receive
            ngx.say("busy send: ", u:send("x"))
            ngx.say("busy receive: ", u:receive())
            ngx.say("thread: ", ngx.thread.wait(t))
            ngx.say("free again: ", u:send("ok"), " ", u:receive())
            local bad = ngx.socket.udp()
            local ok, err = bad:setpeername("no-such-host.invalid", 53)
            ngx.say("unknown: ", ok, " ", err)
            "#
        );
        content(&h, &code).await
    });
    assert_eq!(
        body,
        "name: 1\n1 by name\n\
         busy send: nilsocket busy\n\
         busy receive: nilsocket busy\n\
         thread: trueniltimeout\n\
         free again: 1 ok\n\
         unknown: nil no-such-host.invalid could not be resolved (3: Host not found)\n"
    );
}

#[test]
fn udp_sockets_are_refused_where_the_request_cannot_yield() {
    let h = harness();
    let r = block_on(h.run(
        &get("/t"),
        &[
            (Phase::Content, "ngx.say('body')"),
            (
                Phase::HeaderFilter,
                "local ok, err = pcall(ngx.socket.udp) ngx.header['x-udp'] = err",
            ),
        ],
    ));
    assert_eq!(
        r.headers.get("x-udp").unwrap(),
        "API disabled in the context of header_filter_by_lua*"
    );
}

/// A self-signed certificate for `localhost`: (cert PEM, rustls server config).
fn tls_server_config() -> (String, Arc<rustls::ServerConfig>) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![c.cert.der().clone()], key)
    .unwrap();
    (c.cert.pem(), Arc::new(config))
}

/// A certificate for `localhost` signed by a new CA: (CA PEM, rustls server config).
fn ca_signed_server_config() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Outpost test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    (ca.pem(), Arc::new(config))
}

/// A TLS server that greets each connection with `HELLO <n>` and echoes lines in upper case.
/// Failed handshakes do not count. Accepts at most `limit` connections.
async fn tls_echo(config: Arc<rustls::ServerConfig>, limit: usize) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::task::spawn_local(async move {
        let mut served = 0;
        for _ in 0..limit {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            served += 1;
            let n = served;
            tokio::task::spawn_local(async move {
                let (r, mut w) = tokio::io::split(tls);
                let mut lines = BufReader::new(r).lines();
                if w.write_all(format!("HELLO {n}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                while let Ok(Some(l)) = lines.next_line().await {
                    let reply = format!("{}\n", l.to_uppercase());
                    if w.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Connects a new TCP cosocket to the test server (prepended to each TLS script).
fn connect_fn(port: u16) -> String {
    format!(
        r#"
        local function c()
            local s = ngx.socket.tcp()
            s:settimeout(2000)
            assert(s:connect("127.0.0.1", {port}))
            return s
        end
        "#
    )
}

#[test]
fn tls_without_verification_carries_lines_and_pools_the_connection() {
    let h = harness();
    let body = block_on(async {
        let (_, config) = tls_server_config();
        let port = tls_echo(config, 10).await;
        let code = connect_fn(port)
            + r#"
            local s = c()
            ngx.say("false session: ", s:sslhandshake(false, "localhost", false))
            ngx.say("line: ", s:receive())
            ngx.say("send: ", s:send("ping\n"))
            ngx.say("line: ", s:receive())
            ngx.say("again: ", tostring(s:sslhandshake(false)))
            local sess = s:sslhandshake()
            ngx.say("again nil: ", type(sess))
            ngx.say("given back: ", s:sslhandshake(sess) == sess)
            ngx.say("keepalive: ", s:setkeepalive())
            s = c()
            ngx.say("reused: ", s:getreusedtimes())
            local sess, err = s:sslhandshake(nil, "localhost", false)
            ngx.say("pooled hs: ", type(sess), " ", err)
            ngx.say("send: ", s:send("pooled\n"))
            ngx.say("line: ", s:receive())
            local read = s:receiveuntil("--")
            s:send("a--b\n")
            ngx.say("until: ", read(), " rest: ", s:receive())
            s:close()
            s = c()
            local sess, err = s:sslhandshake(nil, nil, false)
            ngx.say("no sni: ", type(sess), " ", err)
            ngx.say("line: ", s:receive())
            s:close()
            ngx.say("closed hs: ", s:sslhandshake())
            ngx.say("pcall bad args: ", pcall(s.sslhandshake, s, nil, nil, nil, nil, nil, nil))
            ngx.say("never connected: ", pcall(function() return ngx.socket.tcp():sslhandshake() end))
            "#;
        content(&h, &code).await
    });
    assert_eq!(
        body,
        "false session: true\n\
         line: HELLO 1\n\
         send: 5\n\
         line: PING\n\
         again: true\n\
         again nil: userdata\n\
         given back: true\n\
         keepalive: 1\n\
         reused: 1\n\
         pooled hs: userdata nil\n\
         send: 7\n\
         line: POOLED\n\
         until: A rest: B\n\
         no sni: userdata nil\n\
         line: HELLO 2\n\
         closed hs: nilclosed\n\
         pcall bad args: falsengx.socket sslhandshake: expecting 1 ~ 5 arguments (including the object), but seen 7\n\
         never connected: falsesocket is never created nor connected\n"
    );
}

#[test]
fn tls_verification_refuses_an_untrusted_self_signed_certificate() {
    let h = harness();
    let body = block_on(async {
        let (_, config) = tls_server_config();
        let port = tls_echo(config, 10).await;
        let code = connect_fn(port)
            + r#"
            local s = c()
            local sess, err = s:sslhandshake(nil, "localhost", true)
            ngx.say("verify: ", type(sess), " ", err)
            ngx.say("after fail send: ", s:send("x"))
            s = c()
            local sess, err = s:sslhandshake(nil, "other.example", true)
            ngx.say("verify other name: ", type(sess), " ", err)
            "#;
        content(&h, &code).await
    });
    assert_eq!(
        body,
        "verify: nil 18: self-signed certificate\n\
         after fail send: nilclosed\n\
         verify other name: nil 18: self-signed certificate\n"
    );
}

#[test]
fn tls_verification_with_a_trusted_certificate_checks_the_host_name() {
    let h = harness();
    let body = block_on(async {
        let (pem, config) = tls_server_config();
        h.vm.set_ssl_trusted_certificate(&pem).unwrap();
        let port = tls_echo(config, 10).await;
        let code = connect_fn(port)
            + r#"
            local s = c()
            local sess, err = s:sslhandshake(nil, "localhost", true)
            ngx.say("verify: ", type(sess), " ", err)
            ngx.say("line: ", s:receive())
            s = c()
            local sess, err = s:sslhandshake(nil, "other.example", true)
            ngx.say("verify other name: ", type(sess), " ", err)
            s = c()
            -- Without a name only the chain is checked, as nginx does.
            local sess, err = s:sslhandshake(nil, nil, true)
            ngx.say("verify without name: ", type(sess), " ", err)
            "#;
        content(&h, &code).await
    });
    assert_eq!(
        body,
        "verify: userdata nil\n\
         line: HELLO 1\n\
         verify other name: nil certificate host mismatch\n\
         verify without name: userdata nil\n"
    );
}

#[test]
fn tls_verification_names_a_missing_issuer_and_trusts_a_configured_ca() {
    let h = harness();
    let (ca_pem, config) = ca_signed_server_config();
    let verify = |h: &Harness, config: Arc<rustls::ServerConfig>| {
        block_on(async {
            let port = tls_echo(config, 10).await;
            let code = connect_fn(port)
                + r#"
                local s = c()
                local sess, err = s:sslhandshake(false, "localhost", true)
                ngx.say("verify: ", sess, " ", err)
                "#;
            content(h, &code).await
        })
    };
    assert_eq!(
        verify(&h, config.clone()),
        "verify: nil 20: unable to get local issuer certificate\n"
    );
    h.vm.set_ssl_trusted_certificate(&ca_pem).unwrap();
    assert_eq!(verify(&h, config), "verify: true nil\n");
}

#[test]
fn tls_handshake_with_a_plain_server_fails_and_closes() {
    let h = harness();
    let body = block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::task::spawn_local(async move {
            for _ in 0..5 {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let _ = s.write_all(b"NOT TLS\r\n\r\n").await;
            }
        });
        let code = connect_fn(port)
            + r#"
            local p = c()
            ngx.say("plain server: ", p:sslhandshake(nil, "localhost", false))
            ngx.say("after fail send: ", p:send("x"))
            "#;
        content(&h, &code).await
    });
    assert_eq!(
        body,
        "plain server: nilhandshake failed\nafter fail send: nilclosed\n"
    );
}

#[test]
fn a_pooled_tls_connection_serves_only_handshakes_that_fit_it() {
    let h = harness();
    let body = block_on(async {
        let (pem, config) = tls_server_config();
        h.vm.set_ssl_trusted_certificate(&pem).unwrap();
        let port = tls_echo(config, 10).await;
        let code = connect_fn(port)
            + r#"
            local s = c()
            assert(s:sslhandshake(false, "localhost", false))
            ngx.say(s:receive())
            assert(s:setkeepalive())
            -- The pooled connection was not verified: a verifying handshake gets a new one.
            s = c()
            ngx.say("reused: ", s:getreusedtimes())
            assert(s:sslhandshake(false, "localhost", true))
            ngx.say("reused: ", s:getreusedtimes(), " ", s:receive())
            assert(s:setkeepalive())
            -- Two pooled now; another name gets neither.
            s = c()
            assert(s:sslhandshake(false, "127.0.0.1", false))
            ngx.say("reused: ", s:getreusedtimes(), " ", s:receive())
            s:close()
            -- Both are still pooled: the newest, verified one first, then the other.
            s = c()
            assert(s:sslhandshake(false, "localhost", true))
            s:send("first\n")
            ngx.say("reused: ", s:getreusedtimes(), " ", s:receive())
            local s2 = c()
            assert(s2:sslhandshake(false, "localhost", false))
            s2:send("second\n")
            ngx.say("reused: ", s2:getreusedtimes(), " ", s2:receive())
            "#;
        content(&h, &code).await
    });
    assert_eq!(
        body,
        "HELLO 1\n\
         reused: 1\n\
         reused: 0 HELLO 2\n\
         reused: 0 HELLO 3\n\
         reused: 1 FIRST\n\
         reused: 1 SECOND\n"
    );
}
