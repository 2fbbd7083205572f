//! The scheduling priority of compute jobs: trains and other CPU work run below the async
//! runtime's threads, so that `/healthz` and small predicts (answered on the runtime) stay
//! quick while every worker trains.
//!
//! Linux keeps a nice value and a scheduling policy per thread, and a thread inherits both
//! from the thread that starts it: a trainer's pool threads, started from a lowered
//! thread, are lowered too. An unprivileged thread may lower its priority but not raise it
//! again, so a blocking-pool thread is lowered once, for good, the first time it runs a
//! compute job (a thread-local flag); whatever else runs on it later (the store's encoding
//! of big sessions) is bulk work too. Elsewhere (not Linux) this does nothing.
//!
//! `BACKPROP_COMPUTE_PRIORITY` (read once, for measuring: `bench/latency.sh`) picks the
//! policy: `normal` (off), `nice:N`, `batch:N` (SCHED_BATCH at nice N) or `idle`
//! (SCHED_IDLE).

use std::cell::Cell;
use std::sync::OnceLock;

/// How a compute thread is scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// As the runtime's threads.
    Normal,
    /// SCHED_OTHER at this nice value.
    Nice(i32),
    /// SCHED_BATCH (no wake-up preemption of others) at this nice value.
    Batch(i32),
    /// SCHED_IDLE: runs when nothing else of normal priority wants the core.
    Idle,
}

/// The policy unless `BACKPROP_COMPUTE_PRIORITY` says otherwise.
pub const DEFAULT: Policy = Policy::Nice(19);

impl std::str::FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let nice = |n: &str| {
            n.parse::<i32>()
                .ok()
                .filter(|n| (0..=19).contains(n))
                .ok_or_else(|| format!("{n:?} is not a nice value from 0 to 19"))
        };
        match s.split_once(':') {
            None if s == "normal" => Ok(Self::Normal),
            None if s == "idle" => Ok(Self::Idle),
            Some(("nice", n)) => nice(n).map(Self::Nice),
            Some(("batch", n)) => nice(n).map(Self::Batch),
            _ => Err(format!(
                "{s:?} is not a policy: normal, nice:N, batch:N or idle"
            )),
        }
    }
}

/// The policy compute threads run under.
pub fn policy() -> Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    *POLICY.get_or_init(|| match std::env::var("BACKPROP_COMPUTE_PRIORITY") {
        Err(_) => DEFAULT,
        Ok(s) => s.parse().unwrap_or_else(|e| {
            tracing::warn!("BACKPROP_COMPUTE_PRIORITY: {e}; using {DEFAULT:?}");
            DEFAULT
        }),
    })
}

/// Lowers the calling thread to [`policy`] unless it already was: call it on a compute
/// thread before the work (and before a trainer starts its threads).
pub fn lower_this_thread() {
    thread_local! {
        static LOWERED: Cell<bool> = const { Cell::new(false) };
    }
    if LOWERED.get() {
        return;
    }
    LOWERED.set(true);
    if let Err(e) = apply(policy()) {
        // Not fatal: the work runs, only less politely. Once per thread at most.
        tracing::warn!(error = %e, "could not lower a compute thread's priority");
    }
}

#[cfg(target_os = "linux")]
fn apply(policy: Policy) -> std::io::Result<()> {
    let (sched, nice) = match policy {
        Policy::Normal => return Ok(()),
        Policy::Nice(n) => (libc::SCHED_OTHER, n),
        Policy::Batch(n) => (libc::SCHED_BATCH, n),
        Policy::Idle => (libc::SCHED_IDLE, 0),
    };
    let check = |r: libc::c_int| match r {
        -1 => Err(std::io::Error::last_os_error()),
        _ => Ok(()),
    };
    // SAFETY: plain system calls on this thread's id with a parameter that lives across them.
    unsafe {
        let tid = libc::gettid();
        if sched != libc::SCHED_OTHER {
            let param = libc::sched_param { sched_priority: 0 };
            check(libc::sched_setscheduler(tid, sched, &param))?;
        }
        if nice != 0 {
            check(libc::setpriority(
                libc::PRIO_PROCESS,
                tid as libc::id_t,
                nice,
            ))?;
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn apply(_: Policy) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse() {
        assert_eq!("normal".parse(), Ok(Policy::Normal));
        assert_eq!("idle".parse(), Ok(Policy::Idle));
        assert_eq!("nice:19".parse(), Ok(Policy::Nice(19)));
        assert_eq!("batch:10".parse(), Ok(Policy::Batch(10)));
        assert!("nice:20".parse::<Policy>().is_err());
        assert!("nice".parse::<Policy>().is_err());
        assert!("fast".parse::<Policy>().is_err());
    }
}
