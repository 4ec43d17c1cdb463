//! The config the workers serve: a [`Snapshot`] compiled from a validated `pb::Config`, swapped
//! atomically on reload. Requests hold the snapshot they started with until they finish, so a
//! reload never changes a request halfway.

pub mod cache_storage;
pub mod host_router;
pub mod lua_runtime;

pub use cache_storage::CacheStorage;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use outpost_proto::pb;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::metrics::{AppMetrics, Metrics};
use crate::rules::{CacheRule, LuaHandlers, PageRule};
use crate::upstream::{PeerStates, Upstream};
use host_router::HostRouter;

/// A compiled application.
pub struct Application {
    pub name: String,
    pub domains: Vec<String>,
    pub is_default: bool,
    pub certificate: Option<Arc<CertifiedKey>>,
    pub upstream: Option<Arc<str>>,
    pub rules: Vec<PageRule>,
    /// The first whose conditions match decides how a request is cached.
    pub cache_rules: Vec<Arc<CacheRule>>,
    pub lua: LuaHandlers,
    /// `lua_ssl_certificate`: run in the TLS handshake to choose the certificate.
    pub lua_ssl_certificate: Option<Arc<crate::rules::LuaChunk>>,
    /// The application's Lua globals table, by name (`RequestState::globals`): its globals
    /// outlive requests, as in OpenResty, but no other application sees them.
    pub lua_globals: Arc<str>,
    /// `$server_name`: the first domain, as nginx gives the server block's first
    /// `server_name` (empty when it has none). Shared with each request's Lua state.
    pub server_name: Arc<str>,
    pub declared: Vec<(String, String)>,
    pub metrics: Arc<AppMetrics>,
}

impl Application {
    #[cfg(test)]
    pub fn for_test(name: &str, domains: &[&str], is_default: bool) -> Self {
        Application {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            is_default,
            certificate: None,
            upstream: None,
            rules: vec![],
            cache_rules: vec![],
            lua: LuaHandlers::default(),
            lua_ssl_certificate: None,
            lua_globals: Arc::from(name),
            server_name: Arc::from(domains.first().copied().unwrap_or("")),
            declared: vec![],
            metrics: Arc::new(Metrics::default().app(name)),
        }
    }
}

pub struct ListenerSpec {
    pub tls: bool,
    pub router: HostRouter,
}

/// Server limits, with defaults filled in.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Combined,
    Json,
    Off,
}

/// Maps looked up on every request by config keys (listener, upstream and host names):
/// foldhash, as hashbrown's default, is several times cheaper than SipHash there, and lookups
/// by a client's value never insert, so collisions cannot be aimed at them.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

pub struct Snapshot {
    pub version: u64,
    /// By configured address.
    pub listeners: FastMap<SocketAddr, ListenerSpec>,
    pub upstreams: FastMap<Arc<str>, Arc<Upstream>>,
    /// Every application, for SNI certificate choice.
    pub sni: HostRouter,
    pub fallback_cert: Option<Arc<CertifiedKey>>,
    pub limits: Limits,
    pub access_log: AccessLogFormat,
    /// The metrics of requests that match no application.
    pub unrouted: Arc<AppMetrics>,
    pub cache: Arc<outpost_cache::Cache>,
    /// Modules every application can `require` (global ones and each application's), and
    /// a generation that changes with them: workers rebuild their Lua VM when it does.
    pub lua_modules: Arc<Vec<(String, String)>>,
    pub lua_generation: u64,
    /// Run once in each worker VM as it starts (`lua_init_worker`); part of the generation,
    /// so changing it starts new VMs.
    pub init_worker: Option<Arc<crate::rules::LuaChunk>>,
    /// What each worker's VM is built with (`lua_runtime`); part of the generation too.
    pub lua_limits: outpost_lua::LuaLimits,
    /// How long a request waits for another one filling the same cache key.
    pub cache_lock_timeout: Duration,
}

/// A config the validator passed but this edge cannot serve (a host name that does not
/// resolve, a feature not in this build).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct CompileError {
    pub path: String,
    pub message: String,
}

fn err(path: String, message: impl Into<String>) -> CompileError {
    CompileError {
        path,
        message: message.into(),
    }
}

impl Snapshot {
    pub fn compile(
        cfg: &pb::Config,
        states: &Arc<PeerStates>,
        metrics: &Metrics,
        caches: &CacheStorage,
    ) -> Result<Snapshot, CompileError> {
        let mut certs: HashMap<&str, Arc<CertifiedKey>> = HashMap::new();
        for (i, c) in cfg.certificates.iter().enumerate() {
            let key = certified_key(&c.cert_pem, &c.key_pem)
                .map_err(|e| err(format!("certificates[{i}]"), e))?;
            certs.insert(&c.name, key);
        }

        let mut upstreams = FastMap::default();
        for (i, u) in cfg.upstreams.iter().enumerate() {
            let up = Upstream::compile(u, states, metrics)
                .map_err(|(f, m)| err(format!("upstreams[{i}].{f}"), m))?;
            upstreams.insert(Arc::from(u.name.as_str()), Arc::new(up));
        }
        let live: HashSet<(String, SocketAddr)> = upstreams
            .values()
            .flat_map(|u| {
                u.peers
                    .load()
                    .all()
                    .map(|p| (u.name.to_string(), p.addr))
                    .collect::<Vec<_>>()
            })
            .collect();
        states.retain(&live);

        let mut listeners: FastMap<SocketAddr, ListenerSpec> = FastMap::default();
        let mut sni = HostRouter::default();
        let mut fallback_cert = None;
        for (i, a) in cfg.applications.iter().enumerate() {
            let path = format!("applications[{i}]");
            let lua = match &a.lua {
                Some(phases) => LuaHandlers::compile(phases, &a.name)
                    .map_err(|(f, m)| err(format!("{path}.lua.{f}"), m))?,
                None => LuaHandlers::default(),
            };
            let cache_rules = a
                .cache_rules
                .iter()
                .enumerate()
                .map(|(j, r)| {
                    CacheRule::compile(r)
                        .map(Arc::new)
                        .map_err(|(f, m)| err(format!("{path}.cache_rules[{j}].{f}"), m))
                })
                .collect::<Result<_, _>>()?;
            let rules = a
                .rules
                .iter()
                .enumerate()
                .map(|(j, r)| {
                    PageRule::compile(r, &format!("{}/{j}", a.name))
                        .map_err(|(f, m)| err(format!("{path}.rules[{j}].{f}"), m))
                })
                .collect::<Result<_, _>>()?;
            let certificate = certs.get(a.certificate.as_str()).cloned();
            let lua_ssl_certificate = crate::rules::LuaChunk::compile(
                a.lua_ssl_certificate.as_ref(),
                &format!("{}.ssl_certificate", a.name),
                "lua_ssl_certificate",
            )
            .map_err(|(f, m)| err(format!("{path}.{f}"), m))?;
            let app = Arc::new(Application {
                name: a.name.clone(),
                domains: a.domains.clone(),
                is_default: a.is_default,
                certificate: certificate.clone(),
                upstream: (!a.upstream.is_empty()).then(|| Arc::from(a.upstream.as_str())),
                rules,
                cache_rules,
                lua,
                lua_ssl_certificate,
                lua_globals: Arc::from(a.name.as_str()),
                server_name: Arc::from(a.domains.first().map_or("", String::as_str)),
                declared: a
                    .variables
                    .iter()
                    .map(|v| (v.name.clone(), v.default_value.clone()))
                    .collect(),
                metrics: Arc::new(metrics.app(&a.name)),
            });
            for (j, l) in a.listeners.iter().enumerate() {
                let addr: SocketAddr = l
                    .address
                    .parse()
                    .map_err(|_| err(format!("{path}.listeners[{j}].address"), "not ip:port"))?;
                listeners
                    .entry(addr)
                    .or_insert_with(|| ListenerSpec {
                        tls: l.tls,
                        router: HostRouter::default(),
                    })
                    .router
                    .insert(&app);
            }
            if certificate.is_some() {
                sni.insert(&app);
                if fallback_cert.is_none() || a.is_default {
                    fallback_cert = certificate;
                }
            }
        }

        let s = cfg.server.clone().unwrap_or_default();
        let limits = Limits {
            max_header_bytes: if s.max_header_bytes == 0 {
                64 * 1024
            } else {
                s.max_header_bytes as usize
            },
            max_body_bytes: if s.max_body_bytes == 0 {
                1 << 30
            } else {
                s.max_body_bytes
            },
            header_timeout: Duration::from_millis(if s.header_timeout_ms == 0 {
                30_000
            } else {
                s.header_timeout_ms as u64
            }),
            idle_timeout: Duration::from_millis(if s.idle_timeout_ms == 0 {
                75_000
            } else {
                s.idle_timeout_ms as u64
            }),
            shutdown_grace: Duration::from_millis(if s.shutdown_grace_ms == 0 {
                30_000
            } else {
                s.shutdown_grace_ms as u64
            }),
        };
        let access_log = match pb::AccessLogFormat::try_from(s.access_log_format) {
            Ok(pb::AccessLogFormat::Json) => AccessLogFormat::Json,
            Ok(pb::AccessLogFormat::Off) => AccessLogFormat::Off,
            _ => AccessLogFormat::Combined,
        };
        let storage = s.cache.clone().unwrap_or_default();
        let cache = caches.get(&storage)?;
        // Application modules first (searched first), then the global ones.
        let mut lua_modules: Vec<(String, String)> = Vec::new();
        for a in &cfg.applications {
            for m in &a.lua_modules {
                lua_modules.push((m.name.clone(), m.code.clone()));
            }
        }
        for m in &cfg.lua_modules {
            if !lua_modules.iter().any(|(n, _)| *n == m.name) {
                lua_modules.push((m.name.clone(), m.code.clone()));
            }
        }
        let init_worker = crate::rules::LuaChunk::compile(
            cfg.lua_init_worker.as_ref(),
            "init_worker",
            "init_worker",
        )
        .map_err(|(f, m)| err(format!("lua_{f}"), m))?;
        let lua_limits = lua_runtime::limits(cfg.lua_runtime.as_ref());
        let lua_generation = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            lua_modules.hash(&mut h);
            init_worker.as_ref().map(|c| &c.code).hash(&mut h);
            lua_runtime::hash_into(&lua_limits, &mut h);
            h.finish()
        };
        Ok(Snapshot {
            lua_modules: Arc::new(lua_modules),
            lua_generation,
            init_worker,
            lua_limits,
            cache,
            cache_lock_timeout: cache_storage::lock_timeout(&storage),
            version: cfg.version,
            listeners,
            upstreams,
            sni,
            fallback_cert,
            limits,
            access_log,
            unrouted: Arc::new(metrics.app("-")),
        })
    }

    /// The certificate for a TLS client hello's server name.
    pub fn certificate_for(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        server_name
            .and_then(|n| self.sni.route(&host_router::normalize_host(n)))
            .and_then(|app| app.certificate.clone())
            .or_else(|| self.fallback_cert.clone())
    }
}

fn certified_key(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cert_pem: {e}"))?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("key_pem: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("key_pem: {e}"))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .map_err(|e| format!("key_pem does not match cert_pem: {e}"))?;
    Ok(Arc::new(ck))
}
