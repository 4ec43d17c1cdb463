//! resty.mysql's protocol paths that MariaDB does not take with this client (the edge's
//! `lua_examples` tests cover the rest against a real MariaDB): a server that asks to switch
//! to mysql_native_password with a new scramble, as MySQL 8 does for a native user when its
//! default plugin is caching_sha2_password, and a row larger than one 16 MiB packet.

mod support;

use std::cell::RefCell;
use std::rc::Rc;

use outpost_lua::Phase;
use sha1::{Digest, Sha1};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn sha1(parts: &[&[u8]]) -> Vec<u8> {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().to_vec()
}

/// mysql_native_password's answer to `scramble`, computed independently of the Lua code.
fn native_token(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    let stage1 = sha1(&[password]);
    let stage2 = sha1(&[&stage1]);
    let stage3 = sha1(&[scramble, &stage2]);
    stage1.iter().zip(stage3).map(|(a, b)| a ^ b).collect()
}

async fn send(s: &mut TcpStream, seq: u8, payload: &[u8]) {
    let n = payload.len() as u32;
    let head = [n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    s.write_all(&head).await.unwrap();
    s.write_all(payload).await.unwrap();
}

async fn recv(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.unwrap();
    let n = head[0] as usize | (head[1] as usize) << 8 | (head[2] as usize) << 16;
    let mut payload = vec![0u8; n];
    s.read_exact(&mut payload).await.unwrap();
    (head[3], payload)
}

fn cstr(b: &[u8]) -> (&[u8], &[u8]) {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    (&b[..end], b.get(end + 1..).unwrap_or(&[]))
}

/// What the server saw of the client's handshake response and switch answer.
#[derive(Default, Debug)]
struct Seen {
    user: String,
    database: String,
    plugin: String,
    sequence_ids: Vec<u8>,
    switched_token_ok: bool,
}

/// One connection of a MySQL-8-like server: handshake announcing caching_sha2_password, an
/// auth switch to mysql_native_password, then one query answered with a row of `row_len`.
async fn serve(mut s: TcpStream, seen: Rc<RefCell<Seen>>, row_len: usize) {
    let caps: u32 = 0x8 | 0x200 | 0x8000 | 0x10000 | 0x20000 | 0x80000;
    let mut hs = vec![10];
    hs.extend_from_slice(b"8.0.36-fake\0");
    hs.extend_from_slice(&7u32.to_le_bytes());
    hs.extend_from_slice(b"abcdefgh\0");
    hs.extend_from_slice(&(caps as u16).to_le_bytes());
    hs.push(45);
    hs.extend_from_slice(&2u16.to_le_bytes());
    hs.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    hs.push(21);
    hs.extend_from_slice(&[0; 10]);
    hs.extend_from_slice(b"ijklmnopqrst\0");
    hs.extend_from_slice(b"caching_sha2_password\0");
    send(&mut s, 0, &hs).await;

    let (seq, resp) = recv(&mut s).await;
    let (user, rest) = cstr(&resp[32..]);
    let token_len = rest[0] as usize;
    let (database, rest) = cstr(&rest[1 + token_len..]);
    let (plugin, _) = cstr(rest);
    {
        let mut seen = seen.borrow_mut();
        seen.user = String::from_utf8_lossy(user).into();
        seen.database = String::from_utf8_lossy(database).into();
        seen.plugin = String::from_utf8_lossy(plugin).into();
        seen.sequence_ids.push(seq);
    }

    let scramble = b"0123456789ABCDEFGHIJ";
    let mut switch = vec![0xfe];
    switch.extend_from_slice(b"mysql_native_password\0");
    switch.extend_from_slice(scramble);
    switch.push(0);
    send(&mut s, seq + 1, &switch).await;
    let (seq, token) = recv(&mut s).await;
    seen.borrow_mut().sequence_ids.push(seq);
    if token != native_token(b"s3cret", scramble) {
        let mut err = vec![0xff, 0x15, 0x04, b'#'];
        err.extend_from_slice(b"28000Access denied");
        send(&mut s, seq + 1, &err).await;
        return;
    }
    seen.borrow_mut().switched_token_ok = true;
    send(&mut s, seq + 1, &[0, 0, 0, 2, 0, 0, 0]).await;

    let (seq, query) = recv(&mut s).await;
    assert_eq!((seq, query[0]), (0, 3), "COM_QUERY with sequence 0");
    send(&mut s, 1, &[1]).await;
    let mut col = Vec::new();
    for part in [&b"def"[..], b"", b"", b"", b"v", b"v"] {
        col.push(part.len() as u8);
        col.extend_from_slice(part);
    }
    col.extend_from_slice(&[0x0c, 63, 0, 0xff, 0xff, 0xff, 0xff, 0xfc, 0, 0, 0, 0, 0]);
    send(&mut s, 2, &col).await;
    send(&mut s, 3, &[0xfe, 0, 0, 2, 0]).await;
    // The row: an 8-byte length (0xfe) then the value, split into 16 MiB - 1 packets.
    let mut row = vec![0xfe];
    row.extend_from_slice(&(row_len as u64).to_le_bytes());
    row.extend((0..row_len).map(|i| b'a' + (i % 26) as u8));
    let mut seq = 4u8;
    for chunk in row.chunks(0xff_ffff) {
        send(&mut s, seq, chunk).await;
        seq += 1;
    }
    if row.len() % 0xff_ffff == 0 {
        send(&mut s, seq, &[]).await;
        seq += 1;
    }
    send(&mut s, seq, &[0xfe, 0, 0, 2, 0]).await;
    // Stay open until the client closes.
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
}

#[test]
fn resty_mysql_follows_a_switch_to_native_password_and_joins_split_packets() {
    let h = harness();
    let seen: Rc<RefCell<Seen>> = Rc::default();
    // Longer than one packet and than 0xffffff, so its length needs the 8-byte form too.
    let row_len = 0xff_ffff + 100;
    let body = block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server_seen = seen.clone();
        tokio::task::spawn_local(async move {
            if let Ok((s, _)) = listener.accept().await {
                serve(s, server_seen, row_len).await;
            }
        });
        let code = format!(
            r#"
            local mysql = require "resty.mysql"
            local db = mysql:new()
            db:set_timeout(5000)
            local ok, err, errcode = db:connect{{ host = "127.0.0.1", port = {port},
                user = "app", password = "s3cret", database = "shop",
                max_packet_size = 32 * 1024 * 1024 }}
            ngx.say("connect ", tostring(ok), " ", tostring(err), " ", db:server_ver())
            local res, err = db:query("SELECT v")
            local v = res and res[1].v
            ngx.say("row ", tostring(err), " ", #v, " ", v:sub(1, 3), " ", v:sub(-2))
            db:close()
            "#
        );
        let r = h.run(&get("/t"), &[(Phase::Content, code.as_str())]).await;
        String::from_utf8_lossy(&r.body).into_owned()
    });
    let last = |n: usize| (b'a' + (n % 26) as u8) as char;
    assert_eq!(
        body,
        format!(
            "connect 1 nil 8.0.36-fake\nrow nil {row_len} abc {}{}\n",
            last(row_len - 2),
            last(row_len - 1)
        )
    );
    let seen = seen.borrow();
    assert_eq!(
        (
            seen.user.as_str(),
            seen.database.as_str(),
            seen.plugin.as_str()
        ),
        ("app", "shop", "mysql_native_password")
    );
    assert_eq!(
        seen.sequence_ids,
        [1, 3],
        "the client numbers its packets after the server's"
    );
    assert!(seen.switched_token_ok);
}
