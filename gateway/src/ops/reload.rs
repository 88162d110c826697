//! Files that are re-read when they change on disk: TLS pairs, client CA
//! bundles, token keys, the peer token, a routing table. Polled rather than
//! watched with inotify: a Kubernetes Secret update swaps a `..data` symlink,
//! which a watch on the files themselves never sees.

use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::{Duration, SystemTime};

/// What a poll compares: name, modification time and size of every file.
pub type Stamp = Vec<(PathBuf, SystemTime, u64)>;

fn one(path: &Path) -> Option<(PathBuf, SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((path.to_owned(), m.modified().ok()?, m.len()))
}

/// The stamp of `paths`; a directory stands for its visible files (dot files,
/// such as a Secret volume's `..data` links, are skipped). `None` while any
/// path is missing.
pub fn stamp(paths: &[PathBuf]) -> Option<Stamp> {
    let mut out = Vec::new();
    for p in paths {
        if std::fs::metadata(p).ok()?.is_dir() {
            for f in visible_files(p).ok()? {
                out.push(one(&f)?);
            }
        } else {
            out.push(one(p)?);
        }
    }
    Some(out)
}

/// The regular files of `dir` (following symlinks) whose names do not start with a dot, sorted.
pub fn visible_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Polls `paths` every `every`; when their stamp changes, runs `load` on the
/// blocking pool and hands a success to `apply` with the owner. A failure
/// keeps what is in use and is retried each tick (the other file of a
/// rotation may still be on its way), warned once per change. The task ends
/// with its owner.
pub fn spawn<O, T, L, A>(
    what: &'static str,
    owner: Weak<O>,
    paths: Vec<PathBuf>,
    every: Duration,
    load: L,
    apply: A,
) where
    O: Send + Sync + 'static,
    T: Send + 'static,
    L: Fn() -> anyhow::Result<T> + Send + Sync + Clone + 'static,
    A: Fn(&O, T) + Send + 'static,
{
    tokio::spawn(async move {
        let mut loaded = stamp(&paths);
        let mut warned = None;
        loop {
            tokio::time::sleep(every).await;
            if owner.strong_count() == 0 {
                return;
            }
            let now = stamp(&paths);
            if now.is_none() || now == loaded {
                continue;
            }
            match tokio::task::spawn_blocking(load.clone()).await {
                Ok(Ok(value)) => {
                    let Some(owner) = owner.upgrade() else { return };
                    apply(&owner, value);
                    loaded = now;
                    tracing::info!(what, "reloaded after a change on disk");
                }
                Ok(Err(e)) if warned != now => {
                    warned = now;
                    tracing::warn!(what, error = %e, "changed on disk but cannot be loaded; keeping the current one");
                }
                _ => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_stamps_its_visible_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "1").unwrap();
        std::fs::write(dir.path().join("..data"), "x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let s = stamp(&[dir.path().to_owned()]).unwrap();
        assert_eq!(s.len(), 1);
        assert!(s[0].0.ends_with("a"));
        std::fs::write(dir.path().join("b"), "22").unwrap();
        assert_ne!(stamp(&[dir.path().to_owned()]), Some(s));
        assert_eq!(stamp(&[dir.path().join("missing")]), None);
    }
}
