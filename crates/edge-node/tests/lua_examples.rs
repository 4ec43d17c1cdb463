//! The scripts of `../shared/examples/` that need a server, run unchanged against the real
//! one: the Lua blocks are read from the example files at test time and given to the edge as
//! they are, with the surrounding nginx config written as Outpost's YAML. Each test runs in a
//! private network namespace (see `lua_examples/netns.rs`), where the ports the scripts
//! hard-code are its own. Also resty.mysql's own behaviour against MariaDB.

mod support;

#[path = "lua_examples/mysql_lib.rs"]
mod mysql_lib;
#[path = "lua_examples/netns.rs"]
mod netns;
#[path = "lua_examples/services.rs"]
mod services;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use netns::in_private_network;
use services::{Dns, Instance, MariaDb, Redis};
use support::*;

/// The edge's listener in every namespace, as the examples' `listen 8080`.
const BASE: &str = "http://127.0.0.1:8080";

/// The MariaDB users and data the examples and resty.mysql's tests use: the table from
/// mysql-auth.conf's comment, its user with real grants, and a user of another plugin.
pub const MARIADB_INIT: &str = "
INSTALL SONAME 'auth_ed25519';
CREATE DATABASE auth_db;
CREATE USER 'user'@'%' IDENTIFIED BY 'pass';
GRANT ALL ON auth_db.* TO 'user'@'%';
CREATE USER 'ed'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('pass');
CREATE TABLE auth_db.users (id INT PRIMARY KEY AUTO_INCREMENT, username VARCHAR(64), password VARCHAR(64));
INSERT INTO auth_db.users (username, password) VALUES ('alice', 'secret'), ('bob', 'hunter2');
";

/// An example file; CI clones the repository with `shared/` beside it.
fn example(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/examples")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the examples live in shared/ beside the repository)",
            path.display()
        )
    })
}

/// The code of `directive { ... }` in an nginx config, exactly as nginx hands it to Lua: what
/// lies between the braces. Braces inside Lua strings and comments do not count.
fn lua_block(conf: &str, directive: &str) -> String {
    let start = conf
        .find(&format!("{directive} {{"))
        .unwrap_or_else(|| panic!("no {directive} in the example"))
        + directive.len()
        + 2;
    let bytes = conf.as_bytes();
    let (mut depth, mut i) = (1, start);
    while i < bytes.len() {
        match bytes[i] {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return conf[start..i].to_string();
                }
            }
            q @ (b'"' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != q {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("{directive} is not closed");
}

/// A string as a YAML scalar (JSON is YAML).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

async fn get(url: &str) -> (u16, String, Option<String>) {
    let r = client().get(url).send().await.expect("the edge answers");
    let status = r.status().as_u16();
    let origin = r
        .headers()
        .get("x-origin")
        .map(|v| v.to_str().unwrap_or("").to_string());
    (status, r.text().await.unwrap_or_default(), origin)
}

/// The status of a GET whose request target is sent byte for byte (no client escaping).
async fn raw_status(target: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect("127.0.0.1:8080")
        .await
        .expect("connect");
    let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut head = vec![0u8; 12];
    tokio::time::timeout(std::time::Duration::from_secs(20), s.read_exact(&mut head))
        .await
        .expect("an answer in time")
        .expect("a status line");
    String::from_utf8_lossy(&head[9..12])
        .parse()
        .expect("a status code")
}

#[test]
fn the_mysql_auth_example_checks_users_in_mariadb_before_proxying() {
    in_private_network("mysql_auth", || async {
        let conf = example("mysql-auth.conf");
        let access = lua_block(&conf, "access_by_lua_block");
        let backend = Origin::start("backend").await;
        let yaml = format!(
            r#"
shared_dicts: [{{name: auth_cache, capacity_bytes: 1048576}}]
upstreams: [{{name: backend, peers: [{{address: "{}"}}]}}]
applications:
  - name: site
    is_default: true
    listeners: [{{address: "127.0.0.1:8080"}}]
    upstream: backend
    rules:
      - conditions: [{{subject: SUBJECT_URI, operator: OPERATOR_PREFIX, values: [/protected]}}]
        actions:
          - lua: {{access: {{inline: {}}}}}
"#,
            backend.addr,
            quoted(&access)
        );
        let _edge = edge(&yaml, &[]).await;
        let alice = format!("{BASE}/protected/page?user=alice&pass=secret");

        // MariaDB not started yet: connect fails, the script answers 500.
        assert_eq!(get(&alice).await.0, 500, "MariaDB down");

        let mut db = MariaDb::start(3306, MARIADB_INIT).await;
        let (status, body, origin) = get(&alice).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(origin.as_deref(), Some("backend"), "proxied to the backend");
        assert_eq!(
            get(&format!("{BASE}/protected/x?user=bob&pass=hunter2"))
                .await
                .0,
            200
        );
        for (user, pass) in [("alice", "wrong"), ("carol", "secret"), ("alice", "")] {
            let url = format!("{BASE}/protected/x?user={user}&pass={pass}");
            assert_eq!(get(&url).await.0, 401, "{user}/{pass}");
        }
        // `$arg_pass` is not unescaped, so the quotes go raw in the request line; unquoted,
        // `password = 'x'OR'1'='1'` would match every row. quote_sql_str keeps them inside.
        assert_eq!(
            raw_status("/protected/x?user=alice&pass=x'OR'1'='1").await,
            401,
            "injection attempt"
        );
        assert_eq!(
            backend.hits(),
            2,
            "only the two good users reached the backend"
        );

        db.process.kill();
        assert_eq!(get(&alice).await.0, 500, "MariaDB gone");
        assert_eq!(backend.hits(), 2);
    });
}

#[test]
fn the_redis_counter_example_counts_per_path_over_a_reused_connection() {
    in_private_network("redis_counter", || async {
        let conf = example("redis-counter.conf");
        let content = lua_block(&conf, "content_by_lua_block");
        let _redis = Redis::start(6379).await;
        // `require "resty.redis"` finds the library bundled with the edge.
        let yaml = format!(
            r#"
applications:
  - name: site
    is_default: true
    listeners: [{{address: "127.0.0.1:8080"}}]
    lua: {{content: {{inline: {}}}}}
"#,
            quoted(&content)
        );
        let _edge = edge(&yaml, &[]).await;
        let connections = || async {
            Redis::info(6379, "total_connections_received")
                .await
                .expect("redis INFO")
        };
        let before = connections().await;
        for (path, n) in [("/a", 1), ("/a", 2), ("/b", 1), ("/a", 3), ("/b", 2)] {
            let (status, body, _) = get(&format!("{BASE}{path}")).await;
            assert_eq!(
                (status, body.as_str()),
                (200, format!("visits: {n}\n").as_str()),
                "{path}"
            );
        }
        // Each request on a new client connection, so they land on both workers. With the
        // pool, Redis sees one connection per worker at most (the edge runs 2).
        for i in 0..20 {
            assert_eq!(
                get(&format!("{BASE}/c")).await.1,
                format!("visits: {}\n", i + 1)
            );
        }
        // The INFO asking for `before` counted itself too.
        let made = connections().await - before - 1;
        assert!(
            (1..=2).contains(&made),
            "{made} connections for 25 requests"
        );
    });
}

#[test]
fn the_consul_dns_example_proxies_to_the_instances_named_by_srv_answers() {
    in_private_network("consul_dns", || async {
        let conf = example("consul-dns-balancer.conf");
        let access = lua_block(&conf, "access_by_lua_block");
        let balancer = lua_block(&conf, "balancer_by_lua_block");
        // Two instances on addresses of their own; the SRV answers carry their ports.
        let web1 = Origin::start_on("web-1", "127.0.0.2:0".parse().unwrap()).await;
        let web2 = Origin::start_on("web-2", "127.0.0.3:0".parse().unwrap()).await;
        let instance = |name: &str, o: &Origin, ip: Ipv4Addr| Instance {
            target: format!("{name}.node.dc1.consul"),
            port: o.addr.port(),
            addr: ip,
        };
        let both = vec![
            instance("web-1", &web1, Ipv4Addr::new(127, 0, 0, 2)),
            instance("web-2", &web2, Ipv4Addr::new(127, 0, 0, 3)),
        ];
        let dns = Dns::start(8600, "web.service.consul", both.clone()).await;
        let yaml = format!(
            r#"
upstreams:
  - name: dynamic
    lua_balancer: {{inline: {}}}
applications:
  - name: site
    is_default: true
    listeners: [{{address: "127.0.0.1:8080"}}]
    upstream: dynamic
    lua: {{access: {{inline: {}}}}}
"#,
            quoted(&balancer),
            quoted(&access)
        );
        let _edge = edge(&yaml, &[]).await;

        let mut seen = HashSet::new();
        for _ in 0..30 {
            let (status, body, origin) = get(&format!("{BASE}/status/200")).await;
            assert_eq!(status, 200, "{body}");
            seen.insert(origin.expect("an instance answered"));
        }
        assert_eq!(
            seen,
            HashSet::from(["web-1".to_string(), "web-2".to_string()])
        );
        {
            let q = dns.queries.lock().unwrap();
            assert!(
                q.iter()
                    .any(|(n, t)| n == "web.service.consul" && t.to_string() == "SRV")
            );
            assert!(
                q.iter()
                    .any(|(n, t)| n.ends_with(".node.dc1.consul") && t.to_string() == "A")
            );
        }

        // The registry drops web-2: every request now goes to web-1, with nothing cached.
        *dns.instances.lock().unwrap() = vec![both[0].clone()];
        let before = web2.hits();
        for _ in 0..10 {
            assert_eq!(get(&format!("{BASE}/")).await.2.as_deref(), Some("web-1"));
        }
        assert_eq!(web2.hits(), before);

        // No instances at all: the script answers 503.
        dns.instances.lock().unwrap().clear();
        assert_eq!(get(&format!("{BASE}/")).await.0, 503);
    });
}
