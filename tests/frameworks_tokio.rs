//! The tokio consumer loop of `examples/tokio_consumer.rs`: each message one run of its kind's
//! job, a subtask kept in the job with `in_current_scope`; the figures equal what the program
//! kept itself.

use allocscope::{TrendKind, Usage};

#[allow(dead_code)]
#[path = "../examples/tokio_consumer.rs"]
mod tokio_consumer;

use tokio_consumer::{AUDIT_LINE, MESSAGES, THUMBNAIL};

#[test]
fn a_consumer_loop_with_subtasks_is_exact() {
    let (thumbnails, audit) = tokio_consumer::run();
    assert_eq!((thumbnails, audit), (MESSAGES, MESSAGES));
    let r = allocscope::report();
    let job = |name: &str| r.job(name).unwrap_or_else(|| panic!("no job {name}\n{r}"));
    for (name, kept, each) in [
        ("thumbnail", thumbnails, THUMBNAIL),
        ("audit", audit, AUDIT_LINE),
        ("ping", 0, 0),
    ] {
        let j = job(name);
        assert_eq!(j.runs, MESSAGES, "{name}");
        assert_eq!(j.active_runs, 0, "{name}");
        assert_eq!(
            j.retained,
            Usage {
                objects: kept,
                bytes: kept * each as u64
            },
            "{name}"
        );
    }
    assert_eq!(job("ping").trend.kind, TrendKind::Steady);
    assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
}
