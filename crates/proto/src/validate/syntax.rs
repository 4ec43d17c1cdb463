//! Checks of single values: names, domains, addresses, header names, templates, regexes, CIDRs,
//! PEM blocks. Each returns a message for the report, never panics.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{FieldPath, Report};
use crate::expression;
use crate::pb::LuaModule;

/// Object names: non-empty, `[A-Za-z0-9_.-]`, unique in their list.
pub(crate) fn check_object_name<'a>(
    name: &'a str,
    path: &FieldPath,
    seen: &mut HashSet<&'a str>,
    report: &mut Report,
) {
    if name.is_empty() {
        report.error(path, "must not be empty");
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        report.error(
            path,
            format!("{name:?} may only contain letters, digits, '_', '-' and '.'"),
        );
    } else if !seen.insert(name) {
        report.error(path, format!("duplicate name {name:?}"));
    }
}

/// `example.com`, `*.example.com`: lowercase LDH labels, a wildcard only as the first label.
pub(crate) fn domain(d: &str) -> Result<(), String> {
    let rest = d.strip_prefix("*.").unwrap_or(d);
    if rest.is_empty() || rest.len() > 253 {
        return Err(format!("{d:?} is not a domain name"));
    }
    for label in rest.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "{d:?} is not a lowercase domain name (a wildcard is allowed only as `*.` at the start)"
            ));
        }
    }
    Ok(())
}

pub(crate) fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("{s:?} is not an ip:port address"))
}

/// `host:port` where host is an IP or a DNS name.
pub(crate) fn host_port(s: &str) -> Result<(), String> {
    if socket_addr(s).is_ok() {
        return Ok(());
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} is not host:port"));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("{s:?} has an invalid port")),
    }
    domain(&host.to_ascii_lowercase()).map_err(|_| format!("{s:?} has an invalid host"))
}

/// An HTTP field name (RFC 9110 token).
pub(crate) fn header_name(s: &str) -> Result<(), String> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if s.is_empty() || !s.bytes().all(tchar) {
        Err(format!("{s:?} is not a valid header name"))
    } else {
        Ok(())
    }
}

/// A template that becomes a header value: no line breaks or NUL either.
pub(crate) fn header_template(s: &str, declared: &[&str]) -> Result<(), String> {
    if s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err("must not contain CR, LF or NUL".into());
    }
    template(s, declared)
}

/// A `$variable` template whose variables all exist.
pub(crate) fn template(s: &str, declared: &[&str]) -> Result<(), String> {
    let segments = expression::parse(s).map_err(|e| e.to_string())?;
    for seg in segments {
        match seg {
            expression::Segment::Variable(name)
                if !expression::is_known_variable(&name, declared) =>
            {
                return Err(format!("unknown variable ${name}"));
            }
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn regex(s: &str) -> Result<(), String> {
    regex::Regex::new(s)
        .map(|_| ())
        .map_err(|e| format!("invalid regex: {e}"))
}

/// A CIDR (`10.0.0.0/8`) or a single address.
pub(crate) fn cidr(s: &str) -> Result<(), String> {
    if s.parse::<ipnet::IpNet>().is_ok() || s.parse::<IpAddr>().is_ok() {
        Ok(())
    } else {
        Err(format!("{s:?} is not a CIDR or an IP address"))
    }
}

/// Counts the certificates in a PEM text; an unreadable block is an error.
pub(crate) fn pem_certificates(pem: &str) -> Result<usize, String> {
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        c.map_err(|e| format!("unreadable PEM: {e}"))?;
        n += 1;
    }
    Ok(n)
}

pub(crate) fn pem_private_key(pem: &str) -> Result<(), String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map(|_| ())
        .map_err(|e| format!("no usable private key: {e}"))
}

/// Lua module names (`app.auth`) and non-empty code.
pub(crate) fn check_lua_modules(modules: &[LuaModule], parent: &FieldPath, report: &mut Report) {
    let mut seen = HashSet::new();
    for (i, m) in modules.iter().enumerate() {
        let path = parent.index("lua_modules", i);
        check_object_name(&m.name, &path.field("name"), &mut seen, report);
        if m.code.trim().is_empty() {
            report.error(&path.field("code"), "must not be empty");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert!(domain("example.com").is_ok());
        assert!(domain("*.example.com").is_ok());
        assert!(domain("localhost").is_ok());
        assert!(domain("Example.com").is_err());
        assert!(domain("a.*.com").is_err());
        assert!(domain("*").is_err());
        assert!(domain("-a.com").is_err());
        assert!(domain("a..com").is_err());
    }

    #[test]
    fn host_ports() {
        assert!(host_port("127.0.0.1:80").is_ok());
        assert!(host_port("[::1]:80").is_ok());
        assert!(host_port("origin.internal:8080").is_ok());
        assert!(host_port("origin.internal").is_err());
        assert!(host_port("origin:0").is_err());
        assert!(host_port("origin:99999").is_err());
    }

    #[test]
    fn templates_name_unknown_variables() {
        assert!(template("$host-$http_x", &[]).is_ok());
        assert_eq!(
            template("$hots", &[]).unwrap_err(),
            "unknown variable $hots"
        );
        assert!(header_template("a\r\nb", &[]).is_err());
        assert!(template("a\r\nb", &[]).is_ok());
    }
}
