//! `ngx.thread.spawn/wait/kill` (light threads on the worker's task set), `ngx.semaphore`, and
//! `ngx.timer.every`. A light thread runs as the request that spawned it.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use mlua::{Function, Lua, MultiValue, Table, UserData, UserDataMethods, Value};
use tokio::task::JoinHandle;

use crate::request::{self, WithRequest};

type Outcome = Result<Vec<Value>, String>;

/// A spawned light thread's task, until it is waited for or killed.
pub struct LightThread {
    handle: RefCell<Option<JoinHandle<Outcome>>>,
}

impl UserData for LightThread {}

/// The registry name of the table from each light thread's coroutine (what `spawn` returns,
/// as in OpenResty) to its [`LightThread`]. Weak keys: a thread no script can name any more
/// leaves it, and its task runs on detached.
const THREADS: &str = "outpost.light_threads";

/// The task of the light thread `v`, if `v` is one.
fn light_thread(lua: &Lua, v: &Value) -> mlua::Result<Option<mlua::AnyUserData>> {
    let threads: Table = lua.named_registry_value(THREADS)?;
    match v {
        Value::Thread(_) => threads.raw_get(v.clone()),
        _ => Ok(None),
    }
}

fn spawn(lua: &Lua, f: Function, args: MultiValue) -> mlua::Result<mlua::Thread> {
    request::allow_yield()?;
    let thread = lua.create_thread(f)?;
    let coroutine = thread.clone();
    let fut = thread.into_async::<MultiValue>(args)?;
    let run = async move {
        fut.await
            .map(|v| v.into_iter().collect::<Vec<_>>())
            .map_err(|e| super::output::clean_error(&e))
    };
    let mut run: std::pin::Pin<Box<dyn Future<Output = Outcome>>> = match request::current() {
        Some(req) => Box::pin(WithRequest {
            request: req,
            inner: Box::pin(run),
        }),
        None => Box::pin(run),
    };
    // As in OpenResty, the new thread runs at once, until it first waits or ends, before
    // `spawn` returns to its parent. That first step is polled here with a waker that does
    // nothing; the task polls the thread again at once, and the wait it stopped at takes that
    // poll's waker (futures wake the waker of their latest poll).
    let mut first_step = Context::from_waker(futures_util::task::noop_waker_ref());
    let handle = match run.as_mut().poll(&mut first_step) {
        Poll::Ready(done) => tokio::task::spawn_local(async move { done }),
        Poll::Pending => tokio::task::spawn_local(run),
    };
    let task = lua.create_userdata(LightThread {
        handle: RefCell::new(Some(handle)),
    })?;
    let threads: Table = lua.named_registry_value(THREADS)?;
    threads.raw_set(coroutine.clone(), task)?;
    Ok(coroutine)
}

pub fn install(lua: &Lua, ngx: &Table, alive: Rc<std::cell::Cell<bool>>) -> mlua::Result<()> {
    let threads = lua.create_table()?;
    let weak_keys = lua.create_table()?;
    weak_keys.set("__mode", "k")?;
    threads.set_metatable(Some(weak_keys))?;
    lua.set_named_registry_value(THREADS, threads)?;
    let t = lua.create_table()?;
    t.set(
        "spawn",
        lua.create_function(|lua, (f, args): (Function, MultiValue)| spawn(lua, f, args))?,
    )?;
    t.set(
        "wait",
        lua.create_async_function(|lua, threads: MultiValue| async move {
            // Waits for the first of the threads to finish: `true, results...` or
            // `false, err`.
            let mut handles = Vec::new();
            let mut owners = Vec::new();
            for v in threads {
                let Some(ud) = light_thread(&lua, &v)? else {
                    return Err(mlua::Error::runtime(
                        "bad argument #1 to 'wait' (coroutine expected)",
                    ));
                };
                let t = ud.borrow::<LightThread>()?;
                let Some(h) = t.handle.borrow_mut().take() else {
                    return Ok(MultiValue::from_iter([
                        Value::Nil,
                        Value::String(lua.create_string("already waited or killed")?),
                    ]));
                };
                handles.push(h);
                owners.push(ud.clone());
            }
            if handles.is_empty() {
                return Err(mlua::Error::runtime(
                    "at least one coroutine should be specified",
                ));
            }
            let (done, index, rest) = futures_util::future::select_all(handles).await;
            // A thread stopped by the request's budget stops the request too: a loop of
            // spawn and wait must not outlive the budget.
            if let Some(why) = crate::limits::current().and_then(|b| b.exceeded()) {
                return Err(mlua::Error::external(why));
            }
            // The others stay waitable.
            let mut rest = rest.into_iter();
            for (i, ud) in owners.iter().enumerate() {
                if i != index {
                    let t = ud.borrow::<LightThread>()?;
                    *t.handle.borrow_mut() = rest.next();
                }
            }
            Ok(match done {
                Ok(Ok(values)) => {
                    MultiValue::from_iter(std::iter::once(Value::Boolean(true)).chain(values))
                }
                Ok(Err(e)) => MultiValue::from_iter([
                    Value::Boolean(false),
                    Value::String(lua.create_string(e)?),
                ]),
                Err(_) => MultiValue::from_iter([
                    Value::Boolean(false),
                    Value::String(lua.create_string("killed")?),
                ]),
            })
        })?,
    )?;
    t.set(
        "kill",
        lua.create_function(|lua, v: Value| {
            let Some(ud) = light_thread(lua, &v)? else {
                return Err(mlua::Error::runtime(
                    "bad argument #1 to 'kill' (coroutine expected)",
                ));
            };
            let t = ud.borrow::<LightThread>()?;
            match t.handle.borrow_mut().take() {
                // lua-nginx-module answers a kill with the number 1.
                Some(h) => {
                    h.abort();
                    Ok(MultiValue::from_iter([Value::Integer(1)]))
                }
                None => Ok(MultiValue::from_iter([
                    Value::Nil,
                    Value::String(lua.create_string("already waited or killed")?),
                ])),
            }
        })?,
    )?;
    ngx.set("thread", t)?;

    let timer: Table = ngx.get("timer")?;
    let alive_every = alive.clone();
    timer.set(
        "every",
        lua.create_function(move |_, (delay, f, args): (f64, Function, MultiValue)| {
            if delay == 0.0 {
                return Err(mlua::Error::runtime("delay cannot be zero"));
            }
            if delay < 0.0 || delay.is_nan() {
                return Err(mlua::Error::runtime(
                    "bad argument #1 to 'every' (positive delay expected)",
                ));
            }
            let alive = alive_every.clone();
            tokio::task::spawn_local(async move {
                let period = Duration::from_secs_f64(delay);
                // Stops when the VM is replaced (a reload with new modules) or dropped.
                while alive.get() {
                    tokio::time::sleep(period).await;
                    if !alive.get() {
                        break;
                    }
                    let mut call_args = vec![Value::Boolean(false)];
                    call_args.extend(args.iter().cloned());
                    let run = f.call_async::<()>(MultiValue::from_iter(call_args));
                    if let Err(e) = crate::limits::Metered::new(run).await {
                        tracing::error!(target: "lua", error = %e, "lua timer failed");
                    }
                }
            });
            Ok(1)
        })?,
    )?;

    // require "ngx.semaphore"
    let sema = lua.create_table()?;
    sema.set(
        "new",
        lua.create_function(|_, n: Option<usize>| {
            Ok(Semaphore(Rc::new(tokio::sync::Semaphore::new(
                n.unwrap_or(0),
            ))))
        })?,
    )?;
    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    loaded.set("ngx.semaphore", sema)?;
    Ok(())
}

pub struct Semaphore(Rc<tokio::sync::Semaphore>);

impl UserData for Semaphore {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("post", |_, s, n: Option<usize>| {
            s.0.add_permits(n.unwrap_or(1));
            Ok(true)
        });
        m.add_method("count", |_, s, ()| Ok(s.0.available_permits()));
        m.add_async_method("wait", |lua, s, timeout: Option<f64>| async move {
            let sem = s.0.clone();
            let limit = Duration::from_secs_f64(timeout.unwrap_or(0.0).max(0.0));
            let got = if limit.is_zero() || sem.available_permits() > 0 {
                sem.try_acquire().ok().map(|p| p.forget()).is_some()
            } else if !request::phase_now().yieldable() {
                // As lua-resty-core: a wait that would block is an error where nothing may.
                let e = request::phase_now().disabled_message();
                return Ok(MultiValue::from_iter([
                    Value::Nil,
                    Value::String(lua.create_string(e)?),
                ]));
            } else {
                match tokio::time::timeout(limit, sem.acquire()).await {
                    Ok(Ok(p)) => {
                        p.forget();
                        true
                    }
                    _ => false,
                }
            };
            if got {
                Ok(MultiValue::from_iter([Value::Boolean(true)]))
            } else {
                // lua-resty-core answers a timeout with `false`, other failures with `nil`.
                Ok(MultiValue::from_iter([
                    Value::Boolean(false),
                    Value::String(lua.create_string("timeout")?),
                ]))
            }
        });
    }
}
