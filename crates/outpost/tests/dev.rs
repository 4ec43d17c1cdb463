//! `outpost dev`, as the README's quick start runs it: it starts, prints where it listens, and
//! the `curl` lines it prints work (a page rule, Lua, the cache, metrics, purge).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outpost_dev_serves_what_it_prints() {
    let (http, admin) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args([
            "dev",
            "--http-port",
            &http.to_string(),
            "--admin-port",
            &admin.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _dev = Proc(child);
    // Read the banner up to "Ctrl-C" (bounded: the banner is a dozen lines).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut banner = String::new();
        for line in BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(40)
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
    assert!(banner.contains(&edge), "{banner}");
    assert!(
        banner.contains(&format!("curl -i {edge}/hello")),
        "{banner}"
    );

    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let hello = c
        .get(format!("{edge}/hello"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(hello.starts_with("hello from the edge"), "{hello}");

    let lua: serde_json::Value = serde_json::from_str(
        &c.get(format!("{edge}/lua"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
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

    let metrics = c
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("outpost_edge_cache_requests_total"),
        "{metrics}"
    );
    let purged = c
        .post(format!("http://127.0.0.1:{admin}/cache/purge"))
        .body(r#"{"all": true}"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(purged.contains("\"purged\""), "{purged}");
    let third = c.get(format!("{edge}/")).send().await.unwrap();
    assert!(
        status(&third).contains("fwd=miss"),
        "after a purge: {}",
        status(&third)
    );
}
