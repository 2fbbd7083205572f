//! Memory admission: what a request will hold, worked out from its shapes before anything
//! that grows with it is allocated, and the one budget that everything held and in flight
//! shares.
//!
//! Every request carries a [`Reservation`] made of parts ([`Part`]): its body (reserved from
//! `Content-Length` before a byte is read), what the body parses into (counted by a scan of
//! the JSON before it is parsed, or from a CSV's rows and an NPZ's headers before they are
//! read), and its work (every layer's activations for all samples in the forward and the
//! backward pass, label matrices, gradients, copies for the database, the answer's text),
//! each estimated from the shapes before the core allocates it. A reservation whose parts
//! add up past `--max-request-memory` is refused with 422 `too_large`, naming the figure,
//! the limit and what to shrink; one that does not fit what is left of `--memory-budget` is
//! refused with 503 `overloaded`. The reservation is given back when the request's answer
//! has been sent (it is dropped with the answer's body), so a slow reader holds what its
//! answer holds, and no more: at the end the reservation shrinks to the answer's real size.
//!
//! What is held: the sessions the store keeps in memory, as the store counts them
//! ([`crate::store::Store::held_bytes`]: weights, datasets, histories). With SQLite or
//! PostgreSQL the store's memory is a cache of the database, and it is what the process
//! holds that counts: a session on disk and not in the cache holds nothing, and when the
//! budget is short the store drops idle cached sessions (they are read back when named)
//! before a request is refused. Besides: the process's resident set at start (code, runtime,
//! database connections) and the matrix products' packing buffers, kept per blocking thread
//! ([`crate::nn::THREAD_SCRATCH_BYTES`] each, for as many threads as the blocking pool may
//! have).
//!
//! Estimates are upper bounds of what the code allocates, not guesses at typical use:
//! growable buffers count with the slack of their growth, JSON text at its longest
//! (`-2.2250738585072014e-308,` is 25 bytes), Rust's and serde_json's containers at their
//! real sizes. `tests/core_memory.rs` holds the core's figures to what it really allocates.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::Config;
use crate::nn::{self, NetConfig, Trainer};

/// Seconds a 503 asks a client to wait when running requests will free what it needs.
pub const RETRY_WAIT_SECS: u64 = 2;
/// ...and when only deleting sessions (or their expiry) can: a retry soon would fail again.
pub const RETRY_HELD_SECS: u64 = 30;

/// Blocking threads beyond `--workers`: for the store's encoding of large sessions and for
/// large bodies parsed off the runtime. The runtime's blocking pool is capped at
/// `--workers` plus these, so the threads (their stacks, and the products' packing buffers
/// each keeps) are bounded too.
pub const EXTRA_BLOCKING_THREADS: usize = 8;

/// The most bytes of JSON one number takes, with its separator: `-2.2250738585072014e-308,`.
const JSON_NUMBER: u128 = 25;

/// What a growable buffer of `bytes` may hold at its peak: its capacity (at most twice its
/// length) and, while it grows in the heap (glibc serves blocks below 32 MiB from the heap,
/// where a realloc copies), the block it is copied from. Larger blocks are mmapped and grow
/// in place (mremap).
fn grown(bytes: u128) -> u128 {
    2 * bytes + bytes.min(32 << 20)
}

/// A JSON answer of `numbers` numbers (and a little text): its bytes, with the slack of the
/// buffer it is written into.
pub fn answer(numbers: u128) -> u128 {
    grown(JSON_NUMBER.saturating_mul(numbers) + 1024)
}

/// The parts of a request's reservation, in the order a request takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The body's bytes as read.
    Body,
    /// What the body parses into.
    Parsed,
    /// The computation, the copies for the database, and the answer.
    Work,
}

const PARTS: usize = 3;

impl Part {
    fn index(self) -> usize {
        self as usize
    }
}

/// One part's estimate: the bytes, what they are for and what the client can shrink, in the
/// API's words (a refusal's detail quotes them).
#[derive(Debug, Clone)]
pub struct Need {
    pub bytes: u128,
    pub what: String,
    pub shrink: String,
}

impl Need {
    pub fn new(bytes: u128, what: impl Into<String>, shrink: impl Into<String>) -> Self {
        Self {
            bytes,
            what: what.into(),
            shrink: shrink.into(),
        }
    }
}

/// Why a reservation was refused; the HTTP layer turns it into a problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Past `--max-request-memory` (422 `too_large`); the detail names the figure, the limit
    /// and what to shrink.
    TooLarge(String),
    /// The budget cannot take it now (503 `overloaded`); the detail says whether waiting or
    /// deleting sessions helps.
    Full {
        detail: String,
        retry_after_secs: u64,
    },
}

/// What the store holds, and how to make it hold less (drop idle cached sessions that the
/// database keeps); see [`crate::store::Store::held_bytes`] and `shed`.
pub trait Holder: Send + Sync {
    fn held(&self) -> u64;
    /// Frees about `bytes` if it can without losing anything; returns what it freed.
    fn shed(&self, bytes: u64) -> u64;
}

/// The server's memory budget: a limit, what is held, and what running requests reserved.
pub struct Budget {
    enabled: bool,
    limit: u64,
    per_request: u64,
    baseline: u64,
    in_flight: AtomicU64,
    holder: Box<dyn Holder>,
    gauge: metrics::Gauge,
}

impl Budget {
    /// The budget `config` sets (or its default), with `baseline` bytes held from the start.
    pub fn new(config: &Config, baseline: u64, holder: impl Holder + 'static) -> Arc<Self> {
        let limit = config
            .memory_budget
            .unwrap_or_else(|| default_budget().map_or(u64::MAX, |(bytes, _)| bytes));
        let budget = Arc::new(Self {
            enabled: !config.no_admission,
            limit,
            per_request: config.max_request_memory,
            baseline,
            in_flight: AtomicU64::new(0),
            holder: Box::new(holder),
            gauge: metrics::gauge!(crate::telemetry::MEMORY_BUDGET_USED_BYTES),
        });
        budget.publish();
        budget
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn per_request(&self) -> u64 {
        self.per_request
    }

    /// Bytes of the budget in use: the baseline, what is held and what is reserved.
    pub fn used(&self) -> u64 {
        self.baseline
            .saturating_add(self.holder.held())
            .saturating_add(self.in_flight.load(Ordering::Relaxed))
    }

    /// Sets the gauge `GET /metrics` shows.
    pub fn publish(&self) {
        self.gauge.set(self.used() as f64);
    }

    /// A new, empty reservation.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation(Arc::new(Reserved {
            budget: self.clone(),
            parts: Mutex::new(Default::default()),
        }))
    }

    /// Takes `bytes` more for a running request, or says why not.
    fn take(&self, bytes: u64, need: &Need) -> Result<(), Refusal> {
        let mut shed = false;
        loop {
            let reserved = self.in_flight.load(Ordering::Acquire);
            let held = self.baseline.saturating_add(self.holder.held());
            let fits = held
                .saturating_add(reserved)
                .checked_add(bytes)
                .is_some_and(|total| total <= self.limit);
            if fits {
                if self
                    .in_flight
                    .compare_exchange(
                        reserved,
                        reserved + bytes,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
                {
                    self.publish();
                    return Ok(());
                }
                continue;
            }
            // Short: first let the store drop what the database keeps anyway, once.
            let short = held
                .saturating_add(reserved)
                .saturating_add(bytes)
                .saturating_sub(self.limit);
            if !shed {
                shed = true;
                if self.holder.shed(short) > 0 {
                    continue;
                }
            }
            return Err(self.full(bytes, held, reserved, need));
        }
    }

    fn give(&self, bytes: u64) {
        if bytes > 0 {
            self.in_flight.fetch_sub(bytes, Ordering::AcqRel);
            self.publish();
        }
    }

    fn full(&self, bytes: u64, held: u64, reserved: u64, need: &Need) -> Refusal {
        let (advice, retry_after_secs) = if held.saturating_add(bytes) > self.limit {
            (
                "waiting does not help, since what is held leaves too little even with no \
                 request running: delete sessions you no longer need (DELETE \
                 /sessions/{id}; idle ones also expire after --session-ttl-secs), or ask for \
                 less"
                    .to_string(),
                RETRY_HELD_SECS,
            )
        } else {
            (
                format!(
                    "waiting helps: running requests will end and free theirs (retry in \
                     {RETRY_WAIT_SECS} s); deleting sessions you no longer need helps too"
                ),
                RETRY_WAIT_SECS,
            )
        };
        Refusal::Full {
            detail: format!(
                "the server's memory budget ({}, --memory-budget) is full: sessions and the \
                 server hold {}, running requests {}, and this request needs {} more ({}); {advice}",
                bytes_text(u128::from(self.limit)),
                bytes_text(u128::from(held)),
                bytes_text(u128::from(reserved)),
                bytes_text(u128::from(bytes)),
                need.what
            ),
            retry_after_secs,
        }
    }
}

/// A request's (or a background job's) share of the budget: its parts, given back when the
/// last clone is dropped. Cloning it is cheap; the clones are the same reservation.
#[derive(Clone)]
pub struct Reservation(Arc<Reserved>);

struct Reserved {
    budget: Arc<Budget>,
    parts: Mutex<[Option<(u64, Need)>; PARTS]>,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let parts = self.parts.get_mut().unwrap_or_else(PoisonError::into_inner);
        let total = parts.iter().flatten().map(|(b, _)| *b).sum();
        self.budget.give(total);
    }
}

fn clamp(bytes: u128) -> u64 {
    u64::try_from(bytes).unwrap_or(u64::MAX)
}

impl Reservation {
    /// Sets `part` to `need`: refused with [`Refusal::TooLarge`] if the request's parts would
    /// then add up past `--max-request-memory`, with [`Refusal::Full`] if the budget cannot
    /// take the difference now. A refusal leaves the reservation as it was.
    pub fn need(&self, part: Part, need: Need) -> Result<(), Refusal> {
        let budget = &self.0.budget;
        if !budget.enabled {
            return Ok(());
        }
        let mut parts = self.0.parts.lock().unwrap_or_else(PoisonError::into_inner);
        self.check_locked(&parts, part, &need)?;
        let bytes = clamp(need.bytes);
        let before = parts[part.index()].as_ref().map_or(0, |(b, _)| *b);
        if bytes > before {
            budget.take(bytes - before, &need)?;
        } else {
            budget.give(before - bytes);
        }
        parts[part.index()] = Some((bytes, need));
        Ok(())
    }

    /// Whether `part` could be `need` under `--max-request-memory`, reserving nothing: for a
    /// refusal that must come before a wait (for a worker), not after it.
    pub fn check(&self, part: Part, need: &Need) -> Result<(), Refusal> {
        if !self.0.budget.enabled {
            return Ok(());
        }
        let parts = self.0.parts.lock().unwrap_or_else(PoisonError::into_inner);
        self.check_locked(&parts, part, need)
    }

    fn check_locked(
        &self,
        parts: &[Option<(u64, Need)>; PARTS],
        part: Part,
        need: &Need,
    ) -> Result<(), Refusal> {
        let limit = u128::from(self.0.budget.per_request);
        let others: u128 = parts
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != part.index())
            .flat_map(|(_, p)| p.as_ref())
            .map(|(b, _)| u128::from(*b))
            .sum();
        let total = others.saturating_add(need.bytes);
        if total <= limit {
            return Ok(());
        }
        let mut detail = format!("this request needs about {}: ", bytes_text(total));
        let mut first = true;
        for (i, p) in parts.iter().enumerate() {
            let shown = if i == part.index() {
                Some((need.bytes, need))
            } else {
                p.as_ref().map(|(b, n)| (u128::from(*b), n))
            };
            if let Some((bytes, n)) = shown.filter(|(b, _)| *b > 0) {
                let sep = if first { "" } else { "; " };
                first = false;
                let _ = write!(detail, "{sep}{} {}", n.what, bytes_text(bytes));
            }
        }
        let _ = write!(
            detail,
            ". This server allows {} per request (--max-request-memory): {}",
            bytes_text(limit),
            need.shrink
        );
        Err(Refusal::TooLarge(detail))
    }

    /// Gives `part` back (what it counted is no longer held).
    pub fn release(&self, part: Part) {
        let mut parts = self.0.parts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((bytes, _)) = parts[part.index()].take() {
            self.0.budget.give(bytes);
        }
    }

    /// Keeps only what the finished answer holds: its `bytes`, as the work part.
    pub fn settle(&self, bytes: u64) {
        if !self.0.budget.enabled {
            return;
        }
        let mut parts = self.0.parts.lock().unwrap_or_else(PoisonError::into_inner);
        let total: u64 = parts.iter().flatten().map(|(b, _)| *b).sum();
        let budget = &self.0.budget;
        if bytes <= total {
            budget.give(total - bytes);
        } else {
            // Written already: count it, whatever the budget says.
            budget.in_flight.fetch_add(bytes - total, Ordering::AcqRel);
            budget.publish();
        }
        *parts = Default::default();
        parts[Part::Work.index()] = Some((bytes, Need::new(0, "the answer", "")));
    }

    /// The bytes reserved now.
    pub fn bytes(&self) -> u64 {
        let parts = self.0.parts.lock().unwrap_or_else(PoisonError::into_inner);
        parts.iter().flatten().map(|(b, _)| *b).sum()
    }

    /// The budget this reservation draws on.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.0.budget
    }
}

/// `bytes` for people: `1.49 TiB`, `512 MiB`, `900 bytes`.
pub fn bytes_text(bytes: u128) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text} {}", UNITS[unit])
}

// ---------------------------------------------------------------------------------------------
// Estimates

/// Bytes of `n` f64s.
pub fn f64s(n: u128) -> u128 {
    n.saturating_mul(8)
}

/// What one JSON body holds, counted by a scan that allocates nothing, before it is parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodyShape {
    pub numbers: u64,
    pub arrays: u64,
    pub objects: u64,
    /// Members of all objects.
    pub members: u64,
    pub strings: u64,
    pub string_bytes: u64,
    /// `true`, `false` and `null`.
    pub literals: u64,
}

impl BodyShape {
    /// What the body takes parsed into the API's request types: numbers into flat `f64`
    /// buffers or rows (`Vec<f64>`), arrays into vector headers and their blocks, strings
    /// into owned strings; structs are small.
    pub fn typed_bytes(&self) -> u128 {
        let n = |v: u64| u128::from(v);
        grown(f64s(n(self.numbers)))
            .saturating_add(grown(n(self.arrays) * 24) + n(self.arrays) * 32)
            .saturating_add(n(self.strings) * 48 + 2 * n(self.string_bytes))
            .saturating_add(n(self.objects) * 256)
    }

    /// What the body takes parsed into a `serde_json::Value` tree (check's submissions are
    /// read that way): a `Value` per value, in vectors that grow; per member its key, its
    /// hash and its slot in the object's index.
    pub fn tree_bytes(&self) -> u128 {
        let n = |v: u64| u128::from(v);
        let value = std::mem::size_of::<serde_json::Value>() as u128;
        let values =
            n(self.numbers) + n(self.arrays) + n(self.objects) + n(self.strings) + n(self.literals);
        grown(values * value)
            .saturating_add(grown(n(self.members) * (value + 56)))
            .saturating_add(n(self.strings + self.members) * 48 + 2 * n(self.string_bytes))
            .saturating_add(n(self.objects) * 128)
    }
}

/// `n` with thousands separators, as details write counts.
fn count(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The most samples `m` in `0..=max` for which `cost(m) <= room`, by bisection (`cost`
/// grows with `m`); 0 when not even none fit.
pub fn fit(room: u128, max: u128, cost: impl Fn(u128) -> u128) -> u128 {
    if cost(0) > room {
        return 0;
    }
    let (mut lo, mut hi) = (0u128, max);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if cost(mid) <= room {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// Bytes of one forward and backward pass of `config` over `m` samples (see
/// [`nn::workspace_bytes`]).
pub fn pass(config: &NetConfig, m: u128, record: bool) -> u128 {
    nn::workspace_bytes(
        config,
        usize::try_from(m).unwrap_or(usize::MAX),
        true,
        record,
    )
}

/// Bytes of one forward pass of `config` over `m` samples (a prediction).
pub fn forward(config: &NetConfig, m: u128) -> u128 {
    nn::workspace_bytes(
        config,
        usize::try_from(m).unwrap_or(usize::MAX),
        false,
        false,
    )
}

/// Bytes a train of `config` holds over `m` samples: the trainer's buffers and the weights
/// it updates (a copy of the session's).
pub fn trainer(config: &NetConfig, m: u128) -> u128 {
    Trainer::bytes(config, usize::try_from(m).unwrap_or(usize::MAX))
        .saturating_add(f64s(config.parameter_count()))
}

/// "activations of layers [4, 1000000, 3] (7,000,000 parameters) for 100,000 samples".
pub fn activations_text(config: &NetConfig, m: u128) -> String {
    let samples = if m == 1 { "sample" } else { "samples" };
    format!(
        "activations of layers {:?} ({} parameters) for {} {samples}",
        config.layers,
        count(config.parameter_count()),
        count(m)
    )
}

/// What a batch route can shrink: its samples (`fit` of them would fit in `room`), or the
/// network.
pub fn shrink_samples(room: u128, m: u128, cost: impl Fn(u128) -> u128) -> String {
    let most = fit(room, m, cost);
    if most == 0 {
        "not even one sample fits: use a network with fewer or narrower layers".into()
    } else {
        format!(
            "send fewer samples at once (at most {} fit), or use a network with narrower layers",
            count(most)
        )
    }
}

/// Bytes a session holds with `parameters` parameters, a dataset of `samples` samples of
/// `features` inputs and `classes` outputs, and `history` losses (the store's count of
/// what it holds, [`crate::store::Session::held_bytes`], is the same formula).
pub fn session_bytes(parameters: u128, samples: u128, width: u128, history: u128) -> u128 {
    crate::store::held_bytes(parameters, samples.saturating_mul(width), history)
}

// ---------------------------------------------------------------------------------------------
// The default budget, and the allocator under an address-space limit

/// Half of the lowest of the machine's memory, the cgroup's memory limit and the process's
/// address-space limit (`ulimit -v`), with the name of the one that decided; `None` if none
/// can be read.
pub fn default_budget() -> Option<(u64, &'static str)> {
    let limits = [
        (machine_memory(), "the machine's memory"),
        (cgroup_limit(), "the cgroup's memory limit"),
        (address_space_limit(), "the address-space limit"),
    ];
    limits
        .into_iter()
        .filter_map(|(bytes, what)| bytes.map(|b| (b, what)))
        .min_by_key(|(bytes, _)| *bytes)
        .map(|(bytes, what)| (bytes / 2, what))
}

fn machine_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// The lowest `memory.max` (cgroup v2) on the path from this process's cgroup to the root,
/// or cgroup v1's `memory.limit_in_bytes`.
fn cgroup_limit() -> Option<u64> {
    let read = |path: &str| -> Option<u64> {
        let text = std::fs::read_to_string(path).ok()?;
        let text = text.trim();
        // "max" (v2), or a huge number standing for none (v1).
        text.parse::<u64>().ok().filter(|&b| b < 1 << 60)
    };
    let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut lowest: Option<u64> = None;
    if let Some(path) = mine.lines().find_map(|l| l.strip_prefix("0::")) {
        let mut dir = std::path::PathBuf::from("/sys/fs/cgroup");
        dir.push(path.trim_start_matches('/'));
        for d in dir.ancestors() {
            if !d.starts_with("/sys/fs/cgroup") {
                break;
            }
            if let Some(b) = read(&format!("{}/memory.max", d.display())) {
                lowest = Some(lowest.map_or(b, |l| l.min(b)));
            }
        }
    }
    let v1 = read("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    match (lowest, v1) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The soft `RLIMIT_AS`, if there is one.
pub fn address_space_limit() -> Option<u64> {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::AS).ok()?;
    (soft != rlimit::INFINITY).then_some(soft)
}

/// Sets glibc's allocator up before any thread starts, and returns what it did, for the
/// start-up log.
///
/// Always: every block from 256 KiB up (a request body, a big answer, a batch's
/// activations) is mapped on its own and unmapped when freed. glibc's default threshold
/// moves up after the first such block is freed (to 32 MiB), after which big blocks are
/// carved from an arena and their pages may stay with the process when freed: the memory
/// the budget counts as given back would still be resident, and a second big request
/// would look like a leak.
///
/// Under an address-space limit (`ulimit -v`, `prlimit --as`) also: at most 2 arenas,
/// since every thread that allocates may otherwise get one of its own (up to 8 per core),
/// each reserving 64 MiB of address space. Without the limit, arenas per thread stay
/// (faster, and untouched address space costs nothing).
pub fn prepare_allocator() -> String {
    let limit = address_space_limit();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let done = |ok: bool| if ok { "done" } else { "refused" };
        // SAFETY: mallopt only changes the allocator's parameters; it is called before any
        // other thread exists (main, before the runtime), and reports failure by returning 0.
        let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024) } == 1;
        let mut said = format!("blocks from 256 KiB mapped on their own ({})", done(mmap));
        if let Some(limit) = limit {
            // SAFETY: as above.
            let arenas = unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) } == 1;
            said = format!(
                "address-space limit {}: malloc arenas capped at 2 ({}), {said}",
                bytes_text(u128::from(limit)),
                done(arenas),
            );
        }
        said
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        match limit {
            Some(limit) => format!(
                "address-space limit {}: not glibc, allocator left as it is",
                bytes_text(u128::from(limit))
            ),
            None => "not glibc, allocator left as it is".to_owned(),
        }
    }
}

/// Threads the runtime's blocking pool may have: `--workers` and [`EXTRA_BLOCKING_THREADS`].
pub fn blocking_threads(config: &Config) -> usize {
    config.workers as usize + EXTRA_BLOCKING_THREADS
}

/// What the server holds before any session: its resident set now (call it once the store
/// is open) and every blocking thread's packing buffers at their largest.
pub fn baseline(config: &Config) -> u64 {
    let resident = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(64 << 20, |pages| pages * 4096);
    let scratch = (blocking_threads(config) * nn::THREAD_SCRATCH_BYTES) as u64;
    resident + scratch
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u64);

    impl Holder for Fixed {
        fn held(&self) -> u64 {
            self.0
        }
        fn shed(&self, _: u64) -> u64 {
            0
        }
    }

    fn budget(limit: u64, per_request: u64, held: u64) -> Arc<Budget> {
        let config = Config {
            memory_budget: Some(limit),
            max_request_memory: per_request,
            ..Config::default()
        };
        Budget::new(&config, 0, Fixed(held))
    }

    fn need(bytes: u128) -> Need {
        Need::new(bytes, "work", "send less")
    }

    #[test]
    fn parts_add_up_and_come_back_when_the_last_clone_goes() {
        let b = budget(1000, 600, 100);
        let r = b.reservation();
        r.need(Part::Body, need(200)).unwrap();
        r.need(Part::Work, need(300)).unwrap();
        assert_eq!((r.bytes(), b.used()), (500, 600));
        // A part set again counts once, at its new size.
        r.need(Part::Work, need(100)).unwrap();
        assert_eq!(b.used(), 400);
        r.release(Part::Body);
        assert_eq!(b.used(), 200);
        let clone = r.clone();
        drop(r);
        assert_eq!(b.used(), 200, "a clone keeps the reservation");
        clone.settle(40);
        assert_eq!(b.used(), 140);
        drop(clone);
        assert_eq!(b.used(), 100, "only what is held remains");
    }

    #[test]
    fn past_the_request_limit_is_too_large_and_names_the_parts() {
        let b = budget(1 << 40, 1000, 0);
        let r = b.reservation();
        r.need(Part::Body, Need::new(400, "the body", "")).unwrap();
        let Err(Refusal::TooLarge(detail)) = r.need(Part::Work, need(700)) else {
            panic!("700 more than a 1000-byte request allows");
        };
        assert!(detail.contains("1.07 KiB"), "{detail}");
        assert!(
            detail.contains("the body 400 bytes; work 700 bytes"),
            "{detail}"
        );
        assert!(
            detail.contains("--max-request-memory): send less"),
            "{detail}"
        );
        assert_eq!(r.bytes(), 400, "a refusal leaves the reservation as it was");
        assert!(r.check(Part::Work, &need(600)).is_ok());
    }

    #[test]
    fn a_full_budget_says_whether_waiting_helps() {
        let b = budget(1000, 1000, 300);
        let running = b.reservation();
        running.need(Part::Work, need(500)).unwrap();
        let r = b.reservation();
        let Err(Refusal::Full {
            detail,
            retry_after_secs,
        }) = r.need(Part::Work, need(400))
        else {
            panic!("300 held + 500 running + 400 > 1000");
        };
        assert_eq!(retry_after_secs, RETRY_WAIT_SECS);
        assert!(detail.contains("waiting helps"), "{detail}");
        drop(running);
        r.need(Part::Work, need(400)).unwrap();
        let Err(Refusal::Full {
            detail,
            retry_after_secs,
        }) = b.reservation().need(Part::Work, need(800))
        else {
            panic!("300 held + 800 > 1000 even with nothing running");
        };
        assert_eq!(retry_after_secs, RETRY_HELD_SECS);
        assert!(detail.contains("delete sessions"), "{detail}");
    }

    #[test]
    fn fit_finds_the_most_samples_that_fit() {
        assert_eq!(fit(100, 1000, |m| 10 + 3 * m), 30);
        assert_eq!(fit(5, 1000, |m| 10 + m), 0);
        assert_eq!(fit(u128::MAX, 7, |m| m), 7);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes_text(900), "900 bytes");
        assert_eq!(bytes_text(1 << 30), "1 GiB");
        assert_eq!(bytes_text(1536 << 20), "1.5 GiB");
        assert_eq!(bytes_text(1_600_000_000_000), "1.46 TiB");
        assert_eq!(count(1234567), "1,234,567");
    }
}
