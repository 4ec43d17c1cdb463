//! A content phase that streams: from its first `ngx.flush` the response head is sent, and
//! the rest of the script runs as the response body is read. Each later flush is a chunk, and
//! what is printed after the last one goes out when the script ends.
//!
//! The body drives the script: it polls the script's future whenever the client side asks for
//! more, so a client that stops reading pauses the script at its next flush (nginx would
//! buffer instead). After `ngx.eof()` the body ends and the script runs on as a task of its
//! own, and so it does after a 101, when the connection is the script's
//! (`ngx.req.socket(true)`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use outpost_lua::{DownstreamIo, LuaError, Outcome, Phase, SharedRequest};

use super::body::{BodyError, ResponseBody};
use super::lua_phase::log_error;

/// A content phase's script, still running.
pub type Running = Pin<Box<dyn Future<Output = Result<Outcome, LuaError>>>>;

/// The response of a content phase that flushed: its head now, its body as the script goes
/// on. `done` is told when the script ends (the log phase waits for it).
pub fn respond(
    state: &SharedRequest,
    running: Running,
    app: &str,
    upgrade: Option<OnUpgrade>,
    done: tokio::sync::oneshot::Sender<()>,
) -> Response<ResponseBody> {
    let (status, headers, head_only) = {
        let mut s = state.borrow_mut();
        let (status, headers) = outpost_lua::streamed_head(&mut s);
        (status, headers, s.method == http::Method::HEAD)
    };
    if status == 101 {
        return switch(state, running, app, upgrade, headers, done);
    }
    let body = LuaStream {
        running: Some(running),
        state: state.clone(),
        app: app.to_string(),
        head_only,
        done: Some(done),
    };
    head(status, headers, ResponseBody::dynamic(Box::pin(body)))
}

fn head(status: u16, headers: HeaderMap, body: ResponseBody) -> Response<ResponseBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    *resp.headers_mut() = headers;
    resp
}

/// 101: hyper sends the head and hands the connection over; the script gets it through
/// `ngx.req.socket(true)` and runs until it is done with it. What it prints is dropped.
fn switch(
    state: &SharedRequest,
    running: Running,
    app: &str,
    upgrade: Option<OnUpgrade>,
    mut headers: HeaderMap,
    done: tokio::sync::oneshot::Sender<()>,
) -> Response<ResponseBody> {
    // nginx says so in every 101 it sends; hyper adds nothing.
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    if let Some(up) = upgrade {
        state.borrow_mut().upgrade = Some(Box::pin(async move {
            match up.await {
                Ok(io) => Ok(Box::new(TokioIo::new(io)) as Box<dyn DownstreamIo>),
                Err(e) => Err(e.to_string()),
            }
        }));
    }
    detach(running, state.clone(), app.to_string(), done);
    head(101, headers, ResponseBody::full(Bytes::new()))
}

/// The rest of the script as a task of its own: the response is done (`ngx.eof`) or the
/// connection is the script's (101). What it prints from here is dropped.
fn detach(
    running: Running,
    state: SharedRequest,
    app: String,
    done: tokio::sync::oneshot::Sender<()>,
) {
    tokio::task::spawn_local(async move {
        if let Err(e) = running.await {
            log_error(&app, Phase::Content, &e, "Lua error after output");
        }
        let mut s = state.borrow_mut();
        s.output.clear();
        // The request is over: so is the connection, whoever still holds its socket.
        if let Some(conn) = s.downstream.take() {
            conn.close();
        }
        drop(s);
        let _ = done.send(());
    });
}

struct LuaStream {
    running: Option<Running>,
    state: SharedRequest,
    app: String,
    /// A HEAD request: the script runs, its output is dropped.
    head_only: bool,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LuaStream {
    /// The output to send now: at a flush, or all of it once the script ended.
    fn take_output(&mut self) -> Option<Bytes> {
        let mut s = self.state.borrow_mut();
        let flushing = std::mem::take(&mut s.flush_requested);
        if (flushing || self.running.is_none()) && !s.output.is_empty() {
            Some(Bytes::from(std::mem::take(&mut s.output)))
        } else {
            None
        }
    }
}

impl Body for LuaStream {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            if let Some(data) = this.take_output() {
                if this.head_only {
                    continue;
                }
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if this.state.borrow().eof
                && let (Some(running), Some(done)) = (this.running.take(), this.done.take())
            {
                detach(running, this.state.clone(), this.app.clone(), done);
                continue;
            }
            let Some(running) = this.running.as_mut() else {
                return Poll::Ready(None);
            };
            match running.as_mut().poll(cx) {
                Poll::Ready(result) => {
                    this.running = None;
                    // As nginx: the head is out; the response ends where the script stopped.
                    if let Err(e) = result {
                        log_error(&this.app, Phase::Content, &e, "Lua error after output");
                    }
                    if let Some(done) = this.done.take() {
                        let _ = done.send(());
                    }
                }
                // The script flushed: send what it printed, then resume it.
                Poll::Pending if this.state.borrow().flush_requested => {}
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.running.is_none() && self.state.borrow().output.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
