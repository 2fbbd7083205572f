//! The README's walk-through, replayed: every ```sh block between `<!-- walkthrough:start -->`
//! and `<!-- walkthrough:end -->` runs in order, in one `sh` (so `S=$(...)` carries over),
//! with real curl against a fresh server, its `http://127.0.0.1:8080` replaced by the test
//! server's address. A fenced block that follows a command block with nothing but blank lines
//! between is that command's output as the README prints it, and must be what the server
//! answers now. Only what differs from run to run is normalised: session ids and timestamps.
//!
//! When the server's answers change on purpose, `WALKTHROUGH_BLESS=1 cargo test --test api
//! walkthrough` writes the new outputs into README.md (read the diff before committing it).

use std::process::Command;

use crate::helpers::{config, spawn_app};

const START: &str = "<!-- walkthrough:start -->";
const END: &str = "<!-- walkthrough:end -->";
const README_ADDR: &str = "http://127.0.0.1:8080";

/// One command block, and the output block after it if there is one.
struct Step {
    commands: String,
    /// The expected output and where its text sits in the README (for blessing).
    expected: Option<(String, std::ops::Range<usize>)>,
}

/// The walk-through's command blocks, each with the output block that follows it (only blank
/// lines between).
fn steps(readme: &str) -> Vec<Step> {
    let start = readme
        .find(START)
        .expect("README.md has no <!-- walkthrough:start --> marker");
    let end = readme
        .find(END)
        .expect("README.md has no <!-- walkthrough:end --> marker");
    assert!(start < end, "the walk-through's markers are out of order");
    let mut steps: Vec<Step> = Vec::new();
    // Set after a command block until something other than a blank line comes.
    let mut awaiting_output = false;
    let mut lines = readme[start..end].split_inclusive('\n');
    let mut offset = start;
    while let Some(line) = lines.next() {
        offset += line.len();
        let trimmed = line.trim_end();
        let Some(info) = trimmed.strip_prefix("```") else {
            if !trimmed.is_empty() {
                awaiting_output = false;
            }
            continue;
        };
        // A fence: read the body up to the closing fence.
        let body_start = offset;
        let mut body_end = offset;
        for l in lines.by_ref() {
            offset += l.len();
            if l.trim_end() == "```" {
                break;
            }
            body_end = offset;
        }
        let body = readme[body_start..body_end].to_string();
        if info == "sh" {
            steps.push(Step {
                commands: body,
                expected: None,
            });
            awaiting_output = true;
        } else if awaiting_output {
            if let Some(last) = steps.last_mut() {
                last.expected = Some((body, body_start..body_end));
            }
            awaiting_output = false;
        }
    }
    steps
}

/// Session ids and RFC 3339 timestamps, the only things that differ between runs.
fn normalise(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if is_uuid(&bytes[i..]) {
            out.push_str("<id>");
            i += 36;
        } else if is_timestamp(&bytes[i..]) {
            out.push_str("<time>");
            i += 20;
        } else {
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() >= 36
        && b[..36].iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `2026-12-06T18:08:52Z`
fn is_timestamp(b: &[u8]) -> bool {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:ddZ";
    b.len() >= SHAPE.len()
        && b.iter().zip(SHAPE).all(|(&c, &s)| {
            if s == b'd' {
                c.is_ascii_digit()
            } else {
                c == s
            }
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_prints_what_it_shows() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).expect("reading README.md");
    let steps = steps(&readme);
    assert!(
        steps.len() >= 15,
        "the walk-through has only {} command blocks",
        steps.len()
    );
    let shown = steps.iter().filter(|s| s.expected.is_some()).count();
    assert!(
        shown + 2 >= steps.len(),
        "only {shown} of {} command blocks show their output",
        steps.len()
    );

    require_curl(7, 84);
    let app = spawn_app(config()).await;
    // One shell for the whole walk-through; a marker line before each step splits the output.
    let mut script = String::from("set -e\n");
    for (k, step) in steps.iter().enumerate() {
        assert!(
            step.commands.contains(README_ADDR) || !step.commands.contains("curl"),
            "step {k} calls curl on another address than {README_ADDR}:\n{}",
            step.commands
        );
        script.push_str(&format!("printf '\\n@@@ step {k}\\n'\n"));
        script.push_str(&step.commands.replace(README_ADDR, &app.base));
        script.push('\n');
    }
    script.push_str("printf '\\n@@@ end\\n'\n");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env("LC_ALL", "C")
            // The test server is on loopback: no proxy may stand between.
            .env("NO_PROXY", "127.0.0.1")
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .output()
    })
    .await
    .expect("the shell's thread")
    .expect("running sh (and curl) for the walk-through");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("\n@@@ end\n"),
        "the walk-through's commands failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );

    let mut chunks = Vec::new();
    for k in 0..steps.len() {
        let marker = format!("\n@@@ step {k}\n");
        let from = stdout
            .find(&marker)
            .unwrap_or_else(|| panic!("step {k} never ran:\n{stdout}"))
            + marker.len();
        let to = stdout[from..]
            .find("\n@@@ ")
            .map_or(stdout.len(), |e| from + e);
        chunks.push(stdout[from..to].to_string());
    }

    let bless = std::env::var_os("WALKTHROUGH_BLESS").is_some_and(|v| v == "1");
    let mut blessed = readme.clone();
    let mut faults = Vec::new();
    // Back to front, so earlier ranges stay valid while later ones are replaced.
    for (k, (step, got)) in steps.iter().zip(&chunks).enumerate().rev() {
        let Some((want, range)) = &step.expected else {
            continue;
        };
        let got_text = got.trim_end().replace(&app.base, README_ADDR);
        if normalise(want) != normalise(&got_text) {
            faults.push(format!(
                "step {k}:\n{}\nREADME shows:\n{}\nthe server answers:\n{}\n",
                step.commands.trim_end(),
                want.trim_end(),
                got_text
            ));
            blessed.replace_range(range.clone(), &format!("{got_text}\n"));
        }
    }
    if bless && !faults.is_empty() {
        std::fs::write(path, &blessed).expect("writing README.md");
        eprintln!(
            "WALKTHROUGH_BLESS: rewrote {} outputs in README.md",
            faults.len()
        );
        return;
    }
    assert!(
        faults.is_empty(),
        "{} outputs in README.md's walk-through differ from what the server answers now \
         (ids and timestamps aside); WALKTHROUGH_BLESS=1 rewrites them:\n\n{}",
        faults.len(),
        faults.join("\n")
    );
}

/// The walk-through uses `--json` (curl 7.82) and `-w '%header{...}'` (7.84).
fn require_curl(major: u32, minor: u32) {
    let out = Command::new("curl")
        .arg("--version")
        .output()
        .expect("the walk-through test runs curl; install it (Debian: apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout);
    let version: Vec<u32> = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .split('.')
        .map(|p| p.parse().unwrap_or(0))
        .collect();
    assert!(
        version.as_slice() >= [major, minor].as_slice(),
        "the README's walk-through needs curl {major}.{minor} or later; this is {}",
        text.lines().next().unwrap_or("")
    );
}

#[test]
fn normalising_keeps_everything_but_ids_and_times() {
    let a = "/sessions/7d1c0c8e-5b8f-4c3e-9a4b-2f6e1d0c9b8a at 2026-12-06T18:08:52Z: 0.5";
    assert_eq!(normalise(a), "/sessions/<id> at <time>: 0.5");
    assert_ne!(normalise("loss 0.5"), normalise("loss 0.50"));
}
