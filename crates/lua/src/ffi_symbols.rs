//! What OpenResty's FFI-based libraries (lua-resty-string: `resty.sha256`, `resty.md5`,
//! `resty.random`, `resty.aes`, `resty.string`) find through `ffi.C`, which looks symbols up
//! in the process (`dlsym(RTLD_DEFAULT)`):
//! - libcrypto's functions: the system's libcrypto is loaded with `RTLD_GLOBAL` when the first
//!   VM starts (nginx links it; we speak TLS with rustls and would not have it otherwise);
//! - nginx's own `ngx_hex_dump` and `ngx_atoi`: written here, exported from the executable
//!   (each binary's build script passes `--export-dynamic-symbol` for them).

use std::sync::OnceLock;

/// The libcrypto sonames tried, newest first.
const LIBCRYPTO: &[&std::ffi::CStr] = &[c"libcrypto.so.3", c"libcrypto.so.1.1"];

/// Loads libcrypto into the global namespace once; `false` when the system has none (then
/// `ffi.C.SHA256_Init` and the like raise "undefined symbol" in the script that calls them).
pub fn load_libcrypto() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        // Referenced here so that the linker keeps them in the executable.
        std::hint::black_box((
            ngx_hex_dump as *const () as usize,
            ngx_atoi as *const () as usize,
        ));
        LIBCRYPTO.iter().any(|name| {
            // SAFETY: dlopen with a NUL-terminated name; the handle is kept for the process's
            // lifetime (never closed), as the symbols it brings may be called at any time.
            let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            !handle.is_null()
        })
    })
}

/// nginx's `ngx_hex_dump`: `len` bytes of `src` as lowercase hex into `dst` (which has room
/// for `2 * len`); returns the end of what was written.
///
/// # Safety
/// `src` must be readable for `len` bytes and `dst` writable for `2 * len` bytes, as nginx's
/// contract has it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ngx_hex_dump(dst: *mut u8, src: *const u8, len: usize) -> *mut u8 {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if len == 0 {
        return dst;
    }
    // SAFETY: the caller guarantees both ranges (nginx's contract).
    let (src, out) = unsafe {
        (
            std::slice::from_raw_parts(src, len),
            std::slice::from_raw_parts_mut(dst, 2 * len),
        )
    };
    for (i, b) in src.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    // SAFETY: one past the end of the range written.
    unsafe { dst.add(2 * len) }
}

/// nginx's `ngx_atoi`: the decimal number in `n` bytes of `line`, or `NGX_ERROR` (-1) when it
/// is empty, has anything but digits, or does not fit.
///
/// # Safety
/// `line` must be readable for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ngx_atoi(line: *const u8, n: usize) -> isize {
    if n == 0 || line.is_null() {
        return -1;
    }
    // SAFETY: the caller guarantees the range.
    let digits = unsafe { std::slice::from_raw_parts(line, n) };
    let mut value: isize = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return -1;
        }
        value = match value
            .checked_mul(10)
            .and_then(|v| v.checked_add(isize::from(d - b'0')))
        {
            Some(v) => v,
            None => return -1,
        };
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_dump_and_atoi_behave_as_nginx() {
        let mut out = [0u8; 6];
        let src = [0x00, 0xab, 0x7f];
        // SAFETY: sizes as the contract asks.
        let end = unsafe { ngx_hex_dump(out.as_mut_ptr(), src.as_ptr(), 3) };
        assert_eq!(&out, b"00ab7f");
        assert_eq!(end as usize - out.as_ptr() as usize, 6);
        let atoi = |s: &str| unsafe { ngx_atoi(s.as_ptr(), s.len()) };
        assert_eq!(atoi("12345"), 12345);
        assert_eq!(atoi(""), -1);
        assert_eq!(atoi("12a"), -1);
        assert_eq!(atoi("-1"), -1);
        assert_eq!(atoi("99999999999999999999999"), -1);
    }
}
