//! `bare-hyper ADDR WORKERS`: workers as the edge has them (a thread each, a current-thread
//! runtime, its own SO_REUSEPORT listener), each connection served by hyper's HTTP/1 server
//! with a fixed 15-byte answer: what `content_by_lua_block { ngx.say("hello from lua") }`
//! sends. Nothing else: no routing, no Lua, no metrics.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || std::io::Error::other("usage: bare-hyper ADDR WORKERS");
    let addr: SocketAddr = args
        .next()
        .ok_or_else(usage)?
        .parse()
        .map_err(|_| usage())?;
    let workers: usize = args
        .next()
        .ok_or_else(usage)?
        .parse()
        .map_err(|_| usage())?;
    let threads: Vec<_> = (0..workers)
        .map(|_| std::thread::spawn(move || worker(addr)))
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| std::io::Error::other("worker panicked"))??;
    }
    Ok(())
}

fn worker(addr: SocketAddr) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.set_reuse_port(true)?;
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        s.listen(4096)?;
        let listener = tokio::net::TcpListener::from_std(s.into())?;
        loop {
            let (conn, _) = listener.accept().await?;
            conn.set_nodelay(true)?;
            tokio::task::spawn_local(async move {
                let svc = service_fn(|_req| async {
                    let mut resp =
                        Response::new(Full::new(Bytes::from_static(b"hello from lua\n")));
                    resp.headers_mut()
                        .insert("content-type", "text/plain".parse().expect("static value"));
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), svc)
                    .await;
            });
        }
    })
}
