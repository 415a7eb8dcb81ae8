//! Points in time on the command line: `2025-03-14T14:00:00Z`, `2025-03-14 14:00:00` (UTC), or
//! `26h ago` / `3days ago` (relative to now).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use engine::Timestamp;

fn to_timestamp(at: SystemTime) -> anyhow::Result<Timestamp> {
    let micros = match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).context("time out of range")?,
        Err(before) => {
            -i64::try_from(before.duration().as_micros()).context("time out of range")?
        }
    };
    Ok(Timestamp(micros))
}

/// Parses a time as described in the module docs; `now` anchors relative times.
pub fn parse_time(text: &str, now: SystemTime) -> anyhow::Result<Timestamp> {
    let text = text.trim();
    if let Some(ago) = text.strip_suffix("ago") {
        let duration: Duration = humantime::parse_duration(ago.trim())
            .with_context(|| format!("{text:?}: not a duration like \"26h ago\""))?;
        let Some(at) = now.checked_sub(duration) else { bail!("{text:?} is too long ago") };
        return to_timestamp(at);
    }
    let at = humantime::parse_rfc3339_weak(text).with_context(|| {
        format!(
            "{text:?}: expected 2025-03-14T14:00:00Z, \"2025-03-14 14:00:00\" (UTC) or \"26h ago\""
        )
    })?;
    to_timestamp(at)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn absolute_and_relative_times() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_time("1970-01-01T00:00:01Z", now).unwrap(), Timestamp(1_000_000));
        assert_eq!(parse_time("1970-01-02 00:00:00", now).unwrap(), Timestamp(86_400_000_000));
        assert_eq!(parse_time("1000s ago", now).unwrap(), Timestamp(999_000_000_000));
        assert_eq!(
            parse_time("1h 10s ago", now).unwrap(),
            Timestamp((1_000_000 - 3_610) * 1_000_000)
        );
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("ago", now).is_err());
    }
}
