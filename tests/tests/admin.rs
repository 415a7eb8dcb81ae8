//! The worker registry and its admin commands end to end: a real master (`master::server::run`
//! on 127.0.0.1:0 with a temp data dir), real worker identities and the real worker link, and the
//! `pt-master worker add|list|remove` code paths (`master::admin`) both through the running
//! master's `admin.sock` and offline on the journal file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use engine::Timestamp;
use master::admin::{self, AdminError, AdminResponse, AdminTarget, NewWorker, Via};
use master::config::{MasterConfig, WorkerConfig};
use master::server::ServerError;
use master::worker_auth::{MasterIdentity, RegistryError, WorkerSource};
use net::{DataPayload, FramedStream, Request, Response};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;
use worker::config::LinkConfig;
use worker::identity::{self, MasterTrust, WorkerIdentity};
use worker::master_link::{LinkParams, LinkState, MasterLink};

/// A temp dir with a data dir and generated worker identities.
struct Setup {
    tmp: tempfile::TempDir,
    data: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        Self { tmp, data }
    }

    fn target(&self) -> AdminTarget {
        AdminTarget { data_dir: self.data.clone(), config_workers: Vec::new() }
    }

    /// A new worker identity saved under `name`; returns it and its directory.
    fn worker(&self, name: &str) -> (WorkerIdentity, PathBuf) {
        let dir = self.tmp.path().join(name);
        WorkerIdentity::generate(Uuid::new_v4(), name).unwrap().save(&dir).unwrap();
        (WorkerIdentity::load(&dir).unwrap(), dir)
    }
}

/// The registration of `identity` from its saved `worker.pub.asc` (or another file of `dir`).
fn new_worker(identity: &WorkerIdentity, dir: &Path, file: &str) -> NewWorker {
    NewWorker {
        id: identity.uuid(),
        name: "w".into(),
        cert: admin::read_cert_file(&dir.join(file)).unwrap(),
        allowed_ips: vec!["127.0.0.1".parse().unwrap()],
    }
}

/// The admin commands are blocking (std sockets, redb): run them off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

struct Master {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Master {
    /// Starts a master on `data` and returns once it serves (its `getWorkers` answer comes from
    /// the accept loop, which starts after the admin socket is bound).
    async fn start(data: &Path, workers: Vec<WorkerConfig>) -> Self {
        let (addr, stop, task) = Self::spawn(data, workers).await;
        assert!(connected_workers(addr).await.is_empty());
        Self { addr, stop, task }
    }

    async fn spawn(
        data: &Path,
        workers: Vec<WorkerConfig>,
    ) -> (SocketAddr, oneshot::Sender<()>, JoinHandle<Result<(), ServerError>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = MasterConfig {
            listen: addr,
            data_dir: data.to_path_buf(),
            update_interval: Duration::from_millis(50),
            workers,
            ..MasterConfig::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(master::server::run(config, listener, async {
            let _ = stopped.await;
        }));
        (addr, stop, task)
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// The master's answer to a client's `getWorkers`.
async fn connected_workers(addr: SocketAddr) -> Vec<Uuid> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut framed = FramedStream::new(stream);
    framed.write_request(&Request::GetWorkers).await.unwrap();
    match framed.read_response().await.unwrap() {
        Some(Response::Data(DataPayload::WorkerList(list))) => {
            list.into_iter().map(|w| Uuid::from_u128(w.id.0)).collect()
        }
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Starts the real worker link to the master and waits until it is up and the master relays
/// for it (a relayed `getWorkers` that lists the worker itself).
async fn link_worker(
    master: &Master,
    identity: WorkerIdentity,
    data: &Path,
) -> (MasterLink, watch::Sender<bool>, JoinHandle<()>) {
    let uuid = identity.uuid();
    let trust = MasterTrust::load(&MasterIdentity::public_cert_path(data)).unwrap();
    let params = LinkParams {
        master: master.addr.to_string(),
        advertise: "127.0.0.1:2049".into(),
        config: LinkConfig::default(),
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (link, task) = MasterLink::start(params, identity, trust, shutdown_rx);
    link.subscribe().wait_for(|state| *state == LinkState::Up).await.unwrap();
    let ip = "127.0.0.1".parse().unwrap();
    match link.relay(ip, Timestamp(0), None, &Request::GetWorkers).await {
        Response::Data(DataPayload::WorkerList(list)) => {
            assert!(list.iter().any(|w| w.id.0 == uuid.as_u128()), "{list:?}");
        }
        other => panic!("unexpected relay answer {other:?}"),
    }
    (link, shutdown, task)
}

fn view_of(workers: &[admin::WorkerView], uuid: Uuid) -> &admin::WorkerView {
    workers.iter().find(|w| w.id == uuid).unwrap_or_else(|| panic!("{uuid} not in {workers:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_add_then_list_then_the_master_loads_it() {
    let s = Setup::new();
    let (identity, dir) = s.worker("offline");
    let uuid = identity.uuid();
    let target = s.target();
    let new = new_worker(&identity, &dir, identity::PUBLIC_CERT_FILE_NAME);
    let (added, via) = blocking({
        let (target, new) = (target.clone(), new.clone());
        move || admin::add_worker(&target, new)
    })
    .await
    .unwrap();
    assert_eq!(via, Via::Journal);
    assert_eq!(added.id, uuid);
    assert_eq!(added.fingerprint, identity.fingerprint().to_hex());

    // Listing offline reads the journal without writing it.
    let before = std::fs::read(journal::path_in(&target.data_dir)).unwrap();
    let (workers, via) = blocking({
        let target = target.clone();
        move || admin::list_workers(&target)
    })
    .await
    .unwrap();
    assert!(
        std::fs::read(journal::path_in(&target.data_dir)).unwrap() == before,
        "listing changed the journal"
    );
    assert_eq!(via, Via::Journal);
    assert_eq!(workers.len(), 1);
    let view = view_of(&workers, uuid);
    assert_eq!(
        (view.name.as_str(), view.source, view.connected),
        ("w", WorkerSource::Registry, None)
    );
    assert_eq!(view.allowed_ips, ["127.0.0.1/32"]);

    // A second add of the same UUID is refused, offline too, and stores nothing.
    let err = blocking({
        let (target, new) = (target.clone(), new.clone());
        move || admin::add_worker(&target, new)
    })
    .await
    .unwrap_err();
    assert!(matches!(err, AdminError::Registry(RegistryError::DuplicateUuid { .. })), "{err}");

    // The master loads the stored registry: it lists the worker and admits it.
    let master = Master::start(&s.data, Vec::new()).await;
    let (workers, via) = blocking({
        let target = target.clone();
        move || admin::list_workers(&target)
    })
    .await
    .unwrap();
    assert_eq!(via, Via::Master);
    assert_eq!(view_of(&workers, uuid).connected, Some(false));
    let (link, shutdown, task) = link_worker(&master, identity, &s.data).await;
    let (workers, _) = blocking(move || admin::list_workers(&target)).await.unwrap();
    assert_eq!(view_of(&workers, uuid).connected, Some(true));
    assert_eq!(link.state(), LinkState::Up);
    shutdown.send(true).unwrap();
    task.await.unwrap();
    master.stop().await;
    assert!(!admin::socket_path(&s.data).exists(), "a clean shutdown removes admin.sock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_through_the_socket_then_remove_disconnects_the_linked_worker() {
    let s = Setup::new();
    let (identity, dir) = s.worker("live");
    let uuid = identity.uuid();
    let target = s.target();
    let master = Master::start(&s.data, Vec::new()).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(admin::socket_path(&s.data)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The private directory it was bound in is gone.
        assert!(!s.data.join(".admin.d").exists());
    }

    let new = new_worker(&identity, &dir, identity::PUBLIC_CERT_FILE_NAME);
    let (added, via) = blocking({
        let target = target.clone();
        move || admin::add_worker(&target, new)
    })
    .await
    .unwrap();
    assert_eq!((via, added.id, added.connected), (Via::Master, uuid, Some(false)));

    let (link, shutdown, task) = link_worker(&master, identity, &s.data).await;
    assert_eq!(connected_workers(master.addr).await, [uuid]);
    let mut state = link.subscribe();

    let (was_connected, via) = blocking({
        let target = target.clone();
        move || admin::remove_worker(&target, uuid)
    })
    .await
    .unwrap();
    assert_eq!((was_connected, via), (Some(true), Via::Master));
    // The removal closes the link by pushing a notification to it (no polling), which takes
    // milliseconds; the generous bound only keeps a broken push from hanging the suite on a
    // loaded machine (no timing threshold is asserted).
    tokio::time::timeout(Duration::from_secs(30), state.wait_for(|s| *s != LinkState::Up))
        .await
        .expect("the removed worker's link was closed")
        .unwrap();
    assert!(connected_workers(master.addr).await.is_empty());
    let (workers, _) = blocking({
        let target = target.clone();
        move || admin::list_workers(&target)
    })
    .await
    .unwrap();
    assert!(workers.is_empty(), "{workers:?}");

    // Removed for good: the worker's next attempt to link is refused. Seen from its link: it
    // tries again (`Connecting`) and is down again, never up. (The bound only keeps a broken
    // master from hanging the suite; the backoff between attempts starts at 100 ms.)
    let refused_again = async {
        let mut tried = false;
        loop {
            state.changed().await.unwrap();
            match *state.borrow_and_update() {
                LinkState::Connecting => tried = true,
                LinkState::Down if tried => break,
                LinkState::Up => panic!("the removed worker linked again"),
                LinkState::Down | LinkState::Stopped => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), refused_again)
        .await
        .expect("the removed worker tried to link again");
    // A relay answers master_unavailable while the link is down.
    let ip = "127.0.0.1".parse().unwrap();
    let answer = link.relay(ip, Timestamp(0), None, &Request::GetWorkers).await;
    assert_eq!(answer.failure().unwrap().reason, net::Reason::MasterUnavailable);

    // Removing it again, or any unknown UUID, is an error naming it.
    for unknown in [uuid, Uuid::new_v4()] {
        let err = blocking({
            let target = target.clone();
            move || admin::remove_worker(&target, unknown)
        })
        .await
        .unwrap_err();
        assert!(matches!(err, AdminError::Refused(_)), "{err}");
        assert!(err.to_string().contains(&format!("no worker {unknown} is registered")), "{err}");
    }
    shutdown.send(true).unwrap();
    task.await.unwrap();
    master.stop().await;

    // Offline, an unknown UUID is the same error.
    let err = blocking(move || admin::remove_worker(&target, uuid)).await.unwrap_err();
    assert!(matches!(err, AdminError::UnknownWorker { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_key_file_is_refused_online_and_offline() {
    let s = Setup::new();
    let (identity, dir) = s.worker("secret");
    let target = s.target();
    let with_secret = new_worker(&identity, &dir, identity::KEY_FILE_NAME);
    let check = |err: AdminError| {
        assert!(err.to_string().contains("secret key material"), "{err}");
    };
    check(
        blocking({
            let (target, new) = (target.clone(), with_secret.clone());
            move || admin::add_worker(&target, new)
        })
        .await
        .unwrap_err(),
    );
    let master = Master::start(&s.data, Vec::new()).await;
    let err = blocking({
        let target = target.clone();
        move || admin::add_worker(&target, with_secret)
    })
    .await
    .unwrap_err();
    assert!(matches!(err, AdminError::Refused(_)), "{err}");
    check(err);
    let (workers, _) = blocking(move || admin::list_workers(&target)).await.unwrap();
    assert!(workers.is_empty(), "nothing was stored: {workers:?}");
    master.stop().await;
}

/// Sends raw bytes on the admin socket and reads one answer line.
fn raw_exchange(stream: &mut UnixStream, bytes: &[u8]) -> AdminResponse {
    stream.write_all(bytes).unwrap();
    let mut line = String::new();
    BufReader::new(&*stream).read_line(&mut line).unwrap();
    assert!(line.ends_with('\n'), "{line:?}");
    serde_json::from_str(&line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_admin_socket_gets_an_error_line_and_does_not_disturb_the_master() {
    let s = Setup::new();
    // A stale socket left by a master that did not stop cleanly is replaced at start-up.
    drop(std::os::unix::net::UnixListener::bind(admin::socket_path(&s.data)).unwrap());
    let master = Master::start(&s.data, Vec::new()).await;
    let socket = admin::socket_path(&s.data);
    let answers = blocking(move || {
        let mut stream = UnixStream::connect(&socket).unwrap();
        let mut answers = Vec::new();
        for bad in [
            &b"garbage\n"[..],
            b"\n",
            b"\xff\xfe\x00\n",
            b"{\"op\":\"explode\"}\n",
            b"{\"op\":\"remove\",\"id\":\"not-a-uuid\"}\n",
            b"{\"op\":\"add\",\"id\":\"67e55044-10b1-426f-9247-bb680e5fe0c8\",\"name\":\"x\",\
              \"cert\":\"nonsense\",\"allowed_ips\":[\"10.0.0.0/99\"]}\n",
            b"{\"op\":\"add\",\"id\":\"67e55044-10b1-426f-9247-bb680e5fe0c8\",\"name\":\"x\",\
              \"cert\":\"nonsense\",\"allowed_ips\":[\"10.0.0.1\"]}\n",
        ] {
            answers.push(raw_exchange(&mut stream, bad));
        }
        // The connection still works after all that.
        answers.push(raw_exchange(&mut stream, b"{\"op\":\"list\"}\n"));
        // A request over the size limit gets an error line, then the connection is closed.
        let mut huge = vec![b'x'; admin::REQUEST_BYTES_MAX + 10];
        huge.push(b'\n');
        answers.push(raw_exchange(&mut stream, &huge));
        // Closed: end of stream (or a reset, since the rest of the request was never read).
        let mut rest = String::new();
        let closed = BufReader::new(&stream).read_line(&mut rest);
        assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?} {rest:?}");
        answers
    })
    .await;
    let (last, bad) = answers.split_last().unwrap();
    let (list, bad) = bad.split_last().unwrap();
    for answer in bad {
        assert!(!answer.ok && answer.error.is_some(), "{answer:?}");
    }
    assert!(bad[0].error.as_ref().unwrap().contains("bad request"), "{:?}", bad[0]);
    assert!(bad[5].error.as_ref().unwrap().contains("10.0.0.0/99"), "{:?}", bad[5]);
    assert!(bad[6].error.as_ref().unwrap().contains("not an OpenPGP certificate"), "{:?}", bad[6]);
    assert!(list.ok && list.workers == Some(Vec::new()), "{list:?}");
    assert!(!last.ok && last.error.as_ref().unwrap().contains("longer than"), "{last:?}");

    // The master still serves: admin requests and clients alike.
    let target = s.target();
    let (workers, via) = blocking(move || admin::list_workers(&target)).await.unwrap();
    assert_eq!((workers.len(), via), (0, Via::Master));
    assert!(connected_workers(master.addr).await.is_empty());
    master.stop().await;
}

/// An admin client that sends requests and never reads the answers fills the socket's buffer;
/// the master still stops, and its journal is free at once (the admin connection's task, which
/// holds it, has ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_client_that_never_reads_does_not_hold_the_stop() {
    let s = Setup::new();
    let master = Master::start(&s.data, Vec::new()).await;
    let socket = admin::socket_path(&s.data);
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&written);
    let writer = std::thread::spawn(move || {
        let mut stream = UnixStream::connect(&socket).unwrap();
        // Far more answers than the socket buffers hold: the writes block once they are full.
        for _ in 0..200_000 {
            if stream.write_all(b"{\"op\":\"list\"}\n").is_err() {
                break;
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    // Wait until the writes stall: the master's answers fill the buffers unread, and it is
    // blocked writing one.
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = written.load(std::sync::atomic::Ordering::Relaxed);
        if now >= 100 && now == last {
            break;
        }
        last = now;
    }
    // Not done: the master did not read every request (were the writer merely paused, the
    // stop below would still be checked, only against a master less busy writing).
    assert!(!writer.is_finished(), "the writer never blocked: the master read every request");
    assert!(last < 200_000, "{last}");
    let stopped = tokio::time::timeout(Duration::from_secs(60), master.stop()).await;
    assert!(stopped.is_ok(), "the master did not stop");
    // The journal is not held by anything left of the master.
    let journal =
        journal::Journal::open(journal::path_in(&s.data), journal::JournalConfig::default());
    assert!(journal.is_ok(), "{:?}", journal.err());
    drop(journal);
    let _ = blocking(move || writer.join()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_journal_without_an_answering_master_is_a_clear_error() {
    let s = Setup::new();
    let master = Master::start(&s.data, Vec::new()).await;
    // The master holds the journal; without its socket, nothing can reach the registry.
    std::fs::remove_file(admin::socket_path(&s.data)).unwrap();
    let target = s.target();
    let err = blocking(move || admin::list_workers(&target)).await.unwrap_err();
    assert!(matches!(err, AdminError::Busy { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("papertrader.redb") && text.contains("admin.sock"), "{text}");
    master.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_entries_are_read_only_and_a_uuid_in_both_stops_the_start_up() {
    let s = Setup::new();
    let (configured, dir) = s.worker("configured");
    let uuid = configured.uuid();
    let entry = WorkerConfig {
        id: uuid,
        name: Some("from-config".into()),
        cert: dir.join(identity::PUBLIC_CERT_FILE_NAME),
        allowed_ips: vec!["127.0.0.1".parse().unwrap()],
    };
    let master = Master::start(&s.data, vec![entry.clone()]).await;
    let target = s.target();
    let (workers, _) = blocking({
        let target = target.clone();
        move || admin::list_workers(&target)
    })
    .await
    .unwrap();
    let view = view_of(&workers, uuid);
    assert_eq!((view.name.as_str(), view.source), ("from-config", WorkerSource::Config));

    let err = blocking({
        let target = target.clone();
        move || admin::remove_worker(&target, uuid)
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("in the master's configuration"), "{err}");
    let new = new_worker(&configured, &dir, identity::PUBLIC_CERT_FILE_NAME);
    let err = blocking({
        let (target, new) = (target.clone(), new.clone());
        move || admin::add_worker(&target, new)
    })
    .await
    .unwrap_err();
    // Not "in both, remove one": the worker is registered already, by the configuration.
    let text = err.to_string();
    assert!(text.contains(&uuid.to_string()) && text.contains("already in"), "{text}");
    assert!(!text.contains("worker remove"), "{text}");
    master.stop().await;

    // Stored offline (no configuration given to the command), the same UUID then stops the
    // master at start-up, naming it.
    blocking({
        let target = target.clone();
        move || admin::add_worker(&target, new)
    })
    .await
    .unwrap();
    let (_, _, task) = Master::spawn(&s.data, vec![entry.clone()]).await;
    let err = task.await.unwrap().unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&uuid.to_string()) && text.contains("both"), "{text}");
    // The operator's way out: remove the registry entry offline, even naming the configuration
    // (as PT_MASTER_CONFIG does): the registry copy goes, the configuration's stays.
    let with_config = AdminTarget { config_workers: vec![entry.clone()], ..target.clone() };
    // The offline listing shows both entries, and names the conflict and the way out.
    let (workers, via) = blocking({
        let with_config = with_config.clone();
        move || admin::list_workers(&with_config)
    })
    .await
    .unwrap();
    assert_eq!(via, Via::Journal);
    let sources: Vec<_> = workers.iter().filter(|w| w.id == uuid).map(|w| w.source).collect();
    assert_eq!(sources, [WorkerSource::Config, WorkerSource::Registry]);
    let problems = admin::listing_problems(&workers);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains(&uuid.to_string()), "{problems:?}");
    assert!(problems[0].contains("worker remove --id"), "{problems:?}");
    let (_, via) = blocking({
        let with_config = with_config.clone();
        move || admin::remove_worker(&with_config, uuid)
    })
    .await
    .unwrap();
    assert_eq!(via, Via::Journal);
    // Then only the configuration's entry is left, which cannot be removed this way.
    let err = blocking({
        let with_config = with_config.clone();
        move || admin::remove_worker(&with_config, uuid)
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("in the master's configuration"), "{err}");
    // Nothing to report any more, and the master starts again.
    let (workers, _) = blocking(move || admin::list_workers(&with_config)).await.unwrap();
    assert_eq!(workers.iter().filter(|w| w.id == uuid).count(), 1);
    assert!(admin::listing_problems(&workers).is_empty());
    Master::start(&s.data, vec![entry]).await.stop().await;
}
