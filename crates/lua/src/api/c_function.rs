//! What the API's C functions share: the hot calls scripts make on every request (`ngx.say`,
//! `ngx.var.*`, shared-dict reads and counters) read their arguments straight off the Lua
//! stack, as lua-nginx-module's C functions and lua-resty-core's FFI calls do.
//!
//! Through mlua, a call converts its arguments and results into `MultiValue`s (heap-allocated
//! deques, a registry reference per string), and with the VM's memory limit on, every string
//! it makes runs in a protected call. For the common call that costs more than the work. Each
//! C function here handles the common case and passes any other call whole to the mlua
//! implementation, kept in the registry, so results and error messages stay that one's.
//!
//! The rule that keeps them sound: while a Lua API call that can raise an error runs (a
//! string push may fail for memory, the full implementation may raise its error), nothing
//! needs dropping. Errors unwind through these frames as through mlua's own callbacks.

use std::ffi::{CStr, c_int};

use mlua::ffi::{self, lua_State};
use mlua::{Function, Lua};

/// Makes `f` a Lua function, with `full` kept in the registry under `key` for the calls it
/// passes on.
///
/// # Safety
/// `f` keeps to the Lua C API's contract and the rule above.
pub unsafe fn with_full(
    lua: &Lua,
    f: ffi::lua_CFunction,
    key: &'static CStr,
    full: Function,
) -> mlua::Result<Function> {
    lua.set_named_registry_value(key.to_str().unwrap_or_default(), full)?;
    // SAFETY: as the caller promises.
    unsafe { lua.create_c_function(f) }
}

/// Calls the full implementation under `key` with this call's arguments as they are, and
/// returns all its results.
///
/// # Safety
/// `l` is the state of a C function's call, and nothing in the caller needs dropping.
pub unsafe fn call_full(l: *mut lua_State, key: &CStr) -> c_int {
    // SAFETY: as the caller promises; the function goes below the arguments.
    unsafe {
        let n = ffi::lua_gettop(l);
        ffi::lua_getfield(l, ffi::LUA_REGISTRYINDEX, key.as_ptr());
        ffi::lua_insert(l, 1);
        ffi::lua_call(l, n, ffi::LUA_MULTRET);
        ffi::lua_gettop(l)
    }
}

/// The bytes of the string at `i`, or `None` if it holds no string. Numbers are not converted:
/// `lua_tolstring` would change the stack slot (and may raise an error).
///
/// # Safety
/// `i` is a valid index of `l`; the bytes live as long as the value stays on the stack.
pub unsafe fn string_at<'a>(l: *mut lua_State, i: c_int) -> Option<&'a [u8]> {
    // SAFETY: as the caller promises; a string is read as it is, without conversion.
    unsafe {
        if ffi::lua_type(l, i) != ffi::LUA_TSTRING {
            return None;
        }
        let mut len = 0usize;
        let p = ffi::lua_tolstring(l, i, &mut len);
        (!p.is_null()).then(|| std::slice::from_raw_parts(p as *const u8, len))
    }
}
