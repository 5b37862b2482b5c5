//! Keeps `REFERENCE.md` (the operators' list of every config key) in step with the parser.
//!
//! The keys are not listed by hand: `Probe` is a `serde::Deserializer` that answers whatever
//! the types in `raw` ask for and writes down what they asked. A struct names its fields
//! (`deserialize_struct`), each becomes a key; an `Option` is answered "some"; a map
//! (`models`) gets one entry, `<name>`; a sequence gets one element, written `[]` in the path;
//! a primitive gets a zero value and records its kind. Walking `RawConfig` this way yields every
//! dotted key the parser accepts (`models.<name>.routing.candidates[].percent`) with the kind of
//! value it holds. The tests then hold the rows of REFERENCE.md's key tables (tables whose
//! header starts with `Key`) against that list, both ways, kinds included.
//!
//! A type the probe cannot answer without guessing (one that calls `deserialize_any`: untagged
//! enums, `serde_json::Value`) makes the walk fail with the key's path, so the probe has to be
//! taught about it rather than a key slipping through unlisted. So does an `alias` (serde lists
//! it as a field of its own, and the second name reads as a duplicate). `#[serde(flatten)]`
//! would go unseen (its fields are read from a buffer, not from the probe); `raw.rs` has none.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde::de::value::{Error, StrDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use super::RawConfig;

/// The reference itself; `include_str!` rebuilds the tests when it changes.
const REFERENCE: &str = include_str!("REFERENCE.md");

/// The one key a map is given: `models.<name>`.
const MAP_KEYS: &[&str] = &["<name>"];

/// The key of `models.<name>.remote`'s map, which is keyed by version number.
const VERSION_KEYS: &[&str] = &["<version>"];

/// Dotted key → kind of value ("integer", "table", "array of strings", ...).
type Keys = RefCell<BTreeMap<String, String>>;

/// A deserializer standing at one key path, recording into the shared `keys`.
struct Probe<'k> {
    path: String,
    keys: &'k Keys,
}

impl<'k> Probe<'k> {
    fn child(&self, key: &str) -> Probe<'k> {
        let path = if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) };
        Probe { path, keys: self.keys }
    }

    fn element(&self) -> Probe<'k> {
        Probe { path: format!("{}[]", self.path), keys: self.keys }
    }

    fn record(&self, kind: &str) {
        if !self.path.is_empty() {
            self.keys.borrow_mut().insert(self.path.clone(), kind.to_string());
        }
    }

    fn fields<'de, V: Visitor<'de>>(
        self,
        keys: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.record("table");
        visitor.visit_map(Entries { parent: self, keys: keys.iter(), current: None })
    }
}

macro_rules! integers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.record("integer");
            visitor.visit_u64(0)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        Err(de::Error::custom(format!(
            "{}: this type does not say what it expects (deserialize_any); teach the probe in config/reference.rs",
            self.path
        )))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.record("boolean");
        visitor.visit_bool(false)
    }

    integers!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.record("number");
        visitor.visit_f64(0.0)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.record("string");
        visitor.visit_str("")
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        // A version or a registry alias (`RawVersion`): either kind is accepted.
        if name == super::raw::VERSION_OR_ALIAS {
            self.record("integer or string");
            return visitor.visit_u64(1);
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let element = self.element();
        let element_path = element.path.clone();
        let value = visitor.visit_seq(OneElement { element: Some(element) })?;
        let kind = self.keys.borrow_mut().remove(&element_path);
        self.record(&format!("array of {}s", kind.as_deref().unwrap_or("unknown")));
        Ok(value)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let keys = if self.path.ends_with(".remote") { VERSION_KEYS } else { MAP_KEYS };
        self.fields(keys, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.fields(fields, visitor)
    }

    serde::forward_to_deserialize_any! {
        char bytes byte_buf unit unit_struct tuple tuple_struct enum identifier ignored_any
    }
}

/// A struct's fields (or a map's one synthetic key), each answered by a probe one level down.
struct Entries<'k> {
    parent: Probe<'k>,
    keys: std::slice::Iter<'static, &'static str>,
    current: Option<&'static str>,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some(&key) = self.keys.next() else { return Ok(None) };
        self.current = Some(key);
        let key: StrDeserializer<'_, Error> = key.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let key =
            self.current.take().ok_or_else(|| de::Error::custom("a value was asked for before its key"))?;
        seed.deserialize(self.parent.child(key))
    }
}

/// A sequence of exactly one element.
struct OneElement<'k> {
    element: Option<Probe<'k>>,
}

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        self.element.take().map(|probe| seed.deserialize(probe)).transpose()
    }
}

/// Every key the parser accepts, with the kind of value it holds.
fn accepted_keys() -> BTreeMap<String, String> {
    let keys = Keys::default();
    if let Err(e) = RawConfig::deserialize(Probe { path: String::new(), keys: &keys }) {
        panic!("cannot walk RawConfig: {e}");
    }
    keys.into_inner()
}

/// One row of a key table in REFERENCE.md.
#[derive(Debug)]
struct Row {
    line: usize,
    key: String,
    cells: Vec<String>,
}

/// Columns of a key table: Key | Type | Default | Unit | Allowed | Applied by | What it does.
const COLUMNS: usize = 7;
const TYPE: usize = 1;
const APPLIED_BY: usize = 5;

/// The rows of every table whose header's first cell is `Key`.
fn documented_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let mut in_key_table = false;
    for (i, line) in REFERENCE.lines().enumerate() {
        let line = line.trim();
        if !line.starts_with('|') {
            in_key_table = false;
            continue;
        }
        let cells: Vec<String> = line.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect();
        let first = cells.first().map(String::as_str).unwrap_or("");
        if first == "Key" {
            in_key_table = true;
            continue;
        }
        if !in_key_table || first.starts_with("---") {
            continue;
        }
        let key = first.trim_matches('`').to_string();
        rows.push(Row { line: i + 1, key, cells });
    }
    rows
}

fn documented_keys() -> BTreeSet<String> {
    documented_rows().into_iter().map(|r| r.key).collect()
}

#[test]
fn the_probe_finds_keys_at_every_depth() {
    let keys = accepted_keys();
    for (key, kind) in [
        ("server", "table"),
        ("server.listen", "string"),
        ("server.max_connections", "integer"),
        ("runtime.intra_op_spinning", "boolean"),
        ("runtime.execution_providers", "array of strings"),
        ("models", "table"),
        ("models.<name>", "table"),
        ("models.<name>.batching.max_queue", "integer"),
        ("models.<name>.routing.candidates", "array of tables"),
        ("models.<name>.routing.candidates[].percent", "number"),
        ("models.<name>.routing.versions", "array of integers"),
        ("models.<name>.monitor.range", "array of numbers"),
        ("models.<name>.rollout.on_failure", "string"),
    ] {
        assert_eq!(keys.get(key).map(String::as_str), Some(kind), "{key} in {keys:#?}");
    }
    assert!(!keys.keys().any(|k| k.ends_with("[]")), "sequence elements are not keys: {keys:#?}");
}

#[test]
fn every_accepted_key_is_documented() {
    let documented = documented_keys();
    let missing: Vec<String> = accepted_keys().into_keys().filter(|k| !documented.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "keys the parser accepts (config/raw.rs) but gateway/src/config/REFERENCE.md does not document; \
         add a row for each: {missing:#?}"
    );
}

#[test]
fn every_documented_key_is_accepted() {
    let accepted = accepted_keys();
    let stale: Vec<String> = documented_keys().into_iter().filter(|k| !accepted.contains_key(k)).collect();
    assert!(
        stale.is_empty(),
        "keys REFERENCE.md documents that the parser does not accept (renamed or removed?): {stale:#?}"
    );
}

#[test]
fn documented_types_match_the_parser() {
    let accepted = accepted_keys();
    for row in documented_rows() {
        let (Some(kind), Some(written)) = (accepted.get(&row.key), row.cells.get(TYPE)) else { continue };
        assert!(
            written.starts_with(kind.as_str()),
            "REFERENCE.md line {}: {} is documented as {written:?}, the parser reads {kind}",
            row.line,
            row.key
        );
    }
}

#[test]
fn every_row_is_complete_and_says_how_a_change_applies() {
    let mut seen = BTreeSet::new();
    for row in documented_rows() {
        let at = format!("REFERENCE.md line {} ({})", row.line, row.key);
        assert!(
            row.cells[0].starts_with('`') && row.cells[0].ends_with('`'),
            "{at}: put the key in backticks"
        );
        assert!(seen.insert(row.key.clone()), "{at}: documented twice");
        assert_eq!(row.cells.len(), COLUMNS, "{at}: a row has {COLUMNS} cells");
        assert!(row.cells.iter().all(|c| !c.is_empty()), "{at}: a cell is empty");
        let applied = &row.cells[APPLIED_BY];
        assert!(applied.contains("reload") || applied.contains("restart"), "{at}: say reload or restart");
    }
}
