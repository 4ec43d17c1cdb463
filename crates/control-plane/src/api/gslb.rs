//! The working config's GSLB section (zones, steering records, static nodes): what GSLB
//! servers watching the control plane answer. `GET`, `PUT` (whole, validated with the rest of
//! the config) and `DELETE /api/v1/gslb`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use outpost_proto::gslb::v1::GslbConfig;

use super::objects::edit_working;
use super::partitions::Partition;
use super::{ApiError, AppState, Caller, parse_body};
use crate::auth::Role;

pub async fn get(
    caller: Caller,
    State(state): State<AppState>,
    Partition(partition): Partition,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    match state.store.working_config(&partition).await?.gslb {
        Some(gslb) => Ok(Json(gslb).into_response()),
        None => Err(ApiError::NotFound(
            "this partition's config has no GSLB section".into(),
        )),
    }
}

pub async fn put(
    caller: Caller,
    State(state): State<AppState>,
    Partition(partition): Partition,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Editor)?;
    let mut gslb: GslbConfig = parse_body(&body)?;
    // Releases number themselves; a version here would only mislead.
    gslb.version = 0;
    edit_working(&state, &partition, |working| {
        working.gslb = Some(gslb.clone());
        Ok(())
    })
    .await?;
    Ok(Json(gslb).into_response())
}

pub async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    Partition(partition): Partition,
) -> Result<Response, ApiError> {
    caller.require(Role::Editor)?;
    let existed = edit_working(&state, &partition, |working| {
        Ok(working.gslb.take().is_some())
    })
    .await?;
    if existed {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound(
            "this partition's config has no GSLB section".into(),
        ))
    }
}
