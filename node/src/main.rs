//! `corecast`: the RTMP node binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use corecast_node::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Corecast: a shared-nothing, thread-per-core RTMP streaming node.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (TOML). Without it the built-in defaults apply.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Override `rtmp.listen`.
    #[arg(long, value_name = "ADDR")]
    rtmp_listen: Option<SocketAddr>,
    /// Override `rtmps.listen`.
    #[arg(long, value_name = "ADDR")]
    rtmps_listen: Option<SocketAddr>,
    /// Override `http.listen`.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// Override `rtmpt.listen` and turn RTMPT on (`rtmpt.enabled = true`).
    #[arg(long, value_name = "ADDR")]
    rtmpt_listen: Option<SocketAddr>,
    /// Override `node.cores` (0 = one per CPU).
    #[arg(long, value_name = "N")]
    cores: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("corecast: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    if let Some(listen) = cli.rtmp_listen {
        config.rtmp.listen = listen;
    }
    if let Some(listen) = cli.rtmps_listen {
        config.rtmps.listen = listen;
    }
    if let Some(listen) = cli.http_listen {
        config.http.listen = listen;
    }
    if let Some(listen) = cli.rtmpt_listen {
        config.rtmpt.listen = listen;
        config.rtmpt.enabled = true;
    }
    if let Some(cores) = cli.cores {
        config.node.cores = cores;
    }
    if let Err(e) = config.validate() {
        eprintln!("corecast: {e}");
        return ExitCode::from(2);
    }
    if cli.check {
        let rtmpt = if config.rtmpt.enabled {
            format!(", rtmpt on {}", config.rtmpt.listen)
        } else {
            String::new()
        };
        let mut rtmps = String::new();
        if config.rtmps.enabled {
            if let Err(e) = corecast_node::tls::load_server_config(&config.rtmps) {
                eprintln!("corecast: rtmps: {e}");
                return ExitCode::from(2);
            }
            rtmps = format!(", rtmps on {}", config.rtmps.listen);
        }
        println!(
            "corecast: configuration OK ({} cores, rtmp on {}{rtmps}{rtmpt})",
            config.effective_cores(),
            config.rtmp.listen
        );
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    match corecast_node::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("corecast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
