//! The API's one error type and the one place it becomes a status code.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use outpost_proto::FieldError;
use serde_json::json;

use crate::auth::Role;
use crate::cluster::ClusterError;
use crate::raft::{Applied, Refusal};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or not JSON of the expected shape.
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or unknown bearer token")]
    Unauthorized,
    #[error("this needs the {0} role")]
    Forbidden(Role),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The request parses but the resulting config is not valid: every error, by field path.
    #[error("invalid configuration")]
    Invalid(Vec<FieldError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No leader, an unknown outcome, or a refused membership change.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The command was applied but changed nothing.
    #[error(transparent)]
    Refused(Refusal),
}

impl ApiError {
    /// A reply from the state machine that the caller did not expect: a bug, not bad input.
    pub fn unexpected(applied: Applied) -> ApiError {
        ApiError::Cluster(ClusterError::Failed(format!(
            "unexpected answer from the state machine: {applied:?}"
        )))
    }

    pub fn invalid(path: &str, message: &str) -> ApiError {
        ApiError::Invalid(vec![FieldError {
            path: path.into(),
            message: message.into(),
        }])
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_)
            | ApiError::Store(StoreError::NoSuchPartition(_))
            | ApiError::Refused(
                Refusal::NoSuchRelease(_) | Refusal::NoSuchNode(_) | Refusal::NoSuchPartition(_),
            ) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_)
            | ApiError::Refused(_)
            | ApiError::Cluster(ClusterError::Refused(_)) => StatusCode::CONFLICT,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Cluster(ClusterError::NoLeader(_) | ClusterError::Unknown(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Store(_) | ApiError::Cluster(ClusterError::Failed(_)) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = match self {
            ApiError::Invalid(errors) => {
                let errors: Vec<_> = errors
                    .iter()
                    .map(|e| json!({ "path": e.path, "message": e.message }))
                    .collect();
                json!({ "errors": errors })
            }
            ApiError::Cluster(e) if status == StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(error = %e, "admin API raft error");
                json!({ "error": "raft error" })
            }
            ApiError::Store(e) if status == StatusCode::INTERNAL_SERVER_ERROR => {
                tracing::error!(error = %e, "admin API storage error");
                json!({ "error": "storage error" })
            }
            other => json!({ "error": other.to_string() }),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
