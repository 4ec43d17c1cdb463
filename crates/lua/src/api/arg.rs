//! `ngx.arg` in body_filter: `ngx.arg[1]` is the body chunk and `ngx.arg[2]` whether it is the
//! last one; a script writes them to replace the chunk, drop it, or end the body there.
//!
//! Reading follows lua-resty-core's `resty.core.param` (outside body_filter: "API disabled in
//! the current context"; any index but 1 and 2 gives `nil`), writing follows lua-nginx-module's
//! `ngx_http_lua_body_filter_param_set` ("bad index", "bad chunk data type").

use bytes::Bytes;
use mlua::{Lua, Table, Value};

use crate::Phase;
use crate::numfmt::fmt_g14;
use crate::request;

/// `ngx.arg`'s index as `luaL_checkint` reads it (numbers and numeric strings).
fn index(key: &Value) -> mlua::Result<i64> {
    match key {
        Value::Integer(i) => Ok(*i),
        Value::Number(n) => Ok(*n as i64),
        Value::String(s) => s
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .map(|n| n as i64)
            .ok_or_else(|| {
                mlua::Error::runtime("bad argument #2 to '?' (number expected, got string)")
            }),
        other => Err(mlua::Error::runtime(format!(
            "bad argument #2 to '?' (number expected, got {})",
            other.type_name()
        ))),
    }
}

/// The bytes a script assigned to `ngx.arg[1]`.
fn chunk_of(value: &Value) -> mlua::Result<Bytes> {
    match value {
        Value::Nil => Ok(Bytes::new()),
        Value::String(s) => Ok(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Integer(i) => Ok(Bytes::from(fmt_g14(*i as f64))),
        Value::Number(n) => Ok(Bytes::from(fmt_g14(*n))),
        Value::Table(_) => {
            let mut out = Vec::new();
            super::output::render(value, &mut out, "arg", 2)?;
            Ok(Bytes::from(out))
        }
        other => Err(mlua::Error::runtime(format!(
            "bad chunk data type: {}",
            other.type_name()
        ))),
    }
}

pub fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let arg = lua.create_table()?;
    let mt = lua.create_table()?;
    mt.set(
        "__index",
        lua.create_function(|lua, (_, key): (Table, Value)| {
            if request::current().is_none() {
                return Err(mlua::Error::runtime("no request found"));
            }
            if request::phase_now() != Phase::BodyFilter {
                return Err(mlua::Error::runtime("API disabled in the current context"));
            }
            // resty.core compares the key with the numbers 1 and 2: "1" is neither.
            let idx = match key {
                Value::Integer(i) => i,
                Value::Number(n) if n.fract() == 0.0 => n as i64,
                _ => return Ok(Value::Nil),
            };
            request::with(|r| {
                let (data, eof) = r.body_chunk.clone().unwrap_or_default();
                Ok(match idx {
                    1 => Value::String(lua.create_string(&data)?),
                    2 => Value::Boolean(eof),
                    _ => Value::Nil,
                })
            })
        })?,
    )?;
    mt.set(
        "__newindex",
        lua.create_function(|_, (_, key, value): (Table, Value, Value)| {
            if request::current().is_none() {
                return Err(mlua::Error::runtime("no request object found"));
            }
            request::allow_in(&[Phase::BodyFilter])?;
            let idx = index(&key)?;
            match idx {
                1 => {
                    let data = chunk_of(&value)?;
                    request::with(|r| {
                        let eof = r.body_chunk.as_ref().is_some_and(|(_, e)| *e);
                        r.body_chunk = Some((data, eof));
                        Ok(())
                    })
                }
                2 => {
                    let eof = !matches!(value, Value::Nil | Value::Boolean(false));
                    request::with(|r| {
                        let data = r.body_chunk.take().map(|(d, _)| d).unwrap_or_default();
                        r.body_chunk = Some((data, eof));
                        Ok(())
                    })
                }
                _ => Err(mlua::Error::runtime(format!("bad index: {idx}"))),
            }
        })?,
    )?;
    arg.set_metatable(Some(mt))?;
    ngx.set("arg", arg)?;
    Ok(())
}
