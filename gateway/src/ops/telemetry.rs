//! Log output setup.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; `filter` uses `tracing` directive syntax.
pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(quiet_peers(filter))
        .map_err(|e| anyhow::anyhow!("invalid log filter {filter:?}: {e}"))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install logger: {e}"))
}

/// The HTTP/2 library warns once per connection about a misbehaving peer
/// (a reset flood, a refused-stream storm): lines an attacker can make by
/// the thousand per second. They stay off unless the filter names `h2`.
fn quiet_peers(filter: &str) -> String {
    if filter.split(',').any(|d| d.trim_start().starts_with("h2")) {
        filter.to_owned()
    } else {
        format!("{filter},h2=error")
    }
}

#[cfg(test)]
mod tests {
    use super::quiet_peers;

    #[test]
    fn peer_warnings_stay_off_unless_asked_for() {
        assert_eq!(quiet_peers("info"), "info,h2=error");
        assert_eq!(
            quiet_peers("debug,pushgate=trace"),
            "debug,pushgate=trace,h2=error"
        );
        assert_eq!(quiet_peers("info,h2=debug"), "info,h2=debug");
        assert!(tracing_subscriber::EnvFilter::try_new(quiet_peers("warn")).is_ok());
    }
}
