//! The Lua face of `ngx.shared.DICT`, with lua-resty-core's return values and messages.

use std::sync::Arc;

use bytes::Bytes;
use mlua::{Lua, MultiValue, Table, UserData, UserDataMethods, Value};

use crate::shared_dict::{DictValue, SetMode, SharedDict, SharedDicts};

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub struct Dict(pub Arc<SharedDict>);

/// A value to store; `Err` for the types a dict cannot hold (lua-resty-core: "bad value type").
fn to_value(v: &Value) -> Result<Option<DictValue>, &'static str> {
    Ok(match v {
        Value::Nil => None,
        Value::String(s) => Some(DictValue::Str(Bytes::copy_from_slice(&s.as_bytes()))),
        Value::Integer(i) => Some(DictValue::Num(*i as f64)),
        Value::Number(n) => Some(DictValue::Num(*n)),
        Value::Boolean(b) => Some(DictValue::Bool(*b)),
        _ => return Err("bad value type"),
    })
}

/// `nil, msg`: how lua-resty-core reports a bad key or value.
fn fail(lua: &Lua, msg: &str) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_iter([
        Value::Nil,
        Value::String(lua.create_string(msg)?),
    ]))
}

/// lua-resty-core's `tonumber(value)` before handing the value to a C `double`.
fn number_arg(lua: &Lua, v: &Value) -> mlua::Result<f64> {
    let n: Option<f64> = match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Number(n) => Some(*n),
        Value::String(_) => lua
            .globals()
            .get::<mlua::Function>("tonumber")?
            .call(v.clone())?,
        _ => None,
    };
    n.ok_or_else(|| mlua::Error::runtime("cannot convert 'nil' to 'double'"))
}

fn from_value(lua: &Lua, v: DictValue) -> mlua::Result<Value> {
    Ok(match v {
        DictValue::Str(b) => Value::String(lua.create_string(&b)?),
        DictValue::Num(n) => Value::Number(n),
        DictValue::Bool(b) => Value::Boolean(b),
        DictValue::List(_) => Value::Nil,
    })
}

/// The key as lua-resty-core takes it: `tostring` of non-strings, 1 to 65535 bytes.
fn key_of(lua: &Lua, v: &Value) -> mlua::Result<Result<Vec<u8>, &'static str>> {
    let key = match v {
        Value::Nil => return Ok(Err("nil key")),
        Value::String(s) => s.as_bytes().to_vec(),
        other => {
            let s: mlua::LuaString = lua
                .globals()
                .get::<mlua::Function>("tostring")?
                .call(other.clone())?;
            s.as_bytes().to_vec()
        }
    };
    Ok(match key.len() {
        0 => Err("empty key"),
        1..=65535 => Ok(key),
        _ => Err("key too long"),
    })
}

/// Unwraps a key, or returns `nil, msg` from the enclosing method.
macro_rules! key {
    ($lua:expr, $v:expr) => {
        match key_of($lua, &$v)? {
            Ok(k) => k,
            Err(msg) => return fail($lua, msg),
        }
    };
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
            match d.0.get(&key!(lua, key), now_ms()) {
                Some((DictValue::List(_), _)) => fail(lua, "value is a list"),
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
            match d.0.get_stale(&key!(lua, key), now_ms()) {
                Some((DictValue::List(_), _, _)) => fail(lua, "value is a list"),
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
                let key = key!(lua, key);
                let exptime = exptime.unwrap_or(0.0);
                if exptime < 0.0 {
                    return Err(mlua::Error::runtime("bad \"exptime\" argument"));
                }
                let v = match to_value(&value) {
                    Ok(v) => v,
                    Err(msg) => return fail(lua, msg),
                };
                let r = d.0.set(&key, v, exptime, flags.unwrap_or(0), mode, now_ms());
                set_result(lua, r)
            });
        }
        // lua-resty-core's `delete` is `set(key, nil)`, with its three results.
        m.add_method("delete", |lua, d, key: Value| {
            d.0.delete(&key!(lua, key));
            set_result(lua, Ok(false))
        });
        m.add_method(
            "incr",
            |lua, d, (key, by, init, init_ttl): (Value, Value, Option<f64>, Option<f64>)| {
                let key = key!(lua, key);
                let by = number_arg(lua, &by)?;
                match d.0.incr(&key, by, init, init_ttl.unwrap_or(0.0), now_ms()) {
                    // `forcible` only comes back when an `init` was given.
                    Ok((n, forcible)) if init.is_some() => Ok(MultiValue::from_iter([
                        Value::Number(n),
                        Value::Nil,
                        Value::Boolean(forcible),
                    ])),
                    Ok((n, _)) => Ok(MultiValue::from_iter([Value::Number(n)])),
                    Err(e) => fail(lua, e.as_str()),
                }
            },
        );
        m.add_method("ttl", |lua, d, key: Value| {
            match d.0.ttl(&key!(lua, key), now_ms()) {
                Some(t) => Ok(MultiValue::from_iter([Value::Number(t)])),
                None => Ok(MultiValue::from_iter([
                    Value::Nil,
                    Value::String(lua.create_string("not found")?),
                ])),
            }
        });
        m.add_method("expire", |lua, d, (key, ttl): (Value, f64)| {
            if d.0.expire(&key!(lua, key), ttl, now_ms()) {
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
                let key = key!(lua, key);
                let Ok(Some(v)) = to_value(&value) else {
                    return fail(lua, "bad value type");
                };
                match d.0.push(&key, v, left, now_ms()) {
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
                match d.0.pop(&key!(lua, key), left, now_ms()) {
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
            match d.0.llen(&key!(lua, key), now_ms()) {
                Ok(n) => Ok(MultiValue::from_iter([Value::Integer(n as i64)])),
                Err(e) => Ok(MultiValue::from_iter([
                    Value::Nil,
                    Value::String(lua.create_string(e.as_str())?),
                ])),
            }
        });
    }
}

/// lua-resty-core's zones are tables (`type(ngx.shared.dogs) == "table"`) whose methods check
/// their `self`; ours hold the dict's userdata at `[1]` and its number for the C functions of
/// `api/shared_fast.rs` at `[2]`. Returns the zone maker and the methods table.
const ZONE_WRAPPER: &str = r#"
local names = ...
local methods = {}
for name in names:gmatch("%S+") do
    methods[name] = function(zone, ...)
        local ud = type(zone) == "table" and rawget(zone, 1)
        if not ud then error('bad "zone" argument', 2) end
        return ud[name](ud, ...)
    end
end
local mt = { __index = methods }
return function(ud, id) return setmetatable({ ud, id }, mt) end, methods
"#;

const METHODS: &str = "get get_stale set safe_set add safe_add replace delete incr ttl expire \
    flush_all flush_expired get_keys capacity free_space lpush rpush lpop rpop llen";

/// `ngx.shared`: dict names to their handles, resolved on first use.
pub fn install(lua: &Lua, ngx: &Table, dicts: Arc<SharedDicts>) -> mlua::Result<()> {
    let shared = lua.create_table()?;
    let mt = lua.create_table()?;
    let (wrap, methods): (mlua::Function, Table) = lua
        .load(ZONE_WRAPPER)
        .set_name("=ngx.shared")
        .call(METHODS)?;
    for (name, f) in super::shared_fast::methods(lua, &methods)? {
        methods.raw_set(name, f)?;
    }
    mt.set(
        "__index",
        lua.create_function(
            move |lua, (t, name): (Table, String)| match dicts.get(&name) {
                Some(d) => {
                    let id = super::shared_fast::register(&d);
                    let zone: Value = wrap.call((lua.create_userdata(Dict(d))?, id))?;
                    t.raw_set(name, zone.clone())?;
                    Ok(zone)
                }
                None => Ok(Value::Nil),
            },
        )?,
    )?;
    shared.set_metatable(Some(mt))?;
    ngx.set("shared", shared)?;
    Ok(())
}
