//! One LuaJIT VM per worker: the `ngx` API, `require` over the config's modules then Debian's
//! system path, compiled chunks cached, and each request run in its own coroutine. Globals live
//! as long as the VM, as in lua-nginx-module (whose `_G` every request shares, with a guard that
//! logs a warning on each new global a request writes); here each application has its own
//! globals table in front of `_G`, so one tenant's globals never reach another's.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// Compiled chunks by their code. Every Lua phase of every request looks its chunk up here,
/// so the key's hash reads a sample of it, not all of it (`chunk_hash.rs`).
type ChunkMap = HashMap<String, Function, crate::chunk_hash::ChunkHash>;
use std::rc::Rc;
use std::sync::Arc;

use mlua::{Function, Lua, Table, Value};

use crate::limits::{BudgetLimits, Exceeded, LuaLimits};
use crate::request::{ExitSignal, SharedRequest, WithRequest};
use crate::shared_dict::SharedDicts;
use crate::{LuaError, Phase};

/// Where the VM looks for modules after the config's own (Debian's `lua_package_path`).
pub const SYSTEM_PATH: &str = "/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;/usr/local/share/lua/5.1/?.lua;/usr/local/share/lua/5.1/?/init.lua";

/// Request coroutines kept for reuse per VM: more than a worker usually has in flight.
const THREAD_POOL: usize = 256;

/// Libraries bundled under OpenResty's module names (written for Outpost).
const BUNDLED: &[(&str, &str)] = &[
    ("resty.limit.req", include_str!("lualib/limit_req.lua")),
    ("resty.limit.count", include_str!("lualib/limit_count.lua")),
    ("resty.limit.conn", include_str!("lualib/limit_conn.lua")),
    ("resty.lrucache", include_str!("lualib/lrucache.lua")),
    ("resty.lock", include_str!("lualib/lock.lua")),
    ("resty.http", include_str!("lualib/http.lua")),
    ("resty.dns.resolver", include_str!("lualib/resolver.lua")),
    ("resty.mysql", include_str!("lualib/mysql.lua")),
    ("resty.redis", include_str!("lualib/redis.lua")),
];

/// lua-nginx-module's `_G` write guard: a new global written while serving a request is kept,
/// and logged as a warning (with nginx's wording) since concurrent requests share it. Set on
/// `_G` and on every application's globals table.
const WRITE_GUARD: &str = r#"
local rawset, tostring, get_phase, log, WARN = rawset, tostring, ngx.get_phase, ngx.log, ngx.WARN
local traceback = debug and debug.traceback or function() return "" end
return function(t, key, value)
  rawset(t, key, value)
  local phase = get_phase()
  if phase == "init_worker" or phase == "init" then
    return
  end
  log(WARN, "writing a global Lua variable ('", tostring(key), "') which may lead to ",
    "race conditions between concurrent requests, so prefer the use of 'local' variables",
    traceback("", 2))
end
"#;

/// What a phase handler ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ran to its end (or `ngx.exit(ngx.OK)`): the next phase runs.
    Continue,
    /// `ngx.exit(status)` / `ngx.redirect`: the request ends with this status.
    Exit(i64),
}

pub struct LuaVm {
    lua: Lua,
    /// Chunk source to its function, for chunks that run with `_G` itself.
    chunks: RefCell<ChunkMap>,
    /// Per application: its globals table and its chunks, compiled with that table as their
    /// environment.
    scopes: RefCell<HashMap<Arc<str>, Scope, rustc_hash::FxBuildHasher>>,
    /// The metatable of every application's globals: reads fall through to `_G`, new globals
    /// pass the write guard.
    scope_meta: Table,
    /// Cleared when the VM goes: its recurring timers stop.
    alive: Rc<Cell<bool>>,
    limits: LuaLimits,
    /// Set when the VM hit its memory limit, or a script asked for a graceful exit: its
    /// owner should build a fresh one.
    recycle: Rc<Cell<bool>>,
    /// `ngx.process.signal_graceful_exit()` ran.
    exiting: Rc<Cell<bool>>,
}

/// One application's globals and its chunks compiled against them.
struct Scope {
    /// The name as the config that made the scope holds it: a request from a newer config
    /// brings another `Arc`, and the scope starts over.
    owner: Arc<str>,
    globals: Table,
    chunks: ChunkMap,
}

impl Drop for LuaVm {
    fn drop(&mut self) {
        self.alive.set(false);
    }
}

impl LuaVm {
    /// `modules`: name to source, searched by `require` before the system path. With the
    /// default [`LuaLimits`]: see [`LuaVm::with_limits`].
    pub fn new(
        worker_id: usize,
        workers: usize,
        dicts: Arc<SharedDicts>,
        modules: &[(String, String)],
    ) -> Result<LuaVm, LuaError> {
        Self::with_limits(worker_id, workers, dicts, modules, LuaLimits::default())
    }

    /// As [`LuaVm::new`], with `limits` on memory, each request's execution and what scripts
    /// may reach (`docs/lua.md`, "Limits and sandbox").
    pub fn with_limits(
        worker_id: usize,
        workers: usize,
        dicts: Arc<SharedDicts>,
        modules: &[(String, String)],
        limits: LuaLimits,
    ) -> Result<LuaVm, LuaError> {
        // SAFETY-free: `Lua::new` opens the safe standard libraries; LuaJIT's `ffi` and `jit`
        // come from `unsafe_new` only, which scripts written for OpenResty expect.
        // Finished request coroutines go back to a pool for the next requests (mlua keeps
        // none by default, and a new one costs a LuaJIT state and a registry slot).
        let options = mlua::LuaOptions::new().thread_pool_size(THREAD_POOL);
        let lua = unsafe { Lua::unsafe_new_with(mlua::StdLib::ALL, options) };
        // Before any script: lua-resty-string-style libraries look libcrypto up through ffi.C.
        crate::ffi_symbols::load_libcrypto();
        let alive = Rc::new(Cell::new(true));
        let recycle = Rc::new(Cell::new(false));
        let exiting = Rc::new(Cell::new(false));
        let setup = || -> mlua::Result<()> {
            // First, so no code runs (and no trace compiles) before the limits hold.
            if let Some(bytes) = limits.memory {
                lua.set_memory_limit(bytes)?;
            }
            if limits.has_budget() {
                crate::limits::install_budget(&lua, budget_limits(&limits))?;
            }
            let ngx = lua.create_table()?;
            crate::api::output::install(&lua, &ngx)?;
            crate::api::req::install(&lua, &ngx)?;
            crate::api::codec::install(&lua, &ngx)?;
            crate::api::misc::install(&lua, &ngx, worker_id, workers, exiting.clone())?;
            crate::api::shared::install(&lua, &ngx, dicts)?;
            let globals = lua.globals();
            crate::api::re::install(&lua, &ngx)?;
            crate::api::socket::install(&lua, &ngx)?;
            crate::api::thread::install(&lua, &ngx, alive.clone())?;
            crate::api::arg::install(&lua, &ngx)?;
            crate::api::location::install(&lua, &ngx)?;
            globals.set("ngx", ngx)?;
            let package: Table = globals.get("package")?;
            package.set("path", SYSTEM_PATH)?;
            crate::api::balancer::install(&lua)?;
            let preload: Table = package.get("preload")?;
            preload.set(
                "cjson",
                lua.create_function(|lua, ()| crate::cjson::module(lua, false))?,
            )?;
            preload.set(
                "cjson.safe",
                lua.create_function(|lua, ()| crate::cjson::module(lua, true))?,
            )?;
            crate::api::resty_string::install(&lua, &preload)?;
            crate::api::ssl::install(&lua, &preload)?;
            // lua-resty-core is built in here: requiring it does nothing.
            // The edge's cache: srcache-style control of it, and its objects.
            let loaded: Table = package.get("loaded")?;
            crate::api::cache::install(&lua, &loaded)?;
            crate::api::process::install(
                &lua,
                &loaded,
                crate::api::process::Exit {
                    exiting: exiting.clone(),
                    alive: alive.clone(),
                    recycle: recycle.clone(),
                },
            )?;
            for empty in ["resty.core", "resty.core.base"] {
                preload.set(empty, lua.create_function(|lua, ()| lua.create_table())?)?;
            }
            // Errors raised by our Rust functions reach `pcall` as plain strings, as
            // lua-nginx-module's do (an `ngx.exit` stays what it is, so it still ends the phase).
            let clean = lua.create_function(|lua, v: Value| match &v {
                Value::Error(e) if exit_of(e).is_none() => Ok(Value::String(
                    lua.create_string(crate::api::output::clean_error(e))?,
                )),
                _ => Ok(v),
            })?;
            lua.load(
                r#"
                local raw_pcall, raw_xpcall, clean, aborted, pending = pcall, xpcall, ...
                local raw_resume, raw_yield, error = coroutine.resume, coroutine.yield, error
                local status, create, select = coroutine.status, coroutine.create, select
                local unpack = unpack
                -- A request past its limits cannot catch that error: it goes on up.
                local function after(ok, ...)
                    if ok then return ok, ... end
                    if aborted((...)) then error((...), 0) end
                    return ok, clean((...))
                end
                pcall = function(...) return after(raw_pcall(...)) end
                local function after_x(ok, ...)
                    if not ok and aborted((...)) then error((...), 0) end
                    return ok, ...
                end
                xpcall = function(f, handler, ...)
                    return after_x(raw_xpcall(f, function(e)
                        if aborted(e) then return e end
                        return handler(clean(e))
                    end, ...))
                end
                -- A script's own coroutine that waits (ngx.sleep, a cosocket) yields the
                -- "pending" marker of the async call inside it; as OpenResty does, the wait
                -- passes up to the request's own coroutine, and the script's coroutine goes on
                -- where it was once the wait is over.
                local function resumed(co, ok, first, ...)
                    if ok and first == pending and select('#', ...) == 0
                        and status(co) == "suspended" then
                        return resumed(co, raw_resume(co, raw_yield(pending)))
                    end
                    return ok, first, ...
                end
                coroutine.resume = function(co, ...)
                    return after_x(resumed(co, raw_resume(co, ...)))
                end
                local resume = coroutine.resume
                -- As LuaJIT's own wrap: a string error gets the wrapper's caller's position.
                local function wrapped(ok, ...)
                    if not ok then
                        local e = ...
                        if type(e) == "string" then error(e, 2) end
                        error(e, 0)
                    end
                    return ...
                end
                coroutine.wrap = function(f)
                    local co = create(f)
                    return function(...) return wrapped(resume(co, ...)) end
                end
                "#,
            )
            .set_name("=outpost.pcall")
            .call::<()>((
                clean,
                crate::limits::aborted_fn(&lua, limits.memory, recycle.clone())?,
                Value::LightUserData(Lua::poll_pending()),
            ))?;
            lua.load(
                r#"
                local ok_new, new_tab = pcall(require, "table.new")
                if not ok_new then
                    package.preload["table.new"] = function()
                        return function(narr, nrec) return {} end
                    end
                end
                -- OpenResty's LuaJIT adds these; plain LuaJIT gets them in Lua.
                local function ext(name, f)
                    if not pcall(require, name) then
                        package.preload[name] = function() return f end
                    end
                end
                ext("table.nkeys", function(t)
                    local n = 0
                    for _ in pairs(t) do n = n + 1 end
                    return n
                end)
                ext("table.isempty", function(t) return next(t) == nil end)
                ext("table.isarray", function(t)
                    local n = 0
                    for k in pairs(t) do
                        if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then return false end
                        n = n + 1
                    end
                    for i = 1, n do
                        if t[i] == nil then return false end
                    end
                    return true
                end)
                ext("table.clone", function(t)
                    local c = {}
                    for k, v in pairs(t) do c[k] = v end
                    return c
                end)
                local ok_clear = pcall(require, "table.clear")
                if not ok_clear then
                    package.preload["table.clear"] = function()
                        return function(t) for k in pairs(t) do t[k] = nil end end
                    end
                end
                "#,
            )
            .set_name("=outpost.init")
            .exec()?;
            // The OpenResty libraries scripts expect without installing anything, ours.
            for (name, code) in BUNDLED {
                preload.set(
                    *name,
                    lua.create_function(move |lua, args: mlua::MultiValue| {
                        lua.load(*code)
                            .set_name(format!("={name}"))
                            .call::<Value>(args)
                    })?,
                )?;
            }
            for (name, code) in modules {
                let code = code.clone();
                let chunk_name = format!("={name}");
                preload.set(
                    name.as_str(),
                    lua.create_function(move |lua, args: mlua::MultiValue| {
                        lua.load(&code).set_name(&chunk_name).call::<Value>(args)
                    })?,
                )?;
            }
            if let Some(sandbox) = &limits.sandbox {
                crate::sandbox::install(&lua, sandbox)?;
            }
            Ok(())
        };
        setup().map_err(|e| LuaError::Setup(e.to_string()))?;
        let scope_meta = (|| -> mlua::Result<Table> {
            let guard: Function = lua.load(WRITE_GUARD).set_name("=_G write guard").call(())?;
            let globals = lua.globals();
            let root_meta = lua.create_table()?;
            root_meta.set("__newindex", guard.clone())?;
            globals.set_metatable(Some(root_meta))?;
            let meta = lua.create_table()?;
            meta.set("__index", globals)?;
            meta.set("__newindex", guard)?;
            Ok(meta)
        })()
        .map_err(|e| LuaError::Setup(e.to_string()))?;
        Ok(LuaVm {
            lua,
            chunks: RefCell::new(ChunkMap::default()),
            scopes: RefCell::new(HashMap::default()),
            scope_meta,
            alive,
            limits,
            recycle,
            exiting,
        })
    }

    pub fn lua(&self) -> &Lua {
        &self.lua
    }

    /// The cache `require "outpost.cache"` reads and writes (`get`, `set`, `delete`,
    /// `purge_tag`, `key`). Without one they answer `nil, "no cache"`.
    pub fn set_cache_access(&self, access: std::rc::Rc<dyn crate::CacheAccess>) {
        self.lua.set_app_data(crate::api::cache::CacheSlot(access));
    }

    pub fn limits(&self) -> &LuaLimits {
        &self.limits
    }

    /// Whether this VM hit its memory limit (or stays near it after a full collection) and
    /// should be replaced: build a fresh VM for the next requests and drop this one once the
    /// requests still running on it end. The VM keeps working meanwhile.
    pub fn needs_recycle(&self) -> bool {
        self.recycle.get()
    }

    /// Whether a script called `ngx.process.signal_graceful_exit()` (which also sets
    /// [`LuaVm::needs_recycle`]): the VM is replaced by choice, not for its memory.
    pub fn exiting(&self) -> bool {
        self.exiting.get()
    }

    /// Bytes the VM's heap holds now.
    pub fn used_memory(&self) -> usize {
        self.lua.used_memory()
    }

    /// PEM certificates that `tcpsock:sslhandshake(..., ssl_verify = true)` trusts besides
    /// webpki-roots (OpenResty's `lua_ssl_trusted_certificate`). Replaces any set before.
    pub fn set_ssl_trusted_certificate(&self, pem: &str) -> Result<(), LuaError> {
        crate::api::socket::set_trusted_certificate(&self.lua, pem)
            .map_err(|e| LuaError::Setup(e.to_string()))
    }

    /// `code` compiled once per globals scope: `None` runs it with `_G`, an application's name
    /// with that application's globals table. An application's scope lasts as long as the
    /// config it came from: the first request under a new config starts it over with fresh
    /// globals (as an nginx reload starts fresh VMs) and drops the chunks compiled before.
    fn chunk(
        &self,
        scope: Option<&Arc<str>>,
        name: &str,
        code: &str,
    ) -> Result<Function, LuaError> {
        let Some(scope) = scope else {
            if let Some(f) = self.chunks.borrow().get(code) {
                return Ok(f.clone());
            }
            let f = self.compile(name, code, None)?;
            self.chunks.borrow_mut().insert(code.to_string(), f.clone());
            return Ok(f);
        };
        let current = self
            .scopes
            .borrow()
            .get(&**scope)
            .filter(|s| Arc::ptr_eq(&s.owner, scope))
            .map(|s| match s.chunks.get(code) {
                Some(f) => Ok(f.clone()),
                // Only a chunk not compiled yet needs the table (cloning it is a registry
                // reference, not free).
                None => Err(s.globals.clone()),
            });
        let env = match current {
            Some(Ok(f)) => return Ok(f),
            Some(Err(env)) => env,
            None => {
                let globals = self
                    .new_globals()
                    .map_err(|e| LuaError::Setup(e.to_string()))?;
                let fresh = Scope {
                    owner: scope.clone(),
                    globals: globals.clone(),
                    chunks: ChunkMap::default(),
                };
                self.scopes.borrow_mut().insert(scope.clone(), fresh);
                globals
            }
        };
        let f = self.compile(name, code, Some(env))?;
        if let Some(s) = self.scopes.borrow_mut().get_mut(&**scope) {
            s.chunks.insert(code.to_string(), f.clone());
        }
        Ok(f)
    }

    /// The call of `code`'s chunk, started, in the scope [`LuaVm::chunk`] gives. A chunk
    /// compiled already is called where it is kept: a copy of the function (a registry
    /// reference made and dropped) and of the scope's name (a count every worker writes)
    /// would cost more than the lookup.
    fn call_chunk(
        &self,
        scope: Option<&Arc<str>>,
        name: &str,
        code: &str,
    ) -> Result<mlua::function::AsyncCallFuture<()>, LuaError> {
        let cached = match scope {
            None => self.chunks.borrow().get(code).map(|f| f.call_async(())),
            Some(scope) => (self.scopes.borrow().get(&**scope))
                .filter(|s| Arc::ptr_eq(&s.owner, scope))
                .and_then(|s| s.chunks.get(code).map(|f| f.call_async(()))),
        };
        match cached {
            Some(call) => Ok(call),
            None => Ok(self.chunk(scope, name, code)?.call_async(())),
        }
    }

    /// An application's globals table: its `_G` is itself, and what it lacks comes from `_G`.
    fn new_globals(&self) -> mlua::Result<Table> {
        let env = self.lua.create_table()?;
        env.raw_set("_G", &env)?;
        env.set_metatable(Some(self.scope_meta.clone()))?;
        Ok(env)
    }

    fn compile(&self, name: &str, code: &str, env: Option<Table>) -> Result<Function, LuaError> {
        let mut chunk = self.lua.load(code).set_name(format!("={name}"));
        if let Some(env) = env {
            chunk = chunk.set_environment(env);
        }
        chunk
            .into_function()
            .map_err(|e| LuaError::Compile(e.to_string()))
    }

    /// Runs `code` for `request` in `phase`, in a coroutine of its own, with the globals of
    /// the request's application (`RequestState::globals`).
    pub async fn run(
        &self,
        name: &str,
        code: &str,
        phase: Phase,
        request: &SharedRequest,
    ) -> Result<Outcome, LuaError> {
        let budget = request.borrow().budget.clone();
        // The budget is the request's: once spent, none of its phases runs Lua again. The
        // phase that spent it logged the error line; one per request is enough.
        if let Some(why) = budget.exceeded() {
            tracing::debug!(target: "lua", chunk = name, phase = phase.name(), limit = %why,
                "Lua phase skipped: the request was stopped by a limit");
            return Err(LuaError::Limit(why));
        }
        budget.set_timed(self.limits.cpu_time.is_some());
        let call = {
            let r = request.borrow();
            self.call_chunk(r.globals.as_ref(), name, code)?
        };
        request.borrow_mut().phase = phase;
        request.borrow_mut().exit = None;
        let fut = WithRequest {
            request: request.clone(),
            inner: Box::pin(call),
        };
        let result = fut.await;
        self.after_run();
        // Past a limit, however the script ended: caught or not, or in a C function that no
        // hook could interrupt.
        let over = match &result {
            Err(e) => crate::limits::exceeded_in(e, self.limits.memory),
            Ok(()) => None,
        };
        if let Some(why) = over {
            budget.exceed(why);
        }
        if let Some(why) = budget.check(&budget_limits(&self.limits)) {
            if matches!(why, Exceeded::Memory(_)) {
                self.recycle.set(true);
            }
            return Err(self.stopped(name, phase, why));
        }
        match result {
            Ok(()) => match request.borrow().exit {
                // ngx.exit in the balancer returns to the script (see `api/output.rs`).
                Some(code) if phase == Phase::Balancer && code != 0 => Ok(Outcome::Exit(code)),
                _ => Ok(Outcome::Continue),
            },
            Err(e) => match exit_of(&e) {
                Some(0) => Ok(Outcome::Continue),
                Some(code) => Ok(Outcome::Exit(code)),
                None => Err(LuaError::Runtime(e.to_string())),
            },
        }
    }
}

impl LuaVm {
    /// The error (and the error-log line) of a request stopped by a limit.
    fn stopped(&self, name: &str, phase: Phase, why: Exceeded) -> LuaError {
        tracing::error!(target: "lua", chunk = name, phase = phase.name(), limit = %why,
            used_memory = self.lua.used_memory(), recycle = self.recycle.get(),
            "Lua request stopped by a limit");
        LuaError::Limit(why)
    }

    /// Near the memory limit after a run: collect, and if the heap stays near it, the live
    /// data itself is too big and the VM should be replaced before requests start failing.
    fn after_run(&self) {
        let Some(limit) = self.limits.memory else {
            return;
        };
        let near = |used: usize| used > limit / 10 * 9;
        if self.recycle.get() || !near(self.lua.used_memory()) {
            return;
        }
        if self.lua.gc_collect().is_err() || near(self.lua.used_memory()) {
            tracing::warn!(target: "lua", used_memory = self.lua.used_memory(), limit,
                "Lua VM stays near its memory limit after a full collection; it will be replaced");
            self.recycle.set(true);
        }
    }
}

fn budget_limits(limits: &LuaLimits) -> BudgetLimits {
    BudgetLimits {
        instructions: limits.instructions,
        cpu_time: limits.cpu_time,
    }
}

impl LuaVm {
    /// Runs `init_worker` code once for this VM, on a stand-in request as OpenResty does:
    /// `ngx.get_phase()` is `init_worker`, `ngx.ctx`, shared dicts, timers and `ngx.log` work,
    /// request APIs and everything that waits are disabled.
    pub async fn init_worker(&self, name: &str, code: &str) -> Result<(), LuaError> {
        let state = std::rc::Rc::new(RefCell::new(crate::RequestState::new(
            http::Method::GET,
            "/".to_string(),
            None,
            http::HeaderMap::new(),
        )));
        self.run(name, code, Phase::InitWorker, &state).await?;
        Ok(())
    }

    /// Runs body_filter `handlers` (chunk name, code) in order over one piece of the response
    /// body: `ngx.arg[1]` is `data` and `ngx.arg[2]` is `eof`. Returns what the scripts left
    /// there: the bytes to send and whether the body ends with them.
    pub async fn body_filter(
        &self,
        handlers: &[(&str, &str)],
        request: &SharedRequest,
        data: bytes::Bytes,
        eof: bool,
    ) -> Result<(bytes::Bytes, bool), LuaError> {
        request.borrow_mut().body_chunk = Some((data, eof));
        for (name, code) in handlers {
            self.run(name, code, Phase::BodyFilter, request).await?;
        }
        Ok(request.borrow_mut().body_chunk.take().unwrap_or_default())
    }
}

/// The `ngx.exit` code carried by an error, however deeply mlua wrapped it.
fn exit_of(e: &mlua::Error) -> Option<i64> {
    match e {
        mlua::Error::ExternalError(x) => x.downcast_ref::<ExitSignal>().map(|s| s.0),
        mlua::Error::CallbackError { cause, .. } => exit_of(cause),
        mlua::Error::WithContext { cause, .. } => exit_of(cause),
        _ => None,
    }
}
