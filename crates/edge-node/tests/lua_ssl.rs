//! `lua_ssl_certificate` (nginx's `ssl_certificate_by_lua`) and `require "ngx.ssl"`, over
//! real TLS: the script reads the handshake (SNI, addresses, version), chooses the certificate
//! from PEM or DER, may wait, and aborts the handshake on an error. The expected values are
//! what Debian's nginx with lua-nginx-module 0.10.23 and lua-resty-core's `ngx.ssl` gave for
//! the same script, except the version: Debian's nginx 1.22 offers TLS 1.2 at most by default,
//! the edge 1.3.

mod support;

use std::net::SocketAddr;

use support::*;

const SSL_SCRIPT: &str = r##"
    local ssl = require "ngx.ssl"
    local name, err = ssl.server_name()
    local rec = {}
    local function add(...)
      local t = {}
      for i = 1, select("#", ...) do t[#t+1] = tostring((select(i, ...))) end
      rec[#rec+1] = table.concat(t, " ")
    end
    add("phase", ngx.get_phase())
    add("name", name, err)
    local addr, typ = ssl.raw_server_addr()
    add("addr", #addr, typ, addr == "\127\0\0\1")
    local caddr, ctyp = ssl.raw_client_addr()
    add("client", #caddr, ctyp)
    add("port", ssl.server_port() == tonumber(PORT))
    add("bad pem", ssl.cert_pem_to_der("garbage"))
    add("bad key pem", ssl.priv_key_pem_to_der("garbage"))
    add("bad der", ssl.set_der_cert("garbage"))
    add("bad der key", ssl.set_der_priv_key("garbage"))
    add("parse bad", ssl.parse_pem_cert("garbage"))
    add("parse bad key", ssl.parse_pem_priv_key("garbage"))
    if name == "fail.test" then error("boom") end
    if name == "exit.test" then return ngx.exit(ngx.ERROR) end
    if name == "sleep.test" then ngx.sleep(0.01) end
    if name == "lua.test" or name == "sleep.test" then
      add("clear", ssl.clear_certs())
      add("set cert", ssl.set_der_cert(assert(ssl.cert_pem_to_der(CERT))))
      add("set key", ssl.set_der_priv_key(assert(ssl.priv_key_pem_to_der(KEY))))
    end
    if name == "ec.test" then
      add("clear", ssl.clear_certs())
      add("set cert", ssl.set_cert(assert(ssl.parse_pem_cert(ECCERT))))
      add("set key", ssl.set_priv_key(assert(ssl.parse_pem_priv_key(ECKEY))))
    end
    if name == "nocert.test" then
      add("clear", ssl.clear_certs())
    end
    ngx.shared.log:set(name or "none", table.concat(rec, "\n"))
"##;

const REPORT: &str = r#"
    local ssl = require "ngx.ssl"
    ngx.say("name ", tostring(ssl.server_name()))
    ngx.say("ver ", tostring(ssl.get_tls1_version()), " ", tostring(ssl.get_tls1_version_str()))
    ngx.say(pcall(ssl.clear_certs))
"#;

/// What nginx recorded for a handshake whose SNI is `name` (its `ver` line left out).
fn nginx_record(name: &str, sets: bool) -> String {
    let mut r = format!(
        "phase ssl_cert\nname {name} nil\naddr 4 inet true\nclient 4 inet\nport true\n\
         bad pem nil PEM_read_bio_X509_AUX() failed\n\
         bad key pem nil PEM_read_bio_PrivateKey() failed\n\
         bad der nil d2i_X509_bio() failed\n\
         bad der key nil d2i_PrivateKey_bio() failed\n\
         parse bad nil PEM_read_bio_X509_AUX() failed\n\
         parse bad key nil PEM_read_bio_PrivateKey() failed"
    );
    if sets {
        r.push_str("\nclear true\nset cert true\nset key true");
    }
    r
}

fn client_trusting(cert: &str, host: &str, addr: SocketAddr, tls12: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .resolve(host, addr);
    if tls12 {
        b = b.max_tls_version(reqwest::tls::Version::TLS_1_2);
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_ssl_certificate_chooses_the_certificate_as_nginx_does() {
    let (fallback_cert, fallback_key) =
        certificate(&["plain.test", "fail.test", "exit.test", "nocert.test"]);
    let (lua_cert, lua_key) = certificate(&["lua.test", "sleep.test"]);
    let (ec_cert, ec_key) = certificate(&["ec.test"]);
    let tls_addr = free_addr();
    let pems = format!(
        "CERT = {}\nKEY = {}\nECCERT = {}\nECKEY = {}\nPORT = {}\n",
        yaml_lua(&lua_cert),
        yaml_lua(&lua_key),
        yaml_lua(&ec_cert),
        yaml_lua(&ec_key),
        tls_addr.port()
    );
    let script = format!("{pems}{SSL_SCRIPT}");
    let yaml = format!(
        r#"
shared_dicts: [{{name: log, capacity_bytes: 65536}}]
certificates:
  - {{name: fallback, cert_pem: {}, key_pem: {}}}
applications:
  - name: site
    is_default: true
    domains: [lua.test, sleep.test, ec.test, plain.test, fail.test, exit.test, nocert.test]
    certificate: fallback
    listeners: [{{address: "{tls_addr}", tls: true}}, {{address: "127.0.0.1:0"}}]
    lua_ssl_certificate: {{inline: {}}}
    rules:
      - conditions: [{{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/log]}}]
        actions: [{{lua: {{content: {{inline: "ngx.print(ngx.shared.log:get(ngx.var.arg_n))"}}}}}}]
      - conditions: [{{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/t]}}]
        actions: [{{lua: {{content: {{inline: {}}}}}}}]
"#,
        yaml_str(&fallback_cert),
        yaml_str(&fallback_key),
        yaml_str(&script),
        yaml_str(REPORT),
    );
    let node = edge(&yaml, &[]).await;
    let port = tls_addr.port();
    // Each client trusts only the certificate the script (or the config) should choose.
    for (host, cert, sets) in [
        ("lua.test", &lua_cert, true),
        ("sleep.test", &lua_cert, true),
        ("ec.test", &ec_cert, true),
        ("plain.test", &fallback_cert, false),
    ] {
        let c = client_trusting(cert, host, tls_addr, false);
        let r = c
            .get(format!("https://{host}:{port}/log?n={host}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{host}: {e:?}"));
        assert_eq!(r.text().await.unwrap(), nginx_record(host, sets), "{host}");
    }
    // A Lua error, ngx.exit(ngx.ERROR), and certificates cleared and not replaced: no
    // handshake (nginx sends an alert; the edge closes).
    for host in ["fail.test", "exit.test", "nocert.test"] {
        let c = client_trusting(&fallback_cert, host, tls_addr, false);
        let r = c.get(format!("https://{host}:{port}/t")).send().await;
        assert!(r.is_err(), "{host}: {r:?}");
    }
    // Later phases read the connection: its SNI and version; the certificate is sent.
    for (tls12, ver) in [(false, "772 TLSv1.3"), (true, "771 TLSv1.2")] {
        let c = client_trusting(&lua_cert, "lua.test", tls_addr, tls12);
        let r = c
            .get(format!("https://lua.test:{port}/t"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.text().await.unwrap(),
            format!("name lua.test\nver {ver}\ntruetrue\n")
        );
    }
    // Over plain HTTP there is no TLS to read, as nginx answers.
    let (_, _, body) = get(&client(), &format!("{}/t", base_url(&node))).await;
    assert_eq!(body, "name nil\nver nil nil\ntruenilbad request\n");
}

/// A Lua long string holding `s`.
fn yaml_lua(s: &str) -> String {
    format!("[==[{s}]==]")
}
