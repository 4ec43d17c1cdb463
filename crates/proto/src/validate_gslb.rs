//! The GSLB config validator: every error, each with its field path, as [`crate::validate`]
//! does for the edge config.
//!
//! `records[1].pools[0].nodes[2]: unknown node "fra-3"`
//!
//! It checks what can be checked without I/O or DNS wire code: names, references between zones,
//! nodes, regions and records, addresses, CIDRs, ranges, and record-type rules (a CNAME stands
//! alone). The GSLB crate parses each static record's data with the DNS library when it builds
//! the zone, and reports failures with the same paths.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::gslb::v1::{
    GslbConfig, GslbRecord, HealthCheck, Node, Policy, Pool, ProbeKind, WeightedMode,
    WhenNoneHealthy, Zone,
};
use crate::validate::{FieldError, FieldPath, ValidationErrors};

/// Record types a zone may hold as static records.
pub const STATIC_RECORD_TYPES: [&str; 8] = ["A", "AAAA", "CNAME", "MX", "TXT", "SRV", "CAA", "NS"];

/// The shortest probe interval accepted, in milliseconds.
pub const MIN_PROBE_INTERVAL_MS: u32 = 250;

#[derive(Default)]
struct Report(Vec<FieldError>);

impl Report {
    fn error(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.to_string(),
            message: message.into(),
        });
    }
}

/// Checks a whole GSLB config. `Ok` means the server can load it.
pub fn validate_gslb(config: &GslbConfig) -> Result<(), ValidationErrors> {
    check(config, NodeSource::Config)
}

/// Checks the GSLB section of a control plane's config, or a GSLB config merged with the
/// control plane's node registry: nodes may come and go with the registry, so a pool that
/// selects no node, or a node without a region under GEO or CLOSEST, is not an error (the node
/// without a region is chosen last).
pub fn validate_gslb_section(config: &GslbConfig) -> Result<(), ValidationErrors> {
    check(config, NodeSource::Registry)
}

/// Where the nodes come from: all from the config, or also from the control plane's registry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NodeSource {
    Config,
    Registry,
}

fn check(config: &GslbConfig, source: NodeSource) -> Result<(), ValidationErrors> {
    let mut r = Report::default();
    let root = FieldPath::root();

    let mut regions = HashSet::new();
    for (i, region) in config.regions.iter().enumerate() {
        let path = root.index("regions", i);
        object_name(&region.name, &path.field("name"), &mut regions, &mut r);
        if !(-90.0..=90.0).contains(&region.latitude) {
            r.error(&path.field("latitude"), "must be between -90 and 90");
        }
        if !(-180.0..=180.0).contains(&region.longitude) {
            r.error(&path.field("longitude"), "must be between -180 and 180");
        }
    }

    if let Some(g) = &config.geoip {
        let path = root.field("geoip");
        if g.path.is_empty() {
            r.error(&path.field("path"), "must name the .mmdb file");
        }
        for (field, map) in [("countries", &g.countries), ("continents", &g.continents)] {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for k in keys {
                let at = path.field(field).field(k);
                if k.len() != 2 || !k.bytes().all(|b| b.is_ascii_uppercase()) {
                    r.error(&at, format!("{k:?} is not a two-letter upper-case code"));
                }
                if !regions.contains(map[k].as_str()) {
                    r.error(&at, format!("unknown region {:?}", map[k]));
                }
            }
        }
    }
    if let Some(h) = &config.registry_health {
        check_health(h, &root.field("registry_health"), &mut r);
    }
    let mut nodes = HashSet::new();
    for (i, node) in config.nodes.iter().enumerate() {
        check_node(node, &root.index("nodes", i), &regions, &mut nodes, &mut r);
    }

    for (i, g) in config.geo_cidrs.iter().enumerate() {
        let path = root.index("geo_cidrs", i);
        if g.cidr.parse::<ipnet::IpNet>().is_err() {
            r.error(
                &path.field("cidr"),
                format!("{:?} is not a CIDR (`192.0.2.0/24`)", g.cidr),
            );
        }
        if !regions.contains(g.region.as_str()) {
            r.error(
                &path.field("region"),
                format!("unknown region {:?}", g.region),
            );
        }
    }

    let mut zones = HashSet::new();
    // Owner names (zone, relative name) holding static records, and their types.
    let mut owners: HashMap<(&str, String), Vec<String>> = HashMap::new();
    for (i, zone) in config.zones.iter().enumerate() {
        check_zone(
            zone,
            &root.index("zones", i),
            &mut zones,
            &mut owners,
            &mut r,
        );
    }

    let mut record_names = HashSet::new();
    for (i, record) in config.records.iter().enumerate() {
        let ctx = RecordContext {
            config,
            zones: &zones,
            regions: &regions,
            nodes: &nodes,
            owners: &owners,
            source,
        };
        check_record(
            record,
            &root.index("records", i),
            &ctx,
            &mut record_names,
            &mut r,
        );
    }

    for (i, a) in config.axfr_allow.iter().enumerate() {
        if a.parse::<ipnet::IpNet>().is_err() && a.parse::<IpAddr>().is_err() {
            r.error(
                &root.index("axfr_allow", i),
                format!("{a:?} is not a CIDR or an IP address"),
            );
        }
    }

    if r.0.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(r.0))
    }
}

fn check_node<'a>(
    node: &'a Node,
    path: &FieldPath,
    regions: &HashSet<&str>,
    seen: &mut HashSet<&'a str>,
    r: &mut Report,
) {
    object_name(&node.name, &path.field("name"), seen, r);
    if node.address.parse::<IpAddr>().is_err() {
        r.error(
            &path.field("address"),
            format!("{:?} is not an IP address", node.address),
        );
    }
    if !node.region.is_empty() && !regions.contains(node.region.as_str()) {
        r.error(
            &path.field("region"),
            format!("unknown region {:?}", node.region),
        );
    }
    if let Some(h) = &node.health {
        check_health(h, &path.field("health"), r);
    }
}

fn check_health(h: &HealthCheck, path: &FieldPath, r: &mut Report) {
    if ProbeKind::try_from(h.kind).is_err() {
        r.error(&path.field("kind"), "unknown probe kind");
    }
    if h.port > u16::MAX as u32 {
        r.error(
            &path.field("port"),
            format!("must be at most 65535, got {}", h.port),
        );
    }
    if !h.http_path.is_empty() && !h.http_path.starts_with('/') {
        r.error(&path.field("http_path"), "must start with '/'");
    }
    if h.http_path
        .contains(|c: char| c.is_whitespace() || c.is_control())
        || h.http_host
            .contains(|c: char| c.is_whitespace() || c.is_control())
    {
        r.error(
            path,
            "http_path and http_host must not contain spaces or controls",
        );
    }
    if h.interval_ms != 0 && h.interval_ms < MIN_PROBE_INTERVAL_MS {
        r.error(
            &path.field("interval_ms"),
            format!(
                "must be 0 (default 250) or at least 250, got {}",
                h.interval_ms
            ),
        );
    }
    let interval = if h.interval_ms == 0 {
        250
    } else {
        h.interval_ms
    };
    if h.timeout_ms > interval {
        r.error(
            &path.field("timeout_ms"),
            format!(
                "must not exceed the interval ({} > {interval})",
                h.timeout_ms
            ),
        );
    }
    for (name, v) in [("rise", h.rise), ("fall", h.fall)] {
        if v > 100 {
            r.error(&path.field(name), format!("must be at most 100, got {v}"));
        }
    }
}

fn check_zone<'a>(
    zone: &'a Zone,
    path: &FieldPath,
    seen: &mut HashSet<&'a str>,
    owners: &mut HashMap<(&'a str, String), Vec<String>>,
    r: &mut Report,
) {
    match domain(&zone.name) {
        Err(e) => r.error(&path.field("name"), e),
        Ok(()) => {
            if !seen.insert(zone.name.as_str()) {
                r.error(
                    &path.field("name"),
                    format!("duplicate zone {:?}", zone.name),
                );
            }
        }
    }
    if zone.ns.is_empty() {
        r.error(&path.field("ns"), "at least one name server is required");
    }
    for (i, ns) in zone.ns.iter().enumerate() {
        if let Err(e) = domain(ns.trim_end_matches('.')) {
            r.error(&path.index("ns", i), e);
        }
    }
    match &zone.soa {
        None => r.error(&path.field("soa"), "required (at least `rname`)"),
        Some(soa) => {
            if let Err(e) = domain(soa.rname.trim_end_matches('.')) {
                r.error(&path.field("soa").field("rname"), e);
            }
            if let (false, Err(e)) = (
                soa.mname.is_empty(),
                domain(soa.mname.trim_end_matches('.')),
            ) {
                r.error(&path.field("soa").field("mname"), e);
            }
        }
    }
    for (i, rec) in zone.static_records.iter().enumerate() {
        let rpath = path.index("static_records", i);
        if let Err(e) = relative_name(&rec.name) {
            r.error(&rpath.field("name"), e);
        }
        let ty = rec.r#type.to_ascii_uppercase();
        if !STATIC_RECORD_TYPES.contains(&ty.as_str()) {
            r.error(
                &rpath.field("type"),
                format!(
                    "{:?} is not one of {}",
                    rec.r#type,
                    STATIC_RECORD_TYPES.join(", ")
                ),
            );
        }
        if rec.data.is_empty() {
            r.error(&rpath.field("data"), "at least one record is required");
        }
        let owner = rec.name.to_ascii_lowercase();
        if owner == "@" && (ty == "NS" || ty == "CNAME") {
            r.error(
                &rpath.field("type"),
                format!("{ty} is not allowed at the apex (the apex NS RRset comes from `ns`)"),
            );
        }
        if ty == "CNAME" && rec.data.len() > 1 {
            r.error(&rpath.field("data"), "a CNAME holds exactly one target");
        }
        let types = owners.entry((zone.name.as_str(), owner)).or_default();
        let clash = if ty == "CNAME" {
            !types.is_empty()
        } else {
            types.iter().any(|t| t == "CNAME")
        };
        if clash {
            r.error(
                &rpath.field("name"),
                format!("{:?} has a CNAME and other records", rec.name),
            );
        }
        if types.contains(&ty) {
            r.error(
                &rpath.field("type"),
                format!(
                    "a second {ty} RRset for {:?}: list every value in one `data`",
                    rec.name
                ),
            );
        }
        types.push(ty);
    }
}

struct RecordContext<'a> {
    config: &'a GslbConfig,
    zones: &'a HashSet<&'a str>,
    regions: &'a HashSet<&'a str>,
    nodes: &'a HashSet<&'a str>,
    owners: &'a HashMap<(&'a str, String), Vec<String>>,
    source: NodeSource,
}

fn check_record<'a>(
    rec: &'a GslbRecord,
    path: &FieldPath,
    ctx: &RecordContext<'_>,
    seen: &mut HashSet<(&'a str, String)>,
    r: &mut Report,
) {
    if !ctx.zones.contains(rec.zone.as_str()) {
        r.error(&path.field("zone"), format!("unknown zone {:?}", rec.zone));
    }
    match relative_name(&rec.name) {
        Err(e) => r.error(&path.field("name"), e),
        Ok(()) => {
            let owner = rec.name.to_ascii_lowercase();
            if let Some(types) = ctx.owners.get(&(rec.zone.as_str(), owner.clone())) {
                r.error(
                    &path.field("name"),
                    format!(
                        "{:?} also has static {} records: a GSLB name stands alone",
                        rec.name,
                        types.join("/")
                    ),
                );
            }
            if !seen.insert((rec.zone.as_str(), owner)) {
                r.error(
                    &path.field("name"),
                    format!(
                        "duplicate GSLB record {:?} in zone {:?}",
                        rec.name, rec.zone
                    ),
                );
            }
        }
    }
    let policy = Policy::try_from(rec.policy);
    if policy.is_err() {
        r.error(&path.field("policy"), "unknown policy");
    }
    if WeightedMode::try_from(rec.weighted_mode).is_err() {
        r.error(&path.field("weighted_mode"), "unknown mode");
    }
    if rec.count > 64 {
        r.error(
            &path.field("count"),
            format!("must be at most 64, got {}", rec.count),
        );
    }
    if rec.ttl > 86_400 {
        r.error(
            &path.field("ttl"),
            format!("must be at most 86400, got {}", rec.ttl),
        );
    }
    for (i, pool) in rec.pools.iter().enumerate() {
        let ppath = path.index("pools", i);
        check_pool(pool, &ppath, ctx, r);
        if ctx.source == NodeSource::Config && selects(ctx.config, pool).next().is_none() {
            r.error(&ppath, "selects no node");
        }
    }
    if ctx.source == NodeSource::Config && rec.pools.is_empty() && ctx.config.nodes.is_empty() {
        r.error(&path.field("pools"), "no node to choose from");
    }
    if ctx.source == NodeSource::Config && matches!(policy, Ok(Policy::Geo | Policy::Closest)) {
        let without_region: Vec<&str> = if rec.pools.is_empty() {
            ctx.config.nodes.iter().collect::<Vec<_>>()
        } else {
            rec.pools
                .iter()
                .flat_map(|p| selects(ctx.config, p))
                .collect()
        }
        .into_iter()
        .filter(|n| n.region.is_empty())
        .map(|n| n.name.as_str())
        .collect();
        if !without_region.is_empty() {
            r.error(
                &path.field("policy"),
                format!(
                    "GEO and CLOSEST need every node in a region; without one: {}",
                    without_region.join(", ")
                ),
            );
        }
    }
    match WhenNoneHealthy::try_from(rec.when_none_healthy) {
        Err(_) => r.error(&path.field("when_none_healthy"), "unknown value"),
        Ok(WhenNoneHealthy::Fixed) if rec.fallback_addresses.is_empty() => r.error(
            &path.field("fallback_addresses"),
            "FIXED needs at least one address",
        ),
        Ok(_) => {}
    }
    for (i, a) in rec.fallback_addresses.iter().enumerate() {
        if a.parse::<IpAddr>().is_err() {
            r.error(
                &path.index("fallback_addresses", i),
                format!("{a:?} is not an IP address"),
            );
        }
    }
    if !rec.default_region.is_empty() && !ctx.regions.contains(rec.default_region.as_str()) {
        r.error(
            &path.field("default_region"),
            format!("unknown region {:?}", rec.default_region),
        );
    }
}

fn check_pool(pool: &Pool, path: &FieldPath, ctx: &RecordContext<'_>, r: &mut Report) {
    for (i, n) in pool.nodes.iter().enumerate() {
        if !ctx.nodes.contains(n.as_str()) {
            r.error(&path.index("nodes", i), format!("unknown node {n:?}"));
        }
    }
    for (i, g) in pool.regions.iter().enumerate() {
        if !ctx.regions.contains(g.as_str()) {
            r.error(&path.index("regions", i), format!("unknown region {g:?}"));
        }
    }
}

/// The nodes a pool selects: those it names, plus those in one of its regions (any region when
/// it names none) carrying all of its labels. An empty pool selects every node.
pub fn selects<'a>(config: &'a GslbConfig, pool: &'a Pool) -> impl Iterator<Item = &'a Node> {
    let by_selector = !pool.regions.is_empty() || !pool.labels.is_empty() || pool.nodes.is_empty();
    config.nodes.iter().filter(move |n| {
        pool.nodes.contains(&n.name)
            || (by_selector
                && (pool.regions.is_empty() || pool.regions.contains(&n.region))
                && pool
                    .labels
                    .iter()
                    .all(|(k, v)| n.labels.get(k).is_some_and(|nv| nv == v)))
    })
}

/// Object names: non-empty, `[A-Za-z0-9_.-]`, unique in their list.
fn object_name<'a>(name: &'a str, path: &FieldPath, seen: &mut HashSet<&'a str>, r: &mut Report) {
    if name.is_empty() {
        r.error(path, "must not be empty");
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        r.error(
            path,
            format!("{name:?} may only contain letters, digits, '_', '-' and '.'"),
        );
    } else if !seen.insert(name) {
        r.error(path, format!("duplicate name {name:?}"));
    }
}

/// A lowercase domain name without the trailing dot: `cdn.example.com`.
pub fn domain(d: &str) -> Result<(), String> {
    if d.is_empty() || d.len() > 253 {
        return Err(format!("{d:?} is not a domain name"));
    }
    for label in d.split('.') {
        if !ldh_label(label) {
            return Err(format!("{d:?} is not a lowercase domain name"));
        }
    }
    Ok(())
}

/// An owner name relative to its zone (`www`, `_sip._tcp`), or `@` for the apex.
pub fn relative_name(n: &str) -> Result<(), String> {
    if n == "@" {
        return Ok(());
    }
    if n.is_empty() || n.ends_with('.') {
        return Err(format!(
            "{n:?}: use a name relative to the zone (`www`), or `@` for the apex"
        ));
    }
    for label in n.split('.') {
        if !ldh_label(&label.to_ascii_lowercase()) {
            return Err(format!("{n:?} is not a valid relative name"));
        }
    }
    Ok(())
}

fn ldh_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SourceFormat, parse_gslb_config};

    fn errors(yaml: &str) -> Vec<String> {
        let c = parse_gslb_config(yaml, SourceFormat::Yaml).expect("parses");
        match validate_gslb(&c) {
            Ok(()) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    const GOOD: &str = r#"
zones:
  - name: cdn.example.com
    soa: {rname: hostmaster.example.com}
    ns: [ns1.example.net]
    static_records:
      - {name: www, type: CNAME, data: [edge.cdn.example.com.]}
      - {name: "@", type: MX, data: ["10 mail.example.com."]}
regions:
  - {name: eu, latitude: 50.1, longitude: 8.7}
  - {name: us, latitude: 40.7, longitude: -74.0}
nodes:
  - {name: fra-1, address: 192.0.2.1, region: eu, labels: {tier: edge}}
  - {name: nyc-1, address: 192.0.2.2, region: us, health: {kind: PROBE_KIND_HTTP, port: 8080, http_path: /healthz}}
geo_cidrs:
  - {cidr: 198.51.100.0/24, region: eu}
records:
  - {zone: cdn.example.com, name: edge, policy: POLICY_GEO, pools: [{regions: [eu, us]}]}
  - zone: cdn.example.com
    name: api
    policy: POLICY_FAILOVER
    pools: [{nodes: [fra-1]}, {labels: {tier: edge}}]
    when_none_healthy: WHEN_NONE_HEALTHY_FIXED
    fallback_addresses: [203.0.113.9]
axfr_allow: [10.0.0.0/8, 127.0.0.1]
"#;

    #[test]
    fn a_complete_config_is_valid() {
        assert_eq!(errors(GOOD), Vec::<String>::new());
    }

    #[test]
    fn references_are_checked_with_their_paths() {
        let errs = errors(
            r#"
zones: [{name: cdn.example.com, soa: {rname: h.example.com}, ns: [ns1.example.net]}]
nodes: [{name: a, address: 192.0.2.1, region: mars}]
records:
  - {zone: other.example.com, name: x, pools: [{nodes: [b]}]}
"#,
        );
        assert!(
            errs.contains(&r#"nodes[0].region: unknown region "mars""#.to_string()),
            "{errs:?}"
        );
        assert!(errs.contains(&r#"records[0].zone: unknown zone "other.example.com""#.to_string()));
        assert!(errs.contains(&r#"records[0].pools[0].nodes[0]: unknown node "b""#.to_string()));
    }

    #[test]
    fn probe_intervals_below_250_ms_are_refused() {
        let errs = errors(
            "nodes: [{name: a, address: 192.0.2.1, health: {interval_ms: 100, timeout_ms: 50}}]",
        );
        assert_eq!(
            errs,
            vec!["nodes[0].health.interval_ms: must be 0 (default 250) or at least 250, got 100"]
        );
    }

    #[test]
    fn a_cname_stands_alone_and_gslb_names_do_not_collide_with_static_ones() {
        let errs = errors(
            r#"
zones:
  - name: cdn.example.com
    soa: {rname: h.example.com}
    ns: [ns1.example.net]
    static_records:
      - {name: www, type: A, data: [192.0.2.1]}
      - {name: www, type: CNAME, data: [x.example.com.]}
      - {name: edge, type: TXT, data: ['"hi"']}
nodes: [{name: a, address: 192.0.2.1}]
records: [{zone: cdn.example.com, name: edge}]
"#,
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("zones[0].static_records[1].name:")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with("records[0].name:")),
            "{errs:?}"
        );
    }

    #[test]
    fn fixed_fallback_needs_addresses_and_geo_needs_regions() {
        let errs = errors(
            r#"
zones: [{name: z.example, soa: {rname: h.z.example}, ns: [ns.z.example]}]
nodes: [{name: a, address: 192.0.2.1}]
records: [{zone: z.example, name: w, policy: POLICY_GEO, when_none_healthy: WHEN_NONE_HEALTHY_FIXED}]
"#,
        );
        assert!(errs.iter().any(|e| e.starts_with("records[0].policy: GEO")));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("records[0].fallback_addresses:"))
        );
    }

    #[test]
    fn pools_select_by_name_region_and_labels() {
        let c = parse_gslb_config(GOOD, SourceFormat::Yaml).unwrap();
        let names = |p: &Pool| selects(&c, p).map(|n| n.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&c.records[1].pools[0]), ["fra-1"]);
        assert_eq!(names(&c.records[1].pools[1]), ["fra-1"]);
        assert_eq!(names(&c.records[0].pools[0]), ["fra-1", "nyc-1"]);
        assert_eq!(names(&Pool::default()), ["fra-1", "nyc-1"]);
    }
}
