//! The joining side: how a new node gets its certificate with a join token.
//!
//! 1. `GetCa` over TLS without verifying the server (the node trusts nothing yet);
//! 2. the CA's sha256 must equal the pin in the token, or the node stops there: a server that
//!    is not the cluster cannot show a CA with that hash, so the unverified first hop is safe;
//! 3. a new connection verifying the server against that CA, and `Join` with a CSR for a key
//!    made here. The key never leaves the node.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use outpost_proto::controlplane::v1::cluster_join_client::ClusterJoinClient;
use outpost_proto::controlplane::v1::{AddVoterRequest, GetCaRequest, JoinRequest};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::identity::{IdentityError, TlsIdentity, https_endpoint};
use super::{JoinRefusal, JoinToken, NodeRole, PkiError, new_key_and_csr, pin};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `AddVoter` answers once the new node has caught up, which can take a while.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where to join and with what.
#[derive(Debug, Clone)]
pub struct JoinTicket {
    /// `https://host:port` of any control-plane node's gRPC listener.
    pub url: String,
    /// `OPJ1.<pin>.<secret>`, from `POST /api/v1/join-tokens`.
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Token(#[from] JoinRefusal),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("connecting to {url}: {message}")]
    Connect { url: String, message: String },
    #[error("fetching the cluster CA from {url}: {message}")]
    GetCa { url: String, message: String },
    #[error(
        "the CA shown by {url} has sha256 {got}, but the join token pins {expected}: \
         refusing to trust it (wrong address, or someone in between)"
    )]
    PinMismatch {
        url: String,
        expected: String,
        got: String,
    },
    /// The control plane said no; `message` is its reason.
    #[error("{url} refused: {message}")]
    Refused {
        url: String,
        code: tonic::Code,
        message: String,
    },
    #[error("{dir}: no TLS identity yet, and no join token to get one (--join-token)")]
    NoIdentity { dir: PathBuf },
}

/// Accepts any server certificate while still checking the handshake signatures: only for
/// fetching the CA, whose hash is then checked against the pin.
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn base(url: &str, local: Option<IpAddr>) -> Result<Endpoint, JoinError> {
    Ok(https_endpoint(url)?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .local_address(local))
}

async fn connect(
    url: &str,
    endpoint: Result<Endpoint, tonic::transport::Error>,
) -> Result<Channel, JoinError> {
    let connect_error = |e: tonic::transport::Error| JoinError::Connect {
        url: url.to_string(),
        message: error_chain(&e),
    };
    endpoint
        .map_err(connect_error)?
        .connect()
        .await
        .map_err(connect_error)
}

/// tonic's transport errors say little at the top ("transport error"): the causes matter.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The cluster CA at `url`, checked against the token's pin.
pub async fn fetch_ca(
    url: &str,
    token: &JoinToken,
    local: Option<IpAddr>,
) -> Result<String, JoinError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let unverified = base(url, local)?
        .tls_config_with_verifier(ClientTlsConfig::new(), Arc::new(AnyServerCert(provider)));
    let channel = connect(url, unverified).await?;
    let ca_pem = ClusterJoinClient::new(channel)
        .get_ca(GetCaRequest {})
        .await
        .map_err(|s| JoinError::GetCa {
            url: url.to_string(),
            message: s.message().to_string(),
        })?
        .into_inner()
        .ca_pem;
    let got = pin(&ca_pem)?;
    if got != token.pin {
        return Err(JoinError::PinMismatch {
            url: url.to_string(),
            expected: token.pin.clone(),
            got,
        });
    }
    Ok(ca_pem)
}

/// Joins as `role` named `name`, asking for `sans`: a new key, its certificate and the CA.
pub async fn join(
    ticket: &JoinTicket,
    role: NodeRole,
    name: &str,
    sans: &[String],
    local: Option<IpAddr>,
) -> Result<TlsIdentity, JoinError> {
    let token = JoinToken::parse(&ticket.token)?;
    let url = ticket.url.as_str();
    let ca_pem = fetch_ca(url, &token, local).await?;
    let verified = base(url, local)?
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem)));
    let channel = connect(url, verified).await?;
    let (key_pem, csr_pem) = new_key_and_csr(name)?;
    let reply = ClusterJoinClient::new(channel)
        .join(JoinRequest {
            token: ticket.token.trim().to_string(),
            node_name: name.to_string(),
            role: role.as_str().to_string(),
            csr_pem,
            sans: sans.to_vec(),
        })
        .await
        .map_err(|s| JoinError::Refused {
            url: url.to_string(),
            code: s.code(),
            message: s.message().to_string(),
        })?
        .into_inner();
    tracing::info!(%url, %role, %name, "joined: certificate issued");
    Ok(TlsIdentity {
        key_pem,
        cert_pem: reply.cert_pem,
        // The pinned CA, not whatever the reply says.
        ca_pem,
    })
}

/// The identity kept in `dir`; on first use, joins with `ticket` and keeps what it got.
pub async fn load_or_join(
    dir: &Path,
    ticket: Option<&JoinTicket>,
    role: NodeRole,
    name: &str,
    sans: &[String],
    local: Option<IpAddr>,
) -> Result<TlsIdentity, JoinError> {
    if let Some(id) = TlsIdentity::load(dir)? {
        return Ok(id);
    }
    let ticket = ticket.ok_or_else(|| JoinError::NoIdentity {
        dir: dir.to_path_buf(),
    })?;
    let id = join(ticket, role, name, sans, local).await?;
    id.save(dir)?;
    Ok(id)
}

/// Asks the cluster at `url` to add this control-plane node as a voter (with mutual TLS);
/// returns once it has caught up and votes.
pub async fn add_voter(
    identity: &TlsIdentity,
    url: &str,
    request: AddVoterRequest,
    local: Option<IpAddr>,
) -> Result<(), JoinError> {
    let endpoint = base(url, local)?.tls_config(identity.client_tls());
    let channel = connect(url, endpoint).await?;
    ClusterJoinClient::new(channel)
        .add_voter(request)
        .await
        .map_err(|s| JoinError::Refused {
            url: url.to_string(),
            code: s.code(),
            message: s.message().to_string(),
        })?;
    Ok(())
}
