//! A small logger to stderr: `time LEVEL message`, level from `LABGATE_LOG`.
//!
//! One line per request is one `write` per request if written where it is logged, taken in
//! the request's time and under the lock of stderr. So info and debug lines go through a
//! writer thread that writes everything that accumulated with one system call, at most every
//! 2 ms (right away when idle; under load, many lines at once); warnings and errors are written
//! at once, after every line queued before them. [`flush`] writes what is queued (before the
//! process exits).

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Queued bytes above which lines are written at once: a sink that does not keep up (a full
/// pipe) slows the requests down instead of filling memory.
const MAX_PENDING: usize = 1 << 20;

/// Shortest time between two writes of the writer thread (how late an info line may be).
const BATCH_PAUSE: Duration = Duration::from_millis(2);

/// Lines waiting for the writer thread.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    writer_waiting: bool,
}

/// Writes lines to a sink in the order they were queued, most of them from a writer thread.
struct Batcher {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Held while writing, so that lines taken from `pending` reach the sink in order.
    sink: Mutex<Box<dyn Write + Send>>,
    /// Whether the writer thread runs; until then every line is written at once.
    threaded: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Batcher {
    fn new(sink: Box<dyn Write + Send>) -> Batcher {
        Batcher {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            sink: Mutex::new(sink),
            threaded: AtomicBool::new(false),
        }
    }

    /// Starts the writer thread; without one, lines keep being written at once.
    fn start(&'static self) {
        let spawned = std::thread::Builder::new()
            .name("labgate log writer".into())
            .spawn(move || self.run_writer());
        self.threaded.store(spawned.is_ok(), Ordering::SeqCst);
    }

    fn push(&self, line: &[u8], urgent: bool) {
        if !urgent && self.threaded.load(Ordering::Relaxed) {
            let mut pending = lock(&self.pending);
            if pending.bytes.len() < MAX_PENDING {
                pending.bytes.extend_from_slice(line);
                let wake = std::mem::take(&mut pending.writer_waiting);
                drop(pending);
                if wake {
                    self.wake.notify_one();
                }
                return;
            }
        }
        let mut sink = lock(&self.sink);
        let queued = std::mem::take(&mut lock(&self.pending).bytes);
        let _ = sink.write_all(&queued);
        let _ = sink.write_all(line);
        let _ = sink.flush();
    }

    fn flush(&self) {
        let mut sink = lock(&self.sink);
        let queued = std::mem::take(&mut lock(&self.pending).bytes);
        let _ = sink.write_all(&queued);
        let _ = sink.flush();
    }

    fn run_writer(&self) {
        let mut batch = Vec::new();
        loop {
            {
                let mut pending = lock(&self.pending);
                while pending.bytes.is_empty() {
                    pending.writer_waiting = true;
                    pending = self.wake.wait(pending).unwrap_or_else(|p| p.into_inner());
                }
            }
            // Not holding the sink while waiting: urgent lines must not wait for the next one.
            let mut sink = lock(&self.sink);
            batch.clear();
            std::mem::swap(&mut batch, &mut lock(&self.pending).bytes);
            if !batch.is_empty() {
                let _ = sink.write_all(&batch);
                let _ = sink.flush();
            }
            drop(sink);
            // Lines logged meanwhile wait for the next write: under load, one write and one
            // wake-up of this thread every BATCH_PAUSE instead of one every few requests.
            std::thread::sleep(BATCH_PAUSE);
        }
    }
}

struct StderrLogger {
    batcher: Batcher,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = format_line(record.level(), record.args());
            self.batcher
                .push(line.as_bytes(), record.level() <= Level::Warn);
        }
    }

    fn flush(&self) {
        self.batcher.flush();
    }
}

/// `2025-01-31T12:00:00.000Z INFO  message` and a newline.
fn format_line(level: Level, message: &std::fmt::Arguments<'_>) -> String {
    let mut line = String::with_capacity(128);
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    push_timestamp(&mut line, since_epoch.as_millis());
    let _ = writeln!(line, " {level:5} {message}");
    line
}

/// Appends `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC) for milliseconds since the epoch: what chrono's
/// `%Y-%m-%dT%H:%M:%S%.3fZ` prints, without its formatting machinery on every log line.
fn push_timestamp(out: &mut String, millis: u128) {
    let secs = (millis / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year.clamp(0, 9999) as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, (rem / 3600) as u64);
    put(14, 2, (rem % 3600 / 60) as u64);
    put(17, 2, (rem % 60) as u64);
    put(20, 3, (millis % 1000) as u64);
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
}

static LOGGER: OnceLock<StderrLogger> = OnceLock::new();

/// Parses a `LABGATE_LOG` value.
pub fn parse_level(value: Option<&str>) -> Result<LevelFilter, String> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("info") => Ok(LevelFilter::Info),
        Some("debug") => Ok(LevelFilter::Debug),
        Some("warn") => Ok(LevelFilter::Warn),
        Some("error") => Ok(LevelFilter::Error),
        Some(other) => Err(format!(
            "LABGATE_LOG={other}: expected one of debug, info, warn, error"
        )),
    }
}

pub fn init(level: LevelFilter) {
    let mut fresh = false;
    let logger = LOGGER.get_or_init(|| {
        fresh = true;
        StderrLogger {
            batcher: Batcher::new(Box::new(std::io::stderr())),
        }
    });
    if fresh && log::set_logger(logger).is_ok() {
        logger.batcher.start();
        log::set_max_level(level);
    }
}

/// Writes the lines still queued: call before the process exits.
pub fn flush() {
    log::logger().flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A sink the test can read.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn queued_lines_keep_their_order_and_urgent_ones_come_after_them() {
        let out = Shared::default();
        let batcher: &'static Batcher = Box::leak(Box::new(Batcher::new(Box::new(out.clone()))));
        batcher.push(b"before the writer\n", false);
        batcher.start();
        std::thread::scope(|s| {
            for t in 0..4 {
                s.spawn(move || {
                    for i in 0..500 {
                        batcher.push(format!("t{t} {i}\n").as_bytes(), false);
                        if i % 100 == 99 {
                            batcher.push(format!("t{t} {i} urgent\n").as_bytes(), true);
                        }
                    }
                });
            }
        });
        batcher.flush();
        let text = String::from_utf8(lock(&out.0).clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + 4 * 505, "every line, once");
        assert_eq!(lines[0], "before the writer");
        for t in 0..4 {
            let own: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            let mut expected = Vec::new();
            for i in 0..500 {
                expected.push(format!("t{t} {i}"));
                if i % 100 == 99 {
                    expected.push(format!("t{t} {i} urgent"));
                }
            }
            assert_eq!(own, expected, "thread {t}'s lines in its order");
        }
    }

    #[test]
    fn a_line_reads_time_level_message() {
        let line = format_line(Level::Info, &format_args!("GET / 200 {}", 1));
        assert!(line.ends_with("Z INFO  GET / 200 1\n"), "{line}");
        assert_eq!(&line[4..5], "-");
    }

    #[test]
    fn timestamps_read_like_chronos() {
        let instants = [
            0i64,
            951_782_400_123,   // 2000-02-29
            1_709_251_199_999, // 2024-02-29 23:59:59.999
            4_102_444_800_000, // 2100-01-01
            1_764_115_200_500,
        ];
        for millis in instants {
            let mut ours = String::new();
            push_timestamp(&mut ours, millis as u128);
            let theirs = chrono::DateTime::from_timestamp_millis(millis)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string();
            assert_eq!(ours, theirs);
        }
    }
}
