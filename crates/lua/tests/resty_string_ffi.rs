//! Debian's `lua-nginx-string` (lua-resty-string, `require "nginx.sha256"` and friends, installed
//! by `./test`) unchanged: it reaches libcrypto and nginx's own `ngx_hex_dump`/`ngx_atoi`
//! through `ffi.C`, and must give the standard digests.

mod support;

use outpost_lua::Phase;
use support::{block_on, get, harness};

#[test]
fn lua_resty_string_runs_unchanged_through_ffi() {
    assert!(
        std::path::Path::new("/usr/share/lua/5.1/nginx/sha256.lua").exists(),
        "needs Debian's lua-nginx-string (./test installs it)"
    );
    let h = harness();
    let req = get("/");
    let r = block_on(h.run(
        &req,
        &[(
            Phase::Content,
            r#"
            local str = require "nginx.string"
            local hex = function(name)
                local m = require("nginx." .. name):new()
                m:update("ab")
                m:update("c")
                return str.to_hex(m:final())
            end
            ngx.say(hex("md5"))
            ngx.say(hex("sha1"))
            ngx.say(hex("sha256"))
            ngx.say(str.atoi("12345"), " ", str.atoi("12a"))
            local random = require "nginx.random"
            ngx.say(#random.bytes(16), " ", #random.bytes(8, true))
            local aes = require "nginx.aes"
            local cipher = aes:new("secret key", "saltsalt", aes.cipher(256, "cbc"), aes.hash.sha512, 5)
            local enc = cipher:encrypt("hello from outpost")
            ngx.say(#enc, " ", cipher:decrypt(enc))
            "#,
        )],
    ));
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "900150983cd24fb0d6963f7d28e17f72\n\
         a9993e364706816aba3e25717850c26c9cd0d89d\n\
         ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n\
         12345 -1\n\
         16 8\n\
         32 hello from outpost\n"
    );
}
