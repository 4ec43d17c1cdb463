//! `cjson` and `cjson.safe` with lua-cjson's behaviour: `%.14g` numbers, `\/` escaping, empty
//! tables as objects, excessively sparse arrays refused, `cjson.null` (the same light userdata
//! as `ngx.null`).

use mlua::{LightUserData, Lua, Table, Value};

use crate::numfmt::fmt_g14;

const MAX_DEPTH: usize = 1000;

pub fn null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

pub fn encode(v: &Value) -> Result<String, String> {
    let mut out = String::new();
    encode_value(v, &mut out, 0)?;
    Ok(out)
}

fn encode_value(v: &Value, out: &mut String, depth: usize) -> Result<(), String> {
    match v {
        Value::Nil => out.push_str("null"),
        Value::LightUserData(u) if u.0.is_null() => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Integer(i) => out.push_str(&fmt_g14(*i as f64)),
        Value::Number(n) => {
            if !n.is_finite() {
                return Err("Cannot serialise number: must not be NaN or Inf".into());
            }
            out.push_str(&fmt_g14(*n));
        }
        Value::String(s) => escape(&s.as_bytes(), out),
        Value::Table(t) => encode_table(t, out, depth + 1)?,
        other => {
            return Err(format!(
                "Cannot serialise {}: type not supported",
                other.type_name()
            ));
        }
    }
    Ok(())
}

fn escape(b: &[u8], out: &mut String) {
    let mut bytes: Vec<u8> = Vec::with_capacity(b.len() + 2);
    bytes.push(b'"');
    for &c in b {
        match c {
            b'"' => bytes.extend_from_slice(b"\\\""),
            b'\\' => bytes.extend_from_slice(b"\\\\"),
            b'/' => bytes.extend_from_slice(b"\\/"),
            b'\n' => bytes.extend_from_slice(b"\\n"),
            b'\r' => bytes.extend_from_slice(b"\\r"),
            b'\t' => bytes.extend_from_slice(b"\\t"),
            0x08 => bytes.extend_from_slice(b"\\b"),
            0x0c => bytes.extend_from_slice(b"\\f"),
            c if c < 0x20 || c == 0x7f => {
                bytes.extend_from_slice(format!("\\u{c:04x}").as_bytes());
            }
            c => bytes.push(c),
        }
    }
    bytes.push(b'"');
    // Non-UTF-8 strings pass through byte for byte, as lua-cjson does.
    out.push_str(&String::from_utf8_lossy(&bytes));
}

fn encode_table(t: &Table, out: &mut String, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("Cannot serialise, excessive nesting ({depth})"));
    }
    // Array if every key is a positive integer (lua-cjson's `lua_array_length`).
    let mut max = 0usize;
    let mut items = 0usize;
    let mut is_array = true;
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, _) = pair.map_err(|e| e.to_string())?;
        items += 1;
        let idx = match k {
            Value::Integer(i) if i >= 1 => Some(i as usize),
            Value::Number(n) if n >= 1.0 && n.fract() == 0.0 => Some(n as usize),
            _ => None,
        };
        match idx {
            Some(i) => max = max.max(i),
            None => {
                is_array = false;
                break;
            }
        }
    }
    if items == 0 {
        out.push_str("{}");
        return Ok(());
    }
    if is_array {
        if max > items * 2 && max > 10 {
            return Err("Cannot serialise table: excessively sparse array".into());
        }
        out.push('[');
        for i in 1..=max {
            if i > 1 {
                out.push(',');
            }
            let v: Value = t.raw_get(i).map_err(|e| e.to_string())?;
            encode_value(&v, out, depth)?;
        }
        out.push(']');
        return Ok(());
    }
    out.push('{');
    let mut first = true;
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| e.to_string())?;
        if !first {
            out.push(',');
        }
        first = false;
        match &k {
            Value::String(s) => escape(&s.as_bytes(), out),
            Value::Integer(i) => escape(fmt_g14(*i as f64).as_bytes(), out),
            Value::Number(n) => escape(fmt_g14(*n).as_bytes(), out),
            _ => return Err("Cannot serialise table: table key must be a number or string".into()),
        }
        out.push(':');
        encode_value(&v, out, depth)?;
    }
    out.push('}');
    Ok(())
}

pub fn decode(lua: &Lua, text: &[u8]) -> Result<Value, String> {
    let v: serde_json::Value = serde_json::from_slice(text).map_err(|e| {
        if e.is_eof() && text.iter().all(u8::is_ascii_whitespace) {
            "Expected value but found T_END at character 1".to_string()
        } else {
            format!(
                "Expected value but found invalid token at character {}",
                e.column().max(1)
            )
        }
    })?;
    to_lua(lua, &v).map_err(|e| e.to_string())
}

fn to_lua(lua: &Lua, v: &serde_json::Value) -> mlua::Result<Value> {
    Ok(match v {
        serde_json::Value::Null => null(),
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Value::String(lua.create_string(s)?),
        serde_json::Value::Array(a) => {
            let t = lua.create_table_with_capacity(a.len(), 0)?;
            for (i, x) in a.iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, x)?)?;
            }
            Value::Table(t)
        }
        serde_json::Value::Object(o) => {
            let t = lua.create_table_with_capacity(0, o.len())?;
            for (k, x) in o {
                t.raw_set(k.as_str(), to_lua(lua, x)?)?;
            }
            Value::Table(t)
        }
    })
}

/// The `cjson` module table; `safe` makes errors into `nil, message` returns.
pub fn module(lua: &Lua, safe: bool) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    m.set("null", null())?;
    m.set("_NAME", if safe { "cjson.safe" } else { "cjson" })?;
    m.set("_VERSION", "2.1.0.10")?;
    // The Rust functions return `nil, message`; the raising variants call Lua's `error` with
    // the message as a plain string (level 0, no position), as lua-cjson does.
    let raw_encode = lua.create_function(move |lua, v: Value| match encode(&v) {
        Ok(s) => Ok((Value::String(lua.create_string(&s)?), Value::Nil)),
        Err(e) => Ok((Value::Nil, Value::String(lua.create_string(&e)?))),
    })?;
    let raw_decode = lua.create_function(move |lua, s: Value| {
        let text = match &s {
            Value::String(s) => s.as_bytes().to_vec(),
            other => {
                return Ok((
                    Value::Nil,
                    Value::String(lua.create_string(format!(
                        "bad argument #1 to 'decode' (string expected, got {})",
                        other.type_name()
                    ))?),
                ));
            }
        };
        match decode(lua, &text) {
            Ok(v) => Ok((v, Value::Nil)),
            Err(e) => Ok((Value::Nil, Value::String(lua.create_string(&e)?))),
        }
    })?;
    if safe {
        m.set("encode", raw_encode)?;
        m.set("decode", raw_decode)?;
    } else {
        let wrap: mlua::Function = lua
            .load("local f = ... return function(v) local r, e = f(v) if e then error(e, 0) end return r end")
            .set_name("=cjson")
            .into_function()?;
        m.set("encode", wrap.call::<mlua::Function>(raw_encode)?)?;
        m.set("decode", wrap.call::<mlua::Function>(raw_decode)?)?;
    }
    // Settings scripts commonly call; this build keeps lua-cjson's defaults.
    for name in [
        "encode_empty_table_as_object",
        "encode_sparse_array",
        "encode_max_depth",
        "decode_max_depth",
        "encode_number_precision",
        "encode_keep_buffer",
        "encode_invalid_numbers",
        "decode_invalid_numbers",
        "decode_array_with_array_mt",
        "encode_escape_forward_slash",
    ] {
        m.set(
            name,
            lua.create_function(|_, args: mlua::MultiValue| Ok(args))?,
        )?;
    }
    m.set(
        "new",
        lua.create_function(move |lua, ()| module(lua, safe))?,
    )?;
    m.set("empty_array", lua.create_table()?)?;
    Ok(m)
}
