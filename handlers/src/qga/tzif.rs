//! The UTC offset and zone abbreviation in effect at a moment, from a TZif file (RFC 8536, what
//! `/etc/localtime` is) and, past its last transition, from its POSIX TZ footer (`CET-1CEST,
//! M3.5.0,M10.5.0/3`), which "slim" zoneinfo files rely on for every current year.

/// The local time type in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Zone {
    /// Seconds east of UTC.
    pub offset: i64,
    /// `CET`, `EST`, `+03`, `UTC`.
    pub abbreviation: String,
}

/// Why a TZif file could not be used (for the log).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid TZif data: {0}")]
pub(crate) struct TzError(&'static str);

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TzError> {
        let end = self.pos.checked_add(n).ok_or(TzError("length overflow"))?;
        let s = self.data.get(self.pos..end).ok_or(TzError("truncated"))?;
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, TzError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Counts from a header: isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt.
fn header(c: &mut Cursor<'_>) -> Result<(u8, [usize; 6]), TzError> {
    if c.take(4)? != b"TZif" {
        return Err(TzError("not a TZif file"));
    }
    let version = c.take(1)?[0];
    c.take(15)?;
    let mut counts = [0usize; 6];
    for n in &mut counts {
        *n = c.u32()? as usize;
    }
    Ok((version, counts))
}

/// The time type in effect at `t` (seconds since the epoch, UTC).
pub(crate) fn zone_at(data: &[u8], t: i64) -> Result<Zone, TzError> {
    let mut c = Cursor { data, pos: 0 };
    let (version, counts) = header(&mut c)?;
    let mut time_size = 4;
    let mut counts = counts;
    if version >= b'2' {
        // Skip the 32-bit block; the 64-bit one follows with its own header.
        let [isut, isstd, leap, time, typ, chars] = counts;
        let v1 = time * 5 + typ * 6 + chars + leap * 8 + isstd + isut;
        c.take(v1)?;
        counts = header(&mut c)?.1;
        time_size = 8;
    }
    let [isut, isstd, leap, timecnt, typecnt, charcnt] = counts;
    if typecnt == 0 || typecnt > 256 || charcnt == 0 {
        return Err(TzError("no local time types"));
    }
    let times: Vec<i64> = c
        .take(timecnt * time_size)?
        .chunks_exact(time_size)
        .map(|b| {
            if time_size == 8 {
                i64::from_be_bytes(b.try_into().unwrap_or([0; 8]))
            } else {
                i64::from(i32::from_be_bytes(b.try_into().unwrap_or([0; 4])))
            }
        })
        .collect();
    let indices = c.take(timecnt)?.to_vec();
    let types: Vec<(i64, u8)> = c
        .take(typecnt * 6)?
        .chunks_exact(6)
        .map(|b| {
            (
                i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                b[5],
            )
        })
        .collect();
    let chars = c.take(charcnt)?;
    c.take(leap * (time_size + 4) + isstd + isut)?;
    if indices.iter().any(|i| usize::from(*i) >= typecnt) {
        return Err(TzError("transition to an unknown type"));
    }
    let footer = if version >= b'2' {
        let rest = &data[c.pos..];
        rest.strip_prefix(b"\n")
            .and_then(|r| r.iter().position(|b| *b == b'\n').map(|end| &r[..end]))
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .filter(|s| !s.is_empty())
    } else {
        None
    };
    let after_last = times.last().is_none_or(|last| t >= *last);
    if let (true, Some(rule)) = (after_last, &footer) {
        if let Some(tz) = PosixTz::parse(rule) {
            return Ok(tz.zone_at(t));
        }
    }
    let ty = match times.partition_point(|x| *x <= t) {
        0 => 0,
        n => usize::from(indices[n - 1]),
    };
    let (offset, abbr_at) = types[ty];
    let abbr = chars
        .get(usize::from(abbr_at)..)
        .ok_or(TzError("bad abbreviation index"))?;
    let end = abbr.iter().position(|b| *b == 0).unwrap_or(abbr.len());
    Ok(Zone {
        offset,
        abbreviation: String::from_utf8_lossy(&abbr[..end]).into_owned(),
    })
}

/// The day a POSIX TZ rule changes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Day {
    /// `Jn`: day 1..=365, February 29 never counted.
    Julian1(i64),
    /// `n`: day 0..=365, February 29 counted in leap years.
    Julian0(i64),
    /// `Mm.w.d`: weekday `d` (0 = Sunday) of week `w` (5 = last) of month `m`.
    Month(i64, i64, i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Change {
    day: Day,
    /// Seconds after local midnight (may be negative or beyond a day, RFC 8536 §3.3.1).
    time: i64,
}

/// A POSIX TZ string (`std offset [dst [offset] [,start[/time],end[/time]]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PosixTz {
    std: Zone,
    dst: Option<(Zone, Change, Change)>,
}

impl PosixTz {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let mut p = Parser {
            s: s.as_bytes(),
            pos: 0,
        };
        let std_name = p.name()?;
        // POSIX offsets count west of UTC: negate.
        let std_offset = -p.offset()?;
        let std = Zone {
            offset: std_offset,
            abbreviation: std_name,
        };
        if p.done() {
            return Some(Self { std, dst: None });
        }
        let dst_name = p.name()?;
        let dst_offset = match p.peek() {
            Some(b',') | None => std_offset + 3600,
            _ => -p.offset()?,
        };
        // Without rules, the US rules POSIX implementations default to.
        let (start, end) = if p.done() {
            (
                Change {
                    day: Day::Month(3, 2, 0),
                    time: 7200,
                },
                Change {
                    day: Day::Month(11, 1, 0),
                    time: 7200,
                },
            )
        } else {
            p.eat(b',')?;
            let start = p.change()?;
            p.eat(b',')?;
            let end = p.change()?;
            (start, end)
        };
        if !p.done() {
            return None;
        }
        let dst = Zone {
            offset: dst_offset,
            abbreviation: dst_name,
        };
        Some(Self {
            std,
            dst: Some((dst, start, end)),
        })
    }

    pub(crate) fn zone_at(&self, t: i64) -> Zone {
        let Some((dst, start, end)) = &self.dst else {
            return self.std.clone();
        };
        let year = civil_from_days((t + self.std.offset).div_euclid(86_400)).0;
        let start_utc = day_of(year, start.day) * 86_400 + start.time - self.std.offset;
        let end_utc = day_of(year, end.day) * 86_400 + end.time - dst.offset;
        let in_dst = if start_utc <= end_utc {
            start_utc <= t && t < end_utc
        } else {
            !(end_utc <= t && t < start_utc)
        };
        if in_dst {
            dst.clone()
        } else {
            self.std.clone()
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn done(&self) -> bool {
        self.pos == self.s.len()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek() == Some(b)).then(|| self.pos += 1)
    }

    /// `ABC` (3+ letters) or `<+03>` (quoted, may hold digits and signs).
    fn name(&mut self) -> Option<String> {
        let start = self.pos;
        let name = if self.eat(b'<').is_some() {
            while self.peek().is_some_and(|b| b != b'>') {
                self.pos += 1;
            }
            let name = &self.s[start + 1..self.pos];
            self.eat(b'>')?;
            name
        } else {
            while self.peek().is_some_and(|b| b.is_ascii_alphabetic()) {
                self.pos += 1;
            }
            &self.s[start..self.pos]
        };
        (name.len() >= 3).then(|| String::from_utf8_lossy(name).into_owned())
    }

    fn number(&mut self, max_digits: usize) -> Option<i64> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) && self.pos - start < max_digits {
            self.pos += 1;
        }
        std::str::from_utf8(&self.s[start..self.pos])
            .ok()?
            .parse()
            .ok()
    }

    /// `[+-]hh[:mm[:ss]]` in seconds (hours up to 167, RFC 8536's extension).
    fn offset(&mut self) -> Option<i64> {
        let sign = match self.peek() {
            Some(b'-') => {
                self.pos += 1;
                -1
            }
            Some(b'+') => {
                self.pos += 1;
                1
            }
            _ => 1,
        };
        let hours = self.number(3)?;
        if hours > 167 {
            return None;
        }
        let mut secs = hours * 3600;
        for unit in [60, 1] {
            if self.eat(b':').is_none() {
                break;
            }
            let v = self.number(2)?;
            if v > 59 {
                return None;
            }
            secs += v * unit;
        }
        Some(sign * secs)
    }

    fn change(&mut self) -> Option<Change> {
        let day = match self.peek()? {
            b'J' => {
                self.pos += 1;
                let n = self.number(3)?;
                (1..=365).contains(&n).then_some(Day::Julian1(n))?
            }
            b'M' => {
                self.pos += 1;
                let m = self.number(2)?;
                self.eat(b'.')?;
                let w = self.number(1)?;
                self.eat(b'.')?;
                let d = self.number(1)?;
                ((1..=12).contains(&m) && (1..=5).contains(&w) && d <= 6)
                    .then_some(Day::Month(m, w, d))?
            }
            _ => {
                let n = self.number(3)?;
                (n <= 365).then_some(Day::Julian0(n))?
            }
        };
        let time = match self.eat(b'/') {
            Some(()) => self.offset()?,
            None => 7200,
        };
        Some(Change { day, time })
    }
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn month_days(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// The day (since the epoch) a rule names in `year`.
fn day_of(year: i64, day: Day) -> i64 {
    let jan1 = days_from_civil(year, 1, 1);
    match day {
        Day::Julian1(n) => jan1 + n - 1 + i64::from(is_leap(year) && n >= 60),
        Day::Julian0(n) => jan1 + n,
        Day::Month(m, w, d) => {
            let first = days_from_civil(year, m, 1);
            // 1970-01-01 was a Thursday (4).
            let weekday = (first + 4).rem_euclid(7);
            let mut day = first + (d - weekday).rem_euclid(7) + (w - 1) * 7;
            while day >= first + month_days(year, m) {
                day -= 7;
            }
            day
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(offset: i64, abbreviation: &str) -> Zone {
        Zone {
            offset,
            abbreviation: abbreviation.into(),
        }
    }

    #[test]
    fn calendar_arithmetic() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        // Last Sunday of March 2024 is the 31st; second Sunday of March 2024 the 10th.
        assert_eq!(
            day_of(2024, Day::Month(3, 5, 0)),
            days_from_civil(2024, 3, 31)
        );
        assert_eq!(
            day_of(2024, Day::Month(3, 2, 0)),
            days_from_civil(2024, 3, 10)
        );
        assert_eq!(day_of(2024, Day::Julian1(60)), days_from_civil(2024, 3, 1));
        assert_eq!(day_of(2024, Day::Julian0(59)), days_from_civil(2024, 2, 29));
    }

    #[test]
    fn posix_rules() {
        let cet = PosixTz::parse("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        // 2024-07-01 12:00 UTC and 2024-01-15 12:00 UTC.
        assert_eq!(cet.zone_at(1_719_835_200), zone(7200, "CEST"));
        assert_eq!(cet.zone_at(1_705_320_000), zone(3600, "CET"));
        // The switch on 2024-03-31 at 01:00 UTC.
        assert_eq!(cet.zone_at(1_711_846_799), zone(3600, "CET"));
        assert_eq!(cet.zone_at(1_711_846_800), zone(7200, "CEST"));
        // Southern hemisphere: summer spans the new year.
        let nz = PosixTz::parse("NZST-12NZDT,M9.5.0,M4.1.0/3").unwrap();
        assert_eq!(nz.zone_at(1_705_320_000), zone(46_800, "NZDT"));
        assert_eq!(nz.zone_at(1_719_835_200), zone(43_200, "NZST"));
        let quoted = PosixTz::parse("<+0330>-3:30").unwrap();
        assert_eq!(quoted.zone_at(0), zone(12_600, "+0330"));
        let us = PosixTz::parse("EST5EDT").unwrap();
        assert_eq!(us.zone_at(1_719_835_200), zone(-14_400, "EDT"));
        for bad in [
            "",
            "X1",
            "CET-1CEST,M3.5.0",
            "CET-1CEST,M13.5.0,M10.5.0",
            "CET-1x",
        ] {
            assert_eq!(PosixTz::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn tzif_errors() {
        assert!(zone_at(b"", 0).is_err());
        assert!(zone_at(b"TZif2xxxxxxxxxxxxxxx", 0).is_err());
        let mut v1 = b"TZif\0".to_vec();
        v1.extend([0u8; 15]);
        for n in [0u32, 0, 0, 0, 1, 4] {
            v1.extend(n.to_be_bytes());
        }
        v1.extend([0, 0, 0, 0, 0, 0]);
        v1.extend(b"UTC\0");
        assert_eq!(zone_at(&v1, 0).unwrap(), zone(0, "UTC"));
        v1.truncate(v1.len() - 2);
        assert!(zone_at(&v1, 0).is_err());
    }

    /// Against the C library (`date` with `TZ=:file`) on real zoneinfo files, including times
    /// past the files' last transition, where only the POSIX footer answers.
    #[cfg(target_os = "linux")]
    #[test]
    #[allow(clippy::disallowed_methods)] // the reference implementation, as a peer
    fn matches_the_c_library_on_real_zoneinfo() {
        let zones = [
            "Europe/Berlin",
            "Europe/Dublin",
            "America/New_York",
            "America/St_Johns",
            "America/Sao_Paulo",
            "Australia/Sydney",
            "Australia/Lord_Howe",
            "Asia/Kolkata",
            "Asia/Tehran",
            "Pacific/Chatham",
            "Africa/Casablanca",
            "Etc/UTC",
        ];
        let times: [i64; 8] = [
            0,
            947_930_400,   // 2000-01-15
            1_719_835_200, // 2024-07-01
            1_711_846_800, // 2024-03-31 01:00 UTC, a switch in Europe
            2_158_920_000, // 2038-05-31, past 32-bit time
            4_103_013_600, // 2100-01-08
            4_118_565_600, // 2100-07-06
            -2_000_000_000,
        ];
        for zone in zones {
            let path = format!("/usr/share/zoneinfo/{zone}");
            let data = std::fs::read(&path).expect("tzdata is required (apt-get install tzdata)");
            for t in times {
                let out = std::process::Command::new("date")
                    .env("TZ", format!(":{path}"))
                    .args(["-d", &format!("@{t}"), "+%Z %z"])
                    .output()
                    .unwrap();
                let want = String::from_utf8(out.stdout).unwrap();
                let (abbr, num) = want.trim().split_once(' ').unwrap();
                let sign = if num.starts_with('-') { -1 } else { 1 };
                let digits = &num[1..];
                let offset = sign
                    * (digits[..2].parse::<i64>().unwrap() * 3600
                        + digits[2..4].parse::<i64>().unwrap() * 60);
                let got = zone_at(&data, t).unwrap();
                // `%z` has no seconds: compare local mean time offsets to the minute.
                assert_eq!(
                    (got.abbreviation.as_str(), got.offset - got.offset % 60),
                    (abbr, offset),
                    "{zone} at {t}"
                );
            }
        }
    }
}
