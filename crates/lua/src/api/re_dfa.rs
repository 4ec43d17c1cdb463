//! `ngx.re`'s `d` flag: PCRE's DFA matcher, which finds the longest match at the first position
//! where any match starts (`a|ab` on `abc` gives `ab`, where the normal matcher gives `a`). The
//! `pcre2` crate has no switch for it, so this calls `pcre2_dfa_match` through `pcre2-sys`.
//! As in lua-nginx-module, a DFA match has no captures: only the whole match.

use std::ffi::c_int;
use std::ptr;

use pcre2_sys::{
    PCRE2_ANCHORED, PCRE2_CASELESS, PCRE2_DOTALL, PCRE2_ERROR_NOMATCH, PCRE2_EXTENDED,
    PCRE2_MULTILINE, PCRE2_UTF, pcre2_code_8, pcre2_code_free_8, pcre2_compile_8,
    pcre2_dfa_match_8, pcre2_get_ovector_pointer_8, pcre2_match_data_create_8,
    pcre2_match_data_free_8,
};

/// lua-nginx-module's DFA workspace (`NGX_LUA_RE_DFA_MODE_WORKSPACE_COUNT`): a pattern that
/// needs more fails the same way there.
const WORKSPACE: usize = 100;

/// A pattern compiled for the DFA matcher.
pub struct Dfa {
    code: *mut pcre2_code_8,
}

impl Drop for Dfa {
    fn drop(&mut self) {
        // SAFETY: `code` came from `pcre2_compile_8`, is non-null, and is freed only here.
        unsafe { pcre2_code_free_8(self.code) }
    }
}

impl Dfa {
    /// Compiles `pattern` with the options `flags` gives (`i`, `m`, `s`, `x`, `u`/`U`; the
    /// others do not change compilation). The caller has already compiled it with the
    /// normal matcher, so errors here are not expected; they still come back as text.
    pub fn new(pattern: &str, flags: &str) -> Result<Dfa, String> {
        let mut options = 0u32;
        for c in flags.chars() {
            options |= match c {
                'i' => PCRE2_CASELESS,
                'm' => PCRE2_MULTILINE,
                's' => PCRE2_DOTALL,
                'x' => PCRE2_EXTENDED,
                'u' | 'U' => PCRE2_UTF,
                _ => 0,
            };
        }
        let (mut code, mut offset): (c_int, usize) = (0, 0);
        // SAFETY: the pattern pointer and length describe a live byte slice; the error
        // outputs point to locals; a null compile context selects the defaults.
        let compiled = unsafe {
            pcre2_compile_8(
                pattern.as_ptr(),
                pattern.len(),
                options,
                &mut code,
                &mut offset,
                ptr::null_mut(),
            )
        };
        if compiled.is_null() {
            return Err(format!(
                "pcre2_compile() failed: error {code} at offset {offset}"
            ));
        }
        Ok(Dfa { code: compiled })
    }

    /// The longest match starting at the first position at or after `start` where one starts
    /// (only at `start` when `anchored`), as byte offsets.
    pub fn find_at(
        &self,
        subject: &[u8],
        start: usize,
        anchored: bool,
    ) -> Result<Option<(usize, usize)>, String> {
        let options = if anchored { PCRE2_ANCHORED } else { 0 };
        let mut workspace = [0 as c_int; WORKSPACE];
        // SAFETY: one ovector pair is enough (the longest match comes first, and a full
        // ovector only means more matches were found); the subject, workspace and match data
        // outlive the call, and the match data is freed before returning.
        unsafe {
            let data = pcre2_match_data_create_8(1, ptr::null_mut());
            if data.is_null() {
                return Err("pcre2_match_data_create() failed: no memory".into());
            }
            let rc = pcre2_dfa_match_8(
                self.code,
                subject.as_ptr(),
                subject.len(),
                start,
                options,
                data,
                ptr::null_mut(),
                workspace.as_mut_ptr(),
                WORKSPACE,
            );
            let found = if rc >= 0 {
                let ov = pcre2_get_ovector_pointer_8(data);
                Ok(Some((*ov, *ov.add(1))))
            } else if rc == PCRE2_ERROR_NOMATCH {
                Ok(None)
            } else {
                Err(format!("pcre_exec() failed: {rc}"))
            };
            pcre2_match_data_free_8(data);
            found
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_longest_match_at_the_first_start() {
        let d = Dfa::new("a|ab", "").unwrap();
        assert_eq!(d.find_at(b"abc", 0, false).unwrap(), Some((0, 2)));
        assert_eq!(d.find_at(b"xxab", 0, false).unwrap(), Some((2, 4)));
        assert_eq!(d.find_at(b"xxab", 0, true).unwrap(), None);
        assert_eq!(d.find_at(b"zzz", 0, false).unwrap(), None);
        let d = Dfa::new("A+", "i").unwrap();
        assert_eq!(d.find_at(b"baaa", 0, false).unwrap(), Some((1, 4)));
    }
}
