//! GEO answers placed by a MaxMind database: one written by MaxMind's own writer
//! (`libmaxmind-db-writer-perl`, installed by `./test`), read through the `maxminddb` crate,
//! queried over real UDP with EDNS Client Subnet.

mod support;

use hickory_proto::rr::RecordType;
use support::{addresses, ecs_of, query, udp, with_ecs};

/// Writes a City-style database: country, continent and location per network.
fn write_database(path: &std::path::Path) {
    let script = r#"
use strict; use warnings;
use MaxMind::DB::Writer::Tree;
my %types = (country => 'map', iso_code => 'utf8_string', continent => 'map',
             code => 'utf8_string', location => 'map', latitude => 'double',
             longitude => 'double');
my $tree = MaxMind::DB::Writer::Tree->new(
  ip_version => 6, record_size => 28, database_type => 'Outpost-Test-City',
  languages => ['en'], description => { en => 'Outpost test' },
  map_key_type_callback => sub { $types{ $_[0] } }, remove_reserved_networks => 0);
# Germany: mapped by continent (EU), not by country.
$tree->insert_network('198.51.100.0/24',
  { country => { iso_code => 'DE' }, continent => { code => 'EU' },
    location => { latitude => 50.1, longitude => 8.7 } });
# Singapore: mapped by country.
$tree->insert_network('203.0.113.0/25',
  { country => { iso_code => 'SG' }, continent => { code => 'AS' } });
# Only a location, near New York: the nearest region.
$tree->insert_network('192.0.2.0/26', { location => { latitude => 40.8, longitude => -73.9 } });
# IPv6, by continent.
$tree->insert_network('2001:db8:100::/48', { continent => { code => 'EU' } });
open my $fh, '>:raw', $ARGV[0] or die "open: $!"; $tree->write_tree($fh); close $fh;
"#;
    let out = std::process::Command::new("perl")
        .arg("-e")
        .arg(script)
        .arg(path)
        .output()
        .expect("perl runs");
    assert!(
        out.status.success(),
        "writing the test database needs Debian's libmaxmind-db-writer-perl (./test installs \
         it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn config(db: &std::path::Path) -> String {
    format!(
        r#"
zones:
  - {{name: cdn.example.com, soa: {{rname: hostmaster.example.com}}, ns: [ns1.example.net]}}
regions:
  - {{name: eu, latitude: 50.1, longitude: 8.7}}
  - {{name: us, latitude: 40.7, longitude: -74.0}}
  - {{name: asia, latitude: 1.35, longitude: 103.8}}
nodes:
  - {{name: eu-1, address: 192.0.2.1, region: eu, health: {{kind: PROBE_KIND_NONE}}}}
  - {{name: us-1, address: 192.0.2.2, region: us, health: {{kind: PROBE_KIND_NONE}}}}
  - {{name: asia-1, address: 192.0.2.3, region: asia, health: {{kind: PROBE_KIND_NONE}}}}
geo_cidrs:
  # The table wins over the database.
  - {{cidr: 198.51.100.128/25, region: us}}
geoip:
  path: "{}"
  countries: {{SG: asia}}
  continents: {{EU: eu}}
records:
  - {{zone: cdn.example.com, name: edge, policy: POLICY_GEO, default_region: asia}}
"#,
        db.display()
    )
}

#[tokio::test]
async fn clients_are_placed_by_country_continent_or_location_with_the_database_scope() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("city.mmdb");
    write_database(&db);
    let gslb = support::start(&config(&db)).await;
    let server = gslb.dns_addr();
    let ask = |subnet: &'static str| async move {
        let reply = udp(
            server,
            &with_ecs(query("edge.cdn.example.com.", RecordType::A), subnet),
        )
        .await;
        (addresses(&reply), ecs_of(&reply).map(|(_, scope)| scope))
    };
    // DE is not in `countries`; its continent EU is. The database's network is a /24.
    assert_eq!(
        ask("198.51.100.0/26").await,
        (vec!["192.0.2.1".to_string()], Some(24))
    );
    // The geo_cidrs table first: its /25 says us.
    assert_eq!(
        ask("198.51.100.128/25").await,
        (vec!["192.0.2.2".to_string()], Some(25))
    );
    // By country.
    assert_eq!(ask("203.0.113.0/24").await.0, ["192.0.2.3"]);
    // By location only: nearest to New York is us; the database's network is a /26.
    assert_eq!(
        ask("192.0.2.0/24").await,
        (vec!["192.0.2.2".to_string()], Some(26))
    );
    // IPv6 by continent.
    assert_eq!(ask("2001:db8:100:5::/64").await.0, ["192.0.2.1"]);
    // Unknown to both: the record's default region.
    assert_eq!(ask("100.64.0.0/24").await.0, ["192.0.2.3"]);
    gslb.shutdown().await;
}

#[tokio::test]
async fn a_missing_or_bad_database_is_an_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.mmdb");
    let yaml = config(&missing);
    let parsed =
        outpost_proto::parse_gslb_config(&yaml, outpost_proto::SourceFormat::Yaml).unwrap();
    let err = outpost_gslb::model::Model::build(&parsed)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("geoip.path") && err.contains("cannot read"),
        "{err}"
    );

    let junk = dir.path().join("junk.mmdb");
    std::fs::write(&junk, b"not a database").unwrap();
    let parsed =
        outpost_proto::parse_gslb_config(&config(&junk), outpost_proto::SourceFormat::Yaml)
            .unwrap();
    let err = outpost_gslb::model::Model::build(&parsed)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a MaxMind database"), "{err}");

    // Unknown regions and malformed codes are validation errors.
    let bad = yaml.replace("{SG: asia}", "{SG: mars, sg: eu}");
    let parsed = outpost_proto::parse_gslb_config(&bad, outpost_proto::SourceFormat::Yaml).unwrap();
    let err = outpost_proto::validate_gslb::validate_gslb(&parsed)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("geoip.countries.SG: unknown region \"mars\""),
        "{err}"
    );
    assert!(
        err.contains("geoip.countries.sg: \"sg\" is not a two-letter"),
        "{err}"
    );
}
