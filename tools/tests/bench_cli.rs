//! `pt bench` end to end with tiny workloads (`--quick`): the JSON lines have the issue's shape
//! and figure names. The numbers are not checked (benches report; they never fail), and
//! `--write-doc` replaces only the marked section of a file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn pt_bench(args: &[&str]) -> (String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_pt")).arg("bench").args(args).output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "pt bench {args:?} failed: {stderr}");
    (stdout, stderr)
}

/// Every line is one object with exactly `figure`, `value`, `unit`, `baseline`, `ratio`.
fn figures(stdout: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    stdout
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let object = value.as_object().unwrap().clone();
            let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["baseline", "figure", "ratio", "unit", "value"], "{line}");
            assert!(object["figure"].is_string() && object["unit"].is_string(), "{line}");
            for number in ["value", "baseline", "ratio"] {
                assert!(object[number].is_f64(), "{number} in {line}");
            }
            object
        })
        .collect()
}

#[test]
fn engine_quick_json_has_the_issue_shape() {
    let dir = tempfile::tempdir().unwrap();
    let (stdout, _) =
        pt_bench(&["engine", "--json", "--quick", "--dir", dir.path().to_str().unwrap()]);
    let figures = figures(&stdout);
    assert_eq!(figures.len(), 1, "{stdout}");
    assert_eq!(figures[0]["figure"], "engine.settle");
    assert_eq!(figures[0]["unit"], "orders/s");
}

#[test]
fn journal_and_peer_quick_json_and_doc_section() {
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("PERFORMANCE.md");
    std::fs::write(&doc, "# Performance\n\nkept above\n").unwrap();
    let scratch = dir.path().to_str().unwrap();
    let doc_arg = doc.to_str().unwrap();
    let (stdout, _) =
        pt_bench(&["journal", "--json", "--quick", "--dir", scratch, "--write-doc", doc_arg]);
    let names: Vec<String> =
        figures(&stdout).iter().map(|f| f["figure"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        names,
        [
            "journal.append.b1",
            "journal.append.b100",
            "journal.append.b1000",
            "journal.append.b10000"
        ]
    );
    let (stdout, _) = pt_bench(&["peer", "--json", "--quick", "--dir", scratch]);
    assert_eq!(figures(&stdout)[0]["figure"], "peer.sqlite");

    // The section is appended once, then replaced in place.
    let (_, _) = pt_bench(&["replay", "--quick", "--dir", scratch, "--write-doc", doc_arg]);
    let text = std::fs::read_to_string(&doc).unwrap();
    assert!(text.starts_with("# Performance\n\nkept above\n"), "{text}");
    assert_eq!(text.matches("<!-- BEGIN pt bench figures").count(), 1, "{text}");
    assert!(text.contains("`replay.audit`") && !text.contains("journal.append.b1`"), "{text}");
}
