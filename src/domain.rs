//! The checked domain types: cluster ids, zones, MySQL user names and host specifications,
//! QingCloud account names, and the key that makes two tasks the same work. A value of one of
//! these types has passed every rule of SPEC §3, so nothing downstream checks it again: the
//! manifest, the plan, the runner and the store all carry them. Constructors return the reason a
//! value is refused, in words an operator can act on; the manifest loader adds the file, line
//! and column. Decoded from the database, a value that no longer passes is an error, not a
//! task to run. Task rows themselves keep the text as stored: a row edited by hand (a user made
//! `root`) must reach the runner's last check, which refuses that one task and says why, instead
//! of failing the read of every task of the run; the runner parses cluster and zone as it loads
//! a task, and user and host again at the last check. This module depends on nothing of ours.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{Sqlite, SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};

/// Accounts the MySQL Plus API refuses to delete and this tool refuses to ask for. No flag
/// overrides this.
pub const PROTECTED_USERS: [&str; 4] = ["root", "qc_admin", "qc_repl", "qc_check"];

/// Longest MySQL account name accepted (MySQL 5.7+ allows 32 characters).
pub const MAX_USER_LEN: usize = 32;

macro_rules! string_newtype {
    ($name:ident) => {
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Stored as TEXT; read back through `parse`, so a row edited into something this type
        // refuses fails to decode instead of reaching the API.
        impl sqlx::Type<Sqlite> for $name {
            fn type_info() -> SqliteTypeInfo {
                <String as sqlx::Type<Sqlite>>::type_info()
            }
            fn compatible(ty: &SqliteTypeInfo) -> bool {
                <String as sqlx::Type<Sqlite>>::compatible(ty)
            }
        }

        impl<'q> sqlx::Encode<'q, Sqlite> for $name {
            fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
                <String as sqlx::Encode<'q, Sqlite>>::encode_by_ref(&self.0, buf)
            }
        }

        impl<'r> sqlx::Decode<'r, Sqlite> for $name {
            fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <String as sqlx::Decode<'r, Sqlite>>::decode(value)?;
                Ok($name::parse(&text)?)
            }
        }
    };
}

string_newtype!(ClusterId);
string_newtype!(Zone);
string_newtype!(UserName);
string_newtype!(HostSpec);
string_newtype!(AccountName);

impl AccountName {
    /// The account of a manifest that names none: the config file's top-level key pair (the
    /// qingcloud-cli `config.yaml` as it is) and the `QINGCLOUD_*` variables.
    pub const DEFAULT: &'static str = "default";

    /// A name of the config file's `accounts:`: lower-case letters, digits, `-` and `_`,
    /// starting with a letter, at most 32 characters.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = s.len() <= 32
            && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "account {s:?} does not match [a-z][a-z0-9_-]* (at most 32 characters; accounts are named in the \
                 config file's `accounts:`)"
            ))
        }
    }

    pub fn default_account() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }
}

impl ClusterId {
    /// `cl-` followed by one or more lower-case letters or digits.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = s
            .strip_prefix("cl-")
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!("cluster id {s:?} does not match cl-[a-z0-9]+"))
        }
    }
}

impl Zone {
    /// Lower-case letters, digits and hyphens (the API requires lower-case zones).
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!("zone {s:?} does not match [a-z0-9-]+ (zones are lower-case, e.g. sh1a)"))
        }
    }
}

impl UserName {
    /// A MySQL account name that can be sent safely and may be deleted.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("user is empty".to_owned());
        }
        let len = s.chars().count();
        if len > MAX_USER_LEN {
            return Err(format!("user {s:?} is {len} characters long; the limit is {MAX_USER_LEN}"));
        }
        if let Some(c) =
            s.chars().find(|c| c.is_control() || c.is_whitespace() || is_invisible(*c) || matches!(c, '\'' | '"' | '`'))
        {
            return Err(format!(
                "user {s:?} contains {}; control characters, quotes, backquotes and whitespace are not allowed",
                describe_char(c)
            ));
        }
        if PROTECTED_USERS.iter().any(|p| p.eq_ignore_ascii_case(s)) {
            return Err(format!("user {s:?} is protected and cannot be removed"));
        }
        Ok(Self(s.to_owned()))
    }
}

/// Characters that show as nothing (zero-width spaces and joiners, direction marks, the BOM, the
/// soft hyphen): `root\u{200b}` must not pass for another name than it looks.
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}')
}

fn describe_char(c: char) -> String {
    match c {
        c if is_invisible(c) => format!("an invisible character (U+{:04X})", c as u32),
        '\'' => "a quote (')".to_owned(),
        '"' => "a double quote (\")".to_owned(),
        '`' => "a backquote (`)".to_owned(),
        c if c.is_whitespace() && !c.is_control() => format!("whitespace (U+{:04X})", c as u32),
        c => format!("a control character (U+{:04X})", c as u32),
    }
}

impl HostSpec {
    /// A `;`-separated list of `%`, IPv4/IPv6 addresses, patterns with `%`/`_`, CIDRs
    /// (`10.0.0.0/8` or `10.0.0.0/255.0.0.0`) or host names.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("host is empty (use \"%\" for any host)".to_owned());
        }
        for item in s.split(';') {
            check_host_item(item).map_err(|why| format!("host {s:?}: {why}"))?;
        }
        Ok(Self(s.to_owned()))
    }
}

fn check_host_item(item: &str) -> Result<(), String> {
    if item.is_empty() {
        return Err("an entry between ';' separators is empty".to_owned());
    }
    if item.len() > 255 {
        return Err("an entry is longer than 255 characters".to_owned());
    }
    if let Some(bad) =
        item.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '%' | ':' | '/')))
    {
        return Err(format!("entry {item:?} contains {bad:?}, which no address, pattern or host name has"));
    }
    let wildcard = item.contains(['%', '_']);
    if let Some((addr, mask)) = item.split_once('/') {
        return check_cidr(addr, mask).map_err(|why| format!("entry {item:?} is not a valid CIDR: {why}"));
    }
    if item.contains(':') {
        // IPv6, possibly a pattern such as fe80::%.
        if item.parse::<Ipv6Addr>().is_ok() {
            return Ok(());
        }
        if wildcard && item.chars().all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '%' | '_')) {
            return Ok(());
        }
        return Err(format!("entry {item:?} is not an IPv6 address"));
    }
    if wildcard || item.parse::<Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if looks_like_ipv4(item) {
        return Err(format!("entry {item:?} is not a valid IPv4 address"));
    }
    check_host_name(item).map_err(|why| format!("entry {item:?} is not a host name: {why}"))
}

fn looks_like_ipv4(item: &str) -> bool {
    item.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

fn check_cidr(addr: &str, mask: &str) -> Result<(), String> {
    let ip: IpAddr = addr.parse().map_err(|_| format!("{addr:?} is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if let Ok(bits) = mask.parse::<u8>() {
        if bits <= max {
            return Ok(());
        }
        return Err(format!("prefix length {bits} is more than {max}"));
    }
    match (ip, mask.parse::<Ipv4Addr>()) {
        (IpAddr::V4(_), Ok(m)) => {
            let m = u32::from(m);
            // A netmask is ones followed by zeros.
            if m.leading_ones() + m.trailing_zeros() == 32 {
                Ok(())
            } else {
                Err(format!("{mask:?} is not a netmask"))
            }
        }
        _ => Err(format!("{mask:?} is neither a prefix length nor a netmask")),
    }
}

fn check_host_name(name: &str) -> Result<(), String> {
    for label in name.split('.') {
        if label.is_empty() {
            return Err("it has an empty label".to_owned());
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters".to_owned());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starts or ends with '-'".to_owned());
        }
    }
    Ok(())
}

/// A MySQL account: user and host together identify it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Account {
    pub user: UserName,
    pub host: HostSpec,
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.host)
    }
}

/// What makes two tasks the same work, whatever their dates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskKey {
    pub cluster: ClusterId,
    pub user: UserName,
    pub host: HostSpec,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stored_values_decode_only_when_they_still_pass() {
        use sqlx::Connection as _;
        let mut db = sqlx::SqliteConnection::connect("sqlite::memory:").await.unwrap();
        let cluster = ClusterId::parse("cl-ouhutv70").unwrap();
        let back: ClusterId = sqlx::query_scalar("SELECT ?").bind(&cluster).fetch_one(&mut db).await.unwrap();
        assert_eq!(back, cluster);
        let zone: Zone = sqlx::query_scalar("SELECT 'sh1a'").fetch_one(&mut db).await.unwrap();
        assert_eq!(zone.as_str(), "sh1a");
        let edited = sqlx::query_scalar::<_, ClusterId>("SELECT 'cl-x; DROP'").fetch_one(&mut db).await;
        assert!(edited.unwrap_err().to_string().contains("does not match cl-[a-z0-9]+"));
        let protected = sqlx::query_scalar::<_, UserName>("SELECT 'root'").fetch_one(&mut db).await;
        assert!(protected.unwrap_err().to_string().contains("protected"));
    }

    #[test]
    fn cluster_ids() {
        assert!(ClusterId::parse("cl-ouhutv70").is_ok());
        for bad in ["cl-", "CL-abc", "cl-ABC", "cl_abc", "abc", "cl-a b", ""] {
            assert!(ClusterId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn zones() {
        assert!(Zone::parse("pek3a").is_ok());
        assert!(Zone::parse("ap-2a").is_ok());
        for bad in ["", "PEK3", "sh 1", "sh1a."] {
            assert!(Zone::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn users() {
        assert!(UserName::parse("bob").is_ok());
        assert!(UserName::parse(&"a".repeat(32)).is_ok());
        assert!(UserName::parse(&"a".repeat(33)).unwrap_err().contains("limit is 32"));
        assert!(UserName::parse("").is_err());
        for bad in ["a b", "a'b", "a\"b", "a`b", "a\u{7}b", "a\tb", "a\u{3000}b"] {
            assert!(UserName::parse(bad).is_err(), "{bad:?}");
        }
        for p in ["root", "qc_admin", "qc_repl", "qc_check", "ROOT"] {
            assert!(UserName::parse(p).unwrap_err().contains("protected"), "{p}");
        }
    }

    #[test]
    fn hosts() {
        for ok in [
            "%",
            "192.168.1.%",
            "10.0.0.5",
            "192.168.1.%;10.0.0.5",
            "10.0.0.0/8",
            "10.0.0.0/255.0.0.0",
            "::1",
            "2001:db8::/32",
            "fe80::%",
            "db.example.com",
            "app_1.example.com",
            "localhost",
        ] {
            assert!(HostSpec::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ";",
            "%;",
            "a b",
            "10.0.0.300",
            "10.0.0.0/33",
            "10.0.0.0/255.0.255.0",
            "host..name",
            "-bad.example",
            "x'y",
            "2001:zz::1",
        ] {
            assert!(HostSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
