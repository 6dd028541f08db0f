//! Who is calling: the common parameters are present (1100), the access key is known and the
//! signature over the method, the path and the parameters matches (1200), and `time_stamp` is
//! within [`MAX_SKEW`] of the simulator's clock and `expires` has not passed (1300).
//!
//! It answers only whether the request is authentic and whose key signed it; quotas, owners and
//! actions are decided after it. It keeps no state.

use std::collections::HashMap;
use std::time::Duration;

use crate::qingcloud::signer::{self, SignatureMethod};
use crate::qingcloud::types::ret;

use super::answer::{refuse, Refusal};
use super::clock::Now;
use super::request::{ApiRequest, Params};

/// How far `time_stamp` may be from the simulator's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(60);

/// Check the signature and the time against `credentials` (access key id → secret); return the
/// access key id.
pub fn authenticate<'p>(
    credentials: &HashMap<String, String>,
    req: &ApiRequest,
    params: &Params<'p>,
    now: Now,
) -> Result<&'p str, Refusal> {
    for name in ["action", "access_key_id", "signature_method", "time_stamp", "signature"] {
        params.require(name)?;
    }
    let alg = SignatureMethod::from_param(params.require("signature_method")?)
        .ok_or_else(|| refuse(ret::MALFORMED, "ParameterError, signature_method must be HmacSHA256 or HmacSHA1"))?;
    if params.get("signature_version").is_some_and(|v| v != "1") {
        return Err(refuse(ret::MALFORMED, "ParameterError, signature_version must be 1"));
    }
    let access_key = params.require("access_key_id")?;
    let secret = credentials
        .get(access_key)
        .ok_or_else(|| refuse(ret::AUTH_FAILED, format!("AuthFailure, unknown access_key_id [{access_key}]")))?;
    let given = params.require("signature")?;
    if !signer::verify(req.method, &req.path, &req.params, secret.as_bytes(), alg, given) {
        return Err(refuse(ret::AUTH_FAILED, "AuthFailure, signature not matched"));
    }
    let time_stamp = params.require("time_stamp")?;
    let sent = signer::parse_time_stamp(time_stamp).ok_or_else(|| {
        refuse(ret::MALFORMED, format!("ParameterError, time_stamp [{time_stamp}] is not YYYY-MM-DDThh:mm:ssZ"))
    })?;
    let skew = (now.wall - sent).abs().to_std().unwrap_or(Duration::MAX);
    if skew > MAX_SKEW {
        return Err(refuse(
            ret::EXPIRED,
            format!("MessageExpired, time_stamp [{time_stamp}] is {}s away from the server time", skew.as_secs()),
        ));
    }
    if let Some(expires) = params.get("expires") {
        let at = signer::parse_time_stamp(expires).ok_or_else(|| {
            refuse(ret::MALFORMED, format!("ParameterError, expires [{expires}] is not YYYY-MM-DDThh:mm:ssZ"))
        })?;
        if now.wall > at {
            return Err(refuse(ret::EXPIRED, format!("MessageExpired, the request expired at [{expires}]")));
        }
    }
    Ok(access_key)
}
