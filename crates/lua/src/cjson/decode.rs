//! lua-cjson 2.1.0's decoder, token for token, so that what it accepts (leading zeros, `1e400`,
//! hex and `inf`/`nan` numbers) and the wording of its errors
//! (`Expected comma or array end but found T_END at character 5`) are the same.

use mlua::{Lua, Value};

/// A token and where it starts (0-based, shown 1-based in errors).
enum Tok {
    ObjBegin,
    ObjEnd,
    ArrBegin,
    ArrEnd,
    Str(Vec<u8>),
    Num(f64),
    Bool(bool),
    Null,
    Colon,
    Comma,
    End,
    /// A bad token, with lua-cjson's words for it ("invalid token", "invalid escape code").
    Error(&'static str),
}

impl Tok {
    fn name(&self) -> &'static str {
        match self {
            Tok::ObjBegin => "T_OBJ_BEGIN",
            Tok::ObjEnd => "T_OBJ_END",
            Tok::ArrBegin => "T_ARR_BEGIN",
            Tok::ArrEnd => "T_ARR_END",
            Tok::Str(_) => "T_STRING",
            Tok::Num(_) => "T_NUMBER",
            Tok::Bool(_) => "T_BOOLEAN",
            Tok::Null => "T_NULL",
            Tok::Colon => "T_COLON",
            Tok::Comma => "T_COMMA",
            Tok::End => "T_END",
            Tok::Error(why) => why,
        }
    }
}

struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
    depth: usize,
    max_depth: usize,
    invalid_numbers: bool,
}

/// Decodes `text`; errors are lua-cjson's messages.
pub fn decode(
    lua: &Lua,
    text: &[u8],
    max_depth: usize,
    invalid_numbers: bool,
) -> Result<Value, String> {
    // lua-cjson reads a C string: input ends at the first NUL.
    if text.len() >= 2 && (text[0] == 0 || text[1] == 0) {
        return Err("JSON parser does not support UTF-16 or UTF-32".into());
    }
    let mut p = Parser {
        data: text,
        pos: 0,
        depth: 0,
        max_depth,
        invalid_numbers,
    };
    let (tok, at) = p.next();
    let v = p.value(lua, tok, at)?;
    match p.next() {
        (Tok::End, _) => Ok(v),
        (tok, at) => Err(expected("the end", &tok, at)),
    }
}

fn expected(what: &str, tok: &Tok, at: usize) -> String {
    format!(
        "Expected {what} but found {} at character {}",
        tok.name(),
        at + 1
    )
}

impl Parser<'_> {
    fn byte(&self, i: usize) -> u8 {
        self.data.get(i).copied().unwrap_or(0)
    }

    fn next(&mut self) -> (Tok, usize) {
        while matches!(self.byte(self.pos), b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
        let at = self.pos;
        let c = self.byte(at);
        let single = match c {
            0 => return (Tok::End, at),
            b'{' => Some(Tok::ObjBegin),
            b'}' => Some(Tok::ObjEnd),
            b'[' => Some(Tok::ArrBegin),
            b']' => Some(Tok::ArrEnd),
            b':' => Some(Tok::Colon),
            b',' => Some(Tok::Comma),
            _ => None,
        };
        if let Some(t) = single {
            self.pos += 1;
            return (t, at);
        }
        let rest = &self.data[at..];
        if c == b'"' {
            return self.string();
        }
        if c == b'-' || c.is_ascii_digit() {
            if !self.invalid_numbers && self.is_invalid_number() {
                return (Tok::Error("invalid number"), at);
            }
            return self.number();
        }
        for (word, tok) in [
            (&b"true"[..], Tok::Bool(true)),
            (b"false", Tok::Bool(false)),
            (b"null", Tok::Null),
        ] {
            if rest.starts_with(word) {
                self.pos += word.len();
                return (tok, at);
            }
        }
        // Only these letters (and `+`) start a token lua-cjson looks at further.
        if matches!(c, b'i' | b'I' | b'n' | b'N' | b'+')
            && self.invalid_numbers
            && self.is_invalid_number()
        {
            return self.number();
        }
        (Tok::Error("invalid token"), at)
    }

    /// lua-cjson's `json_is_invalid_number`: valid for strtod but not for JSON.
    fn is_invalid_number(&self) -> bool {
        let mut p = self.pos;
        match self.byte(p) {
            b'+' => return true,
            b'-' => p += 1,
            _ => {}
        }
        match self.byte(p) {
            b'0' => {
                let c2 = self.byte(p + 1);
                (c2 | 0x20) == b'x' || c2.is_ascii_digit()
            }
            c if c <= b'9' => false,
            _ => {
                let word = self.data.get(p..p + 3).unwrap_or(b"");
                word.eq_ignore_ascii_case(b"inf") || word.eq_ignore_ascii_case(b"nan")
            }
        }
    }

    fn number(&mut self) -> (Tok, usize) {
        let at = self.pos;
        match strtod(&self.data[at..]) {
            Some((n, used)) => {
                self.pos += used;
                (Tok::Num(n), at)
            }
            None => (Tok::Error("invalid number"), at),
        }
    }

    fn string(&mut self) -> (Tok, usize) {
        let at = self.pos;
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let c = self.byte(self.pos);
            match c {
                b'"' => break,
                0 => return (Tok::Error("unexpected end of string"), self.pos),
                b'\\' => {
                    let mapped = match self.byte(self.pos + 1) {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            match self.unicode_escape() {
                                Some((ch, len)) => {
                                    let mut buf = [0u8; 4];
                                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                                    self.pos += len;
                                }
                                None => {
                                    return (Tok::Error("invalid unicode escape code"), self.pos);
                                }
                            }
                            continue;
                        }
                        _ => return (Tok::Error("invalid escape code"), self.pos),
                    };
                    out.push(mapped);
                    self.pos += 2;
                }
                c => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
        self.pos += 1;
        (Tok::Str(out), at)
    }

    /// `\uXXXX`, or a surrogate pair of them: the character and the escape's length.
    fn unicode_escape(&self) -> Option<(char, usize)> {
        let hex4 = |i: usize| -> Option<u32> {
            let s = std::str::from_utf8(self.data.get(i..i + 4)?).ok()?;
            if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            u32::from_str_radix(s, 16).ok()
        };
        let hi = hex4(self.pos + 2)?;
        if hi & 0xF800 != 0xD800 {
            return char::from_u32(hi).map(|c| (c, 6));
        }
        if hi & 0x400 != 0 || self.data.get(self.pos + 6..self.pos + 8) != Some(b"\\u") {
            return None;
        }
        let lo = hex4(self.pos + 8)?;
        if lo & 0xFC00 != 0xDC00 {
            return None;
        }
        char::from_u32((((hi & 0x3FF) << 10) | (lo & 0x3FF)) + 0x10000).map(|c| (c, 12))
    }

    fn descend(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(format!(
                "Found too many nested data structures ({}) at character {}",
                self.depth, self.pos
            ));
        }
        Ok(())
    }

    fn value(&mut self, lua: &Lua, tok: Tok, at: usize) -> Result<Value, String> {
        let lua_err = |e: mlua::Error| e.to_string();
        Ok(match tok {
            Tok::Str(s) => Value::String(lua.create_string(&s).map_err(lua_err)?),
            Tok::Num(n) => Value::Number(n),
            Tok::Bool(b) => Value::Boolean(b),
            Tok::Null => super::null(),
            Tok::ObjBegin => self.object(lua)?,
            Tok::ArrBegin => self.array(lua)?,
            tok => return Err(expected("value", &tok, at)),
        })
    }

    fn object(&mut self, lua: &Lua) -> Result<Value, String> {
        let lua_err = |e: mlua::Error| e.to_string();
        self.descend()?;
        let t = lua.create_table().map_err(lua_err)?;
        let (mut tok, mut at) = self.next();
        if matches!(tok, Tok::ObjEnd) {
            self.depth -= 1;
            return Ok(Value::Table(t));
        }
        loop {
            let Tok::Str(key) = tok else {
                return Err(expected("object key string", &tok, at));
            };
            let (colon, cat) = self.next();
            if !matches!(colon, Tok::Colon) {
                return Err(expected("colon", &colon, cat));
            }
            let (vt, vat) = self.next();
            let v = self.value(lua, vt, vat)?;
            t.raw_set(lua.create_string(&key).map_err(lua_err)?, v)
                .map_err(lua_err)?;
            let (sep, sat) = self.next();
            match sep {
                Tok::ObjEnd => {
                    self.depth -= 1;
                    return Ok(Value::Table(t));
                }
                Tok::Comma => {}
                other => return Err(expected("comma or object end", &other, sat)),
            }
            (tok, at) = self.next();
        }
    }

    fn array(&mut self, lua: &Lua) -> Result<Value, String> {
        let lua_err = |e: mlua::Error| e.to_string();
        self.descend()?;
        let t = lua.create_table().map_err(lua_err)?;
        let (mut tok, mut at) = self.next();
        if matches!(tok, Tok::ArrEnd) {
            self.depth -= 1;
            return Ok(Value::Table(t));
        }
        for i in 1.. {
            let v = self.value(lua, tok, at)?;
            t.raw_set(i, v).map_err(lua_err)?;
            let (sep, sat) = self.next();
            match sep {
                Tok::ArrEnd => break,
                Tok::Comma => {}
                other => return Err(expected("comma or array end", &other, sat)),
            }
            (tok, at) = self.next();
        }
        self.depth -= 1;
        Ok(Value::Table(t))
    }
}

/// C's `strtod` on the front of `s`: the number and how many bytes it used.
fn strtod(s: &[u8]) -> Option<(f64, usize)> {
    let mut i = 0;
    let neg = match s.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let sign = if neg { -1.0 } else { 1.0 };
    let rest = &s[i..];
    let starts = |w: &[u8]| rest.len() >= w.len() && rest[..w.len()].eq_ignore_ascii_case(w);
    if starts(b"infinity") {
        return Some((sign * f64::INFINITY, i + 8));
    }
    if starts(b"inf") {
        return Some((sign * f64::INFINITY, i + 3));
    }
    if starts(b"nan") {
        return Some((f64::NAN, i + 3));
    }
    if starts(b"0x") && rest.get(2).is_some_and(u8::is_ascii_hexdigit) {
        let digits = rest[2..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        let v = rest[2..2 + digits].iter().fold(0.0, |acc, b| {
            acc * 16.0 + f64::from((*b as char).to_digit(16).unwrap_or(0))
        });
        return Some((sign * v, i + 2 + digits));
    }
    let digits = |from: usize| s[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    let int = digits(i);
    let mut end = i + int;
    let mut frac = 0;
    if s.get(end) == Some(&b'.') {
        frac = digits(end + 1);
        if int + frac > 0 {
            end += 1 + frac;
        }
    }
    if int + frac == 0 {
        return None;
    }
    if matches!(s.get(end), Some(b'e' | b'E')) {
        let mut e = end + 1;
        if matches!(s.get(e), Some(b'+' | b'-')) {
            e += 1;
        }
        let exp = digits(e);
        if exp > 0 {
            end = e + exp;
        }
    }
    let text = std::str::from_utf8(&s[..end]).ok()?;
    text.parse::<f64>().ok().map(|v| (v, end))
}

#[cfg(test)]
mod tests {
    use super::strtod;

    #[test]
    fn strtod_reads_what_c_reads() {
        assert_eq!(strtod(b"01"), Some((1.0, 2)));
        assert_eq!(strtod(b"1e400]"), Some((f64::INFINITY, 5)));
        assert_eq!(strtod(b"-2.5e1,"), Some((-25.0, 6)));
        assert_eq!(strtod(b"1.e"), Some((1.0, 2)));
        assert_eq!(strtod(b"0x10"), Some((16.0, 4)));
        assert_eq!(strtod(b"-"), None);
        assert_eq!(strtod(b"."), None);
    }
}
