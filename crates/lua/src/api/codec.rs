//! Encodings and digests: base64, md5, sha1, crc32, URI escaping, query arguments, SQL quoting.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use md5::Digest;
use mlua::{Lua, Table, Value};

/// resty.core's coercion: `nil` and `false` are `""`, other non-strings go through `tostring`.
fn bytes_arg(lua: &Lua, v: &Value) -> mlua::Result<Vec<u8>> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Nil | Value::Boolean(false) => Ok(Vec::new()),
        other => {
            let s: mlua::LuaString = lua
                .globals()
                .get::<mlua::Function>("tostring")?
                .call(other.clone())?;
            Ok(s.as_bytes().to_vec())
        }
    }
}

/// lua-nginx-module's `ngx_http_lua_escape_uri` tables, one bit per byte that gets escaped.
/// Type 0 (URI) escapes only space, `#`, `%`, `?` and non-printables; type 2 (component, the
/// default) also the reserved characters but keeps `!*'()`.
const ESCAPE_URI: [u32; 8] = [
    0xffffffff, 0x80000029, 0x00000000, 0x80000000, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
];
const ESCAPE_COMPONENT: [u32; 8] = [
    0xffffffff, 0xfc00987d, 0x78000001, 0xb8000001, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
];

fn escape_with(b: &[u8], table: &[u32; 8]) -> String {
    let mut out = String::with_capacity(b.len());
    for &c in b {
        if table[(c >> 5) as usize] & (1 << (c & 0x1f)) != 0 {
            out.push_str(&format!("%{c:02X}"));
        } else {
            out.push(c as char);
        }
    }
    out
}

/// `ngx.escape_uri` with its default type (URI component).
pub fn escape(b: &[u8]) -> String {
    escape_with(b, &ESCAPE_COMPONENT)
}

/// `ngx.escape_uri` type 0, the set nginx escapes in a path it sends upstream.
pub fn escape_path(b: &[u8]) -> String {
    escape_with(b, &ESCAPE_URI)
}

/// HMAC (RFC 2104) over SHA-1, for `ngx.hmac_sha1`.
fn hmac_sha1(key: &[u8], msg: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 64;
    let mut k = if key.len() > BLOCK {
        sha1::Sha1::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(BLOCK, 0);
    let pad = |x: u8| k.iter().map(|b| b ^ x).collect::<Vec<u8>>();
    let mut inner = sha1::Sha1::new();
    inner.update(pad(0x36));
    inner.update(msg);
    let mut outer = sha1::Sha1::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

/// `ngx.unescape_uri`: `%XX` decoded, `+` becomes a space; invalid escapes kept as they are.
pub fn unescape(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// `a=1&a=2&b&c=` into `{a = {"1", "2"}, b = true, c = ""}`, at most `max` arguments; the
/// second value is `"truncated"` when there were more.
pub fn decode_args(
    lua: &Lua,
    args: &[u8],
    max: i64,
) -> mlua::Result<(Table, Option<&'static str>)> {
    let t = lua.create_table()?;
    let mut n = 0;
    for part in args.split(|&c| c == b'&') {
        if part.is_empty() {
            continue;
        }
        if max > 0 && n >= max {
            return Ok((t, Some("truncated")));
        }
        n += 1;
        let (k, v) = match part.iter().position(|&c| c == b'=') {
            // lua-nginx-module skips an argument with an empty name (`=v`).
            Some(0) => continue,
            Some(i) => (&part[..i], Some(&part[i + 1..])),
            None => (part, None),
        };
        let key = lua.create_string(unescape(k))?;
        let val = match v {
            Some(v) => Value::String(lua.create_string(unescape(v))?),
            None => Value::Boolean(true),
        };
        match t.raw_get::<Value>(key.clone())? {
            Value::Nil => t.raw_set(key, val)?,
            Value::Table(list) => list.raw_push(val)?,
            prev => {
                let list = lua.create_table()?;
                list.raw_push(prev)?;
                list.raw_push(val)?;
                t.raw_set(key, list)?;
            }
        }
    }
    Ok((t, None))
}

/// `ngx.encode_args`: keys and values escaped; `true` gives a bare key, `false` nothing, tables
/// repeat the key.
pub fn encode_args(lua: &Lua, t: &Table) -> mlua::Result<String> {
    let mut parts = Vec::new();
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, v) = pair?;
        let key = escape(&bytes_arg(lua, &k)?);
        let mut one = |v: &Value| -> mlua::Result<()> {
            match v {
                Value::Boolean(true) => parts.push(key.clone()),
                Value::Boolean(false) => {}
                v => parts.push(format!("{key}={}", escape(&bytes_arg(lua, v)?))),
            }
            Ok(())
        };
        match &v {
            // Every value of the table, whatever its key, as lua-nginx-module's `lua_next` loop.
            Value::Table(list) => {
                for x in list.clone().pairs::<Value, Value>() {
                    one(&x?.1)?;
                }
            }
            v => one(v)?,
        }
    }
    Ok(parts.join("&"))
}

pub fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    ngx.set(
        "encode_base64",
        lua.create_function(|lua, (s, no_pad): (Value, Option<bool>)| {
            let b = bytes_arg(lua, &s)?;
            Ok(if no_pad.unwrap_or(false) {
                STANDARD_NO_PAD.encode(b)
            } else {
                STANDARD.encode(b)
            })
        })?,
    )?;
    ngx.set(
        "decode_base64",
        lua.create_function(|lua, s: Value| {
            let b = bytes_arg(lua, &s)?;
            let engine = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            match engine.decode(b) {
                Ok(d) => Ok(Value::String(lua.create_string(d)?)),
                Err(_) => Ok(Value::Nil),
            }
        })?,
    )?;
    ngx.set(
        "md5",
        lua.create_function(|lua, s: Value| {
            let d = md5::Md5::digest(bytes_arg(lua, &s)?);
            Ok(d.iter().map(|b| format!("{b:02x}")).collect::<String>())
        })?,
    )?;
    ngx.set(
        "md5_bin",
        lua.create_function(|lua, s: Value| {
            lua.create_string(md5::Md5::digest(bytes_arg(lua, &s)?))
        })?,
    )?;
    ngx.set(
        "sha1_bin",
        lua.create_function(|lua, s: Value| {
            lua.create_string(sha1::Sha1::digest(bytes_arg(lua, &s)?))
        })?,
    )?;
    ngx.set(
        "hmac_sha1",
        lua.create_function(|lua, (key, msg): (Value, Value)| {
            lua.create_string(hmac_sha1(&bytes_arg(lua, &key)?, &bytes_arg(lua, &msg)?))
        })?,
    )?;
    ngx.set(
        "crc32_long",
        lua.create_function(|lua, s: Value| Ok(crc32fast::hash(&bytes_arg(lua, &s)?)))?,
    )?;
    ngx.set(
        "crc32_short",
        lua.create_function(|lua, s: Value| Ok(crc32fast::hash(&bytes_arg(lua, &s)?)))?,
    )?;
    ngx.set(
        "escape_uri",
        lua.create_function(|lua, (s, kind): (Value, Option<i64>)| {
            let b = bytes_arg(lua, &s)?;
            Ok(match kind {
                Some(0) => escape_with(&b, &ESCAPE_URI),
                _ => escape(&b),
            })
        })?,
    )?;
    ngx.set(
        "unescape_uri",
        lua.create_function(|lua, s: Value| lua.create_string(unescape(&bytes_arg(lua, &s)?)))?,
    )?;
    ngx.set(
        "encode_args",
        lua.create_function(|lua, t: Table| encode_args(lua, &t))?,
    )?;
    ngx.set(
        "decode_args",
        lua.create_function(|lua, (s, max): (mlua::LuaString, Option<i64>)| {
            decode_args(lua, &s.as_bytes(), max.unwrap_or(100))
        })?,
    )?;
    ngx.set(
        "quote_sql_str",
        lua.create_function(|lua, s: Value| {
            let b = bytes_arg(lua, &s)?;
            let mut out = vec![b'\''];
            for c in b {
                match c {
                    0 => out.extend_from_slice(b"\\0"),
                    b'\x08' => out.extend_from_slice(b"\\b"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    0x1a => out.extend_from_slice(b"\\Z"),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\'' => out.extend_from_slice(b"\\'"),
                    b'"' => out.extend_from_slice(b"\\\""),
                    c => out.push(c),
                }
            }
            out.push(b'\'');
            lua.create_string(out)
        })?,
    )?;
    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    loaded.set("ngx.base64", base64url_module(lua)?)?;
    Ok(())
}

/// `require "ngx.base64"`: URL-safe base64 without padding.
fn base64url_module(lua: &Lua) -> mlua::Result<Table> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let m = lua.create_table()?;
    m.set(
        "encode_base64url",
        lua.create_function(|_, s: Value| {
            let Value::String(s) = s else {
                return Err(mlua::Error::runtime("must provide a string"));
            };
            Ok(URL_SAFE_NO_PAD.encode(s.as_bytes()))
        })?,
    )?;
    m.set(
        "decode_base64url",
        lua.create_function(|lua, s: Value| {
            let Value::String(s) = s else {
                return Err(mlua::Error::runtime("string argument only"));
            };
            let engine = base64::engine::GeneralPurpose::new(
                &base64::alphabet::URL_SAFE,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            Ok(match engine.decode(s.as_bytes()) {
                Ok(d) => (Value::String(lua.create_string(d)?), Value::Nil),
                Err(_) => (
                    Value::Nil,
                    Value::String(lua.create_string("invalid input")?),
                ),
            })
        })?,
    )?;
    Ok(m)
}
