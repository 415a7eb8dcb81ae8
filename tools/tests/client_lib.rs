//! The client's pure parts: the password hash, the session file, and rendering of payloads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use engine::{AccountId, Cash, Email, IntervalId, OrderId, Price, Qty, Side, Symbol, Tick};
use engine::{Timestamp, Username, WorkerId};
use net::{
    Bar, FillReport, HistoryEntry, Portfolio, PortfolioHolding, PriceSeries, SessionId, UserInfo,
    WorkerInfo,
};
use pt_tools::client::password::{
    PASSWORD_HASH_CONTEXT, check_new_password, hash_password, read_password_line,
};
use pt_tools::client::render;
use pt_tools::client::session::{self, SESSION_IDLE_SECS, SavedSession};
use serde_json::Value;

fn user(name: &str) -> Username {
    Username::new(name).unwrap()
}

fn sym(s: &str) -> Symbol {
    Symbol::new(s).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// 2013-03-01T00:00:00Z and 2013-03-01T14:30:05Z in microseconds.
const MARCH_1: Timestamp = Timestamp(1_362_096_000_000_000);
const MARCH_1_AFTERNOON: Timestamp = Timestamp(1_362_096_000_000_000 + 52_205_000_000);

#[test]
fn password_hash_is_the_documented_blake3_derivation() {
    let hashed = hash_password(&user("alice"), "correct horse").unwrap();
    // docs/CLIENT.md: BLAKE3 derive_key("papertrader client password v1",
    // username || 0x00 || password), 32 bytes.
    assert_eq!(PASSWORD_HASH_CONTEXT, "papertrader client password v1");
    let expected = blake3::derive_key(PASSWORD_HASH_CONTEXT, b"alice\x00correct horse");
    assert_eq!(hashed.as_bytes(), expected.as_slice());
    // Pinned: a change here would lock every existing account out.
    assert_eq!(
        hex(hashed.as_bytes()),
        "7d6e7b29d06ee6083b7bc6b5294e966626f43e7f24da945617f7a676604bc038",
        "the client password hash changed"
    );
}

#[test]
fn password_hash_depends_on_user_and_password_and_their_boundary() {
    let a = hash_password(&user("alice"), "secret-password").unwrap();
    let b = hash_password(&user("bob"), "secret-password").unwrap();
    let c = hash_password(&user("alice"), "secret-passworD").unwrap();
    // "ab" + "c" and "a" + "bc" must differ: the 0x00 separator.
    let d = hash_password(&user("ab"), "cdefghij").unwrap();
    let e = hash_password(&user("a"), "bcdefghij").unwrap();
    assert_ne!(a, b);
    assert_ne!(a, c);
    assert_ne!(d, e);
    assert_eq!(a, hash_password(&user("alice"), "secret-password").unwrap());
    assert_eq!(a.as_bytes().len(), 32);
}

#[test]
fn password_lines_from_stdin() {
    let read = |bytes: &[u8]| read_password_line(&mut &bytes[..]);
    assert_eq!(read(b"hunter2hunter2\n").unwrap(), "hunter2hunter2");
    assert_eq!(read(b"with space \r\nnext line").unwrap(), "with space ");
    assert_eq!(read(b"no newline").unwrap(), "no newline");
    assert_eq!(read("pässwörd\n".as_bytes()).unwrap(), "pässwörd");
    for bad in [&b""[..], b"\n", b"\xff\xfe\n"] {
        let err = read(bad).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
    }
    let long = vec![b'x'; 1025];
    assert_eq!(read(&long).unwrap_err().exit_code(), 2);
    let at_limit = vec![b'x'; 1024];
    assert_eq!(read(&at_limit).unwrap().len(), 1024);
    assert!(check_new_password("1234567").is_err());
    assert!(check_new_password("12345678").is_ok());
}

fn saved(remember: bool, last_used: i64) -> SavedSession {
    let mut id = [0u8; 32];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::try_from(i * 7).unwrap();
    }
    SavedSession {
        username: user("alice"),
        session: SessionId(id),
        remember,
        last_used,
        worker: None,
    }
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn session_file_round_trips_with_private_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config").join("papertrader").join("session");
    assert_eq!(SavedSession::load(&path).unwrap(), None);
    let first = saved(false, 1_700_000_000);
    first.save(&path).unwrap();
    assert_eq!(SavedSession::load(&path).unwrap(), Some(first.clone()));
    #[cfg(unix)]
    {
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }
    // Replacing keeps the mode, even over a file someone made readable.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let second = saved(true, 1_800_000_000);
    second.save(&path).unwrap();
    assert_eq!(SavedSession::load(&path).unwrap(), Some(second));
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(names.len(), 1);

    assert!(SavedSession::remove(&path).unwrap());
    assert!(!SavedSession::remove(&path).unwrap());
    assert_eq!(SavedSession::load(&path).unwrap(), None);
}

#[test]
fn session_file_text_and_garbage() {
    let s = saved(false, 42);
    let text = s.to_text();
    assert!(text.contains("username=alice\n"), "{text}");
    assert!(text.contains(&format!("session={}\n", hex(s.session.as_bytes()))), "{text}");
    assert!(text.contains("remember=false\nlast_used=42\n"), "{text}");
    assert_eq!(SavedSession::from_text(&text), Some(s.clone()));
    // Hand-written files without the optional keys count as remembered.
    let minimal = format!("username=alice\nsession={}\n", hex(s.session.as_bytes()));
    let parsed = SavedSession::from_text(&minimal).unwrap();
    assert!(parsed.remember);
    for bad in [
        "",
        "username=alice\n",
        "session=00\nusername=alice\n",
        &text.replace("username=alice", "username=al ice"),
        &text.replace("remember=false", "remember=maybe"),
        &format!("{text}colour=blue\n"),
        "this is not a session file",
    ] {
        assert_eq!(SavedSession::from_text(bad), None, "{bad:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("session");
    std::fs::write(&path, "garbage").unwrap();
    let err = SavedSession::load(&path).unwrap_err();
    assert!(err.to_string().contains("not a session file"), "{err}");
    std::fs::write(&path, vec![b'#'; 5000]).unwrap();
    assert!(SavedSession::load(&path).is_err());
    // Binary garbage gets the same advice.
    std::fs::write(&path, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    let err = SavedSession::load(&path).unwrap_err();
    assert!(err.to_string().contains("remove it and run `pt login USER`"), "{err}");
}

#[test]
fn sessions_saved_without_remember_end_after_the_idle_limit() {
    let now = 2_000_000_000;
    assert!(!saved(false, now - SESSION_IDLE_SECS).idle_expired(now));
    assert!(saved(false, now - SESSION_IDLE_SECS - 1).idle_expired(now));
    assert!(!saved(true, 0).idle_expired(now));
}

#[test]
fn session_file_default_path() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    };
    let path = |vars| session::default_path(env(vars)).map(|p| p.display().to_string());
    assert_eq!(path(&[("HOME", "/home/a")]).unwrap(), "/home/a/.config/papertrader/session");
    assert_eq!(
        path(&[("HOME", "/home/a"), ("XDG_CONFIG_HOME", "/cfg")]).unwrap(),
        "/cfg/papertrader/session"
    );
    // A relative XDG_CONFIG_HOME is ignored, as the XDG spec says.
    assert_eq!(
        path(&[("HOME", "/home/a"), ("XDG_CONFIG_HOME", "cfg")]).unwrap(),
        "/home/a/.config/papertrader/session"
    );
    assert_eq!(path(&[("HOME", "/home/a"), ("PT_SESSION_FILE", "/tmp/s")]).unwrap(), "/tmp/s");
    assert_eq!(path(&[]), None);
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn price(s: &str) -> Price {
    Price::parse(s).unwrap()
}

fn cash(s: &str) -> Cash {
    Cash::parse(s).unwrap()
}

fn qty(s: &str) -> Qty {
    Qty::parse(s).unwrap()
}

fn portfolio() -> Portfolio {
    Portfolio {
        cash: cash("98837.5"),
        holdings: vec![
            PortfolioHolding {
                symbol: sym("AAPL"),
                qty: qty("10"),
                cost_basis: cash("1162.5"),
                last_price: Some(price("120.01")),
            },
            PortfolioHolding {
                symbol: sym("IBM"),
                qty: qty("0.5"),
                cost_basis: cash("60"),
                last_price: Some(price("100.03")),
            },
        ],
    }
}

/// Exact values, decimal points lined up in each column (numbers padded after, never given
/// zeros they do not have).
#[test]
fn portfolio_table_values_holdings_exactly() {
    let text = render::portfolio(&user("alice"), &portfolio(), false);
    let expected = "\
Portfolio of alice
Cash: 98837.50

symbol   qty  cost basis  last price     value     gain
AAPL    10       1162.50      120.01  1200.10   +37.60
IBM      0.5       60.00      100.03    50.015   -9.985

Total: 100087.615 (holdings valued at their last price)
";
    assert_eq!(text, expected);
}

#[test]
fn portfolio_json_has_decimal_strings_and_no_floats() {
    let v = json(&render::portfolio(&user("alice"), &portfolio(), true));
    assert_eq!(v["username"], "alice");
    assert_eq!(v["cash"], "98837.50");
    assert_eq!(v["total"], "100087.615");
    assert_eq!(v["holdings"][1]["symbol"], "IBM");
    assert_eq!(v["holdings"][1]["qty"], "0.5");
    // 0.5 * 100.03, exact: amounts have eight decimals.
    assert_eq!(v["holdings"][1]["value"], "50.015");
    assert_eq!(v["holdings"][0]["last_price"], "120.01");

    // A holding without a price: no value, no total.
    let mut p = portfolio();
    p.holdings[0].last_price = None;
    let v = json(&render::portfolio(&user("alice"), &p, true));
    assert_eq!(v["holdings"][0]["value"], Value::Null);
    assert_eq!(v["total"], Value::Null);
    let text = render::portfolio(&user("alice"), &p, false);
    assert!(text.contains("Total: unknown (a holding has no price)"), "{text}");
    // Every holding priced, but worth more than 64 bits of 10^-8 units: said so, not "no
    // price", and never a smaller number.
    let mut p = portfolio();
    p.holdings[0].qty = engine::Qty::from_units(1_000_000_000).unwrap();
    p.holdings[0].last_price = Some(engine::Price::from_units(1_000_000).unwrap());
    let text = render::portfolio(&user("alice"), &p, false);
    assert!(text.contains("too large") && text.contains("Total: too large to add up"), "{text}");
    assert!(!text.contains("no price"), "{text}");
    let empty = Portfolio { cash: cash("5"), holdings: vec![] };
    assert!(render::portfolio(&user("bob"), &empty, false).contains("No holdings."));
}

fn fill_report(side: Side) -> FillReport {
    FillReport {
        order: OrderId(7),
        symbol: sym("AAPL"),
        side,
        qty: qty("10"),
        price: price("116.25"),
        amount: cash("1162.5"),
        interval: IntervalId(11),
        settled_at: MARCH_1_AFTERNOON,
        cash_after: cash("98837.5"),
    }
}

#[test]
fn fills() {
    assert_eq!(
        render::fill(&fill_report(Side::Buy), false, false),
        "Bought 10 AAPL at 116.25 (paid 1162.50).\n\
         Order 7 settled in interval 11 at 2013-03-01 14:30:05. Cash after this fill: 98837.50.\n"
    );
    assert!(
        render::fill(&fill_report(Side::Sell), false, false)
            .starts_with("Sold 10 AAPL at 116.25 (received")
    );
    let v = json(&render::fill(&fill_report(Side::Sell), false, true));
    assert_eq!(v["side"], "sell");
    assert_eq!(v["order"], 7);
    assert_eq!(v["amount"], "1162.50");
    assert_eq!(v["settled_at"], "2013-03-01T14:30:05Z");
}

#[test]
fn history_table_and_json() {
    let entries = vec![HistoryEntry {
        order: OrderId(1),
        side: Side::Buy,
        symbol: sym("AAPL"),
        qty: qty("10"),
        price: price("116.25"),
        amount: cash("1162.5"),
        interval: IntervalId(11),
        settled_at: MARCH_1_AFTERNOON,
        tick_time: MARCH_1,
    }];
    let text = render::history(&user("alice"), &entries, 0, false);
    let expected = "\
Transactions of alice, oldest first

settled              order  side  symbol  qty   price   amount  price date
2013-03-01 14:30:05      1  buy   AAPL     10  116.25  1162.50  2013-03-01
";
    assert_eq!(text, expected);
    let v = json(&render::history(&user("alice"), &entries, 0, true));
    assert_eq!(v["transactions"][0]["price"], "116.25");
    assert_eq!(v["transactions"][0]["tick_time"], "2013-03-01T00:00:00Z");
    assert_eq!(v["older_not_shown"], 0);
    assert_eq!(render::history(&user("bob"), &[], 0, false), "No transactions for bob.\n");
    // A history longer than one answer carries: the master sent the newest, and says so.
    let text = render::history(&user("alice"), &entries, 250_000, false);
    assert!(text.ends_with("\n250000 older transactions not shown (the newest are).\n"), "{text}");
    let v = json(&render::history(&user("alice"), &entries, 250_000, true));
    assert_eq!(v["older_not_shown"], 250_000);
}

#[test]
fn user_info_shows_the_email_only_when_given() {
    let mut info = UserInfo {
        username: user("alice"),
        account: AccountId(3),
        opened_at: MARCH_1,
        email: Some(Email::new("alice@example.com").unwrap()),
    };
    let text = render::user(&info, false);
    assert_eq!(
        text,
        "user     alice\naccount  3\nopened   2013-03-01\nemail    alice@example.com\n"
    );
    info.email = None;
    assert!(!render::user(&info, false).contains("email"));
    assert_eq!(json(&render::user(&info, true))["email"], Value::Null);
}

#[test]
fn workers_sorted_by_name() {
    let list = vec![
        WorkerInfo {
            id: WorkerId(0x67e5_5044_10b1_426f_9247_bb68_0e5f_e0c8),
            name: "w2".into(),
            address: "127.0.0.1:2050".into(),
        },
        WorkerInfo { id: WorkerId(1), name: "w1".into(), address: "127.0.0.1:2049".into() },
    ];
    let text = render::workers(&list, false);
    let expected = "\
name  address         id
w1    127.0.0.1:2049  00000000-0000-0000-0000-000000000001
w2    127.0.0.1:2050  67e55044-10b1-426f-9247-bb680e5fe0c8
";
    assert_eq!(text, expected);
    let v = json(&render::workers(&list, true));
    assert_eq!(v["workers"][0]["id"], "67e55044-10b1-426f-9247-bb680e5fe0c8");
    assert!(render::workers(&[], false).contains("No worker"));
}

fn bar(day: i64, close: &str) -> Bar {
    let c = price(close);
    Bar {
        open: c,
        high: c,
        low: c,
        close: c,
        volume: qty("100"),
        time: Timestamp(MARCH_1.0 + day * 86_400_000_000),
    }
}

#[test]
fn chart_scales_closes_into_eighth_blocks() {
    let bars = vec![bar(0, "10"), bar(1, "20"), bar(2, "15"), bar(3, "30")];
    let text = render::chart(&bars, 60, 2);
    let expected = "\
30 │   █
10 │▁█▄█
   └────
    2013-03-01 2013-03-04
";
    assert_eq!(text, expected);
    // More bars than columns: each column is the last close of its slice.
    let many: Vec<Bar> = (0..100).map(|d| bar(d, &format!("{}", 100 + d))).collect();
    let text = render::chart(&many, 10, 4);
    let first_row = text.lines().next().unwrap();
    assert!(first_row.starts_with("199 │"), "{text}");
    assert_eq!(text.lines().nth(4).unwrap(), "    └──────────", "{text}");
    assert!(text.lines().nth(3).unwrap().starts_with("100 │"), "the lowest of all: {text}");
    // An extreme inside a slice is still the label (the highest and lowest close of all bars).
    let mut spike = many.clone();
    spike[55] = bar(55, "500");
    let text = render::chart(&spike, 10, 4);
    assert!(text.starts_with("500 │"), "{text}");
    // Flat prices draw a middle line; no bars draw nothing.
    let flat = render::chart(&[bar(0, "5"), bar(1, "5")], 10, 2);
    assert!(flat.starts_with("5 │\n5 │██\n"), "{flat}");
    assert_eq!(render::chart(&[], 10, 2), "");
}

#[test]
fn series_and_tick_rendering() {
    let series = PriceSeries {
        symbol: sym("AAPL"),
        bars: (0..30).map(|d| bar(d, &format!("{}.5", 100 + d))).collect(),
    };
    let text = render::series(&series, "month from 2013-03-01", 2, false);
    assert!(text.starts_with("AAPL month from 2013-03-01: 30 bars, 2013-03-01 to 2013-03-30\n"));
    assert!(text.contains("Last 2 of 30 bars"), "{text}");
    assert!(text.contains("open 100.5  close 129.5  change +29  high"), "{text}");
    assert!(text.ends_with("2013-03-30  129.5  129.5  129.5  129.5     100\n"), "{text}");
    let down = PriceSeries { symbol: sym("AAPL"), bars: vec![bar(0, "10.25"), bar(1, "9.5")] };
    let down = render::series(&down, "all time", 2, false);
    assert!(down.contains("open 10.25  close 9.5  change -0.75  high"), "{down}");
    let v = json(&render::series(&series, "all time", 2, true));
    assert_eq!(v["bars"].as_array().unwrap().len(), 30);
    assert_eq!(v["bars"][0]["close"], "100.5");
    let empty = PriceSeries { symbol: sym("AAPL"), bars: vec![] };
    assert_eq!(render::series(&empty, "all time", 20, false), "No prices for AAPL (all time).\n");

    let tick = Tick {
        symbol: sym("IBM"),
        open: price("1"),
        high: price("2.5"),
        low: price("0.75"),
        close: price("2"),
        volume: qty("1000"),
        time: MARCH_1,
    };
    assert_eq!(
        render::tick(&tick, false),
        "symbol  time        open  high   low  close  volume\n\
         IBM     2013-03-01     1   2.5  0.75      2    1000\n"
    );
    assert_eq!(json(&render::tick(&tick, true))["high"], "2.5");
}

/// After `master_unavailable` (the outcome may be unknown) only requests that can be sent
/// twice are sent again: not a registration, a login or a logout.
#[test]
fn only_requests_that_can_be_sent_twice_are_repeated() {
    use pt_tools::client::safe_to_repeat;
    let session = net::SessionId([1; 32]);
    let username = engine::Username::new("alice").unwrap();
    let password = net::HashedPassword::new(vec![2; 32]).unwrap();
    let symbol = sym("AAPL");
    let qty = engine::Qty::from_units(1).unwrap();
    let once = [
        net::Request::Register {
            username: username.clone(),
            email: engine::Email::new("alice@example.com").unwrap(),
            password: password.clone(),
        },
        net::Request::Login { username: username.clone(), password, expirable: true },
        net::Request::Logout { session },
    ];
    for request in &once {
        assert!(!safe_to_repeat(request), "{request:?}");
    }
    let twice = [
        net::Request::LoginSession { session },
        net::Request::Purchase { session, symbol, qty, client_order_id: 7 },
        net::Request::Sell { session, symbol, qty, client_order_id: 8 },
        net::Request::SwitchState { session, state: net::ConnState::DataTransfer },
        net::Request::GetWorkers,
        net::Request::GetUserPortfolio { session, username },
    ];
    for request in &twice {
        assert!(safe_to_repeat(request), "{request:?}");
    }
}
