//! TLS between nodes and joining with a join token, on real sockets: who may call what, why a
//! join is refused, an edge that joined getting releases over mutual TLS, and a control-plane
//! node keeping its certificate across a restart.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use outpost_control_plane::pki::identity::TlsIdentity;
use outpost_control_plane::pki::join::{self, JoinError, JoinTicket};
use outpost_control_plane::pki::{JoinRefusal, NodeRole};
use outpost_control_plane::{ClusterInit, ControlPlane, Settings, StartError};
use outpost_proto::controlplane::v1::config_watch_client::ConfigWatchClient;
use outpost_proto::controlplane::v1::raft_client::RaftClient;
use outpost_proto::controlplane::v1::watch_event::Event;
use outpost_proto::controlplane::v1::{NodeKind, RaftPayload, WatchEvent, WatchRequest};
use support::cluster::Cluster;
use support::{Api, UPSTREAM_API, edge_identity, fast_raft, grpc_url, join_token, start};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const WAIT: Duration = Duration::from_secs(10);

fn hello(node_id: &str) -> WatchRequest {
    WatchRequest {
        node_id: node_id.into(),
        kind: NodeKind::Edge as i32,
        region: "test".into(),
        labels: Default::default(),
        have_version: 0,
        addresses: vec![],
        ..Default::default()
    }
}

/// The version the next message brings, a full release or a delta.
async fn next_version(stream: &mut tonic::Streaming<WatchEvent>) -> u64 {
    let event = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a message within the bounded wait")
        .expect("stream healthy")
        .expect("stream open")
        .event;
    match event {
        Some(Event::Release(r)) => r.version,
        Some(Event::Delta(d)) => d.version,
        other => panic!("expected a release, got {other:?}"),
    }
}

/// A channel that verifies the server against the cluster CA but presents no certificate.
async fn anonymous(cp: &ControlPlane, ca_pem: &str) -> Channel {
    Endpoint::from_shared(grpc_url(cp))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)))
        .unwrap()
        .connect()
        .await
        .expect("TLS without a client certificate is accepted at the handshake")
}

async fn channel(id: &TlsIdentity, cp: &ControlPlane) -> Channel {
    id.endpoint(&grpc_url(cp)).unwrap().connect().await.unwrap()
}

fn ticket(cp: &ControlPlane, token: &str) -> JoinTicket {
    JoinTicket {
        url: grpc_url(cp),
        token: token.to_string(),
    }
}

fn refused_with(result: Result<TlsIdentity, JoinError>, code: tonic::Code, words: &str) {
    match result {
        Err(JoinError::Refused {
            code: got, message, ..
        }) => {
            assert_eq!(got, code, "{message}");
            assert!(message.contains(words), "{words:?} not in {message:?}");
        }
        other => panic!("expected a refusal naming {words:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn raft_and_watch_calls_without_a_cluster_certificate_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let token = cp.bootstrap_token().unwrap().to_string();
    let edge = edge_identity(&cp, &token, "edge-a").await;

    // TLS without a client certificate: the handshake succeeds, the services refuse.
    let anon = anonymous(&cp, &edge.ca_pem).await;
    let raft = RaftClient::new(anon.clone())
        .vote(RaftPayload {
            payload: b"{}".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(raft.code(), tonic::Code::Unauthenticated, "{raft:?}");
    assert!(raft.message().contains("client certificate"), "{raft:?}");
    let watch = ConfigWatchClient::new(anon)
        .watch(hello("edge-a"))
        .await
        .unwrap_err();
    assert_eq!(watch.code(), tonic::Code::Unauthenticated, "{watch:?}");

    // An edge certificate may watch as its own node only, and may not speak Raft.
    let ch = channel(&edge, &cp).await;
    let raft = RaftClient::new(ch.clone())
        .append_entries(RaftPayload {
            payload: b"{}".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(raft.code(), tonic::Code::PermissionDenied, "{raft:?}");
    assert!(raft.message().contains("edge"), "{raft:?}");
    let other = ConfigWatchClient::new(ch.clone())
        .watch(hello("edge-b"))
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::PermissionDenied, "{other:?}");
    assert!(other.message().contains("edge-a"), "{other:?}");
    ConfigWatchClient::new(ch)
        .watch(hello("edge-a"))
        .await
        .expect("an edge watches as itself");

    // Plain text gets nowhere.
    let plain = Endpoint::from_shared(format!("http://{}", cp.grpc_addr()))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        assert!(
            ConfigWatchClient::new(ch)
                .watch(hello("edge-a"))
                .await
                .is_err()
        );
    }
    cp.shutdown().await;
}

#[tokio::test]
async fn joins_with_a_wrong_secret_an_expired_token_or_another_role_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = Api::new(&cp, cp.bootstrap_token().unwrap());
    let edge_token = join_token(&api, "edge", 600).await;

    // A wrong secret (the right cluster's pin).
    let (head, secret) = edge_token.rsplit_once('.').unwrap();
    let flipped: String = secret
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    let wrong = format!("{head}.{flipped}");
    let result = join::join(&ticket(&cp, &wrong), NodeRole::Edge, "e1", &[], None).await;
    refused_with(result, tonic::Code::Unauthenticated, "unknown");

    // An edge token used by a control-plane node.
    let result = join::join(
        &ticket(&cp, &edge_token),
        NodeRole::ControlPlane,
        "cp-9",
        &[],
        None,
    )
    .await;
    refused_with(
        result,
        tonic::Code::PermissionDenied,
        "for role edge, not control-plane",
    );

    // Not a token at all: refused before anything is sent.
    let result = join::join(&ticket(&cp, "opt_123"), NodeRole::Edge, "e1", &[], None).await;
    assert!(
        matches!(result, Err(JoinError::Token(JoinRefusal::Malformed))),
        "{result:?}"
    );

    // An expired token: a one-second token is refused as expired once its second is over.
    let short = join_token(&api, "edge", 1).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let result = join::join(&ticket(&cp, &short), NodeRole::Edge, "e2", &[], None).await;
        match result {
            Ok(_) => {
                assert!(Instant::now() < deadline, "the token never expired");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => {
                refused_with(other, tonic::Code::Unauthenticated, "expired");
                break;
            }
        }
    }

    // The valid token still works.
    let id = join::join(&ticket(&cp, &edge_token), NodeRole::Edge, "e3", &[], None)
        .await
        .expect("a valid token joins");
    assert_eq!(id.subject(), Some((NodeRole::Edge, "e3".to_string())));
    let zero = api
        .post("/api/v1/join-tokens", r#"{"role":"edge","ttlSeconds":0}"#)
        .await;
    assert_eq!(zero.status, 422, "{}", zero.text);
    let role = api.post("/api/v1/join-tokens", r#"{"role":"admin"}"#).await;
    assert_eq!(role.status, 400, "{}", role.text);
    // Only admins make join tokens.
    let editor = api
        .post("/api/v1/tokens", r#"{"name":"ed","role":"editor"}"#)
        .await
        .json();
    let as_editor = Api::new(&cp, editor["token"].as_str().unwrap())
        .post("/api/v1/join-tokens", r#"{"role":"edge"}"#)
        .await;
    assert_eq!(as_editor.status, 403, "{}", as_editor.text);
    cp.shutdown().await;
}

#[tokio::test]
async fn a_join_token_pinning_another_ca_is_refused_before_the_token_is_sent() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(dir_a.path()).await;
    let b = start(dir_b.path()).await;
    // A token of cluster B presented to cluster A: the CA A shows does not match B's pin.
    let token_b = join_token(&Api::new(&b, b.bootstrap_token().unwrap()), "edge", 600).await;
    let result = join::join(&ticket(&a, &token_b), NodeRole::Edge, "e1", &[], None).await;
    match result {
        Err(e @ JoinError::PinMismatch { .. }) => {
            assert!(e.to_string().contains("refusing to trust it"), "{e}")
        }
        other => panic!("expected a pin mismatch, got {other:?}"),
    }
    // A's own token with its pin altered: the same.
    let token_a = join_token(&Api::new(&a, a.bootstrap_token().unwrap()), "edge", 600).await;
    let mut parts: Vec<String> = token_a.split('.').map(String::from).collect();
    parts[1] = "0".repeat(64);
    let result = join::join(
        &ticket(&a, &parts.join(".")),
        NodeRole::Edge,
        "e1",
        &[],
        None,
    )
    .await;
    assert!(
        matches!(result, Err(JoinError::PinMismatch { .. })),
        "{result:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_edge_that_joined_with_a_token_receives_releases_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let api = Api::new(&cp, cp.bootstrap_token().unwrap());
    api.put("/api/v1/config/upstreams/api", UPSTREAM_API).await;
    assert_eq!(
        api.post("/api/v1/releases", r#"{"note":"one"}"#)
            .await
            .status,
        201
    );

    // First start: the token gets a certificate, kept in the state directory.
    let state = dir.path().join("edge-state/tls");
    let t = ticket(&cp, &join_token(&api, "edge", 600).await);
    let id = join::load_or_join(&state, Some(&t), NodeRole::Edge, "edge-x", &[], None)
        .await
        .unwrap();
    let mode = std::fs::metadata(state.join("node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key is private");
    // Later starts reuse it without a token.
    let again = join::load_or_join(&state, None, NodeRole::Edge, "edge-x", &[], None)
        .await
        .unwrap();
    assert_eq!(again.cert_pem, id.cert_pem);

    let mut client = ConfigWatchClient::new(channel(&again, &cp).await);
    let mut stream = client.watch(hello("edge-x")).await.unwrap().into_inner();
    assert_eq!(next_version(&mut stream).await, 1);
    api.put(
        "/api/v1/config/shared_dicts/d",
        r#"{"capacityBytes": 8192}"#,
    )
    .await;
    api.post("/api/v1/releases", r#"{"note":"two"}"#).await;
    assert_eq!(next_version(&mut stream).await, 2);
    drop(stream);
    cp.shutdown().await;
}

#[tokio::test]
async fn a_node_without_a_certificate_or_a_join_token_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::single(
        dir.path().to_path_buf(),
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    );
    settings.node_id = 2;
    settings.init = ClusterInit::Join;
    match ControlPlane::start(settings).await {
        Err(e @ StartError::Join(JoinError::NoIdentity { .. })) => {
            assert!(e.to_string().contains("join token"), "{e}")
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("started without a certificate"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_control_plane_node_keeps_its_certificate_and_rejoins() {
    let mut c = Cluster::start(3, fast_raft(1000)).await;
    let cert_path = c.dir(3).join("tls/node.crt");
    let before = std::fs::read_to_string(&cert_path).unwrap();
    let mode = std::fs::metadata(c.dir(3).join("tls/node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    c.stop(3).await;
    let w = c
        .api(1)
        .put(
            "/api/v1/config/shared_dicts/while_away",
            r#"{"capacityBytes":8192}"#,
        )
        .await;
    assert_eq!(w.status, 201, "{}", w.text);
    // Restarted with no join token: its certificate is on disk, its log says it is a member.
    c.restart(3).await;
    c.caught_up(3).await;
    assert_eq!(std::fs::read_to_string(&cert_path).unwrap(), before);
    let status = c.node(3).cluster().status();
    assert!(status.voters.contains(&3), "{status:?}");
    // Writes through it are forwarded to the leader over mutual TLS.
    let w = c
        .api(3)
        .put(
            "/api/v1/config/shared_dicts/through_3",
            r#"{"capacityBytes":8192}"#,
        )
        .await;
    assert_eq!(w.status, 201, "{}", w.text);

    // The CA is replicated: a node that joined signs joins too, for a token made elsewhere.
    let token = join_token(&c.api(2), "edge", 600).await;
    let id = join::join(&ticket(c.node(3), &token), NodeRole::Edge, "e1", &[], None)
        .await
        .expect("node 3 signs a join");
    let ca_1 = TlsIdentity::load(&c.dir(1).join("tls"))
        .unwrap()
        .unwrap()
        .ca_pem;
    assert_eq!(id.ca_pem, ca_1);
    c.shutdown().await;
}
