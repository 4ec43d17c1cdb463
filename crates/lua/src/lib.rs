//! OpenResty-compatible Lua for the edge.
//!
//! - [`LuaVm`]: one LuaJIT VM per worker; each request runs in its own coroutine with its own
//!   globals; `require` finds the config's modules, then Debian's system path.
//! - `api/`: the `ngx` table (output and flow, `ngx.req`, `ngx.var`, encodings, time,
//!   logging, timers, `ngx.shared`).
//! - [`SharedDicts`]: `ngx.shared.DICT`, shared by all workers. [`cjson`]: lua-cjson.
//! - [`LuaLimits`] (`limits.rs`): a memory limit per VM, an execution budget per request, and
//!   the sandbox for untrusted code (`sandbox.rs`).
//! - [`CacheAccess`]: the edge's cache as `require "outpost.cache"` reads and writes it.
//! - [`check_syntax`]: a compile check that runs nothing, for validating configs.
//! - Phases that are not a request's own step: [`LuaVm::init_worker`] (once per VM),
//!   [`LuaVm::body_filter`] (once per response body chunk, with `ngx.arg`), and the
//!   balancer's `require "ngx.balancer"` (`api/balancer.rs`, state in [`BalancerState`]).
//! - Subrequests (`ngx.location.capture`, `api/location.rs`): the host runs them, through a
//!   [`SubrequestRunner`] it puts in the request's state (`subrequest.rs`).
//! - [`uri`]: nginx's `$uri` (decoded, normalised) and its escaping on the way upstream.

mod api;
pub mod cache_access;
mod chunk_hash;
pub mod cjson;
pub mod client_body;
pub mod ffi_symbols;
pub mod limits;
mod numfmt;
pub mod request;
mod request_reuse;
pub mod response;
mod sandbox;
pub mod shared_dict;
pub mod subrequest;
pub mod uri;
mod vm;

pub use api::ssl::{CertChoice, TlsInfo};
pub use cache_access::{CacheAccess, CacheAccessError, CacheFuture, CachedObject, NewObject};
pub use client_body::{
    BodySource, ClientBody, DownstreamIo, MAX_BODY_IN_MEMORY, SharedDownstream, Upgrade,
};
pub use limits::{Exceeded, LuaLimits, Sandbox};
/// A Lua value kept for later (a request's `ngx.ctx` table), as the host holds it.
pub use mlua::RegistryKey;
pub use request::{BalancerState, LazyId, RequestState, SharedRequest};
pub use response::{LuaResponse, content_response, error_page, status_response, streamed_head};
pub use shared_dict::{SharedDict, SharedDicts};
pub use subrequest::{CaptureFuture, Captured, Subrequest, SubrequestRunner};
pub use vm::{LuaVm, Outcome, SYSTEM_PATH};

/// `ngx.exit` codes with a meaning in the balancer phase (nginx's `NGX_ERROR`, `NGX_BUSY`,
/// `NGX_DECLINED`).
pub const NGX_ERROR: i64 = -1;
pub const NGX_BUSY: i64 = -3;
pub const NGX_DECLINED: i64 = -5;

/// The request phases, named as `ngx.get_phase()` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Init,
    InitWorker,
    Rewrite,
    Access,
    Content,
    Balancer,
    HeaderFilter,
    BodyFilter,
    Log,
    Timer,
    /// During a TLS handshake, choosing the certificate (nginx's `ssl_certificate_by_lua`).
    SslCert,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Init => "init",
            Phase::InitWorker => "init_worker",
            Phase::Rewrite => "rewrite",
            Phase::Access => "access",
            Phase::Content => "content",
            Phase::Balancer => "balancer",
            Phase::HeaderFilter => "header_filter",
            Phase::BodyFilter => "body_filter",
            Phase::Log => "log",
            Phase::Timer => "timer",
            Phase::SslCert => "ssl_cert",
        }
    }

    /// The name lua-nginx-module gives the phase in "API disabled in the context of ..."
    /// errors (`ngx_http_lua_context_name`).
    pub fn context_name(self) -> &'static str {
        match self {
            Phase::Init => "init_by_lua*",
            Phase::InitWorker => "init_worker_by_lua*",
            Phase::Rewrite => "rewrite_by_lua*",
            Phase::Access => "access_by_lua*",
            Phase::Content => "content_by_lua*",
            Phase::Balancer => "balancer_by_lua*",
            Phase::HeaderFilter => "header_filter_by_lua*",
            Phase::BodyFilter => "body_filter_by_lua*",
            Phase::Log => "log_by_lua*",
            Phase::Timer => "ngx.timer",
            Phase::SslCert => "ssl_certificate_by_lua*",
        }
    }

    /// Phases whose code may wait (`ngx.sleep`, cosockets, light threads): OpenResty's
    /// `NGX_HTTP_LUA_CONTEXT_YIELDABLE`.
    pub fn yieldable(self) -> bool {
        matches!(
            self,
            Phase::Rewrite | Phase::Access | Phase::Content | Phase::Timer | Phase::SslCert
        )
    }

    /// OpenResty's error for an API this phase does not allow.
    pub fn disabled(self) -> mlua::Error {
        mlua::Error::runtime(self.disabled_message())
    }

    pub fn disabled_message(self) -> String {
        format!("API disabled in the context of {}", self.context_name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LuaError {
    #[error("Lua VM setup failed: {0}")]
    Setup(String),
    #[error("{0}")]
    Compile(String),
    #[error("{0}")]
    Runtime(String),
    /// The request went past a [`LuaLimits`] limit and was stopped.
    #[error("{0}")]
    Limit(#[from] Exceeded),
}

/// A syntax error: line (1-based) and LuaJIT's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: Option<u32>,
    pub message: String,
}

/// Compiles `code` as a phase handler body without running it.
pub fn check_syntax(name: &str, code: &str) -> Result<(), SyntaxError> {
    let lua = mlua::Lua::new();
    let wrapped = format!("return function(...) {code}\nend");
    match lua
        .load(&wrapped)
        .set_name(format!("={name}"))
        .into_function()
    {
        Ok(_) => Ok(()),
        Err(e) => {
            let message = match &e {
                mlua::Error::SyntaxError { message, .. } => message.clone(),
                other => other.to_string(),
            };
            // LuaJIT's messages read `name:LINE: text`.
            let line = message
                .strip_prefix(&format!("{name}:"))
                .and_then(|rest| rest.split(':').next())
                .and_then(|n| n.parse().ok());
            Err(SyntaxError { line, message })
        }
    }
}
