//! Durations on the command line: `30s`, `250ms`, `2m`, `1h30m`, `1.5s`
//! (a subset of Go's `time.ParseDuration` and humantime's syntax), and a
//! bare number in the unit the flag always took, so that existing command
//! lines and unit files keep their meaning.
//!
//! Where it stops: which unit a bare number has, and which range a flag
//! accepts, is the flag's (`crate::options`).

use std::fmt;
use std::time::Duration;

/// The unit of a bare number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bare {
    /// A bare number is milliseconds.
    Millis,
    /// A bare number is seconds.
    Secs,
}

impl Bare {
    fn name(self) -> &'static str {
        match self {
            Bare::Millis => "milliseconds",
            Bare::Secs => "seconds",
        }
    }

    fn nanos(self) -> f64 {
        match self {
            Bare::Millis => 1e6,
            Bare::Secs => 1e9,
        }
    }
}

/// Nanoseconds in each unit, longest names first where one is a prefix of
/// another (`ms` before `m`).
const UNITS: [(&str, f64); 8] =
    [("ns", 1.0), ("us", 1e3), ("µs", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9), ("d", 86_400e9)];

/// The longest duration accepted: a year.
const MAX: Duration = Duration::from_secs(365 * 86_400);

/// Parses `v`: one or more `NUMBER UNIT` terms with no space between them
/// (`1h30m`, `1.5s`, `250ms`; units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`,
/// `d`), or a bare number in `bare`'s unit. Numbers may have a fraction.
pub fn parse_duration(v: &str, bare: Bare) -> Result<Duration, String> {
    let err =
        || format!("expected a duration such as 30s, 250ms, 2m or 1h30m (a bare number is {}), got {v:?}", bare.name());
    let s = v.trim();
    if s.is_empty() {
        return Err(err());
    }
    let mut rest = s;
    let mut nanos = 0f64;
    let mut terms = 0;
    while !rest.is_empty() {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, after) = rest.split_at(end);
        // Digits with at most one point, and at least one digit.
        if !number.bytes().any(|b| b.is_ascii_digit()) || number.matches('.').count() > 1 {
            return Err(err());
        }
        let value: f64 = number.parse().map_err(|_| err())?;
        let unit_end = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale = if unit.is_empty() {
            // A bare number: only alone.
            if terms > 0 {
                return Err(err());
            }
            bare.nanos()
        } else {
            UNITS.iter().find(|(name, _)| *name == unit).map(|&(_, n)| n).ok_or_else(err)?
        };
        nanos += value * scale;
        terms += 1;
        rest = next;
        if unit.is_empty() && !rest.is_empty() {
            return Err(err());
        }
    }
    if !nanos.is_finite() || nanos > MAX.as_nanos() as f64 {
        return Err(format!("{v:?} is longer than a year"));
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

/// Writes `d` the shortest way the parser reads back: `10s`, `250ms`,
/// `2m`, `1h`, `1500ms`.
pub fn format_duration(d: Duration, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let ms = d.as_millis();
    if d.subsec_nanos() % 1_000_000 != 0 {
        return write!(f, "{}us", d.as_micros());
    }
    match ms {
        0 => write!(f, "0s"),
        ms if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => write!(f, "{}m", ms / 60_000),
        ms if ms % 1000 == 0 => write!(f, "{}s", ms / 1000),
        ms => write!(f, "{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &str, bare: Bare) -> Result<u128, String> {
        parse_duration(v, bare).map(|d| d.as_millis())
    }

    #[test]
    fn units_and_compounds() {
        for (v, want) in [
            ("30s", 30_000),
            ("250ms", 250),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("1d", 86_400_000),
            ("1.5s", 1500),
            ("0.25s", 250),
            (".5s", 500),
            ("1h30m", 5_400_000),
            ("1m30s250ms", 90_250),
            ("1500000us", 1500),
            ("1500000µs", 1500),
            ("2000000000ns", 2000),
            (" 10s ", 10_000),
        ] {
            assert_eq!(ms(v, Bare::Millis), Ok(want), "{v}");
            assert_eq!(ms(v, Bare::Secs), Ok(want), "{v}");
        }
    }

    #[test]
    fn a_bare_number_keeps_the_flags_unit() {
        assert_eq!(ms("250", Bare::Millis), Ok(250));
        assert_eq!(ms("30", Bare::Secs), Ok(30_000));
        assert_eq!(ms("1.5", Bare::Secs), Ok(1500));
        assert_eq!(ms("0", Bare::Millis), Ok(0));
    }

    #[test]
    fn bad_input_says_what_is_expected() {
        for v in [
            "", "s", "ms", "-1s", "+1s", "1x", "1 s", "1sec", "1.2.3s", "10s5", "5 10s", "1h 30m", "1.s.", "1e3ms",
            "0x10", "NaN", "inf", "1S", "30s!",
        ] {
            let e = parse_duration(v, Bare::Secs).expect_err(v);
            assert!(e.contains("expected a duration") && e.contains("a bare number is seconds"), "{v}: {e}");
        }
        assert!(parse_duration("400d", Bare::Millis).unwrap_err().contains("longer than a year"));
        assert!(parse_duration("99999999999999999999999h", Bare::Millis).is_err());
    }

    #[test]
    fn formats_what_it_parses() {
        struct Show(Duration);
        impl fmt::Display for Show {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                format_duration(self.0, f)
            }
        }
        for (ms, text) in
            [(10_000, "10s"), (250, "250ms"), (120_000, "2m"), (3_600_000, "1h"), (1500, "1500ms"), (0, "0s")]
        {
            let d = Duration::from_millis(ms);
            assert_eq!(Show(d).to_string(), text);
            assert_eq!(parse_duration(text, Bare::Secs), Ok(d));
        }
        assert_eq!(Show(Duration::from_micros(1500)).to_string(), "1500us");
    }
}
