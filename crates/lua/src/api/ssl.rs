//! `require "ngx.ssl"`, as lua-resty-core's module: the TLS connection a request came on, and,
//! in the ssl_cert phase (the edge's `lua_ssl_certificate`, nginx's `ssl_certificate_by_lua`),
//! the certificate and key the handshake will use. Errors read as nginx's OpenSSL calls word
//! them (`PEM_read_bio_X509_AUX() failed`, `d2i_PrivateKey_bio() failed`).

use mlua::{AnyUserData, Lua, MultiValue, Table, UserData, Value};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};

use crate::request;

/// What a request's Lua sees of its TLS connection.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// The client's SNI, if it sent one.
    pub server_name: Option<String>,
    /// The protocol version as OpenSSL numbers it (`0x0303` TLS 1.2, `0x0304` TLS 1.3).
    pub version: u16,
}

/// What the ssl_cert phase chose: `cleared` drops the configured certificate; a chain and a
/// key, both set, replace it.
#[derive(Default)]
pub struct CertChoice {
    pub cleared: bool,
    pub chain: Option<Vec<CertificateDer<'static>>>,
    pub key: Option<PrivateKeyDer<'static>>,
}

/// `parse_pem_cert`'s result, for `set_cert`.
struct ParsedChain(Vec<CertificateDer<'static>>);

impl UserData for ParsedChain {}

/// `parse_pem_priv_key`'s result, for `set_priv_key`.
struct ParsedKey(PrivateKeyDer<'static>);

impl UserData for ParsedKey {}

const BAD_PEM_CERT: &str = "PEM_read_bio_X509_AUX() failed";
const BAD_PEM_KEY: &str = "PEM_read_bio_PrivateKey() failed";
const BAD_DER_CERT: &str = "d2i_X509_bio() failed";
const BAD_DER_KEY: &str = "d2i_PrivateKey_bio() failed";

fn ok(lua: &Lua, v: impl mlua::IntoLua) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_iter([v.into_lua(lua)?]))
}

fn fail(lua: &Lua, e: &str) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_iter([
        Value::Nil,
        Value::String(lua.create_string(e)?),
    ]))
}

/// Runs `f` with the current request; outside one, lua-resty-core's "no request found".
fn with<R>(f: impl FnOnce(&mut request::RequestState) -> R) -> mlua::Result<R> {
    request::with(|r| Ok(f(r)))
}

/// The certificates in a PEM text (the leaf first); `None` if it holds none or a broken one.
fn pem_chain(pem: &[u8]) -> Option<Vec<CertificateDer<'static>>> {
    let chain: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .ok()?;
    (!chain.is_empty()).then_some(chain)
}

/// A private key ring can sign with, from PEM (PKCS#8, PKCS#1 or SEC1).
fn pem_key(pem: &[u8]) -> Option<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem)
        .ok()
        .filter(|k| rustls::crypto::ring::sign::any_supported_type(k).is_ok())
}

/// A private key from DER, in whichever of OpenSSL's encodings it is.
fn der_key(der: &[u8]) -> Option<PrivateKeyDer<'static>> {
    let candidates: [PrivateKeyDer<'static>; 3] = [
        PrivatePkcs8KeyDer::from(der.to_vec()).into(),
        PrivatePkcs1KeyDer::from(der.to_vec()).into(),
        PrivateSec1KeyDer::from(der.to_vec()).into(),
    ];
    candidates
        .into_iter()
        .find(|k| rustls::crypto::ring::sign::any_supported_type(k).is_ok())
}

/// Certificates given as their DER encodings one after the other (what `cert_pem_to_der`
/// makes of a chain), split at each outer SEQUENCE. `None` if the bytes are no such list.
fn der_chain(der: &[u8]) -> Option<Vec<CertificateDer<'static>>> {
    let mut chain = Vec::new();
    let mut rest = der;
    while !rest.is_empty() {
        let len = der_sequence_len(rest)?;
        let (cert, tail) = rest.split_at(len);
        chain.push(CertificateDer::from(cert.to_vec()));
        rest = tail;
    }
    (!chain.is_empty()).then_some(chain)
}

/// The length, header included, of the DER SEQUENCE `bytes` starts with.
fn der_sequence_len(bytes: &[u8]) -> Option<usize> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (body, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let body = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        (body, 2 + n)
    };
    let total = header.checked_add(body)?;
    (total <= bytes.len()).then_some(total)
}

fn version_str(v: u16) -> Option<&'static str> {
    Some(match v {
        0x0300 => "SSLv3",
        0x0301 => "TLSv1",
        0x0302 => "TLSv1.1",
        0x0303 => "TLSv1.2",
        0x0304 => "TLSv1.3",
        _ => return None,
    })
}

/// The connection's addresses as lua-resty-core gives them: the raw bytes and the family.
fn raw_addr(lua: &Lua, server: bool) -> mlua::Result<MultiValue> {
    let addr = with(|r| {
        r.tls
            .is_some()
            .then_some(if server { r.server } else { r.client })
    })?;
    let Some(addr) = addr else {
        return Ok(MultiValue::from_iter([
            Value::Nil,
            Value::Nil,
            Value::String(lua.create_string("bad request")?),
        ]));
    };
    let (bytes, family) = match addr.ip() {
        std::net::IpAddr::V4(ip) => (ip.octets().to_vec(), "inet"),
        std::net::IpAddr::V6(ip) => (ip.octets().to_vec(), "inet6"),
    };
    Ok(MultiValue::from_iter([
        Value::String(lua.create_string(bytes)?),
        Value::String(lua.create_string(family)?),
    ]))
}

/// Sets part of the ssl_cert phase's choice. Elsewhere there is no handshake to change:
/// over TLS the certificate is already sent, and nginx's call succeeds without effect there;
/// over plain TCP it fails with `bad request`.
fn choose(lua: &Lua, f: impl FnOnce(&mut CertChoice)) -> mlua::Result<MultiValue> {
    let done = with(|r| match (&mut r.cert_choice, &r.tls) {
        (Some(choice), _) => {
            f(choice);
            true
        }
        (None, tls) => tls.is_some(),
    })?;
    if done {
        ok(lua, true)
    } else {
        fail(lua, "bad request")
    }
}

pub fn install(lua: &Lua, preload: &Table) -> mlua::Result<()> {
    preload.set("ngx.ssl", lua.create_function(|lua, ()| module(lua))?)
}

fn module(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    m.set("version", "0.1.25")?;
    for (name, v) in [
        ("SSL3_VERSION", 0x0300),
        ("TLS1_VERSION", 0x0301),
        ("TLS1_1_VERSION", 0x0302),
        ("TLS1_2_VERSION", 0x0303),
        ("TLS1_3_VERSION", 0x0304),
    ] {
        m.set(name, v)?;
    }
    m.set(
        "server_name",
        lua.create_function(|lua, ()| {
            let name = with(|r| r.tls.as_ref().and_then(|t| t.server_name.clone()))?;
            match name {
                Some(n) => ok(lua, n),
                None => ok(lua, Value::Nil),
            }
        })?,
    )?;
    m.set(
        "server_port",
        lua.create_function(|lua, ()| {
            match with(|r| r.tls.is_some().then_some(r.server.port()))? {
                Some(p) => ok(lua, p),
                None => fail(lua, "bad request"),
            }
        })?,
    )?;
    m.set(
        "raw_server_addr",
        lua.create_function(|lua, ()| raw_addr(lua, true))?,
    )?;
    m.set(
        "raw_client_addr",
        lua.create_function(|lua, ()| raw_addr(lua, false))?,
    )?;
    m.set(
        "get_tls1_version",
        lua.create_function(
            |lua, ()| match with(|r| r.tls.as_ref().map(|t| t.version))? {
                Some(v) => ok(lua, v),
                None => fail(lua, "bad request"),
            },
        )?,
    )?;
    m.set(
        "get_tls1_version_str",
        lua.create_function(
            |lua, ()| match with(|r| r.tls.as_ref().map(|t| t.version))? {
                Some(v) => match version_str(v) {
                    Some(s) => ok(lua, s),
                    None => fail(lua, "unknown version"),
                },
                None => fail(lua, "bad request"),
            },
        )?,
    )?;
    m.set(
        "cert_pem_to_der",
        lua.create_function(
            |lua, pem: mlua::LuaString| match pem_chain(&pem.as_bytes()) {
                Some(chain) => {
                    let der: Vec<u8> = chain.iter().flat_map(|c| c.as_ref().to_vec()).collect();
                    ok(lua, lua.create_string(der)?)
                }
                None => fail(lua, BAD_PEM_CERT),
            },
        )?,
    )?;
    m.set(
        "priv_key_pem_to_der",
        lua.create_function(
            |lua, (pem, _passphrase): (mlua::LuaString, Option<mlua::LuaString>)| match pem_key(
                &pem.as_bytes(),
            ) {
                Some(key) => ok(lua, lua.create_string(key.secret_der())?),
                None => fail(lua, BAD_PEM_KEY),
            },
        )?,
    )?;
    m.set(
        "parse_pem_cert",
        lua.create_function(
            |lua, pem: mlua::LuaString| match pem_chain(&pem.as_bytes()) {
                Some(chain) => ok(lua, lua.create_userdata(ParsedChain(chain))?),
                None => fail(lua, BAD_PEM_CERT),
            },
        )?,
    )?;
    m.set(
        "parse_pem_priv_key",
        lua.create_function(|lua, pem: mlua::LuaString| match pem_key(&pem.as_bytes()) {
            Some(key) => ok(lua, lua.create_userdata(ParsedKey(key))?),
            None => fail(lua, BAD_PEM_KEY),
        })?,
    )?;
    m.set(
        "clear_certs",
        lua.create_function(|lua, ()| {
            choose(lua, |c| {
                *c = CertChoice {
                    cleared: true,
                    ..CertChoice::default()
                }
            })
        })?,
    )?;
    m.set(
        "set_der_cert",
        lua.create_function(
            |lua, der: mlua::LuaString| match der_chain(&der.as_bytes()) {
                Some(chain) => choose(lua, |c| c.chain = Some(chain)),
                None => fail(lua, BAD_DER_CERT),
            },
        )?,
    )?;
    m.set(
        "set_der_priv_key",
        lua.create_function(|lua, der: mlua::LuaString| match der_key(&der.as_bytes()) {
            Some(key) => choose(lua, |c| c.key = Some(key)),
            None => fail(lua, BAD_DER_KEY),
        })?,
    )?;
    m.set(
        "set_cert",
        lua.create_function(|lua, chain: AnyUserData| {
            let chain = chain.borrow::<ParsedChain>()?.0.clone();
            choose(lua, |c| c.chain = Some(chain))
        })?,
    )?;
    m.set(
        "set_priv_key",
        lua.create_function(|lua, key: AnyUserData| {
            let key = key.borrow::<ParsedKey>()?.0.clone_key();
            choose(lua, |c| c.key = Some(key))
        })?,
    )?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_chains_split_at_each_certificate() {
        // Two minimal SEQUENCEs, one with a long-form length.
        let mut der = vec![0x30, 0x03, 1, 2, 3];
        der.extend([0x30, 0x81, 0x02, 9, 9]);
        let chain = der_chain(&der).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1].as_ref(), &[0x30, 0x81, 0x02, 9, 9]);
        assert!(der_chain(b"garbage").is_none());
        assert!(der_chain(&[0x30, 0x05, 1]).is_none(), "truncated");
        assert!(der_chain(&[]).is_none());
    }
}
