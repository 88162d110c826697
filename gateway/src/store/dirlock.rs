//! One gateway per data directory. The embedded store's writer keeps topic
//! heads in memory, so a second process writing the same database would hand
//! out sequence numbers twice. That happens for real: a force-deleted pod's
//! container can still run while its replacement mounts the same volume on
//! the same node. An exclusive `flock` on `pushgate.lock` makes the second
//! process wait until the first has exited (the kernel drops the lock even on
//! SIGKILL), and give up with a clear error after a bounded wait.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::StoreError;

/// How long a gateway waits for the data directory's previous owner to exit.
pub const LOCK_WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);

/// Holds the data directory until dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes `dir/pushgate.lock`, waiting up to `wait` for another holder.
    pub fn acquire(dir: &Path, wait: Duration) -> Result<DirLock, StoreError> {
        let path = dir.join("pushgate.lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let start = Instant::now();
        let mut warned = false;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is passed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(StoreError::Unavailable(format!(
                    "cannot lock {}: {err}",
                    path.display()
                )));
            }
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            if start.elapsed() >= wait {
                return Err(StoreError::Unavailable(format!(
                    "{} is in use by another pushgate ({}) since more than {wait:?}",
                    dir.display(),
                    holder.trim()
                )));
            }
            if !warned {
                tracing::warn!(dir = %dir.display(), holder = holder.trim(), "data directory in use; waiting for its owner to exit");
                warned = true;
            }
            std::thread::sleep(POLL);
        }
        // Who holds it, for the message above in the next process.
        let _ = file.set_len(0);
        let _ = write!(file, "pid {}", std::process::id());
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_then_gets_the_lock_once_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), Duration::ZERO).unwrap();
        // flock locks belong to the open file: a second open conflicts even
        // in the same process, as a second pushgate's would.
        let err = DirLock::acquire(dir.path(), Duration::from_millis(300)).unwrap_err();
        assert!(
            err.to_string().contains("in use by another pushgate (pid "),
            "{err}"
        );
        let waiter = std::thread::spawn({
            let d = dir.path().to_owned();
            move || DirLock::acquire(&d, Duration::from_secs(10))
        });
        std::thread::sleep(Duration::from_millis(300));
        drop(first);
        waiter.join().unwrap().unwrap();
    }
}
