//! Cosockets: `ngx.socket.tcp` (and `ngx.socket.connect`) over tokio, yielding to the worker's
//! event loop on every wait, with lua-nginx-module's return values (`nil, "timeout"`,
//! `nil, "closed"`, partial data) and a per-worker keep-alive pool (`setkeepalive`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use mlua::{Lua, MultiValue, Table, UserData, UserDataMethods, UserDataRefMut, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// lua-nginx-module's default (`lua_socket_*_timeout 60s`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const POOL_SIZE: usize = 30;

struct Pooled {
    stream: TcpStream,
    reused: u32,
    idle_until: Instant,
}

thread_local! {
    /// Idle connections of this worker, by `host:port`.
    static POOL: RefCell<HashMap<String, Vec<Pooled>>> = RefCell::new(HashMap::new());
}

#[derive(Default)]
pub struct TcpSock {
    stream: Option<TcpStream>,
    /// Bytes read from the stream but not yet returned (after a line or pattern).
    buf: Vec<u8>,
    key: String,
    reused: u32,
    connect_timeout: Option<Duration>,
    send_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
}

fn nil_err(lua: &Lua, e: &str) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_iter([
        Value::Nil,
        Value::String(lua.create_string(e)?),
    ]))
}

fn io_err(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::TimedOut => "timeout",
        std::io::ErrorKind::ConnectionRefused => "connection refused",
        std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::UnexpectedEof => "closed",
        _ => "closed",
    }
}

fn bytes_of(v: &Value, out: &mut Vec<u8>) -> mlua::Result<()> {
    match v {
        Value::Table(t) => {
            for x in t.clone().sequence_values::<Value>() {
                bytes_of(&x?, out)?;
            }
            Ok(())
        }
        v => super::output::render(v, out, "send", 1),
    }
}

impl TcpSock {
    /// Reads more into `buf`; `Ok(false)` at end of stream.
    async fn fill(&mut self) -> Result<bool, &'static str> {
        let timeout = self.read_timeout.unwrap_or(DEFAULT_TIMEOUT);
        let stream = self.stream.as_mut().ok_or("closed")?;
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(timeout, stream.read(&mut chunk)).await {
            Err(_) => Err("timeout"),
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Ok(Err(e)) => Err(io_err(&e)),
        }
    }
}

impl UserData for TcpSock {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method_mut("settimeout", |_, s, ms: Option<f64>| {
            let d = ms.map(|ms| Duration::from_millis(ms.max(0.0) as u64));
            s.connect_timeout = d;
            s.send_timeout = d;
            s.read_timeout = d;
            Ok(())
        });
        m.add_method_mut(
            "settimeouts",
            |_, s, (c, w, r): (Option<f64>, Option<f64>, Option<f64>)| {
                let d = |ms: Option<f64>| ms.map(|ms| Duration::from_millis(ms.max(0.0) as u64));
                s.connect_timeout = d(c);
                s.send_timeout = d(w);
                s.read_timeout = d(r);
                Ok(())
            },
        );
        m.add_async_method_mut(
            "connect",
            |lua,
             mut s: UserDataRefMut<TcpSock>,
             (host, port, _opts): (String, Option<u16>, Value)| async move {
                let Some(port) = port else {
                    return nil_err(&lua, "unix domain sockets are not supported");
                };
                let key = format!("{host}:{port}");
                // A pooled connection to the same place first.
                let pooled = POOL.with(|p| {
                    let mut p = p.borrow_mut();
                    let list = p.get_mut(&key)?;
                    let now = Instant::now();
                    while let Some(c) = list.pop() {
                        if c.idle_until > now {
                            return Some(c);
                        }
                    }
                    None
                });
                s.stream = None;
                s.buf.clear();
                s.key = key.clone();
                if let Some(c) = pooled {
                    s.stream = Some(c.stream);
                    s.reused = c.reused + 1;
                    return Ok(MultiValue::from_iter([Value::Integer(1)]));
                }
                let timeout = s.connect_timeout.unwrap_or(DEFAULT_TIMEOUT);
                match tokio::time::timeout(timeout, TcpStream::connect((host.as_str(), port))).await
                {
                    Err(_) => nil_err(&lua, "timeout"),
                    Ok(Err(e)) => {
                        let msg = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                            "connection refused".to_string()
                        } else {
                            format!("{host} could not be resolved ({e})")
                        };
                        nil_err(&lua, &msg)
                    }
                    Ok(Ok(stream)) => {
                        let _ = stream.set_nodelay(true);
                        s.stream = Some(stream);
                        s.reused = 0;
                        Ok(MultiValue::from_iter([Value::Integer(1)]))
                    }
                }
            },
        );
        m.add_async_method_mut(
            "send",
            |lua, mut s: UserDataRefMut<TcpSock>, data: Value| async move {
                let mut bytes = Vec::new();
                bytes_of(&data, &mut bytes)?;
                let timeout = s.send_timeout.unwrap_or(DEFAULT_TIMEOUT);
                let Some(stream) = s.stream.as_mut() else {
                    return nil_err(&lua, "closed");
                };
                match tokio::time::timeout(timeout, stream.write_all(&bytes)).await {
                    Err(_) => nil_err(&lua, "timeout"),
                    Ok(Err(e)) => {
                        s.stream = None;
                        nil_err(&lua, io_err(&e))
                    }
                    Ok(Ok(())) => Ok(MultiValue::from_iter([Value::Integer(bytes.len() as i64)])),
                }
            },
        );
        m.add_async_method_mut(
            "receive",
            |lua, mut s: UserDataRefMut<TcpSock>, pattern: Value| async move {
                if s.stream.is_none() && s.buf.is_empty() {
                    return nil_err(&lua, "closed");
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
                        return Ok(MultiValue::from_iter([Value::String(
                            lua.create_string(data)?,
                        )]));
                    }
                    match s.fill().await {
                        Ok(true) => {}
                        Ok(false) => {
                            s.stream = None;
                            let rest: Vec<u8> = std::mem::take(&mut s.buf);
                            if matches!(want, Want::All) {
                                return Ok(MultiValue::from_iter([Value::String(
                                    lua.create_string(rest)?,
                                )]));
                            }
                            return Ok(MultiValue::from_iter([
                                Value::Nil,
                                Value::String(lua.create_string("closed")?),
                                Value::String(lua.create_string(rest)?),
                            ]));
                        }
                        Err(e) => {
                            let partial: Vec<u8> = if e == "timeout" {
                                Vec::new()
                            } else {
                                std::mem::take(&mut s.buf)
                            };
                            return Ok(MultiValue::from_iter([
                                Value::Nil,
                                Value::String(lua.create_string(e)?),
                                Value::String(lua.create_string(partial)?),
                            ]));
                        }
                    }
                }
            },
        );
        m.add_method_mut(
            "setkeepalive",
            |lua, s, (idle_ms, size): (Option<f64>, Option<usize>)| {
                let Some(stream) = s.stream.take() else {
                    return nil_err(lua, "closed");
                };
                if !s.buf.is_empty() {
                    // Unread data: the connection is not clean enough to reuse.
                    s.buf.clear();
                    return nil_err(lua, "unread data in buffer");
                }
                let idle = match idle_ms {
                    Some(ms) if ms > 0.0 => Duration::from_millis(ms as u64),
                    _ => DEFAULT_TIMEOUT,
                };
                let size = size.unwrap_or(POOL_SIZE).max(1);
                let reused = s.reused;
                POOL.with(|p| {
                    let mut p = p.borrow_mut();
                    let list = p.entry(s.key.clone()).or_default();
                    if list.len() >= size {
                        list.remove(0);
                    }
                    list.push(Pooled {
                        stream,
                        reused,
                        idle_until: Instant::now() + idle,
                    });
                });
                Ok(MultiValue::from_iter([Value::Integer(1)]))
            },
        );
        m.add_method("getreusedtimes", |lua, s, ()| {
            if s.stream.is_none() {
                return nil_err(lua, "closed");
            }
            Ok(MultiValue::from_iter([Value::Integer(s.reused as i64)]))
        });
        m.add_method_mut("close", |lua, s, ()| {
            if s.stream.take().is_none() {
                return nil_err(lua, "closed");
            }
            s.buf.clear();
            Ok(MultiValue::from_iter([Value::Integer(1)]))
        });
        m.add_async_method_mut(
            "sslhandshake",
            |lua, _s: UserDataRefMut<TcpSock>, _args: MultiValue| async move {
                nil_err(&lua, "sslhandshake is not supported by this edge build yet")
            },
        );
        m.add_function(
            "receiveuntil",
            |lua, (sock, pattern, opts): (mlua::AnyUserData, mlua::LuaString, Option<Table>)| {
                let pattern = pattern.as_bytes().to_vec();
                let inclusive = opts
                    .map(|o| o.get::<Option<bool>>("inclusive"))
                    .transpose()?
                    .flatten()
                    .unwrap_or(false);
                // The iterator reads from this socket; its optional size argument is ignored (the
                // whole part before the pattern is returned at once).
                let f = lua.create_async_function(move |lua, _size: Value| {
                    let pattern = pattern.clone();
                    let sock = sock.clone();
                    async move {
                        let mut s = sock.borrow_mut::<TcpSock>()?;
                        loop {
                            if let Some(i) = s
                                .buf
                                .windows(pattern.len().max(1))
                                .position(|w| w == pattern.as_slice())
                            {
                                let end = i + pattern.len();
                                let mut data: Vec<u8> = s.buf.drain(..end).collect();
                                if !inclusive {
                                    data.truncate(i);
                                }
                                return Ok(MultiValue::from_iter([Value::String(
                                    lua.create_string(data)?,
                                )]));
                            }
                            match s.fill().await {
                                Ok(true) => {}
                                Ok(false) => {
                                    s.stream = None;
                                    let rest = std::mem::take(&mut s.buf);
                                    return Ok(MultiValue::from_iter([
                                        Value::Nil,
                                        Value::String(lua.create_string("closed")?),
                                        Value::String(lua.create_string(rest)?),
                                    ]));
                                }
                                Err(e) => {
                                    return Ok(MultiValue::from_iter([
                                        Value::Nil,
                                        Value::String(lua.create_string(e)?),
                                        Value::String(lua.create_string("")?),
                                    ]));
                                }
                            }
                        }
                    }
                })?;
                Ok(f)
            },
        );
    }
}

pub fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let socket = lua.create_table()?;
    socket.set("tcp", lua.create_function(|_, ()| Ok(TcpSock::default()))?)?;
    ngx.set("socket", socket)?;
    // `ngx.socket.connect(host, port)`: a new socket, connected.
    lua.load(
        r#"
        local ngx = ...
        local tcp = ngx.socket.tcp
        ngx.socket.connect = function(host, port, opts)
            local s = tcp()
            local ok, err = s:connect(host, port, opts)
            if not ok then return nil, err end
            return s
        end
        "#,
    )
    .set_name("=ngx.socket")
    .call::<()>(ngx.clone())?;
    Ok(())
}
