//! Page and page-size parameters, bounded.

use super::InvalidRequest;

pub const DEFAULT_SIZE: u32 = 20;
pub const MAX_SIZE: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// 1-based.
    pub page: u32,
    pub size: u32,
}

impl Page {
    /// From the raw query values (`page`, and `limit` or `page_size`).
    pub fn parse(page: Option<&str>, size: Option<&str>, size_name: &str) -> Result<Self, InvalidRequest> {
        Self::parse_sized(page, size, size_name, DEFAULT_SIZE, MAX_SIZE)
    }

    /// As `parse`, for a list whose pages are `default` long unless asked, and at most `max`.
    pub fn parse_sized(
        page: Option<&str>,
        size: Option<&str>,
        size_name: &str,
        default: u32,
        max: u32,
    ) -> Result<Self, InvalidRequest> {
        let num =
            |v: Option<&str>, name: &str, default: u32, max: u32| -> Result<u32, InvalidRequest> {
                match v {
                    None | Some("") => Ok(default),
                    Some(t) => t.parse::<u32>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
                        InvalidRequest::param(format!("`{name}` must be an integer from 1 to {max}"), name)
                    }),
                }
            };
        Ok(Self { page: num(page, "page", 1, 1_000_000)?, size: num(size, size_name, default, max)? })
    }

    pub fn offset(self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_bounds_and_offsets() {
        assert_eq!(Page::parse(None, None, "limit").expect("ok"), Page { page: 1, size: 20 });
        let p = Page::parse(Some("3"), Some("50"), "limit").expect("ok");
        assert_eq!(p.offset(), 100);
        for (page, size) in [("0", "10"), ("x", "10"), ("1", "0"), ("1", "101"), ("-1", "5")] {
            assert!(Page::parse(Some(page), Some(size), "page_size").is_err(), "{page} {size}");
        }
        assert_eq!(
            Page::parse(None, Some("500"), "page_size").expect_err("too big").param.as_deref(),
            Some("page_size")
        );
        let stats = |size| Page::parse_sized(None, size, "page_size", 1_000, 1_000);
        assert_eq!(stats(None).expect("ok"), Page { page: 1, size: 1_000 });
        assert!(stats(Some("1001")).is_err());
    }
}
