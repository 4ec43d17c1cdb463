//! `$variable` templates, as nginx writes them: `$host`, `${remote_addr}`, `$http_user_agent`,
//! `$arg_id`, `$cookie_session`. Used in header values, redirect locations, response bodies,
//! rate-limit keys and hash keys.
//!
//! Parsing is pure; the edge resolves each [`Segment::Variable`] against a request.

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Variable(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpressionError {
    #[error("`$` at byte {0} is not followed by a variable name")]
    EmptyName(usize),
    #[error("unclosed `${{` at byte {0}")]
    Unclosed(usize),
}

/// Splits a template into literals and variable references.
pub fn parse(template: &str) -> Result<Vec<Segment>, ExpressionError> {
    let mut out = Vec::new();
    let mut literal = String::new();
    let bytes = template.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            // Copy up to the next `$` in one go (UTF-8 safe: `$` is ASCII).
            let next = template[i..].find('$').map_or(bytes.len(), |n| i + n);
            literal.push_str(&template[i..next]);
            i = next;
            continue;
        }
        let start = i;
        let (name, end) = if bytes.get(i + 1) == Some(&b'{') {
            let close = template[i + 2..]
                .find('}')
                .ok_or(ExpressionError::Unclosed(start))?;
            (&template[i + 2..i + 2 + close], i + 3 + close)
        } else {
            let len = template[i + 1..]
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            (&template[i + 1..i + 1 + len], i + 1 + len)
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ExpressionError::EmptyName(start));
        }
        if !literal.is_empty() {
            out.push(Segment::Literal(std::mem::take(&mut literal)));
        }
        out.push(Segment::Variable(name.to_ascii_lowercase()));
        i = end;
    }
    if !literal.is_empty() {
        out.push(Segment::Literal(literal));
    }
    Ok(out)
}

/// Variables every request has (besides `http_*`, `arg_*`, `cookie_*` and declared ones).
pub const BUILTIN_VARIABLES: &[&str] = &[
    "host",
    "uri",
    "args",
    "query_string",
    "is_args",
    "request_uri",
    "request_method",
    "scheme",
    "server_protocol",
    "remote_addr",
    "remote_port",
    "binary_remote_addr",
    "server_addr",
    "server_port",
    "server_name",
    "request_id",
    "content_type",
    "content_length",
];

/// The prefixes of families of variables: a header, an argument, a cookie.
pub const VARIABLE_PREFIXES: &[&str] = &["http_", "arg_", "cookie_"];

/// Whether `name` is a variable the edge knows, given the application's declared ones.
pub fn is_known_variable(name: &str, declared: &[&str]) -> bool {
    BUILTIN_VARIABLES.contains(&name)
        || VARIABLE_PREFIXES
            .iter()
            .any(|p| name.len() > p.len() && name.starts_with(p))
        || declared.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Segment::*;

    #[test]
    fn literals_and_variables_alternate() {
        assert_eq!(
            parse("https://$host${uri}?x=1").unwrap(),
            vec![
                Literal("https://".into()),
                Variable("host".into()),
                Variable("uri".into()),
                Literal("?x=1".into())
            ]
        );
    }

    #[test]
    fn a_name_ends_at_the_first_non_word_character() {
        assert_eq!(
            parse("$remote_addr:$http_x_user").unwrap(),
            vec![
                Variable("remote_addr".into()),
                Literal(":".into()),
                Variable("http_x_user".into())
            ]
        );
    }

    #[test]
    fn a_bare_dollar_or_unclosed_brace_is_an_error() {
        assert_eq!(parse("a$ b"), Err(ExpressionError::EmptyName(1)));
        assert_eq!(parse("${host"), Err(ExpressionError::Unclosed(0)));
        assert_eq!(parse("${}"), Err(ExpressionError::EmptyName(0)));
    }

    #[test]
    fn families_need_a_name_after_the_prefix() {
        assert!(is_known_variable("http_user_agent", &[]));
        assert!(!is_known_variable("http_", &[]));
        assert!(!is_known_variable("nope", &[]));
        assert!(is_known_variable("nope", &["nope"]));
    }
}
