//! The admin REST API (axum): JSON in the proto3 JSON mapping of the config messages.
//!
//! Every request but `/api/openapi.json` and `/healthz` carries `Authorization: Bearer TOKEN`.
//! Viewers read, editors also edit and release, admins also manage tokens. Every write to the
//! working config is validated as a whole config before it is stored: a 422 lists each error
//! with its field path; JSON that does not parse or does not fit the schema is a 400.

mod cluster;
mod error;
mod gslb;
mod join_tokens;
mod nodes;
mod objects;
mod partitions;
mod purges;
mod releases;

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

pub(crate) use cluster::is_host_port;
pub use error::ApiError;

use crate::auth::{self, Role};
use crate::cluster::Cluster;
use crate::push::Watchers;
use crate::raft::{Applied, Command};
use crate::store::{Store, now_ms};

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub cluster: Arc<Cluster>,
    /// Edits of the working config through this node, one at a time.
    pub edits: Arc<tokio::sync::Mutex<()>>,
    pub watchers: Arc<Watchers>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi))
        .route(
            "/api/v1/config",
            get(objects::get_config).put(objects::put_config),
        )
        .route(
            "/api/v1/config/{kind}",
            get(objects::list).post(objects::create),
        )
        .route(
            "/api/v1/config/{kind}/{name}",
            get(objects::get_one)
                .put(objects::put_one)
                .delete(objects::delete_one),
        )
        .route(
            "/api/v1/gslb",
            get(gslb::get).put(gslb::put).delete(gslb::delete),
        )
        .route("/api/v1/changes", get(releases::changes))
        .route(
            "/api/v1/releases",
            get(releases::list).post(releases::create),
        )
        .route("/api/v1/releases/{version}", get(releases::get_one))
        .route(
            "/api/v1/releases/{version}/rollback",
            axum::routing::post(releases::rollback),
        )
        .route(
            "/api/v1/releases/{version}/promote",
            axum::routing::post(releases::promote),
        )
        .route("/api/v1/purges", get(purges::list).post(purges::create))
        .route(
            "/api/v1/partitions",
            get(partitions::list).post(partitions::create),
        )
        .route(
            "/api/v1/partitions/{name}",
            axum::routing::delete(partitions::delete),
        )
        .route("/api/v1/nodes", get(nodes::list))
        .route(
            "/api/v1/nodes/{id}/drain",
            axum::routing::post(nodes::drain),
        )
        .route(
            "/api/v1/nodes/{id}/undrain",
            axum::routing::post(nodes::undrain),
        )
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route(
            "/api/v1/join-tokens",
            axum::routing::post(join_tokens::create),
        )
        .route("/api/v1/cluster", get(cluster::status))
        .route(
            "/api/v1/cluster/nodes",
            axum::routing::post(cluster::add_node),
        )
        .route(
            "/api/v1/cluster/nodes/{id}",
            axum::routing::delete(cluster::remove_node),
        )
        .route(
            "/api/v1/cluster/voters",
            axum::routing::put(cluster::set_voters),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            linearizable_reads,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Counts each request by method, route pattern (not the raw path: bounded labels) and status.
async fn count_requests(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let response = next.run(request).await;
    state
        .metrics
        .request(&method, &route, response.status().as_u16());
    response
}

/// `GET /healthz`: 200 while this node's Raft runs, 503 once it has stopped (a storage
/// failure stops it for good: restart the process).
async fn healthz(State(state): State<AppState>) -> Response {
    if state.cluster.raft_stopped() {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "raft stopped: restart this node\n",
        )
            .into_response();
    }
    "ok\n".into_response()
}

/// `GET /metrics`: Prometheus text, no token.
async fn metrics(State(state): State<AppState>) -> Response {
    let now = crate::metrics::Snapshot {
        cluster: state.cluster.status(),
        contact: *state.cluster.contact().borrow(),
        raft_running: !state.cluster.raft_stopped(),
        watch_streams: state.watchers.count(),
        latest_release: state
            .store
            .subscribe(crate::store::DEFAULT_PARTITION)
            .borrow()
            .as_ref()
            .map_or(0, |r| r.version),
        general_release: state
            .store
            .subscribe_general(crate::store::DEFAULT_PARTITION)
            .borrow()
            .as_ref()
            .map_or(0, |r| r.version),
        last_purge: *state.store.subscribe_purges().borrow(),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(now),
    )
        .into_response()
}

/// Makes every read of the replicated state linearizable: before a `GET` is served, this node
/// confirms with the leader (ReadIndex) and applies the log up to that point. `?stale=true`
/// skips that and reads this node's state as it is, which works without a leader.
async fn linearizable_reads(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let wants_fresh = request.method() == axum::http::Method::GET
        && path.starts_with("/api/v1/")
        && path != "/api/v1/cluster"
        && !request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "stale=true"));
    if wants_fresh && let Err(e) = state.cluster.read_barrier().await {
        return ApiError::from(e).into_response();
    }
    next.run(request).await
}

/// The role of the request's bearer token; a request without a known token is refused here.
pub struct Caller(pub Role);

impl Caller {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.0.allows(role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(role))
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        if let Some(role) = state.store.authenticate(token).await? {
            return Ok(Caller(role));
        }
        // A token just created through another node may not be applied here yet.
        if state.cluster.read_barrier().await.is_ok()
            && let Some(role) = state.store.authenticate(token).await?
        {
            return Ok(Caller(role));
        }
        Err(ApiError::Unauthorized)
    }
}

/// Parses a request body, naming the problem (and where) when it does not fit.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("request body: {e}")))
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("api/openapi.json"),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: Role,
}

async fn create_token(
    caller: Caller,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let req: NewToken = parse_body(&body)?;
    if req.name.is_empty() {
        return Err(ApiError::invalid("name", "must not be empty"));
    }
    let token = auth::new_token();
    let command = Command::CreateToken {
        name: req.name.clone(),
        role: req.role,
        sha256: auth::token_hash(&token),
        at_ms: now_ms(),
    };
    match state.cluster.write(command).await? {
        Applied::Token(_) => {}
        Applied::Refused(why) => return Err(ApiError::Refused(why)),
        other => return Err(ApiError::unexpected(other)),
    }
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "name": req.name, "role": req.role, "token": token })),
    )
        .into_response())
}

async fn list_tokens(caller: Caller, State(state): State<AppState>) -> Result<Response, ApiError> {
    caller.require(Role::Admin)?;
    let tokens = state.store.tokens().await?;
    Ok(Json(serde_json::json!({ "tokens": tokens })).into_response())
}
