//! The tokio adapter over real loopback TCP: a small server built from `Connection` and
//! `FramedStream`, the way the worker uses them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::pin::Pin;
use std::task::{Context, Poll};

use engine::{Cash, IntervalId, OrderId, Price, Qty, Side, Symbol, Timestamp, WorkerId};
use net::{
    Bar, ConnState, Connection, Control, DataPayload, Direction, Failure, FillReport, FramedStream,
    Instruction, LinkError, LinkKey, LinkOpener, LinkSealer, Period, PriceSeries, ReadError,
    Reason, Relay, Request, Response, SessionId, Verdict, WorkerHello, WorkerInfo,
};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

const S: SessionId = SessionId([0x5E; 32]);

fn sym(s: &str) -> Symbol {
    Symbol::new(s).unwrap()
}

fn series(symbol: Symbol, bars: u64) -> PriceSeries {
    PriceSeries {
        symbol,
        bars: (1..=bars)
            .map(|i| Bar {
                open: Price::from_raw(i),
                high: Price::from_raw(i + 1),
                low: Price::from_raw(i),
                close: Price::from_raw(i),
                volume: Qty::from_raw(i),
                time: Timestamp(i64::try_from(i).unwrap()),
            })
            .collect(),
    }
}

fn fill(symbol: Symbol, side: Side, qty: Qty) -> FillReport {
    FillReport {
        order: OrderId(1),
        symbol,
        side,
        qty,
        price: Price::from_raw(100),
        amount: Cash::from_raw(100),
        interval: IntervalId(1),
        settled_at: Timestamp(0),
        cash_after: Cash::from_raw(0),
    }
}

/// What the test server answers to a request its connection let proceed.
fn answer(request: &Request) -> Response {
    match request {
        Request::Login { .. } | Request::LoginSession { .. } => Response::SessionId(S),
        Request::Register { .. } => Response::RegisterSuccess,
        Request::Purchase { symbol, qty, .. } => {
            Response::PurchaseSuccess(fill(*symbol, Side::Buy, *qty))
        }
        Request::Sell { symbol, qty, .. } => Response::SellSuccess(fill(*symbol, Side::Sell, *qty)),
        Request::Logout { .. } => Response::LogoutSuccess,
        Request::GetWorkers => Response::Data(DataPayload::WorkerList(vec![WorkerInfo {
            id: WorkerId(7),
            name: "w1".into(),
            address: "127.0.0.1:2049".into(),
        }])),
        Request::GetAssetInfo { symbol } | Request::GetAssetValueCurrent { symbol } => {
            Response::Data(DataPayload::AssetInfo(series(*symbol, 1).bars[0].to_tick(*symbol)))
        }
        Request::GetAssetValue { symbol, .. } | Request::GetAssetValueAllTime { symbol } => {
            Response::Data(DataPayload::PriceSeries(series(*symbol, 5_000)))
        }
        _ => Response::DataFail(Failure::new(Reason::NotFound, "no such user")),
    }
}

/// One client connection, handled the way the worker does it.
async fn serve_one<S>(stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let mut framed = FramedStream::new(stream);
    let mut connection = Connection::new();
    loop {
        let response = match framed.read_request().await {
            Ok(None) => return,
            Ok(Some(Ok(request))) => match connection.handle(&request) {
                Verdict::Reply(reply) => reply,
                Verdict::Proceed => answer(&request),
            },
            Ok(Some(Err(reply))) => reply,
            Err(error) => {
                if let Some(reason) = error.reason() {
                    let failure = Failure::new(reason, error.to_string());
                    let _ = framed.write_response(&Response::Error(failure)).await;
                }
                let _ = framed.writer().shutdown().await;
                return;
            }
        };
        connection.on_response(&response);
        framed.write_response(&response).await.unwrap();
    }
}

/// A reader that hands out at most one byte per read, whatever TCP delivered.
struct OneByteAtATime<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for OneByteAtATime<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut one = [0u8; 1];
        let mut small = ReadBuf::new(&mut one);
        match Pin::new(&mut self.0).poll_read(cx, &mut small) {
            Poll::Ready(Ok(())) => {
                buf.put_slice(small.filled());
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for OneByteAtATime<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A server on 127.0.0.1:0 handling one connection; returns the client's stream.
async fn connect(one_byte_reads: bool) -> (TcpStream, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        if one_byte_reads {
            serve_one(OneByteAtATime(stream)).await;
        } else {
            serve_one(stream).await;
        }
    });
    let client = TcpStream::connect(address).await.unwrap();
    client.set_nodelay(true).unwrap();
    (client, server)
}

fn purchase(symbol: &str, units: u64) -> Request {
    Request::Purchase {
        session: S,
        symbol: sym(symbol),
        qty: Qty::from_units(units).unwrap(),
        client_order_id: units,
    }
}

#[tokio::test]
async fn several_requests_written_in_one_go_are_all_answered_in_order() {
    let (client, server) = connect(false).await;
    let requests = vec![
        purchase("AAPL", 1), // not logged in yet
        Request::LoginSession { session: S },
        purchase("AAPL", 1),
        purchase("MSFT", 2),
        Request::GetAssetInfo { symbol: sym("AAPL") }, // wrong state
        Request::SwitchState { session: S, state: ConnState::DataTransfer },
        Request::GetAssetInfo { symbol: sym("AAPL") },
        Request::GetAssetValue { symbol: sym("AAPL"), period: Period::Week, date: Timestamp(0) },
        Request::GetWorkers,
        Request::SwitchState { session: S, state: ConnState::Command },
        Request::Sell {
            session: S,
            symbol: sym("AAPL"),
            qty: Qty::from_units(1).unwrap(),
            client_order_id: 99,
        },
        Request::Logout { session: S },
        purchase("AAPL", 3), // logged out
    ];
    let mut bytes = Vec::new();
    for request in &requests {
        bytes.extend_from_slice(&request.encode().unwrap().to_bytes().unwrap());
    }
    let (mut reader, writer) = FramedStream::new(client).into_split();
    let mut writer = writer.into_inner();
    writer.write_all(&bytes).await.unwrap();
    writer.flush().await.unwrap();

    let mut answers = Vec::new();
    for _ in &requests {
        answers.push(reader.read_response().await.unwrap().unwrap());
    }
    let kinds: Vec<Instruction> = answers.iter().map(Response::instruction).collect();
    use Instruction as I;
    assert_eq!(
        kinds,
        vec![
            I::PurchaseFail,
            I::SessionId,
            I::PurchaseSuccess,
            I::PurchaseSuccess,
            I::DataFail,
            I::StateSwitchSuccess,
            I::Data,
            I::Data,
            I::Data,
            I::StateSwitchSuccess,
            I::SellSuccess,
            I::LogoutSuccess,
            I::PurchaseFail,
        ]
    );
    assert_eq!(answers[0].failure().unwrap().reason, Reason::NotLoggedIn);
    assert_eq!(answers[4].failure().unwrap().reason, Reason::WrongState);
    assert_eq!(answers[12].failure().unwrap().reason, Reason::NotLoggedIn);
    match (&answers[2], &answers[3]) {
        (Response::PurchaseSuccess(a), Response::PurchaseSuccess(b)) => {
            assert_eq!((a.symbol, b.symbol), (sym("AAPL"), sym("MSFT")));
            assert_eq!(b.qty, Qty::from_units(2).unwrap());
        }
        other => panic!("{other:?}"),
    }
    match &answers[7] {
        Response::Data(DataPayload::PriceSeries(s)) => assert_eq!(s.bars.len(), 5_000),
        other => panic!("{other:?}"),
    }
    writer.shutdown().await.unwrap(); // FIN: the read half still holds the socket open
    assert!(reader.read_response().await.unwrap().is_none(), "clean close after the answers");
    server.await.unwrap();
}

/// Fed messages stay in the writer until `flush`, then go out as the same bytes `write_*`
/// would have sent, in order; the reader then has them all buffered after one read.
#[tokio::test]
async fn fed_requests_go_out_together_at_flush() {
    let (client, server) = connect(false).await;
    let requests = [Request::LoginSession { session: S }, purchase("AAPL", 1), purchase("MSFT", 2)];
    let (mut reader, mut writer) = FramedStream::new(client).into_split();
    let mut expected = 0;
    for request in &requests {
        writer.feed_request(request).await.unwrap();
        expected += request.encode().unwrap().to_bytes().unwrap().len();
    }
    assert_eq!(writer.buffered_bytes(), expected, "nothing written before the flush");
    writer.flush().await.unwrap();
    assert_eq!(writer.buffered_bytes(), 0);

    let first = reader.read_response().await.unwrap().unwrap();
    assert_eq!(first.instruction(), Instruction::SessionId);
    let mut kinds = Vec::new();
    for _ in 1..requests.len() {
        kinds.push(reader.read_response().await.unwrap().unwrap().instruction());
    }
    assert_eq!(kinds, [Instruction::PurchaseSuccess, Instruction::PurchaseSuccess]);
    assert!(!reader.has_buffered_frame(), "every answer was read");
    writer.shutdown().await.unwrap();
    assert!(reader.read_response().await.unwrap().is_none());
    server.await.unwrap();
}

/// A burst queued behind the first request goes out with it: every request is answered, in
/// queue order, and nothing stays buffered.
#[tokio::test]
async fn a_gathered_burst_is_written_whole_and_in_order() {
    let (client, server) = connect(false).await;
    let (mut reader, mut writer) = FramedStream::new(client).into_split();
    let (queue, mut queued) = tokio::sync::mpsc::channel(8);
    for units in [1, 2, 3] {
        queue.send(purchase("AAPL", units)).await.unwrap();
    }
    writer
        .write_gathered(
            Request::LoginSession { session: S },
            || queued.try_recv().ok(),
            |r| r.encode(),
        )
        .await
        .unwrap();
    assert_eq!(writer.buffered_bytes(), 0);
    assert!(queued.try_recv().is_err(), "the whole queue went out");
    assert_eq!(
        reader.read_response().await.unwrap().unwrap().instruction(),
        Instruction::SessionId
    );
    for units in [1, 2, 3] {
        match reader.read_response().await.unwrap().unwrap() {
            Response::PurchaseSuccess(fill) => {
                assert_eq!(fill.qty, Qty::from_units(units).unwrap())
            }
            other => panic!("{other:?}"),
        }
    }
    writer.shutdown().await.unwrap();
    assert!(reader.read_response().await.unwrap().is_none());
    server.await.unwrap();
}

#[tokio::test]
async fn a_request_read_one_byte_at_a_time_works() {
    let (client, server) = connect(true).await;
    let mut framed = FramedStream::new(client);
    framed.write_request(&Request::LoginSession { session: S }).await.unwrap();
    assert_eq!(framed.read_response().await.unwrap(), Some(Response::SessionId(S)));
    // Pipelined as well, still one byte per read on the server side.
    let (mut reader, writer) = framed.into_split();
    let mut raw = writer.into_inner();
    let mut bytes = purchase("AAPL", 1).encode().unwrap().to_bytes().unwrap();
    bytes.extend(Request::Logout { session: S }.encode().unwrap().to_bytes().unwrap());
    raw.write_all(&bytes).await.unwrap();
    assert_eq!(
        reader.read_response().await.unwrap().unwrap().instruction(),
        Instruction::PurchaseSuccess
    );
    assert_eq!(reader.read_response().await.unwrap(), Some(Response::LogoutSuccess));
    raw.shutdown().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn a_request_dribbled_one_byte_per_write_works() {
    let (client, server) = connect(false).await;
    let (mut reader, writer) = FramedStream::new(client).into_split();
    let mut raw = writer.into_inner();
    let bytes = Request::LoginSession { session: S }.encode().unwrap().to_bytes().unwrap();
    for byte in &bytes {
        raw.write_all(std::slice::from_ref(byte)).await.unwrap();
        raw.flush().await.unwrap();
    }
    assert_eq!(reader.read_response().await.unwrap(), Some(Response::SessionId(S)));
    raw.shutdown().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn a_packetised_payload_reports_progress() {
    let (client, server) = connect(false).await;
    let mut framed = FramedStream::new(client);
    framed.write_request(&Request::LoginSession { session: S }).await.unwrap();
    framed.read_response().await.unwrap();
    framed
        .write_request(&Request::SwitchState { session: S, state: ConnState::DataTransfer })
        .await
        .unwrap();
    framed.read_response().await.unwrap();
    framed.write_request(&Request::GetAssetValueAllTime { symbol: sym("BTC-USD") }).await.unwrap();
    let mut progress = Vec::new();
    let message = framed
        .reader()
        .read_message_with_progress(|received, max| progress.push((received, max)))
        .await
        .unwrap()
        .unwrap();
    let max = u32::try_from(progress.len()).unwrap();
    assert!(max > 1, "the series spans several packets");
    assert_eq!(progress, (1..=max).map(|n| (n, max)).collect::<Vec<_>>());
    match Response::decode(&message).unwrap() {
        Response::Data(DataPayload::PriceSeries(s)) => {
            assert_eq!(s.symbol, sym("BTC-USD"));
            assert_eq!(s.bars.len(), 5_000);
        }
        other => panic!("{other:?}"),
    }
    drop(framed);
    server.await.unwrap();
}

#[tokio::test]
async fn an_undecodable_request_is_answered_and_the_connection_goes_on() {
    let (client, server) = connect(false).await;
    let (mut reader, writer) = FramedStream::new(client).into_split();
    let mut raw = writer.into_inner();
    // A purchase with two arguments instead of three, then an unknown instruction.
    let mut message = purchase("AAPL", 1).encode().unwrap();
    message.arg_count = 2;
    raw.write_all(&message.to_bytes().unwrap()).await.unwrap();
    message.instruction = 0x01EE;
    raw.write_all(&message.to_bytes().unwrap()).await.unwrap();
    raw.write_all(&Request::LoginSession { session: S }.encode().unwrap().to_bytes().unwrap())
        .await
        .unwrap();
    let first = reader.read_response().await.unwrap().unwrap();
    assert_eq!(first.instruction(), Instruction::PurchaseFail);
    assert_eq!(first.failure().unwrap().reason, Reason::Malformed);
    let second = reader.read_response().await.unwrap().unwrap();
    assert_eq!(second.instruction(), Instruction::Error);
    assert_eq!(second.failure().unwrap().reason, Reason::UnknownInstruction);
    assert_eq!(reader.read_response().await.unwrap(), Some(Response::SessionId(S)));
    raw.shutdown().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn a_bad_header_gets_an_error_and_the_connection_is_closed() {
    let (client, server) = connect(false).await;
    let (mut reader, writer) = FramedStream::new(client).into_split();
    let mut raw = writer.into_inner();
    let mut bytes = Request::GetWorkers.encode().unwrap().to_bytes().unwrap();
    bytes[0] = 9; // protocol version 9
    raw.write_all(&bytes).await.unwrap();
    let answer = reader.read_response().await.unwrap().unwrap();
    assert_eq!(answer.failure().unwrap().reason, Reason::UnsupportedVersion);
    assert!(reader.read_response().await.unwrap().is_none());
    server.await.unwrap();
}

#[tokio::test]
async fn an_oversized_frame_is_refused_from_its_header_before_its_data() {
    let (client, server) = connect(false).await;
    let (mut reader, writer) = FramedStream::new(client).into_split();
    let mut raw = writer.into_inner();
    let mut header = Request::GetWorkers.encode().unwrap().to_bytes().unwrap();
    header[16..20].copy_from_slice(&(1u32 << 20).to_be_bytes());
    // Only the header is sent; the server answers without waiting for the megabyte.
    raw.write_all(&header).await.unwrap();
    let answer = reader.read_response().await.unwrap().unwrap();
    assert_eq!(answer.instruction(), Instruction::Error);
    assert_eq!(answer.failure().unwrap().reason, Reason::TooLarge);
    assert!(reader.read_response().await.unwrap().is_none());
    server.await.unwrap();
}

#[tokio::test]
async fn eof_in_the_middle_of_a_frame_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let mut client = TcpStream::connect(address).await.unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let bytes = Request::GetWorkers.encode().unwrap().to_bytes().unwrap();
    client.write_all(&bytes[..10]).await.unwrap();
    drop(client);
    let mut framed = FramedStream::new(stream);
    assert!(matches!(
        framed.read_message().await,
        Err(ReadError::UnexpectedEof { buffered_bytes: 10 })
    ));
}

/// The master–worker link: handshake in clear, then sealed frames both ways.
#[tokio::test]
async fn a_sealed_link_relays_and_refuses_a_tampered_frame() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let key = LinkKey([0x42; 32]);
    let worker_id = WorkerId(0x1234);
    let master_key = key.clone();
    let master = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut link = FramedStream::new(stream);
        let Some(Control::WorkerHello(hello)) = link.read_control().await.unwrap() else {
            panic!("expected workerHello");
        };
        assert_eq!(hello.worker, worker_id);
        assert_eq!(hello.nonce, [5u8; 32]);
        let nonce = [3u8; 32];
        // Stand-ins for the master's OpenPGP signature over the worker's nonce and the sealed
        // key, and for the link key sealed to the worker.
        let master_proof = hello.nonce.to_vec();
        let sealed_key = vec![0xEE; 64];
        link.write_control(&Control::Challenge { nonce, master_proof, sealed_key }).await.unwrap();
        let Some(Control::HelloProof { signature }) = link.read_control().await.unwrap() else {
            panic!("expected helloProof");
        };
        // Stand-in for the OpenPGP verification done by the master (docs/WORKER_AUTH.md).
        assert_eq!(signature, nonce.to_vec());
        link.write_control(&Control::LinkAccepted).await.unwrap();
        link.seal_link(
            LinkSealer::new(master_key.clone(), Direction::MasterToWorker),
            LinkOpener::new(master_key, Direction::WorkerToMaster),
        );
        let Some(Control::Relay(relay)) = link.read_control().await.unwrap() else {
            panic!("expected relay");
        };
        let response = answer(&relay.request);
        link.write_control(&Control::RelayReply { relay_id: relay.relay_id, response })
            .await
            .unwrap();
        let Some(Control::Heartbeat { seq }) = link.read_control().await.unwrap() else {
            panic!("expected heartbeat");
        };
        link.write_control(&Control::HeartbeatAck { seq }).await.unwrap();
        // The worker now sends a tampered frame.
        link.read_control().await
    });

    let stream = TcpStream::connect(address).await.unwrap();
    let mut link = FramedStream::new(stream);
    link.write_control(&Control::WorkerHello(WorkerHello {
        worker: worker_id,
        version: 1,
        address: "worker-1.example:2049".into(),
        nonce: [5u8; 32],
    }))
    .await
    .unwrap();
    let Some(Control::Challenge { nonce, master_proof, sealed_key }) =
        link.read_control().await.unwrap()
    else {
        panic!("expected challenge");
    };
    assert_eq!(master_proof, [5u8; 32].to_vec());
    assert_eq!(sealed_key, vec![0xEE; 64]);
    link.write_control(&Control::HelloProof { signature: nonce.to_vec() }).await.unwrap();
    assert_eq!(link.read_control().await.unwrap(), Some(Control::LinkAccepted));
    link.seal_link(
        LinkSealer::new(key.clone(), Direction::WorkerToMaster),
        LinkOpener::new(key.clone(), Direction::MasterToWorker),
    );
    let request =
        Request::GetAssetValue { symbol: sym("AAPL"), period: Period::Year, date: Timestamp(5) };
    link.write_control(&Control::Relay(Box::new(Relay {
        relay_id: 77,
        client_ip: "192.0.2.1".parse().unwrap(),
        received_at: Timestamp(1_000),
        session: Some(S),
        request,
    })))
    .await
    .unwrap();
    match link.read_control().await.unwrap() {
        Some(Control::RelayReply {
            relay_id: 77,
            response: Response::Data(DataPayload::PriceSeries(s)),
        }) => {
            assert_eq!(s.bars.len(), 5_000, "a multi-packet sealed reply");
        }
        other => panic!("{other:?}"),
    }
    link.write_control(&Control::Heartbeat { seq: 1 }).await.unwrap();
    assert_eq!(link.read_control().await.unwrap(), Some(Control::HeartbeatAck { seq: 1 }));

    // Seal the next frame properly (sequence numbers continue after the relay and heartbeat),
    // then flip one bit of its data on the way out.
    let relay_frames = Control::Relay(Box::new(Relay {
        relay_id: 78,
        client_ip: "192.0.2.1".parse().unwrap(),
        received_at: Timestamp(1_000),
        session: None,
        request: Request::GetWorkers,
    }))
    .encode()
    .unwrap()
    .to_frames()
    .unwrap();
    let mut frame = relay_frames.into_iter().next().unwrap();
    let mut sealer = LinkSealer::new(key, Direction::WorkerToMaster);
    for _ in 0..2 {
        // Sequence numbers 1 and 2 went to the relay (one packet) and the heartbeat.
        let mut used =
            Control::Heartbeat { seq: 0 }.encode().unwrap().to_frames().unwrap().remove(0);
        sealer.seal(&mut used).unwrap();
    }
    sealer.seal(&mut frame).unwrap();
    let mut bytes = frame.to_bytes();
    bytes[25] ^= 0x80;
    let (_reader, writer) = link.into_split();
    let mut raw = writer.into_inner();
    raw.write_all(&bytes).await.unwrap();
    match master.await.unwrap() {
        Err(ReadError::Link(LinkError::BadMac { seq: 3 })) => {}
        other => panic!("{other:?}"),
    }
}
