//! Lock keys: validation and the tree relations
//! (ancestor, descendant) that tree-scoped locks are built on.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// A validated lock name: UTF-8, 1–512 bytes, `/`-separated segments, none of
/// them empty, `.` or `..`, and no control characters. A key may begin with `/`
/// so that an absolute folder path is a key as it is.
///
/// A key is kept in Unicode normalization form C: `café` typed with a
/// combining accent (NFD, as macOS spells file names) and with the
/// precomposed letter name one lock. Invisible format characters (zero-width
/// spaces and joiners, bidirectional controls, the byte-order mark, soft
/// hyphens: Unicode category Cf) are refused, so that two keys that look the
/// same are the same.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "String", into = "String")]
pub struct Key(String);

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key has no characters.
    #[error("invalid key: it is empty; give a name such as repo/acme or task/42")]
    Empty,
    /// The key is longer than [`MAX_KEY_BYTES`].
    #[error("invalid key: it is {0} bytes long, the limit is {MAX_KEY_BYTES}")]
    TooLong(usize),
    /// The key holds a control character.
    #[error("invalid key {0:?}: it contains a control character")]
    Control(String),
    /// The key holds an invisible format character.
    #[error(
        "invalid key {key:?}: it contains the invisible character U+{code:04X} (zero-width, bidirectional control or similar); type the name without it"
    )]
    Invisible {
        /// The refused key.
        key: String,
        /// The character's code point.
        code: u32,
    },
    /// The key has an empty, `.` or `..` segment.
    #[error(
        "invalid key {key:?}: segment {segment} is {what}; segments are separated by a single '/' and may not be '.' or '..'"
    )]
    Segment {
        /// The refused key.
        key: String,
        /// 1-based position of the bad segment.
        segment: usize,
        /// What is wrong with it.
        what: &'static str,
    },
    /// A folder path that is not an existing directory.
    #[error("invalid folder path {path:?}: {why}")]
    Path {
        /// The path as given.
        path: String,
        /// What went wrong resolving it.
        why: String,
    },
}

impl Key {
    /// Validates `raw` as a key, in normalization form C (see [`Key`]).
    pub fn new(raw: impl Into<String>) -> Result<Key, KeyError> {
        use unicode_normalization::UnicodeNormalization;
        use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
        let raw = raw.into();
        if let Some(c) = raw
            .chars()
            .find(|c| c.general_category() == GeneralCategory::Format)
        {
            return Err(KeyError::Invisible {
                code: u32::from(c),
                key: raw,
            });
        }
        let raw = match unicode_normalization::is_nfc_quick(raw.chars()) {
            unicode_normalization::IsNormalized::Yes => raw,
            _ => raw.nfc().collect(),
        };
        Key::checked(raw)
    }

    /// A key as a store recorded it, taken as it is: validated, but neither
    /// normalized nor refused for format characters, so that a lock taken
    /// before keys were normalized is still found, ended and reaped under
    /// the name it was recorded with.
    pub fn stored(raw: impl Into<String>) -> Result<Key, KeyError> {
        Key::checked(raw.into())
    }

    fn checked(raw: String) -> Result<Key, KeyError> {
        if raw.is_empty() {
            return Err(KeyError::Empty);
        }
        if raw.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong(raw.len()));
        }
        if raw.chars().any(char::is_control) {
            return Err(KeyError::Control(raw));
        }
        let body = raw.strip_prefix('/').unwrap_or(&raw);
        for (i, seg) in body.split('/').enumerate() {
            let what = match seg {
                "" => "empty",
                "." => "'.'",
                ".." => "'..'",
                _ => continue,
            };
            return Err(KeyError::Segment {
                key: raw.clone(),
                segment: i + 1,
                what,
            });
        }
        Ok(Key(raw))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Every proper ancestor, nearest last: `a/b/c` gives `a`, `a/b`;
    /// `/srv/x` gives `/srv`.
    pub fn ancestors(&self) -> Vec<&str> {
        let s = self.0.as_str();
        let mut out = Vec::new();
        for (i, c) in s.char_indices() {
            if c == '/' && i > 0 {
                out.push(&s[..i]);
            }
        }
        out
    }

    /// The half-open text range `[lo, hi)` that holds exactly the keys
    /// strictly below this one (`a/b/...`), for an index range scan.
    pub fn descendant_range(&self) -> (String, String) {
        // '0' is the character right after '/', so every "k/..." sorts below "k0".
        (format!("{}/", self.0), format!("{}0", self.0))
    }

    /// True when `self` is `other` or lies below it.
    pub fn is_at_or_below(&self, other: &Key) -> bool {
        self.0 == other.0
            || (self.0.len() > other.0.len()
                && self.0.starts_with(&other.0)
                && self.0.as_bytes()[other.0.len()] == b'/')
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Key {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Key::new(s)
    }
}

impl From<Key> for String {
    fn from(k: Key) -> String {
        k.0
    }
}

impl std::str::FromStr for Key {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Key::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composed_and_decomposed_spellings_are_one_key() {
        let nfc = Key::new("repo/caf\u{e9}").unwrap();
        let nfd = Key::new("repo/cafe\u{301}").unwrap();
        assert_eq!(nfc, nfd);
        assert_eq!(nfd.as_str(), "repo/caf\u{e9}");
        // Hangul syllables compose too.
        assert_eq!(Key::new("\u{1100}\u{1161}").unwrap().as_str(), "\u{ac00}");
        // What a store recorded is taken as it is.
        assert_eq!(
            Key::stored("repo/cafe\u{301}").unwrap().as_str(),
            "repo/cafe\u{301}"
        );
    }

    #[test]
    fn invisible_format_characters_are_refused() {
        for (raw, code) in [
            ("repo/a\u{200b}b", 0x200b),
            ("\u{202e}kcol", 0x202e),
            ("\u{feff}repo", 0xfeff),
            ("re\u{ad}po", 0xad),
            ("a\u{200d}b", 0x200d),
        ] {
            match Key::new(raw) {
                Err(KeyError::Invisible { code: c, .. }) => assert_eq!(c, code, "{raw:?}"),
                other => panic!("{raw:?}: {other:?}"),
            }
        }
        let msg = Key::new("a\u{200b}b").unwrap_err().to_string();
        assert!(msg.contains("U+200B"), "{msg}");
    }

    #[test]
    fn accepts_ordinary_and_absolute_keys() {
        for k in ["repo/acme/src", "task/42", "/srv/repos/acme", "a", "é/ü"] {
            assert!(Key::new(k).is_ok(), "{k}");
        }
    }

    #[test]
    fn refuses_bad_keys_with_reasons() {
        assert_eq!(Key::new(""), Err(KeyError::Empty));
        assert!(matches!(
            Key::new("a//b"),
            Err(KeyError::Segment { segment: 2, .. })
        ));
        assert!(matches!(Key::new("a/"), Err(KeyError::Segment { .. })));
        assert!(matches!(
            Key::new("a/../b"),
            Err(KeyError::Segment { what: "'..'", .. })
        ));
        assert!(matches!(Key::new("./a"), Err(KeyError::Segment { .. })));
        assert!(matches!(Key::new("/"), Err(KeyError::Segment { .. })));
        assert!(matches!(Key::new("a\nb"), Err(KeyError::Control(_))));
        assert!(matches!(
            Key::new("x".repeat(513)),
            Err(KeyError::TooLong(513))
        ));
        assert!(Key::new("x".repeat(512)).is_ok());
        let msg = Key::new("a//b").unwrap_err().to_string();
        assert!(msg.contains("segment 2 is empty"), "{msg}");
    }

    #[test]
    fn tree_relations() {
        let k = Key::new("a/b/c").unwrap();
        assert_eq!(k.ancestors(), vec!["a", "a/b"]);
        assert_eq!(Key::new("/srv/x").unwrap().ancestors(), vec!["/srv"]);
        assert!(k.is_at_or_below(&Key::new("a/b").unwrap()));
        assert!(
            !Key::new("a/bc")
                .unwrap()
                .is_at_or_below(&Key::new("a/b").unwrap())
        );
        let (lo, hi) = Key::new("a/b").unwrap().descendant_range();
        for inside in ["a/b/c", "a/b/~", "a/b/ü"] {
            assert!(lo.as_str() <= inside && inside < hi.as_str(), "{inside}");
        }
        for outside in ["a/b", "a/bc", "a/b.", "a/b0"] {
            assert!(
                !(lo.as_str() <= outside && outside < hi.as_str()),
                "{outside}"
            );
        }
    }
}
