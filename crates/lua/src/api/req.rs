//! `ngx.req.*` and `ngx.var`.

use std::borrow::Cow;

use http::header::{HeaderName, HeaderValue};
use mlua::{Lua, Table, Value};

use super::codec::{decode_args, unescape};
use crate::request::{self, RequestState};

pub fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let req = lua.create_table()?;
    req.set(
        "get_method",
        lua.create_function(|_, ()| request::with(|r| Ok(r.method.as_str().to_string())))?,
    )?;
    req.set(
        "set_method",
        lua.create_function(|_, id: i64| {
            let method = crate::subrequest::method_of(id)
                .ok_or_else(|| mlua::Error::runtime(format!("unsupported HTTP method: {id}")))?;
            request::with(|r| {
                r.method = method;
                Ok(())
            })
        })?,
    )?;
    req.set(
        "http_version",
        lua.create_function(|_, ()| request::with(|r| Ok(r.http_version)))?,
    )?;
    // Subrequests and internal redirects are internal requests in nginx.
    req.set(
        "is_internal",
        lua.create_function(|_, ()| request::with(|r| Ok(r.subrequest_depth > 0 || r.redirected)))?,
    )?;
    req.set(
        "start_time",
        lua.create_function(|_, ()| {
            request::with(|r| {
                let now = std::time::SystemTime::now();
                let wall = now.checked_sub(r.start_time.elapsed()).unwrap_or(now);
                Ok(wall
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0))
            })
        })?,
    )?;
    req.set(
        "get_headers",
        lua.create_function(|lua, (max, raw): (Option<i64>, Option<bool>)| {
            let t = lua.create_table()?;
            let mut truncated = false;
            request::with(|r| {
                let max = max.unwrap_or(100);
                let raw = raw.unwrap_or(false);
                // The client's own case, when the head is at hand and no script changed it.
                let fields = match &r.raw_head {
                    Some(head) if raw && !r.headers_changed => head_fields(head),
                    _ => (r.headers.iter())
                        .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
                        .collect(),
                };
                // nginx (`underscores_in_headers off`) ignores names with '_' as invalid.
                let sent = fields.into_iter().filter(|(k, _)| !k.contains(&b'_'));
                for (n, (k, v)) in sent.enumerate() {
                    if max > 0 && n as i64 >= max {
                        truncated = true;
                        break;
                    }
                    let key = if raw {
                        String::from_utf8_lossy(k).into_owned()
                    } else {
                        String::from_utf8_lossy(k).to_ascii_lowercase()
                    };
                    let val = lua.create_string(v)?;
                    match t.raw_get::<Value>(key.as_str())? {
                        Value::Nil => t.raw_set(key, val)?,
                        Value::Table(list) => list.raw_push(val)?,
                        prev => {
                            let list = lua.create_table()?;
                            list.raw_push(prev)?;
                            list.raw_push(val)?;
                            t.raw_set(key, list)?;
                        }
                    }
                }
                Ok(())
            })?;
            fold_header_lookups(lua, &t)?;
            Ok((t, truncated.then_some("truncated")))
        })?,
    )?;
    req.set(
        "set_header",
        lua.create_function(|_, (name, value): (String, Value)| set_header(&name, value))?,
    )?;
    req.set(
        "clear_header",
        lua.create_function(|_, name: String| set_header(&name, Value::Nil))?,
    )?;
    req.set(
        "get_uri_args",
        lua.create_function(|lua, max: Option<i64>| {
            let args = request::with(|r| Ok(r.args.clone().unwrap_or_default()))?;
            decode_args(lua, args.as_bytes(), max.unwrap_or(100))
        })?,
    )?;
    req.set(
        "set_uri_args",
        lua.create_function(|lua, v: Value| {
            let args = match v {
                Value::String(s) => s.to_str()?.to_string(),
                Value::Table(t) => super::codec::encode_args(lua, &t)?,
                _ => {
                    return Err(mlua::Error::runtime(
                        "bad argument #1 to 'set_uri_args' (string or table expected)",
                    ));
                }
            };
            request::with(|r| {
                r.args = (!args.is_empty()).then_some(args);
                r.uri_changed = true;
                Ok(())
            })
        })?,
    )?;
    req.set(
        "set_uri",
        lua.create_function(|_, (uri, jump): (String, Option<bool>)| {
            // Jumping to the new location is a rewrite-phase thing (the request goes through
            // the location search again); elsewhere OpenResty refuses the call.
            if jump == Some(true) {
                request::allow_in(&[crate::Phase::Rewrite])?;
            }
            if uri.is_empty() {
                return Err(mlua::Error::runtime("attempt to use zero-length uri"));
            }
            request::with(|r| {
                r.uri = uri;
                r.uri_changed = true;
                Ok(())
            })
        })?,
    )?;
    super::req_body::install(lua, &req)?;
    req.set("discard_body", lua.create_function(|_, ()| Ok(()))?)?;
    req.set(
        "raw_header",
        lua.create_function(|lua, no_request_line: Option<bool>| {
            request::with(|r| lua.create_string(raw_header(r, no_request_line.unwrap_or(false))))
        })?,
    )?;
    req.set(
        "get_body_file",
        lua.create_function(|_, ()| Ok(Value::Nil))?,
    )?;
    req.set(
        "get_body_data",
        lua.create_function(|lua, ()| {
            request::with(|r| match &r.body {
                Some(b) if r.body_read && !b.is_empty() => Ok(Value::String(lua.create_string(b)?)),
                _ => Ok(Value::Nil),
            })
        })?,
    )?;
    req.set(
        "set_body_data",
        lua.create_function(|_, data: mlua::LuaString| {
            request::with(|r| {
                let body = bytes::Bytes::copy_from_slice(&data.as_bytes());
                // As nginx: the request now says how long its new body is.
                r.headers
                    .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                r.headers.remove(http::header::TRANSFER_ENCODING);
                r.headers_changed = true;
                r.body = Some(body);
                r.body_replaced = true;
                Ok(())
            })
        })?,
    )?;
    req.set(
        "get_post_args",
        lua.create_function(|lua, max: Option<i64>| {
            let body = request::with(|r| {
                if !r.body_read {
                    return Err(mlua::Error::runtime("request body not read"));
                }
                Ok(r.body.clone().unwrap_or_default())
            })?;
            decode_args(lua, &body, max.unwrap_or(100))
        })?,
    )?;
    ngx.set("req", req)?;

    let var = lua.create_table()?;
    let mt = lua.create_table()?;
    let full_index = lua.create_function(|lua, (_, name): (Table, mlua::LuaString)| {
        // nginx variable names are case-insensitive; most are read in lower case already.
        let bytes = name.as_bytes();
        let lower = match bytes.iter().any(u8::is_ascii_uppercase) {
            true => std::borrow::Cow::Owned(bytes.to_ascii_lowercase()),
            false => std::borrow::Cow::Borrowed(&bytes[..]),
        };
        let Ok(name) = std::str::from_utf8(&lower) else {
            return Ok(Value::Nil);
        };
        request::with(|r| match variable(r, name) {
            Some(v) => Ok(Value::String(lua.create_string(v)?)),
            None => Ok(Value::Nil),
        })
    })?;
    mt.set("__index", super::var_fast::index(lua, full_index)?)?;
    mt.set(
        "__newindex",
        lua.create_function(|_, (_, name, value): (Table, String, Value)| {
            let value = match value {
                Value::Nil => String::new(),
                Value::String(s) => s.to_str()?.to_string(),
                Value::Integer(i) => i.to_string(),
                Value::Number(n) => crate::numfmt::fmt_g14(n),
                _ => return Err(mlua::Error::runtime("bad variable value")),
            };
            request::with(|r| match name.as_str() {
                "args" => {
                    r.args = (!value.is_empty()).then_some(value);
                    r.uri_changed = true;
                    Ok(())
                }
                _ if r.declared.contains_key(&name) => {
                    r.declared.insert(name, value);
                    Ok(())
                }
                _ => Err(mlua::Error::runtime(format!(
                    "variable \"{name}\" not found for writing; maybe it is a built-in variable that is not changeable or you forgot to use \"set ${name} '';\" in the config file to define it first"
                ))),
            })
        })?,
    )?;
    var.set_metatable(Some(mt))?;
    ngx.set("var", var)?;
    Ok(())
}

/// The header fields of a request head as the client sent them: name and value (trimmed), in
/// order; the request line is skipped.
fn head_fields(head: &[u8]) -> Vec<(&[u8], &[u8])> {
    head.split(|&b| b == b'\n')
        .skip(1)
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            Some((&line[..colon], line[colon + 1..].trim_ascii()))
        })
        .collect()
}

/// The request head as text, as `ngx.req.raw_header` gives it: the client's bytes when the
/// HTTP layer kept them (HTTP/1.1), else rebuilt from the header map with names in canonical
/// case (`X-Foo`), the case the client used being lost.
fn raw_header(r: &RequestState, no_request_line: bool) -> Vec<u8> {
    if let Some(head) = &r.raw_head {
        let start = match no_request_line {
            true => head.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1),
            false => 0,
        };
        return head[start..].to_vec();
    }
    let mut out = Vec::with_capacity(256);
    if !no_request_line {
        let version = match r.http_version {
            1.0 => "1.0",
            2.0 => "2.0",
            _ => "1.1",
        };
        out.extend_from_slice(
            format!("{} {} HTTP/{version}\r\n", r.original_method, r.request_uri).as_bytes(),
        );
    }
    for (name, value) in &r.headers {
        let mut upper = true;
        for c in name.as_str().chars() {
            out.push(if upper { c.to_ascii_uppercase() } else { c } as u8);
            upper = c == '-';
        }
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `ngx.req.set_header`/`clear_header`: unlike `ngx.header`, the name is taken as it is
/// (`X_Foo` is not `X-Foo`), as in OpenResty.
fn set_header(name: &str, value: Value) -> mlua::Result<()> {
    let hn = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| mlua::Error::runtime(format!("invalid header name \"{name}\"")))?;
    request::with(|r| {
        r.headers_changed = true;
        r.headers.remove(&hn);
        let mut add = |v: &Value| -> mlua::Result<()> {
            let mut bytes = Vec::new();
            super::output::render(v, &mut bytes, "set_header", 2)?;
            let hv = HeaderValue::from_bytes(&bytes)
                .map_err(|_| mlua::Error::runtime("invalid header value"))?;
            r.headers.append(hn.clone(), hv);
            Ok(())
        };
        match &value {
            Value::Nil => {}
            Value::Table(t) => {
                for v in t.clone().sequence_values::<Value>() {
                    add(&v?)?;
                }
            }
            v => add(v)?,
        }
        Ok(())
    })
}

/// nginx variables by name: the common set, `http_*`, `arg_*`, `cookie_*`, declared ones.
pub fn variable<'r>(r: &'r RequestState, name: &str) -> Option<Cow<'r, [u8]>> {
    // Borrowed from the request where it holds the text; made (owned) otherwise.
    let s = |v: &'r str| Some(Cow::Borrowed(v.as_bytes()));
    let o = |v: String| Some(Cow::Owned(v.into_bytes()));
    match name {
        "uri" | "document_uri" => s(&r.uri),
        "args" | "query_string" => r.args.as_deref().and_then(s),
        "is_args" => s(if r.args.is_some() { "?" } else { "" }),
        "request_uri" => s(&r.request_uri),
        // The line as the client sent it: rewrites of the URI do not show here.
        "request" => o(format!(
            "{} {} {}",
            r.original_method,
            r.request_uri,
            protocol(r)
        )),
        "request_method" => s(r.method.as_str()),
        "scheme" => s(r.scheme),
        "https" => s(if r.scheme == "https" { "on" } else { "" }),
        "host" => s(&r.host),
        "server_name" => s(r.server_name.as_deref().unwrap_or("")),
        "server_port" => o(r.server.port().to_string()),
        "server_addr" => o(r.server.ip().to_string()),
        "server_protocol" => s(protocol(r)),
        "remote_addr" => match &r.client_text {
            Some(text) => Some(Cow::Borrowed(text.as_bytes())),
            None => o(r.client.ip().to_string()),
        },
        "remote_port" => o(r.client.port().to_string()),
        "binary_remote_addr" => Some(Cow::Owned(match r.client.ip() {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        })),
        "request_id" => Some(Cow::Borrowed(r.request_id.value().as_bytes())),
        "content_length" => r
            .headers
            .get(http::header::CONTENT_LENGTH)
            .map(|v| Cow::Borrowed(v.as_bytes())),
        "content_type" => r
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| Cow::Borrowed(v.as_bytes())),
        "status" => o(r.status.unwrap_or(200).to_string()),
        "request_time" => o(format!("{:.3}", r.start_time.elapsed().as_secs_f64())),
        "msec" => o(format!(
            "{:.3}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        )),
        "request_body" => r.body.as_ref().map(|b| Cow::Borrowed(&b[..])),
        _ => {
            if let Some(h) = name.strip_prefix("http_") {
                let hn = h.replace('_', "-");
                let values: Vec<&[u8]> = r
                    .headers
                    .get_all(hn.as_str())
                    .iter()
                    .map(|v| v.as_bytes())
                    .collect();
                if values.is_empty() {
                    return None;
                }
                // nginx 1.22 joins only Cookie and X-Forwarded-For; others give the first.
                return match hn.as_str() {
                    "cookie" => Some(Cow::Owned(values.join(&b"; "[..]))),
                    "x-forwarded-for" => Some(Cow::Owned(values.join(&b", "[..]))),
                    _ => Some(Cow::Borrowed(values[0])),
                };
            }
            if let Some(a) = name.strip_prefix("arg_") {
                let args = r.args.as_deref()?;
                // As nginx's ngx_http_arg: an argument without '=' has no value to give.
                return args.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    k.eq_ignore_ascii_case(a)
                        .then_some(Cow::Borrowed(v.as_bytes()))
                });
            }
            if let Some(c) = name.strip_prefix("cookie_") {
                return r
                    .headers
                    .get_all(http::header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .find_map(|pair| {
                        let (k, v) = pair.trim().split_once('=')?;
                        (k == c).then_some(Cow::Borrowed(v.as_bytes()))
                    });
            }
            let _ = unescape;
            r.declared.get(name).map(|v| Cow::Borrowed(v.as_bytes()))
        }
    }
}

/// `$server_protocol`: how nginx names the request's HTTP version.
fn protocol(r: &RequestState) -> &'static str {
    if r.http_version >= 2.0 {
        "HTTP/2.0"
    } else if r.http_version == 1.0 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    }
}

/// Makes lookups in a header table fold case and `_` to `-`, as lua-nginx-module's metatable
/// does (the keys themselves are stored lowercase).
pub(crate) fn fold_header_lookups(lua: &Lua, headers: &Table) -> mlua::Result<()> {
    let mt = lua.create_table()?;
    mt.set(
        "__index",
        lua.create_function(|_, (t, k): (Table, String)| {
            let norm = k.to_ascii_lowercase().replace('_', "-");
            if norm == k {
                return Ok(Value::Nil);
            }
            t.raw_get::<Value>(norm)
        })?,
    )?;
    headers.set_metatable(Some(mt))?;
    Ok(())
}
