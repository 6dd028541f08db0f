//! The body of one answer: a success serialized from the wire types, or a refusal written as
//! the real service writes them, `{"message": "<Word>, <text>", "ret_code": N}` without
//! `action` (reference §10).
//!
//! It decides nothing: which refusal a request earns is for the checks and actions that make
//! one. It keeps no state.

use serde::Serialize;

use crate::qingcloud::types::ret;

/// The answer to one request.
pub struct Reply {
    pub ret_code: i64,
    pub body: Vec<u8>,
    /// The job an accepted RunClusterCustomService created.
    pub job_id: Option<String>,
}

/// A refusal: ret_code and message.
#[derive(Debug)]
pub struct Refusal {
    code: i64,
    message: String,
}

pub fn refuse(code: i64, message: impl Into<String>) -> Refusal {
    Refusal { code, message: message.into() }
}

pub fn missing(name: &str) -> Refusal {
    refuse(ret::MALFORMED, format!("ParameterError, missing parameter [{name}]"))
}

/// `action` of a success: the request's action and `Response`.
pub fn response_action(action: &str) -> String {
    format!("{action}Response")
}

pub fn to_json(value: &impl Serialize) -> Result<Vec<u8>, Refusal> {
    serde_json::to_vec(value).map_err(|e| refuse(ret::INTERNAL, format!("InternalError, {e}")))
}

/// An error answer: `message` and `ret_code`, no `action`.
pub fn error_reply(refusal: Refusal) -> Reply {
    let body = serde_json::json!({ "message": refusal.message, "ret_code": refusal.code });
    Reply { ret_code: refusal.code, body: body.to_string().into_bytes(), job_id: None }
}
