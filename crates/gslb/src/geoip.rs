//! Clients placed through a MaxMind-format database (GeoIP2 / GeoLite2 City or Country): the
//! country's region, else the continent's, else the region nearest the database's location.
//! Used for clients that match no `geo_cidrs` entry. The database is read when a config loads;
//! [`GeoIpCache`] keeps it across loads while the file is unchanged (a GSLB fed by the control
//! plane rebuilds its model at each registry change, and a City database is tens of MB).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use outpost_proto::gslb::v1 as pb;
use serde::Deserialize;

use crate::geo::{GeoMatch, RegionMap};

/// An open database and how its answers map to regions.
#[derive(Debug)]
pub struct GeoIp {
    reader: Arc<maxminddb::Reader<Vec<u8>>>,
    countries: HashMap<String, usize>,
    continents: HashMap<String, usize>,
}

/// The fields read from a record (those of GeoIP2 City and Country).
#[derive(Deserialize, Default)]
struct Place {
    country: Option<Code>,
    continent: Option<Code>,
    location: Option<Location>,
}

#[derive(Deserialize)]
struct Code {
    iso_code: Option<String>,
    code: Option<String>,
}

#[derive(Deserialize)]
struct Location {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// The database last opened, kept while its file is unchanged.
#[derive(Default)]
pub struct GeoIpCache {
    last: Mutex<Option<Opened>>,
}

struct Opened {
    path: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
    reader: Arc<maxminddb::Reader<Vec<u8>>>,
}

impl GeoIpCache {
    /// The database at `path`: the cached one when the file has not changed since.
    fn open(&self, path: &str) -> Result<Arc<maxminddb::Reader<Vec<u8>>>, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let (modified, len) = (meta.modified().ok(), meta.len());
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = last.as_ref()
            && o.path.as_os_str() == path
            && o.modified == modified
            && o.len == len
        {
            return Ok(o.reader.clone());
        }
        let reader = Arc::new(
            maxminddb::Reader::open_readfile(path)
                .map_err(|e| format!("{path} is not a MaxMind database: {e}"))?,
        );
        *last = Some(Opened {
            path: PathBuf::from(path),
            modified,
            len,
            reader: reader.clone(),
        });
        Ok(reader)
    }
}

impl GeoIp {
    /// Opens the database (through the cache) and resolves the region names (validated).
    pub fn open(
        config: &pb::GeoIpDatabase,
        regions: &RegionMap,
        cache: &GeoIpCache,
    ) -> Result<GeoIp, String> {
        let reader = cache.open(&config.path)?;
        let resolve = |m: &HashMap<String, String>| {
            m.iter()
                .filter_map(|(k, r)| Some((k.clone(), regions.index_of(r)?)))
                .collect()
        };
        Ok(GeoIp {
            reader,
            countries: resolve(&config.countries),
            continents: resolve(&config.continents),
        })
    }

    /// The region of a client subnet's address, and the database network's prefix length as
    /// the ECS scope. `None` when the database does not know the address or places it nowhere
    /// the config maps.
    pub fn lookup(&self, addr: IpAddr, regions: &RegionMap) -> Option<GeoMatch> {
        let found = self.reader.lookup(addr).ok()?;
        let place: Place = found.decode().ok()??;
        let network = found.network().ok()?;
        let region = place
            .country
            .and_then(|c| c.iso_code)
            .and_then(|c| self.countries.get(&c).copied())
            .or_else(|| {
                place
                    .continent
                    .as_ref()
                    .and_then(|c| c.code.as_ref())
                    .and_then(|c| self.continents.get(c).copied())
            })
            .or_else(|| {
                let l = place.location?;
                regions.nearest_to(l.latitude?, l.longitude?)
            })?;
        // An IPv4 address whose record lies above the IPv4 subtree of an IPv6 database holds
        // for every IPv4 address.
        let prefix = if addr.is_ipv4() && network.ip().is_ipv6() {
            0
        } else {
            network.prefix()
        };
        Some(GeoMatch {
            region,
            scope_prefix: prefix,
        })
    }
}
