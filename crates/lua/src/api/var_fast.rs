//! `ngx.var`'s reads as a C function (see `api/c_function.rs`): a variable name given as a
//! string, with a value of up to [`SHORT`] bytes, or none. Anything else (another key type, a
//! longer value, no request) goes to the mlua implementation in `api/req.rs`.

use std::ffi::{CStr, c_int};

use mlua::ffi::{self, lua_State};
use mlua::{Function, Lua};

use super::c_function::{call_full, string_at, with_full};
use super::req::variable;
use crate::request;

const INDEX: &CStr = c"outpost.ngx.var.__index";

/// The longest value (and name) this path copies on the stack; addresses, ports, methods
/// and most URIs fit.
const SHORT: usize = 256;

/// `ngx.var`'s `__index`, with `full` behind it.
pub fn index(lua: &Lua, full: Function) -> mlua::Result<Function> {
    // SAFETY: `index` keeps to the contract of `api/c_function.rs`.
    unsafe { with_full(lua, var_index, INDEX, full) }
}

/// What the request gave for a name.
// On the stack for one call, never moved around: boxing the value would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum Found {
    None,
    Short([u8; SHORT], usize),
}

unsafe extern "C-unwind" fn var_index(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as `__index(table, key)`; the value is copied out of the request
    // before anything is pushed, so no borrow is held while Lua may raise an error.
    unsafe {
        if let Some(found) = lookup(l) {
            match found {
                Found::None => ffi::lua_pushnil(l),
                Found::Short(buf, len) => {
                    ffi::lua_pushlstring(l, buf.as_ptr().cast(), len);
                }
            }
            return 1;
        }
        call_full(l, INDEX)
    }
}

/// The variable named at index 2, if this path can answer for it.
unsafe fn lookup(l: *mut lua_State) -> Option<Found> {
    // SAFETY: index 2 exists when the stack holds two values.
    let name = unsafe {
        if ffi::lua_gettop(l) != 2 {
            return None;
        }
        string_at(l, 2)?
    };
    // nginx variable names are case-insensitive; most are read in lower case already.
    let mut lower = [0u8; SHORT];
    let name = if name.iter().any(u8::is_ascii_uppercase) {
        let to = lower.get_mut(..name.len())?;
        to.copy_from_slice(name);
        to.make_ascii_lowercase();
        &*to
    } else {
        name
    };
    let name = std::str::from_utf8(name).ok()?;
    request::with_request(|r| match variable(r, name) {
        None => Some(Found::None),
        Some(v) if v.len() <= SHORT => {
            let mut buf = [0u8; SHORT];
            buf[..v.len()].copy_from_slice(&v);
            Some(Found::Short(buf, v.len()))
        }
        Some(_) => None,
    })?
}
