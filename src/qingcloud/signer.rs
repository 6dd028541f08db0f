//! Request signing, signature version 1 (reference §2): a pure function of
//! (method, path, parameters, secret, time stamp). No I/O, no clock: callers pass the time.
//!
//! The simulator verifies with the same code, so a byte of difference here would hide in tests;
//! the official SDK's vectors in the tests below are the ground truth.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};

/// The HMAC used for the signature, named by the `signature_method` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignatureMethod {
    #[default]
    HmacSha256,
    HmacSha1,
}

impl SignatureMethod {
    pub fn as_param(self) -> &'static str {
        match self {
            SignatureMethod::HmacSha256 => "HmacSHA256",
            SignatureMethod::HmacSha1 => "HmacSHA1",
        }
    }

    pub fn from_param(s: &str) -> Option<Self> {
        match s {
            "HmacSHA256" => Some(SignatureMethod::HmacSha256),
            "HmacSHA1" => Some(SignatureMethod::HmacSha1),
            _ => None,
        }
    }
}

/// HTTP method as it appears in the string to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// Percent-encode per the API: `A-Za-z0-9-_.~` stay, every other UTF-8 byte becomes `%XX` in
/// upper-case hex (so a space is `%20`, never `+`).
pub fn encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0x0f)] as char);
        }
    }
    out
}

/// The time stamp format of the API: `YYYY-MM-DDThh:mm:ssZ` in UTC.
pub fn format_time_stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Parse an API time stamp (`YYYY-MM-DDThh:mm:ssZ`, or any RFC 3339 instant).
pub fn parse_time_stamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// Flatten an array parameter to `name.1`, `name.2`, … (1-based).
pub fn flatten_array<'a>(name: &str, values: impl IntoIterator<Item = &'a str>) -> Vec<(String, String)> {
    values.into_iter().enumerate().map(|(i, v)| (format!("{name}.{}", i + 1), v.to_owned())).collect()
}

/// The canonical query string: names sorted in byte order, names and values encoded, joined
/// with `&`. The `signature` parameter, if present, is left out.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().filter(|(k, _)| k != "signature").collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::new();
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&encode(k));
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

/// `METHOD\nPATH\nCANONICAL_QS`.
pub fn string_to_sign(method: Method, path: &str, params: &[(String, String)]) -> String {
    format!("{}\n{}\n{}", method.as_str(), path, canonical_query(params))
}

/// Base64 of the HMAC of the string to sign, keyed by the secret.
pub fn signature(
    method: Method,
    path: &str,
    params: &[(String, String)],
    secret: &[u8],
    alg: SignatureMethod,
) -> String {
    let text = string_to_sign(method, path, params);
    let digest = match alg {
        SignatureMethod::HmacSha256 => keyed::<Hmac<sha2::Sha256>>(secret, &text).finalize().into_bytes().to_vec(),
        SignatureMethod::HmacSha1 => keyed::<Hmac<sha1::Sha1>>(secret, &text).finalize().into_bytes().to_vec(),
    };
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// Does `given` (the base64 `signature` parameter as sent) sign these parameters? The MAC
/// compares in constant time (`Mac::verify_slice`), so timing does not tell where a forged
/// signature differs.
pub fn verify(
    method: Method,
    path: &str,
    params: &[(String, String)],
    secret: &[u8],
    alg: SignatureMethod,
    given: &str,
) -> bool {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(given) else { return false };
    let text = string_to_sign(method, path, params);
    match alg {
        SignatureMethod::HmacSha256 => keyed::<Hmac<sha2::Sha256>>(secret, &text).verify_slice(&given).is_ok(),
        SignatureMethod::HmacSha1 => keyed::<Hmac<sha1::Sha1>>(secret, &text).verify_slice(&given).is_ok(),
    }
}

/// A MAC keyed by `secret` over `text`.
fn keyed<M: Mac + hmac::digest::KeyInit>(secret: &[u8], text: &str) -> M {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = <M as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(text.as_bytes());
    mac
}

/// The common parameters of every request (reference §2.2).
pub fn common_params(
    action: &str,
    zone: &str,
    access_key_id: &str,
    time_stamp: DateTime<Utc>,
    alg: SignatureMethod,
) -> Vec<(String, String)> {
    vec![
        ("action".to_owned(), action.to_owned()),
        ("zone".to_owned(), zone.to_owned()),
        ("access_key_id".to_owned(), access_key_id.to_owned()),
        ("time_stamp".to_owned(), format_time_stamp(time_stamp)),
        ("version".to_owned(), "1".to_owned()),
        ("signature_method".to_owned(), alg.as_param().to_owned()),
        ("signature_version".to_owned(), "1".to_owned()),
    ]
}

/// A request ready to send: the canonical query string and the base64 signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub canonical_query: String,
    pub signature: String,
}

impl Signed {
    /// The full query string for a GET: canonical parameters plus the encoded signature.
    pub fn query_string(&self) -> String {
        format!("{}&signature={}", self.canonical_query, encode(&self.signature))
    }
}

/// Sign `params` (which must already include the common parameters).
pub fn sign(method: Method, path: &str, params: &[(String, String)], secret: &[u8], alg: SignatureMethod) -> Signed {
    Signed { canonical_query: canonical_query(params), signature: signature(method, path, params, secret, alg) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const AK: &str = "QYACCESSKEYIDEXAMPLE";
    const SK: &[u8] = b"SECRETACCESSKEY";

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn vector_a(zone: &str) -> Vec<(String, String)> {
        p(&[
            ("count", "1"),
            ("vxnets.1", "vxnet-0"),
            ("zone", zone),
            ("instance_type", "small_b"),
            ("signature_version", "1"),
            ("signature_method", "HmacSHA256"),
            ("instance_name", "demo"),
            ("image_id", "centos64x86a"),
            ("login_mode", "passwd"),
            ("login_passwd", "QingCloud20130712"),
            ("version", "1"),
            ("access_key_id", AK),
            ("action", "RunInstances"),
            ("time_stamp", "2013-08-27T14:30:10Z"),
        ])
    }

    #[test]
    fn vector_a_docs_example() {
        let params = vector_a("pek3a");
        assert_eq!(
            string_to_sign(Method::Get, "/iaas/", &params),
            "GET\n/iaas/\naccess_key_id=QYACCESSKEYIDEXAMPLE&action=RunInstances&count=1&image_id=centos64x86a&instance_name=demo&instance_type=small_b&login_mode=passwd&login_passwd=QingCloud20130712&signature_method=HmacSHA256&signature_version=1&time_stamp=2013-08-27T14%3A30%3A10Z&version=1&vxnets.1=vxnet-0&zone=pek3a"
        );
        let sig = signature(Method::Get, "/iaas/", &params, SK, SignatureMethod::HmacSha256);
        assert_eq!(sig, "byjccvWIvAftaq+oublemagH3bYAlDWxxLFAzAsyslw=");
        assert_eq!(encode(&sig), "byjccvWIvAftaq%2BoublemagH3bYAlDWxxLFAzAsyslw%3D");
    }

    #[test]
    fn vector_b_go_sdk() {
        let sig = signature(Method::Get, "/iaas/", &vector_a("pek1"), SK, SignatureMethod::HmacSha256);
        assert_eq!(encode(&sig), "32bseYy39DOlatuewpeuW5vpmW51sD1A%2FJdGynqSpP8%3D");
    }

    fn vector_c(alg: SignatureMethod) -> Vec<(String, String)> {
        let ts = Utc.with_ymd_and_hms(2024, 5, 1, 8, 0, 0).unwrap();
        let mut params = common_params("RunClusterCustomService", "sh1a", AK, ts, alg);
        params.extend(p(&[
            ("cluster", "cl-ouhutv70"),
            ("role", "maininstance"),
            ("service", "del_user"),
            ("service_params", r#"{"host":"%","user":"u1"}"#),
        ]));
        params
    }

    #[test]
    fn vector_c_del_user() {
        let params = vector_c(SignatureMethod::HmacSha256);
        assert_eq!(
            string_to_sign(Method::Get, "/iaas/", &params),
            "GET\n/iaas/\naccess_key_id=QYACCESSKEYIDEXAMPLE&action=RunClusterCustomService&cluster=cl-ouhutv70&role=maininstance&service=del_user&service_params=%7B%22host%22%3A%22%25%22%2C%22user%22%3A%22u1%22%7D&signature_method=HmacSHA256&signature_version=1&time_stamp=2024-05-01T08%3A00%3A00Z&version=1&zone=sh1a"
        );
        let signed = sign(Method::Get, "/iaas/", &params, SK, SignatureMethod::HmacSha256);
        assert_eq!(signed.signature, "+KGh3urQqtYck8i+fFxaHvlKOtzVKALb+OnsE6N/j9U=");
        assert_eq!(
            format!("https://api.qingcloud.com/iaas/?{}", signed.query_string()),
            "https://api.qingcloud.com/iaas/?access_key_id=QYACCESSKEYIDEXAMPLE&action=RunClusterCustomService&cluster=cl-ouhutv70&role=maininstance&service=del_user&service_params=%7B%22host%22%3A%22%25%22%2C%22user%22%3A%22u1%22%7D&signature_method=HmacSHA256&signature_version=1&time_stamp=2024-05-01T08%3A00%3A00Z&version=1&zone=sh1a&signature=%2BKGh3urQqtYck8i%2BfFxaHvlKOtzVKALb%2BOnsE6N%2Fj9U%3D"
        );
    }

    #[test]
    fn vector_c_variants() {
        let sha1 = vector_c(SignatureMethod::HmacSha1);
        assert_eq!(
            signature(Method::Get, "/iaas/", &sha1, SK, SignatureMethod::HmacSha1),
            "xjcAL5YS3g+F9c00KxS3u4MhvmM="
        );
        let c = vector_c(SignatureMethod::HmacSha256);
        let sha = SignatureMethod::HmacSha256;
        assert_eq!(signature(Method::Post, "/iaas/", &c, SK, sha), "S0zI4IJpCqBKEYrKXxYFm6zZKh/u6joEweH/e3meX/0=");
        assert_eq!(signature(Method::Get, "/iaas", &c, SK, sha), "UmHyyDqP4YE7/HBavysTarUsy1qdoHYLCayTdLgpmp4=");
        let mut expires = c.clone();
        expires.push(("expires".to_owned(), "2024-05-01T08:00:30Z".to_owned()));
        assert_eq!(signature(Method::Get, "/iaas/", &expires, SK, sha), "plNzDpd9aDF4nwEhIYYBIhraEqt7i5o2gB6h49i1EEE=");
        let mut req_id = c;
        req_id.push(("req_id".to_owned(), "0123456789abcdef0123456789abcdef".to_owned()));
        assert_eq!(signature(Method::Get, "/iaas/", &req_id, SK, sha), "FzennItPEpc63aPtCHQtDatG0PyVkVZtRJHtvUQ4WyA=");
    }

    #[test]
    fn vector_d_describe_jobs() {
        let ts = Utc.with_ymd_and_hms(2024, 5, 1, 8, 0, 5).unwrap();
        let mut params = common_params("DescribeJobs", "sh1a", AK, ts, SignatureMethod::HmacSha256);
        params.extend(flatten_array("jobs", ["j-gngc8xvc250", "j-ltjtx2rsn84"]));
        params.push(("verbose".to_owned(), "0".to_owned()));
        assert_eq!(
            canonical_query(&params),
            "access_key_id=QYACCESSKEYIDEXAMPLE&action=DescribeJobs&jobs.1=j-gngc8xvc250&jobs.2=j-ltjtx2rsn84&signature_method=HmacSHA256&signature_version=1&time_stamp=2024-05-01T08%3A00%3A05Z&verbose=0&version=1&zone=sh1a"
        );
        assert_eq!(
            signature(Method::Get, "/iaas/", &params, SK, SignatureMethod::HmacSha256),
            "0MV/bdg27QeKgE/boDYeQgnrUxLLAMMMUz6RY3f8+Fk="
        );
    }

    #[test]
    fn vector_e_escaping() {
        let value = "a b+c/d~e*f.g-h_i'j!k(l)m;n:o@p,q=r&s?t#u$v中";
        let encoded = "a%20b%2Bc%2Fd~e%2Af.g-h_i%27j%21k%28l%29m%3Bn%3Ao%40p%2Cq%3Dr%26s%3Ft%23u%24v%E4%B8%AD";
        assert_eq!(encode(value), encoded);
        let ts = Utc.with_ymd_and_hms(2024, 5, 1, 8, 0, 0).unwrap();
        let mut params = common_params("X", "sh1a", AK, ts, SignatureMethod::HmacSha256);
        params.push(("v".to_owned(), value.to_owned()));
        assert_eq!(
            canonical_query(&params),
            format!("access_key_id=QYACCESSKEYIDEXAMPLE&action=X&signature_method=HmacSHA256&signature_version=1&time_stamp=2024-05-01T08%3A00%3A00Z&v={encoded}&version=1&zone=sh1a")
        );
        assert_eq!(
            signature(Method::Get, "/iaas/", &params, SK, SignatureMethod::HmacSha256),
            "sfXCYqTonKKzhGgngB4uL/LlC6gPjtmm3hIZ2Q6Jblg="
        );
    }

    #[test]
    fn jobs_10_sorts_before_jobs_2() {
        let ids: Vec<String> = (1..=10).map(|i| format!("j-{i}")).collect();
        let params = flatten_array("jobs", ids.iter().map(String::as_str));
        let q = canonical_query(&params);
        assert!(q.starts_with("jobs.1=j-1&jobs.10=j-10&jobs.2=j-2"), "{q}");
    }

    #[test]
    fn signature_verification() {
        let params = vector_c(SignatureMethod::HmacSha256);
        for alg in [SignatureMethod::HmacSha256, SignatureMethod::HmacSha1] {
            let good = signature(Method::Get, "/iaas/", &params, b"SECRET", alg);
            assert!(verify(Method::Get, "/iaas/", &params, b"SECRET", alg, &good));
            assert!(!verify(Method::Get, "/iaas/", &params, b"SECRET2", alg, &good), "another key");
            assert!(!verify(Method::Post, "/iaas/", &params, b"SECRET", alg, &good), "another method");
            assert!(!verify(Method::Get, "/iaas/", &params, b"SECRET", alg, &good[..good.len() - 4]), "cut short");
            assert!(!verify(Method::Get, "/iaas/", &params, b"SECRET", alg, "not base64!"));
        }
    }
}
