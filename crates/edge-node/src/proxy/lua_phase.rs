//! Lua in the request pipeline: rewrite and access before the upstream (or the cache), content
//! instead of it, header_filter on every response head, body_filter on every chunk of its body
//! (`proxy/body_filter.rs`), log after the response is sent. The balancer runs in the attempt
//! loop (`proxy/lua_balancer.rs`).

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use http::header::HeaderMap;
use http::{Response, StatusCode};
use outpost_lua::{LuaError, LuaResponse, LuaVm, Outcome, Phase, RequestState, SharedRequest};

use super::body::ResponseBody;
use super::body_filter::BodyFilter;
use super::lua_stream::{self, Running};
use crate::config::{Application, Snapshot};
use crate::metrics::LuaMetrics;
use crate::rules::{LuaChunk, LuaHandlers};
use crate::server::worker::WorkerCtx;

/// A request's Lua: its state, and the VM all its phases run on. The VM is the worker's at
/// the request's first Lua phase and stays the request's: its `ngx.ctx` and what its modules
/// hold live there, so a VM replaced meanwhile (a reload, a recycle) finishes the requests
/// that started on it.
pub struct LuaRequest {
    pub state: SharedRequest,
    /// What its subrequests start from (`proxy/subrequest.rs`).
    pub origin: super::subrequest::Origin,
    vm: OnceCell<Rc<LuaVm>>,
    /// Told when a streamed content phase's script ends (the log phase waits for it).
    content_done: Cell<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl LuaRequest {
    pub fn vm(&self, w: &WorkerCtx, snapshot: &Snapshot) -> Result<Rc<LuaVm>, LuaError> {
        if let Some(vm) = self.vm.get() {
            return Ok(vm.clone());
        }
        let vm = w.lua_vm(snapshot)?;
        Ok(self.vm.get_or_init(|| vm).clone())
    }

    /// The request's headers as the scripts left them, for the request to go on with (to the
    /// upstream, or to an internal redirect); the scripts keep theirs for later phases.
    pub fn headers_for_upstream(&self) -> http::HeaderMap {
        self.state.borrow().headers.clone()
    }

    /// The VM, once a phase has chosen it.
    pub fn chosen_vm(&self) -> Option<Rc<LuaVm>> {
        self.vm.get().cloned()
    }

    /// Runs this request on `vm`: a subrequest's phases run on its parent's VM, where its
    /// `ctx` table lives.
    pub fn use_vm(&self, vm: Rc<LuaVm>) {
        let _ = self.vm.set(vm);
    }
}

thread_local! {
    /// Finished requests' states, released, for the worker's next requests
    /// (`outpost_lua::RequestState::release`).
    static SPARE_STATES: RefCell<Vec<SharedRequest>> = const { RefCell::new(Vec::new()) };
}

/// Spare states kept per worker, at most: as many as requests it runs at once, usually.
const SPARE_STATES_MAX: usize = 256;

impl Drop for LuaRequest {
    /// A state nothing else holds goes back to the worker's spares.
    fn drop(&mut self) {
        if Rc::strong_count(&self.state) != 1 || Rc::weak_count(&self.state) != 0 {
            return;
        }
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return;
        };
        state.release();
        drop(state);
        let spare = self.state.clone();
        let _ = SPARE_STATES.try_with(|spares| {
            let mut spares = spares.borrow_mut();
            if spares.len() < SPARE_STATES_MAX {
                spares.push(spare);
            }
        });
    }
}

/// The request's headers move into the state (`parts.headers` is left empty): a request that
/// goes on upstream takes the scripts' copy back with [`LuaRequest::headers_for_upstream`].
pub fn request_state(
    parts: &mut http::request::Parts,
    origin: super::subrequest::Origin,
    host: &str,
    request_id: &crate::rules::RequestId,
    app: &Application,
    started: std::time::Instant,
) -> Rc<LuaRequest> {
    let conn = &origin.conn;
    let headers = std::mem::take(&mut parts.headers);
    let state = match SPARE_STATES.with(|spares| spares.borrow_mut().pop()) {
        Some(state) => {
            let (path, query) = (parts.uri.path(), parts.uri.query());
            let method = parts.method.clone();
            let id = request_id.lazy();
            let previous = state
                .borrow_mut()
                .restart(started, method, path, query, headers, id);
            crate::header_pool::give(previous);
            state
        }
        // Made in its place: the state is over a kilobyte, and each move of it is a `memcpy`.
        None => Rc::new(RefCell::new(RequestState::started_at(
            started,
            parts.method.clone(),
            parts.uri.path().to_string(),
            parts.uri.query().map(str::to_string),
            headers,
            request_id.lazy(),
        ))),
    };
    let mut s = state.borrow_mut();
    s.http_version = match parts.version {
        http::Version::HTTP_10 => 1.0,
        http::Version::HTTP_2 => 2.0,
        _ => 1.1,
    };
    s.scheme = conn.scheme;
    s.tls = conn.tls.clone();
    s.host.push_str(host);
    s.set_application(&app.server_name, &app.lua_globals);
    s.client = conn.client;
    s.client_text = Some(conn.client_ip_value().clone());
    s.server = conn.local;
    if let Some(r) = parts
        .extensions
        .get::<super::internal_redirect::Redirected>()
    {
        s.request_uri = r.request_uri.clone();
        s.redirected = true;
    }
    s.declared.extend(app.declared.iter().cloned());
    drop(s);
    Rc::new(LuaRequest {
        state,
        origin,
        vm: OnceCell::new(),
        content_done: Cell::new(None),
    })
}

/// Runs one phase's chunks in order; the first `ngx.exit` ends the phase.
async fn run(
    w: &WorkerCtx,
    vm: &LuaVm,
    chunks: &[Arc<LuaChunk>],
    phase: Phase,
    state: &SharedRequest,
) -> Result<Outcome, LuaError> {
    for c in chunks {
        match run_counted(&w.shared.metrics.lua, vm, &c.name, &c.code, phase, state).await? {
            Outcome::Continue => {}
            exit => return Ok(exit),
        }
    }
    Ok(Outcome::Continue)
}

/// `vm.run`, counting the request in the metrics if this run is the one that stopped it
/// (its later phases fail with the same limit without running).
pub async fn run_counted(
    metrics: &LuaMetrics,
    vm: &LuaVm,
    name: &str,
    code: &str,
    phase: Phase,
    state: &SharedRequest,
) -> Result<Outcome, LuaError> {
    let within = state.borrow().budget.exceeded().is_none();
    let out = vm.run(name, code, phase, state).await;
    if within && let Err(LuaError::Limit(why)) = &out {
        metrics.stopped(why);
    }
    out
}

/// Logs a Lua error, unless it is a limit's: the Lua crate logged that one already.
pub fn log_error(app: &str, phase: Phase, e: &LuaError, message: &'static str) {
    if !matches!(e, LuaError::Limit(_)) {
        tracing::error!(application = app, phase = phase.name(), error = %e, "{message}");
    }
}

pub fn to_response(r: LuaResponse) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(r.body));
    *resp.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    *resp.headers_mut() = r.headers;
    resp
}

fn failed(app: &str, phase: Phase, e: &LuaError) -> Response<ResponseBody> {
    log_error(app, phase, e, "Lua error");
    to_response(outpost_lua::status_response(500, &HeaderMap::new()))
}

/// How the Lua phases ended the request early.
// Made once for a request that ends early and moved straight out; boxing the response
// would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Stop {
    /// With this response.
    Respond(Response<ResponseBody>),
    /// `ngx.exec`: an internal redirect to this path and query.
    Exec(String, Option<String>),
}

/// rewrite then access. `Err` says how the request ends there.
pub async fn before_content(
    w: &WorkerCtx,
    snapshot: &Snapshot,
    app: &Application,
    lua: &LuaHandlers,
    req: &LuaRequest,
) -> Result<(), Stop> {
    let vm = match req.vm(w, snapshot) {
        Ok(vm) => vm,
        Err(e) => return Err(Stop::Respond(failed(&app.name, Phase::Rewrite, &e))),
    };
    let state = &req.state;
    for phase in [Phase::Rewrite, Phase::Access] {
        let outcome = run(w, &vm, lua.phase(phase), phase, state).await;
        if let Some((path, args)) = state.borrow_mut().exec.take() {
            return Err(Stop::Exec(path, args));
        }
        match outcome {
            Ok(Outcome::Continue) => {}
            Ok(Outcome::Exit(code)) => {
                let mut s = state.borrow_mut();
                if code >= 200 || s.headers_sent {
                    return Err(Stop::Respond(to_response(outpost_lua::content_response(
                        &mut s,
                        Outcome::Exit(code),
                        crate::header_pool::take(0),
                    ))));
                }
                // ngx.exit(ngx.OK) and other codes below 200: the next phase runs.
            }
            Err(e) => return Err(Stop::Respond(failed(&app.name, phase, &e))),
        }
        // Output without an exit still ends the request (nginx finalises it).
        let mut s = state.borrow_mut();
        if s.headers_sent {
            return Err(Stop::Respond(to_response(outpost_lua::content_response(
                &mut s,
                Outcome::Continue,
                crate::header_pool::take(0),
            ))));
        }
    }
    Ok(())
}

/// The chunks a running content phase holds: its application's, or a list joined with a
/// page rule's for this request.
enum ContentChunks {
    Application(crate::server::worker::AppHandle),
    Joined(crate::rules::lua_code::Chunks),
}

/// content: the script answers. Its output is sent when it ends, unless it flushes first
/// (`ngx.flush` in a main request): then the head goes out at once and the script runs on as
/// the body is sent (`proxy/lua_stream.rs`). `upgrade` is the client's connection should the
/// script switch protocols (101).
pub async fn content(
    w: &Rc<WorkerCtx>,
    snapshot: &Snapshot,
    app: &crate::server::worker::AppHandle,
    lua: &LuaHandlers,
    req: &LuaRequest,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response<ResponseBody>, Stop> {
    let vm = match req.vm(w, snapshot) {
        Ok(vm) => vm,
        Err(e) => return Ok(failed(&app.name, Phase::Content, &e)),
    };
    let state = &req.state;
    let main_request = state.borrow().subrequest_depth == 0;
    state.borrow_mut().streamable = main_request;
    // Owned, so that a script that flushes can go on inside the response body. The
    // application's own code is reached through the worker's handle on the application: a
    // copy of the chunk list's `Arc` would be a count every worker writes.
    let mut running: Running = {
        let (w2, state) = (w.clone(), state.clone());
        let chunks = match std::ptr::eq(lua, &app.lua) {
            true => ContentChunks::Application(app.clone()),
            false => ContentChunks::Joined(lua.content.clone()),
        };
        crate::in_box!(async move {
            let chunks = match &chunks {
                ContentChunks::Application(app) => &app.lua.content,
                ContentChunks::Joined(chunks) => chunks,
            };
            run(&w2, &vm, chunks, Phase::Content, &state).await
        })
    };
    let finished = std::future::poll_fn(|cx| match running.as_mut().poll(cx) {
        Poll::Ready(outcome) => Poll::Ready(Some(outcome)),
        Poll::Pending if state.borrow().flush_requested => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    })
    .await;
    let Some(outcome) = finished else {
        let (done, waiting) = tokio::sync::oneshot::channel();
        req.content_done.set(Some(waiting));
        return Ok(lua_stream::respond(
            state, running, &app.name, upgrade, done,
        ));
    };
    if let Some((path, args)) = state.borrow_mut().exec.take() {
        return Err(Stop::Exec(path, args));
    }
    Ok(match outcome {
        Ok(outcome) => to_response(outpost_lua::content_response(
            &mut state.borrow_mut(),
            outcome,
            crate::header_pool::take(0),
        )),
        Err(e) => {
            if state.borrow().headers_sent {
                // As nginx: the status is already out; the response ends where it was.
                log_error(&app.name, Phase::Content, &e, "Lua error after output");
                to_response(outpost_lua::content_response(
                    &mut state.borrow_mut(),
                    Outcome::Continue,
                    crate::header_pool::take(0),
                ))
            } else {
                failed(&app.name, Phase::Content, &e)
            }
        }
    })
}

/// header_filter: `ngx.header` and `ngx.status` act on the response head.
pub async fn header_filter(
    w: &WorkerCtx,
    snapshot: &Snapshot,
    app: &Application,
    lua: &LuaHandlers,
    req: &LuaRequest,
    resp: &mut Response<ResponseBody>,
) {
    if lua.header_filter.is_empty() {
        return;
    }
    let Ok(vm) = req.vm(w, snapshot) else {
        return;
    };
    let state = &req.state;
    {
        let mut s = state.borrow_mut();
        s.resp_headers = std::mem::take(resp.headers_mut());
        s.status = Some(resp.status().as_u16());
        s.headers_sent = false;
    }
    let outcome = run(w, &vm, &lua.header_filter, Phase::HeaderFilter, state).await;
    let mut s = state.borrow_mut();
    *resp.headers_mut() = std::mem::take(&mut s.resp_headers);
    if let Some(code) = s.status.and_then(|c| StatusCode::from_u16(c).ok()) {
        *resp.status_mut() = code;
    }
    s.headers_sent = true;
    match outcome {
        Err(e) => log_error(&app.name, Phase::HeaderFilter, &e, "Lua error"),
        // As nginx: `ngx.exit(status)` here finalises the request with that status, its own
        // page replacing the response (whose body is dropped unsent).
        Ok(Outcome::Exit(code)) if code >= 200 => {
            let code = u16::try_from(code)
                .ok()
                .filter(|c| *c <= 999)
                .unwrap_or(500);
            *resp = to_response(outpost_lua::status_response(code, &HeaderMap::new()));
        }
        Ok(_) => {}
    }
}

/// The phases every response goes through: header_filter now, body_filter on each chunk of
/// the body (not for HEAD, 1xx, 204 and 304, which have none: nginx skips them too), log once
/// the body is done.
pub async fn after_response(
    w: &Rc<WorkerCtx>,
    snapshot: &Arc<Snapshot>,
    app: &Arc<Application>,
    lua: &LuaHandlers,
    req: &Rc<LuaRequest>,
    method: &http::Method,
    resp: &mut Response<ResponseBody>,
) {
    header_filter(w, snapshot, app, lua, req, resp).await;
    let state = &req.state;
    let status = resp.status();
    let header_only = *method == http::Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if !lua.body_filter.is_empty() && !header_only {
        {
            // What body_filter reads of the response (`ngx.status`, `ngx.header`): its head,
            // already sent.
            let mut s = state.borrow_mut();
            s.status = Some(status.as_u16());
            s.resp_headers = resp.headers().clone();
            s.headers_sent = true;
        }
        match req.vm(w, snapshot) {
            Ok(vm) => resp.body_mut().filter_with(BodyFilter::new(
                vm,
                lua.body_filter.clone(),
                state.clone(),
                &app.name,
                w.shared.metrics.lua.clone(),
            )),
            Err(e) => {
                tracing::error!(application = %app.name, error = %e, "no Lua VM for body_filter")
            }
        }
    }
    // nginx runs no log phase for subrequests.
    let internal = state.borrow().subrequest_depth > 0;
    if !lua.log.is_empty() && !internal {
        let (sent, done) = tokio::sync::oneshot::channel::<()>();
        resp.body_mut().on_finish(Box::new(move |_, _| {
            let _ = sent.send(());
        }));
        log(
            w.clone(),
            snapshot.clone(),
            app.clone(),
            lua.clone(),
            req.clone(),
            status.as_u16(),
            done,
        );
    }
}

/// log: after the response body is done (sent, or abandoned by the client), on the worker,
/// never delaying the client.
pub fn log(
    w: Rc<WorkerCtx>,
    snapshot: Arc<Snapshot>,
    app: Arc<Application>,
    lua: LuaHandlers,
    req: Rc<LuaRequest>,
    status: u16,
    body_done: tokio::sync::oneshot::Receiver<()>,
) {
    if lua.log.is_empty() {
        return;
    }
    tokio::task::spawn_local(async move {
        // Dropped without a send when the body is dropped: the log phase runs all the same.
        let _ = body_done.await;
        // A script that switched protocols runs on after its (empty) body is done.
        if let Some(script) = req.content_done.take() {
            let _ = script.await;
        }
        let Ok(vm) = req.vm(&w, &snapshot) else {
            return;
        };
        req.state.borrow_mut().status = Some(status);
        if let Err(e) = run(&w, &vm, &lua.log, Phase::Log, &req.state).await {
            log_error(&app.name, Phase::Log, &e, "Lua error");
        }
    });
}
