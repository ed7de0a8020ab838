//! Validated user and group names. A user name becomes part of a TAP schema name
//! (`user_<name>`) and of VOSpace paths, so it is a plain lower-case identifier; group names
//! allow the dots and dashes of common group conventions but nothing a path or a query could
//! misread.
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error(
        "'{0}' is not a valid user name: 1 to 32 characters, a lower-case letter first, then lower-case letters, digits or '_'"
    )]
    User(String),
    #[error(
        "'{0}' is not a valid group name: 1 to 64 characters of letters, digits, '_', '-' or '.', a letter or digit first"
    )]
    Group(String),
}

/// A user's name: `[a-z][a-z0-9_]{0,31}`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct UserName(String);

impl UserName {
    pub fn new(s: &str) -> Result<Self, NameError> {
        let ok = (1..=32).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(NameError::User(s.to_string()))
        }
    }

    /// The nearest valid name to what an identity provider calls someone (a
    /// `preferred_username` or an e-mail address): lower-cased, the domain of an address
    /// dropped, other characters turned into '_', a leading 'u' added when it would not start
    /// with a letter.
    pub fn derive(hint: &str) -> Self {
        let local = hint.split('@').next().unwrap_or(hint);
        let mut s: String = local
            .chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_lowercase() || c.is_ascii_digit() {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
            s.insert(0, 'u');
        }
        s.truncate(32);
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A group's name: `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct GroupName(String);

impl GroupName {
    pub fn new(s: &str) -> Result<Self, NameError> {
        let ok = (1..=64).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(NameError::Group(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// Names read from documents are validated like any other.
impl TryFrom<String> for UserName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(&s)
    }
}

impl From<UserName> for String {
    fn from(n: UserName) -> String {
        n.0
    }
}

impl TryFrom<String> for GroupName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(&s)
    }
}

impl From<GroupName> for String {
    fn from(n: GroupName) -> String {
        n.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        assert!(UserName::new("alice").is_ok());
        assert!(UserName::new("a_1").is_ok());
        for bad in [
            "",
            "Alice",
            "1a",
            "_a",
            "a-b",
            "a.b",
            "a/b",
            "..",
            &"a".repeat(33),
        ] {
            assert!(UserName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_names_are_valid() {
        for hint in [
            "Alice.Smith@example.org",
            "42",
            "",
            "Ünïcode",
            "x".repeat(80).as_str(),
        ] {
            let n = UserName::derive(hint);
            assert!(UserName::new(n.as_str()).is_ok(), "{hint} -> {n}");
        }
        assert_eq!(
            UserName::derive("Alice.Smith@example.org").as_str(),
            "alice_smith"
        );
    }

    #[test]
    fn group_names() {
        assert!(GroupName::new("survey-science.wg1").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", "a\0", &"g".repeat(65)] {
            assert!(GroupName::new(bad).is_err(), "{bad}");
        }
    }
}
