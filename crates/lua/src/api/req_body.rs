//! `ngx.req.read_body()`: the client's body read into memory when a script asks for it.
//!
//! As nginx: a body up to the in-memory size is readable with `get_body_data`; a larger one is
//! where nginx would write it to a file (`get_body_data` returns nil) and is left for the
//! upstream, with whatever was read of it given back to the host first. A client that breaks
//! off its body ends the request with 400, as nginx finalises it.

use bytes::BytesMut;
use mlua::{Lua, Table};

use crate::Phase;
use crate::client_body::{ClientBody, MAX_BODY_IN_MEMORY};
use crate::request::{self, ExitSignal};

pub fn install(lua: &Lua, req: &Table) -> mlua::Result<()> {
    req.set(
        "read_body",
        lua.create_async_function(|_, ()| async move {
            request::allow_in(&[Phase::Rewrite, Phase::Access, Phase::Content])?;
            let Some(body) = take_unread()? else {
                return Ok(());
            };
            read(body).await
        })?,
    )
}

/// Marks the body read and takes it, if there is one nobody has read or claimed yet.
fn take_unread() -> mlua::Result<Option<ClientBody>> {
    request::with(|r| {
        let first = !r.body_read && !r.body_claimed;
        r.body_read = true;
        Ok(first.then(|| r.client_body.take()).flatten())
    })
}

async fn read(mut body: ClientBody) -> mlua::Result<()> {
    if body.length.is_some_and(|n| n > MAX_BODY_IN_MEMORY as u64) {
        return give_back(body);
    }
    let mut buf = BytesMut::new();
    while let Some(piece) = body.next_piece().await {
        match piece {
            Ok(b) => buf.extend_from_slice(&b),
            Err(e) => {
                tracing::info!(target: "lua", error = %e, "client body broken off");
                request::with(|r| {
                    r.exit = Some(400);
                    Ok(())
                })?;
                return Err(mlua::Error::external(ExitSignal(400)));
            }
        }
        if buf.len() > MAX_BODY_IN_MEMORY {
            body.prefix.push_front(buf.freeze());
            return give_back(body);
        }
    }
    request::with(|r| {
        r.body = Some(buf.freeze());
        Ok(())
    })
}

fn give_back(body: ClientBody) -> mlua::Result<()> {
    request::with(|r| {
        r.client_body = Some(body);
        Ok(())
    })
}
