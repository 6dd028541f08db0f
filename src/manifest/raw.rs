//! The manifest exactly as written: serde structs that mirror the YAML and refuse unknown
//! fields. Nothing here is checked beyond its shape; [`super::check`] turns these into domain
//! types once. Values that must be text (users, hosts, ids, dates) are read as the scalar's own
//! text, so `user: 007` stays `"007"` and is never reinterpreted as a number.
//!
//! Fields that the rules of SPEC §3 require are still `Option`s here so that a missing one is
//! reported by the checker together with every other error of the file, instead of stopping
//! deserialization at the first.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a manifest mapping")]
#[schemars(rename = "Manifest")]
pub(crate) struct RawManifest {
    #[schemars(with = "Option<Text>")]
    pub version: Option<String>,
    #[schemars(with = "Option<Text>")]
    pub ticket: Option<String>,
    #[schemars(with = "Option<Text>")]
    pub requested_by: Option<String>,
    #[schemars(with = "Option<Text>")]
    pub reason: Option<String>,
    #[schemars(with = "Option<Text>")]
    pub due_by: Option<String>,
    /// The QingCloud account (a name under the config file's `accounts:`) of every cluster the
    /// file lists that names none; absent: the default account.
    #[schemars(with = "Option<Text>")]
    pub account: Option<String>,
    pub defaults: Option<RawDefaults>,
    pub clusters: Option<Vec<RawCluster>>,
    pub users: Option<Vec<RawUser>>,
    /// Selectors of clusters found through the API at `plan`/`run` time.
    pub discover: Option<Vec<RawSelector>>,
}

/// `discover[i]`: every active MySQL Plus cluster in some zones, optionally narrowed by tags and
/// a name pattern, and the accounts to remove from each.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a discover mapping")]
#[schemars(rename = "Discover")]
pub(crate) struct RawSelector {
    /// Zones to look in (at least one).
    #[schemars(with = "Option<Vec<Text>>")]
    pub zones: Option<Vec<String>>,
    /// Tag names the cluster must all carry (resolved through DescribeTags).
    #[schemars(with = "Option<Vec<Text>>")]
    pub tags: Option<Vec<String>>,
    /// A regular expression the cluster's name must match (unanchored; use `^`/`$`).
    #[schemars(with = "Option<Text>")]
    pub name_matches: Option<String>,
    /// The QingCloud account to look in (overrides the file's `account`).
    #[schemars(with = "Option<Text>")]
    pub account: Option<String>,
    pub users: Option<Vec<RawAccount>>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, expecting = "the defaults mapping")]
#[schemars(rename = "Defaults")]
pub(crate) struct RawDefaults {
    #[schemars(with = "Option<Text>")]
    pub zone: Option<String>,
    #[schemars(with = "Option<Text>")]
    pub host: Option<String>,
}

/// `clusters[i]`: one cluster and the accounts to remove from it.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a cluster mapping")]
#[schemars(rename = "Cluster")]
pub(crate) struct RawCluster {
    #[schemars(with = "Option<Text>")]
    pub id: Option<String>,
    #[schemars(with = "Option<Text>")]
    pub zone: Option<String>,
    /// The QingCloud account the cluster belongs to (overrides the file's `account`).
    #[schemars(with = "Option<Text>")]
    pub account: Option<String>,
    pub users: Option<Vec<RawAccount>>,
}

/// `clusters[i].users[j]`: a bare user name or the full mapping.
#[derive(Debug)]
pub(crate) enum RawAccount {
    Short(String),
    Full(RawAccountFull),
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, expecting = "an account mapping")]
#[schemars(rename = "AccountMapping")]
pub(crate) struct RawAccountFull {
    #[schemars(with = "Option<Text>")]
    pub user: Option<String>,
    #[schemars(with = "Option<Text>")]
    pub host: Option<String>,
    #[schemars(with = "Option<Text>")]
    pub not_before: Option<String>,
    #[schemars(with = "Option<Text>")]
    pub due_by: Option<String>,
}

/// `users[i]`: one account and the clusters to remove it from.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a user mapping")]
#[schemars(rename = "User")]
pub(crate) struct RawUser {
    #[schemars(with = "Option<Text>")]
    pub user: Option<String>,
    #[schemars(with = "Option<Text>")]
    pub host: Option<String>,
    #[schemars(with = "Option<Text>")]
    pub not_before: Option<String>,
    #[schemars(with = "Option<Text>")]
    pub due_by: Option<String>,
    pub clusters: Option<Vec<RawClusterRef>>,
}

/// `users[i].clusters[j]`: a bare cluster id or `{id, zone}`.
#[derive(Debug)]
pub(crate) enum RawClusterRef {
    Short(String),
    Full(RawClusterRefFull),
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, expecting = "a cluster mapping")]
#[schemars(rename = "ClusterRefMapping")]
pub(crate) struct RawClusterRefFull {
    #[schemars(with = "Option<Text>")]
    pub id: Option<String>,
    #[schemars(with = "Option<Text>")]
    pub zone: Option<String>,
    /// The QingCloud account the cluster belongs to (overrides the file's `account`).
    #[schemars(with = "Option<Text>")]
    pub account: Option<String>,
}

/// A value read as the scalar's own text: YAML's plain `1` or `true` are text here too.
struct Text;

impl schemars::JsonSchema for Text {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Text".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": ["string", "number", "boolean"] })
    }
}

/// The short form (text only: a number or boolean must be quoted) or the full mapping.
fn short_or_full<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator, short: &str) -> schemars::Schema {
    let full = g.subschema_for::<T>();
    schemars::json_schema!({
        "anyOf": [{ "type": "string", "description": short }, full]
    })
}

impl schemars::JsonSchema for RawAccount {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Account".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        short_or_full::<RawAccountFull>(g, "a user name (host from defaults.host, else %)")
    }
}

impl schemars::JsonSchema for RawClusterRef {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ClusterRef".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        short_or_full::<RawClusterRefFull>(g, "a cluster id (zone from defaults.zone, else QINGCLOUD_ZONE)")
    }
}

/// A scalar-or-mapping entry. Only text scalars (and an empty entry, which the checker
/// reports as empty) count as the short form: a number or boolean would have to be turned
/// back into text, and `007` or `1e3` would not survive that, so they are refused with a hint
/// to quote them.
struct ShortOrFull<T> {
    expecting: &'static str,
    _full: std::marker::PhantomData<T>,
}

enum Either<T> {
    Short(String),
    Full(T),
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ShortOrFull<T> {
    type Value = Either<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Either::Short(v.to_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Either::Short(String::new()))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Either::Short(String::new()))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Either::Full)
    }
}

/// Entries (accounts and cluster references) one document may expand to. Far above any real
/// manifest (the benchmark's 100,000 tasks fit ten times over) and far below what fills memory:
/// aliases can repeat a list of accounts under many clusters, so the count is of entries after
/// expansion, not of lines.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Said when the budget runs out; [`super::yaml_error`] recognises it.
pub(crate) const TOO_MANY_ENTRIES: &str = "the manifest expands to more than 1000000 entries";

thread_local! {
    /// Entries left for the document being deserialized on this thread.
    static BUDGET: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn spend<E: de::Error>() -> Result<(), E> {
    BUDGET.with(|b| match b.get() {
        0 => Err(E::custom(TOO_MANY_ENTRIES)),
        n => {
            b.set(n - 1);
            Ok(())
        }
    })
}

impl<'de> Deserialize<'de> for RawAccount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        spend::<D::Error>()?;
        let v = ShortOrFull::<RawAccountFull> {
            expecting: "a user name (quote names that look like numbers or booleans) or a mapping with user, host, not_before, due_by",
            _full: std::marker::PhantomData,
        };
        Ok(match d.deserialize_any(v)? {
            Either::Short(s) => RawAccount::Short(s),
            Either::Full(f) => RawAccount::Full(f),
        })
    }
}

impl<'de> Deserialize<'de> for RawClusterRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        spend::<D::Error>()?;
        let v = ShortOrFull::<RawClusterRefFull> {
            expecting: "a cluster id or a mapping with id and zone",
            _full: std::marker::PhantomData,
        };
        Ok(match d.deserialize_any(v)? {
            Either::Short(s) => RawClusterRef::Short(s),
            Either::Full(f) => RawClusterRef::Full(f),
        })
    }
}

/// The JSON Schema of a manifest's shape (what `deny_unknown_fields` and the field types allow;
/// the rules the checker applies on top, such as protected users, are not in it).
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(RawManifest);
    schema.insert("title".to_owned(), "qc-offboard manifest".into());
    schema.to_value()
}

/// Deserialize a manifest document. This is the one place that calls serde_yaml, so the YAML
/// parser can be swapped without touching anything else. `Ok(None)` is an empty document.
pub(crate) fn from_yaml(text: &str) -> Result<Option<RawManifest>, serde_yaml::Error> {
    BUDGET.with(|b| b.set(MAX_ENTRIES));
    let result = serde_yaml::from_str(text);
    BUDGET.with(|b| b.set(usize::MAX));
    result
}

/// Flow collections (`[…]`, `{…}`) nested deeper than this are refused before parsing. A
/// manifest needs three levels at most.
pub const MAX_FLOW_DEPTH: usize = 64;

/// Check flow nesting before the YAML parser sees the text. libyaml (and yaml-rust2) spend
/// time proportional to the nesting depth on every token, so a file of a million `[` takes
/// hours to be refused; this scan takes one linear pass.
///
/// It is a light tokenizer, not a YAML parser: it skips comments and quoted scalars (with their
/// escapes) and counts brackets elsewhere, so brackets inside plain or block scalars are counted
/// too, which can only overestimate. Returns the line and column of the bracket that went too
/// deep.
pub(crate) fn check_flow_depth(text: &str) -> Result<(), (usize, usize)> {
    #[derive(PartialEq)]
    enum St {
        Out,
        Single,
        Double,
        Comment,
    }
    let mut st = St::Out;
    let (mut line, mut col) = (1usize, 0usize);
    let mut depth = 0usize;
    let mut prev: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
            col = 0;
        } else {
            col += 1;
        }
        match st {
            St::Out => match c {
                '#' if prev.is_none_or(char::is_whitespace) => st = St::Comment,
                '\'' | '"' if prev.is_none_or(|p| p.is_whitespace() || matches!(p, '[' | '{' | ',')) => {
                    st = if c == '"' { St::Double } else { St::Single };
                }
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Err((line, col));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
            St::Single => {
                if c == '\'' {
                    if chars.peek() == Some(&'\'') {
                        chars.next();
                        col += 1;
                    } else {
                        st = St::Out;
                    }
                }
            }
            St::Double => match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        if n == '\n' {
                            line += 1;
                            col = 0;
                        } else {
                            col += 1;
                        }
                    }
                }
                '"' => st = St::Out,
                _ => {}
            },
            St::Comment => {
                if c == '\n' {
                    st = St::Out;
                }
            }
        }
        prev = Some(c);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_depth() {
        assert_eq!(check_flow_depth("a: [b, {c: [d]}]\n"), Ok(()));
        let deep = format!("a: {}{}\n", "[".repeat(65), "]".repeat(65));
        assert_eq!(check_flow_depth(&deep), Err((1, 4 + 64)));
        // Brackets in comments and quoted scalars do not count.
        let quoted = format!("a: '{0}' # {0}\nb: \"{0}\\\" {0}\"\nc: 'it''s {0}'\n", "[".repeat(70));
        assert_eq!(check_flow_depth(&quoted), Ok(()));
        // A quote inside a plain scalar does not start a quoted scalar.
        let plain = format!("a: bob's {}\n", "[".repeat(65));
        assert!(check_flow_depth(&plain).is_err());
    }
}
