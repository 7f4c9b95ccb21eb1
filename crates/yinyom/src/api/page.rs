//! Keyset pagination for list endpoints: `?limit=` (default 100, at most
//! 1000) and `?cursor=`, an opaque token (base64url of the last row's sort
//! key as JSON) that the previous page handed out. Never `OFFSET`: a page
//! costs the same however deep it is.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::problem::Problem;

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

/// The page size asked for, checked.
pub fn limit(asked: Option<u32>) -> Result<u32, Problem> {
    match asked {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(Problem::validation(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

/// The cursor for the page after the row whose sort key is `key`.
pub fn cursor<K: Serialize>(key: &K) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).expect("sort keys serialise"))
}

/// The sort key a cursor carries; a cursor this server did not hand out is
/// a 422 on `cursor`.
pub fn after<K: DeserializeOwned>(cursor: Option<&str>) -> Result<Option<K>, Problem> {
    let Some(c) = cursor else { return Ok(None) };
    let bad = || Problem::validation("cursor", "not a cursor from a previous page");
    let bytes = URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map(Some).map_err(|_| bad())
}

/// Split the `limit + 1` rows read into the page and the next cursor, made
/// from the page's last row by `key`.
pub fn split<T, K: Serialize>(
    mut rows: Vec<T>,
    limit: u32,
    key: impl Fn(&T) -> K,
) -> (Vec<T>, Option<String>) {
    if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        let next = rows.last().map(|r| cursor(&key(r)));
        (rows, next)
    } else {
        (rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_strangers_are_refused() {
        let c = cursor(&(42_i64, "req_1"));
        assert_eq!(
            after::<(i64, String)>(Some(&c)).unwrap(),
            Some((42, "req_1".to_string()))
        );
        assert_eq!(after::<(i64, String)>(None).unwrap(), None);
        for bad in ["!!", "e30", ""] {
            let p = after::<(i64, String)>(Some(bad)).unwrap_err();
            assert_eq!(p.status.as_u16(), 422, "{bad}");
        }
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(1001)).is_err());
        assert_eq!(limit(None).unwrap(), 100);
        let (page, next) = split(vec![1, 2, 3], 2, |n| *n);
        assert_eq!(page, vec![1, 2]);
        assert_eq!(after::<i32>(next.as_deref()).unwrap(), Some(2));
        assert_eq!(split(vec![1, 2], 2, |n| *n).1, None);
    }
}
