//! The endpoint URL, checked once wherever it comes from: http or https, with a host, and no
//! query, fragment or user information (its path is signed as it is).
//!
//! An endpoint echoed in an error never shows a password.

use url::Url;

use super::error::ConfigError;
use super::settings::DEFAULT_ENDPOINT;

/// Parse and check an endpoint URL: http or https, with a host, no query, fragment or user info.
pub fn parse_endpoint(raw: &str, source_name: &str) -> Result<Url, ConfigError> {
    let fail = |reason: &str| ConfigError::Endpoint {
        value: printable_endpoint(raw),
        source_name: source_name.to_owned(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(raw).map_err(|e| fail(&format!("{e} (expected e.g. {DEFAULT_ENDPOINT})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(fail("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(fail("the URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(fail(
            "user information in the URL is not supported; credentials come from the environment or the config file",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(fail("the URL must not have a query or a fragment; its path is signed as it is"));
    }
    Ok(url)
}

/// The endpoint as it may be echoed: without any password in it.
fn printable_endpoint(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("[REDACTED]"));
            url.to_string()
        }
        Ok(_) => raw.to_owned(),
        Err(_) if raw.contains('@') => "[not shown: contains '@']".to_owned(),
        Err(_) => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_checks() {
        assert!(parse_endpoint("https://api.qingcloud.com/iaas/", "t").is_ok());
        assert_eq!(parse_endpoint("http://127.0.0.1:8787/iaas", "t").unwrap().path(), "/iaas");
        for bad in
            ["ftp://x/iaas/", "https://", "file:///iaas/", "not a url", "https://h/iaas/?a=1", "https://u:p@h/iaas/"]
        {
            assert!(matches!(parse_endpoint(bad, "t"), Err(ConfigError::Endpoint { .. })), "{bad}");
        }
        let e = parse_endpoint("https://u:hunter22@h/", "t").unwrap_err().to_string();
        assert!(!e.contains("hunter22"), "{e}");
    }
}
