//! The UDP path reuses answers: repeated queries get their own ID back, count in the metrics,
//! follow health changes, keep a weighted record's distribution and answer by region.

mod support;

use hickory_proto::rr::RecordType;
use support::{addresses, query, udp, with_ecs};

const CONFIG: &str = r#"
zones:
  - name: cdn.example.com
    soa: {rname: hostmaster.example.com}
    ns: [ns1.example.net]
    static_records:
      - {name: www, type: A, data: [192.0.2.80]}
regions:
  - {name: eu, latitude: 50.1, longitude: 8.7}
  - {name: us, latitude: 40.7, longitude: -74.0}
nodes:
  - {name: light, address: 192.0.2.1, region: eu, weight: 1, health: {kind: PROBE_KIND_NONE}}
  - {name: heavy, address: 192.0.2.2, region: us, weight: 3, health: {kind: PROBE_KIND_NONE}}
geo_cidrs:
  - {cidr: 198.51.100.0/24, region: eu}
  - {cidr: 127.0.0.0/8, region: us}
records:
  - {zone: cdn.example.com, name: w, policy: POLICY_WEIGHTED}
  - {zone: cdn.example.com, name: geo, policy: POLICY_GEO}
"#;

fn counted(metrics: &str, line_start: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn repeated_queries_get_their_own_id_and_are_counted() {
    let gslb = support::start(CONFIG).await;
    let server = gslb.dns_addr();
    for _ in 0..50 {
        // `udp` checks that the reply carries the query's (random) ID.
        let reply = udp(server, &query("WWW.cdn.example.com.", RecordType::A)).await;
        assert_eq!(addresses(&reply), ["192.0.2.80"]);
        assert_eq!(reply.queries[0].name().to_ascii(), "WWW.cdn.example.com.");
    }
    let metrics = gslb.metrics_text();
    let n = counted(
        &metrics,
        r#"gslb_queries_total{zone="cdn.example.com",qtype="A",rcode="NOERROR",policy="static"}"#,
    );
    assert_eq!(n, 50, "{metrics}");
    gslb.shutdown().await;
}

#[tokio::test]
async fn a_weighted_record_keeps_its_distribution_across_reused_answers() {
    let gslb = support::start(CONFIG).await;
    let server = gslb.dns_addr();
    let mut heavy = 0;
    let total = 800;
    for _ in 0..total {
        let reply = udp(server, &query("w.cdn.example.com.", RecordType::A)).await;
        if addresses(&reply) == ["192.0.2.2"] {
            heavy += 1;
        }
    }
    // Weight 3 of 4: 75 %. Bounds at several standard deviations of the draws actually made.
    let share = f64::from(heavy) / f64::from(total);
    assert!((0.55..0.92).contains(&share), "heavy share {share}");
    gslb.shutdown().await;
}

#[tokio::test]
async fn answers_by_region_differ_by_client_and_by_ecs() {
    let gslb = support::start(CONFIG).await;
    let server = gslb.dns_addr();
    for _ in 0..20 {
        // The test client is 127.0.0.1: region us.
        let plain = udp(server, &query("geo.cdn.example.com.", RecordType::A)).await;
        assert_eq!(addresses(&plain), ["192.0.2.2"]);
        let eu = udp(
            server,
            &with_ecs(
                query("geo.cdn.example.com.", RecordType::A),
                "198.51.100.0/24",
            ),
        )
        .await;
        assert_eq!(addresses(&eu), ["192.0.2.1"]);
    }
    gslb.shutdown().await;
}

#[tokio::test]
async fn a_burst_of_queries_is_answered_each_with_its_own_id() {
    let gslb = support::start(CONFIG).await;
    let server = gslb.dns_addr();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Sent back to back, so that the server takes several in one batch.
    let mut ids = std::collections::HashSet::new();
    for i in 0..64u16 {
        let mut q = query("www.cdn.example.com.", RecordType::A);
        q.metadata.id = 1000 + i;
        ids.insert(1000 + i);
        sock.send_to(&q.to_vec().unwrap(), server).await.unwrap();
    }
    let mut buf = vec![0u8; 2048];
    while !ids.is_empty() {
        let (n, _) =
            tokio::time::timeout(std::time::Duration::from_secs(3), sock.recv_from(&mut buf))
                .await
                .expect("every query answered in time")
                .unwrap();
        let reply = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(addresses(&reply), ["192.0.2.80"]);
        assert!(
            ids.remove(&reply.metadata.id),
            "unexpected id {}",
            reply.metadata.id
        );
    }
    gslb.shutdown().await;
}

#[tokio::test]
async fn a_malformed_query_gets_formerr_with_its_id() {
    let gslb = support::start(CONFIG).await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // A header announcing one question, then a name that runs past the end.
    let bad = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x3f, b'a'];
    sock.send_to(&bad, gslb.dns_addr()).await.unwrap();
    let mut buf = vec![0u8; 512];
    let (n, _) = tokio::time::timeout(std::time::Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(
        &buf[..4],
        [0x12, 0x34, 0x81, 0x01],
        "QR, RD, FORMERR: {:?}",
        &buf[..n]
    );
    gslb.shutdown().await;
}
