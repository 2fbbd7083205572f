//! Server settings: each a flag with a `BACKPROP_...` environment variable and the
//! contract's default.

use std::net::SocketAddr;

use clap::Parser;

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

    /// Requests that compute at once (train, gradients, predict); default: the CPU count.
    #[arg(long, env = "BACKPROP_WORKERS", default_value_t = default_workers(),
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: u32,

    /// Idle sessions are removed after this many seconds without a request (0: never).
    #[arg(long, env = "BACKPROP_SESSION_TTL_SECS", default_value_t = 3600)]
    pub session_ttl_secs: u64,

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
            workers: default_workers(),
            session_ttl_secs: 3600,
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
            workers,
            session_ttl_secs,
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
            format!("--workers={workers}"),
            format!("--session-ttl-secs={session_ttl_secs}"),
        ];
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
            workers: 3,
            session_ttl_secs: 0,
            no_metrics: true,
            ..Config::default()
        };
        let mut argv = vec!["backprop-server".to_owned()];
        argv.extend(config.to_args());
        let back = Config::try_parse_from(argv).expect("to_args gives flags the parser takes");
        assert_eq!(format!("{back:?}"), format!("{config:?}"));
    }
}
