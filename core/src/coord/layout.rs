//! Where things live in the coordinator, per product:
//!
//! ```text
//! /rcodis/<product>/topology        the Topology JSON (groups, slots, epoch); CAS-updated
//! /rcodis/<product>/proxy/<token>   ephemeral: a live proxy's ProxyInfo (with applied epoch)
//! /rcodis/<product>/lock            ephemeral: the single writer (ctl or dashboard)
//! ```

/// Root of a product's keys.
pub fn product_root(product: &str) -> String {
    format!("/rcodis/{product}/")
}

/// The topology document.
pub fn topology_key(product: &str) -> String {
    format!("/rcodis/{product}/topology")
}

/// Prefix of the proxies' ephemeral entries.
pub fn proxy_prefix(product: &str) -> String {
    format!("/rcodis/{product}/proxy/")
}

/// One proxy's ephemeral entry.
pub fn proxy_key(product: &str, token: &str) -> String {
    format!("/rcodis/{product}/proxy/{token}")
}

/// The writer lock.
pub fn lock_key(product: &str) -> String {
    format!("/rcodis/{product}/lock")
}

/// Whether a product name is acceptable (Codis's rule: `^\w[\w.\-]*$`).
pub fn valid_product(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(topology_key("demo"), "/rcodis/demo/topology");
        assert_eq!(proxy_key("demo", "t"), "/rcodis/demo/proxy/t");
        assert!(proxy_key("demo", "t").starts_with(&proxy_prefix("demo")));
        assert!(valid_product("codis-demo.1"));
        assert!(!valid_product("-x"));
        assert!(!valid_product("a/b"));
        assert!(!valid_product(""));
    }
}
