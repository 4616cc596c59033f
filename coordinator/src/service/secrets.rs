//! Worker secrets: issued with each worker id at registration, carried by every later
//! request of that worker, and needed to take the id back after a restart. A registered
//! worker's id is printed in logs, `status` and results; without the secret, knowing it
//! (and the cluster token) does not let another process act as that worker or take its
//! units. Only a SHA-256 of each secret is kept, in memory and in the database.

use ring::rand::SecureRandom;
use tonic::Status;

use ridgeline_common::ids::WorkerId;

use crate::core::Core;
use crate::store::Store;

/// A worker id with the secret its request carried.
#[derive(Clone, Debug)]
pub(super) struct Caller {
    pub(super) id: WorkerId,
    pub(super) secret: String,
}

/// A fresh secret: 128 random bits in hex.
pub(super) fn new_secret() -> String {
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system's random number generator works");
    hex(&b)
}

/// A number from the system's random number generator (a search's seed when its spec
/// gives none).
pub(super) fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system's random number generator works");
    u32::from_le_bytes(b)
}

/// SHA-256 of a secret, in hex.
pub(super) fn sha256_hex(secret: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Compares two hashes in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Whether `secret` is the one issued with `id`: asked of the core for a registered
/// worker, of the database for one the core does not know (after a restart).
pub(super) fn may_resume(core: &Core, store: &Store, id: &WorkerId, secret: &str) -> bool {
    if secret.is_empty() {
        return false;
    }
    let want = match core.worker_secret(id) {
        Some(Some(h)) => h.to_owned(),
        Some(None) => return false,
        None => match store.worker_secret(id.as_str()) {
            Ok(Some(h)) => h,
            _ => return false,
        },
    };
    same(&want, &sha256_hex(secret))
}

/// Refuses a request that names a registered worker without that worker's secret. A
/// worker the core does not know passes: the core answers NOT_FOUND and the worker
/// registers again.
pub(super) fn check(core: &Core, caller: &Caller) -> Result<(), Status> {
    match core.worker_secret(&caller.id) {
        Some(Some(h)) if !same(h, &sha256_hex(&caller.secret)) => {
            Err(Status::permission_denied(format!(
                "worker id {} was issued to another process (its secret does not match)",
                caller.id
            )))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_and_hashes_compare() {
        let (a, b) = (new_secret(), new_secret());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        // The SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(same(&sha256_hex(&a), &sha256_hex(&a)));
        assert!(!same(&sha256_hex(&a), &sha256_hex(&b)));
    }
}
