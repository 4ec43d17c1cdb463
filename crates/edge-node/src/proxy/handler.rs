//! The request pipeline, in nginx's phase order:
//!
//! 1. **route**: the listener's host router picks the application (exact, wildcard, default);
//! 2. **rewrite/access**: the page rules run (header and URI changes, redirects, responses,
//!    address rules, rate limits);
//! 3. **content**: the chosen upstream answers (with retries across peers), or the rules did;
//! 4. **header filter**: hop-by-hop fields out, `Via` and rule headers in;
//! 5. **log**: when the body is done, the access log line and the metrics.
//!
//! Lua subrequests (`ngx.location.capture`, `proxy/subrequest.rs`) take the same way, from
//! [`serve`], but are internal: no access log line, no request metrics, no Lua log phase.

use std::cell::Cell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use super::access_log::{LogRecord, format_line};
use super::body::{RequestBody, ResponseBody, UpstreamRequestBody};
use super::cache_phase;
use super::forward::{self, Forwarded};
use super::internal_redirect;
use super::lua_balancer::BalancerLua;
use super::lua_body;
use super::lua_phase;
use super::subrequest::{self, SubrequestSetup};
use super::upstream_call::{self, UpstreamHead, UpstreamInfo};
use crate::clock;
use crate::config::host_router::normalize_host;
use crate::config::{AccessLogFormat, Snapshot};
use crate::rules::{self, LocalResponse, RequestId, RequestView};
use crate::server::worker::{AppHandle, ConnInfo, WorkerCtx};
use crate::upstream::balancer::hash_bytes;

pub async fn handle(
    w: Rc<WorkerCtx>,
    conn: Rc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let (parts, body) = req.into_parts();
    Ok(handle_head(w, conn, parts, RequestBody::Client(body)).await)
}

/// A client's request, from hyper or from the edge's own HTTP/1.1 path (`server/http1.rs`).
///
/// The pipeline's future is some kilobytes (every phase's state): it is made once, in its
/// box, rather than made and then moved into each caller's future, request after request.
pub fn handle_head(
    w: Rc<WorkerCtx>,
    conn: Rc<ConnInfo>,
    parts: http::request::Parts,
    body: RequestBody,
) -> Pin<Box<impl Future<Output = Response<ResponseBody>>>> {
    let caller = Caller::Client {
        // The clock read when the head's first bytes came serves here too.
        started: conn.head_started().unwrap_or_else(Instant::now),
        in_flight: conn.begin_request(),
    };
    let snapshot = w.snapshot();
    crate::in_box!(serve(w, conn, snapshot, parts, body, caller))
}

/// Who a request is for: a client (its response is counted and logged when its body is
/// done) or a Lua subrequest (internal: neither).
pub enum Caller {
    Client {
        started: Instant,
        in_flight: crate::server::worker::InFlight,
    },
    Subrequest(Rc<SubrequestSetup>),
}

/// The pipeline, for a client's request or a subrequest, against `snapshot`.
pub async fn serve(
    w: Rc<WorkerCtx>,
    conn: Rc<ConnInfo>,
    snapshot: Rc<Arc<Snapshot>>,
    mut parts: http::request::Parts,
    body: RequestBody,
    caller: Caller,
) -> Response<ResponseBody> {
    // The Host header's value is shared with the parsed request, not copied.
    let host_value = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).unwrap_or(HeaderValue::from_static("")),
        None => (parts.headers.get(header::HOST).cloned()).unwrap_or(HeaderValue::from_static("")),
    };
    let host_raw = host_value.to_str().unwrap_or("");
    let host = normalize_host(host_raw);
    let request_id = RequestId::from_headers(&parts.headers);
    // Kept for the access log, if it is on: the request headers move upstream with the request.
    let logged = match access_logged(&snapshot, &conn) {
        true => LoggedHeaders {
            referer: parts.headers.get(header::REFERER).cloned(),
            user_agent: parts.headers.get(header::USER_AGENT).cloned(),
        },
        false => LoggedHeaders::default(),
    };

    let app = snapshot
        .listeners
        .get(&conn.listener)
        // Borrowed from the snapshot: a clone is an atomic count that every worker shares.
        .and_then(|l| l.router.route(&host));
    let Some(app) = app else {
        let resp = local(LocalResponse::text(
            StatusCode::NOT_FOUND,
            "no application serves this host\n",
        ));
        return finish(
            resp,
            &snapshot,
            None,
            &conn,
            &parts,
            &host,
            &request_id,
            &logged,
            UpstreamInfo::default(),
            caller,
        );
    };

    // What outlives the pipeline (a running content phase, the log callback) holds the
    // application through this worker's handle on it.
    let app_handle = w.app(app);

    let view = RequestView {
        method: &parts.method,
        version: parts.version,
        scheme: conn.scheme,
        host: &host,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        client: conn.client,
        local: conn.local,
        request_id: &request_id,
        declared: &app.declared,
    };
    let mut fx = rules::evaluate(&app.rules, &view, &w.shared.limiter, clock::now_ms);
    let cache_rule = fx
        .cache
        .clone()
        .or_else(|| app.cache_rules.iter().find(|r| r.matches(&view)).cloned())
        .filter(|r| !r.bypass);
    let safe = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    // GET and HEAD are looked up under the rule's key; other methods may invalidate.
    let mut cache_key = cache_rule.as_ref().and_then(|r| {
        matches!(parts.method, Method::GET | Method::HEAD).then(|| {
            let url = cache_phase::CacheUrl {
                scheme: conn.scheme,
                host: host_value.clone(),
                target: parts.uri.path_and_query().cloned(),
            };
            (r.clone(), r.key(&view), url)
        })
    });
    let invalidation = match &cache_rule {
        Some(r) if !safe => Some((r.clone(), parts.headers.clone())),
        _ => None,
    };

    // Borrowed from the snapshot, as the application is.
    let upstream = (fx.upstream.as_ref())
        .or(app.upstream.as_ref())
        .and_then(|name| snapshot.upstreams.get(name));
    let hash = match upstream.as_ref().and_then(|u| u.hash_key.as_ref()) {
        Some(t) => hash_bytes(t.render(&view).as_bytes()),
        None => 0,
    };

    // Lua: the application's code, then its matching rules', phase by phase.
    let lua = match &fx.lua {
        None => std::borrow::Cow::Borrowed(&app.lua),
        Some(extra) => {
            let mut l = app.lua.clone();
            l.extend(extra);
            std::borrow::Cow::Owned(l)
        }
    };
    let balancer_code = upstream.as_ref().and_then(|u| u.lua_balancer.clone());
    let lua_state = (!lua.is_empty() || balancer_code.is_some()).then(|| {
        let origin = subrequest::Origin {
            w: w.clone(),
            conn: conn.clone(),
            snapshot: snapshot.clone(),
            host: host_value.clone(),
            version: parts.version,
        };
        let started = match &caller {
            Caller::Client { started, .. } => *started,
            Caller::Subrequest(_) => Instant::now(),
        };
        let state = lua_phase::request_state(&mut parts, origin, &host, &request_id, app, started);
        let sub = match &caller {
            Caller::Subrequest(setup) => Some(setup.as_ref()),
            Caller::Client { .. } => {
                state.state.borrow_mut().raw_head = conn.raw_head.take();
                None
            }
        };
        subrequest::prepare(&state, sub);
        state
    });
    let balancer = balancer_code
        .zip(lua_state.clone())
        .map(|(chunk, request)| BalancerLua {
            snapshot: Arc::clone(&snapshot),
            request,
            chunk,
        });
    let mut body = body;
    // A rule's `respond` answers as nginx's `return` does, in the rewrite phase: the request's
    // rewrite, access and content code does not run, but header_filter, body_filter and log do.
    if let Some(state) = lua_state.as_ref().filter(|_| fx.respond.is_none()) {
        // The scripts read the body only if they ask; what they leave goes on.
        let lent = std::mem::replace(&mut body, RequestBody::Internal(None));
        lua_body::lend(lent, &mut state.state.borrow_mut());
        let stop = match lua_phase::before_content(&w, &snapshot, app, &lua, state).await {
            Err(stop) => Some(stop),
            Ok(()) if lua.content.is_empty() => {
                // What the scripts changed goes upstream: method, headers, URI, arguments; and
                // their say over the cache (srcache-style). Copied only when they changed it.
                let mut s = state.state.borrow_mut();
                if s.method != parts.method {
                    parts.method = s.method.clone();
                }
                if let Some((_, key, _)) = &mut cache_key
                    && let Some(k) = &s.cache_key
                {
                    *key = k.clone();
                }
                // The body goes on: the client's as the scripts left it, or the one
                // `ngx.req.set_body_data` set (the headers above carry its length).
                body = lua_body::take_back(&mut s);
                // Untouched, the client's target goes upstream byte for byte ($uri is
                // decoded, so it is no copy of the path to compare with).
                if s.uri_changed
                    && let Ok(uri) = s.upstream_target().parse::<Uri>()
                {
                    parts.uri = uri;
                    fx.rewritten_path = None;
                }
                None
            }
            // The content handler answers: nothing goes upstream.
            Ok(()) => {
                // Only hyper's path can hand the connection over (the edge's own HTTP/1.1
                // path passes requests that ask to switch protocols to hyper).
                let upgrade = (parts.version == Version::HTTP_11
                    && parts
                        .extensions
                        .get::<hyper::upgrade::OnUpgrade>()
                        .is_some()
                    && forward::requested_upgrade(&state.state.borrow().headers).is_some())
                .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
                .flatten();
                match lua_phase::content(&w, &snapshot, &app_handle, &lua, state, upgrade).await {
                    Ok(resp) => Some(lua_phase::Stop::Respond(resp)),
                    Err(stop) => Some(stop),
                }
            }
        };
        if matches!(stop, Some(lua_phase::Stop::Exec(..))) {
            // What the scripts left of the body (or read of it) goes along.
            body = lua_body::take_back(&mut state.state.borrow_mut());
        }
        let early = match stop {
            None => None,
            Some(lua_phase::Stop::Respond(resp)) => Some(resp),
            Some(lua_phase::Stop::Exec(path, args)) => {
                let args = args.as_deref();
                // The request goes on with its headers as the scripts left them (nginx's
                // internal redirect keeps `headers_in`).
                parts.headers = state.headers_for_upstream();
                match internal_redirect::redirect(&mut parts, conn.scheme, host_raw, &path, args) {
                    Ok(()) => return Box::pin(serve(w, conn, snapshot, parts, body, caller)).await,
                    Err(internal_redirect::Refused) => Some(internal_redirect::refused()),
                }
            }
        };
        if let Some(mut resp) = early {
            forward::apply(resp.headers_mut(), &fx.response_headers);
            lua_phase::after_response(&w, &snapshot, app, &lua, state, &parts.method, &mut resp)
                .await;
            return finish(
                resp,
                &snapshot,
                Some(&app_handle),
                &conn,
                &parts,
                &host,
                &request_id,
                &logged,
                UpstreamInfo::default(),
                caller,
            );
        }
    }

    // The Lua state holds the request's headers; what goes on takes its copy of them, or
    // takes them when no later phase's script could read them.
    if let Some(state) = &lua_state {
        let read_later = balancer.is_some()
            || !(lua.header_filter.is_empty() && lua.body_filter.is_empty() && lua.log.is_empty());
        parts.headers = match read_later {
            true => state.headers_for_upstream(),
            false => std::mem::take(&mut state.state.borrow_mut().headers),
        };
    }
    let mut info = UpstreamInfo::default();
    let resp = if let Some(answer) = fx.respond {
        let mut resp = local(answer);
        forward::apply(resp.headers_mut(), &fx.response_headers);
        resp
    } else {
        if !fx.delay.is_zero() {
            tokio::time::sleep(fx.delay).await;
        }
        match upstream {
            None => local(LocalResponse::text(
                StatusCode::BAD_GATEWAY,
                "no upstream for this request\n",
            )),
            Some(up) => {
                let too_large = content_length(&parts.headers)
                    .is_some_and(|n| n > snapshot.limits.max_body_bytes);
                if too_large {
                    local(LocalResponse::text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body too large\n",
                    ))
                } else {
                    // Only a request that came through hyper can switch protocols (the
                    // edge's own HTTP/1.1 path hands those to hyper).
                    let can_switch = parts.version == Version::HTTP_11
                        && parts
                            .extensions
                            .get::<hyper::upgrade::OnUpgrade>()
                            .is_some();
                    let upgrade = if can_switch {
                        forward::requested_upgrade(&parts.headers)
                    } else {
                        None
                    };
                    let client_upgrade = upgrade
                        .as_ref()
                        .and_then(|_| parts.extensions.remove::<hyper::upgrade::OnUpgrade>());
                    let over_limit = Rc::new(Cell::new(false));
                    let upstream_body = match body {
                        b if b.is_end_stream() => UpstreamRequestBody::Empty,
                        RequestBody::Internal(b) => UpstreamRequestBody::Full(b),
                        RequestBody::Client(b) => UpstreamRequestBody::stream(
                            VecDeque::new(),
                            b,
                            snapshot.limits.max_body_bytes,
                            over_limit.clone(),
                            app.metrics.bytes_received.clone(),
                            up.send_timeout,
                        ),
                        RequestBody::Resumed(read, b) => UpstreamRequestBody::stream(
                            read,
                            b,
                            snapshot.limits.max_body_bytes,
                            over_limit.clone(),
                            app.metrics.bytes_received.clone(),
                            up.send_timeout,
                        ),
                    };
                    let target = rewrite_target(fx.rewritten_path.as_deref(), &parts.uri);
                    let mut headers = std::mem::take(&mut parts.headers);
                    let (skip_lookup, skip_store) =
                        lua_state.as_ref().map_or((false, false), |s| {
                            let s = s.state.borrow();
                            (s.cache_skip_lookup, s.cache_skip_store)
                        });
                    if let Some((rule, key, url)) = cache_key
                        && upgrade.is_none()
                    {
                        // The forwarding headers are added only if the cache goes upstream.
                        let cr = cache_phase::CacheRequest {
                            rule,
                            key,
                            url,
                            method: parts.method.clone(),
                            head: UpstreamHead {
                                method: parts.method.clone(),
                                uri: target,
                                headers,
                            },
                            skip_lookup,
                            skip_store,
                            balancer: balancer.clone(),
                            forward: cache_phase::Forwarding {
                                client_ip: conn.client_ip_value().clone(),
                                scheme: conn.scheme,
                                host: std::borrow::Cow::Borrowed(&host_value),
                                request_id: std::borrow::Cow::Borrowed(&request_id),
                                via: via(parts.version),
                                ops: std::mem::take(&mut fx.request_headers),
                            },
                            hash,
                        };
                        // The cache answers; its response takes the same way out as any other.
                        let (mut resp, result) =
                            cache_phase::serve(&w, up, &snapshot, cr, &mut info).await;
                        app.metrics.cache(result);
                        forward::apply(resp.headers_mut(), &fx.response_headers);
                        resp
                    } else {
                        let fwd = Forwarded {
                            client_ip: conn.client_ip_value(),
                            scheme: conn.scheme,
                            host: &host_value,
                            request_id: request_id.value(),
                            via: via(parts.version),
                            upgrade: upgrade.clone(),
                        };
                        forward::request_headers(&mut headers, &fwd, &fx.request_headers);
                        let head = UpstreamHead {
                            method: parts.method.clone(),
                            uri: target,
                            headers,
                        };
                        // Boxed: its state is most of a request's future, which is moved
                        // whole on each request (the cache's serves hits, and stays inline).
                        let result = crate::in_box!(upstream_call::call(
                            &w,
                            up,
                            head,
                            upstream_body,
                            upstream_call::PeerChoice {
                                hash,
                                lua: balancer.as_ref(),
                            },
                            &over_limit,
                            &mut info,
                        ))
                        .await;
                        match result {
                            Ok(p) => {
                                let switching = p.head.status == StatusCode::SWITCHING_PROTOCOLS;
                                if let (Some(upstream_side), Some(client_side)) =
                                    (p.upgrade, client_upgrade)
                                {
                                    tokio::task::spawn_local(super::upgrade::bridge(
                                        client_side,
                                        upstream_side,
                                    ));
                                }
                                let mut resp = Response::from_parts(p.head, p.body);
                                forward::response_headers(
                                    resp.headers_mut(),
                                    switching,
                                    &fx.response_headers,
                                );
                                if let Some((rule, headers)) = &invalidation {
                                    let view = RequestView {
                                        method: &parts.method,
                                        version: parts.version,
                                        scheme: conn.scheme,
                                        host: &host,
                                        path: parts.uri.path(),
                                        query: parts.uri.query(),
                                        headers,
                                        client: conn.client,
                                        local: conn.local,
                                        request_id: &request_id,
                                        declared: &app.declared,
                                    };
                                    cache_phase::invalidate_after_unsafe(
                                        &snapshot,
                                        rule,
                                        &view,
                                        &parts.method,
                                        resp.status(),
                                        resp.headers(),
                                    );
                                }
                                resp
                            }
                            Err(e) => {
                                tracing::warn!(application = %app.name, upstream = %up.name, error = %e, request_id = request_id.as_str(), "proxying failed");
                                let mut resp = local(LocalResponse::text(
                                    e.status(),
                                    format!("{}\n", e.status()),
                                ));
                                forward::apply(resp.headers_mut(), &fx.response_headers);
                                resp
                            }
                        }
                    }
                }
            }
        }
    };
    let mut resp = resp;
    if let Some(state) = &lua_state {
        lua_phase::after_response(&w, &snapshot, app, &lua, state, &parts.method, &mut resp).await;
    }
    finish(
        resp,
        &snapshot,
        Some(&app_handle),
        &conn,
        &parts,
        &host,
        &request_id,
        &logged,
        info,
        caller,
    )
}

fn via(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "2 outpost",
        Version::HTTP_10 => "1.0 outpost",
        _ => "1.1 outpost",
    }
}

/// The origin-form target sent upstream: the rewritten path (if any) and the original query.
fn rewrite_target(rewritten: Option<&str>, uri: &Uri) -> Uri {
    let pq = match (rewritten, uri.query()) {
        (None, _) => {
            return uri
                .path_and_query()
                .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
        }
        (Some(p), Some(q)) => format!("{p}?{q}"),
        (Some(p), None) => p.to_string(),
    };
    pq.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn local(r: LocalResponse) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(r.body));
    *resp.status_mut() = r.status;
    for (k, v) in r.headers {
        resp.headers_mut().insert(k, v);
    }
    resp
}

/// Attaches the log phase to the response body: it runs when the body is done or dropped.
#[allow(clippy::too_many_arguments)]
fn finish(
    mut resp: Response<ResponseBody>,
    snapshot: &Arc<Snapshot>,
    app: Option<&AppHandle>,
    conn: &Rc<ConnInfo>,
    parts: &http::request::Parts,
    host: &str,
    request_id: &RequestId,
    logged: &LoggedHeaders,
    upstream: UpstreamInfo,
    caller: Caller,
) -> Response<ResponseBody> {
    let Caller::Client { started, in_flight } = caller else {
        return resp;
    };
    let status = resp.status().as_u16();
    // Borrowed: a copy of the handles is a dozen reference counts every worker shares.
    let metrics = app.map_or(&snapshot.unrouted, |a| &a.metrics);
    metrics.count(status);
    let now = Instant::now();
    metrics
        .duration
        .observe(now.saturating_duration_since(started).as_secs_f64());
    conn.response_made.set(Some(now));
    let record = access_logged(snapshot, conn).then(|| LogRecord {
        client: conn.client.ip(),
        method: parts.method.to_string(),
        // As nginx's `$request`: the client's target, also after an internal redirect.
        target: match parts.extensions.get::<internal_redirect::Redirected>() {
            Some(r) => r.request_uri.clone(),
            None => parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |pq| pq.to_string()),
        },
        version: parts.version,
        status,
        referer: header_string(logged.referer.as_ref()),
        user_agent: header_string(logged.user_agent.as_ref()),
        host: host.to_string(),
        application: app.map(|a| a.name.clone()).unwrap_or_default(),
        request_id: request_id.as_str().to_string(),
        upstream,
        started,
    });
    let format = snapshot.access_log;
    // Through the worker's handle on the application: a copy of the counter's handle would
    // be a reference count every worker writes.
    let bytes_sent = match app {
        Some(a) => SentCounter::Application(a.clone()),
        None => SentCounter::Unrouted(snapshot.unrouted.bytes_sent.clone()),
    };
    resp.body_mut().on_finish(Box::new(move |sent, complete| {
        match &bytes_sent {
            SentCounter::Application(app) => app.metrics.bytes_sent.inc_by(sent),
            SentCounter::Unrouted(counter) => counter.inc_by(sent),
        }
        if let Some(record) = record {
            // The connection's log, reached through the request's hold on the connection: a
            // copy of the handle would be reference counts every worker shares.
            let line = format_line(format, &record, sent, complete);
            in_flight.conn().access_log.write(line);
        }
        drop(in_flight);
    }));
    resp
}

/// Where a response's bytes are counted once sent.
enum SentCounter {
    Application(AppHandle),
    /// No application took the request (the snapshot's own counters).
    Unrouted(crate::metrics::ShardedCounter),
}

/// Whether a client's request on `conn` gets an access log line.
fn access_logged(snapshot: &Snapshot, conn: &ConnInfo) -> bool {
    snapshot.access_log != AccessLogFormat::Off && conn.access_log.is_enabled()
}

#[derive(Default)]
pub(crate) struct LoggedHeaders {
    referer: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
}

fn header_string(v: Option<&HeaderValue>) -> String {
    v.and_then(|v| v.to_str().ok()).unwrap_or("-").to_string()
}
