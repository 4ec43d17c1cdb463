//! `ngx.exec`: an internal redirect, as nginx's `ngx_http_internal_redirect`. The request goes
//! through the pipeline again with the new path and query (same method, headers and body, a
//! fresh `ngx.ctx`); `$request_uri`, the access log and `ngx.req.is_internal()` see it as the
//! redirect of the client's request. nginx stops a request after 10 redirects.

use http::{HeaderMap, Response};

use super::body::ResponseBody;

/// What a redirected request carries, in its `http::Extensions`.
#[derive(Debug, Clone)]
pub struct Redirected {
    /// Internal redirects so far.
    pub hops: u32,
    /// The target the client sent (`$request_uri`).
    pub request_uri: String,
}

/// nginx's `NGX_HTTP_MAX_URI_CHANGES`: the 11th change is refused.
const MAX_REDIRECTS: u32 = 10;

/// A redirect nginx refuses: a cycle, or a named location (the edge has none). The request
/// ends with [`refused`]'s 500; the error log says which.
#[derive(Debug)]
pub struct Refused;

/// nginx's own 500 page, for a [`Refused`] redirect.
pub fn refused() -> Response<ResponseBody> {
    super::lua_phase::to_response(outpost_lua::status_response(500, &HeaderMap::new()))
}

/// Points `parts` at `path` (and `args`) for the pipeline to serve again.
pub fn redirect(
    parts: &mut http::request::Parts,
    scheme: &str,
    host: &str,
    path: &str,
    args: Option<&str>,
) -> Result<(), Refused> {
    if path.starts_with('@') {
        tracing::error!(location = path, "could not find named location");
        return Err(Refused);
    }
    let before = parts.extensions.get::<Redirected>().cloned();
    let hops = before.as_ref().map_or(0, |r| r.hops) + 1;
    if hops > MAX_REDIRECTS {
        tracing::error!(
            target_path = path,
            "rewrite or internal redirection cycle while internally redirecting"
        );
        return Err(Refused);
    }
    let request_uri = match before {
        Some(r) => r.request_uri,
        None => parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |pq| pq.to_string()),
    };
    let target = match args {
        Some(a) => format!("{path}?{a}"),
        None => path.to_string(),
    };
    parts.uri = super::subrequest::target_uri(scheme, host, &target);
    parts.extensions.insert(Redirected { hops, request_uri });
    Ok(())
}
