//! "Did you mean ...?" hints for names a user typed (config keys, target
//! names, template names). Pure string work, no I/O.

/// The candidate closest to `input` by edit distance, if it is close enough
/// to be a plausible typo.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (input.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::levenshtein(&input.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let names = ["team-discord", "support-slack", "crm", "console"];
        assert_eq!(did_you_mean("team-discrod", names), Some("team-discord"));
        assert_eq!(did_you_mean("consol", names), Some("console"));
        assert_eq!(did_you_mean("zzzzzzzz", names), None);
    }
}
