//! "Did you mean": the known name closest to a mistyped one, for errors that list choices.

/// Edits (insert, delete, substitute, swap of neighbours) between `a` and `b`, counted up
/// to `limit + 1`.
fn distance(a: &str, b: &str, limit: usize) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > limit {
        return limit + 1;
    }
    // Rows i-2, i-1 and i of the Damerau (optimal string alignment) table.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut row = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (prev[j] + 1).min(row[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(before[j - 2] + 1);
            }
        }
        before = std::mem::replace(&mut prev, row);
    }
    prev[b.len()].min(limit + 1)
}

/// The known name nearest `given` (case aside), if it is near enough to be a typo: at
/// most a third of its length in edits (one at least), or `given` is its prefix.
pub fn closest<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = given.to_lowercase();
    let limit = (given.chars().count() / 3).max(1);
    let mut best: Option<(usize, &str)> = None;
    for name in known {
        let d = if name.to_lowercase().starts_with(&lower) && lower.len() >= 3 {
            0
        } else {
            distance(&lower, &name.to_lowercase(), limit)
        };
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, name));
        }
    }
    best.map(|(_, name)| name).filter(|name| *name != given)
}

/// `"; did you mean `X`?"` for an error message, or nothing.
pub fn did_you_mean<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    closest(given, known)
        .map(|name| format!("; did you mean `{name}`?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_name() {
        let tools = ["info", "list_programs", "list_maps", "trace", "trace_start"];
        assert_eq!(closest("list_program", tools), Some("list_programs"));
        assert_eq!(closest("lsit_maps", tools), Some("list_maps"));
        assert_eq!(closest("trcae", tools), Some("trace"));
        assert_eq!(closest("INFO", tools), Some("info"));
        assert_eq!(closest("trace_st", tools), Some("trace_start"));
        assert_eq!(closest("something", tools), None);
        assert_eq!(
            closest("info", tools),
            None,
            "an exact name needs no suggestion"
        );
        assert_eq!(
            did_you_mean("exce", ["exec", "exit"]),
            "; did you mean `exec`?"
        );
        assert_eq!(did_you_mean("zzz", ["exec"]), "");
    }

    #[test]
    fn distances() {
        assert_eq!(distance("kitten", "sitting", 5), 3);
        assert_eq!(distance("ab", "ba", 5), 1);
        assert_eq!(
            distance("a", "abcdefgh", 2),
            3,
            "counted only up to the limit"
        );
    }
}
