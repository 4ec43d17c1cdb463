//! `get`, `set` and `incr` of `ngx.shared.DICT` as C functions (see `api/c_function.rs`):
//! what rate limiters and counters call on every request, and what lua-resty-core reaches
//! through FFI. The common call: a zone table, a string key of 1 to 65535 bytes, scalar values,
//! a short string read. Anything else goes to the zone's Lua method in `api/shared.rs`, so bad
//! arguments get that one's results and errors.
//!
//! A zone table holds its dict's userdata at `[1]` and, at `[2]`, the dict's number in this
//! worker thread's list of dicts: C code cannot reach the Rust value inside a userdata. The
//! list holds weak references, so a dict dropped by a reload is not kept alive by it, and a
//! script that changes `[2]` reaches another live dict or none, never freed memory.

use std::cell::RefCell;
use std::ffi::{CStr, c_int};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use mlua::ffi::{self, lua_State};
use mlua::{Function, Lua};

use super::c_function::{call_full, string_at, with_full};
use super::shared::now_ms;
use crate::shared_dict::{DictValue, SetMode, SharedDict};

const GET: &CStr = c"outpost.ngx.shared.get";
const SET: &CStr = c"outpost.ngx.shared.set";
const INCR: &CStr = c"outpost.ngx.shared.incr";

/// The longest string value `get` copies out on this path.
const SHORT: usize = 256;

thread_local! {
    static DICTS: RefCell<Vec<Weak<SharedDict>>> = const { RefCell::new(Vec::new()) };
}

/// The number a zone table of `dict` carries at `[2]` on this thread.
pub fn register(dict: &Arc<SharedDict>) -> i64 {
    DICTS.with(|list| {
        let mut list = list.borrow_mut();
        let known = list
            .iter()
            .position(|w| w.strong_count() > 0 && std::ptr::eq(w.as_ptr(), Arc::as_ptr(dict)));
        let i = known.unwrap_or_else(|| {
            list.push(Arc::downgrade(dict));
            list.len() - 1
        });
        i as i64
    })
}

/// The fast `get`, `set` and `incr`, by name, with the zone's full methods behind them.
pub fn methods(lua: &Lua, full: &mlua::Table) -> mlua::Result<Vec<(&'static str, Function)>> {
    let mut out = Vec::new();
    for (name, f, key) in [
        ("get", get as ffi::lua_CFunction, GET),
        ("set", set, SET),
        ("incr", incr, INCR),
    ] {
        // SAFETY: the three functions keep to the contract of `api/c_function.rs`.
        out.push((name, unsafe { with_full(lua, f, key, full.get(name)?)? }));
    }
    Ok(out)
}

/// A value read from a dict.
// On the stack for one call, never moved around: boxing the string would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum Scalar {
    Number(f64),
    Boolean(bool),
    Short([u8; SHORT], usize),
}

/// What a call answers, made before anything is pushed (so nothing needs dropping then).
#[allow(clippy::large_enum_variant)]
enum Reply {
    /// `get` of a key not there (or expired): `nil`.
    Missing,
    /// `get`: the value, and its flags when non-zero.
    Got(Scalar, u32),
    /// `set`: `true, nil, forcible` or `false, err, false`.
    Set(Result<bool, &'static str>),
    /// `incr`: the new value (and `nil, forcible` when an `init` was given), or `nil, err`.
    Incr(Result<(f64, Option<bool>), &'static str>),
}

unsafe extern "C-unwind" fn get(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as a C function.
    unsafe { answer(l, GET, fast_get) }
}

unsafe extern "C-unwind" fn set(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as a C function.
    unsafe { answer(l, SET, fast_set) }
}

unsafe extern "C-unwind" fn incr(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as a C function.
    unsafe { answer(l, INCR, fast_incr) }
}

/// Pushes what `fast` made of the call, or passes the call to the full method under `full`.
unsafe fn answer(
    l: *mut lua_State,
    full: &CStr,
    fast: unsafe fn(*mut lua_State, &SharedDict) -> Option<Reply>,
) -> c_int {
    // SAFETY: `l` is the call's state. The dict (an `Arc`) is dropped inside `reply`, before
    // anything is pushed.
    unsafe {
        match reply(l, fast) {
            Some(r) => push(l, r),
            None => call_full(l, full),
        }
    }
}

unsafe fn reply(
    l: *mut lua_State,
    fast: unsafe fn(*mut lua_State, &SharedDict) -> Option<Reply>,
) -> Option<Reply> {
    // SAFETY: `l` is the call's state.
    unsafe {
        let dict = zone_dict(l)?;
        fast(l, &dict)
    }
}

/// The dict of the zone table at index 1.
unsafe fn zone_dict(l: *mut lua_State) -> Option<Arc<SharedDict>> {
    // SAFETY: index 1 is checked to exist; `lua_rawgeti` reads without metamethods and the
    // value it pushes is popped.
    let id = unsafe {
        if ffi::lua_gettop(l) < 1 || ffi::lua_type(l, 1) != ffi::LUA_TTABLE {
            return None;
        }
        ffi::lua_rawgeti(l, 1, 2);
        let id = (ffi::lua_type(l, -1) == ffi::LUA_TNUMBER).then(|| ffi::lua_tointeger(l, -1));
        ffi::lua_pop(l, 1);
        id?
    };
    let i = usize::try_from(id).ok()?;
    DICTS.with(|list| list.borrow().get(i)?.upgrade())
}

/// The key at index 2, as the full methods accept it without conversion.
///
/// # Safety
/// The bytes live as long as the key stays on the stack: the caller uses them within its
/// call, before anything is pushed or popped.
unsafe fn key<'a>(l: *mut lua_State) -> Option<&'a [u8]> {
    // SAFETY: `lua_type` in `string_at` accepts any index; see above for the bytes.
    let k = unsafe { string_at(l, 2)? };
    (1..=65535).contains(&k.len()).then_some(k)
}

/// The number at `i`, or `None` when absent or nil; `Err` for anything else.
unsafe fn optional_number(l: *mut lua_State, i: c_int) -> Result<Option<f64>, ()> {
    // SAFETY: `lua_type` accepts any index (`LUA_TNONE` past the top).
    unsafe {
        match ffi::lua_type(l, i) {
            ffi::LUA_TNONE | ffi::LUA_TNIL => Ok(None),
            ffi::LUA_TNUMBER => Ok(Some(ffi::lua_tonumber(l, i))),
            _ => Err(()),
        }
    }
}

/// `zone:get(key)`.
unsafe fn fast_get(l: *mut lua_State, d: &SharedDict) -> Option<Reply> {
    // SAFETY: indexes within the call's arguments.
    let key = unsafe {
        if ffi::lua_gettop(l) != 2 {
            return None;
        }
        key(l)?
    };
    let Some((v, flags)) = d.get(key, now_ms()) else {
        return Some(Reply::Missing);
    };
    let v = match v {
        DictValue::Num(n) => Scalar::Number(n),
        DictValue::Bool(b) => Scalar::Boolean(b),
        DictValue::Str(s) if s.len() <= SHORT => {
            let mut buf = [0u8; SHORT];
            buf[..s.len()].copy_from_slice(&s);
            Scalar::Short(buf, s.len())
        }
        // Long strings and lists: the full method.
        _ => return None,
    };
    Some(Reply::Got(v, flags))
}

/// `zone:set(key, value, exptime?, flags?)`.
unsafe fn fast_set(l: *mut lua_State, d: &SharedDict) -> Option<Reply> {
    // SAFETY: indexes within the call's arguments (or past them: `LUA_TNONE`).
    unsafe {
        let n = ffi::lua_gettop(l);
        if !(3..=5).contains(&n) {
            return None;
        }
        let key = key(l)?;
        let value = match ffi::lua_type(l, 3) {
            ffi::LUA_TNIL => None,
            ffi::LUA_TNUMBER => Some(DictValue::Num(ffi::lua_tonumber(l, 3))),
            ffi::LUA_TBOOLEAN => Some(DictValue::Bool(ffi::lua_toboolean(l, 3) != 0)),
            ffi::LUA_TSTRING => Some(DictValue::Str(Bytes::copy_from_slice(string_at(l, 3)?))),
            _ => return None,
        };
        let exptime = optional_number(l, 4).ok()?.unwrap_or(0.0);
        // A negative one is an error, raised by the full method.
        if exptime < 0.0 {
            return None;
        }
        let flags = match optional_number(l, 5).ok()? {
            None => 0,
            Some(f) if f.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&f) => f as u32,
            Some(_) => return None,
        };
        let r = d.set(key, value, exptime, flags, SetMode::Set, now_ms());
        Some(Reply::Set(r.map_err(|e| e.as_str())))
    }
}

/// `zone:incr(key, value, init?, init_ttl?)`, without `init_ttl`.
unsafe fn fast_incr(l: *mut lua_State, d: &SharedDict) -> Option<Reply> {
    // SAFETY: indexes within the call's arguments (or past them: `LUA_TNONE`).
    unsafe {
        let n = ffi::lua_gettop(l);
        if !(3..=5).contains(&n) || optional_number(l, 5) != Ok(None) {
            return None;
        }
        let key = key(l)?;
        if ffi::lua_type(l, 3) != ffi::LUA_TNUMBER {
            return None;
        }
        let by = ffi::lua_tonumber(l, 3);
        let init = optional_number(l, 4).ok()?;
        let r = d.incr(key, by, init, 0.0, now_ms());
        // `forcible` only comes back when an `init` was given.
        Some(Reply::Incr(
            r.map(|(v, forcible)| (v, init.map(|_| forcible)))
                .map_err(|e| e.as_str()),
        ))
    }
}

/// Pushes `r`'s results; returns how many.
unsafe fn push(l: *mut lua_State, r: Reply) -> c_int {
    // SAFETY: `l` is the call's state; `Reply` holds plain data.
    unsafe {
        match r {
            Reply::Missing => ffi::lua_pushnil(l),
            Reply::Got(v, flags) => {
                match v {
                    Scalar::Number(n) => ffi::lua_pushnumber(l, n),
                    Scalar::Boolean(b) => ffi::lua_pushboolean(l, b as c_int),
                    Scalar::Short(buf, len) => {
                        ffi::lua_pushlstring(l, buf.as_ptr().cast(), len);
                    }
                }
                // As lua-resty-core: the flags only when non-zero.
                if flags == 0 {
                    return 1;
                }
                ffi::lua_pushinteger(l, flags as ffi::lua_Integer);
                return 2;
            }
            Reply::Set(Ok(forcible)) => {
                ffi::lua_pushboolean(l, 1);
                ffi::lua_pushnil(l);
                ffi::lua_pushboolean(l, forcible as c_int);
                return 3;
            }
            Reply::Set(Err(e)) => {
                ffi::lua_pushboolean(l, 0);
                push_static(l, e);
                ffi::lua_pushboolean(l, 0);
                return 3;
            }
            Reply::Incr(Ok((v, None))) => ffi::lua_pushnumber(l, v),
            Reply::Incr(Ok((v, Some(forcible)))) => {
                ffi::lua_pushnumber(l, v);
                ffi::lua_pushnil(l);
                ffi::lua_pushboolean(l, forcible as c_int);
                return 3;
            }
            Reply::Incr(Err(e)) => {
                ffi::lua_pushnil(l);
                push_static(l, e);
                return 2;
            }
        }
        1
    }
}

unsafe fn push_static(l: *mut lua_State, s: &'static str) {
    // SAFETY: `l` is a valid state.
    unsafe {
        ffi::lua_pushlstring(l, s.as_ptr().cast(), s.len());
    }
}
