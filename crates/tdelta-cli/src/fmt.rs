//! Human-readable sizes, ratios and times, and text from the store made
//! safe to print.

use std::borrow::Cow;

/// Text from the store (messages, metadata, names, paths) as it may be
/// printed on a terminal: control characters (escape sequences, carriage
/// returns, newlines...) are shown escaped (`\u{1b}`), never sent raw.
/// Every text output goes through this; JSON output is escaped by serde.
pub fn text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `1536` → `1.5 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// Stored / raw as a percentage.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 { "-".into() } else { format!("{:.2}%", part as f64 * 100.0 / whole as f64) }
}

/// Bytes per second in MB/s (10^6).
pub fn mbps(bytes: u64, secs: f64) -> String {
    if secs <= 0.0 { "-".into() } else { format!("{:.0} MB/s", bytes as f64 / secs / 1e6) }
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Parses `512`, `64K`, `1M`, `1.5G`, `100MB`, `2GiB` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("invalid size `{s}`"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("invalid size unit in `{s}` (use K, M, G or T)")),
    };
    let r = v * mult as f64;
    if !(0.0..1.8e19).contains(&r) {
        return Err(format!("size `{s}` out of range"));
    }
    Ok(r as u64)
}

/// A store block size: [`parse_size`] within the sizes a store accepts.
pub fn parse_block_size(s: &str) -> Result<u32, String> {
    let (min, max) = (tdelta::block::MIN_BLOCK_SIZE, tdelta::block::MAX_BLOCK_SIZE);
    let n = parse_size(s)?;
    match u32::try_from(n) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "block size `{s}` out of range; valid sizes are {} to {}",
            bytes(min.into()),
            bytes(max.into())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_795_910_400), "2026-11-29 00:00:00 UTC");
        assert_eq!(parse_size("64K").unwrap(), 65_536);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("100MB").unwrap(), 100 << 20);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(text("plain ü"), "plain ü");
        assert_eq!(text("a\x1b[2Jb\r\n\u{9b}c"), "a\\u{1b}[2Jb\\r\\n\\u{9b}c");
    }
}
