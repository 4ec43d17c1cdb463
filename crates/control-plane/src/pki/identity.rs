//! A node's TLS identity on disk: its private key (`node.key`, mode 0600), its certificate
//! (`node.crt`) and the cluster CA it trusts (`ca.crt`), in one directory (mode 0700), and the
//! tonic TLS settings made from them.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use super::{NodeRole, first_cert_der, subject_of};

const KEY: &str = "node.key";
const CERT: &str = "node.crt";
const CA: &str = "ca.crt";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{dir}: has {present} but not {missing}: remove the directory to join again")]
    Partial {
        dir: PathBuf,
        present: &'static str,
        missing: &'static str,
    },
    #[error("{0}: not a certificate of this cluster's kind (no role and name in its subject)")]
    NotOurs(PathBuf),
    #[error("{url}: {message}")]
    Url { url: String, message: String },
}

/// A node's key, its certificate and the CA, all PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("subject", &self.subject())
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read(path: &Path) -> Result<Option<String>, IdentityError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Written to a temporary file with `mode`, synced, then renamed.
fn write(path: &Path, text: &str, mode: u32) -> Result<(), IdentityError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Creates `dir` (and its parents) with mode 0700 if missing.
pub fn create_private_dir(dir: &Path) -> Result<(), IdentityError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

impl TlsIdentity {
    /// The identity kept in `dir`, or `None` if there is none yet.
    pub fn load(dir: &Path) -> Result<Option<TlsIdentity>, IdentityError> {
        let key = read(&dir.join(KEY))?;
        let cert = read(&dir.join(CERT))?;
        let ca = read(&dir.join(CA))?;
        let partial = |present, missing| IdentityError::Partial {
            dir: dir.to_path_buf(),
            present,
            missing,
        };
        match (key, cert, ca) {
            (None, None, None) => Ok(None),
            (Some(key_pem), Some(cert_pem), Some(ca_pem)) => {
                let id = TlsIdentity {
                    key_pem,
                    cert_pem,
                    ca_pem,
                };
                if id.subject().is_none() {
                    return Err(IdentityError::NotOurs(dir.join(CERT)));
                }
                Ok(Some(id))
            }
            (None, _, _) => Err(partial("a certificate", KEY)),
            (_, None, _) => Err(partial(KEY, CERT)),
            (_, _, None) => Err(partial(KEY, CA)),
        }
    }

    /// Keeps the identity in `dir`: the key readable by its owner only.
    pub fn save(&self, dir: &Path) -> Result<(), IdentityError> {
        create_private_dir(dir)?;
        write(&dir.join(CA), &self.ca_pem, 0o644)?;
        write(&dir.join(KEY), &self.key_pem, 0o600)?;
        // The certificate last: `load` sees a complete identity or reports a partial one.
        write(&dir.join(CERT), &self.cert_pem, 0o644)
    }

    /// The role and name the certificate was issued for.
    pub fn subject(&self) -> Option<(NodeRole, String)> {
        let der = first_cert_der(&self.cert_pem, "node certificate").ok()?;
        subject_of(der.as_ref())
    }

    fn tonic_identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    fn ca(&self) -> Certificate {
        Certificate::from_pem(&self.ca_pem)
    }

    /// A gRPC server presenting this certificate; client certificates are verified against the
    /// CA when given, and each service decides whether it needs one
    /// ([`super::peer::authorize`]).
    pub fn server_tls(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.tonic_identity())
            .client_ca_root(self.ca())
            .client_auth_optional(true)
    }

    /// A gRPC client presenting this certificate and trusting only the cluster CA.
    pub fn client_tls(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca())
            .identity(self.tonic_identity())
    }

    /// An endpoint for `url` (`https://host:port`) with mutual TLS.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, IdentityError> {
        https_endpoint(url)?
            .tls_config(self.client_tls())
            .map_err(|e| IdentityError::Url {
                url: url.to_string(),
                message: e.to_string(),
            })
    }
}

/// An endpoint for a control plane's gRPC URL, which must be `https://`.
pub(crate) fn https_endpoint(url: &str) -> Result<Endpoint, IdentityError> {
    let bad = |message: &str| IdentityError::Url {
        url: url.to_string(),
        message: message.to_string(),
    };
    if !url.starts_with("https://") {
        return Err(bad(
            "the control plane's gRPC listener speaks TLS: use https://HOST:PORT",
        ));
    }
    Endpoint::from_shared(url.to_string()).map_err(|e| bad(&e.to_string()))
}
