//! `outpost dev`: the whole system on a laptop, in one process: a single-node control plane
//! (SQLite under `--data`), the built-in demo origin, an edge node fed by the control plane,
//! and the GSLB server with a demo zone. The demo application is created and released through
//! the admin API, as a user would.

use std::net::SocketAddr;
use std::time::Duration;

use outpost_control_plane::pki::NodeRole;
use outpost_control_plane::pki::identity::TlsIdentity;
use outpost_control_plane::pki::join::{self, JoinTicket};
use outpost_edge_node::{EdgeNode, EdgeSettings, demo_origin};
use outpost_proto::{SourceFormat, parse_config};

#[derive(clap::Args)]
pub struct DevArgs {
    /// Port of the edge's HTTP listener.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// Port of the edge's HTTPS listener (a self-signed certificate made at start).
    #[arg(long, default_value_t = 8443)]
    https_port: u16,
    /// Port of the edge's admin listener (metrics, status).
    #[arg(long, default_value_t = 9145)]
    admin_port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Port of the control plane's admin API.
    #[arg(long, default_value_t = 9400)]
    api_port: u16,
    /// Port of the control plane's gRPC listener (edges watch it).
    #[arg(long, default_value_t = 9401)]
    grpc_port: u16,
    /// Port of the GSLB DNS server (UDP and TCP; 5353 is mDNS on many laptops).
    #[arg(long, default_value_t = 8053)]
    dns_port: u16,
    /// Where the control plane and the edge keep their state; reused by the next run.
    #[arg(long, default_value = "./outpost-data")]
    data: std::path::PathBuf,
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
    listeners: [{address: "@LISTEN@"}, {address: "@TLS_LISTEN@", tls: true}]
    certificate: demo
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
certificates: [{name: demo, cert_pem: @CERT@, key_pem: @KEY@}]
# What the GSLB server answers: `www` with every healthy edge the control plane knows (the
# dev edge advertises its address).
gslb:
  zones:
    - name: demo.outpost.test
      soa: {rname: hostmaster.demo.outpost.test}
      ns: [ns1.demo.outpost.test]
      static_records:
        - {name: ns1, type: A, data: [127.0.0.1]}
  registry_health: {kind: PROBE_KIND_TCP, port: @EDGE_PORT@}
  records:
    - {zone: demo.outpost.test, name: www, policy: POLICY_ALL_HEALTHY}
"#;

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let at = |port| SocketAddr::new(args.bind, port);
    // The control plane; the first run creates its database and an admin token, which dev keeps
    // next to it (a laptop convenience) so that later runs can use the API too.
    let cp = outpost_control_plane::ControlPlane::start(outpost_control_plane::Settings::single(
        args.data.join("control-plane"),
        at(args.api_port),
        at(args.grpc_port),
    ))
    .await?;
    let token_file = args.data.join("admin-token");
    let token = match cp.bootstrap_token() {
        Some(t) => {
            std::fs::write(&token_file, t)?;
            t.to_string()
        }
        None => std::fs::read_to_string(&token_file)
            .map(|t| t.trim().to_string())
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", token_file.display()))?,
    };

    // The demo application, through the admin API: the whole config, then a release.
    let origin = demo_origin::serve(at(0)).await?;
    let listen = at(args.http_port);
    let tls_listen = at(args.https_port);
    // A self-signed certificate for the demo names, made fresh at each start.
    let cert = rcgen::generate_simple_self_signed(vec![
        "localhost".to_string(),
        "demo.outpost.test".to_string(),
        args.bind.to_string(),
    ])?;
    let quoted = |pem: String| serde_json::to_string(&pem).unwrap_or_default();
    let yaml = DEMO
        .replace("@ORIGIN@", &origin.to_string())
        .replace("@LISTEN@", &listen.to_string())
        .replace("@TLS_LISTEN@", &tls_listen.to_string())
        .replace("@EDGE_PORT@", &listen.port().to_string())
        .replace("@CERT@", &quoted(cert.cert.pem()))
        .replace("@KEY@", &quoted(cert.signing_key.serialize_pem()));
    let config = parse_config(&yaml, SourceFormat::Yaml)?;
    let api = format!("http://{}/api/v1", cp.api_addr());
    let http = reqwest::Client::builder().no_proxy().build()?;
    let put = http
        .put(format!("{api}/config"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(serde_json::to_string(&config)?)
        .send()
        .await?;
    anyhow::ensure!(
        put.status().is_success(),
        "storing the demo config: {}",
        put.text().await?
    );
    let release = http
        .post(format!("{api}/releases"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"note":"outpost dev demo"}"#)
        .send()
        .await?;
    // 409: nothing changed since the last run's release, which is then the one to wait for.
    let released = release.status();
    let body = release.text().await?;
    anyhow::ensure!(
        released.is_success() || released == reqwest::StatusCode::CONFLICT,
        "releasing the demo config: {body}"
    );
    let latest = if released.is_success() {
        body
    } else {
        http.get(format!("{api}/releases"))
            .bearer_auth(&token)
            .send()
            .await?
            .text()
            .await?
    };
    let latest: serde_json::Value = serde_json::from_str(&latest)?;
    let want_version = latest["version"]
        .as_u64()
        .or_else(|| latest["releases"][0]["version"].as_u64())
        .or_else(|| latest[0]["version"].as_u64())
        .unwrap_or(1);

    // The edge, fed by the control plane like any other: over mutual TLS, with a certificate
    // it got with a join token on the first run (kept in its state directory).
    let state_dir = args.data.join("edge");
    let grpc = cp.grpc_addr();
    let grpc_host = if grpc.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        grpc.ip()
    };
    let grpc_url = format!("https://{}", SocketAddr::new(grpc_host, grpc.port()));
    let joiner = Joiner {
        http: &http,
        api: &api,
        token: &token,
        grpc_url: &grpc_url,
    };
    let identity = joiner
        .identity(NodeRole::Edge, "dev-edge", &state_dir)
        .await?;
    let initial = crate::watch::persisted(&state_dir)?.unwrap_or_default();
    let node = EdgeNode::start(
        EdgeSettings {
            workers: 0,
            admin_listen: Some(at(args.admin_port)),
            access_log: Some("-".into()),
        },
        initial,
    )
    .await?;
    let watch = tokio::spawn(crate::watch::run(
        node.clone(),
        crate::watch::WatchSettings {
            control_planes: vec![grpc_url.clone()],
            tls: identity.client_tls(),
            node_id: "dev-edge".into(),
            region: "local".into(),
            labels: Default::default(),
            state_dir,
        },
        // GSLB servers answer with it.
        vec![if listen.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            listen.ip().to_string()
        }],
    ));
    // Bounded wait for the release to arrive: 200 x 50 ms.
    for _ in 0..200 {
        if node.bound_addr(listen).is_some() && node.version() >= want_version {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let edge = node.bound_addr(listen).unwrap_or(listen);
    let tls_edge = node.bound_addr(tls_listen).unwrap_or(tls_listen);

    // The GSLB server, fed by the control plane like the edge: the release's `gslb` section
    // (the demo zone) with the edges of the control plane's registry.
    let gslb_dir = args.data.join("gslb");
    let gslb_identity = joiner
        .identity(NodeRole::Gslb, "dev-gslb", &gslb_dir)
        .await?;
    let gslb = std::sync::Arc::new(
        outpost_gslb::Gslb::start(
            outpost_gslb::GslbSettings {
                listen: at(args.dns_port),
                admin_listen: None,
            },
            Default::default(),
        )
        .await?,
    );
    let gslb_watch = tokio::spawn(crate::watch::run(
        crate::gslb::FedGslb::new(gslb.clone(), gslb_dir.clone()),
        crate::watch::WatchSettings {
            control_planes: vec![grpc_url.clone()],
            tls: gslb_identity.client_tls(),
            node_id: "dev-gslb".into(),
            region: "local".into(),
            labels: Default::default(),
            state_dir: gslb_dir,
        },
        Vec::new(),
    ));
    // Bounded wait for the GSLB's first release: 200 x 50 ms.
    for _ in 0..200 {
        if gslb.version() >= want_version {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dns = gslb.dns_addr();

    println!("Outpost is running (data in {}).", args.data.display());
    println!(
        "  control plane   http://{}/api/v1   admin token: {token}",
        cp.api_addr()
    );
    println!(
        "  config watch    {grpc_url} (gRPC over mutual TLS, cluster CA in the control plane's data dir)"
    );
    println!("  demo origin     http://{origin}/");
    println!(
        "  edge (HTTP)     http://{edge}/   (config version {})",
        node.version()
    );
    println!("  edge (HTTPS)    https://{tls_edge}/   (self-signed: curl -k)");
    if let Some(a) = node.admin_addr() {
        println!("  edge admin      http://{a}/metrics  http://{a}/status");
        println!("  purge           curl -X POST http://{a}/cache/purge -d '{{\"all\": true}}'");
    }
    println!("  GSLB (DNS)      {dns} (UDP and TCP), zone demo.outpost.test");
    println!();
    println!("Try:");
    println!("  curl -i http://{edge}/");
    println!("  curl -i http://{edge}/hello            # a page rule answers");
    println!("  curl -ki https://{tls_edge}/hello      # the same over TLS, HTTP/2 by ALPN");
    println!("  curl -i http://{edge}/lua              # Lua answers");
    println!("  curl -si http://{edge}/ | grep -i cache-status   # run twice: miss, then hit");
    println!(
        "  dig @{} -p {} www.demo.outpost.test +short",
        dns.ip(),
        dns.port()
    );
    println!(
        "  curl -H 'Authorization: Bearer {token}' http://{}/api/v1/nodes",
        cp.api_addr()
    );
    println!("Ctrl-C stops it.");
    tokio::signal::ctrl_c().await?;
    watch.abort();
    gslb_watch.abort();
    node.shutdown(Duration::from_secs(5)).await;
    cp.shutdown().await;
    drop(gslb);
    Ok(())
}

/// Gets dev's nodes their certificates, as an operator would: a join token from the admin API,
/// then a join (only on the first run: the certificate is kept in the node's state directory).
struct Joiner<'a> {
    http: &'a reqwest::Client,
    api: &'a str,
    token: &'a str,
    grpc_url: &'a str,
}

impl Joiner<'_> {
    async fn identity(
        &self,
        role: NodeRole,
        name: &str,
        state_dir: &std::path::Path,
    ) -> anyhow::Result<TlsIdentity> {
        let tls_dir = state_dir.join("tls");
        if let Some(id) = TlsIdentity::load(&tls_dir)? {
            return Ok(id);
        }
        let made = self
            .http
            .post(format!("{}/join-tokens", self.api))
            .bearer_auth(self.token)
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"role":"{}","ttlSeconds":600}}"#,
                role.as_str()
            ))
            .send()
            .await?;
        anyhow::ensure!(
            made.status().is_success(),
            "making a join token: {}",
            made.text().await?
        );
        let made: serde_json::Value = serde_json::from_str(&made.text().await?)?;
        let ticket = JoinTicket {
            url: self.grpc_url.to_string(),
            token: made["token"].as_str().unwrap_or_default().to_string(),
        };
        Ok(join::load_or_join(&tls_dir, Some(&ticket), role, name, &[], None).await?)
    }
}
