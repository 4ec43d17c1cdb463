//! The cluster's PKI: one CA, certificates for every node, and join tokens.
//!
//! The first control-plane node makes the CA (ECDSA P-256, ten years) when it bootstraps and
//! writes it into the replicated state, so that any control-plane node can sign a join and a
//! snapshot carries it. Every node has its own key, made where it runs, and a certificate
//! signed by the CA (one year) naming its role and name in the subject (`OU=<role>`,
//! `CN=<name>`). A gRPC server learns who is calling from the verified client certificate.
//!
//! A join token is `OPJ1.<pin>.<secret>`: the pin is the sha256 of the CA certificate's DER, so
//! a joiner can check the CA it is shown before trusting it (as kubeadm's discovery hash does);
//! the control plane keeps only the sha256 of the secret, with the token's role and expiry.
//!
//! Everything here is pure (time passed in): [`identity`] keeps a node's key and certificates
//! on disk, [`peer`] reads the caller of a gRPC request, [`join`] is the joining client.

pub mod identity;
pub mod join;
pub mod peer;

use std::fmt;
use std::net::IpAddr;

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::auth::{hex, sha256_hex};

/// The CA lives ten years; rotating it is not built.
const CA_DAYS: i64 = 3650;
/// A node certificate lives one year; renewal is not built.
const LEAF_DAYS: i64 = 365;
/// Certificates are valid from a little before they are made, for clocks slightly behind.
const BACKDATE_MINUTES: i64 = 60;
const MAX_SANS: usize = 16;
pub const TOKEN_PREFIX: &str = "OPJ1";

/// What a certificate (and the join token that got it) lets a node be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    ControlPlane,
    Edge,
    Gslb,
}

impl NodeRole {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeRole::ControlPlane => "control-plane",
            NodeRole::Edge => "edge",
            NodeRole::Gslb => "gslb",
        }
    }

    pub fn parse(s: &str) -> Option<NodeRole> {
        match s {
            "control-plane" => Some(NodeRole::ControlPlane),
            "edge" => Some(NodeRole::Edge),
            "gslb" => Some(NodeRole::Gslb),
            _ => None,
        }
    }
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("making a key or certificate: {0}")]
    Generate(rcgen::Error),
    #[error("the certificate signing request is not valid: {0}")]
    BadCsr(rcgen::Error),
    #[error("{0}: no PEM certificate in it")]
    BadPem(&'static str),
    #[error("the stored CA key does not parse: {0}")]
    BadCaKey(rcgen::Error),
    #[error("sans[{index}]: {message}")]
    BadSan { index: usize, message: String },
    #[error("sans: at most {MAX_SANS} names")]
    TooManySans,
    #[error("node_name: must be 1 to 253 printable characters")]
    BadName,
}

/// Why a join is refused; each message names the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    #[error("join token: malformed (expected OPJ1.<64 hex digits>.<secret>)")]
    Malformed,
    #[error("join token: made for another cluster (its CA pin does not match this cluster's CA)")]
    WrongCluster,
    #[error("join token: unknown (wrong secret, or not made by this cluster)")]
    Unknown,
    #[error("join token: expired at {at_ms} (Unix ms)")]
    Expired { at_ms: i64 },
    #[error("join token: it is for role {token}, not {asked}")]
    WrongRole { token: NodeRole, asked: NodeRole },
}

/// A join token, as handed to an operator.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Hex sha256 of the CA certificate's DER.
    pub pin: String,
    pub secret: String,
}

impl JoinToken {
    /// A new token for the CA with this pin: 256 random bits of secret.
    pub fn new(pin: &str) -> JoinToken {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        JoinToken {
            pin: pin.to_string(),
            secret: hex(&bytes),
        }
    }

    pub fn parse(text: &str) -> Result<JoinToken, JoinRefusal> {
        let mut parts = text.trim().split('.');
        let (Some(TOKEN_PREFIX), Some(pin), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JoinRefusal::Malformed);
        };
        let is_hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
        if pin.len() != 64 || !is_hex(pin) || secret.len() < 16 || !is_hex(secret) {
            return Err(JoinRefusal::Malformed);
        }
        Ok(JoinToken {
            pin: pin.to_ascii_lowercase(),
            secret: secret.to_string(),
        })
    }

    /// The form the control plane keeps it in.
    pub fn hash(&self) -> String {
        sha256_hex(self.secret.as_bytes())
    }
}

/// The secret stays out of logs.
impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOKEN_PREFIX}.{}.{}", self.pin, self.secret)
    }
}

/// What the control plane knows of a join token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinTokenRecord {
    pub role: NodeRole,
    pub expires_at_ms: i64,
}

/// Whether a token (looked up by its hash: `None` if unknown) lets a node join as `asked` now.
pub fn check_join(
    record: Option<JoinTokenRecord>,
    asked: NodeRole,
    now_ms: i64,
) -> Result<(), JoinRefusal> {
    let record = record.ok_or(JoinRefusal::Unknown)?;
    if now_ms >= record.expires_at_ms {
        return Err(JoinRefusal::Expired {
            at_ms: record.expires_at_ms,
        });
    }
    if record.role != asked {
        return Err(JoinRefusal::WrongRole {
            token: record.role,
            asked,
        });
    }
    Ok(())
}

/// The cluster CA: its certificate and private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CaKeys {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CaKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaKeys").finish_non_exhaustive()
    }
}

fn at(now_ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(now_ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[0] &= 0x7f; // a positive INTEGER
    SerialNumber::from_slice(&bytes)
}

/// A new cluster CA, valid from `now_ms` for ten years.
pub fn new_ca(now_ms: i64) -> Result<CaKeys, PkiError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(PkiError::Generate)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "outpost");
    dn.push(DnType::CommonName, "outpost cluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = at(now_ms) - time::Duration::minutes(BACKDATE_MINUTES);
    params.not_after = at(now_ms) + time::Duration::days(CA_DAYS);
    params.serial_number = Some(serial());
    let cert = params.self_signed(&key).map_err(PkiError::Generate)?;
    Ok(CaKeys {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The DER of the first certificate in `pem`.
pub fn first_cert_der(pem: &str, what: &'static str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or(PkiError::BadPem(what))
}

/// The pin of a CA certificate: hex sha256 of its DER.
pub fn pin(ca_pem: &str) -> Result<String, PkiError> {
    Ok(sha256_hex(
        first_cert_der(ca_pem, "CA certificate")?.as_ref(),
    ))
}

/// Checks the names a certificate is asked for: IP addresses or DNS names, at most 16.
pub fn check_sans(sans: &[String]) -> Result<(), PkiError> {
    if sans.len() > MAX_SANS {
        return Err(PkiError::TooManySans);
    }
    for (index, san) in sans.iter().enumerate() {
        if san.parse::<IpAddr>().is_ok() {
            continue;
        }
        let dns_ok = !san.is_empty()
            && san.len() <= 253
            && san.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
            });
        if !dns_ok {
            return Err(PkiError::BadSan {
                index,
                message: format!("{san:?} is neither an IP address nor a DNS name"),
            });
        }
    }
    Ok(())
}

pub fn check_name(name: &str) -> Result<(), PkiError> {
    if name.is_empty() || name.len() > 253 || name.chars().any(|c| c.is_control()) {
        return Err(PkiError::BadName);
    }
    Ok(())
}

/// A new key and a CSR for it, on the joining node. Returns (key PEM, CSR PEM).
pub fn new_key_and_csr(name: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(PkiError::Generate)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(PkiError::Generate)?;
    Ok((key.serialize_pem(), csr))
}

/// Signs a node certificate for the key in `csr_pem`: subject `O=outpost, OU=<role>,
/// CN=<name>`, the given SANs, server and client auth, valid one year from `now_ms`. The CSR's
/// own subject and extensions are ignored: the control plane decides what is certified.
pub fn issue(
    ca: &CaKeys,
    csr_pem: &str,
    name: &str,
    role: NodeRole,
    sans: &[String],
    now_ms: i64,
) -> Result<String, PkiError> {
    check_name(name)?;
    check_sans(sans)?;
    let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::BadCsr)?;
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(PkiError::BadCaKey)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(PkiError::BadCaKey)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "outpost");
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => s
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(PkiError::Generate),
        })
        .collect::<Result<_, _>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = at(now_ms) - time::Duration::minutes(BACKDATE_MINUTES);
    params.not_after = at(now_ms) + time::Duration::days(LEAF_DAYS);
    params.serial_number = Some(serial());
    let cert = params
        .signed_by(&csr.public_key, &issuer)
        .map_err(PkiError::Generate)?;
    Ok(cert.pem())
}

/// Who a verified certificate says its holder is: `(role, name)` from `OU` and `CN`.
/// `None` if it does not parse or does not name a known role.
pub fn subject_of(der: &[u8]) -> Option<(NodeRole, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let role = subject
        .iter_organizational_unit()
        .next()?
        .as_str()
        .ok()
        .and_then(NodeRole::parse)?;
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some((role, name))
}

#[cfg(test)]
mod tests;
