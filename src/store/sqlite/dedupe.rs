//! Which accepts of a batch are Crisp's resends, from what the batch's
//! `seen` insert answered (pure; the writer runs the insert).

use std::collections::HashSet;

/// Per accept (its dedupe key, in the batch's order), whether it is a
/// duplicate, given the keys the batch's `seen` insert answered as new or
/// taken over (`fresh`): no key, never; a fresh key, only its first
/// occurrence is new; any other key was seen within the window.
pub(super) fn duplicates(keys: &[Option<&str>], fresh: &HashSet<String>) -> Vec<bool> {
    let mut claimed: HashSet<&str> = HashSet::with_capacity(fresh.len());
    keys.iter()
        .map(|key| match key {
            None => false,
            Some(k) => !(fresh.contains(*k) && claimed.insert(k)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (dedupe keys in the batch's order, keys the insert answered, duplicates)
    type Case = (
        &'static [Option<&'static str>],
        &'static [&'static str],
        &'static [bool],
    );

    /// Dedupe keys of a batch, the keys the insert answered → duplicates.
    #[test]
    fn duplicates_table() {
        let cases: [Case; 6] = [
            (&[], &[], &[]),
            (&[None, None], &[], &[false, false]),
            (&[Some("a")], &["a"], &[false]),
            (&[Some("a")], &[], &[true]),
            (
                &[Some("a"), None, Some("a"), Some("b")],
                &["a", "b"],
                &[false, false, true, false],
            ),
            (
                &[Some("a"), Some("b"), Some("a")],
                &["b"],
                &[true, false, true],
            ),
        ];
        for (keys, fresh, want) in cases {
            let fresh: HashSet<String> = fresh.iter().map(|k| (*k).to_owned()).collect();
            assert_eq!(duplicates(keys, &fresh), want, "{keys:?} {fresh:?}");
        }
    }
}
