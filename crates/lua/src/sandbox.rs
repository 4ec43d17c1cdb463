//! The sandbox for untrusted code, applied to a whole VM: the globals every request and module
//! share are changed in place, so no chunk can reach the originals.
//!
//! Refused: running programs and exiting (`os.execute`, `os.exit`, `io.popen`), the process's
//! environment and files (`os.getenv`, `os.remove`, `os.rename`, `os.tmpname`, `io.tmpfile`,
//! stdin), files outside the allowed paths (`io.open`, `io.lines`, `io.output`, `loadfile`,
//! `dofile`), native code and introspection (`ffi`, `debug`, `jit.util`, `jit.profile`,
//! `package.loadlib`, C modules) and bytecode (`load` and `loadstring` take text only; modules
//! load from the system path fixed when the VM starts, as text).

use std::path::{Component, Path, PathBuf};

use mlua::{Lua, Table};

use crate::limits::Sandbox;

/// Makes `lua` a sandbox. `allowed_paths` that do not exist are dropped (and logged).
pub fn install(lua: &Lua, sandbox: &Sandbox) -> mlua::Result<()> {
    let allowed = canonical_roots(&sandbox.allowed_paths);
    let check = lua.create_function(move |_, (path, what): (mlua::LuaString, String)| {
        let path = path.to_str()?.to_string();
        allowed_path(&allowed, &path).map_err(|why| mlua::Error::runtime(format!("{what}: {why}")))
    })?;
    let package: Table = lua.globals().get("package")?;
    let path: String = package.get("path")?;
    lua.load(SANDBOX_LUA)
        .set_name("=outpost.sandbox")
        .call::<()>((check, path))
}

fn canonical_roots(paths: &[PathBuf]) -> Vec<PathBuf> {
    paths
        .iter()
        .filter_map(|p| match p.canonicalize() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(target: "lua", path = %p.display(), error = %e,
                    "sandbox: an allowed path does not exist, dropped");
                None
            }
        })
        .collect()
}

/// `path` made canonical (symlinks and `..` resolved; for a file not yet there, its
/// directory), if it lies under one of `roots`.
fn allowed_path(roots: &[PathBuf], path: &str) -> Result<String, String> {
    if path.contains('\0') {
        return Err("a path with a NUL byte".into());
    }
    let p = Path::new(path);
    let canonical = match p.canonicalize() {
        Ok(c) => c,
        // A file to create: its directory must exist and be allowed, and its name be a name.
        Err(_) => {
            let name = match p.components().next_back() {
                Some(Component::Normal(n)) => n,
                _ => return Err(format!("{path} is outside the sandbox's allowed paths")),
            };
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            match dir.canonicalize() {
                Ok(d) => d.join(name),
                Err(_) => return Err(format!("{path}: No such file or directory")),
            }
        }
    };
    if roots.iter().any(|r| canonical.starts_with(r)) {
        canonical
            .into_os_string()
            .into_string()
            .map_err(|_| format!("{path}: not a UTF-8 path"))
    } else {
        Err(format!("{path} is outside the sandbox's allowed paths"))
    }
}

const SANDBOX_LUA: &str = r#"
local check, system_path = ...
local error, type = error, type
local raw_loadfile = loadfile
local loaded, preload = package.loaded, package.preload

local function refuse(name)
    return function() error(name .. " is disabled in the sandbox", 2) end
end

for _, k in ipairs({ "execute", "exit", "remove", "rename", "tmpname", "getenv", "setlocale" }) do
    os[k] = refuse("os." .. k)
end

local raw_open, raw_lines, raw_output = io.open, io.lines, io.output
io.open = function(path, ...)
    if type(path) ~= "string" then
        error("bad argument #1 to 'open' (string expected, got " .. type(path) .. ")", 2)
    end
    return raw_open(check(path, "io.open"), ...)
end
io.lines = function(path, ...)
    if type(path) ~= "string" then
        error("io.lines without a file name reads stdin: disabled in the sandbox", 2)
    end
    return raw_lines(check(path, "io.lines"), ...)
end
io.output = function(f)
    if type(f) == "string" then f = check(f, "io.output") end
    return raw_output(f)
end
io.popen, io.tmpfile = refuse("io.popen"), refuse("io.tmpfile")
io.input, io.read = refuse("io.input"), refuse("io.read (stdin)")
io.stdin = nil

-- Text only: bytecode can break the VM's memory safety.
local raw_load = load
local function is_binary(chunk)
    return type(chunk) == "string" and chunk:byte(1) == 27
end
load = function(chunk, name, mode, ...)
    if is_binary(chunk) then
        return nil, "binary chunks are disabled in the sandbox"
    end
    return raw_load(chunk, name, "t", ...)
end
loadstring = function(chunk, name)
    return load(chunk, name)
end
loadfile, dofile = refuse("loadfile"), refuse("dofile")

-- No native code, no introspection.
for _, m in ipairs({ "ffi", "debug", "jit.util", "jit.profile" }) do
    loaded[m] = nil
    preload[m] = refuse("require '" .. m .. "'")
end
ffi, debug = nil, nil
local raw_jit = jit
jit = {
    version = raw_jit.version, version_num = raw_jit.version_num, os = raw_jit.os,
    arch = raw_jit.arch, status = raw_jit.status, on = raw_jit.on, off = raw_jit.off,
    flush = raw_jit.flush,
}
loaded.jit = jit

-- Modules: the preloaded ones, then Lua files on the path fixed now, read as text.
local searchpath = package.searchpath
package.loadlib = refuse("package.loadlib")
package.cpath = ""
package.loaders = {
    package.loaders[1],
    function(name)
        local file, err = searchpath(name, system_path)
        if not file then return err end
        local f, lerr = raw_loadfile(file, "t")
        if not f then
            error("error loading module '" .. name .. "' from file '" .. file .. "':\n\t" .. lerr, 2)
        end
        return f
    end,
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_before_the_prefix_check() {
        let dir = std::env::temp_dir().join(format!("outpost-sandbox-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("in")).unwrap();
        let roots = canonical_roots(&[dir.join("in")]);
        let inside = dir.join("in/new.txt");
        assert!(allowed_path(&roots, inside.to_str().unwrap()).is_ok());
        let escape = dir.join("in/../out.txt");
        assert!(allowed_path(&roots, escape.to_str().unwrap()).is_err());
        // A sibling whose name starts with the root's is not under it.
        std::fs::create_dir_all(dir.join("in2")).unwrap();
        assert!(allowed_path(&roots, dir.join("in2/x").to_str().unwrap()).is_err());
        assert!(allowed_path(&roots, "/etc/passwd").is_err());
        assert!(allowed_path(&roots, "bad\0path").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
