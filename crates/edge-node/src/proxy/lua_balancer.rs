//! An upstream's `lua_balancer`, run before every try as nginx runs `balancer_by_lua` each
//! time it picks a peer: the script sees how the last try failed
//! (`ngx.balancer.get_last_failure()`), and may choose the peer, add tries and set this
//! try's timeouts. What it chose is read back here for the attempt loop.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use outpost_lua::{LuaError, Outcome, Phase};

use super::error::ProxyError;
use super::lua_phase::LuaRequest;
use crate::config::Snapshot;
use crate::rules::LuaChunk;
use crate::server::worker::WorkerCtx;

/// Tries allowed by `set_more_tries` when the upstream sets no `retries` (nginx's
/// `proxy_next_upstream_tries 0` means no limit; this bounds a script that always adds one).
pub const MAX_LUA_TRIES: u32 = 32;

/// What a request needs to run its upstream's balancer: its Lua state and the VM's config.
#[derive(Clone)]
pub struct BalancerLua {
    pub snapshot: Arc<Snapshot>,
    pub request: Rc<LuaRequest>,
    pub chunk: Arc<LuaChunk>,
}

/// What the script decided for one try.
#[derive(Debug, Default)]
pub struct Choice {
    pub peer: Option<SocketAddr>,
    /// Tries added after this one; nginx counts them only when a peer was set.
    pub more_tries: u32,
    pub connect_timeout: Option<Duration>,
    pub send_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
}

/// Runs the balancer for one try. `planned` counts the tries planned so far with this one;
/// `last_failure` is how the previous try ended.
pub async fn choose(
    w: &Rc<WorkerCtx>,
    lua: &BalancerLua,
    planned: u32,
    limit: u32,
    last_failure: Option<(&'static str, u16)>,
) -> Result<Choice, ProxyError> {
    let vm = lua
        .request
        .vm(w, &lua.snapshot)
        .map_err(|e| ProxyError::Balancer(e.to_string()))?;
    let state = &lua.request.state;
    {
        let mut s = state.borrow_mut();
        let b = s.balancer.get_or_insert_with(Default::default);
        b.limit = limit;
        b.begin_try(planned, last_failure);
    }
    let out = super::lua_phase::run_counted(
        &w.shared.metrics.lua,
        &vm,
        &lua.chunk.name,
        &lua.chunk.code,
        Phase::Balancer,
        state,
    )
    .await;
    match out {
        Err(e) => {
            // A limit's error was logged by the Lua crate.
            if !matches!(e, LuaError::Limit(_)) {
                tracing::error!(target: "lua", chunk = %lua.chunk.name, error = %e, "failed to run balancer_by_lua*");
            }
            Err(ProxyError::Balancer(e.to_string()))
        }
        // NGX_BUSY and NGX_DECLINED: no peer for this request (502), as nginx's
        // "no live upstreams".
        Ok(Outcome::Exit(outpost_lua::NGX_BUSY | outpost_lua::NGX_DECLINED)) => {
            Err(ProxyError::NoLivePeers)
        }
        // NGX_ERROR or a status: the request fails with 500 (nginx without OpenResty's
        // balancer status patch).
        Ok(Outcome::Exit(code)) => Err(ProxyError::Balancer(format!("ngx.exit({code})"))),
        Ok(Outcome::Continue) => {
            let s = state.borrow();
            let b = s.balancer.clone().unwrap_or_default();
            Ok(Choice {
                peer: b.peer,
                more_tries: b.more_tries,
                connect_timeout: b.connect_timeout,
                send_timeout: b.send_timeout,
                read_timeout: b.read_timeout,
            })
        }
    }
}
