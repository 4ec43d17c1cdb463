//! The client's request body lent to a request's Lua, unread, and taken back after its
//! phases: a script reads it only if it asks (`ngx.req.read_body`, `ngx.req.socket`), and a
//! body nobody read still streams to the upstream as it came.

use std::any::Any;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Body as _;
use hyper::body::Incoming;
use outpost_lua::{BodySource, ClientBody, RequestState};

use super::body::RequestBody;

struct ClientSource(Incoming);

impl BodySource for ClientSource {
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, String>>> {
        loop {
            return match std::task::ready!(Pin::new(&mut self.0).poll_frame(cx)) {
                None => Poll::Ready(None),
                Some(Err(e)) => Poll::Ready(Some(Err(e.to_string()))),
                // Trailers carry no body bytes.
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(data))),
                    Err(_) => continue,
                },
            };
        }
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        Box::new(self.0)
    }
}

/// Puts the client's body, if it has one still unread, in the request's state. A body read
/// already (a subrequest's, or one that came through `ngx.exec`) is given as read.
pub fn lend(body: RequestBody, state: &mut RequestState) {
    match body {
        RequestBody::Internal(data) => state.body = data,
        body if body.is_end_stream() => {}
        RequestBody::Client(b) => {
            let length = b.size_hint().exact();
            state.client_body = Some(ClientBody::new(Box::new(ClientSource(b)), length));
        }
        RequestBody::Resumed(read, b) => {
            let mut body = ClientBody::new(Box::new(ClientSource(b)), None);
            body.prefix = read;
            state.client_body = Some(body);
        }
    }
}

/// The body that goes on (upstream, or through `ngx.exec`) after the request's Lua: the one
/// `ngx.req.set_body_data` set (the client's, unread, is dropped), else the client's unread
/// part if a script left one, else what a script read.
pub fn take_back(state: &mut RequestState) -> RequestBody {
    if state.body_replaced {
        return RequestBody::Internal(state.body.clone());
    }
    if let Some(body) = state.client_body.take() {
        let ClientBody { prefix, source, .. } = body;
        if let Ok(b) = source.into_any().downcast::<Incoming>() {
            return if prefix.is_empty() {
                RequestBody::Client(*b)
            } else {
                RequestBody::Resumed(prefix, *b)
            };
        }
    }
    RequestBody::Internal(state.body.clone())
}
