//! Who may read the page: with a token set, a request carries it as
//! `Authorization: Bearer TOKEN` (a reverse proxy, a script) or holds a session cookie
//! that the login form gave for it. Sessions live in memory: a restarted `ridgeline ui`
//! asks for the token again.

use std::collections::HashSet;
use std::sync::Mutex;

/// The cookie naming a session.
pub const COOKIE: &str = "ridgeline_session";

/// Sessions kept at most; the oldest go first past it (a login storm cannot grow
/// memory).
const MAX_SESSIONS: usize = 4096;

/// The token the page requires, and the sessions it has given.
pub struct Auth {
    token: Option<String>,
    sessions: Mutex<(HashSet<String>, std::collections::VecDeque<String>)>,
}

impl Auth {
    /// Requires `token` (none: every request may read).
    pub fn new(token: Option<String>) -> Self {
        Auth {
            token: token.filter(|t| !t.is_empty()),
            sessions: Mutex::default(),
        }
    }

    /// Whether a token is required at all.
    pub fn required(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `given` is the token, compared in constant time.
    pub fn is_token(&self, given: &str) -> bool {
        match &self.token {
            None => true,
            Some(t) => same_digest(t, given),
        }
    }

    /// A new session for a client that gave the token.
    pub fn open_session(&self) -> String {
        let mut bytes = [0u8; 24];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .expect("the system RNG");
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut s = self.sessions.lock().expect("sessions lock");
        let (set, order) = &mut *s;
        if order.len() >= MAX_SESSIONS {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        set.insert(id.clone());
        order.push_back(id.clone());
        id
    }

    /// Ends a session.
    pub fn close_session(&self, id: &str) {
        let mut s = self.sessions.lock().expect("sessions lock");
        let (set, order) = &mut *s;
        set.remove(id);
        order.retain(|x| x != id);
    }

    /// Whether a request with these `Authorization` and `Cookie` headers may read.
    pub fn allows(&self, authorization: Option<&str>, cookie: Option<&str>) -> bool {
        if !self.required() {
            return true;
        }
        if let Some(t) = authorization.and_then(|a| a.strip_prefix("Bearer ")) {
            return self.is_token(t.trim());
        }
        match cookie.and_then(session_of) {
            Some(id) => self.sessions.lock().expect("sessions lock").0.contains(id),
            None => false,
        }
    }
}

/// Whether two strings are equal, compared through their SHA-256 digests with every
/// byte looked at: the time taken says nothing of where they differ, nor of the length.
fn same_digest(a: &str, b: &str) -> bool {
    let (x, y) = (
        ring::digest::digest(&ring::digest::SHA256, a.as_bytes()),
        ring::digest::digest(&ring::digest::SHA256, b.as_bytes()),
    );
    x.as_ref()
        .iter()
        .zip(y.as_ref())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// The session id in a `Cookie` header.
pub fn session_of(cookie: &str) -> Option<&str> {
    cookie
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// The `token` field of a form body (`application/x-www-form-urlencoded`).
pub fn token_of_form(body: &str) -> Option<String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| crate::http::percent_decode(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_opens_a_session_and_nothing_else_does() {
        let a = Auth::new(Some("s3cret".into()));
        assert!(a.required());
        assert!(!a.allows(None, None));
        assert!(a.allows(Some("Bearer s3cret"), None));
        assert!(!a.allows(Some("Bearer s3cre"), None));
        assert!(!a.allows(Some("Basic s3cret"), None));
        let id = a.open_session();
        assert_eq!(id.len(), 48);
        let cookie = format!("theme=dark; {COOKIE}={id}");
        assert!(a.allows(None, Some(&cookie)));
        assert!(!a.allows(None, Some(&format!("{COOKIE}={id}x"))));
        a.close_session(&id);
        assert!(!a.allows(None, Some(&cookie)));
        assert!(Auth::new(None).allows(None, None));
        assert!(Auth::new(Some(String::new())).allows(None, None));
    }

    #[test]
    fn sessions_are_bounded_oldest_first() {
        let a = Auth::new(Some("t".into()));
        let first = a.open_session();
        for _ in 0..MAX_SESSIONS {
            a.open_session();
        }
        assert!(!a.allows(None, Some(&format!("{COOKIE}={first}"))));
        assert_eq!(a.sessions.lock().unwrap().0.len(), MAX_SESSIONS);
    }

    #[test]
    fn the_form_token_is_percent_decoded() {
        assert_eq!(
            token_of_form("x=1&token=a%2Bb%3D+c").as_deref(),
            Some("a+b= c")
        );
        assert_eq!(token_of_form("x=1"), None);
    }
}
