//! The cache in the request pipeline (nginx's `proxy_cache`, srcache's role in OpenResty):
//! look up, serve fresh hits, revalidate stale ones, collapse concurrent misses onto one
//! origin request, store what RFC 9111 allows while it streams to the client.
//!
//! The decisions are the pure functions of [`outpost_cache::policy`]; this file does the I/O
//! around them.

use std::borrow::Cow;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use outpost_cache::policy::{self, CacheStatus, Decision, Fwd, StoreOptions, StoredView};
use outpost_cache::{CachedBody, FillRole, KeyHash, ObjectMeta, Stored};

use super::body::{ResponseBody, Tee, UpstreamRequestBody};
use super::error::ProxyError;
use super::forward;
use super::lua_balancer::BalancerLua;
use super::upstream_call::{self, Proxied, UpstreamHead, UpstreamInfo};
use crate::config::Snapshot;
use crate::rules::{CacheRule, RequestId};
use crate::server::worker::WorkerCtx;
use crate::upstream::Upstream;

const CACHE_NAME: &str = "outpost";

static SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
static CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");
static SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");
static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The metrics result (one of `CACHE_RESULTS`) a response's `Cache-Status` reports.
pub fn result_of(h: &HeaderMap) -> &'static str {
    let v = h
        .get(&CACHE_STATUS)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if v.contains("; hit") {
        if v.contains("ttl=-") { "stale" } else { "hit" }
    } else if v.contains("fwd=stale") {
        if v.contains("stale-if-error") {
            "stale"
        } else {
            "revalidated"
        }
    } else if v.contains("collapsed") {
        "collapsed"
    } else if v.contains("stored") {
        "miss"
    } else {
        "pass"
    }
}

/// One request the cache handles.
pub struct CacheRequest<'a> {
    pub rule: Arc<CacheRule>,
    /// The primary key text, from the rule's key parts.
    pub key: String,
    /// `scheme://host/path?query`, for purges.
    pub url: CacheUrl,
    /// GET or HEAD.
    pub method: Method,
    /// The request head as the client sent it; [`Forwarding`] is applied when it goes
    /// upstream.
    pub head: UpstreamHead,
    pub forward: Forwarding<'a>,
    pub hash: u64,
    /// Set from Lua (`require "outpost.cache"`): go to the origin without looking up, or
    /// without storing what comes back.
    pub skip_lookup: bool,
    pub skip_store: bool,
    /// The upstream's `lua_balancer` with this request's Lua state, when it has one.
    pub balancer: Option<BalancerLua>,
}

/// A request's `scheme://host/path?query` (what purges by URL and prefix match), kept in
/// parts and written out only when something is stored: a hit never formats it.
#[derive(Clone)]
pub struct CacheUrl {
    pub scheme: &'static str,
    /// The host as the request gave it (`Host` or the authority); normalised when written.
    pub host: HeaderValue,
    pub target: Option<http::uri::PathAndQuery>,
}

impl CacheUrl {
    pub fn text(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme,
            crate::config::host_router::normalize_host(self.host.to_str().unwrap_or("")),
            self.target.as_ref().map_or("/", |pq| pq.as_str())
        )
    }
}

/// What the forwarding headers need, borrowed from the request (owned only by a background
/// refresh): the headers are built only when a request goes upstream, so a hit never pays for
/// them, nor for a request id.
#[derive(Clone)]
pub struct Forwarding<'a> {
    pub client_ip: HeaderValue,
    pub scheme: &'static str,
    pub host: Cow<'a, HeaderValue>,
    pub request_id: Cow<'a, RequestId>,
    pub via: &'static str,
    pub ops: Vec<crate::rules::HeaderOp>,
}

pub fn store_options(rule: &CacheRule) -> StoreOptions {
    StoreOptions {
        default_ttl: rule.default_ttl,
        enforce_ttl: if rule.enforce { rule.default_ttl } else { None },
        stale_if_error_default: rule.stale_if_error,
        ..StoreOptions::default()
    }
}

pub(crate) fn ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn time(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

pub(crate) fn view(meta: &ObjectMeta) -> StoredView<'_> {
    StoredView {
        status: StatusCode::from_u16(meta.status).unwrap_or(StatusCode::OK),
        headers: &meta.headers,
        request_time: time(meta.request_time_ms),
        response_time: time(meta.response_time_ms),
        invalidated_at: meta.invalidated_at_ms().map(time),
    }
}

/// The request's values of the fields a response varies on; `None` never matches (`Vary: *`).
fn secondary(fields: &[String], request: &HeaderMap) -> Option<String> {
    let names = fields
        .iter()
        .map(|f| HeaderName::from_bytes(f.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    policy::secondary_key(&policy::VaryFields::Fields(names), request)
}

pub async fn serve(
    w: &Rc<WorkerCtx>,
    up: &Arc<Upstream>,
    snapshot: &Arc<Snapshot>,
    cr: CacheRequest<'_>,
    info: &mut UpstreamInfo,
) -> (Response<ResponseBody>, &'static str) {
    let cache = snapshot.cache.clone();
    let opts = store_options(&cr.rule);
    let now = SystemTime::now();
    let client_headers = &cr.head.headers;
    // A request whose varying fields cannot be keyed gets a key no response is stored under.
    let lookup = cache.lookup(&cr.key, |fields| {
        secondary(fields, client_headers).unwrap_or_else(|| "\0unmatchable".into())
    });
    if cr.skip_store && cr.skip_lookup {
        return with_result(crate::in_box!(pass(w, up, cr, info, "lua-bypass")).await);
    }
    if let Some(stored) = lookup
        .stored
        .clone()
        .filter(|s| !s.meta.is_variants_marker() && !cr.skip_lookup)
    {
        // The stored head's facts are parsed once per object, not on every hit.
        let meta = &stored.meta;
        let found = policy::lookup_with_facts(
            &cr.method,
            client_headers,
            meta.facts(),
            meta.invalidated_at_ms().map(time),
            now,
            &opts,
        );
        let (age, ttl) = (found.age, found.ttl);
        match found.decision {
            Decision::Fresh | Decision::StaleAllowed => {
                let status = CacheStatus {
                    hit: true,
                    ttl: Some(ttl),
                    ..CacheStatus::default()
                };
                return (from_stored(&cr, &stored, age, status), hit_result(ttl));
            }
            Decision::Stale {
                can_serve_while_revalidate: true,
                ..
            } => {
                revalidate_in_background(w, up, &cache, &cr, &lookup.key, &stored);
                let status = CacheStatus {
                    hit: true,
                    ttl: Some(ttl),
                    detail: Some("stale-while-revalidate".into()),
                    ..CacheStatus::default()
                };
                return (from_stored(&cr, &stored, age, status), hit_result(ttl));
            }
            Decision::Stale {
                can_serve_if_error, ..
            } => {
                // Boxed, as the misses below: they go to the network, and inline their
                // state would make every hit's future (moved on each request) larger.
                return with_result(
                    crate::in_box!(revalidate(
                        w,
                        up,
                        snapshot,
                        &cr,
                        lookup.key,
                        stored,
                        can_serve_if_error,
                        info,
                    ))
                    .await,
                );
            }
            Decision::GatewayTimeout => {
                return with_result(local(StatusCode::GATEWAY_TIMEOUT, "not cached\n"));
            }
            Decision::Bypass => {}
        }
    }
    // Parsed here, not before the lookup: a hit never needs it.
    if policy::parse_request(client_headers).only_if_cached {
        // RFC 9111 §5.2.1.7: nothing usable stored, and the client forbids going further.
        return with_result(local(StatusCode::GATEWAY_TIMEOUT, "not cached\n"));
    }
    if cr.method == Method::HEAD {
        // A HEAD miss has no body to store; the origin answers it as it is.
        return with_result(crate::in_box!(pass(w, up, cr, info, "head-miss")).await);
    }
    with_result(crate::in_box!(miss(w, up, snapshot, cr, lookup.key, info)).await)
}

/// What a hit reports to the metrics: `result_of` would read the same from its header.
fn hit_result(ttl: i64) -> &'static str {
    if ttl < 0 { "stale" } else { "hit" }
}

fn with_result(resp: Response<ResponseBody>) -> (Response<ResponseBody>, &'static str) {
    let result = result_of(resp.headers());
    (resp, result)
}

/// A request that found nothing usable: collapse onto a fill in progress, or lead one.
async fn miss(
    w: &Rc<WorkerCtx>,
    up: &Arc<Upstream>,
    snapshot: &Arc<Snapshot>,
    cr: CacheRequest<'_>,
    key: KeyHash,
    info: &mut UpstreamInfo,
) -> Response<ResponseBody> {
    let cache = snapshot.cache.clone();
    match cache.begin_fill(key) {
        FillRole::Follower(fill) => {
            let head = tokio::time::timeout(snapshot.cache_lock_timeout, fill.wait_head()).await;
            if let Ok(Some(meta)) = &head {
                let mine = secondary(&meta.vary_fields, &cr.head.headers);
                if mine.as_deref() == Some(meta.secondary_key.as_str()) {
                    let status = CacheStatus {
                        fwd: Some(Fwd::Miss),
                        collapsed: true,
                        ..CacheStatus::default()
                    };
                    let len = meta
                        .headers
                        .get(header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok()?.parse().ok());
                    let body = CachedBody::follow(fill, len);
                    return respond(&cr, meta, Duration::ZERO, status, body, None);
                }
            }
            // The leader's response is not for sharing, or took too long: go alone, store
            // nothing (the leader does).
            let detail = if head.is_err() {
                "lock-timeout"
            } else {
                "not-shared"
            };
            pass(w, up, cr, info, detail).await
        }
        FillRole::Leader(mut handle) => {
            let request_time = SystemTime::now();
            let mut head = upstream_head(&cr);
            strip_conditionals(&mut head.headers);
            head.method = Method::GET;
            let fetched = fetch(w, up, head, cr.hash, cr.balancer.as_ref(), info).await;
            let response_time = SystemTime::now();
            match fetched {
                Err(e) => {
                    handle.abandon();
                    error_response(&e)
                }
                Ok(p) => store_and_stream(&cache, &cr, p, handle, request_time, response_time).0,
            }
        }
    }
}

/// Decides whether the origin's response is stored; if so starts the fill and tees the body.
fn store_and_stream(
    cache: &Arc<outpost_cache::Cache>,
    cr: &CacheRequest<'_>,
    p: Proxied,
    mut handle: outpost_cache::FillHandle,
    request_time: SystemTime,
    response_time: SystemTime,
) -> (Response<ResponseBody>, bool) {
    // Every early return drops `handle` unstarted, which abandons the fill: followers go to
    // the origin themselves.
    let Proxied { mut head, body, .. } = p;
    forward::strip_hop_by_hop(&mut head.headers);
    let opts = store_options(&cr.rule);
    let decision = policy::storable(
        &Method::GET,
        &cr.head.headers,
        head.status,
        &head.headers,
        &opts,
    )
    .map_err(|reason| reason.as_str())
    .and_then(|s| {
        if cr.skip_store {
            Err("lua-skip-store")
        } else {
            Ok(s)
        }
    })
    .and_then(|s| {
        if head.headers.contains_key(header::SET_COOKIE) && !cr.rule.enforce {
            // As nginx and Varnish do: a response setting a cookie is someone's own.
            Err("set-cookie")
        } else {
            Ok(s)
        }
    });
    let storable = match decision {
        Ok(s) => s,
        Err(reason) => {
            let status = CacheStatus {
                fwd: Some(Fwd::Miss),
                fwd_status: Some(head.status.as_u16()),
                detail: Some(reason.into()),
                ..CacheStatus::default()
            };
            let mut resp = Response::from_parts(head, body);
            finish_headers(resp.headers_mut(), &cr.rule, &status, None);
            return (resp, false);
        }
    };
    let mut stored_headers = head.headers.clone();
    for f in &storable.strip_fields {
        stored_headers.remove(f);
    }
    let vary = policy::vary_fields(&head.headers);
    let (vary_fields, secondary, store_key) = match &vary {
        policy::VaryFields::Fields(f) if !f.is_empty() => {
            let names: Vec<String> = f.iter().map(|n| n.as_str().to_string()).collect();
            let secondary = policy::secondary_key(&vary, &cr.head.headers).unwrap_or_default();
            cache.put_variants_marker(&cr.key, &cr.url.text(), names.clone());
            let key = KeyHash::variant(&cr.key, &secondary);
            (names, secondary, key)
        }
        _ => (Vec::new(), String::new(), handle.key()),
    };
    let meta = ObjectMeta {
        url: cr.url.text(),
        status: head.status.as_u16(),
        headers: stored_headers,
        request_time_ms: ms(request_time),
        response_time_ms: ms(response_time),
        vary_fields,
        secondary_key: secondary,
        tags: tags(&head.headers),
        body_len: 0,
        invalidated_ms: Default::default(),
        derived: Default::default(),
    };
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let published = Arc::new(meta.clone_meta());
    if !handle.start(published, declared, store_key) {
        let status = CacheStatus {
            fwd: Some(Fwd::Miss),
            fwd_status: Some(head.status.as_u16()),
            detail: Some("too-large".into()),
            ..CacheStatus::default()
        };
        let mut resp = Response::from_parts(head, body);
        finish_headers(resp.headers_mut(), &cr.rule, &status, None);
        return (resp, false);
    }
    let ttl = policy::freshness_lifetime(
        &meta.headers,
        &policy::parse_response(&meta.headers, opts.target),
        head.status,
        response_time,
        &opts,
    )
    .map(|d| d.as_secs() as i64);
    // From here the handle lives in the body and commits at the body's end.
    let mut resp = Response::from_parts(head, body);
    resp.body_mut().tee_into(Tee {
        handle,
        meta,
        received: 0,
    });
    let status = CacheStatus {
        fwd: Some(Fwd::Miss),
        fwd_status: Some(resp.status().as_u16()),
        stored: true,
        ttl,
        ..CacheStatus::default()
    };
    finish_headers(resp.headers_mut(), &cr.rule, &status, None);
    (resp, true)
}

/// A stale object: ask the origin whether it changed (If-None-Match / If-Modified-Since).
#[allow(clippy::too_many_arguments)]
async fn revalidate(
    w: &Rc<WorkerCtx>,
    up: &Arc<Upstream>,
    snapshot: &Arc<Snapshot>,
    cr: &CacheRequest<'_>,
    key: KeyHash,
    stored: Stored,
    if_error: bool,
    info: &mut UpstreamInfo,
) -> Response<ResponseBody> {
    let cache = snapshot.cache.clone();
    let request_time = SystemTime::now();
    let mut head = upstream_head(cr);
    strip_conditionals(&mut head.headers);
    head.method = Method::GET;
    for (k, v) in policy::revalidation_headers(&stored.meta.headers) {
        if let Some(k) = k {
            head.headers.insert(k, v);
        }
    }
    let fetched = fetch(w, up, head, cr.hash, cr.balancer.as_ref(), info).await;
    let response_time = SystemTime::now();
    match fetched {
        Ok(p) if p.head.status == StatusCode::NOT_MODIFIED => {
            let meta = refreshed(&stored.meta, &p.head.headers, request_time, response_time);
            let meta = Arc::new(meta);
            cache.update_meta(&key, meta.clone());
            let stored = Stored {
                meta,
                body: stored.body,
            };
            let age = policy::current_age(
                &stored.meta.headers,
                request_time,
                response_time,
                SystemTime::now(),
            );
            let status = CacheStatus {
                fwd: Some(Fwd::Stale),
                fwd_status: Some(304),
                ..CacheStatus::default()
            };
            from_stored(cr, &stored, age, status)
        }
        Ok(p) if if_error && p.head.status.is_server_error() => {
            serve_stale_on_error(cr, &stored, Some(p.head.status.as_u16()))
        }
        Err(_) if if_error => serve_stale_on_error(cr, &stored, None),
        Err(e) => error_response(&e),
        Ok(p) => {
            // A new full response replaces the stored one (or, not storable, removes it).
            match cache.begin_fill(key) {
                FillRole::Leader(handle) => {
                    let (resp, stored_new) =
                        store_and_stream(&cache, cr, p, handle, request_time, response_time);
                    if !stored_new && p_status_replaces(resp.status()) {
                        cache.remove(&key);
                    }
                    resp
                }
                FillRole::Follower(_) => {
                    let mut resp = Response::from_parts(p.head, p.body);
                    forward::strip_hop_by_hop(resp.headers_mut());
                    resp
                }
            }
        }
    }
}

/// A non-error answer that is not stored still tells us the stored one is outdated.
fn p_status_replaces(s: StatusCode) -> bool {
    !s.is_server_error()
}

fn serve_stale_on_error(
    cr: &CacheRequest<'_>,
    stored: &Stored,
    fwd_status: Option<u16>,
) -> Response<ResponseBody> {
    let meta = &stored.meta;
    let age = policy::current_age(
        &meta.headers,
        time(meta.request_time_ms),
        time(meta.response_time_ms),
        SystemTime::now(),
    );
    let status = CacheStatus {
        fwd: Some(Fwd::Stale),
        fwd_status,
        detail: Some("stale-if-error".into()),
        ..CacheStatus::default()
    };
    from_stored(cr, stored, age, status)
}

/// The stored head, updated by a 304 (RFC 9111 §4.3.4) with fresh timestamps.
fn refreshed(
    old: &ObjectMeta,
    not_modified: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> ObjectMeta {
    let mut meta = old.clone_meta();
    policy::merge_not_modified(&mut meta.headers, not_modified, response_time);
    meta.request_time_ms = ms(request_time);
    meta.response_time_ms = ms(response_time);
    meta.invalidated_ms = Default::default();
    meta
}

/// Stale-while-revalidate: one background request per key refreshes the object; the client
/// has its answer already.
fn revalidate_in_background(
    w: &Rc<WorkerCtx>,
    up: &Arc<Upstream>,
    cache: &Arc<outpost_cache::Cache>,
    cr: &CacheRequest<'_>,
    key: &KeyHash,
    stored: &Stored,
) {
    let FillRole::Leader(mut handle) = cache.begin_fill(*key) else {
        return; // someone is already refreshing it
    };
    let (w, up, cache, stored) = (w.clone(), up.clone(), cache.clone(), stored.clone());
    let mut head = upstream_head(cr);
    strip_conditionals(&mut head.headers);
    head.method = Method::GET;
    for (k, v) in policy::revalidation_headers(&stored.meta.headers) {
        if let Some(k) = k {
            head.headers.insert(k, v);
        }
    }
    let shadow = CacheRequest {
        rule: cr.rule.clone(),
        key: cr.key.clone(),
        url: cr.url.clone(),
        method: Method::GET,
        head: clone_head(&cr.head),
        forward: Forwarding {
            host: Cow::Owned(cr.forward.host.as_ref().clone()),
            // The refresh carries the id of the request that started it.
            request_id: Cow::Owned(cr.forward.request_id.as_ref().clone()),
            ..cr.forward.clone()
        },
        skip_lookup: false,
        skip_store: false,
        hash: cr.hash,
        balancer: cr.balancer.clone(),
    };
    let key = *key;
    tokio::task::spawn_local(async move {
        let mut info = UpstreamInfo::default();
        let request_time = SystemTime::now();
        let fetched = fetch(
            &w,
            &up,
            head,
            shadow.hash,
            shadow.balancer.as_ref(),
            &mut info,
        )
        .await;
        let response_time = SystemTime::now();
        match fetched {
            Ok(p) if p.head.status == StatusCode::NOT_MODIFIED => {
                handle.abandon();
                let meta = refreshed(&stored.meta, &p.head.headers, request_time, response_time);
                cache.update_meta(&key, Arc::new(meta));
            }
            Ok(p) if !p.head.status.is_server_error() => {
                let (resp, stored_new) =
                    store_and_stream(&cache, &shadow, p, handle, request_time, response_time);
                if !stored_new {
                    return;
                }
                // Read the body through so the tee stores it.
                use http_body_util::BodyExt;
                let mut body = resp.into_body();
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        break;
                    }
                }
            }
            _ => handle.abandon(),
        }
    });
}

/// Answers from a stored object: conditionals, ranges, HEAD, `Age`, `Cache-Status`.
fn from_stored(
    cr: &CacheRequest<'_>,
    stored: &Stored,
    age: Duration,
    status: CacheStatus,
) -> Response<ResponseBody> {
    let meta = &stored.meta;
    let stored_status = StatusCode::from_u16(meta.status).unwrap_or(StatusCode::OK);
    if let Some(code) = policy::evaluate_client_conditional(
        &cr.method,
        &cr.head.headers,
        stored_status,
        &meta.headers,
    ) {
        let mut resp = Response::new(ResponseBody::full(Bytes::new()));
        *resp.status_mut() = code;
        if code == StatusCode::NOT_MODIFIED {
            *resp.headers_mut() = policy::not_modified_headers(&meta.headers);
        }
        finish_headers(resp.headers_mut(), &cr.rule, &status, Some(age));
        return resp;
    }
    let mut range = None;
    let mut code = stored_status;
    let mut extra: Vec<(HeaderName, HeaderValue)> = Vec::new();
    if cr.method == Method::GET && stored_status == StatusCode::OK {
        match policy::range_for(&cr.method, &cr.head.headers, meta.body_len, &meta.headers) {
            policy::RangeDecision::Full => {}
            policy::RangeDecision::Partial {
                start,
                end,
                content_range,
            } => {
                range = Some((start, end + 1));
                code = StatusCode::PARTIAL_CONTENT;
                extra.push((header::CONTENT_RANGE, content_range));
            }
            policy::RangeDecision::Unsatisfiable { content_range } => {
                let mut resp = Response::new(ResponseBody::full(Bytes::new()));
                *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                resp.headers_mut()
                    .insert(header::CONTENT_RANGE, content_range);
                finish_headers(resp.headers_mut(), &cr.rule, &status, Some(age));
                return resp;
            }
        }
    }
    let body = if cr.method == Method::HEAD {
        CachedBody::empty()
    } else {
        match CachedBody::from_source(&stored.body, range) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cached body unreadable");
                return local(StatusCode::BAD_GATEWAY, "cached object unreadable\n");
            }
        }
    };
    let Some((start, end)) = range else {
        let mut resp = Response::new(ResponseBody::cached(body));
        *resp.status_mut() = code;
        *resp.headers_mut() = meta.hit_head(hit_head).clone();
        // The hit head has no CDN-only fields left to remove.
        stamp_headers(resp.headers_mut(), &cr.rule, &status, Some(age));
        return resp;
    };
    let mut resp = respond(cr, meta, age, status, body, Some(end - start));
    *resp.status_mut() = code;
    for (k, v) in extra {
        resp.headers_mut().insert(k, v);
    }
    resp
}

fn respond(
    cr: &CacheRequest<'_>,
    meta: &ObjectMeta,
    age: Duration,
    status: CacheStatus,
    body: CachedBody,
    len: Option<u64>,
) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::cached(body));
    *resp.status_mut() = StatusCode::from_u16(meta.status).unwrap_or(StatusCode::OK);
    let mut headers = meta.headers.clone();
    headers.remove(header::TRANSFER_ENCODING);
    if let Some(len) = len {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    *resp.headers_mut() = headers;
    finish_headers(resp.headers_mut(), &cr.rule, &status, Some(age));
    resp
}

/// The head every full hit on `meta` starts from: what [`respond`] and [`finish_headers`]
/// would make of the stored fields, with `Age` and `Cache-Status` slots that each hit
/// overwrites in place. Built once per stored object; a hit then copies it without growing it.
fn hit_head(meta: &ObjectMeta) -> HeaderMap {
    let mut h = meta.headers.clone();
    h.remove(header::TRANSFER_ENCODING);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.body_len));
    h.insert(header::AGE, HeaderValue::from_static("0"));
    h.insert(CACHE_STATUS.clone(), HeaderValue::from_static(CACHE_NAME));
    h.remove(&SURROGATE_CONTROL);
    h.remove(&SURROGATE_KEY);
    h
}

/// `Age`, `Cache-Status`, the browser TTL, and the CDN-only fields removed.
fn finish_headers(
    h: &mut HeaderMap,
    rule: &CacheRule,
    status: &CacheStatus,
    age: Option<Duration>,
) {
    stamp_headers(h, rule, status, age);
    // Meant for us, as Fastly and Akamai treat them.
    h.remove(&SURROGATE_CONTROL);
    h.remove(&SURROGATE_KEY);
}

/// `Age`, `Cache-Status` and the browser TTL.
fn stamp_headers(h: &mut HeaderMap, rule: &CacheRule, status: &CacheStatus, age: Option<Duration>) {
    if let Some(age) = age {
        h.insert(header::AGE, HeaderValue::from(age.as_secs()));
    }
    // The formatted text becomes the value's storage: no second copy.
    let value = Bytes::from(status.header_value(CACHE_NAME));
    if let Ok(v) = HeaderValue::from_maybe_shared(value) {
        h.insert(CACHE_STATUS.clone(), v);
    }
    if let Some(ttl) = rule.browser_ttl {
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_str(&format!("max-age={ttl}"))
                .unwrap_or(HeaderValue::from_static("no-cache")),
        );
        h.remove(header::EXPIRES);
    }
}

/// Purge tags: `Surrogate-Key` (space-separated) and `Cache-Tag` (comma-separated).
pub(crate) fn tags(h: &HeaderMap) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in h
        .get_all(&SURROGATE_KEY)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        out.extend(v.split_ascii_whitespace().map(str::to_string));
    }
    for v in h.get_all(&CACHE_TAG).iter().filter_map(|v| v.to_str().ok()) {
        out.extend(
            v.split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
        );
    }
    out.sort();
    out.dedup();
    out
}

/// The client's own conditionals and ranges are answered by us from the stored object; the
/// origin is asked for the full response.
fn strip_conditionals(h: &mut HeaderMap) {
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
        header::RANGE,
    ] {
        h.remove(name);
    }
}

/// The head sent upstream: the client's, with the forwarding headers.
fn upstream_head(cr: &CacheRequest<'_>) -> UpstreamHead {
    let mut head = clone_head(&cr.head);
    let f = &cr.forward;
    let fwd = forward::Forwarded {
        client_ip: &f.client_ip,
        scheme: f.scheme,
        host: &f.host,
        request_id: f.request_id.value(),
        via: f.via,
        upgrade: None,
    };
    forward::request_headers(&mut head.headers, &fwd, &f.ops);
    head
}

fn clone_head(h: &UpstreamHead) -> UpstreamHead {
    UpstreamHead {
        method: h.method.clone(),
        uri: h.uri.clone(),
        headers: h.headers.clone(),
    }
}

async fn fetch(
    w: &Rc<WorkerCtx>,
    up: &Arc<Upstream>,
    head: UpstreamHead,
    hash: u64,
    lua: Option<&BalancerLua>,
    info: &mut UpstreamInfo,
) -> Result<Proxied, ProxyError> {
    let over_limit = Rc::new(Cell::new(false));
    // Boxed: inline, its state would be most of every request's future, hits included,
    // and that future is moved whole into hyper's dispatcher on each request. A fetch goes
    // to the network; one allocation more is nothing there.
    crate::in_box!(upstream_call::call(
        w,
        up,
        head,
        UpstreamRequestBody::Empty,
        upstream_call::PeerChoice { hash, lua },
        &over_limit,
        info,
    ))
    .await
}

/// Not cacheable from the start (or a follower that gave up waiting): straight to the origin.
async fn pass(
    w: &Rc<WorkerCtx>,
    up: &Arc<Upstream>,
    cr: CacheRequest<'_>,
    info: &mut UpstreamInfo,
    detail: &str,
) -> Response<ResponseBody> {
    match fetch(
        w,
        up,
        upstream_head(&cr),
        cr.hash,
        cr.balancer.as_ref(),
        info,
    )
    .await
    {
        Ok(p) => {
            let mut resp = Response::from_parts(p.head, p.body);
            forward::strip_hop_by_hop(resp.headers_mut());
            let status = CacheStatus {
                fwd: Some(Fwd::Miss),
                fwd_status: Some(resp.status().as_u16()),
                detail: Some(detail.into()),
                ..CacheStatus::default()
            };
            finish_headers(resp.headers_mut(), &cr.rule, &status, None);
            resp
        }
        Err(e) => error_response(&e),
    }
}

fn error_response(e: &ProxyError) -> Response<ResponseBody> {
    local(e.status(), &format!("{}\n", e.status()))
}

fn local(status: StatusCode, text: &str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(Bytes::from(text.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Unsafe methods invalidate what they may have changed (RFC 9111 §4.4): the target URI, and
/// the `Location` and `Content-Location` URIs on the same origin. Each is looked up by the key
/// the rule would build for a GET of it.
pub fn invalidate_after_unsafe(
    snapshot: &Snapshot,
    rule: &CacheRule,
    view: &crate::rules::RequestView<'_>,
    method: &Method,
    status: StatusCode,
    resp_headers: &HeaderMap,
) {
    let target = format!(
        "{}://{}{}{}",
        view.scheme,
        view.host,
        view.path,
        view.query.map(|q| format!("?{q}")).unwrap_or_default()
    );
    let Ok(target) = target.parse::<http::Uri>() else {
        return;
    };
    for uri in policy::invalidated_uris(method, status, &target, resp_headers) {
        let path = uri.path().to_string();
        let query = uri.query().map(str::to_string);
        let other = crate::rules::RequestView {
            path: &path,
            query: query.as_deref(),
            ..*view
        };
        let key = KeyHash::of(&rule.key(&other));
        snapshot.cache.remove(&key);
    }
}
