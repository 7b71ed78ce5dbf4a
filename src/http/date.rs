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

    /// The second (since the epoch) whose date [`DateCache::get`] holds.
    #[inline]
    pub(crate) fn secs(&self) -> u64 {
        self.secs
    }

    /// Holds the date of `secs` (a test's clock).
    #[cfg(test)]
    pub(crate) fn set_secs(&mut self, secs: u64) {
        self.secs = secs;
        format_imf(secs, &mut self.buf);
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

const MONTHS: [&[u8; 3]; 12] =
    [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
const SHORT_DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const LONG_DAYS: [&[u8]; 7] = [b"Monday", b"Tuesday", b"Wednesday", b"Thursday", b"Friday", b"Saturday", b"Sunday"];

/// Parses an HTTP date in any of the three forms a recipient must accept
/// (RFC 9110 §5.6.7) into seconds since the epoch:
///
/// - IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT` (the only form a sender
///   may generate);
/// - the obsolete RFC 850 form, `Sunday, 06-Nov-94 08:49:37 GMT`, whose
///   two-digit year is taken as the most recent year with those digits
///   that is not more than 50 years in the future;
/// - the obsolete asctime form, `Sun Nov  6 08:49:37 1994`.
///
/// `None` for anything else, or a date before 1970: a conditional request
/// that carries one is answered in full.
pub(crate) fn parse_http_date(s: &[u8]) -> Option<u64> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    parse_http_date_at(s, now)
}

/// [`parse_http_date`], with `now` (seconds since the epoch) deciding the
/// century of an RFC 850 date.
pub(crate) fn parse_http_date_at(s: &[u8], now: u64) -> Option<u64> {
    let s = s.trim_ascii();
    let comma = s.iter().position(|&c| c == b',');
    match comma {
        Some(3) => parse_imf(s),
        Some(_) => parse_rfc850(s, now),
        None => parse_asctime(s),
    }
}

/// The value of the ASCII digits `b` (all digits, at least one).
fn num(b: &[u8]) -> Option<u64> {
    if b.is_empty() {
        return None;
    }
    b.iter().try_fold(0u64, |n, &c| c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0')))
}

/// The month named `b` (`Jan` = 1).
fn month(b: &[u8]) -> Option<i64> {
    MONTHS.iter().position(|m| m[..] == *b).map(|i| i as i64 + 1)
}

/// `hh:mm:ss`, as seconds into the day.
fn time_of_day(b: &[u8]) -> Option<u64> {
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let (h, mi, se) = (num(&b[0..2])?, num(&b[3..5])?, num(&b[6..8])?);
    // 60: a leap second.
    (h <= 23 && mi <= 59 && se <= 60).then_some(h * 3600 + mi * 60 + se)
}

/// Seconds since the epoch of a checked calendar date and a time of day.
fn to_epoch(year: i64, month: i64, day: u64, secs: u64) -> Option<u64> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let len = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1970..=9999).contains(&year) || day == 0 || day > len {
        return None;
    }
    Some(days_from_civil(year, month, day as i64) as u64 * 86_400 + secs)
}

/// IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn parse_imf(s: &[u8]) -> Option<u64> {
    let s = s.trim_ascii();
    if s.len() != 29 || &s[3..5] != b", " || &s[25..] != b" GMT" || s[7] != b' ' || s[11] != b' ' || s[16] != b' ' {
        return None;
    }
    if !SHORT_DAYS.contains(&&s[0..3]) {
        return None;
    }
    to_epoch(num(&s[12..16])? as i64, month(&s[8..11])?, num(&s[5..7])?, time_of_day(&s[17..25])?)
}

/// RFC 850: `Sunday, 06-Nov-94 08:49:37 GMT`.
fn parse_rfc850(s: &[u8], now: u64) -> Option<u64> {
    let comma = s.iter().position(|&c| c == b',')?;
    if !LONG_DAYS.contains(&&s[..comma]) {
        return None;
    }
    let rest = s.get(comma..)?;
    // `, DD-Mon-YY hh:mm:ss GMT`
    if rest.len() != 24 || &rest[..2] != b", " || rest[4] != b'-' || rest[8] != b'-' || rest[11] != b' ' {
        return None;
    }
    if &rest[20..] != b" GMT" {
        return None;
    }
    let yy = num(&rest[9..11])? as i64;
    let (this_year, _, _) = civil_from_days((now / 86_400) as i64);
    // The year with these last two digits in this century; a century back
    // when that is more than 50 years ahead (RFC 9110 §5.6.7), a century on
    // when it is more than 50 years behind.
    let mut year = this_year - this_year.rem_euclid(100) + yy;
    if year > this_year + 50 {
        year -= 100;
    } else if year <= this_year - 50 {
        year += 100;
    }
    to_epoch(year, month(&rest[5..8])?, num(&rest[2..4])?, time_of_day(&rest[12..20])?)
}

/// asctime: `Sun Nov  6 08:49:37 1994` (the day padded with a space, or two
/// digits).
fn parse_asctime(s: &[u8]) -> Option<u64> {
    if s.len() != 24 || s[3] != b' ' || s[7] != b' ' || s[10] != b' ' || s[19] != b' ' {
        return None;
    }
    if !SHORT_DAYS.contains(&&s[0..3]) {
        return None;
    }
    let day = match s[8] {
        b' ' => num(&s[9..10])?,
        _ => num(&s[8..10])?,
    };
    to_epoch(num(&s[20..24])? as i64, month(&s[4..7])?, day, time_of_day(&s[11..19])?)
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

    /// 2026-12-06, for the RFC 850 century.
    const NOW: u64 = 1_796_515_200;
    const SUNDAY_1994: u64 = 784_111_777;

    #[test]
    fn parses_all_three_forms() {
        for s in [
            &b"Sun, 06 Nov 1994 08:49:37 GMT"[..],
            b"Sunday, 06-Nov-94 08:49:37 GMT",
            b"Sun Nov  6 08:49:37 1994",
            b"  Sun Nov  6 08:49:37 1994 ",
        ] {
            assert_eq!(parse_http_date_at(s, NOW), Some(SUNDAY_1994), "{}", String::from_utf8_lossy(s));
        }
        assert_eq!(parse_http_date_at(b"Thu Nov 16 08:49:37 2000", NOW), Some(974_364_577));
        assert_eq!(parse_http_date_at(b"Tue, 29 Feb 2000 00:00:00 GMT", NOW), Some(951_782_400));
        assert_eq!(parse_http_date_at(b"Tuesday, 29-Feb-00 00:00:00 GMT", NOW), Some(951_782_400));
        assert_eq!(parse_http_date_at(b"Tue Feb 29 00:00:00 2000", NOW), Some(951_782_400));
    }

    #[test]
    fn rfc850_years_more_than_50_ahead_are_in_the_past() {
        let year = |s: &[u8], now| parse_http_date_at(s, now).map(|t| civil_from_days((t / 86_400) as i64).0);
        // Seen from 2026: 76 is 2076 (50 years ahead), 77 is 1977.
        assert_eq!(year(b"Friday, 01-Jan-76 00:00:00 GMT", NOW), Some(2076));
        assert_eq!(year(b"Friday, 01-Jan-77 00:00:00 GMT", NOW), Some(1977));
        assert_eq!(year(b"Friday, 01-Jan-26 00:00:00 GMT", NOW), Some(2026));
        assert_eq!(year(b"Friday, 01-Jan-70 00:00:00 GMT", NOW), Some(2070));
        // Seen from 2090: 00 is 2100, 40 is 2140 (no more than 50 ahead),
        // 41 is 2041.
        let y2090 = days_from_civil(2090, 6, 1) as u64 * 86_400;
        assert_eq!(year(b"Friday, 01-Jan-00 00:00:00 GMT", y2090), Some(2100));
        assert_eq!(year(b"Friday, 01-Jan-40 00:00:00 GMT", y2090), Some(2140));
        assert_eq!(year(b"Friday, 01-Jan-41 00:00:00 GMT", y2090), Some(2041));
    }

    #[test]
    fn rejects_malformed_dates() {
        for s in [
            &b""[..],
            b"Sun, 06 Nov 1994 08:49:37 UTC",
            b"Sun, 06 Nov 1994 08:49:37",
            b"Sun, 6 Nov 1994 08:49:37 GMT",
            b"Xyz, 06 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Foo 1994 08:49:37 GMT",
            b"Sun, 31 Apr 1994 08:49:37 GMT",
            b"Sun, 29 Feb 1900 08:49:37 GMT",
            b"Sun, 06 Nov 1969 08:49:37 GMT",
            b"Sun, 06 Nov 1994 24:00:00 GMT",
            b"Sun, 06 Nov 1994 08:60:00 GMT",
            b"Sun, 06 Nov 1994 08-49-37 GMT",
            b"Sun, 06 Nov +994 08:49:37 GMT",
            b"Sunday, 06-Nov-1994 08:49:37 GMT",
            b"Sunday, 06 Nov 94 08:49:37 GMT",
            b"Sunday, 6-Nov-94 08:49:37 GMT",
            b"Sunday, 06-Nov-94 08:49:37 UTC",
            b"Sundae, 06-Nov-94 08:49:37 GMT",
            b"Sun, 06-Nov-94 08:49:37 GMT",
            b"Sunday, 32-Nov-94 08:49:37 GMT",
            b"Sun Nov 6 08:49:37 1994",
            b"Sun Nov  6 08:49:37 94",
            b"Sun Nov 06 08:49:37 1994 GMT",
            b"Sun Nov  0 08:49:37 1994",
            b"Sun Nov 31 08:49:37 1994",
            b"Sun Nov  6 8:49:37 1994 ",
            b"Sun Nov \x006 08:49:37 1994",
            b"Sun Nov  6 08:49:37 19 4",
            b"1994-11-06T08:49:37Z",
        ] {
            assert_eq!(parse_http_date_at(s, NOW), None, "{}", String::from_utf8_lossy(s));
        }
    }
}
