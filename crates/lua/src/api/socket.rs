//! Cosockets: `ngx.socket.tcp` (and `ngx.socket.connect`) and `ngx.socket.udp` over tokio,
//! yielding to the worker's event loop on every wait, with lua-nginx-module's return values
//! (`nil, "timeout"`, `nil, "closed"`, partial data), `tcpsock:sslhandshake` over rustls and a
//! per-worker keep-alive pool (`setkeepalive`).
//!
//! Layout: this file is the TCP socket object; `socket/stream.rs` the plain-or-TLS byte
//! stream under it, `socket/tls.rs` and `socket/verify.rs` the handshake and its certificate
//! checks, `socket/pool.rs` the keep-alive pool, `socket/udp.rs` the UDP socket.

mod pool;
mod receive;
mod request;
mod stream;
mod tls;
mod udp;
mod until;
mod verify;

use std::time::Duration;

use mlua::{Lua, MultiValue, Table, UserData, UserDataMethods, UserDataRefMut, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use pool::TlsTag;
use stream::Conn;
pub use tls::set_trusted_certificate;

/// lua-nginx-module's default (`lua_socket_*_timeout 60s`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const POOL_SIZE: usize = 30;

/// What `sslhandshake` returns when asked for a session: an opaque handle. rustls resumes
/// sessions by itself (per server name, per worker), so the handle carries nothing.
struct SslSession;

impl UserData for SslSession {}

#[derive(Default)]
pub struct TcpSock {
    stream: Option<Conn>,
    /// Bytes read from the stream but not yet returned (after a line or pattern).
    buf: Vec<u8>,
    /// The pool name (`opts.pool` or `host:port`); empty until the first `connect`.
    key: String,
    /// Where `connect` went: a handshake that cannot use the pooled connection it was given
    /// opens a new one there.
    peer: Option<(String, u16)>,
    /// How the connection's TLS was set up; `None` while it is plain.
    tls: Option<TlsTag>,
    /// Nothing was sent or received since `connect` handed out this connection.
    untouched: bool,
    reused: u32,
    connect_timeout: Option<Duration>,
    send_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    /// The stream is a request body: it ends where its length says, and reading all of it
    /// leaves the socket open.
    bounded: bool,
}

fn nil_err(lua: &Lua, e: &str) -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_iter([
        Value::Nil,
        Value::String(lua.create_string(e)?),
    ]))
}

/// nginx's words for a socket error: `strerror`, lower-cased "for compatibility with
/// LuaSocket" (`"connection refused"`), without Rust's `(os error N)`.
fn os_error_text(e: &std::io::Error) -> String {
    let Some(code) = e.raw_os_error() else {
        return "error".to_string();
    };
    let text = std::io::Error::from_raw_os_error(code).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    text.to_lowercase()
}

/// A new TCP connection, with the words `connect` gives its failures.
async fn dial(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Err(_) => Err("timeout".to_string()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err("connection refused".to_string())
        }
        Ok(Err(e)) => Err(format!("{host} could not be resolved ({e})")),
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}

/// A new unix domain socket connection; failures in nginx's words (`no such file or
/// directory`, `connection refused`).
async fn dial_unix(path: &str, timeout: Duration) -> Result<UnixStream, String> {
    match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
        Err(_) => Err("timeout".to_string()),
        Ok(Err(e)) => Err(os_error_text(&e)),
        Ok(Ok(stream)) => Ok(stream),
    }
}

fn truthy(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Nil) | Some(Value::Boolean(false)))
}

/// `sslhandshake`'s success: `true` when `reused_session` is `false`, the session given back
/// when one was passed, else a new session handle.
fn handshake_ok(lua: &Lua, reused_session: &Value) -> mlua::Result<MultiValue> {
    let v = match reused_session {
        Value::Boolean(false) => Value::Boolean(true),
        Value::UserData(u) if u.is::<SslSession>() => reused_session.clone(),
        _ => Value::UserData(lua.create_userdata(SslSession)?),
    };
    Ok(MultiValue::from_iter([v]))
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
    /// `sslhandshake(reused_session?, server_name?, ssl_verify?, send_status_req?)`.
    ///
    /// On a connection that is already TLS (one from the pool), nothing is sent when it was
    /// set up for the same server name and at least the same verification, as nginx does; a
    /// pooled one set up otherwise goes back to the pool, and another that fits (or a new
    /// connection) takes its place. `send_status_req` is accepted and ignored: rustls always
    /// asks for a stapled OCSP response.
    async fn sslhandshake(&mut self, lua: &Lua, args: MultiValue) -> mlua::Result<MultiValue> {
        if args.len() > 4 {
            return Err(mlua::Error::runtime(format!(
                "ngx.socket sslhandshake: expecting 1 ~ 5 arguments (including the object), but seen {}",
                args.len() + 1
            )));
        }
        let reused_session = args.front().cloned().unwrap_or(Value::Nil);
        let server_name = match args.get(1) {
            None | Some(Value::Nil) => None,
            Some(Value::String(n)) if n.as_bytes().is_empty() => None,
            Some(Value::String(n)) => Some(n.to_str()?.to_string()),
            Some(v) => {
                return Err(mlua::Error::runtime(format!(
                    "bad argument #2 to 'sslhandshake' (string expected, got {})",
                    v.type_name()
                )));
            }
        };
        let want = TlsTag {
            server_name,
            verified: truthy(args.get(2)),
        };
        if self.key.is_empty() {
            return Err(mlua::Error::runtime(
                "socket is never created nor connected",
            ));
        }
        let Some(conn) = self.stream.take() else {
            return nil_err(lua, "closed");
        };
        let tcp = match conn {
            Conn::Plain(tcp) => tcp,
            Conn::Unix(_) => {
                self.stream = Some(conn);
                return nil_err(lua, "ssl over unix domain sockets is not supported");
            }
            // The request's own sockets have no `sslhandshake`; a `TcpSock` never holds them.
            Conn::Body(_) | Conn::Downstream(_) => {
                self.stream = Some(conn);
                return nil_err(lua, "closed");
            }
            Conn::Tls(_) => {
                let fits = self.tls.as_ref().is_some_and(|t| t.serves(&want));
                if fits || !self.untouched {
                    // Set up already (or in use: then it stays as it is, as in nginx).
                    self.stream = Some(conn);
                    return handshake_ok(lua, &reused_session);
                }
                pool::put(
                    &self.key,
                    conn,
                    self.tls.take(),
                    self.reused.saturating_sub(1),
                    DEFAULT_TIMEOUT,
                    POOL_SIZE,
                );
                if let Some(c) = pool::take_tls(&self.key, &want) {
                    self.stream = Some(c.conn);
                    self.tls = c.tls;
                    self.reused = c.reused + 1;
                    return handshake_ok(lua, &reused_session);
                }
                let Some((host, port)) = self.peer.clone() else {
                    return nil_err(lua, "closed");
                };
                let timeout = self.connect_timeout.unwrap_or(DEFAULT_TIMEOUT);
                match dial(&host, port, timeout).await {
                    Ok(tcp) => {
                        self.reused = 0;
                        tcp
                    }
                    Err(e) => return nil_err(lua, &e),
                }
            }
        };
        let timeout = self.connect_timeout.unwrap_or(DEFAULT_TIMEOUT);
        match tls::handshake(
            lua,
            tcp,
            want.server_name.as_deref(),
            want.verified,
            timeout,
        )
        .await
        {
            Ok(stream) => {
                self.stream = Some(Conn::Tls(Box::new(stream)));
                self.tls = Some(want);
                handshake_ok(lua, &reused_session)
            }
            // A failed handshake closes the socket, as in nginx.
            Err(e) => {
                self.tls = None;
                self.buf.clear();
                nil_err(lua, &e.to_string())
            }
        }
    }

    /// `send(data)`: a string, a number or a (nested) table of them, written whole.
    async fn send(&mut self, lua: &Lua, data: Value) -> mlua::Result<MultiValue> {
        let mut bytes = Vec::new();
        bytes_of(&data, &mut bytes)?;
        let timeout = self.send_timeout.unwrap_or(DEFAULT_TIMEOUT);
        self.untouched = false;
        let Some(stream) = self.stream.as_mut() else {
            return nil_err(lua, "closed");
        };
        // A flush too: TLS holds written bytes until a record is sealed.
        let write = async {
            stream.write_all(&bytes).await?;
            stream.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Err(_) => nil_err(lua, "timeout"),
            Ok(Err(e)) => {
                self.stream = None;
                nil_err(lua, io_err(&e))
            }
            Ok(Ok(())) => Ok(MultiValue::from_iter([Value::Integer(bytes.len() as i64)])),
        }
    }

    /// Reads more into `buf`; `Ok(false)` at end of stream.
    async fn fill(&mut self) -> Result<bool, &'static str> {
        let timeout = self.read_timeout.unwrap_or(DEFAULT_TIMEOUT);
        self.untouched = false;
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
        receive::add_read_methods(m);
        m.add_async_method_mut(
            "connect",
            |lua,
             mut s: UserDataRefMut<TcpSock>,
             (host, port, opts): (String, Value, Value)| async move {
                // `connect("unix:/path", opts?)`: no port, the options come second.
                let unix_path = host.strip_prefix("unix:").map(str::to_string);
                let (port, opts) = match (&unix_path, port) {
                    (Some(_), opts) => (0, opts),
                    (None, Value::Nil) => {
                        let e = format!("failed to parse host name \"{host}\": no port");
                        return nil_err(&lua, &e);
                    }
                    (None, p) => match lua.coerce_integer(p.clone())? {
                        Some(p) if (0..=65535).contains(&p) => (p as u16, opts),
                        Some(_) => return nil_err(&lua, "bad port"),
                        None => {
                            return Err(mlua::Error::runtime(format!(
                                "bad argument #2 to 'connect' (number expected, got {})",
                                p.type_name()
                            )))
                        }
                    },
                };
                let pool_name = match &opts {
                    Value::Table(t) => t.get::<Option<String>>("pool")?,
                    _ => None,
                };
                let key = pool_name.unwrap_or_else(|| match &unix_path {
                    Some(_) => host.clone(),
                    None => format!("{host}:{port}"),
                });
                if let Some(old) = s.stream.take() {
                    old.close_now();
                }
                s.buf.clear();
                s.tls = None;
                s.untouched = true;
                s.peer = Some((host.clone(), port));
                // A pooled connection to the same place first, TLS or not (see `pool`).
                if let Some(c) = pool::take(&key) {
                    s.key = key;
                    s.stream = Some(c.conn);
                    s.tls = c.tls;
                    s.reused = c.reused + 1;
                    return Ok(MultiValue::from_iter([Value::Integer(1)]));
                }
                s.key = key;
                let timeout = s.connect_timeout.unwrap_or(DEFAULT_TIMEOUT);
                if let Some(path) = unix_path {
                    s.peer = None;
                    return match dial_unix(&path, timeout).await {
                        Err(e) => nil_err(&lua, &e),
                        Ok(stream) => {
                            s.stream = Some(Conn::Unix(stream));
                            s.reused = 0;
                            Ok(MultiValue::from_iter([Value::Integer(1)]))
                        }
                    };
                }
                match dial(&host, port, timeout).await {
                    Err(e) => nil_err(&lua, &e),
                    Ok(stream) => {
                        s.stream = Some(Conn::Plain(stream));
                        s.reused = 0;
                        Ok(MultiValue::from_iter([Value::Integer(1)]))
                    }
                }
            },
        );
        m.add_async_method_mut(
            "send",
            |lua, mut s: UserDataRefMut<TcpSock>, data: Value| async move {
                s.send(&lua, data).await
            },
        );
        m.add_method_mut(
            "setkeepalive",
            |lua, s, (idle_ms, size): (Option<f64>, Option<usize>)| {
                let Some(mut conn) = s.stream.take() else {
                    return nil_err(lua, "closed");
                };
                if !s.buf.is_empty() || conn.has_unread_plaintext() {
                    // Unread data: the connection is not clean enough to reuse.
                    s.buf.clear();
                    conn.close_now();
                    return nil_err(lua, "unread data in buffer");
                }
                let idle = match idle_ms {
                    Some(ms) if ms > 0.0 => Duration::from_millis(ms as u64),
                    _ => DEFAULT_TIMEOUT,
                };
                let size = size.unwrap_or(POOL_SIZE);
                pool::put(&s.key, conn, s.tls.take(), s.reused, idle, size);
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
            let Some(conn) = s.stream.take() else {
                return nil_err(lua, "closed");
            };
            conn.close_now();
            s.buf.clear();
            s.tls = None;
            Ok(MultiValue::from_iter([Value::Integer(1)]))
        });
        m.add_async_method_mut(
            "sslhandshake",
            |lua, mut s: UserDataRefMut<TcpSock>, args: MultiValue| async move {
                s.sslhandshake(&lua, args).await
            },
        );
    }
}

impl receive::Reads for TcpSock {
    fn tcp(&mut self) -> &mut TcpSock {
        self
    }
}

pub fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let socket = lua.create_table()?;
    socket.set(
        "tcp",
        lua.create_function(|_, ()| {
            crate::request::allow_yield()?;
            Ok(TcpSock::default())
        })?,
    )?;
    socket.set("udp", lua.create_function(udp::new_socket)?)?;
    ngx.set("socket", socket)?;
    request::install(lua, ngx)?;
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
