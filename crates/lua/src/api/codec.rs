//! Encodings and digests: base64, md5, sha1, crc32, URI escaping, query arguments, SQL quoting.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use md5::Digest;
use mlua::{Lua, Table, Value};

fn bytes_arg(v: &Value, fname: &str) -> mlua::Result<Vec<u8>> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Integer(i) => Ok(i.to_string().into_bytes()),
        Value::Number(n) => Ok(crate::numfmt::fmt_g14(*n).into_bytes()),
        Value::Nil => Ok(Vec::new()),
        other => Err(mlua::Error::runtime(format!(
            "bad argument #1 to '{fname}' (string expected, got {})",
            other.type_name()
        ))),
    }
}

/// nginx's `ngx_escape_uri` with NGX_ESCAPE_URI_COMPONENT (what `ngx.escape_uri` uses).
pub fn escape(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
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
pub fn encode_args(t: &Table) -> mlua::Result<String> {
    let mut parts = Vec::new();
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, v) = pair?;
        let key = escape(&bytes_arg(&k, "encode_args")?);
        let mut one = |v: &Value| -> mlua::Result<()> {
            match v {
                Value::Boolean(true) => parts.push(key.clone()),
                Value::Boolean(false) => {}
                v => parts.push(format!("{key}={}", escape(&bytes_arg(v, "encode_args")?))),
            }
            Ok(())
        };
        match &v {
            Value::Table(list) => {
                for x in list.clone().sequence_values::<Value>() {
                    one(&x?)?;
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
        lua.create_function(|_, (s, no_pad): (Value, Option<bool>)| {
            let b = bytes_arg(&s, "encode_base64")?;
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
            let b = bytes_arg(&s, "decode_base64")?;
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
        lua.create_function(|_, s: Value| {
            let d = md5::Md5::digest(bytes_arg(&s, "md5")?);
            Ok(d.iter().map(|b| format!("{b:02x}")).collect::<String>())
        })?,
    )?;
    ngx.set(
        "md5_bin",
        lua.create_function(|lua, s: Value| {
            lua.create_string(md5::Md5::digest(bytes_arg(&s, "md5_bin")?))
        })?,
    )?;
    ngx.set(
        "sha1_bin",
        lua.create_function(|lua, s: Value| {
            lua.create_string(sha1::Sha1::digest(bytes_arg(&s, "sha1_bin")?))
        })?,
    )?;
    ngx.set(
        "crc32_long",
        lua.create_function(|_, s: Value| Ok(crc32fast::hash(&bytes_arg(&s, "crc32_long")?)))?,
    )?;
    ngx.set(
        "crc32_short",
        lua.create_function(|_, s: Value| Ok(crc32fast::hash(&bytes_arg(&s, "crc32_short")?)))?,
    )?;
    ngx.set(
        "escape_uri",
        lua.create_function(|_, s: Value| Ok(escape(&bytes_arg(&s, "escape_uri")?)))?,
    )?;
    ngx.set(
        "unescape_uri",
        lua.create_function(|lua, s: Value| {
            lua.create_string(unescape(&bytes_arg(&s, "unescape_uri")?))
        })?,
    )?;
    ngx.set(
        "encode_args",
        lua.create_function(|_, t: Table| encode_args(&t))?,
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
            let b = bytes_arg(&s, "quote_sql_str")?;
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
    Ok(())
}
