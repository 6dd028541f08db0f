//! A complete answer (HTTP status and body) turned into the typed result or a classified
//! [`ApiError`]. Pure and total: it reads no clock and sends nothing.

use serde::de::DeserializeOwned;

use crate::qingcloud::error::{ApiError, Failure};
use crate::qingcloud::types::{ret, Envelope};

/// Turn a complete response (HTTP status and the whole body, already cut at
/// [`MAX_BODY_BYTES`]) into the typed result. Pure and total: any status and any bytes give
/// either a `T` (HTTP 200, `ret_code` 0, the shape of `T`) or a classified [`ApiError`] that
/// carries `status`. The client calls it for every answer that came back whole.
pub fn classify_body<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, ApiError> {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let envelope = json.as_ref().and_then(envelope);

    if status != 200 {
        if let Some(env) = envelope.filter(|e| e.ret_code != ret::OK) {
            return Err(ApiError::from_ret_code(env.ret_code, env.message, Some(status)));
        }
        let message = snippet(body).unwrap_or_else(|| {
            reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("").to_owned()
        });
        let failure = |maybe_applied| Failure { ret_code: None, http_status: Some(status), message, maybe_applied };
        // The API answers its errors as JSON with a ret_code; any other status without one
        // (a redirect, 404 for a wrong path, 403 from a proxy) is something else answering,
        // and nothing reached the API.
        return Err(match status {
            429 => ApiError::Throttled(failure(false)),
            408 | 500..=599 => ApiError::Transient(failure(true)),
            _ => ApiError::NotApi(failure(false)),
        });
    }

    let not_api =
        |message| ApiError::NotApi(Failure { ret_code: None, http_status: Some(status), message, maybe_applied: true });
    let Some(json) = json else {
        let shown = snippet(body).map(|s| format!(": {s}")).unwrap_or_default();
        return Err(not_api(format!("the body is not JSON{shown}")));
    };
    let Some(env) = envelope else {
        return Err(not_api("the JSON body has no ret_code".to_owned()));
    };
    if env.ret_code != ret::OK {
        return Err(ApiError::from_ret_code(env.ret_code, env.message, Some(status)));
    }
    serde_json::from_value::<T>(json).map_err(|e| {
        let mut err = permanent(Some(status), format!("unexpected response shape: {e}"), true);
        if let ApiError::Permanent(f) = &mut err {
            f.ret_code = Some(ret::OK);
        }
        err
    })
}

/// The `ret_code`/`message` part of any JSON object with an integer `ret_code`. Read field by
/// field rather than as a whole, so that an odd `message` (null, a number) or `action` cannot
/// hide the `ret_code` that decides the class.
fn envelope(v: &serde_json::Value) -> Option<Envelope> {
    use serde_json::Value;
    let obj = v.as_object()?;
    let ret_code = obj.get("ret_code")?.as_i64()?;
    let text = |key: &str| match obj.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    Some(Envelope { action: text("action"), ret_code, message: text("message") })
}

/// The start of a body as printable text, for an error message.
fn snippet(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}

/// An error and its sources on one line.
pub(super) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A permanent failure with no `ret_code`: `maybe_applied` when the request may have taken effect.
pub(super) fn permanent(http_status: Option<u16>, message: String, maybe_applied: bool) -> ApiError {
    ApiError::Permanent(Failure { ret_code: None, http_status, message, maybe_applied })
}
