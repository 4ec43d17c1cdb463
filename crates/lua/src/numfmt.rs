//! Numbers as Lua 5.1 and lua-cjson print them: C's `%.14g`.

pub fn fmt_g14(x: f64) -> String {
    fmt_g(x, 14)
}

/// C's `%.{p}g` (`p` at least 1).
pub fn fmt_g(x: f64, p: usize) -> String {
    if x.is_nan() {
        return if x.is_sign_negative() {
            "-nan".into()
        } else {
            "nan".into()
        };
    }
    if x.is_infinite() {
        return if x < 0.0 { "-inf".into() } else { "inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let p = p.max(1);
    let prec = p as i32;
    // Round to prec significant digits first; the exponent after rounding decides the style.
    let sci = format!("{:.*e}", (prec - 1) as usize, x);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..prec).contains(&exp) {
        let m = strip_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (prec - 1 - exp).max(0) as usize;
        strip_zeros(&format!("{x:.decimals$}")).to_string()
    }
}

fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::fmt_g14;

    #[test]
    fn matches_c_printf_g14() {
        for (x, want) in [
            (0.1, "0.1"),
            (1.0 / 3.0, "0.33333333333333"),
            (100.0, "100"),
            (1e20, "1e+20"),
            (1e14, "1e+14"),
            (99999999999999.0, "99999999999999"),
            (123456.789, "123456.789"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
            (-0.0, "-0"),
            (9007199254740992.0, "9.007199254741e+15"),
        ] {
            assert_eq!(fmt_g14(x), want, "{x}");
        }
    }
}
