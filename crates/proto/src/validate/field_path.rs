//! Field paths as users read them: `applications[2].rules[0].actions[1].upstream`.

use std::fmt;

#[derive(Debug, Clone, Default)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(String::new())
    }

    pub fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            FieldPath(name.to_string())
        } else {
            FieldPath(format!("{}.{name}", self.0))
        }
    }

    pub fn index(&self, name: &str, i: usize) -> Self {
        let mut p = self.field(name);
        p.0.push_str(&format!("[{i}]"));
        p
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(config)")
        } else {
            f.write_str(&self.0)
        }
    }
}
