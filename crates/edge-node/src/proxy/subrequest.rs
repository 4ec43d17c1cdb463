//! Lua subrequests (`ngx.location.capture`, `capture_multi`): each one runs the whole pipeline
//! again ([`handler::serve`]: the same application's rules, Lua phases, cache and upstream) as
//! a task of its own on the worker, against its parent's snapshot and on its parent's Lua VM,
//! and its response is read whole for the script. The calling coroutine waits meanwhile;
//! other requests go on being served, and the subrequests of one `capture_multi` run at once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use outpost_lua::limits::Budget;
use outpost_lua::{CaptureFuture, Captured, LuaVm, RegistryKey, Subrequest, SubrequestRunner};
use tokio::task::JoinHandle;

use super::body::{RequestBody, ResponseBody};
use super::handler::{self, Caller};
use super::lua_phase::LuaRequest;
use crate::config::Snapshot;
use crate::server::worker::{ConnInfo, WorkerCtx};

/// What a subrequest's Lua state starts from, set by [`prepare`] once the pipeline has made
/// that state (only routes with Lua make one).
pub struct SubrequestSetup {
    vm: Option<Rc<LuaVm>>,
    depth: u32,
    budget: Rc<Budget>,
    ctx: RefCell<Option<RegistryKey>>,
    declared: Option<HashMap<String, String>>,
    vars: Vec<(String, String)>,
    /// The subrequest's Lua state once made: its variables go back to the parent with
    /// `share_all_vars`.
    made: RefCell<Option<Rc<LuaRequest>>>,
}

/// Where a request's subrequests start from: its worker, connection, snapshot, host and
/// version. Kept in its [`LuaRequest`], which runs them.
pub struct Origin {
    pub w: Rc<WorkerCtx>,
    pub conn: Rc<ConnInfo>,
    pub snapshot: Rc<Arc<Snapshot>>,
    /// The parent's host (its `Host` or authority), so the subrequest routes the same way.
    pub host: http::HeaderValue,
    pub version: Version,
}

/// Gives a request's Lua state the means to issue subrequests and, for a subrequest, what
/// its parent set up: depth, budget, `ngx.ctx`, variables and the VM.
pub fn prepare(state: &Rc<LuaRequest>, sub: Option<&SubrequestSetup>) {
    let mut s = state.state.borrow_mut();
    // Weak: the runner is the request whose state holds it.
    let runner: Weak<dyn SubrequestRunner> = Rc::downgrade(state) as Weak<LuaRequest>;
    s.subrequests = Some(runner);
    // A client's request gets nginx's decoded $uri; a subrequest's is its path as given.
    let Some(setup) = sub else {
        s.decode_uri();
        return;
    };
    s.subrequest_depth = setup.depth;
    s.budget = setup.budget.clone();
    s.ctx = setup.ctx.borrow_mut().take();
    if let Some(d) = &setup.declared {
        s.declared = d.clone();
    }
    for (k, v) in &setup.vars {
        s.declared.insert(k.clone(), v.clone());
    }
    drop(s);
    if let Some(vm) = &setup.vm {
        state.use_vm(vm.clone());
    }
    *setup.made.borrow_mut() = Some(state.clone());
}

impl SubrequestRunner for LuaRequest {
    fn capture(&self, sub: Subrequest) -> CaptureFuture {
        let setup = Rc::new(SubrequestSetup {
            vm: self.chosen_vm(),
            depth: sub.depth,
            budget: sub.budget,
            ctx: RefCell::new(sub.ctx),
            declared: sub.declared,
            vars: sub.vars,
            made: RefCell::new(None),
        });
        let target = match &sub.args {
            Some(a) => format!("{}?{a}", sub.path),
            None => sub.path.clone(),
        };
        let (mut parts, ()) = Request::new(()).into_parts();
        let o = &self.origin;
        parts.uri = target_uri(o.conn.scheme, o.host.to_str().unwrap_or(""), &target);
        parts.method = sub.method;
        parts.version = o.version;
        parts.headers = sub.headers;
        let head_only = parts.method == Method::HEAD;
        let (w, conn, snapshot) = (o.w.clone(), o.conn.clone(), o.snapshot.clone());
        let task = tokio::task::spawn_local(async move {
            let caller = Caller::Subrequest(setup.clone());
            let body = RequestBody::Internal(sub.body);
            let resp = handler::serve(w, conn, snapshot, parts, body, caller).await;
            let mut captured = read_whole(resp, head_only).await;
            if let Some(made) = setup.made.borrow().as_ref() {
                captured.declared = made.state.borrow().declared.clone();
            }
            captured
        });
        Box::pin(Subtask(task))
    }
}

/// The subrequest's target: absolute, so that it routes by the parent's host even over
/// HTTP/2 (no `Host` header there). Bytes a URI cannot hold are percent-encoded, where nginx
/// would take them as they are.
pub(crate) fn target_uri(scheme: &str, host: &str, target: &str) -> Uri {
    let mut pq = String::with_capacity(target.len());
    for b in target.bytes() {
        if b <= b' ' || b >= 0x7f || b"\"<>\\^`{|}#".contains(&b) {
            pq.push_str(&format!("%{b:02X}"));
        } else {
            pq.push(b as char);
        }
    }
    format!("{scheme}://{host}{pq}")
        .parse()
        .or_else(|_| pq.parse())
        .unwrap_or_else(|_| Uri::from_static("/"))
}

/// The response with its whole body. An error while reading (the upstream went away, a
/// timeout, a body filter failed) keeps what came and marks it truncated.
async fn read_whole(resp: Response<ResponseBody>, head_only: bool) -> Captured {
    let (head, mut body) = resp.into_parts();
    let mut buf = BytesMut::new();
    let mut truncated = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    buf.extend_from_slice(d);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "subrequest body ended early");
                truncated = true;
                break;
            }
        }
    }
    Captured {
        status: head.status.as_u16(),
        headers: head.headers,
        // A HEAD response has no body, whatever a content handler printed.
        body: if head_only {
            Bytes::new()
        } else {
            buf.freeze()
        },
        truncated,
        declared: HashMap::new(),
    }
}

/// A subrequest's task, aborted if the script stops waiting for it (its request is gone).
struct Subtask(JoinHandle<Captured>);

impl Drop for Subtask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Future for Subtask {
    type Output = Captured;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Captured> {
        Pin::new(&mut self.get_mut().0).poll(cx).map(|done| {
            done.unwrap_or_else(|e| {
                // A panic in the subrequest's task: it is a failed subrequest, not a failed worker.
                tracing::error!(error = %e, "subrequest task failed");
                Captured {
                    status: 500,
                    headers: http::HeaderMap::new(),
                    body: Bytes::new(),
                    truncated: true,
                    declared: HashMap::new(),
                }
            })
        })
    }
}
