//! Certificate checks for `sslhandshake`, with lua-nginx-module's outcomes and words.
//!
//! nginx verifies the chain first and reports OpenSSL's `X509_V_ERR_*` code and text
//! (`"18: self-signed certificate"`); then, only when a server name was given, the host
//! (`"certificate host mismatch"`). rustls (webpki) verifies in the same order, so
//! [`OpenrestyVerifier`] keeps webpki's decision and changes only the words, carried to the
//! handshake's caller in a [`VerifyFailure`].

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};

/// Why verification failed, in lua-nginx-module's words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct VerifyFailure(pub &'static str);

/// webpki's verification; the host is checked only when `sslhandshake` got a server name.
#[derive(Debug)]
pub struct OpenrestyVerifier {
    pub inner: Arc<WebPkiServerVerifier>,
    pub check_host: bool,
}

impl ServerCertVerifier for OpenrestyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(v) => Ok(v),
            // The name is checked after the chain, so the chain is good here.
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_host => Ok(ServerCertVerified::assertion()),
            Err(Error::InvalidCertificate(e)) => Err(Error::InvalidCertificate(
                CertificateError::Other(OtherError(Arc::new(VerifyFailure(openssl_words(
                    &e,
                    end_entity,
                    intermediates,
                ))))),
            )),
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `ssl_verify` false (the default): encrypt, accept any certificate, as nginx does.
#[derive(Debug)]
pub struct NoVerification;

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// OpenSSL 3's code and text for what webpki found (as Debian's nginx reports them).
fn openssl_words(
    e: &CertificateError,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> &'static str {
    use CertificateError as C;
    match e {
        C::UnknownIssuer if intermediates.is_empty() && is_self_issued(end_entity) => {
            "18: self-signed certificate"
        }
        C::UnknownIssuer if intermediates.last().is_some_and(|c| is_self_issued(c)) => {
            "19: self-signed certificate in certificate chain"
        }
        C::UnknownIssuer => "20: unable to get local issuer certificate",
        C::Expired | C::ExpiredContext { .. } => "10: certificate has expired",
        C::NotValidYet | C::NotValidYetContext { .. } => "9: certificate is not yet valid",
        C::Revoked => "23: certificate revoked",
        C::BadSignature
        | C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            "7: certificate signature failure"
        }
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "26: unsupported certificate purpose"
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => "certificate host mismatch",
        _ => "handshake failed",
    }
}

/// Whether a DER certificate names itself as its issuer (what OpenSSL calls self-signed when
/// no trust anchor is found for it). Anything unparsable is not.
pub fn is_self_issued(der: &[u8]) -> bool {
    issuer_and_subject(der).is_some_and(|(issuer, subject)| issuer == subject)
}

/// The encoded issuer and subject names of a certificate's `tbsCertificate`.
fn issuer_and_subject(der: &[u8]) -> Option<(&[u8], &[u8])> {
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0;
    let (SEQUENCE, cert, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(cert)? else {
        return None;
    };
    let (tag, _, rest) = tlv(tbs)?;
    // After the optional [0] version comes the serial number.
    let rest = if tag == VERSION { tlv(rest)?.2 } else { rest };
    let (_signature_algorithm, _, rest) = tlv(rest)?;
    let (SEQUENCE, issuer, rest) = tlv(rest)? else {
        return None;
    };
    let (_validity, _, rest) = tlv(rest)?;
    let (SEQUENCE, subject, _) = tlv(rest)? else {
        return None;
    };
    Some((issuer, subject))
}

/// One DER element: its tag, its content and what follows it. Definite lengths only.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_self_issued() {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        assert!(is_self_issued(c.cert.der()));
    }

    #[test]
    fn a_certificate_signed_by_a_ca_is_not_self_issued() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        assert!(is_self_issued(ca.der()));
        assert!(!is_self_issued(leaf.der()));
    }

    #[test]
    fn garbage_and_truncated_certificates_are_not_self_issued() {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let der: &[u8] = c.cert.der();
        for cut in [0, 1, 2, 10, der.len() / 2, der.len() - 1] {
            assert!(!is_self_issued(&der[..cut]), "cut at {cut}");
        }
        assert!(!is_self_issued(&[]));
        assert!(!is_self_issued(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]));
        assert!(!is_self_issued(&[0x30, 0x80, 0x00, 0x00]));
        assert!(!is_self_issued(b"not a certificate at all"));
    }
}
