//! The Lua face of `ngx.shared.DICT`, with lua-resty-core's return values and messages.

use std::sync::Arc;

use bytes::Bytes;
use mlua::{Lua, MultiValue, Table, UserData, UserDataMethods, Value};

use crate::shared_dict::{DictValue, SetMode, SharedDict, SharedDicts};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub struct Dict(pub Arc<SharedDict>);

fn to_value(v: &Value) -> mlua::Result<Option<DictValue>> {
    Ok(match v {
        Value::Nil => None,
        Value::String(s) => Some(DictValue::Str(Bytes::copy_from_slice(&s.as_bytes()))),
        Value::Integer(i) => Some(DictValue::Num(*i as f64)),
        Value::Number(n) => Some(DictValue::Num(*n)),
        Value::Boolean(b) => Some(DictValue::Bool(*b)),
        other => {
            return Err(mlua::Error::runtime(format!(
                "bad value type: {}",
                other.type_name()
            )));
        }
    })
}

fn from_value(lua: &Lua, v: DictValue) -> mlua::Result<Value> {
    Ok(match v {
        DictValue::Str(b) => Value::String(lua.create_string(&b)?),
        DictValue::Num(n) => Value::Number(n),
        DictValue::Bool(b) => Value::Boolean(b),
        DictValue::List(_) => Value::Nil,
    })
}

fn key_of(v: &Value) -> mlua::Result<Vec<u8>> {
    match v {
        Value::String(s) if !s.as_bytes().is_empty() => Ok(s.as_bytes().to_vec()),
        Value::Integer(i) => Ok(i.to_string().into_bytes()),
        Value::Number(n) => Ok(crate::numfmt::fmt_g14(*n).into_bytes()),
        Value::String(_) => Err(mlua::Error::runtime("empty key")),
        Value::Nil => Err(mlua::Error::runtime("nil key")),
        _ => Err(mlua::Error::runtime("bad key type")),
    }
}

fn set_result(
    lua: &Lua,
    r: Result<bool, crate::shared_dict::SetError>,
) -> mlua::Result<MultiValue> {
    Ok(match r {
        Ok(forcible) => {
            MultiValue::from_iter([Value::Boolean(true), Value::Nil, Value::Boolean(forcible)])
        }
        Err(e) => MultiValue::from_iter([
            Value::Boolean(false),
            Value::String(lua.create_string(e.as_str())?),
            Value::Boolean(false),
        ]),
    })
}

impl UserData for Dict {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("get", |lua, d, key: Value| {
            match d.0.get(&key_of(&key)?, now_ms()) {
                Some((v, flags)) => {
                    let v = from_value(lua, v)?;
                    // As lua-resty-core: the flags only when non-zero.
                    if flags == 0 {
                        Ok(MultiValue::from_iter([v]))
                    } else {
                        Ok(MultiValue::from_iter([v, Value::Integer(flags as i64)]))
                    }
                }
                None => Ok(MultiValue::from_iter([Value::Nil])),
            }
        });
        m.add_method("get_stale", |lua, d, key: Value| {
            match d.0.get_stale(&key_of(&key)?, now_ms()) {
                Some((v, flags, stale)) => Ok(MultiValue::from_iter([
                    from_value(lua, v)?,
                    if flags == 0 {
                        Value::Nil
                    } else {
                        Value::Integer(flags as i64)
                    },
                    Value::Boolean(stale),
                ])),
                None => Ok(MultiValue::from_iter([Value::Nil])),
            }
        });
        for (name, mode) in [
            ("set", SetMode::Set),
            ("safe_set", SetMode::SafeSet),
            ("add", SetMode::Add),
            ("safe_add", SetMode::SafeAdd),
            ("replace", SetMode::Replace),
        ] {
            m.add_method(name, move |lua, d, (key, value, exptime, flags): (Value, Value, Option<f64>, Option<u32>)| {
                let v = to_value(&value)?;
                let r = d.0.set(&key_of(&key)?, v, exptime.unwrap_or(0.0), flags.unwrap_or(0), mode, now_ms());
                set_result(lua, r)
            });
        }
        m.add_method("delete", |_, d, key: Value| {
            d.0.delete(&key_of(&key)?);
            Ok(())
        });
        m.add_method(
            "incr",
            |lua, d, (key, by, init, init_ttl): (Value, f64, Option<f64>, Option<f64>)| match d
                .0
                .incr(&key_of(&key)?, by, init, init_ttl.unwrap_or(0.0), now_ms())
            {
                Ok((n, forcible)) => Ok(MultiValue::from_iter([
                    Value::Number(n),
                    Value::Nil,
                    Value::Boolean(forcible),
                ])),
                Err(e) => Ok(MultiValue::from_iter([
                    Value::Nil,
                    Value::String(lua.create_string(e.as_str())?),
                ])),
            },
        );
        m.add_method("ttl", |lua, d, key: Value| {
            match d.0.ttl(&key_of(&key)?, now_ms()) {
                Some(t) => Ok(MultiValue::from_iter([Value::Number(t)])),
                None => Ok(MultiValue::from_iter([
                    Value::Nil,
                    Value::String(lua.create_string("not found")?),
                ])),
            }
        });
        m.add_method("expire", |lua, d, (key, ttl): (Value, f64)| {
            if d.0.expire(&key_of(&key)?, ttl, now_ms()) {
                Ok(MultiValue::from_iter([Value::Boolean(true)]))
            } else {
                Ok(MultiValue::from_iter([
                    Value::Nil,
                    Value::String(lua.create_string("not found")?),
                ]))
            }
        });
        m.add_method("flush_all", |_, d, ()| {
            d.0.flush_all();
            Ok(())
        });
        m.add_method("flush_expired", |_, d, max: Option<usize>| {
            Ok(d.0.flush_expired(max.unwrap_or(0), now_ms()))
        });
        m.add_method("get_keys", |lua, d, max: Option<usize>| {
            let t = lua.create_table()?;
            for k in d.0.keys(max.unwrap_or(1024), now_ms()) {
                t.raw_push(lua.create_string(&k)?)?;
            }
            Ok(t)
        });
        m.add_method("capacity", |_, d, ()| Ok(d.0.capacity()));
        m.add_method("free_space", |_, d, ()| Ok(d.0.free_space()));
        for (name, left) in [("lpush", true), ("rpush", false)] {
            m.add_method(name, move |lua, d, (key, value): (Value, Value)| {
                let Some(v) = to_value(&value)? else {
                    return Err(mlua::Error::runtime("bad value type: nil"));
                };
                match d.0.push(&key_of(&key)?, v, left, now_ms()) {
                    Ok(n) => Ok(MultiValue::from_iter([Value::Integer(n as i64)])),
                    Err(e) => Ok(MultiValue::from_iter([
                        Value::Nil,
                        Value::String(lua.create_string(e.as_str())?),
                    ])),
                }
            });
        }
        for (name, left) in [("lpop", true), ("rpop", false)] {
            m.add_method(name, move |lua, d, key: Value| {
                match d.0.pop(&key_of(&key)?, left, now_ms()) {
                    Ok(Some(v)) => Ok(MultiValue::from_iter([from_value(lua, v)?])),
                    Ok(None) => Ok(MultiValue::from_iter([Value::Nil])),
                    Err(e) => Ok(MultiValue::from_iter([
                        Value::Nil,
                        Value::String(lua.create_string(e.as_str())?),
                    ])),
                }
            });
        }
        m.add_method("llen", |lua, d, key: Value| {
            match d.0.llen(&key_of(&key)?, now_ms()) {
                Ok(n) => Ok(MultiValue::from_iter([Value::Integer(n as i64)])),
                Err(e) => Ok(MultiValue::from_iter([
                    Value::Nil,
                    Value::String(lua.create_string(e.as_str())?),
                ])),
            }
        });
    }
}

/// `ngx.shared`: dict names to their handles, resolved on first use.
pub fn install(lua: &Lua, ngx: &Table, dicts: Arc<SharedDicts>) -> mlua::Result<()> {
    let shared = lua.create_table()?;
    let mt = lua.create_table()?;
    mt.set(
        "__index",
        lua.create_function(
            move |lua, (t, name): (Table, String)| match dicts.get(&name) {
                Some(d) => {
                    let ud = lua.create_userdata(Dict(d))?;
                    t.raw_set(name, ud.clone())?;
                    Ok(Value::UserData(ud))
                }
                None => Ok(Value::Nil),
            },
        )?,
    )?;
    shared.set_metatable(Some(mt))?;
    ngx.set("shared", shared)?;
    Ok(())
}
