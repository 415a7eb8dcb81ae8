//! How the binaries print an error: its message, then each cause in its chain once.
//!
//! Our error messages name their cause (`cannot read X: {source}`), so that a log line holding
//! the message alone says everything, and the errors also expose the cause as `source()`, so
//! that callers can look at it. Printing such an error as a chain (`{:#}`) said each cause
//! twice: "cannot read X: No such file or directory (os error 2): No such file or directory
//! (os error 2)". [`chain`] adds a cause only when the text so far does not already say it.

use std::error::Error;

/// `error`'s message followed by each cause of its chain that the text so far does not already
/// contain, joined by ": ".
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let said = current.to_string();
        if !said.is_empty() && !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
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

    #[test]
    fn a_cause_the_message_does_not_name_is_added() {
        let error = anyhow::Error::new(missing()).context("loading the prices");
        assert_eq!(chain(&*error), "loading the prices: no such file");
        let nested =
            anyhow::Error::new(Naming { path: "b.csv", source: missing() }).context("pt simulate");
        assert_eq!(chain(&*nested), "pt simulate: cannot read b.csv: no such file");
    }
}
