//! How the binaries print an error: its message, then each cause in its chain once.
//!
//! Our error messages name their cause (`cannot read X: {source}`), so that a log line holding
//! the message alone says everything, and the errors also expose the cause as `source()`, so
//! that callers can look at it. Printing such an error as a chain (`{:#}`) said each cause
//! twice: "cannot read X: No such file or directory (os error 2): No such file or directory
//! (os error 2)". [`chain`] leaves out a cause that the error above it already says after a
//! ": ", at the end of its message or inside it (`registry entry X: {source}; remove it ...`).

use std::error::Error;

/// `error`'s message followed by each cause of its chain that the error above it does not
/// already say, joined by ": ".
///
/// A cause is left out when the error just above it says it after a ": " (where our messages
/// put their cause) or is nothing but it (a wrapper that shows its source's message); a cause
/// whose words merely appear in a path, or further up the chain, is still printed.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut above = text.clone();
    let mut cause = error.source();
    while let Some(current) = cause {
        let said = current.to_string();
        let repeated = said.is_empty() || above == said || above.contains(&format!(": {said}"));
        if !repeated {
            text.push_str(": ");
            text.push_str(&said);
        }
        above = said;
        cause = current.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message that names its cause, like most of ours.
    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct Naming {
        path: &'static str,
        source: std::io::Error,
    }

    fn missing() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")
    }

    #[test]
    fn a_cause_the_message_names_is_said_once() {
        let error = Naming { path: "a.toml", source: missing() };
        assert_eq!(
            format!("{:#}", anyhow::Error::new(Naming { path: "a.toml", source: missing() })),
            "cannot read a.toml: no such file: no such file"
        );
        assert_eq!(chain(&error), "cannot read a.toml: no such file");
    }

    /// A message that names its cause in the middle, like `registry entry X: {source}; ...`.
    #[derive(Debug, thiserror::Error)]
    #[error("entry {key}: {source}; remove it")]
    struct Middle {
        key: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn a_cause_named_inside_the_message_is_said_once() {
        let error = Middle { key: "k", source: missing() };
        assert_eq!(chain(&error), "entry k: no such file; remove it");
    }

    /// The words of a cause appearing by chance in a path (or two levels up) do not hide it.
    #[test]
    fn a_cause_is_kept_when_its_words_appear_elsewhere() {
        let error = anyhow::Error::new(missing()).context("cannot open /srv/no such file");
        assert_eq!(chain(&*error), "cannot open /srv/no such file: no such file");
        let deep = anyhow::Error::new(Naming { path: "x", source: missing() })
            .context("cannot read x: no such file")
            .context("loading");
        assert_eq!(chain(&*deep), "loading: cannot read x: no such file");
    }

    #[test]
    fn a_cause_the_message_does_not_name_is_added() {
        let error = anyhow::Error::new(missing()).context("loading the prices");
        assert_eq!(chain(&*error), "loading the prices: no such file");
        let nested =
            anyhow::Error::new(Naming { path: "b.csv", source: missing() }).context("pt simulate");
        assert_eq!(chain(&*nested), "pt simulate: cannot read b.csv: no such file");
    }
}
