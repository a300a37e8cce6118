//! "Did you mean ...?"

/// Words people write for a key that Gantry spells differently.
const ALIASES: &[(&str, &str)] = &[
    ("script", "commands"),
    ("run", "commands"),
    ("steps", "commands"),
    ("environment", "env"),
    ("variables", "env"),
    ("depends_on", "needs"),
    ("dependencies", "needs"),
    ("if", "when"),
    ("rules", "when"),
    ("only", "when"),
    ("jobs", "stages"),
    ("trigger", "on"),
    ("triggers", "on"),
    ("pull_policy", "pull"),
    ("image_pull_policy", "pull"),
    ("cpu", "cpus"),
    ("mem", "memory"),
    ("continue_on_error", "allow_failure"),
    ("continue-on-error", "allow_failure"),
    ("allow-failure", "allow_failure"),
    ("branches", "branch"),
    ("events", "event"),
    ("tags", "tag"),
    ("branch", "branches"),
    ("tag", "tags"),
    ("file", "dockerfile"),
    ("build_args", "args"),
    ("build-args", "args"),
    ("repository", "image"),
    ("repo", "image"),
    ("name", "deployment"),
    ("name", "image"),
    ("context", "cluster"),
    ("kube_context", "cluster"),
    ("ns", "namespace"),
];

/// The candidate closest to `word`, if one is close enough to be a typo (or
/// a known alias of it).
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    if let Some(&(_, to)) = ALIASES
        .iter()
        .find(|(from, to)| *from == word && candidates.contains(to))
    {
        return candidates.iter().copied().find(|c| *c == to);
    }
    let lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .copied()
        .map(|candidate| {
            let distance = strsim::damerau_levenshtein(&lower, &candidate.to_ascii_lowercase());
            (distance, candidate)
        })
        // A third of the letters may differ; two-letter words are too short
        // to guess from.
        .filter(|(distance, candidate)| {
            let len = candidate.len().max(word.len());
            len >= 3 && *distance <= (len / 3).max(1)
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}
