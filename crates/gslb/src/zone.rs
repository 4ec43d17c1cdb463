//! A zone's static data and the lookup rules of an authoritative server (RFC 1034 §4.3.2):
//! exact match, CNAME, delegation below a cut, NODATA for names that exist (including empty
//! non-terminals), NXDOMAIN for the rest. GSLB names are marked here and answered by
//! [`crate::select`].

use std::collections::{BTreeMap, HashMap, HashSet};

use hickory_proto::rr::rdata::{NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use outpost_proto::gslb::v1 as pb;
use outpost_proto::validate::FieldError;

/// Zone data ready to answer from. Every name is stored lowercased and fully qualified.
#[derive(Debug, Clone)]
pub struct ZoneData {
    pub origin: Name,
    /// The zone name as configured, for metrics.
    pub label: String,
    pub soa: Record,
    rrsets: HashMap<Name, BTreeMap<u16, Vec<Record>>>,
    /// GSLB record index by owner name.
    gslb: HashMap<Name, usize>,
    /// Names that exist: owners and their ancestors inside the zone.
    existing: HashSet<Name>,
    /// Owners of NS RRsets below the apex: zone cuts.
    cuts: HashSet<Name>,
}

/// What the zone says about a name and type.
#[derive(Debug, PartialEq)]
pub enum Lookup<'a> {
    /// The RRset asked for.
    Records(&'a [Record]),
    /// The name is an alias; answer it, then look up its target.
    Cname(&'a Record),
    /// A GSLB name (index into the model's records).
    Gslb(usize),
    /// The name is at or below a zone cut: refer to these name servers.
    Referral(&'a [Record]),
    NoData,
    NxDomain,
}

impl ZoneData {
    /// Builds a zone. `gslb_names` are the owners (relative, `@` for the apex) of the zone's
    /// GSLB records with their index. Static record data that does not parse is reported with
    /// its field path under `path`.
    pub fn build(
        zone: &pb::Zone,
        version: u64,
        gslb_names: &[(&str, usize)],
        path: &str,
    ) -> Result<ZoneData, Vec<FieldError>> {
        let mut errors = Vec::new();
        let err = |errors: &mut Vec<FieldError>, field: String, message: String| {
            errors.push(FieldError {
                path: format!("{path}.{field}"),
                message,
            })
        };
        let origin = match Name::from_ascii(format!("{}.", zone.name)) {
            Ok(n) => n.to_lowercase(),
            Err(e) => {
                err(&mut errors, "name".into(), e.to_string());
                return Err(errors);
            }
        };
        let fqdn = |s: &str| Name::from_ascii(format!("{}.", s.trim_end_matches('.')));
        let ns_names: Vec<Name> = zone
            .ns
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match fqdn(n) {
                Ok(n) => Some(n),
                Err(e) => {
                    err(&mut errors, format!("ns[{i}]"), e.to_string());
                    None
                }
            })
            .collect();
        let soa_cfg = zone.soa.clone().unwrap_or_default();
        let or = |v: u32, d: u32| if v == 0 { d } else { v };
        let mname = if soa_cfg.mname.is_empty() {
            ns_names.first().cloned().unwrap_or_else(|| origin.clone())
        } else {
            fqdn(&soa_cfg.mname).unwrap_or_else(|_| origin.clone())
        };
        let rname = fqdn(&soa_cfg.rname).unwrap_or_else(|_| origin.clone());
        let serial = match soa_cfg.serial {
            0 => u32::try_from(version).unwrap_or(u32::MAX).max(1),
            s => s,
        };
        let soa_rdata = SOA::new(
            mname,
            rname,
            serial,
            or(soa_cfg.refresh, 3600) as i32,
            or(soa_cfg.retry, 600) as i32,
            or(soa_cfg.expire, 604_800) as i32,
            or(soa_cfg.minimum, 60),
        );
        let soa = Record::from_rdata(origin.clone(), or(soa_cfg.ttl, 3600), RData::SOA(soa_rdata));

        let mut data = ZoneData {
            origin: origin.clone(),
            label: zone.name.clone(),
            soa: soa.clone(),
            rrsets: HashMap::new(),
            gslb: HashMap::new(),
            existing: HashSet::new(),
            cuts: HashSet::new(),
        };
        data.insert(vec![soa]);
        let ns_ttl = or(zone.ns_ttl, 3600);
        data.insert(
            ns_names
                .into_iter()
                .map(|n| Record::from_rdata(origin.clone(), ns_ttl, RData::NS(NS(n))))
                .collect(),
        );
        for (i, rec) in zone.static_records.iter().enumerate() {
            let owner = match data.owner(&rec.name) {
                Ok(o) => o,
                Err(e) => {
                    err(&mut errors, format!("static_records[{i}].name"), e);
                    continue;
                }
            };
            let Ok(rtype) = rec.r#type.to_ascii_uppercase().parse::<RecordType>() else {
                err(
                    &mut errors,
                    format!("static_records[{i}].type"),
                    format!("unknown type {:?}", rec.r#type),
                );
                continue;
            };
            let mut rrset = Vec::new();
            for (j, text) in rec.data.iter().enumerate() {
                match RData::try_from_str(rtype, text) {
                    Ok(rdata) => {
                        rrset.push(Record::from_rdata(owner.clone(), or(rec.ttl, 300), rdata))
                    }
                    Err(e) => err(
                        &mut errors,
                        format!("static_records[{i}].data[{j}]"),
                        format!("not a valid {rtype} record: {e}"),
                    ),
                }
            }
            if rtype == RecordType::NS && owner != origin {
                data.cuts.insert(owner.clone());
            }
            data.insert(rrset);
        }
        for &(name, index) in gslb_names {
            match data.owner(name) {
                Ok(owner) => {
                    data.mark_existing(&owner);
                    data.gslb.insert(owner, index);
                }
                Err(e) => errors.push(FieldError {
                    path: format!("records[{index}].name"),
                    message: e,
                }),
            }
        }
        if errors.is_empty() {
            Ok(data)
        } else {
            Err(errors)
        }
    }

    /// The fully qualified, lowercase owner of a relative name (`@` = apex).
    fn owner(&self, relative: &str) -> Result<Name, String> {
        if relative == "@" {
            return Ok(self.origin.clone());
        }
        Name::from_ascii(relative)
            .and_then(|n| n.append_name(&self.origin))
            .map(|n| n.to_lowercase())
            .map_err(|e| format!("{relative:?}: {e}"))
    }

    fn insert(&mut self, rrset: Vec<Record>) {
        let Some(first) = rrset.first() else { return };
        let owner = first.name.clone();
        let rtype = u16::from(first.record_type());
        self.mark_existing(&owner);
        self.rrsets
            .entry(owner)
            .or_default()
            .entry(rtype)
            .or_default()
            .extend(rrset);
    }

    fn mark_existing(&mut self, owner: &Name) {
        let mut n = owner.clone();
        while self.origin.zone_of(&n) && self.existing.insert(n.clone()) && n != self.origin {
            n = n.base_name();
        }
    }

    /// Whether `name` (lowercase) is in this zone.
    pub fn contains(&self, name: &Name) -> bool {
        self.origin.zone_of(name)
    }

    /// The NS RRset at the apex.
    pub fn apex_ns(&self) -> &[Record] {
        self.rrset(&self.origin, RecordType::NS)
    }

    fn rrset(&self, name: &Name, rtype: RecordType) -> &[Record] {
        self.rrsets
            .get(name)
            .and_then(|m| m.get(&u16::from(rtype)))
            .map_or(&[], Vec::as_slice)
    }

    /// Looks `name` (lowercase, inside this zone) up for `rtype`. `ANY` returns one RRset
    /// (RFC 8482): the SOA at the apex, else the first the name holds.
    pub fn lookup(&self, name: &Name, rtype: RecordType) -> Lookup<'_> {
        // A cut at or above the name (below the apex) delegates it, except the DS at the cut
        // which the parent side answers.
        let mut n = name.clone();
        while n != self.origin && self.origin.zone_of(&n) {
            if self.cuts.contains(&n) && !(n == *name && rtype == RecordType::DS) {
                return Lookup::Referral(self.rrset(&n, RecordType::NS));
            }
            n = n.base_name();
        }
        if let Some(&i) = self.gslb.get(name) {
            return Lookup::Gslb(i);
        }
        let Some(sets) = self.rrsets.get(name) else {
            return if self.existing.contains(name) {
                Lookup::NoData
            } else {
                Lookup::NxDomain
            };
        };
        if rtype == RecordType::ANY {
            let first = if *name == self.origin {
                sets.get(&u16::from(RecordType::SOA))
            } else {
                sets.values().next()
            };
            return first.map_or(Lookup::NoData, |s| Lookup::Records(s));
        }
        if let Some(set) = sets.get(&u16::from(rtype)) {
            return Lookup::Records(set);
        }
        if let Some(cname) = sets
            .get(&u16::from(RecordType::CNAME))
            .and_then(|s| s.first())
        {
            return Lookup::Cname(cname);
        }
        Lookup::NoData
    }

    /// An address RRset below a zone cut (glue for a referral), if the zone holds one.
    pub fn glue(&self, name: &Name, rtype: RecordType) -> Option<&[Record]> {
        let set = self.rrset(name, rtype);
        (!set.is_empty()).then_some(set)
    }

    /// Every record, for AXFR: the SOA first, then everything else (the caller ends with the
    /// SOA again). GSLB names are not transferred: their answers depend on health and client.
    pub fn all_records(&self) -> impl Iterator<Item = &Record> {
        std::iter::once(&self.soa).chain(
            self.rrsets
                .values()
                .flat_map(|m| m.iter())
                .filter(|(t, _)| **t != u16::from(RecordType::SOA))
                .flat_map(|(_, s)| s.iter()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_proto::{SourceFormat, parse_gslb_config};

    fn zone() -> ZoneData {
        let c = parse_gslb_config(
            r#"
zones:
  - name: cdn.example.com
    soa: {rname: hostmaster.example.com}
    ns: [ns1.example.net, ns2.example.net]
    static_records:
      - {name: www, type: CNAME, data: [edge.cdn.example.com.]}
      - {name: "@", type: MX, data: ["10 mail.example.com."]}
      - {name: a.b, type: TXT, data: ['"deep"']}
      - {name: sub, type: NS, data: [ns.sub.cdn.example.com.]}
      - {name: ns.sub, type: A, data: [192.0.2.53]}
      - {name: "@", type: CAA, data: ['0 issue "letsencrypt.org"']}
      - {name: _sip._tcp, type: SRV, data: ["10 5 5060 sip.example.com."]}
"#,
            SourceFormat::Yaml,
        )
        .unwrap();
        ZoneData::build(&c.zones[0], 7, &[("edge", 0)], "zones[0]").unwrap()
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn lookups_follow_the_authoritative_algorithm() {
        let z = zone();
        assert!(matches!(
            z.lookup(&name("cdn.example.com."), RecordType::MX),
            Lookup::Records(r) if r.len() == 1
        ));
        assert!(matches!(
            z.lookup(&name("www.cdn.example.com."), RecordType::A),
            Lookup::Cname(_)
        ));
        assert_eq!(
            z.lookup(&name("edge.cdn.example.com."), RecordType::A),
            Lookup::Gslb(0)
        );
        // `b` exists only as the parent of `a.b`: an empty non-terminal.
        assert_eq!(
            z.lookup(&name("b.cdn.example.com."), RecordType::A),
            Lookup::NoData
        );
        assert_eq!(
            z.lookup(&name("nope.cdn.example.com."), RecordType::A),
            Lookup::NxDomain
        );
        assert!(matches!(
            z.lookup(&name("x.sub.cdn.example.com."), RecordType::A),
            Lookup::Referral(ns) if ns.len() == 1
        ));
        assert!(matches!(
            z.lookup(&name("cdn.example.com."), RecordType::ANY),
            Lookup::Records([soa]) if soa.record_type() == RecordType::SOA
        ));
        assert_eq!(z.apex_ns().len(), 2);
    }

    #[test]
    fn the_soa_serial_defaults_to_the_config_version() {
        let z = zone();
        let RData::SOA(soa) = &z.soa.data else {
            panic!("not a SOA")
        };
        assert_eq!(soa.serial, 7);
        assert_eq!(soa.mname, name("ns1.example.net."));
        assert_eq!(soa.minimum, 60);
    }

    #[test]
    fn bad_record_data_is_reported_with_its_path() {
        let c = parse_gslb_config(
            "zones: [{name: z.example, soa: {rname: h.z.example}, ns: [ns.z.example], static_records: [{name: w, type: MX, data: [nonsense]}]}]",
            SourceFormat::Yaml,
        )
        .unwrap();
        let errs = ZoneData::build(&c.zones[0], 1, &[], "zones[0]").unwrap_err();
        assert_eq!(errs[0].path, "zones[0].static_records[0].data[0]");
    }
}
