//! `pt bench` end to end with tiny workloads (`--quick`): the JSON lines have the issue's shape
//! and figure names. The numbers are not checked (benches report; they never fail), and
//! `--write-doc` is refused before any bench runs when it could not write every bench's
//! figures (its section replacement is tested in `bench::doc`).

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
fn journal_and_peer_quick_json() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().to_str().unwrap();
    let (stdout, _) = pt_bench(&["journal", "--json", "--quick", "--dir", scratch]);
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
}

/// `--write-doc` writes the figures of every bench: with one bench it is a usage error (exit
/// 2), found before anything runs, and the file is left as it was; so is a file that cannot
/// be written.
#[test]
fn write_doc_wants_every_bench_and_a_writable_file() {
    let dir = tempfile::tempdir().unwrap();
    let doc = dir.path().join("PERFORMANCE.md");
    std::fs::write(&doc, "# Performance\n\nkept\n").unwrap();
    let scratch = dir.path().to_str().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pt")).arg("bench").args(args).output().unwrap()
    };
    let one = run(&["journal", "--quick", "--dir", scratch, "--write-doc", doc.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&one.stderr);
    assert_eq!(one.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("use it with `pt bench all`"), "{stderr}");
    assert!(one.stdout.is_empty(), "a bench ran");
    assert_eq!(std::fs::read_to_string(&doc).unwrap(), "# Performance\n\nkept\n");

    let nowhere = dir.path().join("no-such-dir").join("PERFORMANCE.md");
    let all = run(&["all", "--quick", "--dir", scratch, "--write-doc", nowhere.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&all.stderr);
    assert_eq!(all.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no directory"), "{stderr}");
    assert!(all.stdout.is_empty(), "a bench ran");
}
