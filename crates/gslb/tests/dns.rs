//! The DNS server's behaviour, asked over real UDP and TCP sockets.

mod support;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use support::*;

const CONFIG: &str = r#"
version: 3
zones:
  - name: cdn.example.com
    soa: {rname: hostmaster.example.com, minimum: 30}
    ns: [ns1.example.net, ns2.example.net]
    static_records:
      - {name: www, type: CNAME, data: [edge.cdn.example.com.]}
      - {name: "@", type: MX, data: ["10 mail.example.com."]}
      - {name: "@", type: CAA, data: ['0 issue "letsencrypt.org"']}
      - {name: _sip._tcp, type: SRV, data: ["10 5 5060 sip.example.com."]}
      - {name: info, type: TXT, data: ['"hello world"']}
      - {name: v6, type: AAAA, data: ["2001:db8::10"]}
      - {name: a.b, type: A, data: [192.0.2.99]}
      - name: big
        type: TXT
        data:
          - '"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1"'
          - '"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa2"'
          - '"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa3"'
          - '"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa4"'
          - '"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa5"'
          - '"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa6"'
regions:
  - {name: eu, latitude: 50.1, longitude: 8.7}
  - {name: us, latitude: 40.7, longitude: -74.0}
nodes:
  - {name: eu-1, address: 192.0.2.1, region: eu, health: {kind: PROBE_KIND_NONE}}
  - {name: eu-2, address: 192.0.2.2, region: eu, health: {kind: PROBE_KIND_NONE}}
  - {name: us-1, address: 192.0.2.3, region: us, health: {kind: PROBE_KIND_NONE}}
geo_cidrs:
  - {cidr: 198.51.100.0/24, region: eu}
  - {cidr: 203.0.113.0/24, region: us}
  - {cidr: 127.0.0.0/8, region: us}
records:
  - {zone: cdn.example.com, name: edge, policy: POLICY_GEO, count: 2}
  - {zone: cdn.example.com, name: sticky, policy: POLICY_WEIGHTED, weighted_mode: WEIGHTED_MODE_STABLE_SUBNET}
  - {zone: cdn.example.com, name: all, policy: POLICY_ALL_HEALTHY}
"#;

#[tokio::test]
async fn gslb_answers_are_authoritative_without_recursion_over_udp_and_tcp() {
    let g = start(CONFIG).await;
    for reply in [
        udp(g.dns_addr(), &query("all.cdn.example.com.", RecordType::A)).await,
        tcp(g.dns_addr(), &query("all.cdn.example.com.", RecordType::A)).await,
    ] {
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.metadata.authoritative);
        assert!(!reply.metadata.recursion_available);
        assert!(reply.metadata.recursion_desired, "RD is copied");
        assert_eq!(addresses(&reply), ["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
        assert!(
            reply.answers.iter().all(|r| r.ttl == 20),
            "short default TTL"
        );
    }
    g.shutdown().await;
}

#[tokio::test]
async fn missing_names_are_nxdomain_and_missing_types_nodata_both_with_the_soa() {
    let g = start(CONFIG).await;
    let nx = udp(g.dns_addr(), &query("nope.cdn.example.com.", RecordType::A)).await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.metadata.authoritative);
    assert!(nx.answers.is_empty());
    assert_eq!(nx.authorities.len(), 1);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);

    for (name, rtype) in [
        ("info.cdn.example.com.", RecordType::A),
        ("edge.cdn.example.com.", RecordType::MX),
        ("edge.cdn.example.com.", RecordType::AAAA),
        // `b` only exists as the parent of `a.b`.
        ("b.cdn.example.com.", RecordType::A),
    ] {
        let nodata = udp(g.dns_addr(), &query(name, rtype)).await;
        assert_eq!(
            nodata.metadata.response_code,
            ResponseCode::NoError,
            "{name} {rtype}"
        );
        assert!(nodata.answers.is_empty(), "{name} {rtype}");
        assert_eq!(
            nodata.authorities[0].record_type(),
            RecordType::SOA,
            "{name} {rtype}"
        );
    }
    g.shutdown().await;
}

#[tokio::test]
async fn zones_we_do_not_serve_are_refused() {
    let g = start(CONFIG).await;
    for name in ["example.com.", "www.example.org.", "xcdn.example.com."] {
        let r = udp(g.dns_addr(), &query(name, RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{name}");
        assert!(!r.metadata.authoritative);
    }
    g.shutdown().await;
}

#[tokio::test]
async fn the_query_name_keeps_its_case_in_the_answer() {
    let g = start(CONFIG).await;
    let r = udp(g.dns_addr(), &query("ALL.Cdn.Example.COM.", RecordType::A)).await;
    assert_eq!(r.queries[0].name().to_string(), "ALL.Cdn.Example.COM.");
    assert!(!r.answers.is_empty());
    for a in &r.answers {
        assert_eq!(a.name.to_string(), "ALL.Cdn.Example.COM.");
    }
    g.shutdown().await;
}

#[tokio::test]
async fn static_records_of_every_type_are_served() {
    let g = start(CONFIG).await;
    let ask = |name: &'static str, t| {
        let addr = g.dns_addr();
        async move { udp(addr, &query(name, t)).await }
    };
    let mx = ask("cdn.example.com.", RecordType::MX).await;
    assert!(matches!(&mx.answers[0].data, RData::MX(m) if m.preference == 10));
    let caa = ask("cdn.example.com.", RecordType::CAA).await;
    assert_eq!(caa.answers[0].record_type(), RecordType::CAA);
    let srv = ask("_sip._tcp.cdn.example.com.", RecordType::SRV).await;
    assert!(matches!(&srv.answers[0].data, RData::SRV(s) if s.port == 5060));
    let txt = ask("info.cdn.example.com.", RecordType::TXT).await;
    assert!(matches!(&txt.answers[0].data, RData::TXT(_)));
    let v6 = ask("v6.cdn.example.com.", RecordType::AAAA).await;
    assert_eq!(addresses(&v6), ["2001:db8::10"]);
    let ns = ask("cdn.example.com.", RecordType::NS).await;
    assert_eq!(ns.answers.len(), 2);
    let soa = ask("cdn.example.com.", RecordType::SOA).await;
    assert!(matches!(&soa.answers[0].data, RData::SOA(s) if s.serial == 3 && s.minimum == 30));
    // A CNAME into a GSLB name is followed inside the zone.
    let www = ask("www.cdn.example.com.", RecordType::A).await;
    assert_eq!(
        www.answers[0].record_type(),
        RecordType::CNAME,
        "{:?}",
        www.answers
    );
    assert_eq!(
        addresses(&www),
        ["192.0.2.3"],
        "GEO: the resolver 127.0.0.1 is in `us`"
    );
    g.shutdown().await;
}

#[tokio::test]
async fn any_is_answered_with_one_rrset() {
    let g = start(CONFIG).await;
    let apex = udp(g.dns_addr(), &query("cdn.example.com.", RecordType::ANY)).await;
    assert_eq!(apex.answers.len(), 1);
    assert_eq!(apex.answers[0].record_type(), RecordType::SOA);
    let gslb = udp(
        g.dns_addr(),
        &query("all.cdn.example.com.", RecordType::ANY),
    )
    .await;
    assert!(
        gslb.answers
            .iter()
            .all(|r| r.record_type() == RecordType::A)
    );
    g.shutdown().await;
}

#[tokio::test]
async fn axfr_is_refused_unless_the_address_is_allowed() {
    let g = start(CONFIG).await;
    let r = tcp(g.dns_addr(), &query("cdn.example.com.", RecordType::AXFR)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(r.answers.is_empty());
    g.shutdown().await;

    let g = start(&format!("{CONFIG}\naxfr_allow: [127.0.0.0/8]\n")).await;
    let r = tcp(g.dns_addr(), &query("cdn.example.com.", RecordType::AXFR)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        r.answers.first().map(|a| a.record_type()),
        Some(RecordType::SOA)
    );
    assert_eq!(
        r.answers.last().map(|a| a.record_type()),
        Some(RecordType::SOA)
    );
    assert!(r.answers.len() > 10);
    // Never over UDP.
    let r = udp(g.dns_addr(), &query("cdn.example.com.", RecordType::AXFR)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    g.shutdown().await;
}

#[tokio::test]
async fn answers_too_large_for_the_client_buffer_are_truncated_and_complete_over_tcp() {
    let g = start(CONFIG).await;
    // Six 100-byte TXT strings: about 700 bytes.
    let plain = udp(
        g.dns_addr(),
        &query("big.cdn.example.com.", RecordType::TXT),
    )
    .await;
    assert!(plain.metadata.truncation, "no EDNS: 512 bytes at most");
    assert!(plain.answers.len() < 6);
    let edns = udp(
        g.dns_addr(),
        &with_edns(query("big.cdn.example.com.", RecordType::TXT), 1232),
    )
    .await;
    assert!(!edns.metadata.truncation);
    assert_eq!(edns.answers.len(), 6);
    assert!(edns.edns.is_some(), "EDNS answered with EDNS");
    let small = udp(
        g.dns_addr(),
        &with_edns(query("big.cdn.example.com.", RecordType::TXT), 600),
    )
    .await;
    assert!(
        small.metadata.truncation,
        "the client's 600 bytes are honoured"
    );
    let full = tcp(
        g.dns_addr(),
        &query("big.cdn.example.com.", RecordType::TXT),
    )
    .await;
    assert!(!full.metadata.truncation);
    assert_eq!(full.answers.len(), 6);
    g.shutdown().await;
}

#[tokio::test]
async fn geo_answers_follow_the_client_subnet_and_set_its_scope() {
    let g = start(CONFIG).await;
    let eu = udp(
        g.dns_addr(),
        &with_ecs(
            query("edge.cdn.example.com.", RecordType::A),
            "198.51.100.7/24",
        ),
    )
    .await;
    let mut got = addresses(&eu);
    got.sort();
    assert_eq!(got, ["192.0.2.1", "192.0.2.2"]);
    assert_eq!(ecs_of(&eu), Some((24, 24)));

    let us = tcp(
        g.dns_addr(),
        &with_ecs(
            query("edge.cdn.example.com.", RecordType::A),
            "203.0.113.0/24",
        ),
    )
    .await;
    assert_eq!(addresses(&us), ["192.0.2.3"]);
    assert_eq!(ecs_of(&us), Some((24, 24)));

    // Without ECS the resolver's own address (127.0.0.1: `us`) decides.
    let plain = udp(g.dns_addr(), &query("edge.cdn.example.com.", RecordType::A)).await;
    assert_eq!(addresses(&plain), ["192.0.2.3"]);
    assert_eq!(ecs_of(&plain), None);

    // A policy that ignores the client answers with scope 0: valid for everyone.
    let all = udp(
        g.dns_addr(),
        &with_ecs(
            query("all.cdn.example.com.", RecordType::A),
            "198.51.100.0/24",
        ),
    )
    .await;
    assert_eq!(ecs_of(&all), Some((24, 0)));
    g.shutdown().await;
}

#[tokio::test]
async fn weighted_stable_answers_the_same_node_to_a_subnet() {
    let g = start(CONFIG).await;
    let ask = |subnet: String| {
        let addr = g.dns_addr();
        async move {
            udp(
                addr,
                &with_ecs(query("sticky.cdn.example.com.", RecordType::A), &subnet),
            )
            .await
        }
    };
    let mut seen = std::collections::HashSet::new();
    for i in 0..20u8 {
        let first = ask(format!("10.0.{i}.0/24")).await;
        let again = ask(format!("10.0.{i}.0/24")).await;
        assert_eq!(addresses(&first), addresses(&again));
        assert_eq!(ecs_of(&first), Some((24, 24)));
        seen.insert(addresses(&first));
    }
    assert!(seen.len() > 1, "different subnets spread over nodes");
    g.shutdown().await;
}

#[tokio::test]
async fn queries_are_counted_by_zone_type_rcode_and_policy_on_the_admin_listener() {
    let g = start(CONFIG).await;
    udp(g.dns_addr(), &query("edge.cdn.example.com.", RecordType::A)).await;
    udp(g.dns_addr(), &query("nope.cdn.example.com.", RecordType::A)).await;
    udp(g.dns_addr(), &query("example.org.", RecordType::A)).await;
    let admin = g.admin_addr().unwrap();
    let text = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    })
    .await
    .unwrap();
    for line in [
        r#"gslb_queries_total{zone="cdn.example.com",qtype="A",rcode="NOERROR",policy="geo"} 1"#,
        r#"gslb_queries_total{zone="cdn.example.com",qtype="A",rcode="NXDOMAIN",policy="static"} 1"#,
        r#"gslb_queries_total{zone="-",qtype="A",rcode="REFUSED",policy="-"} 1"#,
        r#"gslb_node_healthy{node="eu-1"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    g.shutdown().await;
}

#[tokio::test]
async fn an_invalid_config_is_refused_with_field_paths_and_a_reload_keeps_serving() {
    let bad = outpost_proto::parse_gslb_config(
        "nodes: [{name: a, address: not-an-ip}]",
        outpost_proto::SourceFormat::Yaml,
    )
    .unwrap();
    let g = start(CONFIG).await;
    let err = g.apply(bad).unwrap_err().to_string();
    assert!(err.contains("nodes[0].address"), "{err}");
    assert_eq!(g.version(), 3);
    let reloaded = outpost_proto::parse_gslb_config(
        &CONFIG.replace("version: 3", "version: 4"),
        outpost_proto::SourceFormat::Yaml,
    )
    .unwrap();
    g.apply(reloaded).unwrap();
    assert_eq!(g.version(), 4);
    let soa = udp(g.dns_addr(), &query("cdn.example.com.", RecordType::SOA)).await;
    assert!(matches!(&soa.answers[0].data, RData::SOA(s) if s.serial == 4));
    g.shutdown().await;
}
