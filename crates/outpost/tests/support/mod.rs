//! Running `outpost` processes in tests: killed on drop, ports read back, polls bounded.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed and reaped on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn outpost(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_outpost"));
    c.args(args).env("RUST_LOG", "info");
    c
}

/// Polls `f` every 50 ms for at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A single-node control plane process and a client of its admin API.
pub struct ControlPlaneProc {
    pub proc: Proc,
    pub api_port: u16,
    pub grpc_port: u16,
    pub token: String,
    client: reqwest::Client,
}

impl ControlPlaneProc {
    /// Starts one under `data` and reads the first admin token it prints (bounded: 30 s).
    pub fn start(data: &std::path::Path) -> ControlPlaneProc {
        let (api_port, grpc_port) = (free_port(), free_port());
        let mut child = outpost(&[
            "control-plane",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{api_port}"),
            "--grpc-listen",
            &format!("127.0.0.1:{grpc_port}"),
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
        // The first admin token is printed once on stderr.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("opt_") {
                    let token: String = line[i..]
                        .chars()
                        .take_while(|c| !c.is_whitespace())
                        .collect();
                    let _ = tx.send(token);
                }
            }
        });
        let proc = Proc(child);
        let token = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("admin token printed");
        ControlPlaneProc {
            proc,
            api_port,
            grpc_port,
            token,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.grpc_port)
    }

    /// Calls `/api/v1{path}`: the status and the body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> (u16, String) {
        let mut r = self
            .client
            .request(
                method,
                format!("http://127.0.0.1:{}/api/v1{path}", self.api_port),
            )
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b);
        }
        let r = r.send().await.expect("the admin API answers");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// A join token for `role`.
    pub async fn join_token(&self, role: &str) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/join-tokens",
                Some(format!(r#"{{"role":"{role}","ttlSeconds":600}}"#)),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let made: serde_json::Value = serde_json::from_str(&body).unwrap();
        made["token"].as_str().unwrap().to_string()
    }
}
