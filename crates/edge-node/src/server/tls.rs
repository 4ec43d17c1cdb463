//! TLS termination: one rustls `ServerConfig` for the life of the node whose certificate
//! resolver reads the current snapshot, so certificates change on reload without a restart.
//! ALPN offers HTTP/2 and HTTP/1.1.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::Snapshot;

pub struct SniResolver(pub Arc<ArcSwap<Snapshot>>);

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load().certificate_for(hello.server_name())
    }
}

pub fn server_config(snapshot: Arc<ArcSwap<Snapshot>>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver(snapshot)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One certificate for every name: what a `lua_ssl_certificate` script chose.
#[derive(Debug)]
struct Chosen(Arc<CertifiedKey>);

impl ResolvesServerCert for Chosen {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A config like `like` (its ALPN) that serves `key` alone, for one handshake.
pub fn single_cert_config(key: Arc<CertifiedKey>, like: &ServerConfig) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Chosen(key)));
    config.alpn_protocols = like.alpn_protocols.clone();
    Arc::new(config)
}
