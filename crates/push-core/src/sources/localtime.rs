//! Local times written by switches that have no zone in them (Asterisk's CSV dates, the
//! UCM's), read in a configured IANA zone and turned into epoch ms (UTC), the unit of every
//! CDR time.

use jiff::{civil::DateTime, tz::TimeZone};

/// A configured zone (`timezone:` of a source), resolved once at start.
#[derive(Debug, Clone)]
pub struct Zone(TimeZone);

impl Zone {
    /// The zone named `name` (`UTC`, `Asia/Shanghai`, ...); the error says why not.
    pub fn named(name: &str) -> Result<Zone, String> {
        if name.eq_ignore_ascii_case("utc") {
            return Ok(Zone(TimeZone::UTC));
        }
        TimeZone::get(name).map(Zone).map_err(|e| format!("unknown time zone {name:?}: {e}"))
    }

    /// `YYYY-MM-DD HH:MM:SS` (an optional `.fraction` too) in this zone, as epoch ms. An
    /// ambiguous time (the hour repeated when clocks go back) is read as the earlier one.
    pub fn epoch_ms(&self, text: &str) -> Result<i64, String> {
        let civil: DateTime = text.trim().replacen(' ', "T", 1).parse().map_err(|e| format!("time {text:?}: {e}"))?;
        let zoned = civil.to_zoned(self.0.clone()).map_err(|e| format!("time {text:?}: {e}"))?;
        Ok(zoned.timestamp().as_millisecond())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_become_utc_epoch_ms() {
        let utc = Zone::named("UTC").unwrap();
        assert_eq!(utc.epoch_ms("2023-12-01 00:00:00"), Ok(1_701_388_800_000));
        let shanghai = Zone::named("Asia/Shanghai").unwrap();
        assert_eq!(shanghai.epoch_ms("2023-12-01 08:00:00"), Ok(1_701_388_800_000), "UTC+8");
        assert!(Zone::named("Mars/Olympus").is_err());
        assert!(utc.epoch_ms("yesterday").is_err());
    }

    #[test]
    fn the_repeated_hour_of_a_clock_change_reads_as_the_first() {
        let berlin = Zone::named("Europe/Berlin").unwrap();
        // 2023-10-29 02:30 happened twice: first at 00:30 UTC (CEST), then 01:30 UTC (CET).
        assert_eq!(berlin.epoch_ms("2023-10-29 02:30:00"), Ok(1_698_539_400_000));
    }
}
