//! When a schedule fires: a cron expression in a time zone, an interval,
//! or one time; and the id of the run a firing starts.

use super::ScheduleError;
use crate::store::When;
use chrono::{SecondsFormat, TimeZone, Utc};
use std::str::FromStr;

/// Checks that `when` can be computed (the expression parses, the time
/// zone exists, the interval is not zero).
pub(crate) fn validate(when: &When) -> Result<(), ScheduleError> {
    match when {
        When::Cron { expression, timezone } => {
            cron(expression)?;
            zone(timezone)?;
        }
        When::Every { every_ms, offset_ms } => {
            if *every_ms < 1000 {
                return Err(ScheduleError::InvalidSpec(format!(
                    "the interval is {every_ms} ms; it must be at least 1 s"
                )));
            }
            if offset_ms >= every_ms {
                return Err(ScheduleError::InvalidSpec(format!(
                    "the offset ({offset_ms} ms) must be shorter than the interval ({every_ms} ms)"
                )));
            }
        }
        When::At { .. } => {}
    }
    Ok(())
}

fn cron(expression: &str) -> Result<croner::Cron, ScheduleError> {
    croner::Cron::from_str(expression)
        .map_err(|e| ScheduleError::InvalidCron { expression: expression.to_owned(), reason: e.to_string() })
}

fn zone(timezone: &str) -> Result<chrono_tz::Tz, ScheduleError> {
    timezone.parse::<chrono_tz::Tz>().map_err(|_| ScheduleError::UnknownTimezone(timezone.to_owned()))
}

/// The first firing strictly after `after_ms`, if there is one.
pub(crate) fn next_after(when: &When, after_ms: u64) -> Result<Option<u64>, ScheduleError> {
    Ok(match when {
        When::Cron { expression, timezone } => {
            let (cron, zone) = (cron(expression)?, zone(timezone)?);
            // From the whole second: cron times are whole seconds, and the
            // search keeps the fraction of the time it starts from.
            let Some(after) = Utc.timestamp_opt((after_ms / 1000) as i64, 0).single() else { return Ok(None) };
            // Not every expression has a next time (30 February).
            cron.find_next_occurrence(&after.with_timezone(&zone), false)
                .ok()
                .map(|t| t.timestamp().max(0) as u64 * 1000)
                .filter(|t| *t > after_ms)
        }
        When::Every { every_ms, offset_ms } => {
            let k = match after_ms.checked_sub(*offset_ms) {
                Some(since) => since / every_ms + 1,
                None => 0,
            };
            k.checked_mul(*every_ms).and_then(|t| t.checked_add(*offset_ms))
        }
        When::At { at_ms } => Some(*at_ms).filter(|at| *at > after_ms),
    })
}

/// The firings in `from_ms..=to_ms`, at most `cap` of them.
pub(crate) fn between(when: &When, from_ms: u64, to_ms: u64, cap: usize) -> Result<Vec<u64>, ScheduleError> {
    let mut out = Vec::new();
    let mut cursor = from_ms.saturating_sub(1);
    while let Some(t) = next_after(when, cursor)? {
        if t > to_ms || out.len() == cap {
            break;
        }
        out.push(t);
        cursor = t;
    }
    Ok(out)
}

/// A time as RFC 3339 in UTC: whole seconds unless it has milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let format = if ms % 1000 == 0 { SecondsFormat::Secs } else { SecondsFormat::Millis };
    Utc.timestamp_millis_opt(ms as i64).single().map_or_else(|| ms.to_string(), |t| t.to_rfc3339_opts(format, true))
}

/// Parses an RFC 3339 time (`2026-12-08T09:00:00Z`, `2026-12-08T10:00:00+01:00`).
pub fn parse_time(text: &str) -> Result<u64, ScheduleError> {
    let t = chrono::DateTime::parse_from_rfc3339(text.trim()).map_err(|e| {
        ScheduleError::InvalidSpec(format!("{text:?} is not an RFC 3339 time such as 2026-12-08T09:00:00Z ({e})"))
    })?;
    u64::try_from(t.timestamp_millis()).map_err(|_| ScheduleError::InvalidSpec(format!("{text:?} is before 1970")))
}

/// Parses a duration as people write it (`90s`, `15m`, `1h 30m`, `2days`).
pub fn parse_duration(text: &str) -> Result<u64, ScheduleError> {
    humantime::parse_duration(text.trim()).map(|d| d.as_millis() as u64).map_err(|e| {
        ScheduleError::InvalidSpec(format!("{text:?} is not a duration such as 30s, 15m, 1h 30m or 2days ({e})"))
    })
}

/// The id of the run the firing at `at_ms` of schedule `name` starts: the
/// same for every attempt at that firing, so a firing retried after a crash
/// finds its run instead of starting a second one.
pub fn run_id(name: &str, at_ms: u64) -> String {
    format!("{name}-{}", rfc3339(at_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(expression: &str, timezone: &str) -> When {
        When::Cron { expression: expression.into(), timezone: timezone.into() }
    }

    #[test]
    fn a_cron_expression_fires_at_local_time_in_its_zone_across_a_daylight_saving_change() {
        let nightly = cron("0 3 * * *", "Europe/Berlin");
        // 2026-03-28 is CET (UTC+1), 2026-03-29 03:00 is already CEST (UTC+2).
        let times = between(
            &nightly,
            parse_time("2026-03-27T12:00:00Z").unwrap(),
            parse_time("2026-03-30T12:00:00Z").unwrap(),
            10,
        )
        .unwrap();
        let times: Vec<String> = times.into_iter().map(rfc3339).collect();
        assert_eq!(times, ["2026-03-28T02:00:00Z", "2026-03-29T01:00:00Z", "2026-03-30T01:00:00Z"]);
    }

    #[test]
    fn intervals_are_aligned_to_the_epoch_with_their_offset() {
        let when = When::Every { every_ms: 3_600_000, offset_ms: 300_000 };
        let at = parse_time("2026-12-07T10:30:00Z").unwrap();
        assert_eq!(rfc3339(next_after(&when, at).unwrap().unwrap()), "2026-12-07T11:05:00Z");
        let exact = parse_time("2026-12-07T11:05:00Z").unwrap();
        assert_eq!(rfc3339(next_after(&when, exact).unwrap().unwrap()), "2026-12-07T12:05:00Z", "strictly after");
    }

    #[test]
    fn a_one_time_schedule_fires_once() {
        let when = When::At { at_ms: 5_000 };
        assert_eq!(next_after(&when, 4_999).unwrap(), Some(5_000));
        assert_eq!(next_after(&when, 5_000).unwrap(), None);
    }

    #[test]
    fn bad_specs_are_refused_with_what_to_write() {
        let bad = validate(&cron("0 25 * * *", "UTC")).unwrap_err().to_string();
        assert!(bad.contains("\"0 25 * * *\""), "{bad}");
        let zone = validate(&cron("0 3 * * *", "Mars/Olympus")).unwrap_err().to_string();
        assert!(zone.contains("IANA"), "{zone}");
        assert!(validate(&When::Every { every_ms: 0, offset_ms: 0 }).is_err());
        assert!(validate(&When::Every { every_ms: 60_000, offset_ms: 60_000 }).is_err());
        assert!(parse_duration("soon").unwrap_err().to_string().contains("15m"));
        assert_eq!(parse_duration("1h 30m").unwrap(), 5_400_000);
        assert!(parse_time("tomorrow").is_err());
    }

    #[test]
    fn run_ids_name_the_schedule_and_the_firing() {
        assert_eq!(run_id("nightly", 1_796_612_400_000), "nightly-2026-12-07T03:00:00Z");
        assert_eq!(run_id("now", 1_796_612_400_123), "now-2026-12-07T03:00:00.123Z");
    }
}
