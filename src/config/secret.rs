//! Secrets: where they come from (an environment variable or a file, never inline) and the
//! [`Secret`] type that carries them without ever printing them.
//!
//! What does not live here: which configuration keys hold secrets (see [`super`]).

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// A secret value. `Debug` prints `Secret(***)`; there is no `Display`, so a secret cannot slip
/// into a formatted error or log line by accident. Call [`Secret::expose`] at the point of use.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value read from a trusted place (env, file, token endpoint).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret's text, for the one place that sends it (an HTTP header, a bind).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where a secret is read from, as written in the configuration file:
/// `{ env = "VAR" }` or `{ file = "path" }`. Inline values are refused on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// Name of an environment variable holding the secret.
    pub env: Option<String>,
    /// Path of a file holding the secret (surrounding whitespace is trimmed). Relative paths are
    /// resolved against the configuration file's directory.
    pub file: Option<PathBuf>,
}

/// The table form, after the inline-value check.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretRefTable {
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("{ env = \"VAR\" } or { file = \"path\" }")
            }
            // Any scalar is refused without echoing it: it may be the secret itself.
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(INLINE))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretRef, E> {
                Err(E::custom(INLINE))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretRef, E> {
                Err(E::custom(INLINE))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<SecretRef, A::Error> {
                let t =
                    SecretRefTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(SecretRef {
                    env: t.env,
                    file: t.file,
                })
            }
        }
        d.deserialize_any(V)
    }
}

const INLINE: &str =
    "secrets are not accepted inline; write { env = \"VAR\" } or { file = \"path\" } (the value was not printed)";

/// Why a secret could not be read. Never carries the secret itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// Neither or both of `env` and `file` were given.
    #[error("give exactly one of `env = \"VAR\"` or `file = \"PATH\"`")]
    Shape,
    /// The environment variable is not set or empty.
    #[error("environment variable {0} is not set or is empty")]
    MissingEnv(String),
    /// The file could not be read.
    #[error("cannot read secret file {path}: {reason}")]
    File {
        /// The file's path.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The file is empty.
    #[error("secret file {0} is empty")]
    EmptyFile(String),
}

impl SecretRef {
    /// Checks the shape without reading anything.
    pub fn check_shape(&self) -> Result<(), SecretError> {
        match (&self.env, &self.file) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err(SecretError::Shape),
        }
    }

    /// [`SecretRef::check_shape`], and for `{ env = ... }` that the variable is set: checked
    /// when the configuration is loaded, so the error names the file and line (the value is
    /// still read only when needed).
    pub fn check_available(&self) -> Result<(), SecretError> {
        self.check_shape()?;
        match &self.env {
            Some(var) if std::env::var(var).map_or(true, |v| v.trim().is_empty()) => {
                Err(SecretError::MissingEnv(var.clone()))
            }
            _ => Ok(()),
        }
    }

    /// Reads the secret now. `base` is the configuration file's directory.
    pub fn resolve(&self, base: &Path) -> Result<Secret, SecretError> {
        self.check_shape()?;
        if let Some(var) = &self.env {
            return match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim().to_string())),
                _ => Err(SecretError::MissingEnv(var.clone())),
            };
        }
        let path = match &self.file {
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => base.join(p),
            None => return Err(SecretError::Shape),
        };
        let text = std::fs::read_to_string(&path).map_err(|e| SecretError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let value = text.trim();
        if value.is_empty() {
            return Err(SecretError::EmptyFile(path.display().to_string()));
        }
        Ok(Secret::new(value.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn file_secret_is_trimmed_and_relative_to_base() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.txt"), "  abc\n").unwrap();
        let r = SecretRef {
            env: None,
            file: Some("s.txt".into()),
        };
        assert_eq!(r.resolve(dir.path()).unwrap().expose(), "abc");
    }

    #[test]
    fn both_or_neither_is_a_shape_error() {
        let r = SecretRef {
            env: None,
            file: None,
        };
        assert_eq!(r.check_shape(), Err(SecretError::Shape));
        let r = SecretRef {
            env: Some("A".into()),
            file: Some("b".into()),
        };
        assert_eq!(r.check_shape(), Err(SecretError::Shape));
    }
}
