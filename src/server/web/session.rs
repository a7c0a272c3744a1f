//! Browser sessions of the web page: kept in memory, never on disk.
//!
//! A session is made when a browser signs in with a token. Its id (32 random bytes, hex) is
//! the cookie's value and is kept here only as a SHA-256 digest; the session holds the
//! digest of the token it was opened with (never the token) and its own CSRF token, and ends
//! at its expiry, at sign-out, or when the service restarts. Who a session's requests act
//! as is looked up from the token's digest at every request
//! ([`super::super::access::Tokens::by_digest`]), so a session never outlives its token.
//! No HTTP types here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// A session as a request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Session {
    /// The digest of the token it was opened with.
    pub token: [u8; 32],
    /// What the page sends back in `X-Cordon-CSRF` with every state-changing request.
    pub csrf: String,
    /// Time left.
    pub expires_in: Duration,
}

/// A session just opened: its id goes in the cookie, its CSRF token to the page.
#[derive(Debug, Clone)]
pub(crate) struct Opened {
    pub id: String,
    pub csrf: String,
}

#[derive(Debug, thiserror::Error)]
#[error("no randomness for a session id: {0}")]
pub(crate) struct NoRandomness(String);

struct Entry {
    token: [u8; 32],
    csrf: String,
    opened: Instant,
    expires: Instant,
}

/// The open sessions, at most `max` (signing in beyond it ends the oldest).
pub(crate) struct Sessions {
    ttl: Duration,
    max: usize,
    open: Mutex<HashMap<[u8; 32], Entry>>,
}

/// 32 random bytes, hex.
fn random_hex() -> Result<String, NoRandomness> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| NoRandomness(e.to_string()))?;
    Ok(hex::encode(b))
}

/// The key a session id is kept under. Only a well-formed id (64 lower-case hex digits) has
/// one: anything else a cookie holds is no session.
fn key(id: &str) -> Option<[u8; 32]> {
    let well_formed = id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    well_formed.then(|| Sha256::digest(id.as_bytes()).into())
}

impl Sessions {
    pub fn new(ttl: Duration, max: usize) -> Sessions {
        Sessions {
            ttl,
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for the token with digest `token`.
    pub fn open(&self, token: [u8; 32]) -> Result<Opened, NoRandomness> {
        self.open_at(token, Instant::now())
    }

    fn open_at(&self, token: [u8; 32], now: Instant) -> Result<Opened, NoRandomness> {
        let id = random_hex()?;
        let csrf = random_hex()?;
        let k = key(&id).ok_or_else(|| NoRandomness("malformed id".into()))?;
        let mut open = self.lock();
        open.retain(|_, e| e.expires > now);
        while open.len() >= self.max {
            let oldest = open.iter().min_by_key(|(_, e)| e.opened).map(|(k, _)| *k);
            match oldest {
                Some(o) => open.remove(&o),
                None => break,
            };
        }
        open.insert(
            k,
            Entry {
                token,
                csrf: csrf.clone(),
                opened: now,
                expires: now + self.ttl,
            },
        );
        Ok(Opened { id, csrf })
    }

    /// The session with id `id`, if it is open and has not expired (an expired one is
    /// removed).
    pub fn get(&self, id: &str) -> Option<Session> {
        self.get_at(id, Instant::now())
    }

    fn get_at(&self, id: &str, now: Instant) -> Option<Session> {
        let k = key(id)?;
        let mut open = self.lock();
        match open.get(&k) {
            Some(e) if e.expires > now => Some(Session {
                token: e.token,
                csrf: e.csrf.clone(),
                expires_in: e.expires - now,
            }),
            Some(_) => {
                open.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Ends session `id` (sign-out). Whether it was open.
    pub fn close(&self, id: &str) -> bool {
        key(id).is_some_and(|k| self.lock().remove(&k).is_some())
    }

    /// Sessions open now (expired ones not counted).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.lock().values().filter(|e| e.expires > now).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_until_its_expiry_or_sign_out() {
        let s = Sessions::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        let o = s.open_at([7; 32], t0).expect("opened");
        assert_eq!(o.id.len(), 64);
        assert_ne!(o.id, o.csrf);
        let got = s.get_at(&o.id, t0 + Duration::from_secs(59)).expect("open");
        assert_eq!(got.token, [7; 32]);
        assert_eq!(got.csrf, o.csrf);
        assert_eq!(got.expires_in, Duration::from_secs(1));
        assert_eq!(s.get_at(&o.id, t0 + Duration::from_secs(60)), None);
        assert_eq!(s.get_at(&o.id, t0), None, "an expired session is gone");

        let o = s.open(([8; 32]).to_owned()).expect("opened");
        assert!(s.get(&o.id).is_some());
        assert!(s.close(&o.id));
        assert!(!s.close(&o.id));
        assert_eq!(s.get(&o.id), None);
    }

    #[test]
    fn ids_are_random_and_only_well_formed_ones_are_looked_up() {
        let s = Sessions::new(Duration::from_secs(60), 10);
        let a = s.open([1; 32]).expect("a");
        let b = s.open([1; 32]).expect("b");
        assert_ne!(a.id, b.id);
        assert_ne!(a.csrf, b.csrf);
        for bad in [
            "",
            "x",
            &a.id.to_uppercase(),
            &a.id[..63],
            &format!("{}0", a.id),
            &a.csrf,
        ] {
            assert_eq!(s.get(bad), None, "{bad}");
        }
    }

    #[test]
    fn beyond_the_cap_the_oldest_session_ends() {
        let s = Sessions::new(Duration::from_secs(60), 2);
        let t0 = Instant::now();
        let a = s.open_at([1; 32], t0).expect("a");
        let b = s.open_at([2; 32], t0 + Duration::from_secs(1)).expect("b");
        let c = s.open_at([3; 32], t0 + Duration::from_secs(2)).expect("c");
        let at = t0 + Duration::from_secs(3);
        assert_eq!(s.get_at(&a.id, at), None, "the oldest made room");
        assert!(s.get_at(&b.id, at).is_some());
        assert!(s.get_at(&c.id, at).is_some());
        assert_eq!(s.len(), 2);
    }
}
