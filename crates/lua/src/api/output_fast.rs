//! `ngx.say` and `ngx.print` as C functions (see `api/c_function.rs`), for the call nearly
//! every script makes: scalars (strings, numbers, booleans, nil, `ngx.null`) in a phase that
//! may print. Anything else (a table, a wrong type, the wrong phase, no request) goes to the
//! mlua implementation in `api/output.rs`.

use std::ffi::{CStr, c_int};

use mlua::ffi::{self, lua_State};
use mlua::{Function, Lua};

use super::c_function::{call_full, string_at, with_full};
use super::output::OUTPUT_PHASES;
use crate::numfmt::fmt_g14;
use crate::request;

const SAY: &CStr = c"outpost.ngx.say";
const PRINT: &CStr = c"outpost.ngx.print";

/// `ngx.say` and `ngx.print`, with the full implementations behind them.
pub fn functions(
    lua: &Lua,
    full_say: Function,
    full_print: Function,
) -> mlua::Result<(Function, Function)> {
    // SAFETY: both keep to the contract of `api/c_function.rs`.
    unsafe {
        Ok((
            with_full(lua, say, SAY, full_say)?,
            with_full(lua, print, PRINT, full_print)?,
        ))
    }
}

unsafe extern "C-unwind" fn say(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as a C function.
    unsafe { output(l, true, SAY) }
}

unsafe extern "C-unwind" fn print(l: *mut lua_State) -> c_int {
    // SAFETY: called by Lua as a C function.
    unsafe { output(l, false, PRINT) }
}

/// Prints the arguments, or hands the call to the full implementation under `full`.
unsafe fn output(l: *mut lua_State, newline: bool, full: &CStr) -> c_int {
    // SAFETY: `l` is the calling Lua state; indexes stay within its arguments, and none of
    // the calls below raises an error (strings are read as they are, not converted).
    unsafe {
        let n = ffi::lua_gettop(l);
        if (1..=n).all(|i| scalar(l, i)) {
            let printed = request::with_in(OUTPUT_PHASES, |r| {
                if r.eof {
                    return;
                }
                // Most responses printed this way are short: one allocation for them, not a
                // growth per argument.
                if r.output.capacity() == 0 {
                    r.output.reserve(256);
                }
                for i in 1..=n {
                    append(l, i, &mut r.output);
                }
                if newline {
                    r.output.push(b'\n');
                }
                if !r.headers_sent {
                    // The status goes out with the first output: reading it now gives what
                    // was sent.
                    r.status = Some(r.status.filter(|s| *s != 0).unwrap_or(200));
                }
                r.headers_sent = true;
            });
            if printed.is_some() {
                ffi::lua_pushinteger(l, 1);
                return 1;
            }
        }
        // Nothing Rust-owned is alive here.
        call_full(l, full)
    }
}

/// Whether the argument at `i` is one this path prints.
unsafe fn scalar(l: *mut lua_State, i: c_int) -> bool {
    // SAFETY: `i` is within the arguments.
    unsafe {
        match ffi::lua_type(l, i) {
            ffi::LUA_TSTRING | ffi::LUA_TNUMBER | ffi::LUA_TBOOLEAN | ffi::LUA_TNIL => true,
            ffi::LUA_TLIGHTUSERDATA => ffi::lua_touserdata(l, i).is_null(),
            _ => false,
        }
    }
}

/// Appends the argument at `i` (a [`scalar`]) as `api/output.rs`'s `render` does.
unsafe fn append(l: *mut lua_State, i: c_int, out: &mut Vec<u8>) {
    // SAFETY: `i` is within the arguments and holds a scalar: `lua_tolstring` on a string
    // returns its bytes without converting (so without raising an error).
    unsafe {
        match ffi::lua_type(l, i) {
            ffi::LUA_TSTRING => out.extend_from_slice(string_at(l, i).unwrap_or_default()),
            ffi::LUA_TNUMBER => {
                let x = ffi::lua_tonumber(l, i);
                // Integral values go through `(int32_t)` in lua-nginx-module, so -0 prints as 0.
                if x == 0.0 {
                    out.push(b'0');
                } else {
                    out.extend_from_slice(fmt_g14(x).as_bytes());
                }
            }
            ffi::LUA_TBOOLEAN => out.extend_from_slice(if ffi::lua_toboolean(l, i) != 0 {
                b"true"
            } else {
                b"false"
            }),
            ffi::LUA_TNIL => out.extend_from_slice(b"nil"),
            // `ngx.null`.
            _ => out.extend_from_slice(b"null"),
        }
    }
}
