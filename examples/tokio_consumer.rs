//! A plain tokio consumer loop (no framework): messages from a channel, each handled as one run
//! of the job named by its kind (`FutureExt::track_scope`), with a subtask spawned inside the
//! job and kept in it (`FutureExt::in_current_scope`).
//!
//! * `thumbnail` messages keep a 512-byte thumbnail each, made by a spawned subtask: retained
//!   = the thumbnails (without `in_current_scope` they would be unscoped);
//! * `audit` messages append one 64-byte line to an audit log that nobody trims: a leak;
//! * `ping` messages allocate and keep nothing.
//!
//! Run with `cargo run --release --example tokio_consumer`.

use std::sync::Mutex;

use allocscope::{FutureExt, TrackingAllocator};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator::system();

/// Messages per kind.
pub const MESSAGES: u64 = 100;
/// Bytes of a thumbnail and of an audit line.
pub const THUMBNAIL: usize = 512;
pub const AUDIT_LINE: usize = 64;

/// A message of the queue.
#[derive(Debug)]
pub enum Message {
    Thumbnail(u64),
    Audit(u64),
    Ping,
}

impl Message {
    /// The job of a message: one per kind, a small set.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Thumbnail(_) => "thumbnail",
            Message::Audit(_) => "audit",
            Message::Ping => "ping",
        }
    }
}

/// What the consumer keeps (room reserved up front, outside any job).
static THUMBNAILS: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());
static AUDIT_LOG: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

async fn handle(message: Message) {
    match message {
        Message::Thumbnail(id) => {
            // Work handed to another task stays in this job with in_current_scope.
            let thumbnail = tokio::spawn(
                async move { vec![id as u8; THUMBNAIL].into_boxed_slice() }.in_current_scope(),
            )
            .await
            .expect("the subtask");
            THUMBNAILS.lock().unwrap().push(thumbnail);
        }
        Message::Audit(id) => {
            AUDIT_LOG
                .lock()
                .unwrap()
                .push(vec![id as u8; AUDIT_LINE].into_boxed_slice());
        }
        Message::Ping => {
            let reply = format!("pong {:?}", std::thread::current().id());
            std::hint::black_box(reply);
        }
    }
}

/// Consumes `MESSAGES` messages of each kind on a multi-thread runtime; returns what the
/// program kept: (thumbnails, audit lines).
pub fn run() -> (u64, u64) {
    THUMBNAILS.lock().unwrap().reserve(MESSAGES as usize);
    AUDIT_LOG.lock().unwrap().reserve(MESSAGES as usize);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(64);
        let producer = tokio::spawn(async move {
            for i in 0..MESSAGES {
                for m in [Message::Thumbnail(i), Message::Audit(i), Message::Ping] {
                    tx.send(m).await.expect("the consumer");
                }
            }
        });
        // The consumer loop: one task per message, each one run of its kind's job.
        let mut handlers = Vec::new();
        while let Some(message) = rx.recv().await {
            let kind = message.kind();
            handlers.push(tokio::spawn(handle(message).track_scope(kind)));
        }
        for h in handlers {
            h.await.expect("a handler");
        }
        producer.await.expect("the producer");
    });
    // Figures are read once the runtime's workers let go of every task.
    drop(runtime);
    let thumbnails = THUMBNAILS.lock().unwrap().len() as u64;
    let audit = AUDIT_LOG.lock().unwrap().len() as u64;
    (thumbnails, audit)
}

#[allow(dead_code)] // the tests include this file as a module and call `run`
fn main() {
    let (thumbnails, audit) = run();
    println!("kept by the program: {thumbnails} thumbnails, {audit} audit lines\n");
    print!("{}", allocscope::report());
}
