//! The keys file (`[auth] keys_file`): `[[tenant]]` tables, read and validated whole with the
//! config (a reload re-reads it; any problem refuses the whole reload). Problems are reported as
//! `<file>: tenant[2].rps`, every one at once.

use std::collections::BTreeSet;
use std::path::Path;

use super::{
    ModelAccess, Priority, Problem, RawKeysFile, RawTenant, TenantConfig, config_path, toml_message,
};

/// Reads the keys file at `path` and validates every tenant.
pub(super) fn read(path: &Path) -> Result<Vec<TenantConfig>, Vec<Problem>> {
    let at = |field: String| format!("{}: {field}", path.display());
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![Problem::new("auth.keys_file", format!("cannot read {}: {e}", path.display()))])?;
    let raw = parse(&text).map_err(|problems| {
        problems.into_iter().map(|p| Problem::new(at(p.path), p.message)).collect::<Vec<_>>()
    })?;
    let mut problems = Vec::new();
    let mut tenants = Vec::new();
    for (i, t) in raw.tenant.iter().enumerate() {
        let mut problem = |field: &str, message: String| {
            problems.push(Problem::new(at(format!("tenant[{i}].{field}")), message));
        };
        if let Some(tenant) = tenant(t, &mut problem) {
            tenants.push(tenant);
        }
    }
    if raw.tenant.is_empty() {
        problems.push(Problem::new(at("tenant".into()), "no tenant: every request would be refused"));
    }
    for (i, t) in tenants.iter().enumerate() {
        if tenants[..i].iter().any(|o| o.name == t.name) {
            problems
                .push(Problem::new(at(format!("tenant[{i}].name")), format!("{:?} is used twice", t.name)));
        }
        if tenants[..i].iter().any(|o| o.key_sha256 == t.key_sha256) {
            problems.push(Problem::new(
                at(format!("tenant[{i}].key_sha256")),
                "the same key hash is used twice: a key must name one tenant",
            ));
        }
    }
    if problems.is_empty() { Ok(tenants) } else { Err(problems) }
}

fn parse(text: &str) -> Result<RawKeysFile, Vec<Problem>> {
    let mut unknown = Vec::new();
    let deserializer =
        toml::Deserializer::parse(text).map_err(|e| vec![Problem::new("", toml_message(&e))])?;
    let raw: RawKeysFile = serde_ignored::deserialize(deserializer, |p| unknown.push(config_path(&p)))
        .map_err(|e| vec![Problem::new("", toml_message(&e))])?;
    if unknown.is_empty() {
        Ok(raw)
    } else {
        Err(unknown.into_iter().map(|p| Problem::new(p, "unknown key")).collect())
    }
}

fn tenant(t: &RawTenant, problem: &mut impl FnMut(&str, String)) -> Option<TenantConfig> {
    let name = t.name.clone().unwrap_or_default();
    let name_ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_ok {
        problem(
            "name",
            format!("must be 1-64 of A-Z a-z 0-9 - _ . (it becomes a metric label), got {name:?}"),
        );
    }
    let key = t.key_sha256.as_deref().and_then(hex32);
    if key.is_none() {
        problem(
            "key_sha256",
            "must be the key's SHA-256 as 64 hex digits (`gateway hash-key` prints it)".to_string(),
        );
    }
    let models = match t.models.as_deref() {
        Some([all]) if all == "*" => Some(ModelAccess::All),
        Some(names) if !names.is_empty() && names.iter().all(|n| super::valid_model_name(n)) => {
            Some(ModelAccess::Only(names.iter().cloned().collect::<BTreeSet<_>>()))
        }
        other => {
            problem("models", format!("must list model names, or be [\"*\"] for every model, got {other:?}"));
            None
        }
    };
    let rps = t.rps;
    if let Some(r) = rps.filter(|r| !(r.is_finite() && *r > 0.0)) {
        problem("rps", format!("must be a number above 0, got {r}"));
    }
    // A bucket holds at least one request; without a burst, one second's worth.
    let burst = t.burst.unwrap_or_else(|| rps.map_or(1, |r| r.ceil().max(1.0) as u64));
    if burst == 0 || burst > 1_000_000 {
        problem("burst", format!("must be in 1..=1000000, got {burst}"));
    }
    if t.burst.is_some() && rps.is_none() {
        problem("burst", "needs rps: the burst is the size of the rate limiter's bucket".to_string());
    }
    let max_in_flight = t.max_in_flight;
    if let Some(m) = max_in_flight.filter(|m| !(1..=1_000_000).contains(m)) {
        problem("max_in_flight", format!("must be in 1..=1000000, got {m}"));
    }
    let priority = match t.priority.as_deref() {
        None | Some("online") => Priority::Online,
        Some("batch") => Priority::Batch,
        Some(other) => {
            problem("priority", format!("must be \"online\" or \"batch\", got {other:?}"));
            Priority::Online
        }
    };
    Some(TenantConfig {
        name: name_ok.then_some(name)?,
        key_sha256: key?,
        models: models?,
        may_pin: t.may_pin.unwrap_or(false),
        rps,
        burst,
        max_in_flight: max_in_flight.map(|m| m as usize),
        priority,
    })
}

/// 64 hex digits → 32 bytes.
fn hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The hex SHA-256 of an API key, as the keys file holds it (`gateway hash-key`).
pub fn hash_key(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("gw-keys-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_valid_file_gives_its_tenants() {
        let text = format!(
            "[[tenant]]\nname = \"app\"\nkey_sha256 = \"{}\"\nmodels = [\"credit-scoring\"]\nrps = 10.5\n\
             [[tenant]]\nname = \"etl\"\nkey_sha256 = \"{}\"\nmodels = [\"*\"]\nmay_pin = true\n\
             max_in_flight = 4\npriority = \"batch\"\n",
            hash_key("k1"),
            hash_key("k2")
        );
        let path = write("ok", &text);
        let tenants = read(&path).unwrap();
        assert_eq!(tenants.len(), 2);
        assert_eq!(tenants[0].burst, 11, "one second's worth by default");
        assert!(tenants[0].models.allows("credit-scoring") && !tenants[0].models.allows("other"));
        assert!(!tenants[0].may_pin);
        assert_eq!(tenants[1].priority, Priority::Batch);
        assert!(tenants[1].models.allows("anything"));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let text = format!(
            "[[tenant]]\nname = \"a b\"\nkey_sha256 = \"xyz\"\nmodels = []\nrps = -1.0\npriority = \"vip\"\n\
             [[tenant]]\nname = \"ok\"\nkey_sha256 = \"{h}\"\nmodels = [\"*\"]\nburst = 5\ncolour = 1\n",
            h = hash_key("k")
        );
        let path = write("bad", &text);
        let problems = read(&path).unwrap_err();
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 1, "unknown keys are reported before the rest: {shown:?}");
        assert!(shown[0].contains("tenant[1].colour: unknown key"), "{shown:?}");
        let path = write("bad2", &text.replace("colour = 1\n", ""));
        let shown: Vec<String> = read(&path).unwrap_err().iter().map(ToString::to_string).collect();
        for field in [
            "tenant[0].name",
            "tenant[0].key_sha256",
            "tenant[0].models",
            "tenant[0].rps",
            "tenant[0].priority",
            "tenant[1].burst",
        ] {
            assert!(shown.iter().any(|s| s.contains(field)), "{field} missing from {shown:?}");
        }
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn names_and_keys_must_be_unique() {
        let h = hash_key("same");
        let text = format!(
            "[[tenant]]\nname = \"a\"\nkey_sha256 = \"{h}\"\nmodels = [\"*\"]\n\
             [[tenant]]\nname = \"a\"\nkey_sha256 = \"{h}\"\nmodels = [\"*\"]\n"
        );
        let path = write("dup", &text);
        let shown: Vec<String> = read(&path).unwrap_err().iter().map(ToString::to_string).collect();
        assert!(shown.iter().any(|s| s.contains("tenant[1].name")), "{shown:?}");
        assert!(shown.iter().any(|s| s.contains("tenant[1].key_sha256")), "{shown:?}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn hash_key_is_sha256_hex() {
        // sha256("abc"), from FIPS 180-2.
        assert_eq!(hash_key("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hex32(&hash_key("abc")).map(|h| h[0]), Some(0xba));
    }
}
