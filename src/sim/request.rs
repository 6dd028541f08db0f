//! One API request as the server hands it over, and its parameters read by name: each given
//! once, the required ones present and non-empty, and `zone`, numbers and `name.N` arrays well
//! formed. A parameter that is not is refused with 1100 (reference §10).
//!
//! It decides nothing about who may call or what an action does, and keeps no state.

use std::collections::BTreeMap;

use crate::qingcloud::signer::Method;
use crate::qingcloud::types::ret;

use super::answer::{missing, refuse, Refusal};
use super::world::check_zone;

/// One API request as received.
pub struct ApiRequest {
    pub method: Method,
    /// The path exactly as received (`/iaas/` or `/iaas`): it is part of the signature.
    pub path: String,
    /// Decoded parameters in the order received, `signature` included.
    pub params: Vec<(String, String)>,
}

/// Parameters by name, each given once.
pub struct Params<'a>(BTreeMap<&'a str, &'a str>);

pub fn unique_params(list: &[(String, String)]) -> Result<Params<'_>, Refusal> {
    let mut map = BTreeMap::new();
    for (k, v) in list {
        if map.insert(k.as_str(), v.as_str()).is_some() {
            return Err(refuse(ret::MALFORMED, format!("ParameterError, parameter [{k}] is given more than once")));
        }
    }
    Ok(Params(map))
}

impl<'a> Params<'a> {
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.0.get(name).copied()
    }

    /// Every parameter, sorted by name.
    pub fn all(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.0.iter().map(|(k, v)| (*k, *v))
    }

    pub fn require(&self, name: &str) -> Result<&'a str, Refusal> {
        self.get(name).filter(|v| !v.is_empty()).ok_or_else(|| missing(name))
    }

    pub fn zone(&self) -> Result<&'a str, Refusal> {
        let zone = self.require("zone")?;
        check_zone(zone).map_err(|m| refuse(ret::MALFORMED, format!("ParameterError, {m}")))?;
        Ok(zone)
    }

    pub fn number(&self, name: &str) -> Result<Option<usize>, Refusal> {
        self.get(name)
            .map(|v| {
                v.parse::<usize>().map_err(|_| {
                    refuse(ret::MALFORMED, format!("ParameterError, {name} [{v}] is not a non-negative integer"))
                })
            })
            .transpose()
    }

    /// The values of `name.1`, `name.2`, … in index order.
    pub fn indexed(&self, name: &str) -> Result<Vec<String>, Refusal> {
        let prefix = format!("{name}.");
        let mut out = Vec::new();
        for (k, v) in self.0.range(prefix.as_str()..) {
            let Some(index) = k.strip_prefix(&prefix) else { break };
            let n: u32 = index.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                refuse(ret::MALFORMED, format!("ParameterError, [{k}]: array parameters are {name}.1, {name}.2, …"))
            })?;
            out.push((n, (*v).to_owned()));
        }
        out.sort_unstable_by_key(|(n, _)| *n);
        Ok(out.into_iter().map(|(_, v)| v).collect())
    }
}
