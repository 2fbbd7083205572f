//! The dashboard (`GET /`) in a real browser: the real binary, and Debian's headless
//! `chromium` driven over the Chrome DevTools Protocol (a WebSocket, JSON messages). The
//! test loads the page and times it, creates a session and starts a background train from
//! the page's own forms, watches the chart follow the event stream while the train runs,
//! then takes a screenshot and finds the loss line's colour inside the chart's canvas. A
//! second server with `--token` shows that the page asks for the key and then works with it.
//!
//! Chromium is required (`.ci/run` installs it with apt-get): without it the test fails,
//! saying how to install it. `BACKPROP_CHROMIUM` may name another binary.

#[path = "support/server.rs"]
mod server;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backprop_server::Config;
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use server::ServerProcess;

/// The loss line's colour in `web/app.js` (`LINE`).
const LINE_RGB: [u8; 3] = [0x1f, 0x77, 0xb4];

/// Headless Chromium with its DevTools endpoint; killed (and its profile removed) on drop.
struct Browser {
    child: Child,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// The page's session (`Target.attachToTarget`, flattened).
    page: Option<String>,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium_binary() -> String {
    if let Ok(bin) = std::env::var("BACKPROP_CHROMIUM") {
        return bin;
    }
    for bin in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return bin.to_owned();
        }
    }
    panic!(
        "the dashboard test needs headless Chromium and found none on PATH: install Debian's \
         package (`apt-get install -y chromium`; .ci/run does), or name a binary in \
         BACKPROP_CHROMIUM"
    );
}

impl Browser {
    fn start() -> Self {
        let bin = chromium_binary();
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(&bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--force-device-scale-factor=1",
                "--window-size=1200,900",
                "--remote-debugging-port=0",
                "about:blank",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e} (apt-get install -y chromium)"));
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID" on stderr.
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("ws://")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line[at..].trim().to_owned());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("{bin} printed no DevTools address within 60 s");
            }
        };
        let (ws, _) = tungstenite::connect(&url).expect("the DevTools WebSocket");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        }
        Self {
            child,
            ws,
            next_id: 0,
            page: None,
            _profile: profile,
        }
    }

    /// One DevTools command (on the page's session once there is one); its result.
    fn send(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.page {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        loop {
            let m = self
                .ws
                .read()
                .unwrap_or_else(|e| panic!("{method}: no answer: {e}"));
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(text.as_str()).unwrap();
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
        }
    }

    /// Opens `url` in a new page and attaches to it.
    fn open(&mut self, url: &str) {
        self.page = None;
        let target = self.send("Target.createTarget", json!({"url": url}));
        let attached = self.send(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        self.page = Some(attached["sessionId"].as_str().unwrap().to_owned());
    }

    /// Evaluates `js` in the page (awaiting a promise); its value.
    fn eval(&mut self, js: &str) -> Value {
        let r = self.send(
            "Runtime.evaluate",
            json!({"expression": js, "awaitPromise": true, "returnByValue": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{js}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `js` until it is true (or panics naming `what`).
    fn wait_for(&mut self, js: &str, what: &str, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            // The page may still be navigating: an evaluation before its context exists fails.
            let r = self.send(
                "Runtime.evaluate",
                json!({"expression": js, "returnByValue": true}),
            );
            if r["result"]["value"] == true {
                return started.elapsed();
            }
            assert!(started.elapsed() < within, "{what} within {within:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let r = self.send("Page.captureScreenshot", json!({"format": "png"}));
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .expect("base64 PNG")
    }
}

/// The epoch the chart's last point is at, from the canvas's `aria-label` (null before).
const CHART_EPOCH: &str = "(() => { const c = document.querySelector('#sessions canvas'); \
    const m = c && /at epoch (\\d+)/.exec(c.getAttribute('aria-label')); \
    return m ? Number(m[1]) : null; })()";

#[test]
fn the_dashboard_creates_trains_and_charts_live_in_chromium() {
    let server = ServerProcess::start(&Config {
        workers: 2,
        session_ttl_secs: 0,
        ..Config::default()
    });
    let mut browser = Browser::start();
    let started = Instant::now();
    browser.open(&format!("{}/", server.base));
    // Ready: the dataset picker filled and the (empty) session list shown.
    let ready = browser.wait_for(
        "document.querySelectorAll('#datasets option').length > 0 && \
         !document.querySelector('#empty').hidden",
        "the dashboard showed its datasets and (no) sessions",
        Duration::from_secs(30),
    );
    let ready_total = started.elapsed();
    let nav = browser.eval(
        "(() => { const n = performance.getEntriesByType('navigation')[0]; \
         return {dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd}; })()",
    );
    eprintln!(
        "dashboard load: DOMContentLoaded {:.1} ms, load {:.1} ms after navigation start; \
         datasets and sessions shown {:.0} ms after the page was opened",
        nav["dcl"].as_f64().unwrap(),
        nav["load"].as_f64().unwrap(),
        ready_total.as_secs_f64() * 1e3,
    );
    let _ = ready;
    let options = browser
        .eval("[...document.querySelectorAll('#datasets option')].map(o => o.value).join(',')");
    assert_eq!(options, "cat-dog-ship,iris", "the dataset picker");

    // Create a session from the form: the notebook's net on its data.
    browser.eval(
        "(() => { const f = document.querySelector('#create'); \
         f.layers.value = '4,3'; f.seed.value = '0'; f.dataset.value = 'cat-dog-ship'; \
         f.requestSubmit(); })()",
    );
    browser.wait_for(
        "document.querySelectorAll('#sessions .card').length === 1",
        "the new session's card",
        Duration::from_secs(20),
    );
    let meta = browser.eval("document.querySelector('#sessions .meta').textContent");
    assert!(
        meta.as_str().unwrap().contains("[4, 3]")
            && meta.as_str().unwrap().contains("cat-dog-ship"),
        "the card: {meta}"
    );

    // Train from the card: long enough to watch (a debug build does ~100,000 epochs/s).
    browser.eval(
        "(() => { const f = document.querySelector('#sessions .controls'); \
         f.epochs.value = '600000'; f.requestSubmit(); })()",
    );
    browser.wait_for(
        "!document.querySelector('#sessions .cancel').disabled",
        "the Cancel button enabled while the train runs",
        Duration::from_secs(20),
    );
    // The chart follows the event stream: its last point moves on while the job runs.
    let mut seen = Vec::new();
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(60) {
        if let Some(e) = browser.eval(CHART_EPOCH).as_u64()
            && seen.last() != Some(&e)
        {
            seen.push(e);
        }
        if seen.len() >= 4
            || browser.eval("document.querySelector('#sessions .cancel').disabled") == true
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("chart's last epoch as the train ran: {seen:?}");
    assert!(
        seen.len() >= 3 && seen.windows(2).all(|w| w[0] < w[1]) && *seen.last().unwrap() < 600_000,
        "the chart did not follow the running train: its last epoch went {seen:?}"
    );
    let text = browser.eval("document.querySelector('#sessions .numbers').textContent");
    assert!(
        text.as_str().unwrap().contains("running"),
        "the card while it trains: {text}"
    );

    // Cancel from the page; the card says so, and the server agrees.
    browser.eval("document.querySelector('#sessions .cancel').click()");
    browser.wait_for(
        "document.querySelector('#sessions .numbers').textContent.includes('cancelled')",
        "the card saying the train was cancelled",
        Duration::from_secs(20),
    );
    browser.wait_for(
        "(() => { const l = document.querySelector('#sessions canvas').getAttribute('aria-label'); \
         return l.includes('at epoch'); })()",
        "the chart after the cancel",
        Duration::from_secs(10),
    );
    let id = browser
        .eval("document.querySelector('#sessions .name').title")
        .as_str()
        .unwrap()
        .to_owned();
    let job = http_get(&server, &format!("/sessions/{id}/training"));
    assert_eq!(job["result"]["status"], "cancelled", "{job}");

    // The screenshot: the chart's canvas holds the loss line's colour.
    std::thread::sleep(Duration::from_millis(300));
    let rect = browser.eval(
        "(() => { const r = document.querySelector('#sessions canvas').getBoundingClientRect(); \
         return [r.left, r.top, r.width, r.height].map(Math.round); })()",
    );
    let png = browser.screenshot();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, &png).unwrap();
    let (w, pixels) = decode_rgb(&png);
    let r: Vec<usize> = rect
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let (inside, outside) = count_line_pixels(&pixels, w, (r[0], r[1], r[2], r[3]));
    eprintln!(
        "screenshot {} ({} bytes): {inside} line-coloured pixels in the chart, {outside} \
         outside it",
        path.display(),
        png.len()
    );
    assert!(
        inside >= 200,
        "the chart's canvas ({rect}) has {inside} pixels of the line's colour: no curve drawn \
         (screenshot at {})",
        path.display()
    );
}

#[test]
fn the_dashboard_asks_for_the_key_when_the_server_has_one() {
    let server = ServerProcess::start(&Config {
        token: Some("s3cret-token".into()),
        session_ttl_secs: 0,
        ..Config::default()
    });
    let mut browser = Browser::start();
    browser.open(&format!("{}/", server.base));
    browser.wait_for(
        "document.querySelector('#key-dialog').open === true",
        "the key prompt",
        Duration::from_secs(30),
    );
    browser.eval(
        "(() => { const f = document.querySelector('#key-form'); \
         f.key.value = 's3cret-token'; f.requestSubmit(); })()",
    );
    browser.wait_for(
        "document.querySelectorAll('#datasets option').length > 0 && \
         document.querySelector('#server').textContent.includes('sessions')",
        "the dashboard working with the key",
        Duration::from_secs(30),
    );
    let open = browser.eval("document.querySelector('#key-dialog').open");
    assert_eq!(open, false, "the prompt stays open after a good key");
}

/// `GET path` on the server, as JSON (a blocking client: this test has no async runtime).
fn http_get(server: &ServerProcess, path: &str) -> Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::get(format!("{}{path}", server.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

/// A PNG's width and its pixels as RGB triples.
fn decode_rgb(png_bytes: &[u8]) -> (usize, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a PNG's size")];
    let info = reader.next_frame(&mut buf).expect("the PNG's pixels");
    let channels = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "8-bit PNG");
    let pixels = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|p| match channels {
            1 | 2 => [p[0]; 3],
            _ => [p[0], p[1], p[2]],
        })
        .collect();
    (info.width as usize, pixels)
}

/// Pixels within a small distance of the line's colour inside and outside a rectangle.
fn count_line_pixels(
    pixels: &[[u8; 3]],
    width: usize,
    (left, top, w, h): (usize, usize, usize, usize),
) -> (usize, usize) {
    let near = |p: &[u8; 3]| {
        p.iter()
            .zip(LINE_RGB)
            .all(|(&a, b)| (i32::from(a) - i32::from(b)).abs() <= 24)
    };
    let (mut inside, mut outside) = (0, 0);
    for (i, p) in pixels.iter().enumerate() {
        if !near(p) {
            continue;
        }
        let (x, y) = (i % width, i / width);
        if (left..left + w).contains(&x) && (top..top + h).contains(&y) {
            inside += 1;
        } else {
            outside += 1;
        }
    }
    (inside, outside)
}
