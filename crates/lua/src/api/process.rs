//! `require "ngx.process"`, lua-resty-core's module, mapped onto the edge: its workers are
//! threads of one process, each with a VM of its own, so the "master" is that process and a
//! graceful exit retires the worker's VM rather than the worker.

use std::cell::Cell;
use std::rc::Rc;

use mlua::{Lua, Table, Value};

/// The flags a graceful exit sets on its VM.
#[derive(Clone)]
pub struct Exit {
    /// `ngx.worker.exiting()` answers it.
    pub exiting: Rc<Cell<bool>>,
    /// Cleared: the VM's `ngx.timer.every` loops stop.
    pub alive: Rc<Cell<bool>>,
    /// Set: the worker builds a fresh VM (and runs `lua_init_worker` in it) for its next
    /// request; requests and timers still on this one finish there.
    pub recycle: Rc<Cell<bool>>,
}

pub fn install(lua: &Lua, loaded: &Table, exit: Exit) -> mlua::Result<()> {
    let m = lua.create_table()?;
    // Lua runs only in workers here: there is no init_by_lua (master), no privileged agent.
    m.set("type", lua.create_function(|_, ()| Ok("worker"))?)?;
    m.set(
        "get_master_pid",
        lua.create_function(|_, ()| Ok(std::process::id()))?,
    )?;
    // lua-resty-core allows it only in init_by_lua, which the edge does not have.
    m.set(
        "enable_privileged_agent",
        lua.create_function(|lua, ()| {
            Ok((
                Value::Nil,
                Value::String(lua.create_string("API disabled in the current context")?),
            ))
        })?,
    )?;
    m.set(
        "signal_graceful_exit",
        lua.create_function(move |_, ()| {
            exit.exiting.set(true);
            exit.alive.set(false);
            exit.recycle.set(true);
            Ok(())
        })?,
    )?;
    loaded.set("ngx.process", m)?;
    Ok(())
}
