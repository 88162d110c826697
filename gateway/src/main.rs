//! `pushgate`: the gateway binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use pushgate::config::{Config, Overrides, StoreKind};
use pushgate::ops::{lifecycle, telemetry};
use pushgate::Gateway;

#[global_allocator]
static ALLOC: pushgate::ops::alloc::CountingAlloc = pushgate::ops::alloc::CountingAlloc;

/// pushgate: Server-Sent Events push gateway with exact resume.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. Settings come from built-in defaults, then the
    /// --config file, then PUSHGATE_* variables, then flags (last wins).
    Serve {
        /// YAML config file (keys as in docs/CONFIG.md)
        #[arg(long, env = pushgate_contract::names::env::CONFIG, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
    /// Mint a token for the given topics and print it (see docs/SECURITY.md).
    Token(TokenArgs),
    /// Print the effective configuration as YAML and exit.
    Config {
        /// YAML config file
        #[arg(long, env = pushgate_contract::names::env::CONFIG, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        overrides: Overrides,
    },
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Signing key: the HS256 secret, or the RS256/ES256 private key (PEM)
    #[arg(long, value_name = "FILE")]
    key_file: PathBuf,
    /// Algorithm, matching the gateway's auth.algorithm
    #[arg(long, default_value = "hs256")]
    algorithm: pushgate::auth::KeyAlgorithm,
    /// Client id (`sub`), logged with each request
    #[arg(long)]
    sub: String,
    /// Topic pattern the token may subscribe to (repeatable; `*` one segment, `**` any)
    #[arg(long, value_name = "PATTERN")]
    subscribe: Vec<String>,
    /// Topic pattern the token may publish to (repeatable)
    #[arg(long, value_name = "PATTERN")]
    publish: Vec<String>,
    /// Lifetime, e.g. `1h`
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    ttl: std::time::Duration,
    /// `iss` claim
    #[arg(long)]
    issuer: Option<String>,
    /// `aud` claim
    #[arg(long)]
    audience: Option<String>,
    /// Key id (`kid` header): the key file's name in the gateway's auth.key_dir
    #[arg(long)]
    kid: Option<String>,
    /// `admin` claim: the token may act for any device
    #[arg(long)]
    admin: bool,
}

fn main() -> anyhow::Result<()> {
    // Bare `pushgate` runs the gateway on its defaults.
    let cli = if std::env::args_os().len() == 1 {
        Cli::parse_from(["pushgate", "serve"])
    } else {
        Cli::parse()
    };
    match cli.command {
        Command::Serve { config, overrides } => {
            let config = pushgate::config::load(config.as_deref(), &overrides)?;
            telemetry::init(config.log_format, &config.log_level)?;
            match pushgate::ops::nofile::raise_nofile_limit() {
                Ok((before, after, hard)) => {
                    tracing::info!(before, after, hard, "open-file limit raised")
                }
                Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(serve(config))
        }
        Command::Token(t) => {
            let key = pushgate::auth::keys::load_encoding_key(t.algorithm, &t.key_file)?;
            let token = pushgate::auth::claims::mint(
                t.algorithm,
                &key,
                &pushgate::auth::MintRequest {
                    sub: t.sub,
                    subscribe: t.subscribe,
                    publish: t.publish,
                    ttl: t.ttl,
                    iss: t.issuer,
                    aud: t.audience,
                    kid: t.kid,
                    admin: t.admin,
                },
            )?;
            println!("{token}");
            Ok(())
        }
        Command::Config { config, overrides } => {
            let config = pushgate::config::load(config.as_deref(), &overrides)?;
            print!("{}", serde_yaml::to_string(&config)?);
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let store = match &config.store {
        StoreKind::Embedded => format!("embedded:{}", config.data_dir.display()),
        StoreKind::Redis(_) => "redis".to_owned(),
    };
    let gw = Gateway::start(config).await?;
    tracing::info!(
        api = %gw.server.api_addr,
        metrics = %gw
            .server
            .metrics_addr
            .map_or_else(|| "none".to_owned(), |a| a.to_string()),
        store,
        tls = gw.node.config().tls.enabled(),
        auth = gw.node.auth().is_enabled(),
        version = env!("CARGO_PKG_VERSION"),
        "listening"
    );
    lifecycle::shutdown_signal().await;
    gw.drain().await;
    Ok(())
}
