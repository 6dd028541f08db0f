//! Fault injection: for each API request, one seeded draw decides whether the "network" or the
//! "gateway" misbehaves. Pure apart from the generator it is handed.
//!
//! Every request consumes exactly five numbers from the generator, whatever the rates, so the
//! same seed and the same sequence of requests give the same sequence of faults. Faults are
//! drawn before anything else looks at the request (signature, quota, action): they stand for
//! trouble in front of the API, so a faulted request never counts against the quota.

use rand::Rng;

use super::world::Faults;

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Close the TCP connection with a reset and send nothing.
    Reset,
    /// Answer HTTP 502 without JSON.
    Http502,
    /// Answer ret_code 5100 without doing anything.
    Busy,
    /// Answer ret_code 5000 without doing anything.
    Internal,
    /// Do the work, then drop the connection before the answer.
    LostResponse,
}

impl Fault {
    pub const ALL: [Fault; 5] = [Fault::Reset, Fault::Http502, Fault::Busy, Fault::Internal, Fault::LostResponse];

    /// Name used in `/sim/stats` (`faults_injected`).
    pub fn name(self) -> &'static str {
        match self {
            Fault::Reset => "reset",
            Fault::Http502 => "http_502",
            Fault::Busy => "busy",
            Fault::Internal => "internal",
            Fault::LostResponse => "lost_response",
        }
    }
}

/// Draw the fault (if any) for one request. The kinds are checked in the order of
/// [`Fault::ALL`]; the first whose draw falls under its rate wins.
pub fn draw(rng: &mut impl Rng, rates: &Faults) -> Option<Fault> {
    let draws: [f64; 5] = std::array::from_fn(|_| rng.random::<f64>());
    let rate = |f: Fault| match f {
        Fault::Reset => rates.reset_rate,
        Fault::Http502 => rates.http_502_rate,
        Fault::Busy => rates.busy_rate,
        Fault::Internal => rates.internal_rate,
        Fault::LostResponse => rates.lost_response_rate,
    };
    Fault::ALL.into_iter().zip(draws).find(|&(f, u)| u < rate(f)).map(|(f, _)| f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn rates(r: f64) -> Faults {
        Faults { busy_rate: r, internal_rate: r, http_502_rate: r, reset_rate: r, lost_response_rate: r, delay_ms: 0 }
    }

    #[test]
    fn zero_rates_never_fault_and_one_always_does() {
        let mut rng = StdRng::seed_from_u64(1);
        assert!((0..1000).all(|_| draw(&mut rng, &rates(0.0)).is_none()));
        assert!((0..1000).all(|_| draw(&mut rng, &rates(1.0)) == Some(Fault::Reset)));
        let only_busy = Faults { busy_rate: 1.0, ..Faults::default() };
        assert_eq!(draw(&mut rng, &only_busy), Some(Fault::Busy));
    }

    #[test]
    fn same_seed_same_sequence_and_rates_are_roughly_honoured() {
        let seq = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..2000).map(|_| draw(&mut rng, &rates(0.1))).collect::<Vec<_>>()
        };
        assert_eq!(seq(42), seq(42));
        assert_ne!(seq(42), seq(43));
        let resets = seq(42).iter().filter(|f| **f == Some(Fault::Reset)).count();
        // 2000 draws at 10 %: far outside 100..300 would mean the rate is not applied.
        assert!((100..300).contains(&resets), "{resets}");
    }
}
