//! `ngx.location.capture` and `ngx.location.capture_multi`: subrequests through the host's
//! pipeline. The calling coroutine waits; the subrequests run as tasks of their own, all at
//! once for `capture_multi`. Arguments, options and error words follow lua-nginx-module
//! 0.10.23 (checked against Debian's nginx with `tests/reference/capture.nginx.conf`).

use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderValue, TRANSFER_ENCODING};
use http::{HeaderMap, Method};
use mlua::{Lua, MultiValue, Table, Value};

use crate::Phase;
use crate::numfmt::fmt_g14;
use crate::request::{self, RequestState};
use crate::subrequest::{
    Captured, MAX_DEPTH, Subrequest, SubrequestRunner, display_name, method_of, split_safe_uri,
};

/// The registry key of the metatable every `res.header` gets.
const HEADER_MT: &str = "outpost.capture.header_mt";

/// Variables nginx knows but will not let `vars` set (`variable "uri" not changeable`).
const BUILT_IN: &[&str] = &[
    "uri",
    "document_uri",
    "query_string",
    "is_args",
    "request_uri",
    "request",
    "request_method",
    "scheme",
    "https",
    "host",
    "server_port",
    "server_addr",
    "server_protocol",
    "remote_addr",
    "remote_port",
    "binary_remote_addr",
    "request_id",
    "content_length",
    "content_type",
    "status",
    "request_time",
    "msec",
    "request_body",
];

/// Where lua-nginx-module allows subrequests.
const CAPTURE_PHASES: &[Phase] = &[Phase::Rewrite, Phase::Access, Phase::Content];

fn err(msg: impl Into<String>) -> mlua::Error {
    mlua::Error::runtime(msg.into())
}

/// One subrequest's options, checked.
#[derive(Default)]
struct Options {
    method: Option<Method>,
    body: Option<Bytes>,
    args: Option<String>,
    vars: Vec<(String, String)>,
    copy_all_vars: bool,
    share_all_vars: bool,
    always_forward_body: bool,
    ctx: Option<Table>,
}

/// A string or a number (formatted as Lua prints it), as `lua_tolstring` accepts.
fn string_like(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Integer(i) => Some(fmt_g14(*i as f64).into_bytes()),
        Value::Number(n) => Some(fmt_g14(*n).into_bytes()),
        _ => None,
    }
}

fn flag(opts: &Table, name: &str) -> mlua::Result<bool> {
    match opts.get::<Value>(name)? {
        Value::Nil => Ok(false),
        Value::Boolean(b) => Ok(b),
        _ => Err(err(format!("Bad {name} option value"))),
    }
}

fn options(lua: &Lua, index: usize, v: Value) -> mlua::Result<Options> {
    let opts = match v {
        Value::Nil => return Ok(Options::default()),
        Value::Table(t) => t,
        other => {
            return Err(err(format!(
                "expecting table as the 2nd argument for subrequest {index}, but got {}",
                other.type_name()
            )));
        }
    };
    let args = match opts.get::<Value>("args")? {
        Value::Nil => None,
        Value::Table(t) => Some(super::codec::encode_args(lua, &t)?),
        v => match string_like(&v) {
            Some(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            None => return Err(err("Bad args option value")),
        },
    };
    let mut vars = Vec::new();
    match opts.get::<Value>("vars")? {
        Value::Nil => {}
        Value::Table(t) => {
            for pair in t.pairs::<Value, Value>() {
                let (k, v) = pair?;
                let Value::String(k) = k else {
                    return Err(err(
                        "attempt to use a non-string key in the \"vars\" option table",
                    ));
                };
                let Some(v) = string_like(&v) else {
                    return Err(err(format!(
                        "attempt to use bad variable value type {}",
                        v.type_name()
                    )));
                };
                vars.push((
                    k.to_str()?.to_ascii_lowercase(),
                    String::from_utf8_lossy(&v).into_owned(),
                ));
            }
        }
        _ => return Err(err("Bad vars option value")),
    }
    let share_all_vars = flag(&opts, "share_all_vars")?;
    let copy_all_vars = flag(&opts, "copy_all_vars")?;
    // Any value: lua_toboolean.
    let always_forward_body = !matches!(
        opts.get::<Value>("always_forward_body")?,
        Value::Nil | Value::Boolean(false)
    );
    let method = match opts.get::<Value>("method")? {
        Value::Nil => None,
        Value::Integer(i) => Some(method_bits(i)?),
        Value::Number(n) => Some(method_bits(n as i64)?),
        _ => return Err(err("Bad http request method")),
    };
    let body = match opts.get::<Value>("body")? {
        Value::Nil => None,
        v => match string_like(&v) {
            Some(b) => Some(Bytes::from(b)),
            None => return Err(err("Bad http request body")),
        },
    };
    let ctx = match opts.get::<Value>("ctx")? {
        Value::Nil => None,
        Value::Table(t) => Some(t),
        other => {
            return Err(err(format!(
                "Bad ctx option value type {}, expected a Lua table",
                other.type_name()
            )));
        }
    };
    Ok(Options {
        method,
        body,
        args,
        vars,
        copy_all_vars,
        share_all_vars,
        always_forward_body,
        ctx,
    })
}

fn method_bits(bits: i64) -> mlua::Result<Method> {
    method_of(bits).ok_or_else(|| {
        tracing::error!(target: "lua", "unsupported HTTP method: {bits}");
        err("failed to adjust the subrequest: -1")
    })
}

/// What a subrequest to `uri` with `opts` is, from its parent `r`. `Ok(None)`: a URI that is
/// not a path, which nginx answers 404 (no location matches it) without running anything.
fn build(
    lua: &Lua,
    r: &RequestState,
    uri: &[u8],
    o: Options,
) -> mlua::Result<Option<(Subrequest, bool)>> {
    let shown = String::from_utf8_lossy(uri);
    let Some((path, query)) = split_safe_uri(uri) else {
        return Err(err(format!("unsafe uri in argument #1: {shown}")));
    };
    if r.subrequest_depth >= MAX_DEPTH {
        tracing::error!(target: "lua", "lua subrequests cycle while processing \"{shown}\"");
        return Err(err("failed to issue subrequest: -1"));
    }
    for (name, _) in &o.vars {
        if name != "args" && !r.declared.contains_key(name) {
            return Err(if BUILT_IN.contains(&name.as_str()) {
                tracing::error!(target: "lua", "variable \"{name}\" not changeable");
                err("failed to adjust the subrequest: 500")
            } else {
                tracing::error!(target: "lua",
                    "variable \"{name}\" cannot be assigned a value (maybe you forgot to define it first?)");
                err("failed to adjust the subrequest: -1")
            });
        }
    }
    if !path.starts_with(b"/") {
        return Ok(None);
    }
    let mut args = query.map(|q| String::from_utf8_lossy(q).into_owned());
    // The URI's own arguments, then the option's, joined as nginx joins them.
    if let Some(extra) = o.args.filter(|a| !a.is_empty()) {
        args = Some(match args.filter(|a| !a.is_empty()) {
            Some(a) => format!("{a}&{extra}"),
            None => extra,
        });
    }
    let mut vars = Vec::new();
    for (name, value) in o.vars {
        if name == "args" {
            args = Some(value);
        } else {
            vars.push((name, value));
        }
    }
    let method = o.method.unwrap_or(Method::GET);
    let (headers, body) = request_body(r, &method, o.body, o.always_forward_body);
    let declared = (o.copy_all_vars || o.share_all_vars).then(|| r.declared.clone());
    let ctx = match o.ctx {
        Some(t) => Some(lua.create_registry_value(t)?),
        None => None,
    };
    Ok(Some((
        Subrequest {
            method,
            path: String::from_utf8_lossy(path).into_owned(),
            args,
            headers,
            body,
            depth: r.subrequest_depth + 1,
            budget: r.budget.clone(),
            ctx,
            declared,
            vars,
        },
        o.share_all_vars,
    )))
}

/// The subrequest's headers and body, as `ngx_http_lua_adjust_subrequest` decides: the
/// `body` option; else none for methods other than PUT and POST (unless
/// `always_forward_body`); else the parent's body, if it was read.
fn request_body(
    r: &RequestState,
    method: &Method,
    body: Option<Bytes>,
    always_forward_body: bool,
) -> (HeaderMap, Option<Bytes>) {
    let mut headers = r.headers.clone();
    let body = match body {
        Some(b) => Some(b),
        None if !always_forward_body && *method != Method::PUT && *method != Method::POST => None,
        None => r.body.clone(),
    };
    headers.remove(TRANSFER_ENCODING);
    headers.remove(CONTENT_LENGTH);
    if let Some(b) = &body {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(b.len()));
    }
    (headers, body)
}

/// `res` for one captured response: `status`, `header`, `body`, `truncated`.
fn result(lua: &Lua, c: &Captured) -> mlua::Result<Table> {
    let res = lua.create_table()?;
    res.set("status", c.status)?;
    let header = lua.create_table()?;
    for name in c.headers.keys() {
        let values: Vec<&HeaderValue> = c.headers.get_all(name).iter().collect();
        let key = display_name(name.as_str());
        if let [one] = values.as_slice() {
            header.raw_set(key, lua.create_string(one.as_bytes())?)?;
        } else {
            let list = lua.create_table()?;
            for v in values {
                list.raw_push(lua.create_string(v.as_bytes())?)?;
            }
            header.raw_set(key, list)?;
        }
    }
    header.set_metatable(Some(lua.named_registry_value::<Table>(HEADER_MT)?))?;
    res.set("header", header)?;
    res.set("body", lua.create_string(&c.body)?)?;
    res.set("truncated", c.truncated)?;
    Ok(res)
}

/// Issues every `(uri, options)` at once and waits for all of them.
async fn capture_all(lua: &Lua, items: Vec<(Value, Value)>) -> mlua::Result<MultiValue> {
    request::allow_in(CAPTURE_PHASES)?;
    let mut built = Vec::with_capacity(items.len());
    for (index, (uri, opts)) in items.into_iter().enumerate() {
        let o = options(lua, index, opts)?;
        let Some(uri) = string_like(&uri) else {
            return Err(err(format!(
                "bad argument #1 to 'capture' (string expected, got {})",
                uri.type_name()
            )));
        };
        built.push(request::with(|r| build(lua, r, &uri, o))?);
    }
    let runner: Rc<dyn SubrequestRunner> = request::with(|r| {
        r.subrequests
            .as_ref()
            .and_then(std::rc::Weak::upgrade)
            .ok_or_else(|| err("subrequests are not available here"))
    })?;
    let mut shared = Vec::new();
    let mut waits = Vec::new();
    for b in built {
        match b {
            Some((sub, share)) => {
                shared.push(share);
                waits.push(Some(runner.capture(sub)));
            }
            None => {
                shared.push(false);
                waits.push(None);
            }
        }
    }
    let captured = futures_util::future::join_all(waits.into_iter().map(|w| async move {
        match w {
            Some(f) => f.await,
            None => not_found(),
        }
    }))
    .await;
    // A subrequest spends the main request's budget: past it, the caller stops too.
    if let Some(why) = request::with(|r| Ok(r.budget.exceeded()))? {
        return Err(mlua::Error::external(why));
    }
    let mut out = MultiValue::new();
    for (c, share) in captured.into_iter().zip(shared) {
        if share {
            request::with(|r| {
                r.declared.extend(c.declared.clone());
                Ok(())
            })?;
        }
        out.push_back(Value::Table(result(lua, &c)?));
    }
    Ok(out)
}

/// nginx's answer for a URI no location matches (one not starting with `/`).
fn not_found() -> Captured {
    Captured {
        status: 404,
        headers: HeaderMap::new(),
        body: Bytes::new(),
        truncated: true,
        declared: HashMap::new(),
    }
}

/// One `{uri, options?}` of `capture_multi`, or `capture`'s own arguments.
fn item(index: usize, t: &Table) -> mlua::Result<(Value, Value)> {
    let n = t.raw_len();
    if n != 1 && n != 2 {
        return Err(err(format!(
            "query argument {index} expecting one or two arguments"
        )));
    }
    Ok((t.raw_get(1)?, t.raw_get(2)?))
}

pub fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    // `res.header` looks names up without regard to case (the edge keeps them in lower
    // case; nginx keeps what the handler wrote).
    let mt: Table = lua
        .load(
            r#"
            local lower, type, pairs = string.lower, type, pairs
            return { __index = function(t, k)
                if type(k) ~= "string" then return nil end
                k = lower(k)
                for name, v in pairs(t) do
                    if lower(name) == k then return v end
                end
            end }
            "#,
        )
        .set_name("=ngx.location")
        .eval()?;
    lua.set_named_registry_value(HEADER_MT, mt)?;
    let location = lua.create_table()?;
    location.set(
        "capture",
        lua.create_async_function(|lua, args: MultiValue| async move {
            if args.is_empty() || args.len() > 2 {
                return Err(err("expecting one or two arguments"));
            }
            let t = lua.create_table()?;
            for (i, v) in args.into_iter().enumerate() {
                t.raw_set(i + 1, v)?;
            }
            let one = item(0, &t)?;
            let mut out = capture_all(&lua, vec![one]).await?;
            Ok(out.pop_front().unwrap_or(Value::Nil))
        })?,
    )?;
    location.set(
        "capture_multi",
        lua.create_async_function(|lua, args: MultiValue| async move {
            let list = match args.into_iter().next() {
                Some(Value::Table(t)) => t,
                other => {
                    return Err(err(format!(
                        "bad argument #1 to 'capture_multi' (table expected, got {})",
                        other.map_or("no value", |v| v.type_name())
                    )));
                }
            };
            let n = list.raw_len();
            if n == 0 {
                return Err(err("at least one subrequest should be specified"));
            }
            let mut items = Vec::with_capacity(n);
            for i in 1..=n {
                match list.raw_get::<Value>(i)? {
                    Value::Table(t) => items.push(item(i - 1, &t)?),
                    other => {
                        return Err(err(format!(
                            "the query argument {} is not a table, but a {}",
                            i - 1,
                            other.type_name()
                        )));
                    }
                }
            }
            capture_all(&lua, items).await
        })?,
    )?;
    ngx.set("location", location)?;
    Ok(())
}
