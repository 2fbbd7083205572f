//! The server under a lowered open-file limit, a raw HTTP/1.1 client that can stop halfway
//! through a request, and what the server holds (descriptors, memory) read from /proc.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use backprop_server::Config;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::server::{ServerProcess, binary};

pub use crate::timing::{config, exclusive, shared};

/// Starts the real binary with `config` on 127.0.0.1:0; with `open_files`, under that
/// open-file limit, soft and hard (`prlimit --nofile=N:N`), so the server cannot raise it.
pub async fn start(config: Config, open_files: Option<u64>) -> ServerProcess {
    let args = Config {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..config
    }
    .to_args();
    tokio::task::spawn_blocking(move || match open_files {
        Some(n) => {
            let mut prlimit = Command::new("prlimit");
            prlimit.arg(format!("--nofile={n}:{n}")).arg(binary());
            ServerProcess::start_command(prlimit, &args, &[])
        }
        None => ServerProcess::start_with(&args, &[]),
    })
    .await
    .expect("starting the server")
}

/// The descriptors the server holds open now.
pub fn open_files(server: &ServerProcess) -> usize {
    let dir = format!("/proc/{}/fd", server.pid());
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .count()
}

/// What the server's resident set settles at: the least of ten readings 50 ms apart, in KiB.
pub async fn settled_rss_kib(server: &ServerProcess) -> u64 {
    let mut least = u64::MAX;
    for _ in 0..10 {
        least = least.min(server.rss_kib());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    least
}

/// Raises this test process's own soft open-file limit to its hard limit (the attacks
/// hold thousands of sockets); returns it.
pub fn raise_own_open_file_limit() -> u64 {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).expect("getrlimit");
    rlimit::increase_nofile_limit(hard).expect("raising this test's open-file limit")
}

/// Polls `check` every 20 ms until it holds or `within` has passed; returns whether it held.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if check() {
            return true;
        }
        if t.elapsed() > within {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A value of sorted `v` at quantile `q` (nearest rank).
pub fn quantile(v: &[Duration], q: f64) -> Duration {
    assert!(!v.is_empty(), "no samples");
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// One answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Panics unless this is a problem document with `status` and `code`.
    pub fn expect_problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let v = self.json();
        assert_eq!(v["status"], status, "{v}");
        assert_eq!(v["code"], code, "{v}");
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
        v
    }
}

/// An HTTP/1.1 client on one raw connection: it writes exactly the bytes it is given, so it
/// can stop in the middle of a request's headers or body.
pub struct Raw {
    stream: TcpStream,
    /// Read but not yet taken.
    buf: Vec<u8>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn from_stream(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// `GET path` on this connection, kept alive; the answer within `within`.
    pub async fn get(&mut self, path: &str, within: Duration) -> Result<Answer, String> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        self.send(request.as_bytes())
            .await
            .map_err(|e| format!("GET {path}: sending: {e}"))?;
        self.answer(within).await
    }

    /// Reads one answer, within `within`.
    pub async fn answer(&mut self, within: Duration) -> Result<Answer, String> {
        tokio::time::timeout(within, self.read_answer())
            .await
            .map_err(|_| format!("no answer within {within:?}"))?
    }

    async fn read_answer(&mut self) -> Result<Answer, String> {
        loop {
            if let Some(answer) = self.complete_answer()? {
                return Ok(answer);
            }
            self.fill().await?;
        }
    }

    /// Takes one whole answer off the bytes read, if they hold one.
    fn complete_answer(&mut self) -> Result<Option<Answer>, String> {
        let Some(head_end) = find(&self.buf, b"\r\n\r\n") else {
            return Ok(None);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not a status line: {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .ok_or_else(|| format!("no content-length in {head:?}"))?;
        let start = head_end + 4;
        if self.buf.len() < start + length {
            return Ok(None);
        }
        let body = String::from_utf8_lossy(&self.buf[start..start + length]).into_owned();
        self.buf.drain(..start + length);
        Ok(Some(Answer {
            status,
            headers,
            body,
        }))
    }

    /// Reads until the server closes the connection, within `within`; returns what came
    /// (the bytes not yet taken included).
    pub async fn closed(&mut self, within: Duration) -> Result<Vec<u8>, String> {
        let read_all = async {
            loop {
                match self.fill().await {
                    Ok(()) => {}
                    Err(e) if e == EOF => return Ok(std::mem::take(&mut self.buf)),
                    Err(e) => return Err(e),
                }
            }
        };
        tokio::time::timeout(within, read_all)
            .await
            .map_err(|_| format!("still open after {within:?}"))?
    }

    /// Waits for some bytes, within `within`.
    pub async fn fill_once(&mut self, within: Duration) -> Result<(), String> {
        tokio::time::timeout(within, self.fill())
            .await
            .map_err(|_| format!("nothing within {within:?}"))?
    }

    /// Reads whatever comes for `within`, counting it; whether the server closed meanwhile.
    pub async fn drain(&mut self, within: Duration) -> Drained {
        let mut bytes = self.buf.len();
        self.buf.clear();
        let t = Instant::now();
        let mut chunk = vec![0u8; 1 << 16];
        while let Some(left) = within.checked_sub(t.elapsed()) {
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return Drained {
                        bytes,
                        closed: true,
                    };
                }
                Ok(Ok(n)) => bytes += n,
                Err(_) => break,
            }
        }
        Drained {
            bytes,
            closed: false,
        }
    }

    /// Reads one answer, pausing `pause` after every `step` bytes; all within `within`.
    pub async fn answer_pausing(
        &mut self,
        step: usize,
        pause: Duration,
        within: Duration,
    ) -> Result<Answer, String> {
        let read = async {
            let mut next_pause = step;
            let mut chunk = vec![0u8; 1 << 16];
            loop {
                let n = self
                    .stream
                    .read(&mut chunk)
                    .await
                    .map_err(|e| format!("reading: {e}"))?;
                if n == 0 {
                    return Err(format!("closed after {} bytes", self.buf.len()));
                }
                self.buf.extend_from_slice(&chunk[..n]);
                if let Some(answer) = self.complete_answer()? {
                    return Ok(answer);
                }
                if self.buf.len() >= next_pause {
                    next_pause += step;
                    tokio::time::sleep(pause).await;
                }
            }
        };
        tokio::time::timeout(within, read)
            .await
            .map_err(|_| format!("no whole answer within {within:?}"))?
    }

    async fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk).await {
            Ok(0) => Err(EOF.to_owned()),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            // A reset is the server closing too, with bytes of ours unread.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Err(EOF.to_owned()),
            Err(e) => Err(format!("reading: {e}")),
        }
    }
}

const EOF: &str = "the server closed the connection";

/// What [`Raw::drain`] read.
pub struct Drained {
    pub bytes: usize,
    pub closed: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `GET /healthz` on a new connection that closes after it; the time it took.
pub async fn health_on_a_new_connection(
    addr: SocketAddr,
    within: Duration,
) -> Result<Duration, String> {
    let t = Instant::now();
    let mut raw = tokio::time::timeout(within, Raw::connect(addr))
        .await
        .map_err(|_| format!("no connection within {within:?}"))?
        .map_err(|e| format!("connecting: {e}"))?;
    raw.send(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("sending: {e}"))?;
    let answer = raw.answer(within.saturating_sub(t.elapsed())).await?;
    if answer.status != 200 || answer.body != r#"{"status":"ok"}"# {
        return Err(format!("GET /healthz: {answer:?}"));
    }
    Ok(t.elapsed())
}
