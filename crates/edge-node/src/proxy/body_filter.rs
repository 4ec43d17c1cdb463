//! body_filter: Lua over each chunk of a response body on its way to the client, as
//! lua-nginx-module's `body_filter_by_lua`. The chunk is `ngx.arg[1]`, the end of the body
//! `ngx.arg[2]`; what the script leaves there goes out instead.
//!
//! It runs on what the client gets, after the cache took its copy (nginx's `proxy_cache`
//! stores before the output filters too), so a cached object is the origin's and every hit is
//! filtered again. Chunks are filtered as they arrive, never gathered: each data frame is one
//! call with `ngx.arg[2] == false`, then one last call with `("", true)` when the body ends, as
//! nginx ends a proxied body with an empty last buffer. After a script sets `ngx.arg[2] = true`
//! the rest of the body is not sent.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use outpost_lua::{LuaError, LuaVm, SharedRequest};

use crate::metrics::LuaMetrics;

type Run = Pin<Box<dyn Future<Output = Result<(Bytes, bool), LuaError>>>>;

pub struct BodyFilter {
    vm: Rc<LuaVm>,
    handlers: crate::rules::lua_code::Chunks,
    state: SharedRequest,
    app: Arc<str>,
    metrics: LuaMetrics,
    /// Whether the request was within its limits when the running call started: if it stops
    /// on a limit, this call is the one that went past it.
    within: bool,
    /// The call in progress (handlers cannot wait, so it normally ends in its first poll).
    running: Option<Run>,
    /// No more calls: a script ended the body, or the last call ran.
    ended: bool,
    /// Output held back while the last call runs (see `ResponseBody::poll_filtered`).
    pub held: Option<Bytes>,
}

impl BodyFilter {
    pub fn new(
        vm: Rc<LuaVm>,
        handlers: crate::rules::lua_code::Chunks,
        state: SharedRequest,
        app: &str,
        metrics: LuaMetrics,
    ) -> BodyFilter {
        BodyFilter {
            vm,
            handlers,
            state,
            app: Arc::from(app),
            metrics,
            within: true,
            running: None,
            ended: false,
            held: None,
        }
    }

    /// Starts the handlers on one chunk; `eof` marks the last call.
    pub fn start(&mut self, data: Bytes, eof: bool) {
        let (vm, handlers, state) = (self.vm.clone(), self.handlers.clone(), self.state.clone());
        self.within = state.borrow().budget.exceeded().is_none();
        if eof {
            // Whatever the script does with ngx.arg[2] now, nothing follows: nginx would leave
            // such a response open forever.
            self.ended = true;
        }
        self.running = Some(Box::pin(async move {
            let code: Vec<(&str, &str)> = handlers
                .iter()
                .map(|c| (c.name.as_str(), c.code.as_str()))
                .collect();
            vm.body_filter(&code, &state, data, eof).await
        }));
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The last call has started (or a script ended the body): nothing more goes in.
    pub fn is_closing(&self) -> bool {
        self.ended
    }

    pub fn has_ended(&self) -> bool {
        self.ended && self.running.is_none()
    }

    /// The running call's output: the bytes to send (maybe none). `Err` is a Lua error, after
    /// which nothing more is sent (nginx aborts the response).
    pub fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, String>> {
        let Some(run) = self.running.as_mut() else {
            return Poll::Ready(Ok(Bytes::new()));
        };
        let out = std::task::ready!(run.as_mut().poll(cx));
        self.running = None;
        match out {
            Ok((data, eof)) => {
                if eof {
                    self.ended = true;
                }
                Poll::Ready(Ok(data))
            }
            Err(e) => {
                self.ended = true;
                if let LuaError::Limit(why) = &e
                    && self.within
                {
                    self.metrics.stopped(why);
                }
                super::lua_phase::log_error(
                    &self.app,
                    outpost_lua::Phase::BodyFilter,
                    &e,
                    "failed to run body_filter_by_lua*",
                );
                Poll::Ready(Err(e.to_string()))
            }
        }
    }
}
