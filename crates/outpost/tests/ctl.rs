//! `outpost ctl` against a real control plane: each test starts one in-process on 127.0.0.1
//! port 0 (SQLite in a temp dir, Raft with one voter) and runs the real `outpost` binary's
//! `ctl` command against its admin API, reading what it prints and its exit status.

use std::process::Stdio;
use std::time::Duration;

use outpost_control_plane::pki::NodeRole;
use outpost_control_plane::pki::join::{self, JoinTicket};
use outpost_control_plane::{ControlPlane, Settings};
use outpost_proto::controlplane::v1::config_watch_client::ConfigWatchClient;
use outpost_proto::controlplane::v1::{ApplyReport, NodeKind, WatchRequest};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// The longest any one `outpost ctl` run may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A config with an upstream and an application that uses it.
const GOOD: &str = "\
upstreams:
  - name: api
    peers: [{address: '127.0.0.1:8080'}]
applications:
  - name: www
    domains: [www.example.com]
    listeners: [{address: '127.0.0.1:8081'}]
    upstream: api
";

/// The same, with the upstream's peer moved.
const MOVED: &str = "\
upstreams:
  - name: api
    peers: [{address: '127.0.0.1:9090'}]
applications:
  - name: www
    domains: [www.example.com]
    listeners: [{address: '127.0.0.1:8081'}]
    upstream: api
";

/// Parses, but the application names an upstream that does not exist.
const DANGLING: &str = "\
applications:
  - name: www
    domains: [www.example.com]
    listeners: [{address: '127.0.0.1:8081'}]
    upstream: api-v2
";

struct Cp {
    cp: ControlPlane,
    server: String,
    token: String,
    dir: tempfile::TempDir,
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &Run {
        assert_eq!(
            self.code,
            Some(0),
            "outpost ctl failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    fn failed(&self) -> &Run {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "outpost ctl should have failed (exit {:?})\nstdout:\n{}",
            self.code,
            self.stdout
        );
        assert!(
            !self.stderr.contains("panicked"),
            "a failure must not be a panic:\n{}",
            self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

async fn control_plane() -> Cp {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(Settings::single(
        dir.path().join("cp"),
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    ))
    .await
    .expect("control plane starts");
    let token = cp.bootstrap_token().expect("first admin token").to_string();
    Cp {
        server: format!("http://{}", cp.api_addr()),
        token,
        cp,
        dir,
    }
}

impl Cp {
    /// `outpost ctl ARGS` with this control plane's address and admin token.
    async fn ctl(&self, args: &[&str]) -> Run {
        self.ctl_as(Some(&self.token), None, args).await
    }

    /// `outpost ctl ARGS` with `token` (none at all for `None`) and `stdin` piped in.
    async fn ctl_as(&self, token: Option<&str>, stdin: Option<&str>, args: &[&str]) -> Run {
        run_ctl(&self.server, token, stdin, args).await
    }

    /// Writes `text` to a file named `name` in the test's temp dir and gives its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }
}

async fn run_ctl(server: &str, token: Option<&str>, stdin: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_outpost"));
    cmd.arg("ctl")
        .args(args)
        .env("OUTPOST_SERVER", server)
        .env("RUST_LOG", "warn")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match token {
        Some(t) => cmd.env("OUTPOST_TOKEN", t),
        None => cmd.env_remove("OUTPOST_TOKEN"),
    };
    let mut child = cmd.spawn().expect("outpost ctl starts");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("outpost ctl {args:?} did not finish within {RUN_LIMIT:?}"))
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_yaml_file_shows_in_diff_until_it_is_released() {
    let cp = control_plane().await;
    let nothing = cp.ctl(&["diff"]).await;
    assert_eq!(
        nothing.ok().stdout,
        "no pending changes (nothing released yet)\n"
    );

    let file = cp.file("site.yaml", GOOD);
    let applied = cp.ctl(&["apply", "-f", &file]).await;
    let out = &applied.ok().stdout;
    assert!(
        out.contains("applied: 2 changes to the working config"),
        "{out}"
    );
    assert!(out.contains("  + upstreams/api\n"), "{out}");
    assert!(out.contains("  + applications/www\n"), "{out}");

    let diff = cp.ctl(&["diff"]).await;
    assert_eq!(
        diff.ok().stdout,
        "2 pending changes (nothing released yet):\n  + applications/www\n  + upstreams/api\n"
    );
    let diff = cp.ctl(&["diff", "--json"]).await.ok().json();
    assert_eq!(diff["baseVersion"], Value::Null);
    assert_eq!(diff["changes"].as_array().unwrap().len(), 2);
    assert_eq!(diff["changes"][1]["kind"], "upstreams");
    assert_eq!(diff["changes"][1]["op"], "added");

    // The same file again writes nothing.
    let again = cp.ctl(&["apply", "-f", &file]).await;
    assert!(again.ok().stdout.contains("unchanged"), "{}", again.stdout);

    let release = cp.ctl(&["release", "-m", "first site"]).await;
    assert!(
        release
            .ok()
            .stdout
            .starts_with("released version 1: first site\n"),
        "{}",
        release.stdout
    );
    let releases = cp.ctl(&["releases"]).await;
    let lines: Vec<&str> = releases.ok().stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", releases.stdout);
    assert!(lines[0].starts_with("VERSION"), "{}", releases.stdout);
    assert!(
        lines[1].starts_with("1 ") && lines[1].ends_with("  first site"),
        "{}",
        releases.stdout
    );
    let listed = cp.ctl(&["-o", "json", "releases"]).await.ok().json();
    assert_eq!(listed["releases"][0]["version"], 1);
    assert_eq!(listed["releases"][0]["note"], "first site");

    let after = cp.ctl(&["diff"]).await;
    assert_eq!(after.ok().stdout, "no pending changes since version 1\n");

    // Nothing to release now: the API's 409, said plainly.
    let empty = cp.ctl(&["release", "-m", "again"]).await;
    assert!(
        empty.failed().stderr.contains("409 Conflict"),
        "{}",
        empty.stderr
    );
    cp.cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_reads_json_from_stdin_and_says_what_it_changed() {
    let cp = control_plane().await;
    cp.ctl(&["apply", "-f", &cp.file("site.yaml", GOOD)])
        .await
        .ok();
    cp.ctl(&["release", "-m", "one"]).await.ok();

    let json = r#"{"upstreams": [{"name": "api", "peers": [{"address": "127.0.0.1:9090"}]}],
        "applications": [{"name": "www", "domains": ["www.example.com"],
        "listeners": [{"address": "127.0.0.1:8081"}], "upstream": "api"}]}"#;
    let applied = cp
        .ctl_as(Some(&cp.token), Some(json), &["apply", "-f", "-"])
        .await;
    assert_eq!(
        applied.ok().stdout,
        "stdin applied: 1 change to the working config\n\
         \x20 ~ upstreams/api: peers[0].address\n\
         1 pending change since version 1:\n\
         \x20 ~ upstreams/api: peers[0].address\n\
         release them with: outpost ctl release -m NOTE\n"
    );
    let report = cp
        .ctl(&["apply", "-o", "json", "-f", &cp.file("site.yaml", GOOD)])
        .await
        .ok()
        .json();
    assert_eq!(report["applied"][0]["name"], "api");
    assert_eq!(report["pending"]["changes"], Value::Array(Vec::new()));
    cp.cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_is_refused_with_the_field_path_and_changes_nothing() {
    let cp = control_plane().await;
    cp.ctl(&["apply", "-f", &cp.file("site.yaml", GOOD)])
        .await
        .ok();
    cp.ctl(&["release", "-m", "one"]).await.ok();

    let refused = cp
        .ctl(&["apply", "-f", &cp.file("dangling.yaml", DANGLING)])
        .await;
    let err = &refused.failed().stderr;
    assert!(
        err.contains("422 Unprocessable Entity"),
        "the status is named: {err}"
    );
    assert!(
        err.contains("applications[0].upstream: unknown upstream \"api-v2\""),
        "the field path is named: {err}"
    );
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);

    // A field the schema does not have: the API's 400 names it.
    let typo = "upstreams:\n  - name: api\n    pears: [{address: '127.0.0.1:80'}]\n";
    let refused = cp.ctl(&["apply", "-f", &cp.file("typo.yaml", typo)]).await;
    let err = &refused.failed().stderr;
    assert!(
        err.contains("400 Bad Request") && err.contains("unknown field `pears`"),
        "{err}"
    );

    // Not YAML at all: refused before anything is sent, naming the file.
    let broken = cp
        .ctl(&["apply", "-f", &cp.file("broken.yaml", "upstreams: [\n")])
        .await;
    assert!(
        broken
            .failed()
            .stderr
            .contains("broken.yaml is not valid YAML"),
        "{}",
        broken.stderr
    );

    let diff = cp.ctl(&["diff"]).await;
    assert_eq!(diff.ok().stdout, "no pending changes since version 1\n");
    cp.cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_releases_an_earlier_config_as_a_new_version() {
    let cp = control_plane().await;
    cp.ctl(&["apply", "-f", &cp.file("good.yaml", GOOD)])
        .await
        .ok();
    cp.ctl(&["release", "-m", "one"]).await.ok();
    cp.ctl(&["apply", "-f", &cp.file("moved.yaml", MOVED)])
        .await
        .ok();
    cp.ctl(&["release", "-m", "two"]).await.ok();

    let rollback = cp.ctl(&["rollback", "1", "-m", "back to one"]).await;
    assert_eq!(
        rollback.ok().stdout.lines().next(),
        Some("released version 3 (the config of version 1): back to one")
    );
    let releases = cp.ctl(&["releases", "-o", "json"]).await.ok().json();
    assert_eq!(releases["releases"][0]["version"], 3);
    assert_eq!(releases["releases"][0]["rollbackOf"], 1);
    // The working config is version 1's again: nothing pending, and the first file matches.
    let diff = cp.ctl(&["diff"]).await;
    assert_eq!(diff.ok().stdout, "no pending changes since version 3\n");
    let again = cp.ctl(&["apply", "-f", &cp.file("good.yaml", GOOD)]).await;
    assert!(again.ok().stdout.contains("unchanged"), "{}", again.stdout);

    let missing = cp.ctl(&["rollback", "9"]).await;
    assert!(
        missing
            .failed()
            .stderr
            .contains("404 Not Found: release 9 does not exist"),
        "{}",
        missing.stderr
    );
    cp.cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_release_goes_to_staging_then_is_promoted() {
    let cp = control_plane().await;
    cp.ctl(&["apply", "-f", &cp.file("good.yaml", GOOD)])
        .await
        .ok();
    let staged = cp.ctl(&["release", "-m", "try", "--staged"]).await;
    assert_eq!(
        staged.ok().stdout.lines().next(),
        Some("released version 1 to nodes labelled staging (promote it to send it to all): try")
    );
    let promoted = cp.ctl(&["promote", "1"]).await;
    assert_eq!(
        promoted.ok().stdout.lines().next(),
        Some("promoted version 1 to every node: try")
    );
    let again = cp.ctl(&["promote", "1"]).await;
    assert!(again.failed().stderr.contains("409"), "{}", again.stderr);
    cp.cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_sends_config_and_release_calls_to_that_partition() {
    let cp = control_plane().await;
    let token = cp.cp.bootstrap_token().unwrap().to_string();
    let made = reqwest::Client::new()
        .post(format!("http://{}/api/v1/partitions", cp.cp.api_addr()))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"name":"eu"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    cp.ctl(&[
        "--partition",
        "eu",
        "apply",
        "-f",
        &cp.file("good.yaml", GOOD),
    ])
    .await
    .ok();
    let released = cp
        .ctl(&["--partition", "eu", "release", "-m", "eu one"])
        .await;
    assert!(released.ok().stdout.starts_with("released version 1"));
    // The default partition has none of it.
    let releases = cp.ctl(&["releases", "-o", "json"]).await.ok().json();
    assert_eq!(releases["releases"].as_array().map(Vec::len), Some(0));
    let missing = cp.ctl(&["--partition", "nowhere", "diff"]).await;
    assert!(
        missing.failed().stderr.contains("404"),
        "{}",
        missing.stderr
    );
    cp.cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_lists_each_watching_node_with_its_version_and_last_error() {
    let cp = control_plane().await;
    let empty = cp.ctl(&["nodes"]).await;
    assert_eq!(empty.ok().stdout, "no nodes have connected yet\n");

    cp.ctl(&["apply", "-f", &cp.file("good.yaml", GOOD)])
        .await
        .ok();
    cp.ctl(&["release", "-m", "one"]).await.ok();

    // A node as an edge is one: it joins with a join token, opens a watch over mutual TLS,
    // gets release 1 and reports it applied; then it refuses a version 2.
    let made = reqwest::Client::new()
        .post(format!("{}/api/v1/join-tokens", cp.server))
        .bearer_auth(&cp.token)
        .header("content-type", "application/json")
        .body(r#"{"role":"edge"}"#)
        .send()
        .await
        .expect("join token made");
    let made: Value = serde_json::from_str(&made.text().await.unwrap()).unwrap();
    let grpc_url = format!("https://{}", cp.cp.grpc_addr());
    let ticket = JoinTicket {
        url: grpc_url.clone(),
        token: made["token"].as_str().unwrap().to_string(),
    };
    let identity = join::join(&ticket, NodeRole::Edge, "edge-1", &[], None)
        .await
        .expect("the edge joins");
    let channel = identity
        .endpoint(&grpc_url)
        .unwrap()
        .connect()
        .await
        .expect("gRPC connects over mTLS");
    let mut grpc = ConfigWatchClient::new(channel);
    let mut stream = grpc
        .watch(WatchRequest {
            node_id: "edge-1".into(),
            kind: NodeKind::Edge as i32,
            region: "eu-west".into(),
            ..Default::default()
        })
        .await
        .expect("watch opens")
        .into_inner();
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("release 1 within the bounded wait")
        .expect("stream healthy")
        .expect("stream open");
    grpc.report(ApplyReport {
        node_id: "edge-1".into(),
        version: 1,
        ok: true,
        ..Default::default()
    })
    .await
    .expect("report accepted");
    let mut rejected = ApplyReport {
        node_id: "edge-1".into(),
        version: 2,
        ..Default::default()
    };
    rejected.error = "listen 127.0.0.1:8081: address in use".into();
    grpc.report(rejected).await.expect("report accepted");

    // Both reports were committed before their replies; a few bounded looks all the same.
    let mut table = String::new();
    for _ in 0..20 {
        table = cp.ctl(&["nodes"]).await.ok().stdout.clone();
        if table.contains("edge-1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with("ID ") && lines[0].contains("APPLIED"),
        "{table}"
    );
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &cells[..5],
        ["edge-1", "edge", "eu-west", "1", "yes"],
        "{table}"
    );
    assert!(
        lines[1].ends_with("version 2: listen 127.0.0.1:8081: address in use"),
        "{table}"
    );
    let json = cp.ctl(&["nodes", "-o", "json"]).await.ok().json();
    assert_eq!(json["nodes"][0]["appliedVersion"], 1);
    assert_eq!(json["nodes"][0]["rejectedVersion"], 2);
    drop(stream);
    cp.cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_shows_the_single_node_as_leader() {
    let cp = control_plane().await;
    let status = cp.ctl(&["cluster"]).await;
    let out = &status.ok().stdout;
    assert!(out.starts_with("leader: node 1, term "), "{out}");
    let api = cp.cp.api_addr().to_string();
    let member = out
        .lines()
        .find(|l| l.starts_with("1 "))
        .unwrap_or_else(|| panic!("a row for member 1: {out}"));
    let cells: Vec<&str> = member.split_whitespace().collect();
    assert_eq!(cells[1], "leader", "{out}");
    assert_eq!(cells[2], api, "{out}");
    let json = cp.ctl(&["cluster", "-o", "json"]).await.ok().json();
    assert_eq!(json["leader"], 1);
    assert_eq!(json["members"][0]["apiAddr"], api.as_str());
    cp.cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_token_gets_a_clear_401_and_a_viewer_cannot_release() {
    let cp = control_plane().await;
    let wrong = cp.ctl_as(Some("opt_wrong"), None, &["nodes"]).await;
    assert_eq!(
        wrong.failed().stderr.trim_end(),
        "error: GET /api/v1/nodes: 401 Unauthorized: missing or unknown bearer token"
    );
    assert!(wrong.stdout.is_empty());

    let missing = cp.ctl_as(None, None, &["releases"]).await;
    let err = &missing.failed().stderr;
    assert!(
        err.contains("401 Unauthorized") && err.contains("use --token or set OUTPOST_TOKEN"),
        "{err}"
    );

    // --token wins over the environment.
    let flag = cp
        .ctl_as(Some("opt_wrong"), None, &["--token", &cp.token, "nodes"])
        .await;
    flag.ok();

    // A viewer token reads but may not release: the API's 403, with its reason.
    let http = reqwest::Client::new();
    let made = http
        .post(format!("{}/api/v1/tokens", cp.server))
        .bearer_auth(&cp.token)
        .header("content-type", "application/json")
        .body(r#"{"name":"dashboard","role":"viewer"}"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let made: Value = serde_json::from_str(&made).unwrap();
    let viewer = made["token"].as_str().expect("a viewer token").to_string();
    cp.ctl_as(Some(&viewer), None, &["releases"]).await.ok();
    let refused = cp
        .ctl_as(Some(&viewer), None, &["release", "-m", "nope"])
        .await;
    assert!(
        refused
            .failed()
            .stderr
            .contains("POST /api/v1/releases: 403 Forbidden: this needs the editor role"),
        "{}",
        refused.stderr
    );
    cp.cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_a_clear_error() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("http://127.0.0.1:{port}");
    let run = run_ctl(&server, Some("opt_x"), None, &["--timeout", "5", "nodes"]).await;
    let err = &run.failed().stderr;
    assert!(
        err.starts_with(&format!(
            "error: cannot reach the control plane at {server}"
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_sends_one_selector_and_the_control_plane_records_it() {
    let cp = control_plane().await;
    let url = cp
        .ctl(&["purge", "--url", "http://www.example.com/app.css"])
        .await;
    let out = &url.ok().stdout;
    assert!(
        out.starts_with("purge ")
            && out.ends_with(
                "of url http://www.example.com/app.css accepted: every node will apply it\n"
            ),
        "{out}"
    );
    let soft = cp
        .ctl(&["purge", "--tag", "product-42", "--soft", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        soft["request"],
        serde_json::json!({"tag": "product-42", "soft": true})
    );
    cp.ctl(&["purge", "--all"]).await.ok();

    // The API's own checks still apply: an empty selector is its 400.
    let empty = cp.ctl(&["purge", "--prefix", ""]).await;
    assert!(
        empty
            .failed()
            .stderr
            .contains("POST /api/v1/purges: 400 Bad Request: prefix: must be a non-empty string"),
        "{}",
        empty.stderr
    );

    // Three purges were recorded, newest first, each exactly as asked.
    let listed = reqwest::Client::new()
        .get(format!("{}/api/v1/purges", cp.server))
        .bearer_auth(&cp.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let requests: Vec<&Value> = listed["purges"]
        .as_array()
        .unwrap_or_else(|| panic!("a list of purges: {listed}"))
        .iter()
        .map(|p| &p["request"])
        .collect();
    assert_eq!(
        requests,
        [
            &serde_json::json!({"all": true}),
            &serde_json::json!({"tag": "product-42", "soft": true}),
            &serde_json::json!({"url": "http://www.example.com/app.css"}),
        ]
    );
    cp.cp.shutdown().await;
}
