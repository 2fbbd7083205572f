//! Who a request is, what it may touch, and its fair share of the server.
//!
//! Without `--token` the server is open: every request is [`Tenant::Open`], one tenant that
//! sees every session. With it, that token is the admin key ([`Tenant::Admin`], sees every
//! session) and `POST /keys` makes user keys ([`Tenant::Key`]), each of which sees and
//! touches only the sessions it created.
//!
//! A user key's secret is 256 bits from the operating system's generator, shown once as
//! URL-safe base64 (`bpk_` and 43 characters) and stored only as its SHA-256. A fast hash
//! is the right one for such secrets: slow password hashes (bcrypt, argon2) exist to make
//! guessing a low-entropy password expensive, and 2^256 guesses are out of reach however
//! cheap each is, while SHA-256's preimage resistance means a leaked table gives no key.
//! A presented key is hashed and looked up by that hash; the stored hash is then compared
//! with it in constant time, as the admin key is compared with the token (`subtle`), so no
//! comparison's timing depends on a secret's bytes.
//!
//! Fair shares are per tenant (the admin and the open server count as one each): at most
//! `--max-workers-per-key` of the `--workers` at once ([`Shares`]: a key's semaphore, then
//! the server's, both first come first served, so a key with a long queue waits in its own
//! line while other keys' requests take the other workers), and `--rate-limit-per-key`
//! requests a second with bursts of twice that ([`RateLimits`], governor's keyed GCRA).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What every user key's secret begins with, so a leaked one is recognisable (and a
/// secret-scanning tool can be told to look for it).
pub const KEY_PREFIX: &str = "bpk_";

/// Key names: 1 to 64 of these.
pub const NAME_MAX: usize = 64;

/// Who a request is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Tenant {
    /// A server without `--token`: everyone, together.
    Open,
    /// The admin key (`--token`).
    Admin,
    /// A user key, by name.
    Key(Arc<str>),
}

impl Tenant {
    /// The owner the sessions it creates get (`None`: no owner, the admin's or everyone's).
    pub fn owner(&self) -> Option<&str> {
        match self {
            Self::Key(name) => Some(name),
            Self::Open | Self::Admin => None,
        }
    }

    /// Whether it may see a session with this owner: a user key sees its own only.
    pub fn sees(&self, owner: Option<&str>) -> bool {
        match self {
            Self::Open | Self::Admin => true,
            Self::Key(name) => owner == Some(&**name),
        }
    }

    /// The sessions a listing shows it: `Some(name)` for a user key, every one otherwise.
    pub fn listed(&self) -> Option<&str> {
        self.owner()
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Self::Admin)
    }

    /// Whether the per-key session cap and request rate apply: to user keys only. The admin
    /// key is the course server's and the operator's (a grader may well make more than 50
    /// requests a second, and the admin answers for the whole server); an open server has
    /// one user, whom the server-wide limits bound.
    pub fn is_limited(&self) -> bool {
        matches!(self, Self::Key(_))
    }
}

/// A new user key's secret: 256 bits from the OS, as URL-safe base64 after [`KEY_PREFIX`].
pub fn new_secret() -> Result<String, String> {
    let mut bits = [0u8; 32];
    getrandom::fill(&mut bits).map_err(|e| format!("the OS random generator failed: {e}"))?;
    Ok(format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bits)
    ))
}

/// The stored form of a secret: its SHA-256, in hex.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Whether two secrets (or hashes) are equal, in time that does not depend on where they
/// differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Checks a key name: 1 to 64 of `A-Z a-z 0-9 . _ -`; the error says what is wrong.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_MAX {
        return Err(format!(
            "name has {} characters; a key name has 1 to {NAME_MAX}",
            name.chars().count()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "name {name:?} holds {c:?}; a key name is made of letters A-Z and a-z, digits, \
             '.', '_' and '-' (e.g. \"alice\" or \"team-3\")"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Worker shares

/// The workers, and each tenant's share of them.
pub struct Shares {
    workers: Arc<Semaphore>,
    per_tenant: u32,
    tenants: Mutex<HashMap<Tenant, Arc<Semaphore>>>,
}

/// A tenant's turn on a worker: its share's permit and the worker's, both given back when
/// dropped.
pub struct WorkerPermit {
    _worker: OwnedSemaphorePermit,
    _share: Option<OwnedSemaphorePermit>,
}

/// Above this many tenants' semaphores, the idle ones are dropped when another is made.
const SHARES_KEPT: usize = 256;

impl Shares {
    pub fn new(workers: u32, per_tenant: u32) -> Self {
        Self {
            workers: Arc::new(Semaphore::new(workers.max(1) as usize)),
            per_tenant: per_tenant.max(1),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    fn share(&self, tenant: &Tenant) -> Arc<Semaphore> {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = tenants.get(tenant) {
            return s.clone();
        }
        if tenants.len() >= SHARES_KEPT {
            // Idle: only the map holds it (a waiter or a permit holds a clone), all free.
            let full = self.per_tenant as usize;
            tenants.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < full);
        }
        let s = Arc::new(Semaphore::new(self.per_tenant as usize));
        tenants.insert(tenant.clone(), s.clone());
        s
    }

    /// Workers no one holds now.
    pub fn idle_workers(&self) -> usize {
        self.workers.available_permits()
    }

    /// Waits (holding no worker) for a place in `tenant`'s share, then for a worker; both
    /// queues are first come, first served.
    pub async fn acquire(&self, tenant: &Tenant) -> Result<WorkerPermit, String> {
        let closed = |e| format!("the worker semaphore closed: {e}");
        // An open server's one tenant may use every worker: there is nobody to share with.
        let share = match tenant {
            Tenant::Open => None,
            _ => Some(self.share(tenant).acquire_owned().await.map_err(closed)?),
        };
        let worker = self.workers.clone().acquire_owned().await.map_err(closed)?;
        Ok(WorkerPermit {
            _worker: worker,
            _share: share,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Request rates

/// Each tenant's request rate: `--rate-limit-per-key` a second, bursts of twice that.
pub struct RateLimits(Option<DefaultKeyedRateLimiter<Tenant>>);

impl RateLimits {
    /// `per_second` 0: no limit.
    pub fn new(per_second: u32) -> Self {
        Self(NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        }))
    }

    /// `Ok` if `tenant` may make a request now; else how long until it may.
    pub fn check(&self, tenant: &Tenant) -> Result<(), Duration> {
        let Some(limiter) = &self.0 else {
            return Ok(());
        };
        limiter
            .check_key(tenant)
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }

    /// Forgets tenants whose state is back to full (for a periodic sweep).
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.0 {
            limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_256_random_bits_in_url_safe_text_and_hash_to_hex() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_ne!(a, b);
        let body = a.strip_prefix(KEY_PREFIX).expect("the prefix");
        assert_eq!(body.len(), 43, "{a}");
        assert!(
            body.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{a}"
        );
        let bits = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .unwrap();
        assert_eq!(bits.len(), 32);
        // SHA-256("abc"), FIPS 180-2's example.
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(same_secret(&a, &a.clone()));
        assert!(!same_secret(&a, &b));
        assert!(!same_secret("abc", "abcd"));
    }

    #[test]
    fn names_are_1_to_64_of_the_safe_characters() {
        for good in ["alice", "A.b_c-9", &"x".repeat(64)] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in ["", &"x".repeat(65), "a b", "é", "a/b", "a:b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_user_key_sees_its_own_sessions_the_admin_all() {
        let alice = Tenant::Key("alice".into());
        assert!(alice.sees(Some("alice")));
        assert!(!alice.sees(Some("bob")));
        assert!(!alice.sees(None));
        assert!(Tenant::Admin.sees(Some("bob")) && Tenant::Admin.sees(None));
        assert!(Tenant::Open.sees(None));
        assert_eq!(alice.owner(), Some("alice"));
        assert_eq!(Tenant::Admin.owner(), None);
    }

    #[test]
    fn a_burst_of_twice_the_rate_then_a_wait() {
        let limits = RateLimits::new(5);
        let t = Tenant::Key("a".into());
        for i in 0..10 {
            assert!(limits.check(&t).is_ok(), "request {i} of the burst");
        }
        let wait = limits.check(&t).unwrap_err();
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        // Another tenant has its own allowance.
        assert!(limits.check(&Tenant::Admin).is_ok());
        assert!(RateLimits::new(0).check(&t).is_ok());
    }

    #[tokio::test]
    async fn a_tenant_past_its_share_waits_while_another_gets_a_worker() {
        let shares = Arc::new(Shares::new(2, 1));
        let a = Tenant::Key("a".into());
        let first = shares.acquire(&a).await.unwrap();
        let waiting = tokio::spawn({
            let shares = shares.clone();
            let a = a.clone();
            async move { shares.acquire(&a).await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "a's second request waits for a's share"
        );
        let b = tokio::time::timeout(Duration::from_secs(1), shares.acquire(&Tenant::Admin))
            .await
            .expect("the admin gets the other worker at once")
            .unwrap();
        drop(first);
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("a's second request runs once its first is done")
            .unwrap()
            .unwrap();
    }
}
