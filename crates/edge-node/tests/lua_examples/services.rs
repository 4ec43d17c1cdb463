//! The examples' real dependencies, started by the tests: a private MariaDB (its own data
//! directory, real users and grants), a redis-server, and an authoritative DNS server over
//! UDP that answers SRV and A records like Consul's DNS interface.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// A program by name, from PATH or the sbin directories root's PATH may lack in CI.
fn program(name: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: apt-get install {package} (./test does)"))
}

/// A child process killed (and reaped) when dropped, even when a test fails.
pub struct Process {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Process {
        let out = std::fs::File::create(&log).expect("create a log file");
        let err = out.try_clone().expect("clone the log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Process {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    /// Polls until 127.0.0.1:`port` accepts a connection (at most `limit`), failing with the
    /// process's log if it exits or never listens.
    async fn wait_listening(&mut self, port: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: String = log.lines().rev().take(20).collect::<Vec<_>>().join("\n");
                panic!(
                    "{} did not listen on 127.0.0.1:{port} (exit: {exited:?}); log, newest first:\n{tail}",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the process and waits for it, as a crash would end it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A MariaDB server of its own on 127.0.0.1:`port`, run as root from a fresh data directory.
pub struct MariaDb {
    pub process: Process,
    _dir: tempfile::TempDir,
}

impl MariaDb {
    /// Creates the system tables, then starts the server with `init_sql` run at start-up
    /// (before it accepts connections), e.g. to create users with real grants.
    pub async fn start(port: u16, init_sql: &str) -> MariaDb {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let data = dir.path().join("data");
        // Temporary tables in a directory of its own: two servers bootstrapping at once in a
        // shared /tmp once failed with "Could not remove temporary table ... error: 2".
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).expect("create the server's tmpdir");
        let install = Command::new(program("mariadb-install-db", "mariadb-server"))
            .args(["--no-defaults", "--user=root", "--skip-test-db"])
            .arg("--auth-root-authentication-method=normal")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .stdin(Stdio::null())
            .output()
            .expect("run mariadb-install-db");
        assert!(
            install.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&install.stderr)
        );
        let init = dir.path().join("init.sql");
        std::fs::write(&init, init_sql).expect("write init.sql");
        let opt = |k: &str, v: &Path| format!("--{k}={}", v.display());
        let mut cmd = Command::new(program("mariadbd", "mariadb-server"));
        cmd.args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1"])
            .args(["--skip-name-resolve", "--innodb-buffer-pool-size=16M"])
            .arg(format!("--port={port}"))
            .arg(opt("datadir", &data))
            .arg(opt("tmpdir", &tmp))
            .arg(opt("socket", &dir.path().join("sock")))
            .arg(opt("pid-file", &dir.path().join("pid")))
            .arg(opt("init-file", &init));
        let mut process = Process::spawn("mariadbd", &mut cmd, dir.path().join("mariadbd.log"));
        process.wait_listening(port, Duration::from_secs(60)).await;
        MariaDb { process, _dir: dir }
    }
}

/// A redis-server on 127.0.0.1:`port`, nothing saved to disk.
pub struct Redis {
    _process: Process,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub async fn start(port: u16) -> Redis {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut cmd = Command::new(program("redis-server", "redis-server"));
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &port.to_string()])
            .current_dir(dir.path());
        let mut process = Process::spawn("redis-server", &mut cmd, dir.path().join("redis.log"));
        process.wait_listening(port, Duration::from_secs(20)).await;
        Redis {
            _process: process,
            _dir: dir,
        }
    }

    /// A field of `INFO` (e.g. `total_connections_received`), asked over a new connection.
    pub async fn info(port: u16, field: &str) -> Option<u64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(b"INFO\r\n").await.ok()?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 16384];
        // A bulk string: `$LEN\r\n` then LEN bytes; read until the field's line is complete.
        let read = async {
            loop {
                let n = s.read(&mut buf).await.ok()?;
                if n == 0 {
                    return None;
                }
                reply.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&reply);
                let prefix = format!("{field}:");
                if let Some(line) = text.lines().find(|l| l.starts_with(&prefix))
                    && text.contains(&format!("{line}\r\n"))
                {
                    return line.split_once(':')?.1.trim().parse().ok();
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .ok()
            .flatten()
    }
}

/// A service's instances as SRV answers give them: target name, port and the target's address.
#[derive(Clone, Debug)]
pub struct Instance {
    pub target: String,
    pub port: u16,
    pub addr: Ipv4Addr,
}

/// An authoritative DNS server on UDP 127.0.0.1:`port`, answering `service` SRV queries with
/// the current instances and their targets' A queries with their addresses; any other name is
/// NXDOMAIN. Counts the queries it answered.
pub struct Dns {
    pub instances: Arc<Mutex<Vec<Instance>>>,
    pub queries: Arc<Mutex<Vec<(String, RecordType)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Dns {
    pub async fn start(port: u16, service: &str, instances: Vec<Instance>) -> Dns {
        let socket = tokio::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .expect("bind the DNS server");
        let instances = Arc::new(Mutex::new(instances));
        let queries: Arc<Mutex<Vec<(String, RecordType)>>> = Arc::default();
        let service = bare(service);
        let (inst, seen) = (instances.clone(), queries.clone());
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut reply =
                    Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
                reply.metadata.authoritative = true;
                reply.metadata.recursion_desired = query.metadata.recursion_desired;
                let now = inst.lock().unwrap().clone();
                for q in &query.queries {
                    reply.add_query(q.clone());
                    let name = q.name().clone();
                    let asked = bare(&name.to_ascii());
                    seen.lock().unwrap().push((asked.clone(), q.query_type()));
                    if asked == service {
                        if q.query_type() == RecordType::SRV {
                            for i in &now {
                                let target = Name::from_ascii(&i.target).expect("a target name");
                                let srv = RData::SRV(SRV::new(1, 10, i.port, target));
                                reply.add_answer(Record::from_rdata(name.clone(), 0, srv));
                            }
                        }
                        continue;
                    }
                    match now.iter().find(|i| bare(&i.target) == asked) {
                        Some(i) if q.query_type() == RecordType::A => {
                            reply.add_answer(Record::from_rdata(name, 0, RData::A(A(i.addr))));
                        }
                        Some(_) => {}
                        None => reply.metadata.response_code = ResponseCode::NXDomain,
                    }
                }
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        Dns {
            instances,
            queries,
            task,
        }
    }
}

/// A DNS name as compared here: lower case, without the root's dot.
fn bare(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}
