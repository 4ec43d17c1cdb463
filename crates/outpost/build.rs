//! The nginx functions OpenResty's FFI libraries call (`outpost_lua::ffi_symbols`) must be in
//! the executable's dynamic symbol table, for LuaJIT's `ffi.C` to find them.
fn main() {
    for symbol in ["ngx_hex_dump", "ngx_atoi"] {
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol={symbol}");
    }
}
