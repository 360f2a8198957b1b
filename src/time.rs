//! Times the server computes and writes, without panics: additions saturate at the last
//! second RFC 3339 can write (9999-12-31T23:59:59Z), and formatting clamps to it, so a
//! huge configured duration or a hostile time stamp can never abort a call half-way.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 9999-12-31T23:59:59Z.
const LAST_SECOND: u64 = 253_402_300_799;

/// The latest time the server writes.
pub fn latest() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(LAST_SECOND)
}

/// `t + d`, or [`latest`] when that is later.
pub fn add(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d).map_or_else(latest, |s| s.min(latest()))
}

fn clamp(t: SystemTime) -> SystemTime {
    t.clamp(UNIX_EPOCH, latest())
}

/// RFC 3339 in whole seconds.
pub fn rfc3339_seconds(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(clamp(t)).to_string()
}

/// RFC 3339 with milliseconds.
pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(clamp(t)).to_string()
}

/// RFC 3339 with nanoseconds.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(clamp(t)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_saturate_instead_of_panicking() {
        let far = add(SystemTime::now(), Duration::from_secs(u64::MAX));
        assert_eq!(far, latest());
        assert_eq!(rfc3339_seconds(far), "9999-12-31T23:59:59Z");
        assert_eq!(
            rfc3339_seconds(add(UNIX_EPOCH, Duration::from_secs(100_000_000 * 3600))),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
