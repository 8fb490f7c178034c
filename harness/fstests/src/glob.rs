//! Shell-style globs over test ids ("generic/00?", "generic/1*", "*/001", "generic/[0-2]1?"),
//! matched the way `check` expands them: `*` and `?` never cross a `/`.

/// True if `pattern` uses any glob syntax.
pub(crate) fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// Does the glob `pattern` match all of `text`?
pub(crate) fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    match_from(&p, &t)
}

fn match_from(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') => {
            // Try every split that stays within one path component.
            let rest = &p[1..];
            for skip in 0..=t.len() {
                if match_from(rest, &t[skip..]) {
                    return true;
                }
                if skip < t.len() && t[skip] == '/' {
                    break;
                }
            }
            false
        }
        Some('?') => !t.is_empty() && t[0] != '/' && match_from(&p[1..], &t[1..]),
        Some('[') => match (class(&p[1..]), t.first()) {
            (Some((matched_by, consumed)), Some(&c)) => {
                c != '/' && matched_by(c) && match_from(&p[1 + consumed..], &t[1..])
            }
            // An unclosed '[' is a literal, as in the shell.
            (None, Some('[')) => match_from(&p[1..], &t[1..]),
            _ => false,
        },
        Some(&c) => t.first() == Some(&c) && match_from(&p[1..], &t[1..]),
    }
}

type ClassMatcher = Box<dyn Fn(char) -> bool>;

/// Parses a bracket class after its '['; returns the matcher and how many chars it used
/// (including the closing ']'), or None when the class is not closed.
fn class(p: &[char]) -> Option<(ClassMatcher, usize)> {
    let mut i = 0;
    let negate = matches!(p.first(), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut ranges: Vec<(char, char)> = Vec::new();
    let mut first = true;
    while i < p.len() {
        let c = p[i];
        if c == ']' && !first {
            let matcher =
                move |x: char| ranges.iter().any(|&(lo, hi)| lo <= x && x <= hi) != negate;
            return Some((Box::new(matcher), i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            ranges.push((c, p[i + 2]));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_mark_and_star_stay_in_one_component() {
        assert!(matches("generic/00?", "generic/001"));
        assert!(!matches("generic/00?", "generic/0010"));
        assert!(matches("generic/1*", "generic/123"));
        assert!(matches("generic/1*", "generic/1"));
        assert!(!matches("generic/1*", "generic/213"));
        assert!(matches("*/001", "xfs/001"));
        assert!(!matches("*", "generic/001"));
        assert!(!matches("generic?001", "generic/001"));
    }

    #[test]
    fn classes_ranges_and_negation() {
        assert!(matches("generic/[0-2]1?", "generic/215"));
        assert!(!matches("generic/[0-2]1?", "generic/315"));
        assert!(matches("generic/[!0]*", "generic/100"));
        assert!(!matches("generic/[!0]*", "generic/010"));
        assert!(matches("generic/[]x]", "generic/]"));
        // Unclosed bracket is literal.
        assert!(matches("a[b", "a[b"));
        assert!(!matches("a[b", "ab"));
    }

    #[test]
    fn literal_and_detection() {
        assert!(matches("generic/001", "generic/001"));
        assert!(!matches("generic/001", "generic/0011"));
        assert!(is_glob("generic/0*"));
        assert!(!is_glob("generic/001"));
    }
}
