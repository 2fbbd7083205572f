//! A real PostgreSQL server for tests (and benches), started from Debian's `postgresql`
//! package in a temporary directory: `initdb`, then `pg_ctl start` on a free loopback port.
//!
//! PostgreSQL refuses to run as root, so when the test runs as root the cluster is made and
//! run as the `postgres` user the package creates. Each test asks for a fresh database named
//! after a UUID. Dropping the server stops it (immediately) and removes its files.
//!
//! Missing binaries are a failure that says what to install, never a silent skip.
//!
//! Included with `#[path = "support/postgres.rs"] mod postgres;`.
#![allow(dead_code)] // each test binary uses a different part of it

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sqlx::Connection;

pub struct PgServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// The user that owns and runs the cluster: (uid, gid), or `None` to run as ourselves.
    run_as: Option<(u32, u32)>,
}

/// The newest `/usr/lib/postgresql/N/bin` that has `initdb`.
fn binaries() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL's server binaries are not installed (no /usr/lib/postgresql/*/bin/initdb); \
             these tests start a real PostgreSQL: install it with `apt-get install -y postgresql` \
             (.ci/run does)"
        ),
    }
}

fn id_of(user: &str, flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, user])
        .output()
        .unwrap_or_else(|e| panic!("running `id {flag} {user}`: {e}"));
    assert!(
        out.status.success(),
        "there is no `{user}` user to run PostgreSQL as (it refuses to run as root); \
         `apt-get install -y postgresql` creates it"
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("`id {flag} {user}` printed no number: {e}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl PgServer {
    /// Makes a cluster and starts it; panics with the server's words if that fails.
    pub fn start() -> Self {
        let bin = binaries();
        let dir = tempfile::tempdir().expect("a temporary directory for PostgreSQL");
        let run_as = (Command::new("id").arg("-u").output().map(|o| o.stdout))
            .ok()
            .filter(|uid| String::from_utf8_lossy(uid).trim() == "0")
            .map(|_| (id_of("postgres", "-u"), id_of("postgres", "-g")));
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("giving the cluster's directory to the postgres user");
        }
        let server = Self {
            bin,
            dir,
            port: free_port(),
            run_as,
        };
        let data = server.data_dir();
        let out = server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}", words(&out));
        server.start_again();
        server
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args)
            .env("LC_ALL", "C")
            .current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"))
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir(),
                "-o",
                &options,
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            words(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server (fast: clients are disconnected) and waits until it is gone.
    pub fn stop(&self) {
        let out = self.run(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "fast", "-w", "stop"],
        );
        assert!(out.status.success(), "pg_ctl stop failed: {}", words(&out));
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A fresh, empty database named after a UUID; its URL.
    pub async fn fresh_database(&self) -> String {
        let name = format!("t{}", uuid::Uuid::new_v4().simple());
        let admin = self.url("postgres");
        {
            let started = Instant::now();
            let mut conn = loop {
                match sqlx::PgConnection::connect(&admin).await {
                    Ok(c) => break c,
                    Err(e) if started.elapsed() < Duration::from_secs(30) => {
                        eprintln!("waiting for PostgreSQL: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("connecting to {admin}: {e}"),
                }
            };
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        }
        self.url(&name)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "immediate", "-w", "stop"],
        );
    }
}

fn words(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
