//! "Did you mean ...?" for misspelt keys and connector types.

/// The candidate closest to `word`: within an edit distance of 2 (a swap of two
/// neighbouring letters counts as one edit), or one being a prefix of the other; `None`
/// when nothing is close. Case is ignored.
pub(crate) fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_lowercase();
    let word_len = word.chars().count();
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        let lower = candidate.to_lowercase();
        let distance = edit_distance(&word, &lower);
        let close = distance <= 2 && distance < word_len;
        let prefix = word_len >= 3 && (lower.starts_with(&word) || word.starts_with(&lower));
        // A prefix match ranks after any close spelling.
        let score = if close {
            distance
        } else if prefix {
            3
        } else {
            continue;
        };
        if best.is_none_or(|(best_score, _)| score < best_score) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of
/// adjacent characters each cost one.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j]: distance between a[..i] and b[..j].
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// `` `a`, `b`, `c` `` for hints.
pub(crate) fn quoted_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items
        .into_iter()
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("rat", "rate"), 1);
        assert_eq!(edit_distance("fiel-sink", "file-sink"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("abc", ""), 3);
    }

    #[test]
    fn suggests_close_names_only() {
        let keys = ["seed", "rate", "count", "tables", "password"];
        assert_eq!(closest("rat", keys), Some("rate"));
        assert_eq!(closest("Rate", keys), Some("rate"));
        assert_eq!(closest("tabels", keys), Some("tables"));
        assert_eq!(closest("pass", keys), Some("password"));
        assert_eq!(closest("colour", keys), None);
        assert_eq!(closest("xy", keys), None);
        assert_eq!(closest("fiel-sink", ["datagen", "file-sink"]), Some("file-sink"));
        assert_eq!(closest("roll", ["roll_size", "roll_interval"]), Some("roll_size"));
    }
}
