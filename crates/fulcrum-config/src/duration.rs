//! Durations written with units: `"250ms"`, `"5s"`, `"2m"`, `"1h 30m"`.

use std::time::Duration;

/// Parses a duration with units (humantime syntax); a bare number is
/// refused because its unit would be a guess.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write it with a unit, e.g. \"250ms\", \"5s\", \"2m\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn bare_numbers_are_refused() {
        assert!(parse_duration("30").unwrap_err().contains("unit"));
    }
}
