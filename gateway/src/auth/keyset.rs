//! The verifying keys in use: one key file, or a directory of them named by
//! `kid` (a Secret mounted whole). Re-read on change; a key that leaves the
//! set, or whose file now holds other material, is revoked, which ends the
//! streams its tokens opened.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::DecodingKey;
use tokio_util::sync::CancellationToken;

use super::keys::{load_decoding_key, KeyAlgorithm, KeyError};

/// Where the keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// One key; tokens need no `kid` (one they carry is not checked).
    File(PathBuf),
    /// One key per visible file, its name the `kid`; tokens name theirs
    /// unless the directory holds a single key.
    Dir(PathBuf),
}

impl KeySource {
    fn path(&self) -> &Path {
        match self {
            KeySource::File(p) | KeySource::Dir(p) => p,
        }
    }
}

/// One verifying key.
pub struct Key {
    /// The key, parsed.
    pub decoding: DecodingKey,
    /// Its `kid` (the file name; empty for a single key file).
    pub kid: String,
    material: Vec<u8>,
    /// Cancelled when the key leaves the set.
    pub revoked: CancellationToken,
}

/// A loaded set of keys.
pub struct KeySet {
    by_kid: BTreeMap<String, Arc<Key>>,
    named: bool,
}

impl KeySet {
    /// Reads every key of `source`; any unusable file fails the whole set,
    /// so a half-finished rotation never revokes a key by accident.
    pub fn load(alg: KeyAlgorithm, source: &KeySource) -> Result<KeySet, KeyError> {
        let files: Vec<(String, PathBuf)> = match source {
            KeySource::File(p) => vec![(String::new(), p.clone())],
            KeySource::Dir(dir) => crate::ops::reload::visible_files(dir)
                .map_err(|e| KeyError::new(dir, format!("cannot list: {e}")))?
                .into_iter()
                .map(|p| {
                    let kid = p
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned();
                    (kid, p)
                })
                .collect(),
        };
        if files.is_empty() {
            return Err(KeyError::new(source.path(), "holds no key file"));
        }
        let mut by_kid = BTreeMap::new();
        for (kid, path) in files {
            let (decoding, material) = load_decoding_key(alg, &path)?;
            let key = Key {
                decoding,
                kid: kid.clone(),
                material,
                revoked: CancellationToken::new(),
            };
            by_kid.insert(kid, Arc::new(key));
        }
        Ok(KeySet {
            by_kid,
            named: matches!(source, KeySource::Dir(_)),
        })
    }

    /// The key a token's `kid` selects: the named one, or the only one.
    pub fn select(&self, kid: Option<&str>) -> Option<&Arc<Key>> {
        match (self.named, kid) {
            (true, Some(kid)) => self.by_kid.get(kid),
            _ if self.by_kid.len() == 1 => self.by_kid.values().next(),
            _ => None,
        }
    }

    /// The `kid`s in the set.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.by_kid.keys().map(String::as_str)
    }

    /// Takes over from `old`: a key that is still there with the same
    /// material keeps its identity (its streams go on); every other key of
    /// `old` is revoked.
    fn succeed(mut self, old: &KeySet) -> KeySet {
        for (kid, key) in &old.by_kid {
            match self.by_kid.get(kid) {
                Some(new) if new.material == key.material => {
                    self.by_kid.insert(kid.clone(), key.clone());
                }
                _ => {
                    tracing::info!(kid = %kid, "token key removed; its streams end");
                    key.revoked.cancel();
                }
            }
        }
        self
    }
}

/// The key set in use, swapped by its reload task.
pub struct Keys {
    current: RwLock<Arc<KeySet>>,
}

impl Keys {
    /// Loads the set (an error stops startup).
    pub fn load(alg: KeyAlgorithm, source: &KeySource) -> Result<Arc<Keys>, KeyError> {
        Ok(Arc::new(Keys {
            current: RwLock::new(Arc::new(KeySet::load(alg, source)?)),
        }))
    }

    /// The set as of now.
    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn replace(&self, next: KeySet) {
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        let next = next.succeed(&cur);
        tracing::info!(kids = ?next.kids().collect::<Vec<_>>(), "token keys in use");
        *cur = Arc::new(next);
    }

    /// Re-reads `source` every `every` while it changes.
    pub fn spawn_reload(self: &Arc<Self>, alg: KeyAlgorithm, source: KeySource, every: Duration) {
        let paths = vec![source.path().to_owned()];
        let load = move || KeySet::load(alg, &source).map_err(anyhow::Error::from);
        crate::ops::reload::spawn(
            "token keys",
            Arc::downgrade(self),
            paths,
            every,
            load,
            Keys::replace,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, secret: &str) {
        std::fs::write(dir.join(name), secret.repeat(32)).unwrap();
    }

    #[test]
    fn kid_selects_and_a_single_key_needs_none() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a", "a");
        let source = KeySource::Dir(dir.path().into());
        let one = KeySet::load(KeyAlgorithm::Hs256, &source).unwrap();
        assert_eq!(one.select(None).unwrap().kid, "a");
        assert_eq!(one.select(Some("a")).unwrap().kid, "a");
        assert!(one.select(Some("b")).is_none(), "a kid names its key");
        write(dir.path(), "b", "b");
        write(dir.path(), ".hidden", "h");
        let two = KeySet::load(KeyAlgorithm::Hs256, &source).unwrap();
        assert_eq!(two.kids().collect::<Vec<_>>(), ["a", "b"]);
        assert!(
            two.select(None).is_none(),
            "two keys: the token must say which"
        );
        assert_eq!(two.select(Some("b")).unwrap().kid, "b");
    }

    #[test]
    fn a_removed_or_changed_key_is_revoked_and_a_kept_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        for k in ["a", "b", "c"] {
            write(dir.path(), k, k);
        }
        let source = KeySource::Dir(dir.path().into());
        let keys = Keys::load(KeyAlgorithm::Hs256, &source).unwrap();
        let old = keys.current();
        std::fs::remove_file(dir.path().join("a")).unwrap();
        write(dir.path(), "c", "z");
        keys.replace(KeySet::load(KeyAlgorithm::Hs256, &source).unwrap());
        let key = |set: &KeySet, k: &str| set.select(Some(k)).unwrap().clone();
        assert!(key(&old, "a").revoked.is_cancelled());
        assert!(
            key(&old, "c").revoked.is_cancelled(),
            "new material, new key"
        );
        assert!(!key(&old, "b").revoked.is_cancelled());
        let now = keys.current();
        assert!(Arc::ptr_eq(&key(&now, "b"), &key(&old, "b")));
        assert!(!key(&now, "c").revoked.is_cancelled());
    }

    #[test]
    fn an_empty_or_broken_directory_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let source = KeySource::Dir(dir.path().into());
        let err = KeySet::load(KeyAlgorithm::Hs256, &source).err().unwrap();
        assert!(err.to_string().contains("no key file"), "{err}");
        write(dir.path(), "a", "a");
        std::fs::write(dir.path().join("short"), "x").unwrap();
        let err = KeySet::load(KeyAlgorithm::Hs256, &source).err().unwrap();
        assert!(err.to_string().contains("short"), "{err}");
    }
}
