//! An edge fed by a real control plane (two `outpost` processes): a release reaches the edge
//! and changes what clients see; the edge reports what it applied; a release it cannot apply is
//! refused, reported, and the previous config keeps serving; with the control plane gone, a
//! restarted edge serves its persisted config. The edge joins with a join token and watches over
//! mutual TLS.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{ControlPlaneProc, Proc, eventually, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_reach_the_edge_failures_are_reported_and_the_edge_outlives_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlaneProc::start(&dir.path().join("cp"));
    let (api, grpc, token) = (cp.api_port, cp.grpc_port, cp.token.clone());
    let base = format!("http://127.0.0.1:{api}/api/v1");
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let call = |method: reqwest::Method, path: &str, body: Option<String>| {
        let mut r = c
            .request(method, format!("{base}{path}"))
            .bearer_auth(&token);
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b);
        }
        r.send()
    };

    // A site answered by the edge itself, released.
    let site = free_port();
    let app = |path: &str| {
        format!(
            r#"{{"isDefault":true,"listeners":[{{"address":"127.0.0.1:{site}"}}],"rules":[{{"actions":[{{"respond":{{"status":200,"body":"{path}"}}}}]}}]}}"#
        )
    };
    let r = call(
        reqwest::Method::PUT,
        "/config/applications/site",
        Some(app("v1")),
    )
    .await
    .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r = call(
        reqwest::Method::POST,
        "/releases",
        Some(r#"{"note":"first"}"#.into()),
    )
    .await
    .unwrap();
    assert!(r.status().is_success());

    // The edge, fed by the control plane over mutual TLS: a join token gets it a certificate.
    let made = call(
        reqwest::Method::POST,
        "/join-tokens",
        Some(r#"{"role":"edge","ttlSeconds":600}"#.into()),
    )
    .await
    .unwrap();
    assert_eq!(made.status().as_u16(), 201);
    let made: serde_json::Value = serde_json::from_str(&made.text().await.unwrap()).unwrap();
    let join_token = made["token"].as_str().unwrap().to_string();
    let state = dir.path().join("edge-state");
    let edge_args = [
        "edge",
        "--control-plane",
        &format!("https://127.0.0.1:{grpc}"),
        "--node-id",
        "edge-1",
        "--state-dir",
        state.to_str().unwrap(),
        "--access-log",
        "off",
        "--workers",
        "1",
    ];
    let admin = free_port();
    let mut args: Vec<String> = edge_args.iter().map(|s| s.to_string()).collect();
    args.extend(["--admin".into(), format!("127.0.0.1:{admin}")]);
    let spawn_edge = |args: &[String]| {
        Proc(
            Command::new(env!("CARGO_BIN_EXE_outpost"))
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut first_args = args.clone();
    first_args.extend(["--join-token".into(), join_token]);
    let edge = spawn_edge(&first_args);
    let site_url = format!("http://127.0.0.1:{site}/");
    let body_is = |want: &'static str| {
        let (c, url) = (c.clone(), site_url.clone());
        move || {
            let (c, url) = (c.clone(), url.clone());
            async move {
                match c.get(&url).send().await {
                    Ok(r) => r.text().await.map(|t| t == want).unwrap_or(false),
                    Err(_) => false,
                }
            }
        }
    };
    assert!(
        eventually(Duration::from_secs(20), body_is("v1")).await,
        "release 1 served by the edge"
    );

    // A second release changes what clients see.
    call(
        reqwest::Method::PUT,
        "/config/applications/site",
        Some(app("v2")),
    )
    .await
    .unwrap();
    call(
        reqwest::Method::POST,
        "/releases",
        Some(r#"{"note":"second"}"#.into()),
    )
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(20), body_is("v2")).await,
        "release 2 served"
    );
    let applied = eventually(Duration::from_secs(10), || async {
        let text = call(reqwest::Method::GET, "/nodes", None)
            .await
            .unwrap()
            .text()
            .await
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        v["nodes"][0]["appliedVersion"] == 2
    })
    .await;
    assert!(applied, "the edge reported version 2");

    // A release this edge cannot apply (its listen port is taken here): refused, reported,
    // and version 2 keeps serving.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let bad = format!(
        r#"{{"domains":["other.test"],"listeners":[{{"address":"127.0.0.1:{taken_port}"}}],"rules":[{{"actions":[{{"respond":{{"status":200,"body":"x"}}}}]}}]}}"#
    );
    call(
        reqwest::Method::PUT,
        "/config/applications/other",
        Some(bad),
    )
    .await
    .unwrap();
    call(
        reqwest::Method::POST,
        "/releases",
        Some(r#"{"note":"bad"}"#.into()),
    )
    .await
    .unwrap();
    let reported = eventually(Duration::from_secs(20), || async {
        let text = call(reqwest::Method::GET, "/nodes", None)
            .await
            .unwrap()
            .text()
            .await
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        v["nodes"][0]["rejectedVersion"] == 3
            && v["nodes"][0]["lastError"]
                .as_str()
                .is_some_and(|e| e.contains(&taken_port.to_string()))
    })
    .await;
    assert!(
        reported,
        "the refusal and its reason are visible in the API"
    );
    assert!(body_is("v2")().await, "the previous config keeps serving");

    // The control plane goes away; the edge keeps serving, and a restarted edge (with the
    // certificate it kept, no join token) serves its persisted config without it.
    assert!(state.join("tls/node.crt").exists());
    drop(cp);
    assert!(body_is("v2")().await);
    drop(edge);
    let _edge = spawn_edge(&args);
    let t0 = Instant::now();
    let served = eventually(Duration::from_secs(20), body_is("v2")).await;
    let last = c.get(&site_url).send().await.map(|r| r.status().as_u16());
    eprintln!(
        "restarted edge served in {:?} (last answer {last:?})",
        t0.elapsed()
    );
    assert!(
        served,
        "restarted edge serves the persisted version 2 with no control plane"
    );
    drop(taken);
}
