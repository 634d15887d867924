//! Redis's glob-style pattern matching (`stringmatchlen`): `*`, `?`, `[abc]`, `[^a-z]`,
//! `\x` escapes; optionally case-insensitive.

/// Whether `s` matches `pat`.
pub fn matches(pat: &[u8], s: &[u8], nocase: bool) -> bool {
    match_at(pat, s, nocase, 0, &mut false)
}

fn eq(a: u8, b: u8, nocase: bool) -> bool {
    if nocase {
        a.eq_ignore_ascii_case(&b)
    } else {
        a == b
    }
}

/// `skip` is Redis's `skipLongerMatches`: once the pattern after a `*` matched nowhere in
/// the rest of the string, no earlier `*` can help by taking more, so every level gives up
/// (without it, patterns like `a*a*a*...b` take exponential time).
fn match_at(mut p: &[u8], mut s: &[u8], nocase: bool, depth: usize, skip: &mut bool) -> bool {
    if depth > 1000 {
        return false;
    }
    while !p.is_empty() {
        match p[0] {
            b'*' => {
                while p.len() > 1 && p[1] == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                for i in 0..=s.len() {
                    if match_at(&p[1..], &s[i..], nocase, depth + 1, skip) {
                        return true;
                    }
                    if *skip {
                        return false;
                    }
                }
                *skip = true;
                return false;
            }
            b'?' => {
                if s.is_empty() {
                    return false;
                }
                s = &s[1..];
            }
            b'[' => {
                if s.is_empty() {
                    return false;
                }
                let mut q = &p[1..];
                let not = q.first() == Some(&b'^');
                if not {
                    q = &q[1..];
                }
                let mut hit = false;
                loop {
                    if q.is_empty() {
                        // Unterminated class: Redis treats the rest as the class.
                        break;
                    }
                    if q[0] == b'\\' && q.len() >= 2 {
                        if eq(q[1], s[0], nocase) {
                            hit = true;
                        }
                        q = &q[2..];
                    } else if q[0] == b']' {
                        break;
                    } else if q.len() >= 3 && q[1] == b'-' {
                        let (mut lo, mut hi) = (q[0], q[2]);
                        if lo > hi {
                            std::mem::swap(&mut lo, &mut hi);
                        }
                        let c = s[0];
                        if (lo..=hi).contains(&c)
                            || (nocase
                                && (lo.to_ascii_lowercase()..=hi.to_ascii_lowercase())
                                    .contains(&c.to_ascii_lowercase()))
                        {
                            hit = true;
                        }
                        q = &q[3..];
                    } else {
                        if eq(q[0], s[0], nocase) {
                            hit = true;
                        }
                        q = &q[1..];
                    }
                }
                if not {
                    hit = !hit;
                }
                if !hit {
                    return false;
                }
                s = &s[1..];
                // Skip past the closing bracket (or to the end).
                p = if q.is_empty() { q } else { &q[1..] };
                continue;
            }
            b'\\' if p.len() >= 2 => {
                if s.is_empty() || !eq(p[1], s[0], nocase) {
                    return false;
                }
                s = &s[1..];
                p = &p[2..];
                continue;
            }
            c => {
                if s.is_empty() || !eq(c, s[0], nocase) {
                    return false;
                }
                s = &s[1..];
            }
        }
        p = &p[1..];
    }
    s.is_empty()
}

#[cfg(test)]
mod tests {
    use super::matches;

    /// Patterns that backtrack exponentially without Redis's early stop (its regression
    /// tests): they must answer at once, not hang the shard.
    #[test]
    fn abusive_patterns_stop_early() {
        let start = std::time::Instant::now();
        let s = vec![b'a'; 40];
        assert!(!matches(
            b"a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b",
            &s,
            false
        ));
        let long = vec![b'a'; 50_000];
        assert!(!matches(&b"*?".repeat(50_000), &long, false));
        assert!(matches(
            b"*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a",
            &s,
            false
        ));
        assert!(!matches(b"*a*c", b"abab", false));
        assert!(matches(b"*a*b", b"abab", false));
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn patterns() {
        assert!(matches(b"*", b"anything", false));
        assert!(matches(b"h?llo", b"hello", false));
        assert!(matches(b"h*llo", b"heeeello", false));
        assert!(matches(b"h[ae]llo", b"hallo", false));
        assert!(!matches(b"h[ae]llo", b"hillo", false));
        assert!(matches(b"h[^e]llo", b"hallo", false));
        assert!(!matches(b"h[^e]llo", b"hello", false));
        assert!(matches(b"h[a-b]llo", b"hbllo", false));
        assert!(matches(b"a\\*b", b"a*b", false));
        assert!(!matches(b"a\\*b", b"axb", false));
        assert!(matches(b"HELLO", b"hello", true));
        assert!(!matches(b"key:*", b"other", false));
        assert!(matches(b"", b"", false));
        assert!(!matches(b"", b"a", false));
    }
}
