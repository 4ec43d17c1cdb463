//! Debian's `lua-resty-lrucache` (installed by `./test`), both implementations, unchanged. Our
//! bundled `resty.lrucache` answers `require` first, so the Debian files are loaded by path.

mod support;

use outpost_lua::Phase;
use support::{block_on, get, harness};

#[test]
fn debians_lua_resty_lrucache_runs_unchanged() {
    for f in ["lrucache.lua", "lrucache/pureffi.lua"] {
        let path = format!("/usr/share/lua/5.1/resty/{f}");
        assert!(
            std::path::Path::new(&path).exists(),
            "{path}: needs Debian's lua-resty-lrucache (./test installs it)"
        );
    }
    let h = harness();
    let req = get("/");
    let r = block_on(h.run(
        &req,
        &[(
            Phase::Content,
            r#"
            for _, file in ipairs({"lrucache.lua", "lrucache/pureffi.lua"}) do
                local lrucache = dofile("/usr/share/lua/5.1/resty/" .. file)
                local c = assert(lrucache.new(2))
                c:set("a", 1)
                c:set("b", {x = 2})
                ngx.say(file, " ", c:get("a"), " ", c:get("b").x)
                c:set("c", 3)               -- evicts a: b was read after it
                ngx.say(c:get("a"), " ", c:get("c"), " ", c:count(), "/", c:capacity())
                c:set("t", "soon gone", 0.001)
                ngx.sleep(0.01)
                local v, stale = c:get("t")
                ngx.say(v, " ", stale)
                c:delete("c")
                ngx.say(c:get("c"))
                c:flush_all()
                ngx.say(c:count())
            end
            "#,
        )],
    ));
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "lrucache.lua 1 2\n\
         nil 3 2/2\n\
         nil soon gone\n\
         nil\n\
         0\n\
         lrucache/pureffi.lua 1 2\n\
         nil 3 2/2\n\
         nil soon gone\n\
         nil\n\
         0\n"
    );
}
