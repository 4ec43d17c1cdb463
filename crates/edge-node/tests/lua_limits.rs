//! The config's `lua_runtime` on a real edge: execution budgets, the memory limit and the VM
//! replaced after it, the sandbox, and validation. One worker, so that "the next request"
//! runs on the VM the previous one stopped on. Every script that could run forever runs
//! under a budget; no assertion depends on how long anything takes.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use outpost_edge_node::{EdgeNode, EdgeSettings};
use outpost_proto::{SourceFormat, parse_config};
use support::*;

/// Every log line of this test binary (its tests run at once: filter by application name).
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_writer(|| Capture)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .try_init();
    });
}

/// Log lines that contain every one of `words`.
fn log_lines(words: &[&str]) -> Vec<String> {
    let logs = LOGS.lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_string)
        .collect()
}

/// An edge with one worker serving `yaml` (`@NAME@` placeholders filled in).
async fn one_worker_edge(yaml: &str, vars: &[(&str, String)]) -> Arc<EdgeNode> {
    capture_logs();
    let cfg = parse_config(&fill(yaml, vars), SourceFormat::Yaml).expect("test config parses");
    EdgeNode::start(
        EdgeSettings {
            workers: 1,
            ..EdgeSettings::default()
        },
        cfg,
    )
    .await
    .expect("edge starts")
}

async fn get(base: &str, path: &str) -> (u16, String) {
    let r = client().get(format!("{base}{path}")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of the metric line that starts with `name` (labels included), 0 if absent.
fn metric(node: &EdgeNode, name: &str) -> f64 {
    node.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

const STOPPED_BY_INSTRUCTIONS: &str =
    "outpost_edge_lua_requests_stopped_total{limit=\"instructions\"}";
const STOPPED_BY_CPU: &str = "outpost_edge_lua_requests_stopped_total{limit=\"cpu_time\"}";
const STOPPED_BY_MEMORY: &str = "outpost_edge_lua_requests_stopped_total{limit=\"memory\"}";
const RECYCLES: &str = "outpost_edge_lua_vm_recycles_total";

/// `@APP@` with routes for `/spin` (never ends), `/bomb` (allocates far past any limit,
/// bounded), `/hello`, `/vms` (how many VMs ran `lua_init_worker`), a log phase on every
/// request, and `@RUNTIME@` as the `lua_runtime` section.
const LIMITED: &str = r#"
lua_runtime: @RUNTIME@
shared_dicts: [{name: stats, capacity_bytes: 65536}]
lua_init_worker: {inline: "ngx.shared.stats:incr('vms', 1, 0)"}
applications:
  - name: @APP@
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    rules:
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/spin]}]
        actions: [{lua: {content: {inline: "while true do end"}}}]
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/bomb]}]
        actions:
          - lua:
              content:
                inline: |
                  local t = {}
                  for i = 1, 100000000 do t[i] = string.rep("x", 1000) .. i end
                  ngx.say(#t)
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/hello]}]
        actions: [{lua: {content: {inline: "ngx.say('hello')"}}}]
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/vms]}]
        actions: [{lua: {content: {inline: "ngx.say(ngx.shared.stats:get('vms'))"}}}]
    lua:
      log: {inline: "ngx.shared.stats:incr('logged', 1, 0)"}
"#;

fn limited(app: &str, runtime: &str) -> String {
    fill(
        LIMITED,
        &[("APP", app.to_string()), ("RUNTIME", runtime.to_string())],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_answers_500_under_an_instruction_budget_and_the_worker_serves_on() {
    let node = one_worker_edge(
        &limited("spin-instr", "{instructions_per_request: 1000000}"),
        &[],
    )
    .await;
    let base = base_url(&node);
    assert_eq!(get(&base, "/spin").await.0, 500);
    assert_eq!(get(&base, "/hello").await, (200, "hello\n".into()));
    assert_eq!(metric(&node, STOPPED_BY_INSTRUCTIONS), 1.0);
    assert_eq!(metric(&node, STOPPED_BY_CPU), 0.0);
    // One error line for the stopped request, although its log phase met the spent budget
    // too; and no second "Lua error" line from the edge.
    assert_eq!(
        log_lines(&["Lua request stopped by a limit", "chunk=\"spin-instr/"]).len(),
        1
    );
    assert!(log_lines(&["Lua error", "spin-instr"]).is_empty());
    assert_eq!(
        metric(&node, RECYCLES),
        0.0,
        "a budget does not replace the VM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_answers_500_under_a_cpu_budget() {
    let node = one_worker_edge(&limited("spin-cpu", "{cpu_ms_per_request: 50}"), &[]).await;
    let base = base_url(&node);
    assert_eq!(get(&base, "/spin").await.0, 500);
    assert_eq!(get(&base, "/hello").await, (200, "hello\n".into()));
    assert_eq!(metric(&node, STOPPED_BY_CPU), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allocation_bomb_answers_500_and_the_next_request_gets_a_fresh_vm() {
    let node = one_worker_edge(&limited("bomb", "{memory_limit_bytes: 16777216}"), &[]).await;
    let base = base_url(&node);
    assert_eq!(get(&base, "/vms").await, (200, "1\n".into()));
    assert_eq!(get(&base, "/bomb").await.0, 500);
    assert_eq!(metric(&node, STOPPED_BY_MEMORY), 1.0);
    // The next request builds a new VM, which runs lua_init_worker as any new VM does.
    assert_eq!(get(&base, "/vms").await, (200, "2\n".into()));
    assert_eq!(metric(&node, RECYCLES), 1.0);
    for _ in 0..3 {
        assert_eq!(get(&base, "/hello").await, (200, "hello\n".into()));
    }
    assert_eq!(
        get(&base, "/vms").await,
        (200, "2\n".into()),
        "replaced once"
    );
    assert_eq!(
        log_lines(&["Lua request stopped by a limit", "chunk=\"bomb/"]).len(),
        1
    );
}

/// `/wait` keeps its request in flight in `access` until the test writes to its socket;
/// `content` then says whether it runs on the VM `access` ran on.
const IN_FLIGHT: &str = r#"
lua_runtime: {memory_limit_bytes: 16777216}
applications:
  - name: inflight
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    rules:
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/wait]}]
        actions:
          - lua:
              access:
                inline: |
                  -- The address of a table of this VM: another VM's is another.
                  ngx.ctx.vm = tostring(string)
                  local sock = ngx.socket.tcp()
                  sock:settimeout(20000)
                  assert(sock:connect("127.0.0.1", @PORT@))
                  assert(sock:receive("*l"))
              content: {inline: "ngx.say(ngx.ctx.vm == tostring(string) and 'same VM' or 'another VM')"}
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/bomb]}]
        actions:
          - lua:
              content:
                inline: |
                  local t = {}
                  for i = 1, 100000000 do t[i] = string.rep("x", 1000) .. i end
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/hello]}]
        actions: [{lua: {content: {inline: "ngx.say('hello')"}}}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_on_the_vm_that_was_replaced() {
    let gate = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = gate.local_addr().unwrap().port().to_string();
    let node = one_worker_edge(IN_FLIGHT, &[("PORT", port)]).await;
    let base = base_url(&node);
    let waiting = tokio::spawn({
        let base = base.clone();
        async move { get(&base, "/wait").await }
    });
    // The script connected: its request is in flight on the first VM.
    let (mut sock, _) = tokio::time::timeout(Duration::from_secs(20), gate.accept())
        .await
        .expect("the script connects")
        .unwrap();
    assert_eq!(get(&base, "/bomb").await.0, 500);
    assert_eq!(get(&base, "/hello").await, (200, "hello\n".into()));
    assert_eq!(metric(&node, RECYCLES), 1.0);
    tokio::io::AsyncWriteExt::write_all(&mut sock, b"go\n")
        .await
        .unwrap();
    assert_eq!(waiting.await.unwrap(), (200, "same VM\n".into()));
}

/// `@DIR@` is the only path sandboxed scripts may open.
const SANDBOXED: &str = r#"
lua_runtime: {sandbox: true, sandbox_allowed_paths: ["@DIR@"]}
applications:
  - name: sandboxed
    is_default: true
    listeners: [{address: "127.0.0.1:0"}]
    rules:
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/exec]}]
        actions: [{lua: {content: {inline: "os.execute('true') ngx.say('ran')"}}}]
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/caught]}]
        actions: [{lua: {content: {inline: "ngx.say(select(2, pcall(os.execute, 'true')))"}}}]
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/read]}]
        actions:
          - lua:
              content:
                inline: |
                  local f = assert(io.open("@DIR@/note.txt"))
                  ngx.print(f:read("*a"))
                  f:close()
      - conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/outside]}]
        actions: [{lua: {content: {inline: "ngx.say(select(2, pcall(io.open, '/etc/hostname')))"}}}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_refuses_os_execute_and_opens_only_allowed_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("note.txt"), "allowed\n").unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let node = one_worker_edge(SANDBOXED, &[("DIR", dir.display().to_string())]).await;
    let base = base_url(&node);
    // Uncaught: a Lua error like any other, logged by the edge with its message.
    assert_eq!(get(&base, "/exec").await.0, 500);
    assert_eq!(
        log_lines(&[
            "Lua error",
            "sandboxed",
            "os.execute is disabled in the sandbox"
        ])
        .len(),
        1
    );
    // An ordinary error: pcall sees it.
    assert_eq!(
        get(&base, "/caught").await,
        (200, "os.execute is disabled in the sandbox\n".into())
    );
    assert_eq!(get(&base, "/read").await, (200, "allowed\n".into()));
    let (status, body) = get(&base, "/outside").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("outside the sandbox's allowed paths"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_limits_starts_new_vms_that_enforce_the_new_ones() {
    let node = one_worker_edge(
        &limited("reload", "{instructions_per_request: 1000000}"),
        &[],
    )
    .await;
    let base = base_url(&node);
    assert_eq!(get(&base, "/vms").await, (200, "1\n".into()));
    let cfg = parse_config(
        &limited("reload", "{cpu_ms_per_request: 50}"),
        SourceFormat::Yaml,
    )
    .unwrap();
    node.apply(cfg).await.unwrap();
    assert_eq!(get(&base, "/vms").await, (200, "2\n".into()));
    assert_eq!(get(&base, "/spin").await.0, 500);
    assert_eq!(metric(&node, STOPPED_BY_CPU), 1.0);
    assert_eq!(metric(&node, STOPPED_BY_INSTRUCTIONS), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_limits_are_refused_with_their_field_paths() {
    let node = one_worker_edge(&limited("invalid", "{}"), &[]).await;
    let bad = limited(
        "invalid",
        "{memory_limit_bytes: 1024, cpu_ms_per_request: 600000, \
         sandbox_allowed_paths: [relative]}",
    );
    let cfg = parse_config(&bad, SourceFormat::Yaml).unwrap();
    let err = node.apply(cfg.clone()).await.unwrap_err().to_string();
    for field in [
        "lua_runtime.memory_limit_bytes",
        "lua_runtime.cpu_ms_per_request",
        "lua_runtime.sandbox_allowed_paths:",
        "lua_runtime.sandbox_allowed_paths[0]",
    ] {
        assert!(err.contains(field), "{field} in {err}");
    }
    // The old config keeps serving, and an edge does not start with it.
    assert_eq!(get(&base_url(&node), "/hello").await.0, 200);
    assert!(EdgeNode::start(EdgeSettings::default(), cfg).await.is_err());
}
