//! `require "outpost.cache"`: srcache-style control of the edge's cache for the request
//! (`set_key`, `skip_lookup`, `skip_store`) and reading and writing its objects (`get`, `set`,
//! `delete`, `purge_tag`, `key`) through the edge's [`CacheAccess`].
//!
//! Reads and writes may touch the disk tier, so they wait as cosockets do: only in phases
//! that can yield, and the worker serves other requests meanwhile.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use mlua::{Lua, MultiValue, Table, Value};

use crate::cache_access::{CacheAccess, CacheAccessError, CachedObject, NewObject};
use crate::request;

/// The VM's cache, set by the edge (Lua app data, so timers reach it too).
pub(crate) struct CacheSlot(pub Rc<dyn CacheAccess>);

pub fn install(lua: &Lua, loaded: &Table) -> mlua::Result<()> {
    let cache = lua.create_table()?;
    cache.set(
        "set_key",
        lua.create_function(|_, key: String| {
            request::with(|r| {
                r.cache_key = Some(key);
                Ok(())
            })
        })?,
    )?;
    cache.set(
        "skip_lookup",
        lua.create_function(|_, ()| {
            request::with(|r| {
                r.cache_skip_lookup = true;
                Ok(())
            })
        })?,
    )?;
    cache.set(
        "skip_store",
        lua.create_function(|_, ()| {
            request::with(|r| {
                r.cache_skip_store = true;
                Ok(())
            })
        })?,
    )?;
    cache.set(
        "get",
        lua.create_async_function(|lua, (key, opts): (String, Option<Table>)| async move {
            request::allow_yield()?;
            let Some(access) = access(&lua) else {
                return failure(&lua, "no cache");
            };
            let allow_stale = match &opts {
                Some(t) => t.get::<Option<bool>>("stale")?.unwrap_or(false),
                None => false,
            };
            match access.get(&key, allow_stale).await {
                Ok(Some(obj)) => Ok(MultiValue::from_vec(vec![Value::Table(object(&lua, obj)?)])),
                Ok(None) => Ok(MultiValue::from_vec(vec![Value::Nil])),
                Err(e) => failure(&lua, &e.to_string()),
            }
        })?,
    )?;
    cache.set(
        "set",
        lua.create_async_function(|lua, (key, spec): (String, Table)| async move {
            request::allow_yield()?;
            let Some(access) = access(&lua) else {
                return failure(&lua, "no cache");
            };
            let obj = match new_object(&spec)? {
                Ok(o) => o,
                Err(e) => return failure(&lua, &e.to_string()),
            };
            match access.set(&key, obj).await {
                Ok(()) => Ok(MultiValue::from_vec(vec![Value::Boolean(true)])),
                Err(e) => failure(&lua, &e.to_string()),
            }
        })?,
    )?;
    cache.set(
        "delete",
        lua.create_async_function(|lua, key: String| async move {
            request::allow_yield()?;
            let Some(access) = access(&lua) else {
                return failure(&lua, "no cache");
            };
            match access.delete(&key).await {
                Ok(held) => Ok(MultiValue::from_vec(vec![Value::Boolean(held)])),
                Err(e) => failure(&lua, &e.to_string()),
            }
        })?,
    )?;
    cache.set(
        "purge_tag",
        lua.create_async_function(|lua, tag: String| async move {
            request::allow_yield()?;
            let Some(access) = access(&lua) else {
                return failure(&lua, "no cache");
            };
            match access.purge_tag(&tag).await {
                Ok(n) => Ok(MultiValue::from_vec(vec![Value::Integer(n as i64)])),
                Err(e) => failure(&lua, &e.to_string()),
            }
        })?,
    )?;
    cache.set(
        "key",
        lua.create_function(|lua, url: String| {
            let key = access(lua).and_then(|a| a.key_for_url(&url));
            match key {
                Some(k) => Ok(MultiValue::from_vec(vec![Value::String(
                    lua.create_string(k)?,
                )])),
                None => failure(lua, "not an absolute http(s) URL"),
            }
        })?,
    )?;
    loaded.set("outpost.cache", cache)
}

fn access(lua: &Lua) -> Option<Rc<dyn CacheAccess>> {
    lua.app_data_ref::<CacheSlot>().map(|s| s.0.clone())
}

/// `nil, err`, as OpenResty's APIs report a failure that is not the script's mistake.
fn failure(lua: &Lua, err: &str) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_vec(vec![
        Value::Nil,
        Value::String(lua.create_string(err)?),
    ]))
}

/// `{status, header, body, age, ttl, stale}`; `header` folds case and `_` to `-` on lookup,
/// as `ngx.req.get_headers()`'s table does.
fn object(lua: &Lua, obj: CachedObject) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("status", obj.status)?;
    t.set("body", lua.create_string(&obj.body)?)?;
    t.set("age", obj.age)?;
    t.set("ttl", obj.ttl)?;
    t.set("stale", obj.stale)?;
    let h = lua.create_table()?;
    for (k, v) in &obj.headers {
        let val = lua.create_string(v.as_bytes())?;
        match h.raw_get::<Value>(k.as_str())? {
            Value::Nil => h.raw_set(k.as_str(), val)?,
            Value::Table(list) => list.raw_push(val)?,
            prev => {
                let list = lua.create_table()?;
                list.raw_push(prev)?;
                list.raw_push(val)?;
                h.raw_set(k.as_str(), list)?;
            }
        }
    }
    super::req::fold_header_lookups(lua, &h)?;
    t.set("header", h)?;
    Ok(t)
}

/// `set`'s second argument. A wrong type raises (the script's mistake, as OpenResty's
/// argument checks do); a value the cache cannot store is the inner `Err`, for `nil, err`.
fn new_object(spec: &Table) -> mlua::Result<Result<NewObject, CacheAccessError>> {
    let invalid = |m: String| Ok(Err(CacheAccessError::Invalid(m)));
    let status = spec.get::<Option<i64>>("status")?.unwrap_or(200);
    if !(200..=599).contains(&status) {
        return invalid(format!("bad status {status}"));
    }
    let Some(ttl) = spec.get::<Option<f64>>("ttl")? else {
        return invalid("ttl is required".into());
    };
    if !(ttl > 0.0 && ttl.is_finite()) {
        return invalid(format!("bad ttl {ttl}: give seconds, more than 0"));
    }
    let body = match spec.get::<Option<mlua::LuaString>>("body")? {
        Some(b) => Bytes::copy_from_slice(&b.as_bytes()),
        None => Bytes::new(),
    };
    let mut headers = HeaderMap::new();
    if let Some(h) = spec.get::<Option<Table>>("header")? {
        for pair in h.pairs::<mlua::LuaString, Value>() {
            let (name, value) = pair?;
            let Ok(name) = HeaderName::from_bytes(&name.as_bytes()) else {
                return invalid(format!("bad header name {:?}", name.to_string_lossy()));
            };
            let values: Vec<Value> = match value {
                Value::Table(list) => list.sequence_values::<Value>().collect::<Result<_, _>>()?,
                v => vec![v],
            };
            for v in values {
                let bytes = match &v {
                    Value::String(s) => s.as_bytes().to_vec(),
                    Value::Integer(_) | Value::Number(_) => v.to_string()?.into_bytes(),
                    _ => return invalid(format!("bad value for header {name}")),
                };
                let Ok(v) = HeaderValue::from_bytes(&bytes) else {
                    return invalid(format!("bad value for header {name}"));
                };
                headers.append(name.clone(), v);
            }
        }
    }
    let tags = match spec.get::<Option<Table>>("tags")? {
        Some(t) => t.sequence_values::<String>().collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    Ok(Ok(NewObject {
        status: status as u16,
        headers,
        body,
        ttl: Duration::from_secs_f64(ttl.ceil()),
        tags,
        url: spec.get::<Option<String>>("url")?.unwrap_or_default(),
    }))
}
