//! `outpost dev`, as the README's quick start runs it: it starts the whole system, prints
//! where it listens, and the `curl` and `dig` lines it prints work (a page rule over HTTP and
//! HTTPS, Lua, the cache, purge, the GSLB, the control plane's view of the edge).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;

use support::{Proc, free_port};

async fn text(r: reqwest::RequestBuilder) -> String {
    r.send().await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outpost_dev_serves_what_it_prints() {
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let (http, https, admin, api, grpc, dns) =
        (ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]);
    let data = tempfile::tempdir().unwrap();
    let port_args = [
        ("--http-port", http),
        ("--https-port", https),
        ("--admin-port", admin),
        ("--api-port", api),
        ("--grpc-port", grpc),
        ("--dns-port", dns),
    ];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outpost"));
    cmd.arg("dev").arg("--data").arg(data.path());
    for (flag, port) in port_args {
        cmd.arg(flag).arg(port.to_string());
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _dev = Proc(child);
    // The banner, up to "Ctrl-C" (bounded: it is a couple of dozen lines).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut banner = String::new();
        for line in BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(60)
        {
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("Ctrl-C") {
                break;
            }
        }
        let _ = tx.send(banner);
    });
    let banner = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("outpost dev prints its banner");
    let edge = format!("http://127.0.0.1:{http}");
    for expected in [
        format!("curl -i {edge}/hello"),
        format!("curl -ki https://127.0.0.1:{https}/hello"),
        format!("dig @127.0.0.1 -p {dns} www.demo.outpost.test"),
        "admin token: opt_".to_string(),
        // The edge watches the control plane over mutual TLS.
        format!("config watch    https://127.0.0.1:{grpc}"),
    ] {
        assert!(
            banner.contains(&expected),
            "missing {expected:?} in\n{banner}"
        );
    }
    let token = banner
        .split("admin token: ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap()
        .to_string();

    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let hello = text(c.get(format!("{edge}/hello"))).await;
    assert!(hello.starts_with("hello from the edge"), "{hello}");

    // HTTPS with the self-signed certificate dev makes, HTTP/2 by ALPN.
    let tls = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = tls
        .get(format!("https://127.0.0.1:{https}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert!(r.text().await.unwrap().starts_with("hello from the edge"));

    let lua: serde_json::Value =
        serde_json::from_str(&text(c.get(format!("{edge}/lua"))).await).unwrap();
    assert_eq!(lua["hello"], "from Lua");

    let status = |r: &reqwest::Response| {
        r.headers()
            .get("cache-status")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let first = c.get(format!("{edge}/")).send().await.unwrap();
    let second = c.get(format!("{edge}/")).send().await.unwrap();
    assert!(status(&first).contains("fwd=miss"), "{}", status(&first));
    assert!(status(&second).contains("hit"), "{}", status(&second));
    let metrics = text(c.get(format!("http://127.0.0.1:{admin}/metrics"))).await;
    assert!(
        metrics.contains("outpost_edge_cache_requests_total"),
        "{metrics}"
    );
    let purged = text(
        c.post(format!("http://127.0.0.1:{admin}/cache/purge"))
            .body(r#"{"all": true}"#),
    )
    .await;
    assert!(purged.contains("\"purged\""), "{purged}");
    let third = c.get(format!("{edge}/")).send().await.unwrap();
    assert!(
        status(&third).contains("fwd=miss"),
        "after a purge: {}",
        status(&third)
    );

    // The GSLB answers the demo name with the edge, over real UDP (dig is in `./test`'s
    // Debian set on CI machines; without it this part cannot run).
    if let Ok(out) = Command::new("dig")
        .args([
            "+short",
            "+time=2",
            "+tries=3",
            "@127.0.0.1",
            "-p",
            &dns.to_string(),
            "www.demo.outpost.test",
            "A",
        ])
        .output()
    {
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "127.0.0.1");
    }

    // The edge reported its version to the control plane (the report follows the apply by a
    // moment: bounded to 100 polls, 5 s).
    let mut nodes = String::new();
    for _ in 0..100 {
        nodes = text(
            c.get(format!("http://127.0.0.1:{api}/api/v1/nodes"))
                .bearer_auth(&token),
        )
        .await;
        if nodes.contains("\"appliedVersion\":1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(nodes.contains("\"appliedVersion\":1"), "{nodes}");
}
