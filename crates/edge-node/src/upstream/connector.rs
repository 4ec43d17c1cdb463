//! Opening a connection to a peer: TCP with a timeout, optional TLS (rustls, SNI, verification
//! on or off), then an HTTP/1.1 handshake whose connection task runs on the worker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::proxy::body::UpstreamRequestBody;
use crate::proxy::error::ProxyError;

/// How to reach the peers of one upstream over TLS.
#[derive(Clone)]
pub struct UpstreamTls {
    pub connector: TlsConnector,
    /// The configured SNI name; `None` = the peer's own name.
    pub sni: Option<Arc<str>>,
}

impl UpstreamTls {
    pub fn new(sni: &str, verify: bool, ca_pem: &str) -> Result<UpstreamTls, String> {
        let builder = ClientConfig::builder();
        let mut config = if verify {
            let mut roots = RootCertStore::empty();
            if ca_pem.is_empty() {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            } else {
                use rustls::pki_types::pem::PemObject;
                for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
                    let cert = cert.map_err(|e| format!("ca_pem: {e}"))?;
                    roots.add(cert).map_err(|e| format!("ca_pem: {e}"))?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification))
                .with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(UpstreamTls {
            connector: TlsConnector::from(Arc::new(config)),
            sni: (!sni.is_empty()).then(|| Arc::from(sni)),
        })
    }

    pub fn server_name(&self, peer_name: &str) -> Arc<str> {
        self.sni.clone().unwrap_or_else(|| {
            // The peer's host, without the port.
            let host = peer_name.rsplit_once(':').map_or(peer_name, |(h, _)| h);
            Arc::from(host.trim_start_matches('[').trim_end_matches(']'))
        })
    }
}

/// Opens a connection and returns its request sender; the connection runs as a local task.
pub async fn connect(
    addr: SocketAddr,
    tls: Option<(&UpstreamTls, &str)>,
    connect_timeout: Duration,
) -> Result<SendRequest<UpstreamRequestBody>, ProxyError> {
    let work = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(ProxyError::Connect)?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => handshake(tcp).await,
            Some((tls, name)) => {
                let server_name = ServerName::try_from(name.to_string())
                    .map_err(|e| ProxyError::Tls(format!("invalid server name {name:?}: {e}")))?;
                let stream = tls
                    .connector
                    .connect(server_name, tcp)
                    .await
                    .map_err(|e| ProxyError::Tls(e.to_string()))?;
                handshake(stream).await
            }
        }
    };
    tokio::time::timeout(connect_timeout, work)
        .await
        .map_err(|_| ProxyError::ConnectTimeout)?
}

async fn handshake<T>(io: T) -> Result<SendRequest<UpstreamRequestBody>, ProxyError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| ProxyError::Protocol(e.to_string()))?;
    tokio::task::spawn_local(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// `verify: false` (nginx's default `proxy_ssl_verify off`): encrypt, but accept any
/// certificate.
#[derive(Debug)]
struct NoVerification;

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
