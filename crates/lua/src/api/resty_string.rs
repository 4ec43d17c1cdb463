//! lua-resty-string's modules, ours: `resty.md5`, `resty.sha1`, `resty.sha224`, `resty.sha256`,
//! `resty.sha384`, `resty.sha512` (`:new()`, `:update(s)`, `:final()`, `:reset()`),
//! `resty.string` (`to_hex`, `atoi`) and `resty.random` (`bytes(n, strong)`).

use mlua::{Lua, Table, UserData, UserDataMethods, Value};
use sha2::Digest;

/// A digest being computed; `final` gives the binary digest, as lua-resty-string's do.
enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(algorithm: &str) -> Option<Hasher> {
        Some(match algorithm {
            "md5" => Hasher::Md5(md5::Md5::new()),
            "sha1" => Hasher::Sha1(sha1::Sha1::new()),
            "sha224" => Hasher::Sha224(sha2::Sha224::new()),
            "sha256" => Hasher::Sha256(sha2::Sha256::new()),
            "sha384" => Hasher::Sha384(sha2::Sha384::new()),
            "sha512" => Hasher::Sha512(sha2::Sha512::new()),
            _ => return None,
        })
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha224(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest so far; the state starts again, as after OpenSSL's `*_Final`.
    fn finish(&mut self) -> Vec<u8> {
        match self {
            Hasher::Md5(h) => h.finalize_reset().to_vec(),
            Hasher::Sha1(h) => h.finalize_reset().to_vec(),
            Hasher::Sha224(h) => h.finalize_reset().to_vec(),
            Hasher::Sha256(h) => h.finalize_reset().to_vec(),
            Hasher::Sha384(h) => h.finalize_reset().to_vec(),
            Hasher::Sha512(h) => h.finalize_reset().to_vec(),
        }
    }

    fn reset(&mut self) {
        match self {
            Hasher::Md5(h) => Digest::reset(h),
            Hasher::Sha1(h) => Digest::reset(h),
            Hasher::Sha224(h) => Digest::reset(h),
            Hasher::Sha256(h) => Digest::reset(h),
            Hasher::Sha384(h) => Digest::reset(h),
            Hasher::Sha512(h) => Digest::reset(h),
        }
    }
}

impl UserData for Hasher {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method_mut("update", |_, h, s: mlua::LuaString| {
            h.update(&s.as_bytes());
            Ok(true)
        });
        m.add_method_mut("final", |lua, h, ()| lua.create_string(h.finish()));
        m.add_method_mut("reset", |_, h, ()| {
            h.reset();
            Ok(true)
        });
    }
}

/// Registers the modules in `package.preload`.
pub fn install(lua: &Lua, preload: &Table) -> mlua::Result<()> {
    for algorithm in ["md5", "sha1", "sha224", "sha256", "sha384", "sha512"] {
        preload.set(
            format!("resty.{algorithm}"),
            lua.create_function(move |lua, ()| {
                let module = lua.create_table()?;
                module.set("_VERSION", "0.16")?;
                // `resty_sha256:new()`: the module is the first argument.
                module.set(
                    "new",
                    lua.create_function(move |lua, _module: Value| match Hasher::new(algorithm) {
                        Some(h) => Ok(Value::UserData(lua.create_userdata(h)?)),
                        None => Ok(Value::Nil),
                    })?,
                )?;
                Ok(module)
            })?,
        )?;
    }
    preload.set(
        "resty.string",
        lua.create_function(|lua, ()| {
            let module = lua.create_table()?;
            module.set("_VERSION", "0.16")?;
            module.set(
                "to_hex",
                lua.create_function(|_, s: mlua::LuaString| {
                    Ok(s.as_bytes()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>())
                })?,
            )?;
            // lua-resty-string's atoi is C's atoi: leading digits, 0 when there are none.
            module.set(
                "atoi",
                lua.create_function(|_, s: mlua::LuaString| {
                    let bytes = s.as_bytes();
                    let text = String::from_utf8_lossy(&bytes);
                    let t = text.trim_start();
                    let (sign, digits) = match t.strip_prefix('-') {
                        Some(rest) => (-1i64, rest),
                        None => (1, t.strip_prefix('+').unwrap_or(t)),
                    };
                    let n: i64 = digits
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .try_fold(0i64, |acc, c| {
                            acc.checked_mul(10)?.checked_add(i64::from(c as u8 - b'0'))
                        })
                        .unwrap_or(0);
                    Ok(sign * n)
                })?,
            )?;
            Ok(module)
        })?,
    )?;
    preload.set(
        "resty.random",
        lua.create_function(|lua, ()| {
            let module = lua.create_table()?;
            module.set("_VERSION", "0.16")?;
            // Both the strong and the plain source come from the OS-seeded CSPRNG here.
            module.set(
                "bytes",
                lua.create_function(|lua, (len, _strong): (i64, Option<bool>)| {
                    if len <= 0 {
                        return Ok(Value::Nil);
                    }
                    let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
                    Ok(Value::String(lua.create_string(bytes)?))
                })?,
            )?;
            Ok(module)
        })?,
    )?;
    Ok(())
}
