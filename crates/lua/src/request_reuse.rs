//! A finished request's state made ready for the next request on the worker, as nginx reuses
//! its memory pools: the state is over a kilobyte, and building it anew cost an allocation
//! and copy of the whole of it, a few strings, and dropping it all again at the end. A
//! reused state keeps its strings' and maps' allocations, and stays in the cache.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, Method};

use crate::Phase;
use crate::request::{LazyId, RequestState};

/// Kept allocations larger than these are dropped rather than kept for the next request.
const KEEP_STRING: usize = 4096;
const KEEP_OUTPUT: usize = 64 * 1024;
const KEEP_FIELDS: usize = 64;

impl RequestState {
    /// Drops what the request held (bodies, connections, its `ngx.ctx`, its output) and
    /// leaves every field as [`RequestState::started_at`] sets it, but for the request id
    /// and its start (which [`RequestState::restart`] replaces), keeping small allocations
    /// for the next
    /// request. Every field is named here, so that a new one cannot be missed.
    pub fn release(&mut self) {
        let RequestState {
            phase,
            method,
            original_method,
            uri,
            args,
            uri_changed,
            request_uri,
            http_version,
            headers,
            headers_changed,
            raw_head,
            scheme,
            host,
            server_name,
            client,
            client_text,
            server,
            request_id,
            start_time,
            body,
            body_replaced,
            tls,
            cert_choice,
            globals,
            declared,
            status,
            resp_headers,
            output,
            headers_sent,
            eof,
            body_read,
            client_body,
            body_claimed,
            upgrade,
            downstream,
            streamable,
            flush_requested,
            exit,
            exec,
            redirected,
            ctx,
            cache_key,
            cache_skip_lookup,
            cache_skip_store,
            body_chunk,
            balancer,
            budget,
            subrequests,
            subrequest_depth,
        } = self;
        *phase = Phase::Content;
        *method = Method::GET;
        *original_method = Method::GET;
        clear_string(uri);
        *args = None;
        *uri_changed = false;
        clear_string(request_uri);
        *http_version = 1.1;
        if headers.capacity() > KEEP_FIELDS {
            *headers = HeaderMap::new();
        } else {
            headers.clear();
        }
        *headers_changed = false;
        *raw_head = None;
        *scheme = "http";
        clear_string(host);
        // The application's, which `set_application` gives every request: kept, so that the
        // next request of the same application finds them set.
        let _ = server_name;
        *client = SocketAddr::from(([127, 0, 0, 1], 0));
        *client_text = None;
        *server = SocketAddr::from(([127, 0, 0, 1], 0));
        // Replaced by `restart`; a placeholder would be an allocation.
        let _ = request_id;
        // Replaced by `restart`, as the id is.
        let _ = start_time;
        *body = None;
        *body_replaced = false;
        *tls = None;
        *cert_choice = None;
        let _ = globals; // as server_name
        declared.clear();
        *status = None;
        if resp_headers.capacity() > KEEP_FIELDS {
            *resp_headers = HeaderMap::new();
        } else {
            resp_headers.clear();
        }
        if output.capacity() > KEEP_OUTPUT {
            *output = Vec::new();
        } else {
            output.clear();
        }
        *headers_sent = false;
        *eof = false;
        *body_read = false;
        *client_body = None;
        *body_claimed = false;
        *upgrade = None;
        *downstream = None;
        *streamable = false;
        *flush_requested = false;
        *exit = None;
        *exec = None;
        *redirected = false;
        *ctx = None;
        *cache_key = None;
        *cache_skip_lookup = false;
        *cache_skip_store = false;
        *body_chunk = None;
        *balancer = None;
        // A subrequest still running would hold the budget: it gets its own then.
        match Rc::get_mut(budget) {
            Some(b) => *b = Default::default(),
            None => *budget = Rc::default(),
        }
        *subrequests = None;
        *subrequest_depth = 0;
    }

    /// The application's server name and globals module, for `ngx.var.server_name` and the
    /// request's globals. Left as they are when they are these already: a clone of their
    /// `Arc` is a locked count every worker shares, and most requests on a worker are for
    /// the application the one before was for.
    pub fn set_application(&mut self, server_name: &Arc<str>, globals: &Arc<str>) {
        if !self
            .server_name
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, server_name))
        {
            self.server_name = Some(server_name.clone());
        }
        if !self
            .globals
            .as_ref()
            .is_some_and(|g| Arc::ptr_eq(g, globals))
        {
            self.globals = Some(globals.clone());
        }
    }

    /// A released state ([`RequestState::release`]) made what
    /// [`RequestState::started_at`] gives for these arguments. Returns the state's previous
    /// request-header map, emptied, for the caller to reuse.
    #[must_use = "the previous header map is returned for reuse"]
    pub fn restart(
        &mut self,
        start_time: Instant,
        method: Method,
        uri: &str,
        args: Option<&str>,
        headers: HeaderMap,
        request_id: LazyId,
    ) -> HeaderMap {
        self.start_time = start_time;
        self.original_method = method.clone();
        self.method = method;
        self.uri.push_str(uri);
        self.request_uri.push_str(uri);
        if let Some(a) = args {
            self.request_uri.push('?');
            self.request_uri.push_str(a);
            self.args = Some(a.to_string());
        }
        self.request_id = request_id;
        std::mem::replace(&mut self.headers, headers)
    }
}

fn clear_string(s: &mut String) {
    if s.capacity() > KEEP_STRING {
        *s = String::new();
    } else {
        s.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, Method};

    use crate::Phase;
    use crate::request::{LazyId, RequestState};

    /// What a test can compare of a state: every field with a `Debug` form, and whether
    /// each other one is set.
    fn seen(s: &RequestState) -> String {
        format!(
            "{:?}",
            (
                (
                    s.phase.name(),
                    &s.method,
                    &s.original_method,
                    &s.uri,
                    &s.args
                ),
                (s.uri_changed, &s.request_uri, s.http_version, &s.headers),
                (
                    s.headers_changed,
                    &s.raw_head,
                    s.scheme,
                    &s.host,
                    &s.server_name
                ),
                (
                    s.client,
                    &s.client_text,
                    s.server,
                    s.request_id.value(),
                    s.start_time
                ),
                (
                    &s.body,
                    s.body_replaced,
                    s.tls.is_some(),
                    s.cert_choice.is_some()
                ),
                (
                    &s.globals,
                    &s.declared,
                    s.status,
                    &s.resp_headers,
                    &s.output
                ),
                (s.headers_sent, s.eof, s.body_read, s.client_body.is_some()),
                (s.body_claimed, s.upgrade.is_some(), s.downstream.is_some()),
                (
                    s.streamable,
                    s.flush_requested,
                    s.exit,
                    &s.exec,
                    s.redirected
                ),
                (
                    s.ctx.is_some(),
                    &s.cache_key,
                    s.cache_skip_lookup,
                    s.cache_skip_store
                ),
                (&s.body_chunk, &s.balancer, s.budget.exceeded().is_some()),
                (s.subrequests.is_some(), s.subrequest_depth),
            )
        )
    }

    fn id(v: &'static str) -> LazyId {
        let id = LazyId::default();
        let _ = id.cell.set(HeaderValue::from_static(v));
        id
    }

    #[test]
    fn a_released_and_restarted_state_is_a_fresh_one() {
        let at = Instant::now();
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.com"));
        let mut fresh = RequestState::started_at(
            at,
            Method::POST,
            "/a/b".into(),
            Some("x=1".into()),
            headers.clone(),
            id("id-2"),
        );
        let mut used = RequestState::started_at(
            at - Duration::from_millis(5),
            Method::GET,
            "/old".into(),
            None,
            HeaderMap::new(),
            id("id-1"),
        );
        used.phase = Phase::Log;
        used.method = Method::PUT;
        used.uri_changed = true;
        used.http_version = 2.0;
        used.headers_changed = true;
        used.raw_head = Some(Bytes::from_static(b"GET /old HTTP/1.1\r\n\r\n"));
        used.scheme = "https";
        used.host.push_str("old.example");
        used.server_name = Some("old".into());
        used.client = SocketAddr::from(([10, 0, 0, 1], 5555));
        used.client_text = Some(HeaderValue::from_static("10.0.0.1"));
        used.server = SocketAddr::from(([10, 0, 0, 2], 80));
        used.body = Some(Bytes::from_static(b"body"));
        used.body_replaced = true;
        used.globals = Some("app".into());
        used.declared.insert("v".into(), "1".into());
        used.status = Some(404);
        used.resp_headers
            .insert("x-a", HeaderValue::from_static("1"));
        used.output.extend_from_slice(b"hello");
        used.headers_sent = true;
        used.eof = true;
        used.body_read = true;
        used.body_claimed = true;
        used.streamable = true;
        used.flush_requested = true;
        used.exit = Some(200);
        used.exec = Some(("/x".into(), None));
        used.redirected = true;
        used.cache_key = Some("k".into());
        used.cache_skip_lookup = true;
        used.cache_skip_store = true;
        used.body_chunk = Some((Bytes::from_static(b"c"), true));
        used.balancer = Some(Default::default());
        used.budget.exceed(crate::limits::Exceeded::Instructions(1));
        used.subrequest_depth = 2;
        assert_ne!(seen(&used), seen(&fresh));

        used.release();
        let previous = used.restart(at, Method::POST, "/a/b", Some("x=1"), headers, id("id-2"));
        assert!(
            previous.is_empty(),
            "the previous request's fields are gone"
        );
        // Every request is given its application's; the used state had another's.
        let (name, globals): (Arc<str>, Arc<str>) = ("new".into(), "new_app".into());
        used.set_application(&name, &globals);
        fresh.set_application(&name, &globals);
        assert_eq!(seen(&used), seen(&fresh));
    }
}
