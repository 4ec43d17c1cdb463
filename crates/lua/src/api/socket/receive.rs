//! Reading from a socket object: `receive` (a line, everything, or a number of bytes),
//! `receiveany` and `receiveuntil`, with lua-nginx-module's return values (`nil, "closed",
//! partial`). Shared by cosockets and by the request's own sockets (`ngx.req.socket`).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use mlua::{
    AnyUserData, Function, Lua, LuaString, MultiValue, Table, UserData, UserDataMethods,
    UserDataRefMut, Value,
};

use super::{TcpSock, nil_err, until};

/// A socket object that reads through a [`TcpSock`].
pub trait Reads: UserData + 'static {
    fn tcp(&mut self) -> &mut TcpSock;
}

fn string(lua: &Lua, data: impl AsRef<[u8]>) -> mlua::Result<Value> {
    Ok(Value::String(lua.create_string(data)?))
}

/// `nil, err, partial`.
fn failed(lua: &Lua, err: &str, partial: Vec<u8>) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_iter([
        Value::Nil,
        string(lua, err)?,
        string(lua, partial)?,
    ]))
}

/// `receive(pattern?)`: `"*l"` (the default) a line without its end, `"*a"` everything up to
/// the end, a number that many bytes.
pub async fn receive(lua: &Lua, s: &mut TcpSock, pattern: Value) -> mlua::Result<MultiValue> {
    if s.stream.is_none() && s.buf.is_empty() {
        return nil_err(lua, "closed");
    }
    enum Want {
        Line,
        All,
        Bytes(usize),
    }
    let want = match &pattern {
        Value::Nil => Want::Line,
        Value::String(p) if matches!(&*p.as_bytes(), b"*l" | b"l") => Want::Line,
        Value::String(p) if matches!(&*p.as_bytes(), b"*a" | b"a") => Want::All,
        Value::Integer(n) => Want::Bytes((*n).max(0) as usize),
        Value::Number(n) => Want::Bytes(n.max(0.0) as usize),
        _ => return Err(mlua::Error::runtime("bad pattern argument")),
    };
    loop {
        let ready = match want {
            Want::Line => s.buf.iter().position(|&b| b == b'\n').map(|i| {
                let mut line: Vec<u8> = s.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                line
            }),
            Want::Bytes(n) if s.buf.len() >= n => Some(s.buf.drain(..n).collect()),
            _ => None,
        };
        if let Some(data) = ready {
            return Ok(MultiValue::from_iter([string(lua, data)?]));
        }
        match s.fill().await {
            Ok(true) => {}
            Ok(false) => {
                let rest: Vec<u8> = std::mem::take(&mut s.buf);
                if matches!(want, Want::All) {
                    // A request body ends where its length says, and the connection goes
                    // on: reading all of it leaves the socket open (nginx then gives "").
                    if !s.bounded {
                        s.stream = None;
                    }
                    return Ok(MultiValue::from_iter([string(lua, rest)?]));
                }
                s.stream = None;
                return failed(lua, "closed", rest);
            }
            Err(e) => {
                let partial: Vec<u8> = if e == "timeout" {
                    Vec::new()
                } else {
                    std::mem::take(&mut s.buf)
                };
                return failed(lua, e, partial);
            }
        }
    }
}

/// `receiveany(max)`: whatever is there, up to `max` bytes, waiting only when nothing is.
pub async fn receiveany(lua: &Lua, s: &mut TcpSock, max: Value) -> mlua::Result<MultiValue> {
    let max = match lua.coerce_integer(max)? {
        Some(n) if n > 0 => n as usize,
        _ => {
            return Err(mlua::Error::runtime(
                "bad argument #2 to 'receiveany' (bad max argument)",
            ));
        }
    };
    if s.stream.is_none() && s.buf.is_empty() {
        return nil_err(lua, "closed");
    }
    if s.buf.is_empty() {
        match s.fill().await {
            Ok(true) => {}
            Ok(false) => {
                s.stream = None;
                return nil_err(lua, "closed");
            }
            Err(e) => return nil_err(lua, e),
        }
    }
    let n = max.min(s.buf.len());
    let data: Vec<u8> = s.buf.drain(..n).collect();
    Ok(MultiValue::from_iter([string(lua, data)?]))
}

/// `receiveuntil(pattern, opts?)`: an iterator that reads from this socket: without a size,
/// the whole part before the pattern at once; with one, at most `size` bytes of it per call
/// and then `nil` once the pattern is passed (lua-resty-upload reads parts this way).
pub fn receiveuntil<T: Reads>(
    lua: &Lua,
    sock: AnyUserData,
    pattern: LuaString,
    opts: Option<Table>,
) -> mlua::Result<Function> {
    let pattern = pattern.as_bytes().to_vec();
    let inclusive = opts
        .map(|o| o.get::<Option<bool>>("inclusive"))
        .transpose()?
        .flatten()
        .unwrap_or(false);
    let passed = Rc::new(Cell::new(false));
    lua.create_async_function(move |lua, size: Option<f64>| {
        let pattern = pattern.clone();
        let sock = sock.clone();
        let passed = passed.clone();
        async move {
            // As nginx: a fraction is cut to an integer, and 0 or less is no size.
            let size = size
                .map(|n| n as i64)
                .filter(|n| *n > 0)
                .map(|n| n as usize);
            if size.is_some() && passed.replace(false) {
                return Ok(MultiValue::from_iter([Value::Nil]));
            }
            let mut owner = sock.borrow_mut::<T>()?;
            let s = owner.tcp();
            loop {
                match until::next(&s.buf, &pattern, size) {
                    until::Step::Data(n) => {
                        let data: Vec<u8> = s.buf.drain(..n).collect();
                        return Ok(MultiValue::from_iter([string(&lua, data)?]));
                    }
                    until::Step::Part(n) => {
                        let mut data: Vec<u8> = s.buf.drain(..n + pattern.len()).collect();
                        if !inclusive {
                            data.truncate(n);
                        }
                        passed.set(size.is_some());
                        return Ok(MultiValue::from_iter([string(&lua, data)?]));
                    }
                    until::Step::More => {}
                }
                match s.fill().await {
                    Ok(true) => {}
                    Ok(false) => {
                        s.stream = None;
                        let rest = std::mem::take(&mut s.buf);
                        return failed(&lua, "closed", rest);
                    }
                    Err(e) => return failed(&lua, e, Vec::new()),
                }
            }
        }
    })
}

/// The methods every socket object that reads has: `receive`, `receiveany`,
/// `receiveuntil`, `settimeout` and `settimeouts`.
pub fn add_read_methods<T: Reads, M: UserDataMethods<T>>(m: &mut M) {
    m.add_method_mut("settimeout", |_, s, ms: Option<f64>| {
        let d = ms.map(|ms| Duration::from_millis(ms.max(0.0) as u64));
        let s = s.tcp();
        s.connect_timeout = d;
        s.send_timeout = d;
        s.read_timeout = d;
        Ok(())
    });
    m.add_method_mut(
        "settimeouts",
        |_, s, (c, w, r): (Option<f64>, Option<f64>, Option<f64>)| {
            let d = |ms: Option<f64>| ms.map(|ms| Duration::from_millis(ms.max(0.0) as u64));
            let s = s.tcp();
            s.connect_timeout = d(c);
            s.send_timeout = d(w);
            s.read_timeout = d(r);
            Ok(())
        },
    );
    m.add_async_method_mut(
        "receive",
        |lua, mut s: UserDataRefMut<T>, pattern: Value| async move {
            receive(&lua, s.tcp(), pattern).await
        },
    );
    m.add_async_method_mut(
        "receiveany",
        |lua, mut s: UserDataRefMut<T>, max: Value| async move {
            receiveany(&lua, s.tcp(), max).await
        },
    );
    m.add_function(
        "receiveuntil",
        |lua, (sock, pattern, opts): (AnyUserData, LuaString, Option<Table>)| {
            receiveuntil::<T>(lua, sock, pattern, opts)
        },
    );
}
