//! Everything else on `ngx`: constants, logging, phases, time, workers, config, sleep, timers,
//! `ngx.ctx`, `ngx.status`, `ngx.null`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mlua::{Lua, MultiValue, Table, Value};

use crate::Phase;
use crate::request;

const LEVELS: [(&str, i64); 9] = [
    ("STDERR", 0),
    ("EMERG", 1),
    ("ALERT", 2),
    ("CRIT", 3),
    ("ERR", 4),
    ("WARN", 5),
    ("NOTICE", 6),
    ("INFO", 7),
    ("DEBUG", 8),
];

const STATUSES: [(&str, i64); 36] = [
    ("HTTP_CONTINUE", 100),
    ("HTTP_SWITCHING_PROTOCOLS", 101),
    ("HTTP_OK", 200),
    ("HTTP_CREATED", 201),
    ("HTTP_ACCEPTED", 202),
    ("HTTP_NO_CONTENT", 204),
    ("HTTP_PARTIAL_CONTENT", 206),
    ("HTTP_SPECIAL_RESPONSE", 300),
    ("HTTP_MOVED_PERMANENTLY", 301),
    ("HTTP_MOVED_TEMPORARILY", 302),
    ("HTTP_SEE_OTHER", 303),
    ("HTTP_NOT_MODIFIED", 304),
    ("HTTP_TEMPORARY_REDIRECT", 307),
    ("HTTP_PERMANENT_REDIRECT", 308),
    ("HTTP_BAD_REQUEST", 400),
    ("HTTP_UNAUTHORIZED", 401),
    ("HTTP_PAYMENT_REQUIRED", 402),
    ("HTTP_FORBIDDEN", 403),
    ("HTTP_NOT_FOUND", 404),
    ("HTTP_NOT_ALLOWED", 405),
    ("HTTP_NOT_ACCEPTABLE", 406),
    ("HTTP_REQUEST_TIMEOUT", 408),
    ("HTTP_CONFLICT", 409),
    ("HTTP_GONE", 410),
    ("HTTP_UPGRADE_REQUIRED", 426),
    ("HTTP_TOO_MANY_REQUESTS", 429),
    ("HTTP_CLOSE", 444),
    ("HTTP_ILLEGAL", 451),
    ("HTTP_INTERNAL_SERVER_ERROR", 500),
    ("HTTP_METHOD_NOT_IMPLEMENTED", 501),
    ("HTTP_BAD_GATEWAY", 502),
    ("HTTP_SERVICE_UNAVAILABLE", 503),
    ("HTTP_GATEWAY_TIMEOUT", 504),
    ("HTTP_VERSION_NOT_SUPPORTED", 505),
    ("HTTP_INSUFFICIENT_STORAGE", 507),
    ("HTTP_MISDIRECTED_REQUEST", 421),
];

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_millis() as f64 / 1000.0)
}

fn unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Days since the epoch to (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `yyyy-mm-dd hh:mm:ss` in UTC (this edge keeps UTC as its local time).
fn datetime(secs: u64) -> String {
    let (y, m, d) = civil((secs / 86_400) as i64);
    let t = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

pub fn install(
    lua: &Lua,
    ngx: &Table,
    worker_id: usize,
    workers: usize,
    exiting: std::rc::Rc<std::cell::Cell<bool>>,
) -> mlua::Result<()> {
    for (name, v) in LEVELS.iter().chain(STATUSES.iter()) {
        ngx.set(*name, *v)?;
    }
    for (name, v) in [
        ("OK", 0),
        ("ERROR", -1),
        ("AGAIN", -2),
        ("DONE", -4),
        ("DECLINED", -5),
    ] {
        ngx.set(name, v)?;
    }
    // Method constants are nginx's method bits (for subrequests), as in lua-nginx-module.
    for (name, v) in [
        ("HTTP_GET", 2),
        ("HTTP_HEAD", 4),
        ("HTTP_POST", 8),
        ("HTTP_PUT", 16),
        ("HTTP_DELETE", 32),
        ("HTTP_MKCOL", 64),
        ("HTTP_COPY", 128),
        ("HTTP_MOVE", 256),
        ("HTTP_OPTIONS", 512),
        ("HTTP_PROPFIND", 1024),
        ("HTTP_PROPPATCH", 2048),
        ("HTTP_LOCK", 4096),
        ("HTTP_UNLOCK", 8192),
        ("HTTP_PATCH", 16384),
        ("HTTP_TRACE", 32768),
    ] {
        ngx.set(name, v)?;
    }
    ngx.set("null", crate::cjson::null())?;
    ngx.set(
        "log",
        lua.create_function(|_, args: MultiValue| {
            let mut it = args.into_iter();
            let level = match it.next() {
                Some(Value::Integer(l)) => l,
                Some(Value::Number(l)) => l as i64,
                _ => {
                    return Err(mlua::Error::runtime(
                        "bad argument #1 to 'log' (number expected)",
                    ));
                }
            };
            let mut msg = Vec::new();
            for (i, v) in it.enumerate() {
                super::output::render(&v, &mut msg, "log", i + 2)?;
            }
            let msg = String::from_utf8_lossy(&msg);
            match level {
                0..=4 => tracing::error!(target: "lua", "{msg}"),
                5 => tracing::warn!(target: "lua", "{msg}"),
                6 | 7 => tracing::info!(target: "lua", "{msg}"),
                _ => tracing::debug!(target: "lua", "{msg}"),
            }
            Ok(())
        })?,
    )?;
    ngx.set(
        "get_phase",
        lua.create_function(|_, ()| {
            Ok(request::current()
                .map(|r| r.borrow().phase.name())
                .unwrap_or("timer"))
        })?,
    )?;
    ngx.set("now", lua.create_function(|_, ()| Ok(now_secs()))?)?;
    ngx.set("time", lua.create_function(|_, ()| Ok(unix()))?)?;
    ngx.set("update_time", lua.create_function(|_, ()| Ok(()))?)?;
    ngx.set(
        "today",
        lua.create_function(|_, ()| Ok(datetime(unix())[..10].to_string()))?,
    )?;
    ngx.set(
        "localtime",
        lua.create_function(|_, ()| Ok(datetime(unix())))?,
    )?;
    ngx.set(
        "utctime",
        lua.create_function(|_, ()| Ok(datetime(unix())))?,
    )?;
    ngx.set(
        "http_time",
        lua.create_function(|_, t: f64| {
            Ok(httpdate::fmt_http_date(
                UNIX_EPOCH + Duration::from_secs(t.max(0.0) as u64),
            ))
        })?,
    )?;
    ngx.set(
        "cookie_time",
        lua.create_function(|_, t: f64| {
            let secs = t.max(0.0) as u64;
            let (y, m, d) = civil((secs / 86_400) as i64);
            const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            let s = secs % 86_400;
            // nginx writes a two-digit year up to 2037, as old cookie parsers expect.
            let y = if y > 2037 { y } else { y % 100 };
            Ok(format!(
                "{}, {d:02}-{}-{y:02} {:02}:{:02}:{:02} GMT",
                DAYS[((secs / 86_400) % 7) as usize],
                MONTHS[(m - 1) as usize],
                s / 3600,
                s / 60 % 60,
                s % 60
            ))
        })?,
    )?;
    ngx.set(
        "parse_http_time",
        lua.create_function(|_, s: String| {
            Ok(httpdate::parse_http_date(&s)
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()))
        })?,
    )?;
    ngx.set(
        "sleep",
        lua.create_async_function(|_, secs: Value| async move {
            let secs = match secs {
                Value::Integer(i) => i as f64,
                Value::Number(n) => n,
                other => {
                    return Err(mlua::Error::runtime(format!(
                        "bad argument #1 to '?' (number expected, got {})",
                        other.type_name()
                    )));
                }
            };
            if secs < 0.0 || secs.is_nan() {
                // lua-nginx-module reports the duration in milliseconds.
                return Err(mlua::Error::runtime(format!(
                    "invalid sleep duration \"{}\"",
                    (secs * 1000.0) as i64
                )));
            }
            request::allow_yield()?;
            tokio::time::sleep(Duration::from_secs_f64(secs.min(1e9))).await;
            Ok(())
        })?,
    )?;

    let worker = lua.create_table()?;
    worker.set("id", lua.create_function(move |_, ()| Ok(worker_id))?)?;
    worker.set("count", lua.create_function(move |_, ()| Ok(workers))?)?;
    worker.set("pid", lua.create_function(|_, ()| Ok(std::process::id()))?)?;
    // Set by `ngx.process.signal_graceful_exit()`.
    worker.set(
        "exiting",
        lua.create_function(move |_, ()| Ok(exiting.get()))?,
    )?;
    ngx.set("worker", worker)?;

    let config = lua.create_table()?;
    config.set("subsystem", "http")?;
    config.set("ngx_lua_version", 10023)?;
    config.set("nginx_version", 1_022_001)?;
    config.set("debug", false)?;
    config.set("prefix", lua.create_function(|_, ()| Ok("/"))?)?;
    config.set("nginx_configure", lua.create_function(|_, ()| Ok(""))?)?;
    ngx.set("config", config)?;

    let timer = lua.create_table()?;
    timer.set(
        "at",
        lua.create_function(|lua, (delay, f, args): (f64, Value, MultiValue)| {
            let Value::Function(f) = f else {
                return Err(mlua::Error::runtime(
                    "bad argument #2 to '?' (Lua function expected)",
                ));
            };
            let lua = lua.clone();
            tokio::task::spawn_local(async move {
                tokio::time::sleep(Duration::from_secs_f64(delay.max(0.0))).await;
                let mut call_args = vec![Value::Boolean(false)];
                call_args.extend(args);
                // A timer belongs to no request: each run has a budget of its own.
                let run = f.call_async::<()>(MultiValue::from_iter(call_args));
                if let Err(e) = crate::limits::Metered::new(run).await {
                    tracing::error!(target: "lua", error = %e, "lua timer failed");
                }
                drop(lua);
            });
            Ok(1)
        })?,
    )?;
    timer.set("running_count", lua.create_function(|_, ()| Ok(0))?)?;
    timer.set("pending_count", lua.create_function(|_, ()| Ok(0))?)?;
    ngx.set("timer", timer)?;

    // `ngx.status`, `ngx.ctx`, `ngx.headers_sent` read and write the current request.
    let mt = lua.create_table()?;
    mt.set(
        "__index",
        lua.create_function(|lua, (_, key): (Table, String)| match key.as_str() {
            "status" => request::with(|r| Ok(Value::Integer(r.status.unwrap_or(0) as i64))),
            "headers_sent" => request::with(|r| Ok(Value::Boolean(r.headers_sent))),
            "is_subrequest" => request::with(|r| Ok(Value::Boolean(r.subrequest_depth > 0))),
            "ctx" => {
                let req = request::current()
                    .ok_or_else(|| mlua::Error::runtime("no request ctx found"))?;
                let mut r = req.borrow_mut();
                if let Some(k) = &r.ctx {
                    return lua.registry_value::<Value>(k);
                }
                let t = lua.create_table()?;
                r.ctx = Some(lua.create_registry_value(t.clone())?);
                Ok(Value::Table(t))
            }
            _ => Ok(Value::Nil),
        })?,
    )?;
    mt.set(
        "__newindex",
        lua.create_function(|lua, (t, key, value): (Table, String, Value)| match key.as_str() {
            "status" => request::with(|r| {
                if r.headers_sent && !matches!(r.phase, Phase::HeaderFilter) {
                    tracing::error!(target: "lua", "attempt to set ngx.status after sending out response headers");
                    return Ok(());
                }
                let code = match value {
                    Value::Integer(i) => i,
                    Value::Number(n) => n as i64,
                    Value::String(s) => s
                        .to_str()?
                        .trim()
                        .parse()
                        .map_err(|_| mlua::Error::runtime("bad ngx.status value"))?,
                    _ => return Err(mlua::Error::runtime("bad ngx.status value")),
                };
                r.status = Some(code.clamp(0, 999) as u16);
                Ok(())
            }),
            "ctx" => {
                let req = request::current().ok_or_else(|| mlua::Error::runtime("no request ctx found"))?;
                let Value::Table(new) = value else {
                    return Err(mlua::Error::runtime(format!(
                        "ctx should be a table while getting a {}",
                        value.type_name()
                    )));
                };
                req.borrow_mut().ctx = Some(lua.create_registry_value(new)?);
                Ok(())
            }
            _ => t.raw_set(key, value),
        })?,
    )?;
    ngx.set_metatable(Some(mt))?;
    Ok(())
}
