//! Running the helper commands of the tests (openssl, helm, kubectl
//! scripts, the gateway's own subcommands).

use std::process::{Command, Output};

/// Runs `cmd` to its end and returns its output; panics naming the command
/// with its status, stdout and stderr unless it succeeded.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
