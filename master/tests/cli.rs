//! The `pt-master` binary's configuration handling, without running a server for long: what
//! each command validates, and errors that name the offending key.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

fn pt_master(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pt-master"));
    command.args(args).env_remove("PT_MASTER_CONFIG").env_remove("PT_PRICES_API_KEY");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// An HTTP price source without its API key is a server setting: `pt-master worker list`
/// reads the same file for `data_dir` and `[[workers]]` and must not need the key.
#[test]
fn worker_commands_do_not_need_the_server_only_settings() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let config = write(
        dir.path(),
        "master.toml",
        "assets = [\"IBM\"]\n[prices]\nsource = \"http\"\napi_key_env = \"PT_TEST_NO_SUCH_KEY\"\n",
    );
    let data = data.display().to_string();
    let output = pt_master(&["worker", "list", "--config", &config, "--data", &data], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("FINGERPRINT"));

    // The server itself still refuses the file, naming the key.
    let output = pt_master(&["--config", &config, "--data", &data], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("prices.api_key"), "{}", stderr(&output));

    // Flags apply before the one validation: `--prices FILE` replaces the HTTP source, so its
    // missing key no longer matters, and the first error left is the bad flag's.
    let prices = write(dir.path(), "prices.csv", "");
    let args = ["--config", &config, "--data", &data, "--prices", &prices, "--queue-limit", "0"];
    let output = pt_master(&args, &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("orders_per_interval_max") && !text.contains("api_key"), "{text}");
}

/// `PT_MASTER_CONFIG=` set but empty means no configuration file, not a file named "".
#[test]
fn an_empty_config_variable_counts_as_unset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let output = pt_master(&["worker", "list", "--data", &data], &[("PT_MASTER_CONFIG", "")]);
    assert!(output.status.success(), "{}", stderr(&output));
}

/// A bad value inside `[prices]` is shown at its own line, with the key.
#[test]
fn a_bad_price_setting_is_reported_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        write(dir.path(), "master.toml", "[prices]\nsource = \"http\"\ntimeout = \"abc\"\n");
    let data = dir.path().display().to_string();
    let output = pt_master(&["--config", &config, "--data", &data], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("3 | timeout = \"abc\"") && text.contains("not a duration"), "{text}");
}

/// A SIGTERM that arrives while the master is still starting (here: as soon as it has made its
/// key, before recovery and serving) stops it cleanly, exit status 0, instead of killing it.
#[cfg(unix)]
/// Starts `pt-master` on `data` (info logs on stderr), sends it SIGTERM as soon as `ready`
/// (a file in `data`) exists, within `wait`, and returns its exit status and stderr.
fn stop_once_made(
    data: &Path,
    ready: &str,
    wait: std::time::Duration,
) -> (std::process::ExitStatus, String) {
    let data_arg = data.display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pt-master"))
        .args(["--data", &data_arg, "--listen", "127.0.0.1:0", "--interval", "1h"])
        .env_remove("PT_MASTER_CONFIG")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + wait;
    while !data.join(ready).exists() {
        assert!(std::time::Instant::now() < deadline, "the master never made {ready}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let sent = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    (status, err)
}

#[test]
fn a_signal_during_start_up_stops_the_master_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (status, err) = stop_once_made(&data, "master.key", std::time::Duration::from_secs(30));
    assert!(status.success(), "{status:?}: {err}");
    assert!(err.contains("SIGTERM: shutting down") && err.contains("master stopped"), "{err}");
    // The data directory it made (the journal holds emails and password hashes) is private.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
}

/// A data directory others may write in (made by someone else, left as it is) is warned about:
/// they could put a socket of their own in place of the admin socket.
#[test]
fn a_data_directory_others_may_write_in_is_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    // The socket is bound once the warning is out.
    let (status, err) = stop_once_made(&data, "admin.sock", std::time::Duration::from_secs(60));
    assert!(status.success(), "{status:?}: {err}");
    assert!(err.contains("the data directory is writable by other users"), "{err}");
    assert!(err.contains("mode=777") || err.contains("mode=\"777\""), "{err}");
}

/// A file the configuration names that is not there is a configuration error naming its key
/// (exit 2), found before the data directory is made.
#[test]
fn a_missing_file_is_a_configuration_error_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let config = write(
        dir.path(),
        "master.toml",
        "[[workers]]\nid = \"67e55044-10b1-426f-9247-bb680e5fe0c8\"\ncert = \"missing.pub.asc\"\nallowed_ips = [\"127.0.0.1\"]\n",
    );
    let output = pt_master(&["--config", &config, "--data", &data_arg], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("workers[0].cert"), "{}", stderr(&output));
    let output = pt_master(&["--data", &data_arg, "--prices", "nope.csv"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("`prices.file`: no file at nope.csv"), "{}", stderr(&output));
    assert!(!data.exists(), "nothing was set up");
}

/// A log file that cannot be opened (here a directory) is a configuration error too (exit 2),
/// naming the key and the path.
#[test]
fn an_unusable_log_file_is_a_configuration_error_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let data_arg = dir.path().join("data").display().to_string();
    let log_dir = dir.path().join("a-directory");
    std::fs::create_dir(&log_dir).unwrap();
    let config =
        write(dir.path(), "master.toml", &format!("[log]\nfile = \"{}\"\n", log_dir.display()));
    let output = pt_master(&["--config", &config, "--data", &data_arg], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("(log.file)") && err.contains(&log_dir.display().to_string()), "{err}");
}

/// A `[[workers]]` certificate that is there but is not a usable certificate is a
/// configuration error too (exit 2), found before the data directory is made.
#[test]
fn an_unusable_worker_certificate_is_a_configuration_error_before_any_setup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let cert = write(dir.path(), "w1.pub.asc", "not a certificate\n");
    let config = write(
        dir.path(),
        "master.toml",
        &format!(
            "[[workers]]\nid = \"67e55044-10b1-426f-9247-bb680e5fe0c8\"\ncert = {cert:?}\nallowed_ips = [\"127.0.0.1\"]\n"
        ),
    );
    let output = pt_master(&["--config", &config, "--data", &data_arg], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("bad configuration: [[workers]]"), "{}", stderr(&output));
    assert!(!data.exists(), "nothing was set up");
}

/// A price file that does not parse is a configuration error (exit 2) naming its line, found
/// before anything is set up: no data directory, no key, no journal.
#[test]
fn a_malformed_price_file_is_a_configuration_error_before_any_setup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let prices = write(
        dir.path(),
        "prices.csv",
        "time,symbol,open,high,low,close,volume
2010-01-04,AAPL,1,2,1,3,5
",
    );
    let output =
        pt_master(&["--data", &data_arg, "--prices", &prices, "--listen", "127.0.0.1:0"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("bad configuration") && text.contains("line 2"), "{text}");
    assert!(!data.exists(), "the data directory was made");
}

/// An error's cause is printed once: the messages name their cause and the binaries print the
/// chain (`master::report::chain`), which used to say it twice.
#[test]
fn an_error_says_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml").display().to_string();
    let output = pt_master(&["--config", &missing], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains(&format!("cannot read config file {missing}")), "{text}");
    assert_eq!(text.matches("No such file or directory").count(), 1, "{text}");
}

/// A second signal while the clean stop is under way (here: the final price fetch, from a
/// provider that never answers, which the stop gives a few seconds) ends the master at once,
/// with status 143 for SIGTERM; the first alone would have waited and exited 0.
#[cfg(unix)]
#[test]
fn a_second_signal_stops_the_master_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // A provider that takes connections and never answers.
    let provider = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let provider_addr = provider.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in provider.incoming() {
            held.push(stream);
        }
    });
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let data = dir.path().join("data");
    let config = write(
        dir.path(),
        "master.toml",
        &format!(
            "listen = \"{listen}\"\ndata_dir = \"{}\"\nupdate_interval = \"1h\"\nassets = [\"IBM\"]\n\
             [prices]\nsource = \"http\"\nbase_url = \"http://{provider_addr}\"\n\
             api_key_env = \"PT_TEST_KEY\"\n",
            data.display()
        ),
    );
    /// The master, killed if the test fails before it exits.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_pt-master"))
            .args(["--config", &config])
            .env_remove("PT_MASTER_CONFIG")
            .env("PT_TEST_KEY", "k")
            // The test reads the stop's start from the log.
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Serving: its port takes connections.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(listen).is_err() {
        assert!(std::time::Instant::now() < deadline, "the master never served");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let pid = child.0.id().to_string();
    let term = || {
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.unwrap().success());
    };
    // Its log lines, as they come.
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stderr = child.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = lines_tx.send(line);
        }
        all
    });
    term();
    // The first is taken (the stop then waits for the silent provider), then the second.
    loop {
        let line = lines.recv_timeout(std::time::Duration::from_secs(60)).unwrap();
        if line.contains("SIGTERM: shutting down") {
            break;
        }
    }
    // Stopping, it soon takes no connection (refused, not left in the backlog) while it waits
    // for the provider (5 s).
    let refusing = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(listen).is_ok() {
        assert!(
            std::time::Instant::now() < refusing,
            "the stopping master still takes connections"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    term();
    let status = child.0.wait().unwrap();
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(143), "{status:?}: {err}");
    assert!(err.contains("SIGTERM again: stopping at once"), "{err}");
}
