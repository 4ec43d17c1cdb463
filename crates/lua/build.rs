//! The nginx functions OpenResty's FFI libraries call (`src/ffi_symbols.rs`) must be in the
//! dynamic symbol table of every executable that runs Lua, for `ffi.C` to find them: here,
//! this crate's test executables.
fn main() {
    for symbol in ["ngx_hex_dump", "ngx_atoi"] {
        println!("cargo:rustc-link-arg-tests=-Wl,--export-dynamic-symbol={symbol}");
    }
}
