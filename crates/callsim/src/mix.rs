//! Weighted choices (`100=0.7,200=0.3`), parsed from the command line and sampled by the
//! generator.

use rand::Rng;

use crate::model::{Disposition, SERVICE_PRIVACY, SERVICE_SIP};

/// A weighted set of choices; weights need not sum to 1 (they are normalized).
#[derive(Clone, Debug, PartialEq)]
pub struct Mix<T> {
    items: Vec<(T, f64)>,
    total: f64,
}

impl<T: Copy + PartialEq> Mix<T> {
    /// Builds a mix; fails when a weight is negative or not finite, a key repeats, or all
    /// weights are zero.
    pub fn new(items: Vec<(T, f64)>) -> Result<Self, String> {
        for (i, (key, weight)) in items.iter().enumerate() {
            if !weight.is_finite() || *weight < 0.0 {
                return Err(format!("weight {weight} must be a finite number >= 0"));
            }
            if items[..i].iter().any(|(k, _)| k == key) {
                return Err("a choice appears twice".to_string());
            }
        }
        let total: f64 = items.iter().map(|(_, w)| w).sum();
        if total <= 0.0 {
            return Err("at least one weight must be > 0".to_string());
        }
        Ok(Self { items, total })
    }

    /// Draws one choice with probability proportional to its weight.
    pub fn pick<R: Rng + ?Sized>(&self, rng: &mut R) -> T {
        let mut x = rng.random::<f64>() * self.total;
        for (key, weight) in &self.items {
            if x < *weight {
                return *key;
            }
            x -= weight;
        }
        // Rounding can leave x a hair above the last weight: take the last non-zero one.
        self.items.iter().rev().find(|(_, w)| *w > 0.0).map(|(k, _)| *k).expect("a mix has a positive weight")
    }

    /// The normalized share of a choice (0 when absent).
    pub fn share(&self, key: T) -> f64 {
        self.items.iter().filter(|(k, _)| *k == key).map(|(_, w)| w / self.total).sum()
    }
}

/// Parses `key=weight,key=weight` with `parse_key` for the keys.
fn parse_pairs<T: Copy + PartialEq>(text: &str, parse_key: impl Fn(&str) -> Option<T>) -> Result<Mix<T>, String> {
    let mut items = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, weight) = part.split_once('=').ok_or_else(|| format!("`{part}` is not key=weight"))?;
        let parsed = parse_key(key.trim()).ok_or_else(|| format!("unknown choice `{key}`"))?;
        let weight: f64 = weight.trim().parse().map_err(|_| format!("`{weight}` is not a number"))?;
        items.push((parsed, weight));
    }
    Mix::new(items)
}

/// Parses a service mix such as `100=0.7,200=0.3`.
pub fn parse_service_mix(text: &str) -> Result<Mix<u16>, String> {
    parse_pairs(text, |k| match k.parse::<u16>().ok()? {
        t @ (SERVICE_SIP | SERVICE_PRIVACY) => Some(t),
        _ => None,
    })
}

/// Parses a scenario mix such as `answered=0.6,busy=0.1` (names of [`Disposition::cli_name`]).
pub fn parse_scenario_mix(text: &str) -> Result<Mix<Disposition>, String> {
    parse_pairs(text, Disposition::from_cli_name)
}

/// The default service mix: 70 % SIP, 30 % privacy number.
pub fn default_service_mix() -> Mix<u16> {
    parse_service_mix("100=0.7,200=0.3").expect("valid default")
}

/// The default scenario mix, roughly what a carrier sees.
pub fn default_scenario_mix() -> Mix<Disposition> {
    parse_scenario_mix("answered=0.6,no_answer=0.15,busy=0.1,failed=0.05,cancelled=0.1").expect("valid default")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn parses_and_normalizes() {
        let mix = parse_service_mix("100=3, 200=1").unwrap();
        assert!((mix.share(100) - 0.75).abs() < 1e-9);
        let sc = parse_scenario_mix("ANSWERED=1,no_answer=1").unwrap();
        assert!((sc.share(Disposition::NoAnswer) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse_service_mix("300=1").is_err());
        assert!(parse_service_mix("100").is_err());
        assert!(parse_service_mix("100=x").is_err());
        assert!(parse_service_mix("100=0").is_err());
        assert!(parse_service_mix("100=-1,200=2").is_err());
        assert!(parse_service_mix("100=1,100=2").is_err());
        assert!(parse_scenario_mix("ringing=1").is_err());
    }

    #[test]
    fn pick_follows_weights() {
        let mix = parse_service_mix("100=0.9,200=0.1").unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let n = 10_000;
        let sip = (0..n).filter(|_| mix.pick(&mut rng) == 100).count();
        assert!((8_700..9_300).contains(&sip), "{sip}");
        let only = parse_service_mix("100=0,200=1").unwrap();
        assert!((0..1000).all(|_| only.pick(&mut rng) == 200));
    }
}
