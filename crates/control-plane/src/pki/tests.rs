use super::*;

const NOW: i64 = 1_750_000_000_000;

#[test]
fn a_join_token_prints_and_parses_back_and_is_kept_as_a_hash_of_its_secret() {
    let token = JoinToken::new(&"ab".repeat(32));
    let text = token.to_string();
    assert!(text.starts_with("OPJ1.abab"), "{text}");
    let back = JoinToken::parse(&format!("  {text}\n")).unwrap();
    assert!(back == token);
    assert_eq!(token.hash(), sha256_hex(token.secret.as_bytes()));
    assert!(!token.hash().contains(&token.secret));
    assert!(JoinToken::new(&token.pin) != token, "secrets are random");
}

#[test]
fn malformed_join_tokens_are_refused() {
    let pin = "cd".repeat(32);
    for bad in [
        String::new(),
        "opt_0123".into(),
        format!("OPJ2.{pin}.{}", "0".repeat(64)),
        format!("OPJ1.{}.{}", "cd".repeat(31), "0".repeat(64)),
        format!("OPJ1.{pin}.short"),
        format!("OPJ1.{pin}.{}.extra", "0".repeat(64)),
        format!("OPJ1.{pin}.{}", "z".repeat(64)),
    ] {
        assert_eq!(
            JoinToken::parse(&bad),
            Err(JoinRefusal::Malformed),
            "{bad:?}"
        );
    }
}

#[test]
fn a_join_is_allowed_only_for_a_known_unexpired_token_of_the_role_asked() {
    let edge = JoinTokenRecord {
        role: NodeRole::Edge,
        expires_at_ms: NOW + 1000,
    };
    assert_eq!(check_join(Some(edge), NodeRole::Edge, NOW), Ok(()));
    assert_eq!(
        check_join(None, NodeRole::Edge, NOW),
        Err(JoinRefusal::Unknown)
    );
    assert_eq!(
        check_join(Some(edge), NodeRole::Edge, NOW + 1000),
        Err(JoinRefusal::Expired { at_ms: NOW + 1000 })
    );
    let wrong = check_join(Some(edge), NodeRole::ControlPlane, NOW).unwrap_err();
    assert_eq!(
        wrong,
        JoinRefusal::WrongRole {
            token: NodeRole::Edge,
            asked: NodeRole::ControlPlane
        }
    );
    assert_eq!(
        wrong.to_string(),
        "join token: it is for role edge, not control-plane"
    );
}

#[test]
fn a_certificate_issued_from_a_csr_names_role_and_node_and_chains_to_the_ca() {
    let ca = new_ca(NOW).unwrap();
    let (key_pem, csr_pem) = new_key_and_csr("whatever the csr says").unwrap();
    let sans = vec!["10.0.0.5".to_string(), "cp1.example.net".to_string()];
    let cert_pem = issue(&ca, &csr_pem, "cp-1", NodeRole::ControlPlane, &sans, NOW).unwrap();
    let der = first_cert_der(&cert_pem, "leaf").unwrap();
    assert_eq!(
        subject_of(der.as_ref()),
        Some((NodeRole::ControlPlane, "cp-1".to_string()))
    );
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let ca_der = first_cert_der(&ca.cert_pem, "ca").unwrap();
    let (_, ca_cert) = x509_parser::parse_x509_certificate(ca_der.as_ref()).unwrap();
    assert_eq!(cert.issuer(), ca_cert.subject());
    cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    // The certificate is for the key the joiner kept.
    let key = KeyPair::from_pem(&key_pem).unwrap();
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    let days = |a: i64, b: i64| (b - a) / 86_400;
    let v = cert.validity();
    assert_eq!(
        days(NOW / 1000, v.not_after.timestamp()),
        LEAF_DAYS,
        "one year"
    );
    let cv = ca_cert.validity();
    assert_eq!(days(NOW / 1000, cv.not_after.timestamp()), CA_DAYS);
    assert!(ca_cert.is_ca());
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert_eq!(san.value.general_names.len(), 2);
}

#[test]
fn bad_requests_for_a_certificate_are_refused_with_the_field_named() {
    let ca = new_ca(NOW).unwrap();
    let (_, csr) = new_key_and_csr("n").unwrap();
    let err = issue(&ca, &csr, "n", NodeRole::Edge, &["a b".into()], NOW).unwrap_err();
    assert!(err.to_string().starts_with("sans[0]:"), "{err}");
    let many: Vec<String> = (0..17).map(|i| format!("h{i}.test")).collect();
    assert!(issue(&ca, &csr, "n", NodeRole::Edge, &many, NOW).is_err());
    let err = issue(&ca, &csr, "", NodeRole::Edge, &[], NOW).unwrap_err();
    assert!(err.to_string().starts_with("node_name:"), "{err}");
    let err = issue(&ca, "not a csr", "n", NodeRole::Edge, &[], NOW).unwrap_err();
    assert!(matches!(err, PkiError::BadCsr(_)), "{err}");
}

#[test]
fn the_pin_is_the_sha256_of_the_ca_certificate_der() {
    let ca = new_ca(NOW).unwrap();
    let der = first_cert_der(&ca.cert_pem, "ca").unwrap();
    assert_eq!(pin(&ca.cert_pem).unwrap(), sha256_hex(der.as_ref()));
    assert_ne!(
        pin(&ca.cert_pem).unwrap(),
        pin(&new_ca(NOW).unwrap().cert_pem).unwrap()
    );
    assert!(pin("garbage").is_err());
}
