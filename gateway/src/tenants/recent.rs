//! The key each thread let in last, so a tenant's next request on that thread skips the key's
//! SHA-256 (about 60 ns here, the largest single piece of what the front door costs a request;
//! benches/README.md).
//!
//! Kept per thread: the key as the caller sent it (up to `MAX_KEPT` bytes; a longer key is
//! hashed every time), the tenant it named, and the generation of the tenants table it was found
//! in. A request gets that tenant only when the table is still the one in force and its key is
//! the same, compared over the whole buffer in constant time, so the comparison's timing tells a
//! caller nothing about the kept key. A reload builds a new table, so a revoked key is looked up
//! afresh (and refused) on its next request. Unknown keys are never kept. The key stays in this
//! thread's memory until the next key replaces it, as it stays in the request's freed buffers;
//! the keys file still holds digests only.

use std::cell::RefCell;
use std::sync::Arc;

use super::Tenant;

/// The longest key kept; API keys are 20-64 characters in practice.
pub(super) const MAX_KEPT: usize = 64;

struct Kept {
    generation: u64,
    key: [u8; MAX_KEPT],
    len: usize,
    tenant: Arc<Tenant>,
}

thread_local! {
    static KEPT: RefCell<Option<Kept>> = const { RefCell::new(None) };
}

/// The tenant of `key` if this thread let it in last, from the table of `generation`.
pub(super) fn find(generation: u64, key: &[u8]) -> Option<Arc<Tenant>> {
    let padded = padded(key)?;
    KEPT.with_borrow(|kept| {
        let kept = kept.as_ref().filter(|k| k.generation == generation)?;
        same(&kept.key, kept.len, &padded, key.len()).then(|| kept.tenant.clone())
    })
}

/// Remembers that `key` named `tenant` in the table of `generation`.
pub(super) fn keep(generation: u64, key: &[u8], tenant: &Arc<Tenant>) {
    if let Some(padded) = padded(key) {
        let kept = Kept { generation, key: padded, len: key.len(), tenant: tenant.clone() };
        KEPT.set(Some(kept));
    }
}

fn padded(key: &[u8]) -> Option<[u8; MAX_KEPT]> {
    let mut buffer = [0u8; MAX_KEPT];
    buffer.get_mut(..key.len())?.copy_from_slice(key);
    Some(buffer)
}

/// Whether two keys are the same, in time that does not depend on where they differ: every
/// byte is compared, and the differences are folded together before the one branch.
fn same(a: &[u8; MAX_KEPT], a_len: usize, b: &[u8; MAX_KEPT], b_len: usize) -> bool {
    let bytes = a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y));
    let diff = u64::from(bytes) | (a_len ^ b_len) as u64;
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelAccess, Priority, TenantConfig};

    fn tenant(name: &str) -> Arc<Tenant> {
        Arc::new(Tenant::new(TenantConfig {
            name: name.into(),
            key_sha256: [0; 32],
            models: ModelAccess::All,
            may_pin: false,
            rps: None,
            burst: 0,
            max_in_flight: None,
            priority: Priority::Online,
        }))
    }

    #[test]
    fn only_the_same_key_in_the_same_table_is_found() {
        let team = tenant("team");
        keep(7, b"key-team", &team);
        let found = find(7, b"key-team").expect("the kept key");
        assert!(Arc::ptr_eq(&found, &team));
        assert!(find(7, b"key-teal").is_none(), "a key one byte off");
        assert!(find(7, b"key-tea").is_none(), "a prefix of the key");
        assert!(find(7, b"key-team\0").is_none(), "the key and a zero byte (the padding's value)");
        assert!(find(8, b"key-team").is_none(), "the same key after the table changed");
    }

    #[test]
    fn a_key_longer_than_kept_is_never_kept() {
        let long = [b'k'; MAX_KEPT + 1];
        keep(1, &long, &tenant("long"));
        assert!(find(1, &long).is_none());
        let exact = [b'k'; MAX_KEPT];
        keep(1, &exact, &tenant("exact"));
        assert!(find(1, &exact).is_some());
    }

    #[test]
    fn each_thread_keeps_its_own() {
        keep(3, b"key-here", &tenant("here"));
        let elsewhere = std::thread::spawn(|| find(3, b"key-here").is_some()).join().unwrap();
        assert!(!elsewhere);
        assert!(find(3, b"key-here").is_some());
    }
}
