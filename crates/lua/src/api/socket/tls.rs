//! TLS for `tcpsock:sslhandshake`, over tokio-rustls with the ring provider: the client
//! configurations a VM uses, the handshake with its timeout, and its errors in
//! lua-nginx-module's words.
//!
//! A VM builds one `ClientConfig` per kind of handshake (verified or not, host checked or
//! not) and keeps it: rustls's session cache lives in the config, so later handshakes to the
//! same server name resume their session, which is what OpenResty's `reused_session` is for.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Once};
use std::time::Duration;

use mlua::Lua;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::verify::{NoVerification, OpenrestyVerifier, VerifyFailure};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("lua_ssl_trusted_certificate: {0}")]
    TrustedCertificate(String),
    #[error("TLS client setup failed: {0}")]
    Setup(String),
    #[error("timeout")]
    Timeout,
    /// Verification failed: OpenSSL's code and text, or `certificate host mismatch`.
    #[error("{0}")]
    Verify(&'static str),
    #[error("handshake failed")]
    Failed,
}

/// A VM's TLS client settings (kept as Lua app data) and the configs built from them.
#[derive(Default)]
pub struct TlsClients {
    /// Trust anchors added to webpki-roots (`lua_ssl_trusted_certificate`).
    extra_roots: Vec<CertificateDer<'static>>,
    /// By (verify, check_host).
    configs: RefCell<HashMap<(bool, bool), Arc<ClientConfig>>>,
}

impl TlsClients {
    fn from_pem(pem: &str) -> Result<TlsClients, TlsError> {
        let extra_roots = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::TrustedCertificate(e.to_string()))?;
        if extra_roots.is_empty() && !pem.trim().is_empty() {
            return Err(TlsError::TrustedCertificate(
                "no PEM certificate found".into(),
            ));
        }
        // Refuse a bad anchor now rather than at the first handshake.
        let mut roots = RootCertStore::empty();
        for c in &extra_roots {
            roots
                .add(c.clone())
                .map_err(|e| TlsError::TrustedCertificate(e.to_string()))?;
        }
        Ok(TlsClients {
            extra_roots,
            configs: RefCell::default(),
        })
    }

    fn config(&self, verify: bool, check_host: bool) -> Result<Arc<ClientConfig>, TlsError> {
        let key = (verify, verify && check_host);
        if let Some(c) = self.configs.borrow().get(&key) {
            return Ok(c.clone());
        }
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .dangerous();
        let config = if verify {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            for c in &self.extra_roots {
                roots
                    .add(c.clone())
                    .map_err(|e| TlsError::TrustedCertificate(e.to_string()))?;
            }
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Setup(e.to_string()))?;
            builder.with_custom_certificate_verifier(Arc::new(OpenrestyVerifier {
                inner,
                check_host: key.1,
            }))
        } else {
            builder.with_custom_certificate_verifier(Arc::new(NoVerification))
        };
        let config = Arc::new(config.with_no_client_auth());
        self.configs.borrow_mut().insert(key, config.clone());
        Ok(config)
    }
}

/// ring, installed as the process default if nothing is yet (another part of the process may
/// have installed its own first: that one is used then).
fn provider() -> Arc<CryptoProvider> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Sets the PEM certificates that `sslhandshake(..., ssl_verify = true)` trusts besides
/// webpki-roots (OpenResty's `lua_ssl_trusted_certificate`).
pub fn set_trusted_certificate(lua: &Lua, pem: &str) -> Result<(), TlsError> {
    lua.set_app_data(TlsClients::from_pem(pem)?);
    Ok(())
}

/// The TLS client handshake on `tcp`. `server_name` is sent as SNI and, when verifying,
/// checked against the certificate; without one no SNI is sent and only the chain is checked.
pub async fn handshake(
    lua: &Lua,
    tcp: TcpStream,
    server_name: Option<&str>,
    verify: bool,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let config = {
        if lua.app_data_ref::<TlsClients>().is_none() {
            lua.set_app_data(TlsClients::default());
        }
        let clients = lua
            .app_data_ref::<TlsClients>()
            .ok_or_else(|| TlsError::Setup("no TLS settings".into()))?;
        clients.config(verify, server_name.is_some())?
    };
    let name = match server_name {
        Some(n) => ServerName::try_from(n.to_string()).map_err(|e| {
            tracing::debug!(target: "lua", server_name = n, error = %e, "bad TLS server name");
            TlsError::Failed
        })?,
        // An IP address as the name: rustls then sends no SNI, as nginx without a name.
        None => ServerName::IpAddress(tcp.peer_addr().map_err(|_| TlsError::Failed)?.ip().into()),
    };
    match tokio::time::timeout(timeout, TlsConnector::from(config).connect(name, tcp)).await {
        Err(_) => Err(TlsError::Timeout),
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(verify_failure(&e).map_or(TlsError::Failed, TlsError::Verify)),
    }
}

/// The words our verifier left in a failed handshake's error, if verification failed.
fn verify_failure(e: &std::io::Error) -> Option<&'static str> {
    let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) =
        e.get_ref()?.downcast_ref::<rustls::Error>()?
    else {
        return None;
    };
    other.0.downcast_ref::<VerifyFailure>().map(|v| v.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_certificates_must_be_pem_certificates() {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        assert_eq!(
            TlsClients::from_pem(&c.cert.pem())
                .unwrap()
                .extra_roots
                .len(),
            1
        );
        assert!(TlsClients::from_pem("").unwrap().extra_roots.is_empty());
        assert!(matches!(
            TlsClients::from_pem("not a certificate"),
            Err(TlsError::TrustedCertificate(_))
        ));
    }

    #[test]
    fn configs_are_built_once_per_kind() {
        let clients = TlsClients::default();
        let a = clients.config(true, true).unwrap();
        let b = clients.config(true, true).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let plain = clients.config(false, true).unwrap();
        assert!(Arc::ptr_eq(&plain, &clients.config(false, false).unwrap()));
        assert!(!Arc::ptr_eq(&a, &clients.config(true, false).unwrap()));
    }
}
