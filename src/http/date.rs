//! The `Date` header value, formatted once a second.

use std::time::{SystemTime, UNIX_EPOCH};

/// IMF-fixdate of the current second, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
#[derive(Debug)]
pub(crate) struct DateCache {
    secs: u64,
    buf: [u8; 29],
}

impl DateCache {
    pub(crate) fn new() -> DateCache {
        let mut d = DateCache { secs: u64::MAX, buf: [0; 29] };
        d.refresh();
        d
    }

    /// Re-formats when the second has changed; cheap otherwise.
    pub(crate) fn refresh(&mut self) {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs != self.secs {
            self.secs = secs;
            format_imf(secs, &mut self.buf);
        }
    }

    pub(crate) fn get(&self) -> &[u8] {
        &self.buf
    }
}

/// Formats `secs` since the epoch as an IMF-fixdate.
pub(crate) fn format_imf(secs: u64, buf: &mut [u8; 29]) {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let days = secs / 86_400;
    let sod = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let wd = DAYS[(days % 7) as usize];
    let two = |v: u64| [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8];
    buf[0..3].copy_from_slice(wd);
    buf[3..5].copy_from_slice(b", ");
    buf[5..7].copy_from_slice(&two(d as u64));
    buf[7] = b' ';
    buf[8..11].copy_from_slice(MONTHS[(m - 1) as usize]);
    buf[11] = b' ';
    let y = y as u64;
    buf[12..16].copy_from_slice(&[
        b'0' + (y / 1000 % 10) as u8,
        b'0' + (y / 100 % 10) as u8,
        b'0' + (y / 10 % 10) as u8,
        b'0' + (y % 10) as u8,
    ]);
    buf[16] = b' ';
    buf[17..19].copy_from_slice(&two(sod / 3600));
    buf[19] = b':';
    buf[20..22].copy_from_slice(&two(sod / 60 % 60));
    buf[22] = b':';
    buf[23..25].copy_from_slice(&two(sod % 60));
    buf[25..29].copy_from_slice(b" GMT");
}

/// Formats `secs` (since the epoch) as the Common Log Format's time, in
/// UTC: `01/Dec/2026:16:49:55 +0000`.
pub(crate) fn format_clf(secs: u64, buf: &mut [u8; 26]) {
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    let two = |v: u64| [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8];
    let y = y as u64;
    buf[0..2].copy_from_slice(&two(d as u64));
    buf[2] = b'/';
    buf[3..6].copy_from_slice(MONTHS[(m - 1) as usize]);
    buf[6] = b'/';
    buf[7..9].copy_from_slice(&two(y / 100));
    buf[9..11].copy_from_slice(&two(y));
    buf[11] = b':';
    buf[12..14].copy_from_slice(&two(sod / 3600));
    buf[14] = b':';
    buf[15..17].copy_from_slice(&two(sod / 60 % 60));
    buf[17] = b':';
    buf[18..20].copy_from_slice(&two(sod % 60));
    buf[20..26].copy_from_slice(b" +0000");
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, the only form
/// a sender may generate, RFC 9110 §5.6.7) into seconds since the epoch;
/// `None` for anything else (the obsolete forms are not honoured: a
/// conditional request that uses one is answered in full).
pub(crate) fn parse_imf(s: &[u8]) -> Option<u64> {
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let s = s.trim_ascii();
    if s.len() != 29 || &s[3..5] != b", " || &s[25..] != b" GMT" || s[7] != b' ' || s[11] != b' ' || s[16] != b' ' {
        return None;
    }
    let num = |b: &[u8]| -> Option<u64> {
        b.iter().try_fold(0u64, |n, &c| c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0')))
    };
    let day = num(&s[5..7])?;
    let month = MONTHS.iter().position(|m| m[..] == s[8..11])? as i64 + 1;
    let year = num(&s[12..16])? as i64;
    if s[19] != b':' || s[22] != b':' {
        return None;
    }
    let (h, mi, se) = (num(&s[17..19])?, num(&s[20..22])?, num(&s[23..25])?);
    if !(1..=31).contains(&day) || h > 23 || mi > 59 || se > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year, month, day as i64);
    Some(days as u64 * 86_400 + h * 3600 + mi * 60 + se)
}

/// (year, month, day) to days since 1970-01-01, after Howard Hinnant's
/// `days_from_civil`.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn clf_time() {
        let mut b = [0u8; 26];
        // 2000-10-10 13:55:36 UTC, the Common Log Format's own example day.
        super::format_clf(971_186_136, &mut b);
        assert_eq!(&b, b"10/Oct/2000:13:55:36 +0000");
        super::format_clf(0, &mut b);
        assert_eq!(&b, b"01/Jan/1970:00:00:00 +0000");
    }

    use super::*;

    #[test]
    fn formats_known_dates() {
        let mut b = [0u8; 29];
        format_imf(784_111_777, &mut b);
        assert_eq!(&b, b"Sun, 06 Nov 1994 08:49:37 GMT");
        format_imf(0, &mut b);
        assert_eq!(&b, b"Thu, 01 Jan 1970 00:00:00 GMT");
        format_imf(951_782_400, &mut b); // leap day
        assert_eq!(&b, b"Tue, 29 Feb 2000 00:00:00 GMT");
        format_imf(4_102_444_799, &mut b);
        assert_eq!(&b, b"Thu, 31 Dec 2099 23:59:59 GMT");
    }

    #[test]
    fn parses_what_it_formats() {
        let mut b = [0u8; 29];
        for secs in [0, 784_111_777, 951_782_400, 4_102_444_799, 1_700_000_000] {
            format_imf(secs, &mut b);
            assert_eq!(parse_imf(&b), Some(secs));
        }
        assert_eq!(parse_imf(b"Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(parse_imf(b"Sun, 06 Nov 1994 08:49:37 UTC"), None);
        assert_eq!(parse_imf(b"Sun, 36 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(parse_imf(b""), None);
    }
}
