//! `ngx.socket.udp()`: a connected datagram socket (`setpeername`, `send`, `receive`,
//! `settimeout`, `close`) with lua-nginx-module's return values and words: `1` on success,
//! `nil, "closed"` before `setpeername` or after `close`, `nil, "timeout"`, the lower-cased
//! `strerror` text for socket errors (`"connection refused"` after an ICMP port unreachable),
//! and `nil, "socket busy"` when another light thread is waiting on the same socket.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use mlua::{AnyUserData, Lua, MultiValue, UserData, UserDataMethods, Value};
use tokio::net::UdpSocket;

use super::{DEFAULT_TIMEOUT, nil_err, os_error_text};
use crate::request;

/// lua-nginx-module 0.10.23's largest `receive` (it was 8192 before 0.10.14).
const MAX_DATAGRAM: usize = 65536;
/// nginx's `resolver_timeout` default.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct UdpSock {
    /// Shared with a `receive` in progress, so that it needs no borrow of the userdata while
    /// it waits.
    sock: Option<Rc<UdpSocket>>,
    /// `settimeout`'s value; `None` = `lua_socket_read_timeout` (60 s).
    read_timeout: Option<Duration>,
    /// A `setpeername` or `receive` is waiting (a second caller gets "socket busy").
    waiting: Rc<Cell<bool>>,
}

/// Clears `waiting` however the wait ends, including a light thread killed while waiting.
struct Waiting(Rc<Cell<bool>>);

impl Waiting {
    fn start(flag: &Rc<Cell<bool>>) -> Option<Waiting> {
        (!flag.replace(true)).then(|| Waiting(flag.clone()))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// The address of `host` (`"1.2.3.4"`, `"[::1]"`, a name, or any of those with `:port` when
/// no port argument is given), resolved without blocking the worker.
async fn peer_address(host: &str, port: Option<u16>) -> Result<SocketAddr, String> {
    let (name, port) = match port {
        Some(p) => (host, p),
        None => split_port(host),
    };
    if name.is_empty() {
        return Err(format!("failed to parse host name \"{host}\": no host"));
    }
    let literal = name.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let found =
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port))).await {
            Err(_) => {
                return Err(format!(
                    "{name} could not be resolved (110: Operation timed out)"
                ));
            }
            Ok(Err(_)) => Vec::new(),
            Ok(Ok(addrs)) => addrs.collect(),
        };
    // nginx picks one address at random; IPv4 first, as nginx's resolver asks for A records.
    let v4: Vec<SocketAddr> = found.iter().copied().filter(|a| a.is_ipv4()).collect();
    let pool = if v4.is_empty() { found } else { v4 };
    if pool.is_empty() {
        return Err(format!("{name} could not be resolved (3: Host not found)"));
    }
    Ok(pool[rand::random_range(0..pool.len())])
}

/// `host:port` / `[v6]:port` / `host` (port 0, as nginx's default).
fn split_port(host: &str) -> (&str, u16) {
    if let Some((h, p)) = host.rsplit_once(':')
        && (!h.contains(':') || h.ends_with(']'))
        && let Ok(p) = p.parse::<u16>()
    {
        return (h, p);
    }
    (host, 0)
}

/// A number as `lua_tonumber` reads it (numeric strings too), or `None`.
fn to_number(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Number(n) => Some(*n),
        Value::String(s) => s.to_str().ok()?.trim().parse().ok(),
        _ => None,
    }
}

fn ok_one() -> mlua::Result<MultiValue> {
    Ok(MultiValue::from_iter([Value::Integer(1)]))
}

async fn setpeername(lua: Lua, ud: AnyUserData, args: MultiValue) -> mlua::Result<MultiValue> {
    let n = args.len() + 1;
    if n != 2 && n != 3 {
        return Err(mlua::Error::runtime(format!(
            "ngx.socket.udp setpeername: expecting 2 or 3 arguments (including the object), but seen {n}"
        )));
    }
    let host = match &args[0] {
        Value::String(s) => s.to_str()?.to_string(),
        Value::Integer(_) | Value::Number(_) => to_number(&args[0]).unwrap_or(0.0).to_string(),
        v => {
            return Err(mlua::Error::runtime(format!(
                "bad argument #1 to 'setpeername' (string expected, got {})",
                v.type_name()
            )));
        }
    };
    let port = match args.get(1) {
        None => None,
        Some(v) => {
            let Some(p) = to_number(v) else {
                return Err(mlua::Error::runtime(format!(
                    "bad argument #2 to 'setpeername' (number expected, got {})",
                    v.type_name()
                )));
            };
            let p = p as i64;
            if !(0..=65535).contains(&p) {
                return nil_err(&lua, &format!("bad port number: {p}"));
            }
            Some(p as u16)
        }
    };
    if host.starts_with("unix:") {
        return nil_err(&lua, "unix domain sockets are not supported");
    }
    let waiting = {
        let mut s = ud.borrow_mut::<UdpSock>()?;
        let Some(w) = Waiting::start(&s.waiting) else {
            return nil_err(&lua, "socket busy");
        };
        // A new peer replaces the old socket, as nginx reconnects without shutting down.
        s.sock = None;
        w
    };
    let addr = match peer_address(&host, port).await {
        Ok(a) => a,
        Err(e) => return nil_err(&lua, &e),
    };
    let local: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = match UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => return nil_err(&lua, &os_error_text(&e)),
    };
    if let Err(e) = sock.connect(addr).await {
        return nil_err(&lua, &os_error_text(&e));
    }
    drop(waiting);
    ud.borrow_mut::<UdpSock>()?.sock = Some(Rc::new(sock));
    ok_one()
}

async fn send(lua: Lua, ud: AnyUserData, args: MultiValue) -> mlua::Result<MultiValue> {
    if args.len() != 1 {
        return Err(mlua::Error::runtime(format!(
            "expecting 2 arguments (including the object), but got {}",
            args.len() + 1
        )));
    }
    let data = &args[0];
    let mut bytes = Vec::new();
    match data {
        Value::String(_)
        | Value::Integer(_)
        | Value::Number(_)
        | Value::Boolean(_)
        | Value::Nil
        | Value::Table(_) => super::bytes_of(data, &mut bytes)?,
        v => {
            return Err(mlua::Error::runtime(format!(
                "bad argument #2 to '?' (string, number, boolean, nil, or array table expected, got {})",
                v.type_name()
            )));
        }
    }
    let sock = {
        let s = ud.borrow::<UdpSock>()?;
        let Some(sock) = s.sock.clone() else {
            return nil_err(&lua, "closed");
        };
        if s.waiting.get() {
            return nil_err(&lua, "socket busy");
        }
        sock
    };
    match sock.send(&bytes).await {
        Ok(n) if n == bytes.len() => ok_one(),
        Ok(_) => nil_err(&lua, "partial write"),
        Err(e) => nil_err(&lua, &os_error_text(&e)),
    }
}

async fn receive(lua: Lua, ud: AnyUserData, args: MultiValue) -> mlua::Result<MultiValue> {
    if args.len() > 1 {
        return Err(mlua::Error::runtime(format!(
            "expecting 1 or 2 arguments (including the object), but got {}",
            args.len() + 1
        )));
    }
    let size = match args.front() {
        None | Some(Value::Nil) => MAX_DATAGRAM,
        Some(v) => match to_number(v) {
            // A negative size becomes huge in nginx's `size_t`, then the maximum.
            Some(n) if n < 0.0 => MAX_DATAGRAM,
            Some(n) => (n as usize).min(MAX_DATAGRAM),
            None => {
                return Err(mlua::Error::runtime(format!(
                    "bad argument #2 to '?' (number expected, got {})",
                    v.type_name()
                )));
            }
        },
    };
    let (sock, timeout, waiting) = {
        let s = ud.borrow::<UdpSock>()?;
        let Some(sock) = s.sock.clone() else {
            return nil_err(&lua, "closed");
        };
        let Some(w) = Waiting::start(&s.waiting) else {
            return nil_err(&lua, "socket busy");
        };
        (sock, s.read_timeout.unwrap_or(DEFAULT_TIMEOUT), w)
    };
    // One datagram; a longer one is cut to `size`, its rest dropped, as recv(2) does.
    let mut buf = vec![0u8; size];
    let got = tokio::time::timeout(timeout, sock.recv(&mut buf)).await;
    drop(waiting);
    match got {
        Err(_) => nil_err(&lua, "timeout"),
        Ok(Err(e)) => nil_err(&lua, &os_error_text(&e)),
        Ok(Ok(n)) => Ok(MultiValue::from_iter([Value::String(
            lua.create_string(&buf[..n])?,
        )])),
    }
}

impl UserData for UdpSock {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_async_function(
            "setpeername",
            |lua, (ud, args): (AnyUserData, MultiValue)| setpeername(lua, ud, args),
        );
        m.add_async_function("send", |lua, (ud, args): (AnyUserData, MultiValue)| {
            send(lua, ud, args)
        });
        m.add_async_function("receive", |lua, (ud, args): (AnyUserData, MultiValue)| {
            receive(lua, ud, args)
        });
        m.add_method_mut("settimeout", |_, s, args: MultiValue| {
            if args.len() != 1 {
                return Err(mlua::Error::runtime(format!(
                    "ngx.socket settimeout: expecting at least 2 arguments (including the object) but seen {}",
                    args.len() + 1
                )));
            }
            // Zero, negative or not a number: back to the default, as nginx does.
            s.read_timeout = to_number(&args[0])
                .filter(|ms| *ms >= 1.0)
                .map(|ms| Duration::from_millis(ms as u64));
            Ok(())
        });
        m.add_method_mut("close", |lua, s, ()| {
            if s.sock.take().is_none() {
                return nil_err(lua, "closed");
            }
            ok_one()
        });
    }
}

/// `ngx.socket.udp()`: only where the request may yield, as in OpenResty.
pub fn new_socket(_: &Lua, args: MultiValue) -> mlua::Result<UdpSock> {
    if !args.is_empty() {
        return Err(mlua::Error::runtime(format!(
            "expecting zero arguments, but got {}",
            args.len()
        )));
    }
    request::allow_yield()?;
    Ok(UdpSock::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_split_as_nginx_parses_urls() {
        assert_eq!(split_port("127.0.0.1:53"), ("127.0.0.1", 53));
        assert_eq!(split_port("[::1]:53"), ("[::1]", 53));
        assert_eq!(split_port("::1"), ("::1", 0));
        assert_eq!(split_port("example.com"), ("example.com", 0));
        assert_eq!(split_port("example.com:x"), ("example.com:x", 0));
    }

    #[test]
    fn literal_addresses_need_no_resolver() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            assert_eq!(
                peer_address("[::1]", Some(53)).await.unwrap(),
                "[::1]:53".parse().unwrap()
            );
            assert_eq!(
                peer_address("10.0.0.1:5353", None).await.unwrap(),
                "10.0.0.1:5353".parse().unwrap()
            );
            assert_eq!(
                peer_address("", Some(1)).await.unwrap_err(),
                "failed to parse host name \"\": no host"
            );
        });
    }
}
