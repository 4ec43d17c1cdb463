//! A DNS client for the scenarios: one hickory-proto query over UDP, bounded by a timeout,
//! optionally sent from a given address and with an EDNS Client Subnet (RFC 7871), which is how
//! one test client poses as clients in several places.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};

/// How long one query waits for its answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

static NEXT_ID: AtomicU16 = AtomicU16::new(1);

/// Who asks: the address the query is sent from (None: any) and the client subnet it carries
/// in EDNS (None: no ECS option; the server then locates the client by the source address).
#[derive(Debug, Clone, Copy, Default)]
pub struct Asker {
    pub from: Option<IpAddr>,
    pub subnet: Option<(IpAddr, u8)>,
}

impl Asker {
    /// A resolver asking for a client in `net`/`prefix`.
    pub fn in_subnet(net: IpAddr, prefix: u8) -> Asker {
        Asker {
            from: None,
            subnet: Some((net, prefix)),
        }
    }

    /// A client asking from `ip` itself, with no ECS.
    pub fn from(ip: IpAddr) -> Asker {
        Asker {
            from: Some(ip),
            subnet: None,
        }
    }
}

/// Sends one query for `name`/`rtype` to `server` and returns the answer.
pub async fn query(server: SocketAddr, name: &str, rtype: RecordType) -> Result<Message, String> {
    query_as(server, name, rtype, Asker::default()).await
}

/// [`query`], asked as `asker`.
pub async fn query_as(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    asker: Asker,
) -> Result<Message, String> {
    let qname = Name::from_ascii(name).map_err(|e| format!("bad name {name}: {e}"))?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(qname, rtype));
    if let Some((net, prefix)) = asker.subnet {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(net, prefix, 0)));
        m.set_edns(edns);
    }
    let bytes = m.to_vec().map_err(|e| e.to_string())?;
    let local: SocketAddr = match asker.from {
        Some(ip) => SocketAddr::new(ip, 0),
        None if server.is_ipv4() => "0.0.0.0:0".parse().expect("an address"),
        None => "[::]:0".parse().expect("an address"),
    };
    let sock = tokio::net::UdpSocket::bind(local)
        .await
        .map_err(|e| format!("binding {local}: {e}"))?;
    sock.send_to(&bytes, server)
        .await
        .map_err(|e| format!("sending to {server}: {e}"))?;
    let mut buf = vec![0u8; 4096];
    let exchange = async {
        loop {
            let (n, from) = sock.recv_from(&mut buf).await?;
            if from == server {
                return Ok::<usize, std::io::Error>(n);
            }
        }
    };
    let n = tokio::time::timeout(QUERY_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer from {server} within {QUERY_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let reply = Message::from_vec(&buf[..n]).map_err(|e| format!("undecodable answer: {e}"))?;
    if reply.metadata.id != id {
        return Err(format!("answer id {} for query {id}", reply.metadata.id));
    }
    Ok(reply)
}

/// The A/AAAA addresses `server` answers for `name`, sorted (an error for any rcode but
/// NOERROR).
pub async fn addresses(server: SocketAddr, name: &str) -> Result<Vec<IpAddr>, String> {
    addresses_as(server, name, Asker::default()).await
}

/// [`addresses`], asked as `asker`.
pub async fn addresses_as(
    server: SocketAddr,
    name: &str,
    asker: Asker,
) -> Result<Vec<IpAddr>, String> {
    let reply = query_as(server, name, RecordType::A, asker).await?;
    if reply.metadata.response_code != ResponseCode::NoError {
        return Err(format!("{name}: {}", reply.metadata.response_code));
    }
    let mut ips: Vec<IpAddr> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    ips.sort();
    Ok(ips)
}
