//! Rates in the config file (`min_upload_rate`): bytes a second, written as people write them.

/// A rate as the config writes it: `"1KiB/s"`, `"512B/s"`, `"2MB/s"`; `"0"` for none.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a rate like \"1KiB/s\", \"512B/s\" or \"0\"");
    let t = text.trim();
    if t == "0" {
        return Ok(0);
    }
    let amount = t.strip_suffix("/s").ok_or_else(bad)?.trim();
    let split = amount
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(amount.len());
    let (number, unit) = amount.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1024,
        "MB" => 1000 * 1000,
        "MiB" => 1024 * 1024,
        _ => return Err(bad()),
    };
    number.checked_mul(scale).ok_or_else(bad)
}

/// A rate as people read it: `1KiB/s`, `512B/s`.
pub fn rate_label(bytes_per_s: u64) -> String {
    match bytes_per_s {
        n if n >= 1024 * 1024 && n % (1024 * 1024) == 0 => format!("{}MiB/s", n / (1024 * 1024)),
        n if n >= 1024 && n % 1024 == 0 => format!("{}KiB/s", n / 1024),
        n => format!("{n}B/s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(parse_rate("1KiB/s"), Ok(1024));
        assert_eq!(parse_rate("512B/s"), Ok(512));
        assert_eq!(parse_rate("2MB/s"), Ok(2_000_000));
        assert_eq!(parse_rate("0"), Ok(0));
        assert!(parse_rate("1KiB").is_err(), "a rate says per second");
        assert!(parse_rate("fast/s").is_err());
        assert_eq!(rate_label(1024), "1KiB/s");
        assert_eq!(rate_label(1000), "1000B/s");
    }
}
