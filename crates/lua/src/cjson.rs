//! `cjson` and `cjson.safe` as Debian's lua-cjson 2.1.0: `%.14g` numbers, `\/` escaping, empty
//! tables as objects, excessively sparse arrays refused, `cjson.null` (the same light userdata
//! as `ngx.null`), and the `encode_*`/`decode_*` settings, per module instance.

mod decode;

use std::cell::Cell;
use std::rc::Rc;

use mlua::{LightUserData, Lua, MultiValue, Table, Value};

use crate::numfmt::fmt_g;

/// lua-cjson's per-instance settings, with its defaults.
#[derive(Clone, Copy)]
pub struct Config {
    pub precision: usize,
    pub sparse_convert: bool,
    pub sparse_ratio: i64,
    pub sparse_safe: i64,
    pub encode_max_depth: i64,
    pub decode_max_depth: i64,
    /// 0: refuse NaN and Inf; 1: write `NaN`/`Infinity`; 2: write `null`.
    pub encode_invalid_numbers: u8,
    pub decode_invalid_numbers: bool,
    pub keep_buffer: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            precision: 14,
            sparse_convert: false,
            sparse_ratio: 2,
            sparse_safe: 10,
            encode_max_depth: 1000,
            decode_max_depth: 1000,
            encode_invalid_numbers: 0,
            decode_invalid_numbers: true,
            keep_buffer: true,
        }
    }
}

pub fn null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

pub fn encode(v: &Value) -> Result<String, String> {
    encode_with(v, &Config::default())
}

pub fn encode_with(v: &Value, cfg: &Config) -> Result<String, String> {
    let mut out = String::new();
    encode_value(v, &mut out, 0, cfg)?;
    Ok(out)
}

fn number(n: f64, out: &mut String, cfg: &Config) -> Result<(), String> {
    if !n.is_finite() {
        match cfg.encode_invalid_numbers {
            0 => return Err("Cannot serialise number: must not be NaN or Inf".into()),
            1 if n.is_nan() => out.push_str("NaN"),
            1 if n < 0.0 => out.push_str("-Infinity"),
            1 => out.push_str("Infinity"),
            _ => out.push_str("null"),
        }
        return Ok(());
    }
    out.push_str(&fmt_g(n, cfg.precision));
    Ok(())
}

fn encode_value(v: &Value, out: &mut String, depth: usize, cfg: &Config) -> Result<(), String> {
    match v {
        Value::Nil => out.push_str("null"),
        Value::LightUserData(u) if u.0.is_null() => out.push_str("null"),
        Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Integer(i) => number(*i as f64, out, cfg)?,
        Value::Number(n) => number(*n, out, cfg)?,
        Value::String(s) => escape(&s.as_bytes(), out),
        Value::Table(t) => encode_table(t, out, depth + 1, cfg)?,
        other => {
            return Err(format!(
                "Cannot serialise {}: type not supported",
                other.type_name()
            ));
        }
    }
    Ok(())
}

fn escape(b: &[u8], out: &mut String) {
    let mut bytes: Vec<u8> = Vec::with_capacity(b.len() + 2);
    bytes.push(b'"');
    for &c in b {
        match c {
            b'"' => bytes.extend_from_slice(b"\\\""),
            b'\\' => bytes.extend_from_slice(b"\\\\"),
            b'/' => bytes.extend_from_slice(b"\\/"),
            b'\n' => bytes.extend_from_slice(b"\\n"),
            b'\r' => bytes.extend_from_slice(b"\\r"),
            b'\t' => bytes.extend_from_slice(b"\\t"),
            0x08 => bytes.extend_from_slice(b"\\b"),
            0x0c => bytes.extend_from_slice(b"\\f"),
            c if c < 0x20 || c == 0x7f => {
                bytes.extend_from_slice(format!("\\u{c:04x}").as_bytes());
            }
            c => bytes.push(c),
        }
    }
    bytes.push(b'"');
    // Non-UTF-8 strings pass through byte for byte, as lua-cjson does.
    out.push_str(&String::from_utf8_lossy(&bytes));
}

fn encode_table(t: &Table, out: &mut String, depth: usize, cfg: &Config) -> Result<(), String> {
    if depth as i64 > cfg.encode_max_depth {
        return Err(format!("Cannot serialise, excessive nesting ({depth})"));
    }
    // Array if every key is a positive integer (lua-cjson's `lua_array_length`).
    let mut max = 0usize;
    let mut items = 0usize;
    let mut is_array = true;
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, _) = pair.map_err(|e| e.to_string())?;
        items += 1;
        let idx = match k {
            Value::Integer(i) if i >= 1 => Some(i as usize),
            Value::Number(n) if n >= 1.0 && n.fract() == 0.0 => Some(n as usize),
            _ => None,
        };
        match idx {
            Some(i) => max = max.max(i),
            None => {
                is_array = false;
                break;
            }
        }
    }
    if items == 0 {
        out.push_str("{}");
        return Ok(());
    }
    let sparse = cfg.sparse_ratio > 0
        && max as i64 > items as i64 * cfg.sparse_ratio
        && max as i64 > cfg.sparse_safe;
    if is_array && sparse && !cfg.sparse_convert {
        return Err("Cannot serialise table: excessively sparse array".into());
    }
    if is_array && !sparse {
        out.push('[');
        for i in 1..=max {
            if i > 1 {
                out.push(',');
            }
            let v: Value = t.raw_get(i).map_err(|e| e.to_string())?;
            encode_value(&v, out, depth, cfg)?;
        }
        out.push(']');
        return Ok(());
    }
    out.push('{');
    let mut first = true;
    for pair in t.clone().pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| e.to_string())?;
        if !first {
            out.push(',');
        }
        first = false;
        match &k {
            Value::String(s) => escape(&s.as_bytes(), out),
            Value::Integer(i) => escape(fmt_g(*i as f64, cfg.precision).as_bytes(), out),
            Value::Number(n) => escape(fmt_g(*n, cfg.precision).as_bytes(), out),
            other => {
                return Err(format!(
                    "Cannot serialise {}: table key must be a number or string",
                    other.type_name()
                ));
            }
        }
        out.push(':');
        encode_value(&v, out, depth, cfg)?;
    }
    out.push('}');
    Ok(())
}

pub fn decode(lua: &Lua, text: &[u8]) -> Result<Value, String> {
    let cfg = Config::default();
    decode::decode(
        lua,
        text,
        cfg.decode_max_depth as usize,
        cfg.decode_invalid_numbers,
    )
}

/// The `cjson` module table; `safe` makes errors into `nil, message` returns.
pub fn module(lua: &Lua, safe: bool) -> mlua::Result<Table> {
    let cfg = Rc::new(Cell::new(Config::default()));
    let m = lua.create_table()?;
    m.set("null", null())?;
    m.set("_NAME", if safe { "cjson.safe" } else { "cjson" })?;
    m.set("_VERSION", "2.1.0")?;
    // The Rust functions return `nil, message`; the raising variants call Lua's `error` with
    // the message as a plain string (level 0, no position), as lua-cjson does.
    let c = cfg.clone();
    let raw_encode = lua.create_function(move |lua, v: Value| match encode_with(&v, &c.get()) {
        Ok(s) => Ok((Value::String(lua.create_string(&s)?), Value::Nil)),
        Err(e) => Ok((Value::Nil, Value::String(lua.create_string(&e)?))),
    })?;
    let c = cfg.clone();
    let raw_decode = lua.create_function(move |lua, s: Value| {
        let text = match &s {
            Value::String(s) => s.as_bytes().to_vec(),
            other => {
                return Ok((
                    Value::Nil,
                    Value::String(lua.create_string(format!(
                        "bad argument #1 to 'decode' (string expected, got {})",
                        other.type_name()
                    ))?),
                ));
            }
        };
        let cfg = c.get();
        let max = cfg.decode_max_depth.max(0) as usize;
        match decode::decode(lua, &text, max, cfg.decode_invalid_numbers) {
            Ok(v) => Ok((v, Value::Nil)),
            Err(e) => Ok((Value::Nil, Value::String(lua.create_string(&e)?))),
        }
    })?;
    if safe {
        m.set("encode", raw_encode)?;
        m.set("decode", raw_decode)?;
    } else {
        let wrap: mlua::Function = lua
            .load("local f = ... return function(v) local r, e = f(v) if e then error(e, 0) end return r end")
            .set_name("=cjson")
            .into_function()?;
        m.set("encode", wrap.call::<mlua::Function>(raw_encode)?)?;
        m.set("decode", wrap.call::<mlua::Function>(raw_decode)?)?;
    }
    settings(lua, &m, &cfg)?;
    m.set(
        "new",
        lua.create_function(move |lua, ()| module(lua, safe))?,
    )?;
    Ok(m)
}

/// lua-cjson's `luaL_argerror` wording; called through `pcall` the name is `?`.
fn arg_error(msg: &str) -> mlua::Error {
    mlua::Error::runtime(format!("bad argument #1 to '?' ({msg})"))
}

/// `json_integer_option`: sets the value when given, returns the current one.
fn int_option(v: &Value, slot: &mut i64, min: i64, max: i64) -> mlua::Result<Value> {
    let n = match v {
        Value::Nil => None,
        Value::Integer(i) => Some(*i),
        Value::Number(n) => Some(*n as i64),
        other => {
            return Err(arg_error(&format!(
                "number expected, got {}",
                other.type_name()
            )));
        }
    };
    if let Some(n) = n {
        if !(min..=max).contains(&n) {
            return Err(arg_error(&format!(
                "expected integer between {min} and {max}"
            )));
        }
        *slot = n;
    }
    Ok(Value::Integer(*slot))
}

/// `json_enum_option` over `off`/`on` (and more `names`): returns a boolean for the first two.
fn enum_option(lua: &Lua, v: &Value, slot: &mut u8, names: &[&str]) -> mlua::Result<Value> {
    match v {
        Value::Nil => {}
        Value::Boolean(b) => *slot = u8::from(*b),
        Value::String(s) => {
            let s = s.to_str()?;
            match names.iter().position(|n| *n == &*s) {
                Some(i) => *slot = i as u8,
                None => return Err(arg_error(&format!("invalid option '{}'", &*s))),
            }
        }
        other => {
            return Err(arg_error(&format!(
                "string expected, got {}",
                other.type_name()
            )));
        }
    }
    Ok(if *slot < 2 {
        Value::Boolean(*slot == 1)
    } else {
        Value::String(lua.create_string(names[*slot as usize])?)
    })
}

const ON_OFF: &[&str] = &["off", "on"];

fn settings(lua: &Lua, m: &Table, cfg: &Rc<Cell<Config>>) -> mlua::Result<()> {
    type Setter = fn(&Lua, &mut Config, &[Value]) -> mlua::Result<MultiValue>;
    let all: [(&str, usize, Setter); 7] = [
        ("encode_sparse_array", 3, |lua, c, a| {
            let mut conv = u8::from(c.sparse_convert);
            let r = [
                enum_option(lua, &a[0], &mut conv, ON_OFF)?,
                int_option(&a[1], &mut c.sparse_ratio, 0, i32::MAX.into())?,
                int_option(&a[2], &mut c.sparse_safe, 0, i32::MAX.into())?,
            ];
            c.sparse_convert = conv == 1;
            Ok(MultiValue::from_iter(r))
        }),
        ("encode_max_depth", 1, |_, c, a| {
            Ok(MultiValue::from_iter([int_option(
                &a[0],
                &mut c.encode_max_depth,
                1,
                i32::MAX.into(),
            )?]))
        }),
        ("decode_max_depth", 1, |_, c, a| {
            Ok(MultiValue::from_iter([int_option(
                &a[0],
                &mut c.decode_max_depth,
                1,
                i32::MAX.into(),
            )?]))
        }),
        ("encode_number_precision", 1, |_, c, a| {
            let mut p = c.precision as i64;
            let r = int_option(&a[0], &mut p, 1, 14)?;
            c.precision = p as usize;
            Ok(MultiValue::from_iter([r]))
        }),
        ("encode_keep_buffer", 1, |lua, c, a| {
            let mut k = u8::from(c.keep_buffer);
            let r = enum_option(lua, &a[0], &mut k, ON_OFF)?;
            c.keep_buffer = k == 1;
            Ok(MultiValue::from_iter([r]))
        }),
        ("encode_invalid_numbers", 1, |lua, c, a| {
            let r = enum_option(
                lua,
                &a[0],
                &mut c.encode_invalid_numbers,
                &["off", "on", "null"],
            )?;
            Ok(MultiValue::from_iter([r]))
        }),
        ("decode_invalid_numbers", 1, |lua, c, a| {
            let mut d = u8::from(c.decode_invalid_numbers);
            let r = enum_option(lua, &a[0], &mut d, ON_OFF)?;
            c.decode_invalid_numbers = d == 1;
            Ok(MultiValue::from_iter([r]))
        }),
    ];
    for (name, nargs, set) in all {
        let cfg = cfg.clone();
        m.set(
            name,
            lua.create_function(move |lua, args: MultiValue| {
                if args.len() > nargs {
                    return Err(mlua::Error::runtime(format!(
                        "bad argument #{} to '?' (found too many arguments)",
                        nargs + 1
                    )));
                }
                let mut a: Vec<Value> = args.into_iter().collect();
                a.resize(nargs, Value::Nil);
                let mut c = cfg.get();
                let r = set(lua, &mut c, &a)?;
                cfg.set(c);
                Ok(r)
            })?,
        )?;
    }
    Ok(())
}
