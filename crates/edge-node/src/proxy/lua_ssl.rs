//! An application's `lua_ssl_certificate`, run in the TLS handshake as nginx runs
//! `ssl_certificate_by_lua`: once the client's hello is read, before the certificate is chosen.
//!
//! The application is the one the listener routes the SNI name to (with no SNI, its default
//! one). The script runs on the worker's VM with `require "ngx.ssl"`; what it chose decides
//! the handshake:
//! - nothing: the configured certificate, as without Lua;
//! - `clear_certs()` without a new certificate, a Lua error, or `ngx.exit(ngx.ERROR)`: the
//!   handshake is aborted (nginx sends an alert; the edge closes the connection);
//! - a chain and a key: the handshake uses them.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use http::{HeaderMap, Method};
use outpost_lua::{CertChoice, Outcome, Phase, RequestState, TlsInfo};
use rustls::ServerConfig;
use rustls::server::ClientHello;
use rustls::sign::CertifiedKey;

use super::lua_phase::{log_error, run_counted};
use crate::config::Snapshot;
use crate::config::host_router::normalize_host;
use crate::server::worker::WorkerCtx;

/// Why a handshake was aborted.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("lua_ssl_certificate failed: {0}")]
    Lua(String),
    #[error("lua_ssl_certificate exited with {0}")]
    Exit(i64),
    #[error("lua_ssl_certificate cleared the certificates and set none")]
    NoCertificate,
    #[error("lua_ssl_certificate set a certificate without its key, or a key without one")]
    Incomplete,
    #[error("lua_ssl_certificate's certificate: {0}")]
    Certificate(String),
}

/// What the hello says that Lua can read: the SNI name, and the version the handshake will
/// use (TLS 1.3 when the client offers a 1.3 suite: the edge prefers it).
pub fn hello_info(hello: &ClientHello<'_>) -> TlsInfo {
    let tls13 = hello
        .cipher_suites()
        .iter()
        .any(|s| (0x1301..=0x1305).contains(&u16::from(*s)));
    TlsInfo {
        server_name: hello.server_name().map(str::to_string),
        version: if tls13 { 0x0304 } else { 0x0303 },
    }
}

/// The config this handshake uses: `default` unless the application's `lua_ssl_certificate`
/// chose a certificate (`Ok(None)` then means "the default").
pub async fn choose(
    w: &Rc<WorkerCtx>,
    snapshot: &Arc<Snapshot>,
    listener: SocketAddr,
    client: SocketAddr,
    local: SocketAddr,
    info: &TlsInfo,
    default: &Arc<ServerConfig>,
) -> Result<Option<Arc<ServerConfig>>, Refused> {
    let host = info
        .server_name
        .as_deref()
        .map(normalize_host)
        .unwrap_or_default();
    let Some(app) = snapshot
        .listeners
        .get(&listener)
        .and_then(|l| l.router.route(&host))
    else {
        return Ok(None);
    };
    let Some(chunk) = app.lua_ssl_certificate.clone() else {
        return Ok(None);
    };
    let vm = w
        .lua_vm(snapshot)
        .map_err(|e| Refused::Lua(e.to_string()))?;
    let mut s = RequestState::new(Method::GET, "/".into(), None, HeaderMap::new());
    s.client = client;
    s.server = local;
    s.scheme = "https";
    s.globals = Some(app.lua_globals.clone());
    s.tls = Some(info.clone());
    s.cert_choice = Some(CertChoice::default());
    let state = Rc::new(RefCell::new(s));
    let metrics = &w.shared.metrics.lua;
    match run_counted(
        metrics,
        &vm,
        &chunk.name,
        &chunk.code,
        Phase::SslCert,
        &state,
    )
    .await
    {
        Err(e) => {
            log_error(&app.name, Phase::SslCert, &e, "Lua error");
            return Err(Refused::Lua(e.to_string()));
        }
        // nginx's NGX_ERROR (-1) and codes of 500 and above abort; anything else goes on.
        Ok(Outcome::Exit(code)) if code == outpost_lua::NGX_ERROR || code >= 500 => {
            return Err(Refused::Exit(code));
        }
        Ok(_) => {}
    }
    let choice = state.borrow_mut().cert_choice.take().unwrap_or_default();
    let key = match (choice.chain, choice.key) {
        (None, None) if choice.cleared => return Err(Refused::NoCertificate),
        (None, None) => return Ok(None),
        (Some(chain), Some(key)) => certified(chain, key)?,
        _ => return Err(Refused::Incomplete),
    };
    Ok(Some(crate::server::tls::single_cert_config(key, default)))
}

fn certified(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, Refused> {
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| Refused::Certificate(e.to_string()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .map_err(|e| Refused::Certificate(format!("the key does not match: {e}")))?;
    Ok(Arc::new(ck))
}
