//! Time in the domain is microseconds since the Unix epoch (UTC): exact in
//! SQLite and PostgreSQL integers and in hashes, unlike floating or
//! text timestamps. Conversions to RFC 3339 happen at the edges.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Microseconds since 1970-01-01T00:00:00Z.
pub type Micros = i64;

pub const MICROS_PER_DAY: Micros = 86_400_000_000;

pub fn now() -> Micros {
    to_micros(OffsetDateTime::now_utc())
}

pub fn to_micros(t: OffsetDateTime) -> Micros {
    (t.unix_timestamp_nanos() / 1000) as Micros
}

pub fn from_micros(us: Micros) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 text, as shown in the API and exports.
pub fn rfc3339(us: Micros) -> String {
    from_micros(us)
        .format(&Rfc3339)
        .unwrap_or_else(|_| us.to_string())
}

pub fn parse_rfc3339(s: &str) -> Option<Micros> {
    OffsetDateTime::parse(s, &Rfc3339).ok().map(to_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_to_the_microsecond() {
        let t = 1_700_000_000_123_456;
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
    }
}
