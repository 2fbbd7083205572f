//! Server settings: each a flag with a `BACKPROP_...` environment variable and the
//! contract's default.

use std::net::SocketAddr;

use clap::Parser;

use crate::store::Location;

/// Where sessions are kept unless `--database` says otherwise: a file in the working
/// directory, so `cargo run --release` is durable with nothing to install.
pub const DEFAULT_DATABASE: &str = "sqlite:backprop.db";

#[derive(Debug, Clone, Parser)]
#[command(
    name = "backprop-server",
    version,
    about = "Trains small neural networks by backpropagation over HTTP, with the numbers of \
             the course's NumPy notebook.",
    long_about = None
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "BACKPROP_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Bearer token required on every route but /healthz and /openapi.yaml (off when unset).
    #[arg(long, env = "BACKPROP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Largest request body, in bytes (413 body_too_large above it).
    #[arg(long, env = "BACKPROP_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Most sessions held at once (429 too_many_sessions above it).
    #[arg(long, env = "BACKPROP_MAX_SESSIONS", default_value_t = 10_000)]
    pub max_sessions: usize,

    /// Most parameters (weights and biases) in one network.
    #[arg(long, env = "BACKPROP_MAX_PARAMETERS", default_value_t = 10_000_000)]
    pub max_parameters: u64,

    /// Most samples in one dataset or batch.
    #[arg(long, env = "BACKPROP_MAX_SAMPLES", default_value_t = 1_000_000)]
    pub max_samples: usize,

    /// Most epochs in one train request.
    #[arg(long, env = "BACKPROP_MAX_EPOCHS", default_value_t = 1_000_000)]
    pub max_epochs: u64,

    /// Most loss-history entries one session keeps (PUT /weights starts a new history).
    #[arg(long, env = "BACKPROP_MAX_HISTORY", default_value_t = 1_000_000)]
    pub max_history: u64,

    /// Training time per request, in seconds; a run stops at the next epoch boundary after it.
    #[arg(long, env = "BACKPROP_TRAIN_TIME_LIMIT_SECS", default_value_t = 60.0,
          value_parser = positive_secs)]
    pub train_time_limit_secs: f64,

    /// Training time of a background train ("wait": false), in seconds; it stops at the next
    /// epoch boundary after it, with status time_limit.
    #[arg(long, env = "BACKPROP_JOB_TIME_LIMIT_SECS", default_value_t = 3600.0,
          value_parser = positive_secs)]
    pub job_time_limit_secs: f64,

    /// A background train commits what it has done (weights and losses, atomically) this
    /// often, so a crash loses at most this much of it.
    #[arg(long, env = "BACKPROP_JOB_CHECKPOINT_SECS", default_value_t = 5.0,
          value_parser = positive_secs)]
    pub job_checkpoint_secs: f64,

    /// Requests that compute at once (train, gradients, predict); default: the CPU count.
    #[arg(long, env = "BACKPROP_WORKERS", default_value_t = default_workers(),
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: u32,

    /// Idle sessions are removed after this many seconds without a request (0: never).
    #[arg(long, env = "BACKPROP_SESSION_TTL_SECS", default_value_t = 3600)]
    pub session_ttl_secs: u64,

    /// Seconds a client has to send a request's headers, counted from the connection's start
    /// or, between requests on a kept-alive connection, from the request's first byte; then
    /// the connection is closed (with 408 if part of a request came).
    #[arg(long, env = "BACKPROP_HEADER_TIMEOUT_SECS", default_value_t = 10.0,
          value_parser = positive_secs)]
    pub header_timeout_secs: f64,

    /// Seconds a request's whole body may take to arrive, from the end of its headers; a
    /// slower body is cut with 408 request_timeout.
    #[arg(long, env = "BACKPROP_BODY_TIMEOUT_SECS", default_value_t = 60.0,
          value_parser = positive_secs)]
    pub body_timeout_secs: f64,

    /// Seconds a kept-alive connection may wait for its next request, and a client may leave
    /// its answer unread; then the connection is closed.
    #[arg(long, env = "BACKPROP_IDLE_TIMEOUT_SECS", default_value_t = 60.0,
          value_parser = positive_secs)]
    pub idle_timeout_secs: f64,

    /// Connections held at once; past it, connections waiting for a request are closed to let
    /// new ones in (half-open ones first, then idle ones, longest-waiting first). Default: the
    /// open-file limit (raised to its hard limit at start) less a reserve of an eighth of it,
    /// at least 64, for the server's own files and database connections.
    #[arg(long, env = "BACKPROP_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub max_connections: Option<u64>,

    /// Where sessions are kept: sqlite:PATH (one server per file), postgres://USER:PASSWORD@HOST/DB
    /// (several replicas may share it), or memory (nothing survives a restart).
    #[arg(long, env = "BACKPROP_DATABASE", default_value = DEFAULT_DATABASE,
          hide_env_values = true)]
    pub database: Location,
    /// Records no metrics (GET /metrics is 404): for measuring what they cost (bench/).
    #[arg(long, hide = true)]
    pub no_metrics: bool,
}

fn default_workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e9 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds > 0 (e.g. 60 or 0.5)"
        )),
    }
}

impl Default for Config {
    /// The contract's defaults, whatever the environment says (tests rely on this).
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            max_body_bytes: 32 * 1024 * 1024,
            max_sessions: 10_000,
            max_parameters: 10_000_000,
            max_samples: 1_000_000,
            max_epochs: 1_000_000,
            max_history: 1_000_000,
            train_time_limit_secs: 60.0,
            job_time_limit_secs: 3600.0,
            job_checkpoint_secs: 5.0,
            workers: default_workers(),
            session_ttl_secs: 3600,
            header_timeout_secs: 10.0,
            body_timeout_secs: 60.0,
            idle_timeout_secs: 60.0,
            max_connections: None,
            database: Location::Sqlite(DEFAULT_DATABASE.trim_start_matches("sqlite:").into()),
            no_metrics: false,
        }
    }
}

impl Config {
    /// These settings as command-line flags, so a test (or a supervisor) can start the real
    /// binary with exactly this configuration. Destructured field by field: a new setting
    /// that is not passed on fails to compile here instead of being silently dropped.
    pub fn to_args(&self) -> Vec<String> {
        let Self {
            addr,
            token,
            max_body_bytes,
            max_sessions,
            max_parameters,
            max_samples,
            max_epochs,
            max_history,
            train_time_limit_secs,
            job_time_limit_secs,
            job_checkpoint_secs,
            workers,
            session_ttl_secs,
            header_timeout_secs,
            body_timeout_secs,
            idle_timeout_secs,
            max_connections,
            database,
            no_metrics,
        } = self;
        let mut args = vec![
            format!("--addr={addr}"),
            format!("--max-body-bytes={max_body_bytes}"),
            format!("--max-sessions={max_sessions}"),
            format!("--max-parameters={max_parameters}"),
            format!("--max-samples={max_samples}"),
            format!("--max-epochs={max_epochs}"),
            format!("--max-history={max_history}"),
            format!("--train-time-limit-secs={train_time_limit_secs}"),
            format!("--job-time-limit-secs={job_time_limit_secs}"),
            format!("--job-checkpoint-secs={job_checkpoint_secs}"),
            format!("--workers={workers}"),
            format!("--session-ttl-secs={session_ttl_secs}"),
            format!("--header-timeout-secs={header_timeout_secs}"),
            format!("--body-timeout-secs={body_timeout_secs}"),
            format!("--idle-timeout-secs={idle_timeout_secs}"),
            format!("--database={database}"),
        ];
        if let Some(max_connections) = max_connections {
            args.push(format!("--max-connections={max_connections}"));
        }
        if let Some(token) = token {
            args.push(format!("--token={token}"));
        }
        if *no_metrics {
            args.push("--no-metrics".into());
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_args_parses_back_to_the_same_settings() {
        let config = Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: Some("s3cret".into()),
            max_body_bytes: 1234,
            max_sessions: 7,
            train_time_limit_secs: 0.25,
            job_time_limit_secs: 12.5,
            job_checkpoint_secs: 0.75,
            workers: 3,
            session_ttl_secs: 0,
            header_timeout_secs: 0.5,
            idle_timeout_secs: 2.25,
            max_connections: Some(900),
            database: "postgres://u:pw@db:5432/backprop".parse().unwrap(),
            no_metrics: true,
            ..Config::default()
        };
        let mut argv = vec!["backprop-server".to_owned()];
        argv.extend(config.to_args());
        let back = Config::try_parse_from(argv).expect("to_args gives flags the parser takes");
        assert_eq!(format!("{back:?}"), format!("{config:?}"));
        assert_eq!(back.database, config.database);
    }

    #[test]
    fn the_default_database_is_a_sqlite_file_in_the_working_directory() {
        use clap::CommandFactory;
        let command = Config::command();
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == "database")
            .expect("a --database flag");
        assert_eq!(arg.get_default_values(), [DEFAULT_DATABASE]);
        assert_eq!(Config::default().database.to_string(), DEFAULT_DATABASE);
    }
}
