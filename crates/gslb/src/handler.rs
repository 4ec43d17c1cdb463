//! The DNS request handler: one query in, one authoritative answer out. It reads the current
//! model and node health without locks (ArcSwap and atomics), and never recurses.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};

use crate::Snapshot;
use crate::metrics::Metrics;
use crate::select::{self, ClientView, Family};
use crate::zone::{Lookup, ZoneData};

/// Largest UDP response we send, whatever the client offers (the DNS Flag Day 2020 size: no
/// IP fragmentation on common paths).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// Aliases followed inside our zones before giving up.
const MAX_CNAME_HOPS: usize = 8;

pub struct Handler {
    pub(crate) state: Arc<ArcSwap<Snapshot>>,
    pub(crate) metrics: Arc<Metrics>,
}

/// A response before encoding.
struct Reply {
    rcode: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authority: Vec<Record>,
    additionals: Vec<Record>,
    /// The ECS scope prefix to echo, when the query carried ECS.
    scope: u8,
    zone: String,
    policy: &'static str,
    /// What else than the query's bytes the answer depends on (for the UDP answer cache).
    depends: Depends,
}

/// What an answer depends on besides the bytes of the query (its name, type, EDNS options
/// and ECS included): decides whether and how the UDP path may reuse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depends {
    /// A random draw (weighted choice, or the order of equally good nodes).
    pub random: bool,
    /// The region of the client's own address (GEO or CLOSEST without ECS): `Some(region)`.
    pub client_region: Option<Option<usize>>,
    /// The client's own address beyond its region (stable-per-subnet hashing without ECS):
    /// not reusable.
    pub client_address: bool,
}

impl Reply {
    fn error(rcode: ResponseCode, zone: &str) -> Reply {
        Reply {
            rcode,
            authoritative: false,
            answers: vec![],
            authority: vec![],
            additionals: vec![],
            scope: 0,
            zone: zone.to_string(),
            policy: "-",
            depends: Depends::default(),
        }
    }
}

/// A reply with its header and EDNS, ready to encode.
pub(crate) struct Prepared {
    metadata: Metadata,
    edns: Option<Edns>,
    reply: Reply,
    qtype: RecordType,
}

type Records<'a> = std::slice::Iter<'a, Record>;

impl Prepared {
    fn response<'a>(
        &'a self,
        queries: &'a Queries,
    ) -> MessageResponse<'a, 'a, Records<'a>, Records<'a>, std::iter::Empty<&'a Record>, Records<'a>>
    {
        let mut builder = MessageResponseBuilder::new(queries, None);
        if let Some(e) = &self.edns {
            builder.edns(e);
        }
        builder.build(
            self.metadata,
            self.reply.answers.iter(),
            self.reply.authority.iter(),
            std::iter::empty(),
            self.reply.additionals.iter(),
        )
    }

    /// The labels of `gslb_queries_total` for this reply.
    fn labels(&self) -> (&str, &'static str, &'static str, &'static str) {
        (
            &self.reply.zone,
            qtype_label(self.qtype),
            rcode_label(self.reply.rcode),
            self.reply.policy,
        )
    }
}

/// An answer encoded for UDP (truncated to fit), with what it depends on and its query
/// counter (so that a reuse counts as a query too).
pub(crate) struct UdpAnswer {
    pub bytes: Vec<u8>,
    pub depends: Depends,
    pub counter: prometheus_client::metrics::counter::Counter,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let snapshot = self.state.load();
        let prepared = prepare(&snapshot, request, rand::random());
        let (zone, qtype, rcode, policy) = prepared.labels();
        self.metrics.query(zone, qtype, rcode, policy);
        let response = prepared.response(&request.queries);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "response not sent");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

impl Handler {
    /// The UDP path's answer to a parsed request.
    pub(crate) fn answer_udp(
        &self,
        snapshot: &Snapshot,
        request: &Request,
        random: u64,
    ) -> UdpAnswer {
        let prepared = prepare(snapshot, request, random);
        let (zone, qtype, rcode, policy) = prepared.labels();
        let counter = self.metrics.query_counter(zone, qtype, rcode, policy);
        counter.inc();
        let max = prepared.edns.as_ref().map_or(512, |e| e.max_payload());
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max);
        if let Err(e) = prepared
            .response(&request.queries)
            .destructive_emit(&mut encoder)
        {
            tracing::debug!(error = %e, "response not encodable: SERVFAIL");
            bytes = servfail(&request.metadata);
        }
        UdpAnswer {
            bytes,
            depends: prepared.reply.depends,
            counter,
        }
    }
}

/// A bare SERVFAIL for `query`'s header.
fn servfail(query: &Metadata) -> Vec<u8> {
    let mut metadata = Metadata::response_from_request(query);
    metadata.response_code = ResponseCode::ServFail;
    let mut bytes = Vec::with_capacity(12);
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    let _ = header.emit(&mut BinEncoder::new(&mut bytes));
    bytes
}

/// The reply with its header and EDNS: the answer, the ECS scope echoed.
fn prepare(snapshot: &Snapshot, request: &Request, random: u64) -> Prepared {
    let reply = answer(snapshot, request, random);
    let qtype = request
        .queries
        .queries()
        .first()
        .map_or(RecordType::NULL, |q| q.query_type());
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = reply.authoritative;
    metadata.recursion_available = false;
    metadata.response_code = reply.rcode;
    let edns = request.edns.as_ref().map(|req| {
        let mut e = Edns::new();
        e.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
        if let Some(EdnsOption::Subnet(ecs)) = req.option(EdnsCode::Subnet) {
            e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                ecs.addr(),
                ecs.source_prefix(),
                reply.scope,
            )));
        }
        e
    });
    Prepared {
        metadata,
        edns,
        reply,
        qtype,
    }
}

/// Builds the reply to one request. `random` seeds the random policies.
fn answer(snap: &Snapshot, request: &Request, random: u64) -> Reply {
    if request.metadata.op_code != OpCode::Query {
        return Reply::error(ResponseCode::NotImp, "-");
    }
    let [query] = request.queries.queries() else {
        return Reply::error(ResponseCode::FormErr, "-");
    };
    if query.query_class() != DNSClass::IN && query.query_class() != DNSClass::ANY {
        return Reply::error(ResponseCode::Refused, "-");
    }
    let asked = query.original().name().clone();
    let lower = asked.to_lowercase();
    let model = &snap.model;
    let Some(zone) = model.zone_for(&lower) else {
        return Reply::error(ResponseCode::Refused, "-");
    };
    let qtype = query.query_type();
    let mut reply = Reply {
        rcode: ResponseCode::NoError,
        authoritative: true,
        answers: vec![],
        authority: vec![],
        additionals: vec![],
        scope: 0,
        zone: zone.label.clone(),
        policy: "static",
        depends: Depends::default(),
    };
    match qtype {
        RecordType::AXFR => {
            if request.protocol() == Protocol::Tcp
                && lower == zone.origin
                && model.axfr_allowed(request.src().ip())
            {
                reply.answers = zone.all_records().cloned().collect();
                reply.answers.push(zone.soa.clone());
            } else {
                reply.rcode = ResponseCode::Refused;
                reply.authoritative = false;
            }
            return reply;
        }
        RecordType::IXFR => {
            reply.rcode = ResponseCode::Refused;
            reply.authoritative = false;
            return reply;
        }
        _ => {}
    }

    let mut owner = asked;
    let mut name = lower;
    for hop in 0..MAX_CNAME_HOPS {
        match zone.lookup(&name, qtype) {
            Lookup::Records(rrs) => {
                reply.answers.extend(rrs.iter().map(|r| renamed(r, &owner)));
                return reply;
            }
            Lookup::Cname(cname) => {
                reply.answers.push(renamed(cname, &owner));
                let RData::CNAME(target) = &cname.data else {
                    return reply;
                };
                owner = target.0.clone();
                name = owner.to_lowercase();
                if !zone.contains(&name) {
                    return reply;
                }
            }
            Lookup::Gslb(i) => {
                gslb_answer(snap, request, i, qtype, &owner, &mut reply, random);
                if reply.answers.is_empty() && hop == 0 {
                    reply.authority.push(zone.soa.clone());
                }
                return reply;
            }
            Lookup::Referral(ns) => {
                if hop == 0 {
                    reply.authoritative = false;
                    reply.authority = ns.to_vec();
                    reply.additionals = glue(zone, ns);
                }
                return reply;
            }
            Lookup::NoData => {
                if hop == 0 {
                    reply.authority.push(zone.soa.clone());
                }
                return reply;
            }
            Lookup::NxDomain => {
                // RFC 6604: the code describes the last name in the chain.
                reply.rcode = ResponseCode::NXDomain;
                reply.authority.push(zone.soa.clone());
                return reply;
            }
        }
    }
    reply
}

/// The answer of GSLB record `i` for `owner`: addresses for A and AAAA, the A RRset for ANY
/// (RFC 8482: one RRset), NODATA for every other type.
fn gslb_answer(
    snap: &Snapshot,
    request: &Request,
    i: usize,
    qtype: RecordType,
    owner: &Name,
    reply: &mut Reply,
    random: u64,
) {
    let model = &snap.model;
    let Some(rec) = model.records.get(i) else {
        return;
    };
    reply.policy = rec.plan.policy.as_str();
    let family = match qtype {
        RecordType::A | RecordType::ANY => Family::V4,
        RecordType::AAAA => Family::V6,
        _ => return,
    };
    let (client, scope, has_ecs) =
        client_view(snap, request, rec.plan.policy, rec.plan.weighted_mode);
    let policy = rec.plan.policy;
    let by_subnet = rec.plan.weighted_mode == select::WeightedMode::StableSubnet;
    reply.depends = Depends {
        random: policy != select::Policy::AllHealthy && !by_subnet,
        client_region: (policy.uses_client_location() && !has_ecs).then_some(client.region),
        client_address: policy != select::Policy::AllHealthy && by_subnet && !has_ecs,
    };
    let choice = select::choose(
        &rec.plan,
        &model.views,
        |n| snap.health.is_up(n),
        family,
        client,
        &model.regions,
        random,
    );
    if !choice.fallback {
        reply.scope = scope;
    }
    reply.answers.extend(choice.addresses.into_iter().map(|ip| {
        let rdata = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        Record::from_rdata(owner.clone(), rec.plan.ttl, rdata)
    }));
}

/// Where the client is: the EDNS Client Subnet when the resolver sent one with a non-zero
/// prefix (RFC 7871), else the resolver's own address. Returns the selector's view and the
/// ECS scope prefix the answer holds for, and whether the query carried ECS.
fn client_view(
    snap: &Snapshot,
    request: &Request,
    policy: select::Policy,
    mode: select::WeightedMode,
) -> (ClientView, u8, bool) {
    let ecs = request
        .edns
        .as_ref()
        .and_then(|e| match e.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(s)) if s.source_prefix() > 0 => Some(*s),
            _ => None,
        });
    let (addr, prefix) = match &ecs {
        Some(s) => (s.addr(), s.source_prefix()),
        None => {
            let ip = request.src().ip();
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let geo = snap.model.locate(addr, prefix);
    // Stable-per-subnet hashing uses at most a /24 (IPv4) or /56 (IPv6).
    let stable_prefix = prefix.min(if addr.is_ipv4() { 24 } else { 56 });
    let subnet = ipnet::IpNet::new(addr, stable_prefix)
        .map(|n| n.trunc().network())
        .unwrap_or(addr);
    let subnet_hash = select::mix(match subnet {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let b = u128::from(v6);
            (b >> 64) as u64 ^ b as u64
        }
    });
    let scope = match (ecs.is_some(), policy, mode) {
        (false, _, _) => 0,
        (true, p, _) if p.uses_client_location() => geo.map_or(prefix, |g| g.scope_prefix),
        (true, select::Policy::Weighted, select::WeightedMode::StableSubnet) => stable_prefix,
        _ => 0,
    };
    (
        ClientView {
            region: geo.map(|g| g.region),
            subnet_hash,
        },
        scope,
        ecs.is_some(),
    )
}

/// The record with the query's owner name, preserving the case the client used.
fn renamed(r: &Record, owner: &Name) -> Record {
    let mut r = r.clone();
    r.name = owner.clone();
    r
}

/// Addresses of in-zone name servers of a referral.
fn glue(zone: &ZoneData, ns: &[Record]) -> Vec<Record> {
    let mut out = Vec::new();
    for r in ns {
        let RData::NS(target) = &r.data else { continue };
        let t = target.0.to_lowercase();
        if !zone.contains(&t) {
            continue;
        }
        for rtype in [RecordType::A, RecordType::AAAA] {
            // The glue sits below the cut, so look it up directly.
            if let Some(rrs) = zone.glue(&t, rtype) {
                out.extend(rrs.iter().cloned());
            }
        }
    }
    out
}

fn qtype_label(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::CNAME => "CNAME",
        RecordType::MX => "MX",
        RecordType::TXT => "TXT",
        RecordType::SRV => "SRV",
        RecordType::CAA => "CAA",
        RecordType::NS => "NS",
        RecordType::SOA => "SOA",
        RecordType::ANY => "ANY",
        RecordType::AXFR => "AXFR",
        RecordType::HTTPS => "HTTPS",
        _ => "other",
    }
}

fn rcode_label(r: ResponseCode) -> &'static str {
    match r {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::ServFail => "SERVFAIL",
        _ => "other",
    }
}
