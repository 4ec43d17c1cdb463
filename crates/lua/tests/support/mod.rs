//! Runs Lua phase code the way the edge does, without the network: a VM on a current-thread
//! runtime with a `LocalSet`, a request built from parts, the response assembled as nginx does.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method};
use outpost_lua::{LuaResponse, LuaVm, Outcome, Phase, RequestState, SharedDicts};

pub struct Harness {
    pub vm: LuaVm,
    /// Each application's name as one config holds it (see [`Harness::new_config`]).
    names: RefCell<std::collections::HashMap<String, Arc<str>>>,
}

pub fn harness() -> Harness {
    let dicts = Arc::new(SharedDicts::default());
    dicts.configure(&[("dogs".into(), 1 << 20), ("cats".into(), 64 << 10)]);
    Harness {
        vm: LuaVm::new(0, 1, dicts, &[]).expect("VM starts"),
        names: RefCell::default(),
    }
}

pub struct Req<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// The application whose globals the request's Lua uses (`None`: `_G`).
    pub globals: Option<&'a str>,
}

impl Harness {
    /// A harness around a VM built elsewhere (with limits, modules...).
    #[allow(dead_code)] // Each test crate compiles this module; not all of them need it.
    pub fn with_vm(vm: LuaVm) -> Harness {
        Harness {
            vm,
            names: RefCell::default(),
        }
    }

    /// The requests after this come from a new config, as after a release on the edge.
    #[allow(dead_code)] // Each test crate compiles this module; not all of them reload.
    pub fn new_config(&self) {
        self.names.borrow_mut().clear();
    }

    /// The phases of a location: `rewrite`/`access` code (if any), then `content`, then
    /// `header_filter` and `body_filter` (if any). Returns what the client would get.
    pub async fn run(&self, req: &Req<'_>, phases: &[(Phase, &str)]) -> LuaResponse {
        let (path, args) = match req.path.split_once('?') {
            Some((p, a)) => (p.to_string(), Some(a.to_string())),
            None => (req.path.to_string(), None),
        };
        let mut headers = HeaderMap::new();
        for (k, v) in &req.headers {
            headers.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let mut state = RequestState::new(
            Method::from_bytes(req.method.as_bytes()).unwrap(),
            path,
            args,
            headers,
        );
        // $host: the Host header, lower-cased, without the port.
        state.host = req
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("host"))
            .map(|(_, v)| {
                v.rsplit_once(':')
                    .map_or(v.as_str(), |(h, _)| h)
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|| "localhost".into());
        // As the edge does for a client's request.
        state.decode_uri();
        state.body = req.body.clone().map(Into::into);
        // As the edge's own HTTP/1.1 path keeps it: the head of a request without a body, as
        // sent (a request with a body goes through hyper, which keeps no raw head).
        if req.body.is_none() {
            let mut raw = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
            for (k, v) in &req.headers {
                raw.push_str(&format!("{k}: {v}\r\n"));
            }
            raw.push_str("\r\n");
            state.raw_head = Some(raw.into());
        }
        state.globals = req.globals.map(|name| {
            self.names
                .borrow_mut()
                .entry(name.to_string())
                .or_insert_with(|| Arc::from(name))
                .clone()
        });
        let state = Rc::new(RefCell::new(state));
        let mut resp = None;
        for (phase, code) in phases {
            if matches!(*phase, Phase::HeaderFilter | Phase::BodyFilter) {
                break;
            }
            let out = self.vm.run("t", code, *phase, &state).await;
            match out {
                Err(e) => {
                    eprintln!("lua error: {e}");
                    resp = Some(outpost_lua::status_response(500, &HeaderMap::new()));
                    break;
                }
                Ok(Outcome::Exit(code)) if *phase != Phase::Content && code >= 200 => {
                    let mut s = state.borrow_mut();
                    resp = Some(outpost_lua::content_response(
                        &mut s,
                        Outcome::Exit(code),
                        HeaderMap::new(),
                    ));
                    break;
                }
                // Output in rewrite/access ends the request there, as nginx finalises it.
                Ok(outcome) if *phase != Phase::Content && state.borrow().headers_sent => {
                    let mut s = state.borrow_mut();
                    resp = Some(outpost_lua::content_response(
                        &mut s,
                        outcome,
                        HeaderMap::new(),
                    ));
                    break;
                }
                Ok(outcome) if *phase == Phase::Content => {
                    let mut s = state.borrow_mut();
                    resp = Some(outpost_lua::content_response(
                        &mut s,
                        outcome,
                        HeaderMap::new(),
                    ));
                }
                Ok(_) => {}
            }
        }
        let mut resp = resp.unwrap_or_else(|| outpost_lua::status_response(404, &HeaderMap::new()));
        if let Some((_, code)) = phases.iter().find(|(p, _)| *p == Phase::HeaderFilter) {
            {
                let mut s = state.borrow_mut();
                s.resp_headers = std::mem::take(&mut resp.headers);
                s.status = Some(resp.status);
            }
            let outcome = self.vm.run("t", code, Phase::HeaderFilter, &state).await;
            let mut s = state.borrow_mut();
            resp.headers = std::mem::take(&mut s.resp_headers);
            resp.status = s.status.unwrap_or(resp.status);
            match outcome {
                Err(e) => eprintln!("lua error: {e}"),
                // As the edge: the status's own page replaces the response.
                Ok(Outcome::Exit(code)) if code >= 200 => {
                    resp = outpost_lua::status_response(code as u16, &HeaderMap::new());
                }
                Ok(_) => {}
            }
        }
        if let Some((_, code)) = phases.iter().find(|(p, _)| *p == Phase::BodyFilter) {
            // As the edge: the body as one chunk (if any), then ("", true).
            {
                let mut s = state.borrow_mut();
                s.status = Some(resp.status);
                s.resp_headers = resp.headers.clone();
                s.headers_sent = true;
            }
            let mut calls = vec![(Bytes::new(), true)];
            if !resp.body.is_empty() {
                calls.insert(0, (resp.body.clone(), false));
            }
            let mut out = Vec::new();
            for (data, eof) in calls {
                match self.vm.body_filter(&[("t", code)], &state, data, eof).await {
                    Ok((data, end)) => {
                        out.extend_from_slice(&data);
                        if end {
                            break;
                        }
                    }
                    Err(e) => {
                        eprintln!("lua error: {e}");
                        break;
                    }
                }
            }
            resp.body = Bytes::from(out);
        }
        resp
    }
}

/// Runs `f` on a current-thread runtime inside a `LocalSet`, as an edge worker does.
/// A plain GET of `path`, no headers, no body.
#[allow(dead_code)] // Not every test file builds one.
pub fn get(path: &str) -> Req<'_> {
    Req {
        method: "GET",
        path,
        headers: vec![],
        body: None,
        globals: None,
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f)
}
