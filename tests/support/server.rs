//! The real `backprop-server` binary, started by a test on 127.0.0.1:0.
//!
//! Every integration test that needs a server starts the binary cargo built for this test
//! run (`CARGO_BIN_EXE_backprop-server`), with its settings as command-line flags, and talks
//! HTTP to it: what the tests exercise is exactly what `cargo run --release` serves. The
//! server's log (stdout and stderr) is drained by two threads, so a chatty server never
//! blocks on a full pipe, and kept (the last part of it) for failure messages.
//!
//! Each process runs in a fresh temporary directory of its own, kept as long as the
//! process: with the default `--database sqlite:backprop.db` (a path relative to the working
//! directory, as `cargo run --release` uses it), every server gets a fresh SQLite file, so
//! the suites exercise the default store, no two servers share a database, and nothing is
//! written into the source tree. A test that restarts a server on the same database names
//! the file with an absolute path.
//!
//! Included by each test binary with `#[path = "support/server.rs"] mod server;`.
#![allow(dead_code)] // each test binary uses a different part of it

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backprop_server::Config;

/// How long a server may take to print its address: generous, since the machine is shared
/// and a debug binary may be cold on disk.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The log kept for failure messages: the last this many bytes.
const LOG_KEEP: usize = 64 * 1024;

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_backprop-server")
}

/// A running server process. Dropping it kills the process (SIGKILL) and reaps it.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    log: Arc<Mutex<String>>,
    /// The process's working directory; removed after the process is gone.
    dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts the binary with `config`'s settings on 127.0.0.1:0.
    pub fn start(config: &Config) -> Self {
        let config = Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..config.clone()
        };
        Self::start_with(&config.to_args(), &[])
    }

    /// Starts the binary with these flags and extra environment variables. The flags must
    /// make it listen on a free port (`--addr=127.0.0.1:0`).
    pub fn start_with(args: &[String], env: &[(&str, &str)]) -> Self {
        Self::start_command(Command::new(binary()), args, env)
    }

    /// Starts `command` (the binary, or a wrapper such as `prlimit ... binary`) with these
    /// flags. It must print the log line `backprop-server listening addr=...`.
    pub fn start_command(mut command: Command, args: &[String], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary working directory for the server");
        command
            .current_dir(dir.path())
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary()));
        let log = Arc::new(Mutex::new(String::new()));
        let (found, addr_rx) = mpsc::channel::<SocketAddr>();
        drain(
            child.stdout.take().expect("piped stdout"),
            log.clone(),
            Some(found.clone()),
        );
        drain(
            child.stderr.take().expect("piped stderr"),
            log.clone(),
            Some(found),
        );
        let started = Instant::now();
        let addr = loop {
            match addr_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => break addr,
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!(
                            "the server exited ({status}) before listening; its log:\n{}",
                            log.lock().unwrap()
                        );
                    }
                    if started.elapsed() > START_TIMEOUT {
                        let _ = child.kill();
                        panic!(
                            "the server printed no address within {START_TIMEOUT:?}; its log:\n{}",
                            log.lock().unwrap()
                        );
                    }
                }
            }
        };
        Self {
            child,
            addr,
            base: format!("http://{addr}"),
            log,
            dir,
        }
    }

    /// The process's working directory (where a relative `--database sqlite:PATH` lives).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last part of what the server printed.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends a signal (`libc`-free: through kill(1)).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{name} {} failed", self.pid());
    }

    /// SIGTERM: the graceful shutdown a supervisor asks for.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if started.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A line of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`, ...).
    pub fn status_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} line in {path}"))
    }

    /// The resident set, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// Starts a new peak of the resident set at what it is now (Linux: `clear_refs` 5);
    /// returns the resident set.
    pub fn reset_rss_peak(&self) -> u64 {
        let path = format!("/proc/{}/clear_refs", self.pid());
        std::fs::write(&path, "5").unwrap_or_else(|e| panic!("writing {path}: {e}"));
        self.rss_kib()
    }

    /// The most the resident set held since the process started or the last
    /// [`reset_rss_peak`](Self::reset_rss_peak), in KiB.
    pub fn rss_peak_kib(&self) -> u64 {
        self.status_kib("VmHWM")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `from` line by line into `log` (keeping the last [`LOG_KEEP`] bytes) and sends the
/// address of the first `listening` line.
fn drain(
    from: impl Read + Send + 'static,
    log: Arc<Mutex<String>>,
    found: Option<mpsc::Sender<SocketAddr>>,
) {
    std::thread::spawn(move || {
        let mut found = found;
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &found
                && let Some(addr) = listening_addr(&line)
            {
                let _ = tx.send(addr);
                found = None;
            }
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
            if log.len() > 2 * LOG_KEEP {
                let mut cut = log.len() - LOG_KEEP;
                while !log.is_char_boundary(cut) {
                    cut += 1;
                }
                log.drain(..cut);
            }
        }
    });
}

/// The address in the server's `backprop-server listening addr=127.0.0.1:PORT` line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == ',')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}
