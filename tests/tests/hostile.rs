//! Hostile and broken input against a real worker and a real master on loopback: oversized
//! length fields, truncated frames, random bytes, unknown instructions, data instructions in
//! command state, valid frames with arguments of the wrong type, 10,000 pipelined requests, a
//! connection sending one byte per second (a few bytes; `PT_SOAK=1`: a whole request), and 1,000
//! idle connections to each. Between and during all of it a well-behaved client (logged in
//! through the worker, and asking the master for the worker list) keeps getting answers; the
//! process's resident memory grows by less than 512 MiB; no thread panics (a panic hook counts
//! them, including in tasks); both servers then stop cleanly. Clients elsewhere taking every
//! place the master keeps for unidentified connections do not keep a worker from linking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Client, Pair, Rng, failure_reason, register_and_login, user};
use net::{DataPayload, FrameReader, FramedStream, Reason, Request, Response, SessionId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
}

/// A 20-byte header (see `net::frame`).
fn header(kind: u8, instruction: u16, args: u16, data_len: u32) -> Vec<u8> {
    let mut h = vec![1, kind];
    h.extend_from_slice(&instruction.to_be_bytes());
    h.extend_from_slice(&args.to_be_bytes());
    h.extend_from_slice(&0u16.to_be_bytes());
    h.extend_from_slice(&1u32.to_be_bytes());
    h.extend_from_slice(&1u32.to_be_bytes());
    h.extend_from_slice(&data_len.to_be_bytes());
    h
}

fn bytes_of(request: &Request) -> Vec<u8> {
    request.encode().unwrap().to_bytes().unwrap()
}

/// Sends `bytes`, half-closes, and reads whatever comes back until the server closes (or 20 s
/// pass). Returns the bytes read.
async fn hit(addr: SocketAddr, bytes: &[u8], half_close: bool) -> Vec<u8> {
    exchange(addr, bytes, half_close).await.0
}

/// [`hit`], also telling whether the server closed the connection before the 20 s bound (a
/// reset, the server closing with unread input, is also a close).
async fn exchange(addr: SocketAddr, bytes: &[u8], half_close: bool) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    if half_close {
        let _ = stream.shutdown().await;
    }
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out)).await;
    (out, read.is_ok())
}

/// [`hit`] with a half-close, asserting that the server then closed the connection (it read
/// the end of the input and let the connection go) rather than leaving it open until the
/// 20 s bound. Returns the bytes read.
async fn hit_and_closed(addr: SocketAddr, bytes: &[u8], what: &str) -> Vec<u8> {
    let (out, closed) = exchange(addr, bytes, true).await;
    assert!(closed, "{what}: the server kept the connection open");
    out
}

/// The first answer in `bytes`, if they hold one.
async fn first_answer(bytes: &[u8]) -> Option<Response> {
    FrameReader::new(bytes).read_response().await.ok().flatten()
}

/// The well-behaved client: through the worker, its portfolio; from the master, the worker list.
struct Probe {
    client: Client,
    session: SessionId,
    master: SocketAddr,
    answers: u64,
}

impl Probe {
    async fn check(&mut self) {
        let request = Request::GetUserInfo { session: self.session, username: user("polite") };
        let switched = self
            .client
            .send(Request::SwitchState {
                session: self.session,
                state: net::ConnState::DataTransfer,
            })
            .await;
        assert!(matches!(switched, Response::StateSwitchSuccess(_)), "{switched:?}");
        let info = self.client.send(request).await;
        assert!(matches!(info, Response::Data(DataPayload::UserInfo(_))), "{info:?}");
        let back = self
            .client
            .send(Request::SwitchState { session: self.session, state: net::ConnState::Command })
            .await;
        assert!(matches!(back, Response::StateSwitchSuccess(_)), "{back:?}");
        let mut direct = Client::connect(self.master).await;
        let workers = direct.send(Request::GetWorkers).await;
        assert!(matches!(workers, Response::Data(DataPayload::WorkerList(ref w)) if !w.is_empty()));
        self.answers += 4;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_and_a_polite_client_is_served_throughout() {
    count_panics();
    let seed = common::seed();
    eprintln!("PT_SEED={seed}");
    let mut rng = Rng::new(seed);
    let root = tempfile::tempdir().unwrap();
    let pair = Pair::start(root.path(), Duration::from_millis(100), |master, worker| {
        master.limits.worker_connections_max = 4096;
        worker.clients.connections_max = 4096;
        // Every connection of this test comes from 127.0.0.1.
        worker.clients.connections_per_address_max = 4096;
    })
    .await;
    let mut client = Client::connect(pair.worker.addr).await;
    let session = register_and_login(&mut client, "polite", 3).await;
    let mut probe = Probe { client, session, master: pair.master.addr, answers: 0 };
    probe.check().await;
    let rss_before = common::rss_kib();
    let peak_before = common::peak_rss_kib();
    let targets = [("worker", pair.worker.addr), ("master", pair.master.addr)];
    let mut inputs = 0u64;

    // A slow client, one byte per second, running alongside everything below.
    let slow_target = pair.worker.addr;
    let slow = tokio::spawn(async move {
        let request = bytes_of(&Request::GetWorkers);
        let slow_bytes = if common::soak() { request.len() } else { 3 };
        let mut stream = TcpStream::connect(slow_target).await.unwrap();
        for byte in &request[..slow_bytes] {
            stream.write_all(&[*byte]).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        stream.write_all(&request[slow_bytes..]).await.unwrap();
        let mut framed = FramedStream::new(stream);
        let answer = framed.read_response().await.unwrap().unwrap();
        assert!(
            matches!(answer, Response::Data(DataPayload::WorkerList(_))),
            "the slow client: {answer:?}"
        );
        slow_bytes
    });

    for (name, addr) in targets {
        // An oversized length field: refused before buffering, with too_large.
        for len in [u32::MAX, 64 * 1024 + 1, 16 * 1024 * 1024] {
            let out = hit(addr, &header(1, 0x0001, 0, len), false).await;
            let answer = first_answer(&out).await;
            assert_eq!(
                answer.as_ref().and_then(failure_reason),
                Some(Reason::TooLarge),
                "{name}: length {len}: {answer:?}"
            );
            inputs += 1;
        }
        // A request over one full packet (no request is near that), in two packets: refused
        // with too_large once its body passes the limit, before the rest is buffered.
        let mut long = Request::GetWorkers.encode().unwrap();
        long.body = vec![0; net::limits::REQUEST_BODY_BYTES_MAX + 1];
        let packets = net::split_payload(&long, net::limits::FRAME_DATA_BYTES_MAX).unwrap();
        let bytes: Vec<u8> = packets.iter().flat_map(net::Frame::to_bytes).collect();
        let answer = first_answer(&hit(addr, &bytes, false).await).await;
        assert_eq!(
            answer.as_ref().and_then(failure_reason),
            Some(Reason::TooLarge),
            "{name}: a two-packet request: {answer:?}"
        );
        inputs += 1;
        // Truncated frames: a part of a header, a header promising more data than comes.
        let login = bytes_of(&Request::Login {
            username: user("polite"),
            password: common::password(3),
            expirable: false,
        });
        for cut in [1, 7, 19, 20, login.len() - 1] {
            let what = format!("{name}: a login cut to {cut} bytes");
            let out = hit_and_closed(addr, &login[..cut], &what).await;
            // No login can come of part of one: no answer, or a failure.
            let answer = first_answer(&out).await;
            assert!(
                answer.as_ref().is_none_or(|a| failure_reason(a).is_some()),
                "{what}: {answer:?}"
            );
            inputs += 1;
        }
        // Random bytes.
        for _ in 0..50 {
            let len = 1 + rng.index(4096);
            let _ = hit_and_closed(addr, &rng.bytes(len), &format!("{name}: random bytes")).await;
            inputs += 1;
        }
        // Random bytes after a valid header.
        for _ in 0..50 {
            let len = rng.index(512);
            let kind = rng.bytes(1)[0] % 4 + 1;
            let instruction = u16::from(rng.bytes(1)[0] % 64);
            let mut bytes = header(kind, instruction, 1, u32::try_from(len).unwrap());
            bytes.extend(rng.bytes(len));
            let what = format!("{name}: random bytes after a header");
            let _ = hit_and_closed(addr, &bytes, &what).await;
            inputs += 1;
        }
        // An unknown instruction: an error answer naming it, and the connection goes on.
        let mut unknown = header(1, 0x7777, 0, 0);
        unknown.extend(bytes_of(&Request::GetWorkers));
        let out = hit(addr, &unknown, true).await;
        let mut answers = FrameReader::new(out.as_slice());
        let first = answers.read_response().await.ok().flatten();
        assert_eq!(
            first.as_ref().and_then(failure_reason),
            Some(Reason::UnknownInstruction),
            "{name}: unknown instruction: {first:?}"
        );
        let Some(Response::Error(failure)) = &first else {
            panic!("{name}: unknown instruction answered {first:?}");
        };
        assert!(failure.message.contains("0x7777"), "{name}: {failure:?}");
        let second = answers.read_response().await.ok().flatten();
        assert!(
            matches!(second, Some(Response::Data(DataPayload::WorkerList(_)))),
            "{name}: the request after an unknown instruction: {second:?}"
        );
        inputs += 1;
        // A broken frame after a request that was answered: answered too, with its reason
        // (here a version this server does not speak), then the connection closes.
        let mut later = bytes_of(&Request::GetWorkers);
        let mut broken = bytes_of(&Request::GetWorkers);
        broken[0] = 2;
        later.extend(broken);
        let out = hit_and_closed(addr, &later, &format!("{name}: a broken second frame")).await;
        let mut answers = FrameReader::new(out.as_slice());
        let first = answers.read_response().await.unwrap().unwrap();
        assert!(matches!(first, Response::Data(DataPayload::WorkerList(_))), "{name}: {first:?}");
        let second = answers.read_response().await.unwrap();
        assert_eq!(
            second.as_ref().and_then(failure_reason),
            Some(Reason::UnsupportedVersion),
            "{name}: a broken second frame: {second:?}"
        );
        inputs += 1;
        // A control message from a client (a worker's heartbeat) as its first message: an
        // error answer naming it as unknown, not a silent close.
        let heartbeat = net::Control::Heartbeat { seq: 1 }.encode().unwrap().to_bytes().unwrap();
        let out = hit(addr, &heartbeat, true).await;
        let answer = first_answer(&out).await;
        assert_eq!(
            answer.as_ref().and_then(failure_reason),
            Some(Reason::UnknownInstruction),
            "{name}: a heartbeat from a client: {answer:?}"
        );
        inputs += 1;
        // A data-transfer instruction in command state.
        let data = bytes_of(&Request::GetUserInfo { session, username: user("polite") });
        let out = hit(addr, &data, true).await;
        let answer = first_answer(&out).await;
        // The worker refuses it in this state; the master refuses every client request but
        // the worker list (docs/PROTOCOL.md, docs/MASTER.md).
        let refused = if name == "worker" { Reason::WrongState } else { Reason::Forbidden };
        assert_eq!(
            answer.as_ref().and_then(failure_reason),
            Some(refused),
            "{name}: data instruction in command state: {answer:?}"
        );
        inputs += 1;
        // Valid frames whose arguments have the wrong type: each tag replaced by another.
        for request in [
            Request::Login {
                username: user("polite"),
                password: common::password(3),
                expirable: false,
            },
            Request::GetAssetInfo { symbol: engine::Symbol::new("IBM").unwrap() },
            Request::Purchase {
                session,
                symbol: engine::Symbol::new("IBM").unwrap(),
                qty: engine::Qty::from_units(1).unwrap(),
                client_order_id: 1,
            },
        ] {
            let original = bytes_of(&request);
            for tag in [0x00u8, 0x01, 0x03, 0x05, 0x08, 0x42] {
                if original[20] == tag {
                    continue;
                }
                let mut bytes = original.clone();
                bytes[20] = tag;
                let out = hit(addr, &bytes, true).await;
                let answer = first_answer(&out).await;
                assert_eq!(
                    answer.as_ref().and_then(failure_reason),
                    Some(Reason::Malformed),
                    "{name}: {request:?} with tag {tag}: {answer:?}"
                );
                inputs += 1;
            }
        }
        probe.check().await;

        // 10,000 pipelined requests on one connection, written while the answers are read. The
        // master answers a client 16 times, then closes the connection.
        let pipelined = 10_000;
        let answered = if name == "worker" { pipelined } else { 16 };
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        // The worker answers a data instruction in command state itself; the master answers
        // the worker list.
        let one = if name == "worker" {
            bytes_of(&Request::GetAssetInfo { symbol: engine::Symbol::new("IBM").unwrap() })
        } else {
            bytes_of(&Request::GetWorkers)
        };
        let writer = tokio::spawn(async move {
            let mut all = Vec::with_capacity(one.len() * pipelined);
            for _ in 0..pipelined {
                all.extend_from_slice(&one);
            }
            // The master closes the connection before reading them all.
            let _ = write.write_all(&all).await;
            write
        });
        let mut framed = FrameReader::new(&mut read);
        for i in 0..answered {
            let answer = tokio::time::timeout(Duration::from_secs(60), framed.read_response())
                .await
                .unwrap()
                .unwrap()
                .unwrap_or_else(|| panic!("{name}: closed after {i} pipelined answers"));
            if name == "master" {
                assert!(matches!(answer, Response::Data(DataPayload::WorkerList(_))), "{answer:?}");
            } else {
                assert_eq!(failure_reason(&answer), Some(Reason::WrongState), "{answer:?}");
            }
        }
        if answered < pipelined {
            let after = tokio::time::timeout(Duration::from_secs(60), framed.read_response()).await;
            assert!(matches!(after, Ok(Ok(None) | Err(_))), "{name}: more answers: {after:?}");
        }
        drop(writer.await.unwrap());
        inputs += u64::try_from(pipelined).unwrap();
        probe.check().await;

        // 1,000 idle connections, held while the polite client is served.
        let mut idle = Vec::new();
        for _ in 0..1000 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        inputs += 1000;
        probe.check().await;
        drop(idle);
        probe.check().await;
    }
    let slow_bytes = slow.await.unwrap();
    inputs += u64::try_from(slow_bytes).unwrap();
    probe.check().await;

    let rss_after = common::rss_kib();
    let growth_kib = rss_after.saturating_sub(rss_before);
    assert!(growth_kib < 512 * 1024, "resident memory grew by {growth_kib} KiB");
    // The peak, too: memory buffered for a flood or a huge frame and freed since leaves no
    // trace in the resident size at the end, but would in the peak.
    let peak = common::peak_rss_kib();
    let peak_growth_kib = peak.saturating_sub(peak_before);
    assert!(
        peak_growth_kib < 1024 * 1024,
        "the peak resident memory grew by {peak_growth_kib} KiB"
    );
    drop(probe);
    pair.stop().await;
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "something panicked");
    eprintln!(
        "hostile inputs tried: {inputs}; RSS before {rss_before} KiB, after {rss_after} KiB; \
         peak {peak_before} KiB before, {peak} KiB after"
    );
}

/// A connection to the master from `source` (a loopback address other than 127.0.0.1 stands for
/// a client elsewhere: every worker of these tests may link from 127.0.0.1 only).
async fn connect_from(source: [u8; 4], master: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(master).await.unwrap()
}

/// Whether the master answers a `getWorkers` on a new connection from `source`.
async fn master_answers_from(source: [u8; 4], master: SocketAddr) -> bool {
    let mut framed = FramedStream::new(connect_from(source, master).await);
    if framed.write_request(&Request::GetWorkers).await.is_err() {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(10), framed.read_response()).await,
        Ok(Ok(Some(Response::Data(DataPayload::WorkerList(_)))))
    )
}

/// Clients elsewhere holding every place the master keeps for connections that have not said
/// who they are do not keep a worker from linking again: connections from an address a
/// registered worker may link from wait in a pool of their own. And one client connection gets
/// 16 answers at most, so no client keeps its place forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flood_from_elsewhere_does_not_keep_a_worker_from_linking() {
    const ELSEWHERE: [u8; 4] = [127, 0, 0, 2];
    let root = tempfile::tempdir().unwrap();
    // One worker link: 256 places for unidentified connections (the least the master keeps).
    let Pair { master, worker, master_dir, key_dir } =
        Pair::start(root.path(), Duration::from_millis(100), |master, _| {
            master.limits.worker_connections_max = 1;
        })
        .await;
    let mut client = Client::connect(worker.addr).await;
    register_and_login(&mut client, "polite", 3).await;

    // 16 answers on one connection, then the master closes it.
    let mut asker = FramedStream::new(connect_from(ELSEWHERE, master.addr).await);
    for _ in 0..16 {
        asker.write_request(&Request::GetWorkers).await.unwrap();
        let answer = asker.read_response().await.unwrap();
        assert!(matches!(answer, Some(Response::Data(DataPayload::WorkerList(_)))), "{answer:?}");
    }
    let _ = asker.write_request(&Request::GetWorkers).await;
    let after = tokio::time::timeout(Duration::from_secs(10), asker.read_response()).await;
    assert!(matches!(after, Ok(Ok(None) | Err(_))), "a 17th answer: {after:?}");

    // 256 clients from elsewhere hold every place, asking again every six seconds (within the
    // master's 10 s for each request), for 84 s: their 15 answers stay under the 16 allowed.
    let (stop_flood, flood_stopped) = tokio::sync::watch::channel(false);
    let mut flood = Vec::new();
    for _ in 0..256 {
        let mut framed = FramedStream::new(connect_from(ELSEWHERE, master.addr).await);
        framed.write_request(&Request::GetWorkers).await.unwrap();
        assert!(framed.read_response().await.unwrap().is_some(), "a flood client is answered");
        let mut stop = flood_stopped.clone();
        flood.push(tokio::spawn(async move {
            for _ in 1..15 {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(6)) => {}
                    _ = stop.changed() => return,
                }
                if framed.write_request(&Request::GetWorkers).await.is_err()
                    || !matches!(framed.read_response().await, Ok(Some(_)))
                {
                    return;
                }
            }
        }));
    }
    assert!(!master_answers_from(ELSEWHERE, master.addr).await, "every place is taken");

    // The worker goes and comes back: it links again while the flood holds the places.
    worker.abort();
    let (_, trust) = common::master_dir(root.path());
    let identity = worker::identity::WorkerIdentity::load(&key_dir).unwrap();
    let config = common::worker_config(
        &key_dir,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        master.addr,
        &master_dir,
    );
    let worker = common::WorkerTask::start(config, identity, trust).await;
    let mut client = Client::connect(worker.addr).await;
    let login = Request::Login {
        username: user("polite"),
        password: common::password(3),
        expirable: false,
    };
    // Well before the flood's connections end (after 84 s).
    let relinked = tokio::time::timeout(Duration::from_secs(45), client.send_when_linked(login))
        .await
        .expect("the worker links again while the flood holds every other place");
    assert!(matches!(relinked, Response::SessionId(_)), "{relinked:?}");
    assert!(!master_answers_from(ELSEWHERE, master.addr).await, "the flood still holds them");

    let _ = stop_flood.send(true);
    for task in flood {
        task.await.unwrap();
    }
    worker.stop().await.unwrap();
    master.stop().await.unwrap();
}

/// A worker with every client place taken answers a newcomer `busy` and closes the
/// connection. `pt`'s client retries that on a new connection, and is served once a place is
/// free; on the closed one the retry could only fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_full_of_clients_is_retried_on_a_new_connection() {
    let root = tempfile::tempdir().unwrap();
    let Pair { master, worker, .. } =
        Pair::start(root.path(), Duration::from_millis(100), |_, worker| {
            worker.clients.connections_max = 1;
        })
        .await;
    // The one place, taken (answered, so surely admitted).
    let mut holder = Client::connect(worker.addr).await;
    let held = holder.send_when_linked(Request::GetWorkers).await;
    assert!(matches!(held, Response::Data(DataPayload::WorkerList(_))), "{held:?}");
    // A newcomer is refused at the door.
    let mut door = FramedStream::new(TcpStream::connect(worker.addr).await.unwrap());
    door.write_request(&Request::GetWorkers).await.unwrap();
    let refused = door.read_response().await.unwrap();
    assert_eq!(refused.as_ref().and_then(failure_reason), Some(Reason::Busy), "{refused:?}");
    // The place frees up once pt's client was refused too (its first attempt), while it waits
    // to retry: so the retry, on a new connection, is what gets served.
    let stats = worker.stats.clone();
    let release = tokio::spawn(async move {
        while stats.snapshot().connections_refused < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(holder);
    });
    let config = pt_tools::client::ConnectConfig {
        addr: worker.addr.to_string(),
        role: "worker",
        timeout: Duration::from_secs(10),
    };
    let mut client = pt_tools::client::Client::connect(config).await.unwrap();
    let answer = client.exchange(&Request::GetWorkers).await.unwrap();
    assert!(matches!(answer, Response::Data(DataPayload::WorkerList(_))), "{answer:?}");
    release.await.unwrap();
    assert!(worker.stats.snapshot().connections_refused >= 2, "pt's first attempt was refused");
    drop(client);
    worker.stop().await.unwrap();
    master.stop().await.unwrap();
}
