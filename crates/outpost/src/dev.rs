//! `outpost dev`: the system on a laptop. At this stage: the built-in demo origin and an edge
//! node in front of it with a demo application (a page rule and a rate limit).

use std::net::SocketAddr;
use std::time::Duration;

use outpost_edge_node::{EdgeNode, EdgeSettings, demo_origin};
use outpost_proto::{SourceFormat, parse_config};

#[derive(clap::Args)]
pub struct DevArgs {
    /// Port of the edge's HTTP listener.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// Port of the edge's admin listener (metrics, status).
    #[arg(long, default_value_t = 9145)]
    admin_port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
}

const DEMO: &str = r#"
version: 1
upstreams:
  - name: demo-origin
    peers: [{address: "@ORIGIN@"}]
    health_check: {path: /health, interval_ms: 2000}
applications:
  - name: demo
    domains: [localhost, demo.outpost.test]
    is_default: true
    listeners: [{address: "@LISTEN@"}]
    upstream: demo-origin
    rules:
      - name: tag every response
        actions:
          - {set_response_header: {name: X-Served-By, value: "outpost ($request_id)"}}
      - name: a friendly rate limit on the API
        conditions: [{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/api/]}]
        actions:
          - {rate_limit: {key: $remote_addr, requests_per_second: 20, burst: 40, delay: 20, status: 429}}
      - name: answered by the edge itself
        conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/hello]}]
        actions:
          - {respond: {status: 200, body: "hello from the edge, $remote_addr\n"}}
      - name: answered by Lua, counting visits in a shared dict
        conditions: [{subject: SUBJECT_URI, operator: OPERATOR_EQUALS, values: [/lua]}]
        actions:
          - lua:
              content:
                inline: |
                  local cjson = require "cjson"
                  local visits = ngx.shared.demo:incr("visits", 1, 0)
                  ngx.header.content_type = "application/json"
                  ngx.say(cjson.encode({hello = "from Lua", visits = visits, worker = ngx.worker.id()}))
    # Everything else the origin marks cacheable is cached (see the Cache-Status header).
    cache_rules: [{}]
shared_dicts: [{name: demo, capacity_bytes: 1048576}]
"#;

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let origin = demo_origin::serve(SocketAddr::new(args.bind, 0)).await?;
    let listen = SocketAddr::new(args.bind, args.http_port);
    let yaml = DEMO
        .replace("@ORIGIN@", &origin.to_string())
        .replace("@LISTEN@", &listen.to_string());
    let config = parse_config(&yaml, SourceFormat::Yaml)?;
    let settings = EdgeSettings {
        workers: 0,
        admin_listen: Some(SocketAddr::new(args.bind, args.admin_port)),
        access_log: Some("-".into()),
    };
    let node = EdgeNode::start(settings, config).await?;
    let edge = node.bound_addr(listen).unwrap_or(listen);
    println!("Outpost is running.");
    println!("  demo origin   http://{origin}/");
    println!("  edge (HTTP)   http://{edge}/");
    if let Some(a) = node.admin_addr() {
        println!("  edge admin    http://{a}/metrics  http://{a}/status");
        println!("  purge         curl -X POST http://{a}/cache/purge -d '{{\"all\": true}}'");
    }
    println!();
    println!("Try:");
    println!("  curl -i http://{edge}/");
    println!("  curl -i http://{edge}/hello            # a page rule answers");
    println!("  curl -i http://{edge}/lua              # Lua answers");
    println!("  curl -si http://{edge}/ | grep -i cache-status   # run twice: miss, then hit");
    println!("Ctrl-C stops it.");
    tokio::signal::ctrl_c().await?;
    node.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
