//! `corecast`: the RTMP node binary.
//!
//! Reads the config, applies the command line over it, checks the result (`--check` stops
//! there), sets up logging and runs the node. Every start-up error is printed once, on
//! stderr: as a log line once logging is up, plainly before.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use corecast_node::auth::Action;
use corecast_node::config::{Config, Listen, LogFilter, LogFormat};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Corecast: a shared-nothing, thread-per-core RTMP streaming node.
///
/// Listen addresses (ADDR) take the forms `1935` or `:1935` (every IPv4 and IPv6 address),
/// `localhost:1935` (127.0.0.1 and ::1), `0.0.0.0:1935`, `127.0.0.1:1935` and `[::]:1935`.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Config file (TOML). Without it the built-in defaults apply.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Override `rtmp.listen`.
    #[arg(long, value_name = "ADDR")]
    rtmp_listen: Option<Listen>,
    /// Override `rtmps.listen`.
    #[arg(long, value_name = "ADDR")]
    rtmps_listen: Option<Listen>,
    /// Override `http.listen`.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<Listen>,
    /// Override `rtmpt.listen` and turn RTMPT on (`rtmpt.enabled = true`).
    #[arg(long, value_name = "ADDR")]
    rtmpt_listen: Option<Listen>,
    /// Override `node.cores` (0 = one per CPU).
    #[arg(long, value_name = "N")]
    cores: Option<usize>,
    /// Override `log.level` and `RUST_LOG`: a level (error, warn, info, debug, trace, off) or
    /// TARGET=LEVEL directives, comma-separated.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<LogFilter>,
    #[command(subcommand)]
    command: Option<Subcommand>,
}

/// What else the binary does besides running a node.
#[derive(Debug, clap::Subcommand)]
enum Subcommand {
    /// Print a signed token for one action on one stream, signed with the config's
    /// `[[auth.keys]]` (use it as `rtmp://HOST/APP/STREAM?token=TOKEN`).
    Token(TokenArgs),
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// publish, play or pull.
    #[arg(long, value_parser = ["publish", "play", "pull"])]
    action: String,
    /// The application (`live`).
    #[arg(long)]
    app: String,
    /// The stream name, without query string.
    #[arg(long)]
    stream: String,
    /// Seconds the token is valid from now.
    #[arg(long, default_value_t = 3600, value_name = "SECS")]
    ttl: u64,
    /// The key to sign with (default: the first active key).
    #[arg(long, value_name = "ID")]
    key_id: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Subcommand::Token(args)) = &cli.command {
        return token(&cli, args);
    }
    let (config, log_filter) = match configure(&cli) {
        Ok(configured) => configured,
        Err(message) => {
            eprintln!("corecast: {message}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        return check(&config);
    }
    let set_log = init_logging(&config, &log_filter);
    // A reload reads the file again with this command line and environment, as at start.
    let cli = std::sync::Arc::new(cli);
    let reloader = corecast_node::reload::Reloader::new(Box::new(move || configure(&cli)), set_log);
    match corecast_node::server::run(config, Some(reloader)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: a log line when errors are logged, else plainly (`level = "off"`).
            if tracing::enabled!(tracing::Level::ERROR) {
                tracing::error!("{e:#}");
            } else {
                eprintln!("corecast: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The config file with the command line applied, checked, and the log filter in force:
/// `--log-level`, else `RUST_LOG`, else `log.level`.
fn configure(cli: &Cli) -> Result<(Config, LogFilter), String> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(listen) = &cli.rtmp_listen {
        config.rtmp.listen = listen.clone();
    }
    if let Some(listen) = &cli.rtmps_listen {
        config.rtmps.listen = listen.clone();
    }
    if let Some(listen) = &cli.http_listen {
        config.http.listen = listen.clone();
    }
    if let Some(listen) = &cli.rtmpt_listen {
        config.rtmpt.listen = listen.clone();
        config.rtmpt.enabled = true;
    }
    if let Some(cores) = cli.cores {
        config.node.cores = cores;
    }
    if let Some(level) = &cli.log_level {
        config.log.level = level.clone();
    }
    // Secrets from the environment win over the file (config/env.rs); never logged.
    config.apply_secret_env(|name| std::env::var(name).ok());
    config.validate().map_err(|e| e.to_string())?;
    // Once everything that can set the token has (the file, the command line, and where a
    // deployment passes it so, the environment).
    config.check_pull_token().map_err(|e| e.to_string())?;
    let filter = match (&cli.log_level, std::env::var("RUST_LOG")) {
        (None, Ok(env)) if !env.trim().is_empty() => {
            env.parse().map_err(|e| format!("RUST_LOG: {e}"))?
        }
        _ => config.log.level.clone(),
    };
    Ok((config, filter))
}

/// `corecast token`: one signed token on stdout.
fn token(cli: &Cli, args: &TokenArgs) -> ExitCode {
    let minted = configure(cli).and_then(|(config, _)| {
        let action = Action::from_name(&args.action).ok_or("unknown action")?;
        corecast_node::auth::mint(
            &config.auth,
            action,
            &args.app,
            &args.stream,
            args.ttl,
            args.key_id.as_deref(),
            corecast_node::auth::unix_now(),
        )
    });
    match minted {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("corecast token: {message}");
            ExitCode::from(2)
        }
    }
}

/// `--check`: what would run, or why it cannot (the RTMPS certificate is loaded too).
fn check(config: &Config) -> ExitCode {
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
    if let Some(warning) = corecast_node::player::assets::check(&config.player_page) {
        eprintln!("corecast: warning: player_page: {warning}");
    }
    println!(
        "corecast: configuration OK ({} cores, rtmp on {}{rtmps}{rtmpt})",
        config.effective_cores(),
        config.rtmp.listen
    );
    ExitCode::SUCCESS
}

/// Logs on stderr, coloured only when stderr is a terminal (and `NO_COLOR` is unset): a log
/// file or a journal gets plain text. Each kind of line is limited to
/// `log.max_lines_per_second` (see `corecast_node::log_limit`).
fn init_logging(config: &Config, filter: &LogFilter) -> Box<corecast_node::reload::SetLogFn> {
    use tracing_subscriber::filter::EnvFilter;
    use tracing_subscriber::layer::Layered;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, reload, Layer, Registry};
    type Filtered = Layered<reload::Layer<EnvFilter, Registry>, Registry>;

    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let text = fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let format: Box<dyn Layer<Filtered> + Send + Sync> = match config.log.format {
        LogFormat::Text => Box::new(text),
        LogFormat::Json => Box::new(text.json()),
    };
    let limited = corecast_node::log_limit::RateLimited::new(
        format,
        config.log.max_lines_per_second,
        std::time::Duration::from_secs(1),
    );
    // The filter can be swapped by a reload (log.level); the format cannot (log.format).
    let (filter, handle) = reload::Layer::new(filter.to_env_filter());
    tracing_subscriber::registry()
        .with(filter)
        .with(limited)
        .init();
    Box::new(move |next: &LogFilter| {
        handle
            .reload(next.to_env_filter())
            .map_err(|e| format!("log filter: {e}"))
    })
}
