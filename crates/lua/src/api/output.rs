//! Output and flow: `ngx.say`, `ngx.print`, `ngx.exit`, `ngx.redirect`, `ngx.status`,
//! `ngx.header`, `ngx.flush`, `ngx.eof`.

use http::header::{HeaderName, HeaderValue};
use mlua::{Lua, MultiValue, Table, Value};

use crate::Phase;
use crate::numfmt::fmt_g14;
use crate::request::{self, ExitSignal};

/// The message of an error raised by our Rust functions, as the script would have seen a plain
/// Lua error string: without mlua's "runtime error: " prefix and traceback.
pub fn clean_error(e: &mlua::Error) -> String {
    let root = match e {
        mlua::Error::CallbackError { cause, .. } => return clean_error(cause),
        mlua::Error::WithContext { cause, .. } => return clean_error(cause),
        mlua::Error::RuntimeError(m) => m.clone(),
        mlua::Error::BadArgument { pos, cause, .. } => {
            format!("bad argument #{pos} to '?' ({})", clean_error(cause))
        }
        other => other.to_string(),
    };
    root.split("\nstack traceback:")
        .next()
        .unwrap_or("")
        .to_string()
}

/// Appends a `ngx.say`/`ngx.print` argument as OpenResty renders it.
// `_fname` names the calling function; lua-nginx-module's messages say '?' instead.
pub fn render(v: &Value, out: &mut Vec<u8>, _fname: &str, arg: usize) -> mlua::Result<()> {
    match v {
        Value::String(s) => out.extend_from_slice(&s.as_bytes()),
        // LuaJIT numbers are doubles: an integral one prints with `%.14g` too.
        Value::Integer(i) => out.extend_from_slice(fmt_g14(*i as f64).as_bytes()),
        // Integral values go through `(int32_t)` in lua-nginx-module, so -0 prints as 0.
        Value::Number(n) if *n == 0.0 => out.push(b'0'),
        Value::Number(n) => out.extend_from_slice(fmt_g14(*n).as_bytes()),
        Value::Error(e) => out.extend_from_slice(clean_error(e).as_bytes()),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Nil => out.extend_from_slice(b"nil"),
        Value::LightUserData(u) if u.0.is_null() => out.extend_from_slice(b"null"),
        Value::Table(t) => {
            let n = t.raw_len();
            // Only array tables: a key outside 1..n is an error, as lua-nginx-module has it.
            let keys = t.clone().pairs::<Value, Value>().count();
            if keys != n {
                return Err(mlua::Error::runtime(format!(
                    "bad argument #{arg} to '?' (non-array table found)"
                )));
            }
            for i in 1..=n {
                let v: Value = t.raw_get(i)?;
                match v {
                    Value::Nil | Value::Function(_) | Value::Thread(_) | Value::UserData(_) => {
                        return Err(mlua::Error::runtime(format!(
                            "bad argument #{arg} to '?' (bad data type {} found)",
                            v.type_name()
                        )));
                    }
                    v => render(&v, out, _fname, arg)?,
                }
            }
        }
        other => {
            return Err(mlua::Error::runtime(format!(
                "bad argument #{arg} to '?' (string, number, boolean, nil, ngx.null, or array table expected, but got {})",
                other.type_name()
            )));
        }
    }
    Ok(())
}

/// The exit code `ngx.exec` ends its phase with (nginx's `NGX_DONE`); what the host does next
/// is in `RequestState::exec`.
const EXEC: i64 = -4;

/// Where lua-nginx-module lets a script write the response or read the request body.
pub(crate) const OUTPUT_PHASES: &[Phase] = &[Phase::Rewrite, Phase::Access, Phase::Content];

fn output(args: MultiValue, newline: bool, fname: &'static str) -> mlua::Result<Value> {
    request::allow_in(OUTPUT_PHASES)?;
    request::with(|r| {
        if r.eof {
            return Ok(Value::Integer(1));
        }
        for (i, v) in args.iter().enumerate() {
            render(v, &mut r.output, fname, i + 1)?;
        }
        if newline {
            r.output.push(b'\n');
        }
        if !r.headers_sent {
            // The status goes out with the first output: reading it now gives what was sent.
            r.status = Some(r.status.filter(|s| *s != 0).unwrap_or(200));
        }
        r.headers_sent = true;
        Ok(Value::Integer(1))
    })
}

pub fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let (say, print) = super::output_fast::functions(
        lua,
        lua.create_function(|_, a: MultiValue| output(a, true, "say"))?,
        lua.create_function(|_, a: MultiValue| output(a, false, "print"))?,
    )?;
    ngx.set("say", say)?;
    ngx.set("print", print)?;
    ngx.set(
        "exit",
        lua.create_function(|_, code: i64| -> mlua::Result<()> {
            // In header_filter it ends the phase; the host finalises the request with the
            // status (as OpenResty does).
            let p = request::phase_now();
            if matches!(p, Phase::BodyFilter | Phase::Log | Phase::InitWorker) {
                return Err(p.disabled());
            }
            if p == Phase::Balancer {
                // As lua-resty-core where nothing can yield: the code is kept and the script
                // runs on; the phase's result is decided when it ends.
                return request::with(|r| {
                    r.exit = Some(code);
                    Ok(())
                });
            }
            request::with(|r| {
                r.exit = Some(code);
                Ok(())
            })?;
            Err(mlua::Error::external(ExitSignal(code)))
        })?,
    )?;
    ngx.set(
        "exec",
        lua.create_function(
            |lua, (uri, args): (mlua::LuaString, Value)| -> mlua::Result<()> {
                request::allow_in(OUTPUT_PHASES)?;
                let uri = String::from_utf8_lossy(&uri.as_bytes()).into_owned();
                if uri.is_empty() {
                    return Err(mlua::Error::runtime("The uri argument is empty"));
                }
                let args = match args {
                    Value::Nil => None,
                    Value::String(s) => Some(String::from_utf8_lossy(&s.as_bytes()).into_owned()),
                    Value::Integer(_) | Value::Number(_) => {
                        let mut b = Vec::new();
                        render(&args, &mut b, "exec", 2)?;
                        Some(String::from_utf8_lossy(&b).into_owned())
                    }
                    Value::Table(t) => Some(super::codec::encode_args(lua, &t)?),
                    other => {
                        return Err(mlua::Error::runtime(format!(
                            "bad argument #2 to 'exec' (string, number, or table expected, got {})",
                            other.type_name()
                        )));
                    }
                }
                .filter(|a| !a.is_empty());
                request::with(|r| {
                    if r.headers_sent {
                        return Err(mlua::Error::runtime(
                            "attempt to call ngx.exec after sending out response headers",
                        ));
                    }
                    // As nginx: a query in the URI counts only when no arguments are given.
                    r.exec = Some(match args {
                        Some(a) => (uri, Some(a)),
                        None => match uri.split_once('?') {
                            Some((p, q)) => (p.to_string(), Some(q.to_string())),
                            None => (uri, None),
                        },
                    });
                    r.exit = Some(EXEC);
                    Ok(())
                })?;
                Err(mlua::Error::external(ExitSignal(EXEC)))
            },
        )?,
    )?;
    ngx.set(
        "redirect",
        lua.create_function(|_, (uri, status): (mlua::LuaString, Option<i64>)| -> mlua::Result<()> {
            let status = status.unwrap_or(302);
            if ![301, 302, 303, 307, 308].contains(&status) {
                return Err(mlua::Error::runtime(
                    "only ngx.HTTP_MOVED_TEMPORARILY, ngx.HTTP_MOVED_PERMANENTLY, ngx.HTTP_PERMANENT_REDIRECT, ngx.HTTP_SEE_OTHER, and ngx.HTTP_TEMPORARY_REDIRECT are allowed",
                ));
            }
            request::allow_in(OUTPUT_PHASES)?;
            request::with(|r| {
                if r.headers_sent {
                    return Err(mlua::Error::runtime(
                        "attempt to call ngx.redirect after sending out the headers",
                    ));
                }
                let v = HeaderValue::from_bytes(&uri.as_bytes())
                    .map_err(|_| mlua::Error::runtime("invalid redirect URI"))?;
                r.resp_headers.insert(http::header::LOCATION, v);
                r.exit = Some(status);
                Ok(())
            })?;
            Err(mlua::Error::external(ExitSignal(status)))
        })?,
    )?;
    // Where the host streams the content phase (a main request's), the head and the output
    // so far go out now: the script yields once, and the host sends them before resuming it.
    // Elsewhere the output goes out when the phase ends, as before.
    ngx.set(
        "flush",
        lua.create_async_function(|_, _: MultiValue| async move {
            request::allow_in(OUTPUT_PHASES)?;
            let streams = request::with(|r| {
                let streams = r.streamable && r.phase == Phase::Content && !r.eof;
                if streams {
                    r.flush_requested = true;
                    r.headers_sent = true;
                }
                Ok(streams)
            })?;
            if streams {
                tokio::task::yield_now().await;
            }
            Ok(1)
        })?,
    )?;
    ngx.set(
        "eof",
        // Where the host streams, the response ends now and the script runs on without the
        // client waiting (nginx sends the last chunk; scripts do background work after it).
        lua.create_async_function(|_, ()| async move {
            let streams = request::with(|r| {
                let streams = r.streamable && r.phase == Phase::Content && !r.eof;
                r.eof = true;
                r.headers_sent = true;
                r.flush_requested |= streams;
                Ok(streams)
            })?;
            if streams {
                tokio::task::yield_now().await;
            }
            Ok(1)
        })?,
    )?;
    ngx.set(
        "send_headers",
        lua.create_function(|_, ()| {
            request::allow_in(OUTPUT_PHASES)?;
            request::with(|r| {
                r.headers_sent = true;
                Ok(1)
            })
        })?,
    )?;
    ngx.set("header", header_table(lua)?)?;

    // `ngx.resp` and `require "ngx.resp"`.
    let resp = lua.create_table()?;
    resp.set(
        "get_headers",
        lua.create_function(|lua, max: Option<i64>| {
            let t = lua.create_table()?;
            let mut truncated = false;
            request::with(|r| {
                for (n, (k, v)) in r.resp_headers.iter().enumerate() {
                    if max.unwrap_or(100) > 0 && n as i64 >= max.unwrap_or(100) {
                        truncated = true;
                        break;
                    }
                    let val = lua.create_string(v.as_bytes())?;
                    match t.raw_get::<Value>(k.as_str())? {
                        Value::Nil => t.raw_set(k.as_str(), val)?,
                        Value::Table(list) => list.raw_push(val)?,
                        prev => {
                            let list = lua.create_table()?;
                            list.raw_push(prev)?;
                            list.raw_push(val)?;
                            t.raw_set(k.as_str(), list)?;
                        }
                    }
                }
                // As lua-nginx-module: the connection's fate is one of the headers, whether or
                // not it is in the list (nginx adds the header itself when sending).
                if !truncated && !r.resp_headers.contains_key(http::header::CONNECTION) {
                    let connection = match r.status {
                        Some(101) => "upgrade",
                        _ if r.keepalive() => "keep-alive",
                        _ => "close",
                    };
                    t.raw_set("connection", connection)?;
                }
                Ok(())
            })?;
            Ok((t, truncated.then_some("truncated")))
        })?,
    )?;
    resp.set(
        "add_header",
        lua.create_function(|_, (key, value): (String, Value)| {
            let name = header_name(&key)?;
            request::with(|r| {
                let mut bytes = Vec::new();
                render(&value, &mut bytes, "add_header", 2)?;
                let hv = HeaderValue::from_bytes(&bytes)
                    .map_err(|_| mlua::Error::runtime("invalid header value"))?;
                r.resp_headers.append(name, hv);
                Ok(())
            })
        })?,
    )?;
    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    loaded.set("ngx.resp", resp.clone())?;
    ngx.set("resp", resp)?;
    Ok(())
}

/// `X_Foo` and `x_foo` name `X-Foo` (lua_transform_underscores_in_response_headers).
fn header_name(key: &str) -> mlua::Result<HeaderName> {
    let name = key.replace('_', "-");
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| mlua::Error::runtime(format!("invalid header name \"{key}\"")))
}

fn header_table(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    let mt = lua.create_table()?;
    mt.set(
        "__index",
        lua.create_function(|lua, (_, key): (Table, String)| {
            let name = header_name(&key)?;
            request::with(|r| {
                let values: Vec<&HeaderValue> = r.resp_headers.get_all(&name).iter().collect();
                match values.len() {
                    0 => Ok(Value::Nil),
                    1 => Ok(Value::String(lua.create_string(values[0].as_bytes())?)),
                    _ => {
                        let t = lua.create_table()?;
                        for (i, v) in values.iter().enumerate() {
                            t.raw_set(i + 1, lua.create_string(v.as_bytes())?)?;
                        }
                        Ok(Value::Table(t))
                    }
                }
            })
        })?,
    )?;
    mt.set(
        "__newindex",
        lua.create_function(|_, (_, key, value): (Table, String, Value)| {
            let name = header_name(&key)?;
            request::with(|r| {
                if r.headers_sent && !matches!(r.phase, Phase::HeaderFilter) {
                    // OpenResty logs "attempt to set ngx.header.HEADER after sending out
                    // response headers" and ignores the change.
                    tracing::error!(header = %key, "attempt to set ngx.header after sending out response headers");
                    return Ok(());
                }
                r.resp_headers.remove(&name);
                let mut add = |v: &Value| -> mlua::Result<()> {
                    let mut raw = Vec::new();
                    render(v, &mut raw, "header", 1)?;
                    // As lua-nginx-module: CR and LF are escaped, never a new header line.
                    let mut bytes = Vec::with_capacity(raw.len());
                    for c in raw {
                        match c {
                            b'\r' => bytes.extend_from_slice(b"%0D"),
                            b'\n' => bytes.extend_from_slice(b"%0A"),
                            c => bytes.push(c),
                        }
                    }
                    let hv = HeaderValue::from_bytes(&bytes)
                        .map_err(|_| mlua::Error::runtime("invalid header value"))?;
                    r.resp_headers.append(name.clone(), hv);
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
        })?,
    )?;
    t.set_metatable(Some(mt))?;
    Ok(t)
}
