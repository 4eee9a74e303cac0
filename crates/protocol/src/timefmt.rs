//! Timestamps on the wire: the documents use ISO 8601 with milliseconds in UTC
//! (`2026-02-08T12:00:00.000Z`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Formats unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn iso8601_millis(unix_ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The current time in unix milliseconds (0 if the clock is before 1970).
pub fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_documents() {
        assert_eq!(iso8601_millis(1_770_552_000_000), "2026-02-08T12:00:00.000Z");
        assert_eq!(iso8601_millis(1_770_552_000_123), "2026-02-08T12:00:00.123Z");
    }
}
