//! Objects of the working config the scenarios put through the admin API (proto3 JSON, as in
//! `docs/configuration.md`), and the GSLB config file the harness writes.
//!
//! Every application made here carries a Lua `header_filter` that adds `x-edge-pid: PID` to
//! each response, so that on loopback, where edges share one listening address, a client can
//! tell which edge process answered (see [`crate::network`]).

use std::net::SocketAddr;

use serde_json::{Value, json};

/// The response header naming the edge process that answered.
pub const EDGE_PID_HEADER: &str = "x-edge-pid";

fn edge_pid_filter() -> Value {
    json!({ "headerFilter": {
        "inline": format!("ngx.header[\"{EDGE_PID_HEADER}\"] = tostring(ngx.worker.pid())")
    }})
}

/// Lua phases answering `200 body` from the content phase. (Not a page rule's `respond`: a
/// response made by a rule skips every Lua phase, the header filter too.)
fn lua_respond(body: &str) -> Value {
    assert!(
        !body.contains("]==]"),
        "the body closes the Lua long string"
    );
    let mut lua = edge_pid_filter();
    lua["content"] = json!({ "inline": format!("ngx.print([==[{body}]==])") });
    lua
}

/// The default application on `listen`, answering every request itself with `200 body`
/// (from Lua).
pub fn respond_app(listen: SocketAddr, body: &str) -> Value {
    json!({
        "isDefault": true,
        "listeners": [{ "address": listen.to_string() }],
        "lua": lua_respond(body),
    })
}

/// An application for `domain` on `listen` answering itself, not the default one.
pub fn respond_app_for(domain: &str, listen: SocketAddr, body: &str) -> Value {
    json!({
        "domains": [domain],
        "listeners": [{ "address": listen.to_string() }],
        "lua": lua_respond(body),
    })
}

/// The default application on `listen`, proxying every request to `upstream`.
pub fn proxy_app(listen: SocketAddr, upstream: &str) -> Value {
    json!({
        "isDefault": true,
        "listeners": [{ "address": listen.to_string() }],
        "upstream": upstream,
        "lua": edge_pid_filter(),
    })
}

/// An upstream of the given origins.
pub fn upstream(peers: &[SocketAddr]) -> Value {
    let peers: Vec<Value> = peers
        .iter()
        .map(|p| json!({ "address": p.to_string() }))
        .collect();
    json!({ "peers": peers })
}

/// A small shared dict: the cheapest object to write many of.
pub fn shared_dict() -> Value {
    json!({ "capacityBytes": 8192 })
}

/// One GSLB node: an edge, probed over HTTP on its admin listener's `/healthz`.
pub struct GslbNode {
    pub name: String,
    pub address: std::net::IpAddr,
    pub region: String,
    pub health_port: u16,
}

/// A GSLB config (JSON) serving `zone` with `edge.ZONE` answered by every healthy node
/// (`POLICY_ALL_HEALTHY`); every region gets made-up coordinates.
pub fn gslb_config(zone: &str, nodes: &[GslbNode]) -> Value {
    let mut regions: Vec<&str> = nodes.iter().map(|n| n.region.as_str()).collect();
    regions.sort();
    regions.dedup();
    let regions: Vec<Value> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| json!({ "name": r, "latitude": 10.0 * i as f64, "longitude": 20.0 * i as f64 }))
        .collect();
    let nodes: Vec<Value> = nodes
        .iter()
        .map(|n| {
            json!({
                "name": n.name,
                "address": n.address.to_string(),
                "region": n.region,
                "health": { "kind": "PROBE_KIND_HTTP", "port": n.health_port, "httpPath": "/healthz" },
            })
        })
        .collect();
    json!({
        "zones": [{ "name": zone, "soa": { "rname": format!("hostmaster.{zone}") }, "ns": ["ns1.example.net"] }],
        "regions": regions,
        "nodes": nodes,
        "records": [{ "zone": zone, "name": "edge", "policy": "POLICY_ALL_HEALTHY" }],
    })
}

/// A region for [`gslb_geo_config`]: a name and where it is, in degrees.
pub struct GslbRegion {
    pub name: &'static str,
    pub latitude: f64,
    pub longitude: f64,
}

/// [`gslb_config`] with real coordinates for `regions`, the client table `geo_cidrs`
/// (`(cidr, region)`, longest prefix wins) and one more record, `near.ZONE`, answered with
/// `POLICY_GEO`: every healthy node of the client's region (up to 16), or of the nearest region
/// that has one.
pub fn gslb_geo_config(
    zone: &str,
    nodes: &[GslbNode],
    regions: &[GslbRegion],
    geo_cidrs: &[(String, &str)],
) -> Value {
    let mut config = gslb_config(zone, nodes);
    config["regions"] = regions
        .iter()
        .map(|r| json!({ "name": r.name, "latitude": r.latitude, "longitude": r.longitude }))
        .collect();
    config["geoCidrs"] = geo_cidrs
        .iter()
        .map(|(cidr, region)| json!({ "cidr": cidr, "region": region }))
        .collect();
    config["records"]
        .as_array_mut()
        .expect("records")
        .push(json!({ "zone": zone, "name": "near", "policy": "POLICY_GEO", "count": 16 }));
    config
}
