//! A real DNS client for the tests: hickory-proto messages over real UDP and TCP sockets, each
//! exchange bounded by a timeout.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use outpost_gslb::{Gslb, GslbSettings};
use outpost_proto::{SourceFormat, parse_gslb_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn start(yaml: &str) -> Gslb {
    let config = parse_gslb_config(yaml, SourceFormat::Yaml).expect("test config parses");
    Gslb::start(
        GslbSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        },
        config,
    )
    .await
    .expect("GSLB starts")
}

pub fn query(name: &str, rtype: RecordType) -> Message {
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m
}

pub fn with_edns(mut m: Message, payload: u16) -> Message {
    let mut e = Edns::new();
    e.set_max_payload(payload);
    m.set_edns(e);
    m
}

pub fn with_ecs(m: Message, subnet: &str) -> Message {
    let mut m = if m.edns.is_none() {
        with_edns(m, 1232)
    } else {
        m
    };
    let ecs: ClientSubnet = subnet.parse().unwrap();
    if let Some(e) = m.edns.as_mut() {
        e.options_mut().insert(EdnsOption::Subnet(ecs));
    }
    m
}

pub async fn udp(server: SocketAddr, m: &Message) -> Message {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(EXCHANGE_TIMEOUT, sock.recv_from(&mut buf))
        .await
        .expect("UDP answer in time")
        .unwrap();
    assert!(n <= 65535);
    let reply = Message::from_vec(&buf[..n]).expect("decodable answer");
    assert_eq!(reply.metadata.id, m.metadata.id);
    reply
}

/// Sends a query over TCP and reads every message of the answer (AXFR may send several).
pub async fn tcp(server: SocketAddr, m: &Message) -> Message {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(server).await.unwrap();
        let bytes = m.to_vec().unwrap();
        s.write_all(&(bytes.len() as u16).to_be_bytes())
            .await
            .unwrap();
        s.write_all(&bytes).await.unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).await.unwrap();
        Message::from_vec(&buf).expect("decodable answer")
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
        .await
        .expect("TCP answer in time")
}

/// The addresses in the answer section, in order.
pub fn addresses(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// The ECS option echoed in an answer: (source prefix, scope prefix).
pub fn ecs_of(m: &Message) -> Option<(u8, u8)> {
    match m
        .edns
        .as_ref()?
        .option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet)?
    {
        EdnsOption::Subnet(s) => Some((s.source_prefix(), s.scope_prefix())),
        _ => None,
    }
}
