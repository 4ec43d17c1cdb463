//! `ngx.re` on PCRE2 (the `pcre2` crate), as lua-nginx-module has it on PCRE: `match`, `find`,
//! `gmatch`, `sub`, `gsub`, and `split` from `require "ngx.re"`. Unmatched groups are `false`;
//! named groups are also set by name; `ctx.pos` is honoured and advanced. The `d` flag
//! matches with PCRE's DFA matcher instead (`re_dfa.rs`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use mlua::{Function, Lua, MultiValue, Table, Value};
use pcre2::bytes::{CaptureLocations, Regex, RegexBuilder};

use super::re_dfa::Dfa;

/// Compiled patterns per VM, as `lua_regex_cache_max_entries` (1024) bounds nginx's.
#[derive(Default)]
struct Cache(HashMap<(Vec<u8>, String), Rc<Compiled>>);

/// A pattern, and with the `d` flag its DFA form, which then does the matching.
struct Compiled {
    re: Regex,
    dfa: Option<Dfa>,
}

impl std::ops::Deref for Compiled {
    type Target = Regex;
    fn deref(&self) -> &Regex {
        &self.re
    }
}

/// Where a match and its groups are: the normal matcher's, or the DFA's whole match.
enum Locs {
    Groups(CaptureLocations),
    Whole(usize, usize),
}

impl Locs {
    fn len(&self) -> usize {
        match self {
            Locs::Groups(l) => l.len(),
            Locs::Whole(..) => 1,
        }
    }

    fn get(&self, i: usize) -> Option<(usize, usize)> {
        match self {
            Locs::Groups(l) => l.get(i),
            Locs::Whole(s, e) => (i == 0).then_some((*s, *e)),
        }
    }
}

const CACHE_MAX: usize = 1024;

fn compile(cache: &RefCell<Cache>, pattern: &[u8], flags: &str) -> Result<Rc<Compiled>, String> {
    let key = (pattern.to_vec(), flags.to_string());
    if let Some(r) = cache.borrow().0.get(&key) {
        return Ok(r.clone());
    }
    let mut b = RegexBuilder::new();
    for c in flags.chars() {
        match c {
            'i' => {
                b.caseless(true);
            }
            'm' => {
                b.multi_line(true);
            }
            's' => {
                b.dotall(true);
            }
            'x' => {
                b.extended(true);
            }
            'u' | 'U' => {
                b.utf(true);
            }
            'j' => {
                b.jit_if_available(true);
            }
            // Anchoring is applied at match time; caching is always on; DFA mode is below;
            // duplicate names and JavaScript compatibility have no switch in the pcre2 crate.
            'a' | 'o' | 'd' | 'D' | 'J' => {}
            other => return Err(format!("\u{0}unknown flag \"{other}\" (flags \"{flags}\")")),
        }
    }
    let pat = std::str::from_utf8(pattern).map_err(|_| "pattern is not valid UTF-8".to_string())?;
    let re = b.build(pat).map_err(|e| compile_error(&e, pat))?;
    let dfa = if flags.contains('d') {
        Some(Dfa::new(pat, flags)?)
    } else {
        None
    };
    let re = Rc::new(Compiled { re, dfa });
    let mut c = cache.borrow_mut();
    if c.0.len() >= CACHE_MAX {
        c.0.clear();
    }
    c.0.insert(key, re.clone());
    Ok(re)
}

fn subject_bytes(v: &Value) -> mlua::Result<Vec<u8>> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Integer(i) => Ok(crate::numfmt::fmt_g14(*i as f64).into_bytes()),
        Value::Number(n) => Ok(crate::numfmt::fmt_g14(*n).into_bytes()),
        other => Err(mlua::Error::runtime(format!(
            "bad argument #1 to '?' (string expected, got {})",
            other.type_name()
        ))),
    }
}

/// One match at or after `start` (anchored there with the `a` flag): the capture locations.
fn find_at(
    re: &Compiled,
    subject: &[u8],
    start: usize,
    anchored: bool,
) -> Result<Option<Locs>, String> {
    if let Some(dfa) = &re.dfa {
        return Ok(dfa
            .find_at(subject, start, anchored)?
            .map(|(s, e)| Locs::Whole(s, e)));
    }
    let mut locs = re.capture_locations();
    match re.captures_read_at(&mut locs, subject, start) {
        Ok(Some(m)) if !anchored || m.start() == start => Ok(Some(Locs::Groups(locs))),
        Ok(_) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn captures_table(lua: &Lua, re: &Regex, subject: &[u8], locs: &Locs) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for i in 0..locs.len() {
        let v = match locs.get(i) {
            Some((s, e)) => Value::String(lua.create_string(&subject[s..e])?),
            None => Value::Boolean(false),
        };
        t.raw_set(i, v.clone())?;
    }
    // A DFA match has no groups, named or not.
    let names = match locs {
        Locs::Groups(_) => re.capture_names(),
        Locs::Whole(..) => &[],
    };
    for (i, name) in names.iter().enumerate() {
        if let Some(name) = name {
            let v = match locs.get(i) {
                Some((s, e)) => Value::String(lua.create_string(&subject[s..e])?),
                None => Value::Boolean(false),
            };
            t.raw_set(name.as_str(), v)?;
        }
    }
    Ok(t)
}

fn ctx_pos(ctx: &Option<Table>) -> mlua::Result<usize> {
    Ok(match ctx {
        Some(c) => c.get::<Option<i64>>("pos")?.unwrap_or(1).max(1) as usize - 1,
        None => 0,
    })
}

/// The first match for `match` and `find`: compiled with `flags`, searched from `ctx.pos`
/// (which it advances). `Err` holds what to return instead: `nil`, or `nil, err`.
fn first_match(
    lua: &Lua,
    cache: &RefCell<Cache>,
    subject: &[u8],
    pattern: &mlua::LuaString,
    flags: &str,
    ctx: &Option<Table>,
) -> mlua::Result<Result<(Rc<Compiled>, Locs), MultiValue>> {
    let re = match compile(cache, &pattern.as_bytes(), flags) {
        Ok(r) => r,
        Err(e) => return err2(lua, e).map(Err),
    };
    let pos = ctx_pos(ctx)?;
    if pos > subject.len() {
        return Ok(Err(MultiValue::from_iter([Value::Nil])));
    }
    match find_at(&re, subject, pos, flags.contains('a')) {
        Ok(Some(locs)) => {
            if let (Some(ctx), Some((_, e))) = (ctx, locs.get(0)) {
                ctx.set("pos", e + 1)?;
            }
            Ok(Ok((re, locs)))
        }
        Ok(None) => Ok(Err(MultiValue::from_iter([Value::Nil]))),
        Err(e) => err2(lua, e).map(Err),
    }
}

/// `nil, err` for a failed compile; an unknown flag (marked with a leading NUL) raises, as
/// lua-resty-core's `ngx.re` does.
fn err2(lua: &Lua, e: String) -> mlua::Result<MultiValue> {
    if let Some(msg) = e.strip_prefix('\u{0}') {
        return Err(mlua::Error::runtime(msg.to_string()));
    }
    Ok(MultiValue::from_iter([
        Value::Nil,
        Value::String(lua.create_string(e)?),
    ]))
}

/// Expands `$0`, `$1`, `${name}`, `$$` in a replacement template.
fn expand(template: &[u8], re: &Regex, subject: &[u8], locs: &Locs) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    let group = |idx: usize, out: &mut Vec<u8>| {
        if let Some((s, e)) = locs.get(idx) {
            out.extend_from_slice(&subject[s..e]);
        }
    };
    while i < template.len() {
        let c = template[i];
        if c != b'$' {
            out.push(c);
            i += 1;
            continue;
        }
        let rest = &template[i + 1..];
        match rest.first() {
            Some(b'$') => {
                out.push(b'$');
                i += 2;
            }
            Some(d) if d.is_ascii_digit() => {
                let n = rest.iter().take_while(|c| c.is_ascii_digit()).count();
                let idx: usize = std::str::from_utf8(&rest[..n])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(usize::MAX);
                group(idx, &mut out);
                i += 1 + n;
            }
            Some(b'{') => {
                let Some(end) = rest.iter().position(|&c| c == b'}') else {
                    return Err("failed to compile the replacement template".into());
                };
                let name = &rest[1..end];
                let idx = match std::str::from_utf8(name)
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
                {
                    Some(n) => n,
                    None => re
                        .capture_names()
                        .iter()
                        .position(|n| n.as_deref().map(str::as_bytes) == Some(name))
                        .unwrap_or(usize::MAX),
                };
                group(idx, &mut out);
                i += 2 + end;
            }
            _ => {
                return Err("failed to compile the replacement template".into());
            }
        }
    }
    Ok(out)
}

fn substitute(
    lua: &Lua,
    cache: &RefCell<Cache>,
    (subject, pattern, replace, flags): (Value, mlua::LuaString, Value, Option<String>),
    global: bool,
) -> mlua::Result<MultiValue> {
    let subject = subject_bytes(&subject)?;
    let flags = flags.unwrap_or_default();
    let re = match compile(cache, &pattern.as_bytes(), &flags) {
        Ok(r) => r,
        Err(e) => {
            return Ok(MultiValue::from_iter([
                Value::Nil,
                Value::Nil,
                Value::String(lua.create_string(e)?),
            ]));
        }
    };
    let anchored = flags.contains('a');
    let mut out = Vec::with_capacity(subject.len());
    let mut pos = 0;
    let mut last = 0;
    let mut n = 0;
    while pos <= subject.len() {
        let locs = match find_at(&re, &subject, pos, anchored) {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                return Ok(MultiValue::from_iter([
                    Value::Nil,
                    Value::Nil,
                    Value::String(lua.create_string(e)?),
                ]));
            }
        };
        let (s, e) = locs.get(0).unwrap_or((pos, pos));
        out.extend_from_slice(&subject[last..s]);
        let replacement = match &replace {
            Value::Function(f) => {
                let caps = captures_table(lua, &re, &subject, &locs)?;
                let r: Value = f.call(caps)?;
                match r {
                    Value::String(s) => s.as_bytes().to_vec(),
                    Value::Integer(i) => crate::numfmt::fmt_g14(i as f64).into_bytes(),
                    Value::Number(x) => crate::numfmt::fmt_g14(x).into_bytes(),
                    other => {
                        return Err(mlua::Error::runtime(format!(
                            "bad argument #3 to '?' (string expected, got {})",
                            other.type_name()
                        )));
                    }
                }
            }
            v => {
                let t = subject_bytes(v)?;
                match expand(&t, &re, &subject, &locs) {
                    Ok(x) => x,
                    Err(e) => {
                        return Ok(MultiValue::from_iter([
                            Value::Nil,
                            Value::Nil,
                            Value::String(lua.create_string(e)?),
                        ]));
                    }
                }
            }
        };
        out.extend_from_slice(&replacement);
        n += 1;
        last = e;
        if !global {
            break;
        }
        // An empty match moves one byte on, so the loop always progresses.
        pos = if e == s {
            if e < subject.len() {
                out.push(subject[e]);
            }
            last = e + 1;
            e + 1
        } else {
            e
        };
    }
    if last < subject.len() {
        out.extend_from_slice(&subject[last..]);
    }
    Ok(MultiValue::from_iter([
        Value::String(lua.create_string(out)?),
        Value::Integer(n),
    ]))
}

pub fn install(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let cache = Rc::new(RefCell::new(Cache::default()));
    let re_t = lua.create_table()?;

    let c = cache.clone();
    re_t.set(
        "match",
        lua.create_function(
            move |lua,
                  (subject, pattern, flags, ctx): (
                Value,
                mlua::LuaString,
                Option<String>,
                Option<Table>,
            )| {
                if subject.is_nil() {
                    return Ok(MultiValue::from_iter([Value::Nil]));
                }
                let subject = subject_bytes(&subject)?;
                let flags = flags.unwrap_or_default();
                match first_match(lua, &c, &subject, &pattern, &flags, &ctx)? {
                    Ok((re, locs)) => Ok(MultiValue::from_iter([Value::Table(captures_table(
                        lua, &re, &subject, &locs,
                    )?)])),
                    Err(none) => Ok(none),
                }
            },
        )?,
    )?;

    let c = cache.clone();
    re_t.set(
        "find",
        lua.create_function(
            move |lua,
                  (subject, pattern, flags, ctx, nth): (
                Value,
                mlua::LuaString,
                Option<String>,
                Option<Table>,
                Option<usize>,
            )| {
                let subject = subject_bytes(&subject)?;
                let flags = flags.unwrap_or_default();
                match first_match(lua, &c, &subject, &pattern, &flags, &ctx)? {
                    Ok((_, locs)) => match locs.get(nth.unwrap_or(0)) {
                        Some((s, e)) => Ok(MultiValue::from_iter([
                            Value::Integer(s as i64 + 1),
                            Value::Integer(e as i64),
                        ])),
                        None => Ok(MultiValue::from_iter([Value::Nil])),
                    },
                    Err(none) => Ok(none),
                }
            },
        )?,
    )?;

    let c = cache.clone();
    re_t.set(
        "gmatch",
        lua.create_function(
            move |lua, (subject, pattern, flags): (Value, mlua::LuaString, Option<String>)| {
                let subject = subject_bytes(&subject)?;
                let flags = flags.unwrap_or_default();
                let re = match compile(&c, &pattern.as_bytes(), &flags) {
                    Ok(r) => r,
                    Err(e) => return err2(lua, e),
                };
                let anchored = flags.contains('a');
                let pos = Rc::new(RefCell::new(Some(0usize)));
                let iter: Function = lua.create_function(move |lua, ()| {
                    let Some(start) = *pos.borrow() else {
                        return Ok(MultiValue::from_iter([Value::Nil]));
                    };
                    if start > subject.len() {
                        *pos.borrow_mut() = None;
                        return Ok(MultiValue::from_iter([Value::Nil]));
                    }
                    match find_at(&re, &subject, start, anchored) {
                        Ok(Some(locs)) => {
                            let (s, e) = locs.get(0).unwrap_or((start, start));
                            *pos.borrow_mut() = Some(if e == s { e + 1 } else { e });
                            Ok(MultiValue::from_iter([Value::Table(captures_table(
                                lua, &re, &subject, &locs,
                            )?)]))
                        }
                        Ok(None) => {
                            *pos.borrow_mut() = None;
                            Ok(MultiValue::from_iter([Value::Nil]))
                        }
                        Err(e) => err2(lua, e),
                    }
                })?;
                Ok(MultiValue::from_iter([Value::Function(iter)]))
            },
        )?,
    )?;

    let c = cache.clone();
    re_t.set(
        "sub",
        lua.create_function(move |lua, args| substitute(lua, &c, args, false))?,
    )?;
    let c = cache.clone();
    re_t.set(
        "gsub",
        lua.create_function(move |lua, args| substitute(lua, &c, args, true))?,
    )?;

    // `require "ngx.re"`: split (and the same match functions).
    let c = cache;
    let split = lua.create_function(
        move |lua,
              (subject, pattern, flags, _ctx, max): (
            Value,
            mlua::LuaString,
            Option<String>,
            Value,
            Option<i64>,
        )| {
            let subject = subject_bytes(&subject)?;
            let flags = flags.unwrap_or_default();
            let re = match compile(&c, &pattern.as_bytes(), &flags) {
                Ok(r) => r,
                Err(e) => return err2(lua, e),
            };
            let t = lua.create_table()?;
            let max = max.unwrap_or(0);
            let mut pos = 0;
            let mut last = 0;
            let mut n = 0i64;
            while pos < subject.len() {
                if max > 0 && n + 1 >= max {
                    break;
                }
                let Ok(Some(locs)) = find_at(&re, &subject, pos, false) else {
                    break;
                };
                let (s, e) = locs.get(0).unwrap_or((pos, pos));
                if e == s {
                    // An empty separator splits between characters.
                    if s >= subject.len() {
                        break;
                    }
                    if s == last {
                        pos = s + 1;
                        continue;
                    }
                }
                t.raw_push(lua.create_string(&subject[last..s])?)?;
                n += 1;
                for i in 1..locs.len() {
                    if let Some((a, b)) = locs.get(i) {
                        t.raw_push(lua.create_string(&subject[a..b])?)?;
                    }
                }
                last = e;
                pos = if e == s { e + 1 } else { e };
            }
            // lua-resty-core adds the rest only when it is not empty: no trailing "".
            if last < subject.len() {
                t.raw_push(lua.create_string(&subject[last..])?)?;
            }
            Ok(MultiValue::from_iter([Value::Table(t)]))
        },
    )?;
    let module = lua.create_table()?;
    module.set("split", split)?;
    for name in ["match", "find", "gmatch", "sub", "gsub"] {
        module.set(name, re_t.get::<Value>(name)?)?;
    }
    module.set("opt", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    loaded.set("ngx.re", module)?;
    ngx.set("re", re_t)?;
    Ok(())
}

/// A compile error worded as nginx words it: PCRE's message, the pattern, and the rest of the
/// pattern from where PCRE stopped when that is not its end. The messages that PCRE2 words
/// differently from the PCRE that lua-nginx-module is built with read as the latter.
fn compile_error(e: &pcre2::Error, pat: &str) -> String {
    let message = e.to_string();
    // The crate's prefix: "PCRE2: error compiling pattern[ at offset N]: message".
    let message = message
        .split_once(": ")
        .map_or(message.as_str(), |(_, m)| m);
    let message = message.split_once(": ").map_or(message, |(_, m)| m);
    let message = match e.code() {
        109 => "nothing to repeat",
        114 => "missing )",
        118 => "missing ) after comment",
        122 => "unmatched parentheses",
        _ => message,
    };
    match e.offset().and_then(|o| pat.get(o..)) {
        Some(rest) if !rest.is_empty() => {
            format!("pcre_compile() failed: {message} in \"{pat}\" at \"{rest}\"")
        }
        _ => format!("pcre_compile() failed: {message} in \"{pat}\""),
    }
}
