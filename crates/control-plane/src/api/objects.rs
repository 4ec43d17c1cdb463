//! The working config: whole, and object by object (applications, upstreams, certificates,
//! lua_modules, shared_dicts, each by name).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use outpost_proto::pb::{self, Config};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::partitions::Partition;
use super::{ApiError, AppState, Caller, parse_body};
use crate::auth::Role;
use crate::raft::{Applied, Command, Refusal};
use crate::store::{config_to_json, now_ms};

/// How many times an edit is re-run when other edits keep landing between its read and its
/// write.
const EDIT_ATTEMPTS: usize = 8;

/// A named object in one of the config's collections.
trait Object: Serialize + DeserializeOwned + Clone + Send + 'static {
    fn name(&self) -> &str;
    fn set_name(&mut self, name: String);
    fn list(config: &Config) -> &Vec<Self>;
    fn list_mut(config: &mut Config) -> &mut Vec<Self>;
}

macro_rules! object {
    ($ty:ty, $field:ident) => {
        impl Object for $ty {
            fn name(&self) -> &str {
                &self.name
            }
            fn set_name(&mut self, name: String) {
                self.name = name;
            }
            fn list(config: &Config) -> &Vec<Self> {
                &config.$field
            }
            fn list_mut(config: &mut Config) -> &mut Vec<Self> {
                &mut config.$field
            }
        }
    };
}

object!(pb::Application, applications);
object!(pb::Upstream, upstreams);
object!(pb::Certificate, certificates);
object!(pb::LuaModule, lua_modules);
object!(pb::SharedDict, shared_dicts);

/// Calls `$f::<T>($args)` with the type of the collection named `$kind`.
macro_rules! by_kind {
    ($kind:expr, $f:ident ( $($arg:expr),* )) => {
        match $kind.as_str() {
            "applications" => $f::<pb::Application>($($arg),*).await,
            "upstreams" => $f::<pb::Upstream>($($arg),*).await,
            "certificates" => $f::<pb::Certificate>($($arg),*).await,
            "lua_modules" => $f::<pb::LuaModule>($($arg),*).await,
            "shared_dicts" => $f::<pb::SharedDict>($($arg),*).await,
            other => Err(ApiError::NotFound(format!(
                "no collection {other:?}: use applications, upstreams, certificates, \
                 lua_modules or shared_dicts"
            ))),
        }
    };
}

/// Applies `change` to the latest working config, validates the result as a whole and stores
/// it through the log. The write names the revision it started from; if another edit landed
/// in between, the change is re-run on the new state, so no concurrent edit is lost. Edits
/// through this node take turns, so only edits through other nodes can collide.
pub(super) async fn edit_working<R>(
    state: &AppState,
    partition: &str,
    mut change: impl FnMut(&mut Config) -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    let _turn = state.edits.lock().await;
    for attempt in 0..EDIT_ATTEMPTS {
        if attempt > 0 {
            // Another node's edit won: step aside a random moment so the next try can win.
            let pause = rand::random_range(5..50 * attempt as u64);
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
        state.cluster.read_barrier().await?;
        let (mut config, revision) = state.store.working(partition).await?;
        let result = change(&mut config)?;
        outpost_proto::validate(&config).map_err(|e| ApiError::Invalid(e.0))?;
        let lua_errors = crate::lua_check::check(&config);
        if !lua_errors.is_empty() {
            return Err(ApiError::Invalid(lua_errors));
        }
        config.version = 0;
        let command = Command::SetWorking {
            partition: partition.to_string(),
            base_revision: revision,
            config_json: config_to_json(&config)?,
            at_ms: now_ms(),
        };
        match state.cluster.write(command).await? {
            Applied::Revision(_) => return Ok(result),
            Applied::Refused(Refusal::Conflict { .. }) => continue,
            other => return Err(ApiError::unexpected(other)),
        }
    }
    Err(ApiError::Conflict(
        "the working config kept changing under this edit: try again".into(),
    ))
}

pub async fn get_config(
    caller: Caller,
    State(state): State<AppState>,
    Partition(partition): Partition,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    Ok(Json(state.store.working_config(&partition).await?).into_response())
}

pub async fn put_config(
    caller: Caller,
    State(state): State<AppState>,
    Partition(partition): Partition,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Editor)?;
    let config: Config = parse_body(&body)?;
    edit_working(&state, &partition, |working| {
        *working = config.clone();
        Ok(())
    })
    .await?;
    Ok(Json(state.store.working_config(&partition).await?).into_response())
}

pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Partition(partition): Partition,
    Path(kind): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    by_kind!(kind, list_of(&state, &partition))
}

async fn list_of<T: Object>(state: &AppState, partition: &str) -> Result<Response, ApiError> {
    let config = state.store.working_config(partition).await?;
    Ok(Json(T::list(&config)).into_response())
}

pub async fn get_one(
    caller: Caller,
    State(state): State<AppState>,
    Partition(partition): Partition,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require(Role::Viewer)?;
    by_kind!(kind, get_of(&state, &partition, &kind, &name))
}

async fn get_of<T: Object>(
    state: &AppState,
    partition: &str,
    kind: &str,
    name: &str,
) -> Result<Response, ApiError> {
    let config = state.store.working_config(partition).await?;
    match T::list(&config).iter().find(|o| o.name() == name) {
        Some(o) => Ok(Json(o).into_response()),
        None => Err(not_found(kind, name)),
    }
}

fn not_found(kind: &str, name: &str) -> ApiError {
    ApiError::NotFound(format!("{kind}/{name} does not exist"))
}

/// `POST /api/v1/config/{kind}`: adds an object; 409 if the name is taken.
pub async fn create(
    caller: Caller,
    State(state): State<AppState>,
    Partition(partition): Partition,
    Path(kind): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Editor)?;
    by_kind!(kind, create_of(&state, &partition, &kind, &body))
}

async fn create_of<T: Object>(
    state: &AppState,
    partition: &str,
    kind: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let object: T = parse_body(body)?;
    edit_working(state, partition, |config| {
        if T::list(config).iter().any(|o| o.name() == object.name()) {
            return Err(ApiError::Conflict(format!(
                "{kind}/{} already exists: PUT it to replace it",
                object.name()
            )));
        }
        T::list_mut(config).push(object.clone());
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(object)).into_response())
}

/// `PUT /api/v1/config/{kind}/{name}`: creates or replaces the object. The body's `name` may be
/// left out; if given it must match the path.
pub async fn put_one(
    caller: Caller,
    State(state): State<AppState>,
    Partition(partition): Partition,
    Path((kind, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require(Role::Editor)?;
    by_kind!(kind, put_of(&state, &partition, &name, &body))
}

async fn put_of<T: Object>(
    state: &AppState,
    partition: &str,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let mut object: T = parse_body(body)?;
    if object.name().is_empty() {
        object.set_name(name.to_string());
    } else if object.name() != name {
        return Err(ApiError::BadRequest(format!(
            "name: the body says {:?} but the path says {name:?}",
            object.name()
        )));
    }
    let status = edit_working(state, partition, |config| {
        let list = T::list_mut(config);
        Ok(match list.iter_mut().find(|o| o.name() == name) {
            Some(existing) => {
                *existing = object.clone();
                StatusCode::OK
            }
            None => {
                list.push(object.clone());
                StatusCode::CREATED
            }
        })
    })
    .await?;
    Ok((status, Json(object)).into_response())
}

/// `DELETE /api/v1/config/{kind}/{name}`: refused with 422 if something still refers to it.
pub async fn delete_one(
    caller: Caller,
    State(state): State<AppState>,
    Partition(partition): Partition,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require(Role::Editor)?;
    by_kind!(kind, delete_of(&state, &partition, &kind, &name))
}

async fn delete_of<T: Object>(
    state: &AppState,
    partition: &str,
    kind: &str,
    name: &str,
) -> Result<Response, ApiError> {
    edit_working(state, partition, |config| {
        let list = T::list_mut(config);
        let before = list.len();
        list.retain(|o| o.name() != name);
        if list.len() == before {
            return Err(not_found(kind, name));
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
