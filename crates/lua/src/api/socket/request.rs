//! `ngx.req.socket(raw?)`: the request's own sockets.
//!
//! - Without `raw`: a read-only socket over the request body (lua-resty-upload streams
//!   multipart bodies through it). It has `receive`, `receiveany`, `receiveuntil`,
//!   `settimeout` and `settimeouts`, as lua-nginx-module's; reading the whole body leaves it
//!   open, and a read past the end gives `closed`.
//! - With `raw`: the client's connection, both ways, once the response head went out with
//!   101 (a protocol switch: lua-resty-websocket's server). It adds `send`. nginx also gives a
//!   raw socket before any head is sent, for a script that writes its own response; the edge
//!   cannot lend the connection before a switch (see docs/lua.md).

use mlua::{Lua, MultiValue, Table, UserData, UserDataMethods, UserDataRefMut, Value};

use super::stream::Conn;
use super::{TcpSock, nil_err, receive};
use crate::Phase;
use crate::client_body::{BodyReader, SharedDownstream, Upgrade};
use crate::request;

/// `ngx.req.socket()`.
pub struct ReqSock(TcpSock);

/// `ngx.req.socket(true)`.
pub struct RawReqSock(TcpSock);

impl receive::Reads for ReqSock {
    fn tcp(&mut self) -> &mut TcpSock {
        &mut self.0
    }
}

impl receive::Reads for RawReqSock {
    fn tcp(&mut self) -> &mut TcpSock {
        &mut self.0
    }
}

impl UserData for ReqSock {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        receive::add_read_methods(m);
    }
}

impl UserData for RawReqSock {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        receive::add_read_methods(m);
        m.add_async_method_mut(
            "send",
            |lua, mut s: UserDataRefMut<RawReqSock>, data: Value| async move {
                s.0.send(&lua, data).await
            },
        );
    }
}

/// What the request lets `ngx.req.socket` have.
enum Grant {
    Body(crate::client_body::ClientBody),
    Raw(Upgrade),
    Refused(&'static str),
}

fn grant(raw: bool) -> mlua::Result<Grant> {
    request::with(|r| {
        if r.http_version >= 2.0 {
            return Ok(Grant::Refused("http v2 not supported yet"));
        }
        if raw {
            return Ok(match r.upgrade.take() {
                Some(u) => Grant::Raw(u),
                None => Grant::Refused("raw request socket needs a 101 response sent first"),
            });
        }
        if r.body_read || r.body_claimed {
            return Ok(Grant::Refused("request body already exists"));
        }
        let chunked = r
            .headers
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.to_ascii_lowercase().contains("chunked"))
            });
        if chunked {
            return Ok(Grant::Refused("chunked request bodies not supported yet"));
        }
        Ok(match r.client_body.take() {
            Some(b) => {
                r.body_claimed = true;
                Grant::Body(b)
            }
            None => Grant::Refused("no body"),
        })
    })
}

pub fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let req: Table = ngx.get("req")?;
    req.set(
        "socket",
        lua.create_async_function(|lua, raw: Option<bool>| async move {
            request::allow_in(&[Phase::Rewrite, Phase::Access, Phase::Content])?;
            let sock = match grant(raw.unwrap_or(false))? {
                Grant::Refused(why) => return nil_err(&lua, why),
                Grant::Body(b) => Value::UserData(lua.create_userdata(ReqSock(TcpSock {
                    stream: Some(Conn::Body(Box::new(BodyReader::new(b)))),
                    bounded: true,
                    ..TcpSock::default()
                }))?),
                Grant::Raw(upgrade) => match upgrade.await {
                    Err(e) => return nil_err(&lua, &e),
                    Ok(io) => {
                        let io = SharedDownstream::new(io);
                        request::with(|r| {
                            r.downstream = Some(io.clone());
                            Ok(())
                        })?;
                        Value::UserData(lua.create_userdata(RawReqSock(TcpSock {
                            stream: Some(Conn::Downstream(io)),
                            ..TcpSock::default()
                        }))?)
                    }
                },
            };
            Ok(MultiValue::from_iter([sock]))
        })?,
    )
}
