//! `--rate`: a ceiling of calls per second, minute or hour, parsed and shown as `N/s`, `N/m`,
//! `N/h`. A value only: it does not limit anything by itself.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A ceiling of `count` calls per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
}

impl Rate {
    /// The product default against the real API: 1800 calls per hour, below the documented
    /// quota of 2000 per hour so that other tools sharing the key keep some room.
    pub const DEFAULT: Rate = Rate { count: 1800, period: Duration::from_secs(3600) };
    /// The default against the simulator (`--simulate`).
    pub const SIMULATE: Rate = Rate { count: 50, period: Duration::from_secs(1) };

    /// Calls per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.period.as_secs_f64()
    }

    /// The time between two calls at this rate. A count of 0 (which parsing refuses) is read
    /// as 1 rather than dividing by zero.
    pub fn interval(&self) -> Duration {
        self.period / self.count.max(1)
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a rate; write N/s, N/m or N/h (for example 1800/h)");
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(format!("{s:?}: the rate must be at least 1 call per period"));
        }
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Rate { count, period })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{}", self.count, unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!("1800/h".parse::<Rate>(), Ok(Rate::DEFAULT));
        assert_eq!("50/s".parse::<Rate>(), Ok(Rate::SIMULATE));
        assert_eq!("30/m".parse::<Rate>().map(|r| r.per_second()), Ok(0.5));
        assert!("0/s".parse::<Rate>().is_err());
        assert!("10".parse::<Rate>().is_err());
        assert!("10/d".parse::<Rate>().is_err());
        assert_eq!(Rate::DEFAULT.to_string(), "1800/h");
        assert_eq!(Rate::DEFAULT.interval(), Duration::from_secs(2));
    }
}
