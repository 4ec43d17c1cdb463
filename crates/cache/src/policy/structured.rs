//! The slice of Structured Field Values (RFC 8941) the cache needs: parsing a Dictionary, which
//! is what targeted cache-control fields are (RFC 9213 §2.1), and serialising the Token and
//! String items that `Cache-Status` (RFC 9211) carries.
//!
//! Parsing is strict on purpose: RFC 9213 says a targeted field that fails to parse is ignored,
//! so a lenient parser would make us obey fields other CDNs ignore.

/// A bare item's value, reduced to what cache directives can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BareItem {
    Integer(i64),
    /// Decimals are never valid cache-directive values; the number itself is not kept.
    Decimal,
    String(String),
    Token(String),
    ByteSequence,
    Boolean(bool),
}

/// A dictionary member's value. Parameters are parsed for validity and then dropped: RFC 9213
/// says parameters on cache directives are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Member {
    Item(BareItem),
    InnerList,
}

/// Parses a Dictionary (RFC 8941 §4.2.2). `None` when the input is not a valid Dictionary.
/// A key that appears twice keeps its first position and its last value, as §4.2.2 says.
pub(crate) fn parse_dictionary(input: &[u8]) -> Option<Vec<(String, Member)>> {
    let mut p = Parser { s: input, i: 0 };
    p.skip_sp();
    let mut out: Vec<(String, Member)> = Vec::new();
    if p.at_end() {
        return Some(out);
    }
    loop {
        let key = p.key()?;
        let member = if p.eat(b'=') {
            p.item_or_inner_list()?
        } else {
            p.parameters()?;
            Member::Item(BareItem::Boolean(true))
        };
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = member,
            None => out.push((key, member)),
        }
        p.skip_ows();
        if p.at_end() {
            return Some(out);
        }
        if !p.eat(b',') {
            return None;
        }
        p.skip_ows();
        if p.at_end() {
            return None; // a trailing comma is an error
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn key(&mut self) -> Option<String> {
        let start = self.i;
        match self.peek() {
            Some(c) if c.is_ascii_lowercase() || c == b'*' => self.i += 1,
            _ => return None,
        }
        while let Some(c) = self.peek() {
            if c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, b'_' | b'-' | b'.' | b'*')
            {
                self.i += 1;
            } else {
                break;
            }
        }
        Some(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn item_or_inner_list(&mut self) -> Option<Member> {
        if self.peek() == Some(b'(') {
            self.inner_list()?;
            return Some(Member::InnerList);
        }
        let item = self.bare_item()?;
        self.parameters()?;
        Some(Member::Item(item))
    }

    fn inner_list(&mut self) -> Option<()> {
        self.i += 1; // '('
        loop {
            self.skip_sp();
            if self.eat(b')') {
                return self.parameters();
            }
            self.bare_item()?;
            self.parameters()?;
            if !matches!(self.peek(), Some(b' ' | b')')) {
                return None;
            }
        }
    }

    fn parameters(&mut self) -> Option<()> {
        while self.eat(b';') {
            self.skip_sp();
            self.key()?;
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Some(())
    }

    fn bare_item(&mut self) -> Option<BareItem> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string().map(BareItem::String),
            b':' => self.byte_sequence(),
            b'?' => self.boolean(),
            c if c.is_ascii_alphabetic() || c == b'*' => Some(BareItem::Token(self.token())),
            _ => None,
        }
    }

    fn number(&mut self) -> Option<BareItem> {
        let negative = self.eat(b'-');
        let start = self.i;
        let mut dot: Option<usize> = None;
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                self.i += 1;
            } else if c == b'.' && dot.is_none() {
                dot = Some(self.i);
                self.i += 1;
            } else {
                break;
            }
        }
        let digits = &self.s[start..self.i];
        match dot {
            None => {
                if digits.is_empty() || digits.len() > 15 {
                    return None;
                }
                let mut v: i64 = 0;
                for d in digits {
                    v = v * 10 + i64::from(d - b'0');
                }
                Some(BareItem::Integer(if negative { -v } else { v }))
            }
            Some(d) => {
                let int_len = d - start;
                let frac_len = self.i - d - 1;
                if int_len == 0 || int_len > 12 || frac_len == 0 || frac_len > 3 {
                    return None;
                }
                Some(BareItem::Decimal)
            }
        }
    }

    fn string(&mut self) -> Option<String> {
        self.i += 1; // opening quote
        let mut out = String::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return Some(out),
                b'\\' => {
                    let next = self.peek()?;
                    if next != b'"' && next != b'\\' {
                        return None;
                    }
                    self.i += 1;
                    out.push(char::from(next));
                }
                0x20..=0x7e => out.push(char::from(c)),
                _ => return None,
            }
        }
    }

    fn token(&mut self) -> String {
        let start = self.i;
        self.i += 1;
        while let Some(c) = self.peek() {
            if is_tchar(c) || c == b':' || c == b'/' {
                self.i += 1;
            } else {
                break;
            }
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    fn byte_sequence(&mut self) -> Option<BareItem> {
        self.i += 1; // ':'
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b':' => return Some(BareItem::ByteSequence),
                c if c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=') => {}
                _ => return None,
            }
        }
    }

    fn boolean(&mut self) -> Option<BareItem> {
        self.i += 1; // '?'
        let v = match self.peek()? {
            b'0' => false,
            b'1' => true,
            _ => return None,
        };
        self.i += 1;
        Some(BareItem::Boolean(v))
    }
}

/// `tchar` from RFC 9110 §5.6.2.
pub(crate) fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Whether `s` can be serialised as an sf-token (RFC 8941 §3.3.4).
pub(crate) fn is_token(s: &str) -> bool {
    let b = s.as_bytes();
    match b.first() {
        Some(c) if c.is_ascii_alphabetic() || *c == b'*' => {}
        _ => return false,
    }
    b[1..]
        .iter()
        .all(|&c| is_tchar(c) || c == b':' || c == b'/')
}

/// Appends `s` as an sf-string (RFC 8941 §4.1.6). Characters an sf-string cannot hold
/// (controls, non-ASCII) are percent-encoded byte by byte so the field stays valid.
pub(crate) fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for &b in s.as_bytes() {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(s: &str) -> Option<Vec<(String, Member)>> {
        parse_dictionary(s.as_bytes())
    }

    // RFC 8941 §4.2.2: members, booleans, strings, parameters.
    #[test]
    fn parses_a_dictionary_of_cache_directives_rfc8941_4_2_2() {
        let d = dict(r#"max-age=60, no-store, private="set-cookie";x=1, a=(1 2)"#).unwrap();
        assert_eq!(
            d[0],
            ("max-age".into(), Member::Item(BareItem::Integer(60)))
        );
        assert_eq!(
            d[1],
            ("no-store".into(), Member::Item(BareItem::Boolean(true)))
        );
        assert_eq!(
            d[2],
            (
                "private".into(),
                Member::Item(BareItem::String("set-cookie".into()))
            )
        );
        assert_eq!(d[3], ("a".into(), Member::InnerList));
    }

    // RFC 8941 §4.2.2: the last value of a duplicated key wins.
    #[test]
    fn duplicate_keys_keep_the_last_value_rfc8941_4_2_2() {
        let d = dict("max-age=1, max-age=2").unwrap();
        assert_eq!(
            d,
            vec![("max-age".into(), Member::Item(BareItem::Integer(2)))]
        );
    }

    // RFC 8941 §4.2.3.3 (keys are lower case), §4.2 (no trailing comma), §3.3.1 (15 digits).
    #[test]
    fn rejects_invalid_dictionaries_rfc8941_4_2() {
        for bad in [
            "MaX-aGe=1",
            "max-age=1,",
            "max-age =1",
            "max-age=1, &&&&",
            "a=1234567890123456",
            "a=\"unterminated",
            "a=1.",
        ] {
            assert_eq!(dict(bad), None, "{bad:?} should not parse");
        }
        assert_eq!(dict("a=1.5").unwrap()[0].1, Member::Item(BareItem::Decimal));
    }

    #[test]
    fn serialises_tokens_and_strings_rfc8941_4_1() {
        assert!(is_token("no-freshness"));
        assert!(!is_token("two words"));
        assert!(!is_token("1abc"));
        let mut s = String::new();
        write_string(&mut s, "a \"q\" \\ é");
        assert_eq!(s, r#""a \"q\" \\ %C3%A9""#);
    }
}
