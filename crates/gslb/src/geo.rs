//! Where clients and nodes are: the CIDR → region table, great-circle distances, and each
//! region's neighbours from nearest to farthest. Pure data, built once per config.

use std::net::IpAddr;

use ipnet::IpNet;

/// A region's position, in degrees.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub name: String,
    pub latitude: f64,
    pub longitude: f64,
}

/// Great-circle distance in kilometres (haversine, mean Earth radius).
pub fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0088;
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// Regions and, for each, every region ordered by distance from it (itself first; ties by
/// config order).
#[derive(Debug, Clone, Default)]
pub struct RegionMap {
    pub regions: Vec<Region>,
    by_distance: Vec<Vec<usize>>,
}

impl RegionMap {
    pub fn new(regions: Vec<Region>) -> Self {
        let by_distance = (0..regions.len())
            .map(|from| {
                let mut order: Vec<usize> = (0..regions.len()).collect();
                order.sort_by(|&a, &b| {
                    let da = if a == from {
                        -1.0
                    } else {
                        regions[from].distance_km(&regions[a])
                    };
                    let db = if b == from {
                        -1.0
                    } else {
                        regions[from].distance_km(&regions[b])
                    };
                    da.total_cmp(&db).then(a.cmp(&b))
                });
                order
            })
            .collect();
        RegionMap {
            regions,
            by_distance,
        }
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.regions.iter().position(|r| r.name == name)
    }

    /// `from` first, then every other region from nearest to farthest.
    pub fn nearest_first(&self, from: usize) -> &[usize] {
        self.by_distance.get(from).map_or(&[], Vec::as_slice)
    }

    /// The region nearest a point (the first of equals); `None` without regions.
    pub fn nearest_to(&self, latitude: f64, longitude: f64) -> Option<usize> {
        (0..self.regions.len()).min_by(|&a, &b| {
            let d = |i: usize| {
                haversine_km(
                    (latitude, longitude),
                    (self.regions[i].latitude, self.regions[i].longitude),
                )
            };
            d(a).total_cmp(&d(b))
        })
    }

    pub fn distance_km(&self, a: usize, b: usize) -> f64 {
        match (self.regions.get(a), self.regions.get(b)) {
            (Some(a), Some(b)) => a.distance_km(b),
            _ => f64::INFINITY,
        }
    }
}

impl Region {
    fn distance_km(&self, other: &Region) -> f64 {
        haversine_km(
            (self.latitude, self.longitude),
            (other.latitude, other.longitude),
        )
    }
}

/// A match in the [`GeoTable`]: the region, and the prefix length for which the answer holds
/// (the ECS scope, RFC 7871 §7.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeoMatch {
    pub region: usize,
    pub scope_prefix: u8,
}

/// CIDR → region, longest prefix wins.
#[derive(Debug, Clone, Default)]
pub struct GeoTable {
    /// Sorted by prefix length, longest first, so the first containing entry is the best.
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    net: IpNet,
    region: usize,
    /// A longer entry lies inside this one: an answer from this entry holds only for the
    /// client's own subnet, not for the whole entry.
    has_more_specific: bool,
}

impl GeoTable {
    pub fn new(mut cidrs: Vec<(IpNet, usize)>) -> Self {
        cidrs.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        let entries = cidrs
            .iter()
            .map(|&(net, region)| Entry {
                net: net.trunc(),
                region,
                has_more_specific: cidrs
                    .iter()
                    .any(|(o, _)| o.prefix_len() > net.prefix_len() && net.contains(o)),
            })
            .collect();
        GeoTable { entries }
    }

    /// The region of a client subnet (`addr/source_prefix`; a full-length prefix for a plain
    /// address). Only entries that contain the whole subnet match.
    pub fn lookup(&self, addr: IpAddr, source_prefix: u8) -> Option<GeoMatch> {
        let subnet = IpNet::new(addr, source_prefix).ok()?.trunc();
        self.entries
            .iter()
            .find(|e| e.net.contains(&subnet))
            .map(|e| GeoMatch {
                region: e.region,
                scope_prefix: if e.has_more_specific {
                    source_prefix
                } else {
                    e.net.prefix_len()
                },
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(name: &str, latitude: f64, longitude: f64) -> Region {
        Region {
            name: name.into(),
            latitude,
            longitude,
        }
    }

    #[test]
    fn haversine_matches_known_distances() {
        // Paris to London is about 344 km; antipodes are half the circumference.
        let d = haversine_km((48.8566, 2.3522), (51.5074, -0.1278));
        assert!((d - 343.5).abs() < 2.0, "{d}");
        let d = haversine_km((0.0, 0.0), (0.0, 180.0));
        assert!((d - 20015.1).abs() < 1.0, "{d}");
        assert_eq!(haversine_km((10.0, 20.0), (10.0, 20.0)), 0.0);
    }

    #[test]
    fn regions_are_ordered_nearest_first_from_each_region() {
        let map = RegionMap::new(vec![
            region("fra", 50.1, 8.7),
            region("nyc", 40.7, -74.0),
            region("ams", 52.4, 4.9),
            region("sin", 1.35, 103.8),
        ]);
        assert_eq!(map.nearest_first(0), [0, 2, 1, 3]);
        assert_eq!(map.nearest_first(1), [1, 2, 0, 3]);
        assert_eq!(map.index_of("sin"), Some(3));
    }

    #[test]
    fn longest_prefix_wins_and_the_scope_says_how_far_the_answer_holds() {
        let t = GeoTable::new(vec![
            ("10.0.0.0/8".parse().unwrap(), 0),
            ("10.1.0.0/16".parse().unwrap(), 1),
            ("2001:db8::/32".parse().unwrap(), 2),
        ]);
        let hit = |a: &str, p| t.lookup(a.parse().unwrap(), p);
        assert_eq!(
            hit("10.1.2.3", 32),
            Some(GeoMatch {
                region: 1,
                scope_prefix: 16
            })
        );
        // 10/8 contains 10.1/16, so its answer only holds for the client's own /24.
        assert_eq!(
            hit("10.2.3.0", 24),
            Some(GeoMatch {
                region: 0,
                scope_prefix: 24
            })
        );
        // A /12 subnet straddles 10.1/16: only the /8 contains all of it.
        assert_eq!(hit("10.0.0.0", 12).map(|m| m.region), Some(0));
        assert_eq!(hit("2001:db8:1::", 56).map(|m| m.region), Some(2));
        assert_eq!(hit("192.0.2.1", 32), None);
    }
}
