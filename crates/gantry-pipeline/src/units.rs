//! Durations (`1h30m`) and Docker-style sizes (`512m`).

use std::time::Duration;

/// Parses a size like Docker's `--memory`: a number with an optional unit
/// `b`, `k`, `m`, `g` or `t` (powers of 1024, any case, optionally followed
/// by `b` or `ib`: `512mb`, `1GiB`). A plain number is bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err("expected a number".to_owned());
    }
    let shift = match unit {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("unknown unit '{unit}'")),
    };
    let too_large = || "too large".to_owned();
    if let Ok(whole) = number.parse::<u64>() {
        whole.checked_mul(1 << shift).ok_or_else(too_large)
    } else {
        let value: f64 = number.parse().map_err(|_| "expected a number".to_owned())?;
        let bytes = value * (1u64 << shift) as f64;
        if bytes >= u64::MAX as f64 {
            return Err(too_large());
        }
        Ok(bytes as u64)
    }
}

/// Parses a duration with units: `90s`, `10m`, `1h30m`, `500ms`. A bare
/// number is an error, since its unit would be a guess.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    use humantime::DurationError;
    humantime::parse_duration(text.trim()).map_err(|err| match err {
        DurationError::UnknownUnit { unit, .. } if unit.is_empty() => "a unit is needed".to_owned(),
        DurationError::UnknownUnit { unit, .. } => format!("unknown unit '{unit}'"),
        DurationError::NumberOverflow => "too large".to_owned(),
        DurationError::InvalidCharacter(_) => "invalid character".to_owned(),
        DurationError::NumberExpected(_) | DurationError::Empty => "expected a number".to_owned(),
    })
}
