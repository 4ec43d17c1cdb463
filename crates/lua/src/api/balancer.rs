//! `require "ngx.balancer"`: lua-resty-core's module for `balancer_by_lua`, over the request's
//! [`BalancerState`](crate::BalancerState). The edge runs the balancer phase once per try and
//! reads back the peer, the extra tries and the timeouts the script set.
//!
//! Return values and error words are lua-resty-core 0.1.25's (`ngx/balancer.lua`) and
//! lua-nginx-module 0.10.23's (`ngx_http_lua_balancer.c`): before the request has an upstream
//! the functions answer "no upstream found", in any other phase "API disabled in the current
//! context", and `set_current_peer` takes IP addresses only ("no host allowed").

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mlua::{Lua, MultiValue, Table, Value};

use crate::Phase;
use crate::request::{self, BalancerState};

/// Runs `f` on the balancer state of the current request, or gives OpenResty's reason why not.
fn with_state<R>(f: impl FnOnce(&mut BalancerState) -> R) -> mlua::Result<Result<R, &'static str>> {
    let Some(req) = request::current() else {
        return Err(mlua::Error::runtime("no request found"));
    };
    let mut r = req
        .try_borrow_mut()
        .map_err(|_| mlua::Error::runtime("request state busy"))?;
    let phase = r.phase;
    let Some(state) = r.balancer.as_mut() else {
        return Ok(Err("no upstream found"));
    };
    if phase != Phase::Balancer {
        return Ok(Err("API disabled in the current context"));
    }
    Ok(Ok(f(state)))
}

fn values(vs: Vec<Value>) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_iter(vs))
}

fn string(lua: &Lua, s: &str) -> mlua::Result<Value> {
    Ok(Value::String(lua.create_string(s)?))
}

/// `ngx_parse_url` with `no_resolve`: an IPv4 or IPv6 address, with or without a port.
fn parse_peer(addr: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Some(sa);
    }
    let host = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    host.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

/// A timeout argument of `set_timeouts`: `nil` keeps the upstream's, else seconds above 0.
fn timeout(v: &Value, which: &str) -> mlua::Result<Option<Duration>> {
    let secs = match v {
        Value::Nil => return Ok(None),
        Value::Integer(i) => *i as f64,
        Value::Number(n) => *n,
        _ => return Err(mlua::Error::runtime(format!("bad {which} timeout"))),
    };
    if secs <= 0.0 || !secs.is_finite() {
        return Err(mlua::Error::runtime(format!("bad {which} timeout")));
    }
    // nginx keeps milliseconds.
    Ok(Some(Duration::from_millis((secs * 1000.0) as u64)))
}

pub fn install(lua: &Lua) -> mlua::Result<()> {
    let m = lua.create_table()?;
    m.set("version", "0.1.25")?;
    m.set(
        "set_current_peer",
        lua.create_function(|lua, (addr, port): (mlua::LuaString, Value)| {
            let port = match port {
                Value::Integer(p) => p,
                Value::Number(p) => p as i64,
                Value::String(s) => s
                    .to_str()
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0),
                _ => 0,
            };
            let addr = addr.to_string_lossy();
            let peer = parse_peer(&addr, port.clamp(0, 65535) as u16);
            let out = with_state(|st| match peer {
                Some(p) => {
                    st.peer = Some(p);
                    Ok(())
                }
                None => Err("no host allowed"),
            })?;
            match out.and_then(|r| r) {
                Ok(()) => values(vec![Value::Boolean(true)]),
                Err(e) => values(vec![Value::Nil, string(lua, e)?]),
            }
        })?,
    )?;
    m.set(
        "set_more_tries",
        lua.create_function(|lua, count: i64| {
            let out = with_state(|st| {
                let total = i64::from(st.planned);
                let limit = i64::from(st.limit);
                if limit > 0 && total + count > limit {
                    st.more_tries = (limit - total).max(0) as u32;
                    Some("reduced tries due to limit")
                } else {
                    st.more_tries = count.max(0) as u32;
                    None
                }
            })?;
            match out {
                Ok(None) => values(vec![Value::Boolean(true)]),
                Ok(Some(warning)) => values(vec![Value::Boolean(true), string(lua, warning)?]),
                Err(e) => values(vec![Value::Nil, string(lua, e)?]),
            }
        })?,
    )?;
    m.set(
        "get_last_failure",
        lua.create_function(|lua, ()| match with_state(|st| st.last_failure)? {
            Ok(None) => values(vec![Value::Nil]),
            Ok(Some((state, status))) => {
                values(vec![string(lua, state)?, Value::Integer(i64::from(status))])
            }
            Err(e) => values(vec![Value::Nil, Value::Nil, string(lua, e)?]),
        })?,
    )?;
    m.set(
        "set_timeouts",
        lua.create_function(|lua, (c, s, r): (Value, Value, Value)| {
            let (c, s, r) = (
                timeout(&c, "connect")?,
                timeout(&s, "send")?,
                timeout(&r, "read")?,
            );
            let out = with_state(|st| {
                // A 0 in lua-resty-core's call keeps the upstream's own value.
                st.connect_timeout = c.or(st.connect_timeout);
                st.send_timeout = s.or(st.send_timeout);
                st.read_timeout = r.or(st.read_timeout);
            })?;
            match out {
                Ok(()) => values(vec![Value::Boolean(true)]),
                Err(e) => values(vec![Value::Boolean(false), string(lua, e)?]),
            }
        })?,
    )?;
    // Every try sends a request built afresh, so there is nothing to recreate.
    m.set(
        "recreate_request",
        lua.create_function(|lua, ()| match with_state(|_| ())? {
            Ok(()) => values(vec![Value::Boolean(true)]),
            Err(e) => values(vec![Value::Nil, string(lua, e)?]),
        })?,
    )?;
    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    loaded.set("ngx.balancer", m)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_addresses_never_names() {
        assert_eq!(
            parse_peer("127.0.0.1", 8080),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_peer("127.0.0.1:81", 8080),
            Some("127.0.0.1:81".parse().unwrap())
        );
        assert_eq!(parse_peer("[::1]", 80), Some("[::1]:80".parse().unwrap()));
        assert_eq!(
            parse_peer("[::1]:81", 80),
            Some("[::1]:81".parse().unwrap())
        );
        assert_eq!(parse_peer("localhost", 80), None);
        assert_eq!(parse_peer("1.2.3", 80), None);
    }

    #[test]
    fn timeouts_are_seconds_above_zero() {
        assert_eq!(timeout(&Value::Nil, "connect").unwrap(), None);
        assert_eq!(
            timeout(&Value::Number(0.25), "read").unwrap(),
            Some(Duration::from_millis(250))
        );
        assert!(timeout(&Value::Integer(0), "send").is_err());
        assert!(timeout(&Value::Boolean(true), "send").is_err());
    }
}
