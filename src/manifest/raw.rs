//! The manifest exactly as written: serde structs that mirror the YAML and refuse unknown
//! fields. Nothing here is checked beyond its shape; [`super::check`] turns these into domain
//! types once. Values that must be text (users, hosts, ids, dates) are read as the scalar's own
//! text, so `user: 007` stays `"007"` and is never reinterpreted as a number.
//!
//! Fields that the rules of SPEC §3 require are still `Option`s here so that a missing one is
//! reported by the checker together with every other error of the file, instead of stopping
//! deserialization at the first.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a manifest mapping")]
pub(crate) struct RawManifest {
    pub version: Option<String>,
    pub ticket: Option<String>,
    pub requested_by: Option<String>,
    pub reason: Option<String>,
    pub due_by: Option<String>,
    pub defaults: Option<RawDefaults>,
    pub clusters: Option<Vec<RawCluster>>,
    pub users: Option<Vec<RawUser>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "the defaults mapping")]
pub(crate) struct RawDefaults {
    pub zone: Option<String>,
    pub host: Option<String>,
}

/// `clusters[i]`: one cluster and the accounts to remove from it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a cluster mapping")]
pub(crate) struct RawCluster {
    pub id: Option<String>,
    pub zone: Option<String>,
    pub users: Option<Vec<RawAccount>>,
}

/// `clusters[i].users[j]`: a bare user name or the full mapping.
#[derive(Debug)]
pub(crate) enum RawAccount {
    Short(String),
    Full(RawAccountFull),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an account mapping")]
pub(crate) struct RawAccountFull {
    pub user: Option<String>,
    pub host: Option<String>,
    pub not_before: Option<String>,
    pub due_by: Option<String>,
}

/// `users[i]`: one account and the clusters to remove it from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a user mapping")]
pub(crate) struct RawUser {
    pub user: Option<String>,
    pub host: Option<String>,
    pub not_before: Option<String>,
    pub due_by: Option<String>,
    pub clusters: Option<Vec<RawClusterRef>>,
}

/// `users[i].clusters[j]`: a bare cluster id or `{id, zone}`.
#[derive(Debug)]
pub(crate) enum RawClusterRef {
    Short(String),
    Full(RawClusterRefFull),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a cluster mapping")]
pub(crate) struct RawClusterRefFull {
    pub id: Option<String>,
    pub zone: Option<String>,
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

impl<'de> Deserialize<'de> for RawAccount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
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

/// Deserialize a manifest document. This is the one place that calls serde_yaml, so the YAML
/// parser can be swapped without touching anything else. `Ok(None)` is an empty document.
pub(crate) fn from_yaml(text: &str) -> Result<Option<RawManifest>, serde_yaml::Error> {
    serde_yaml::from_str(text)
}
