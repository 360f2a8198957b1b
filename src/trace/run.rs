//! A run: the gadget attached, its ring buffer read until the deadline, a cancellation,
//! `max_events` or the traced process's exit, the kernel's tables read at the end, and
//! everything released before it returns.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::plan::{Plan, Prepared, load_error};
use super::tally::{Delivery, Group, MEMO_ENTRIES, Snapshot, Tally};
use super::{Mode, StoppedBy};
use crate::ebpf::gadget as runner;
use crate::error::{Code, EbpfError};
use crate::gadgets::hist::Hist;
use crate::gadgets::profile::{self, Sample};
use crate::gadgets::{self, Clock, Output};

/// Ring buffer per trace: room for bursts of several thousand events between reads.
pub(crate) const RING_BYTES: u32 = 4 * 1024 * 1024;
/// Ring buffer per background session: several run at once for minutes, so each gets a
/// quarter of a trace's (its memory is the kernel's, charged to the server's cgroup).
pub(crate) const SESSION_RING_BYTES: u32 = 1024 * 1024;
/// Longest wait for events before reading the ring buffer again. Gadgets do not wake the
/// reader for every event (that would cost the traced task more than the event): they wake
/// it when 128 KiB are pending, and otherwise the reader looks every POLL. So an event
/// reaches the server at most POLL after it happened, at ~100 idle wakeups a second.
pub(crate) const POLL: Duration = Duration::from_millis(10);
/// Longest the last read of the ring takes, once a trace's time is up or it is cancelled.
const FINAL_READ: Duration = Duration::from_millis(200);
/// How often a `pid`-scoped trace looks whether its process still runs.
pub(crate) const PROCESS_LOOK: Duration = Duration::from_millis(250);

pub(crate) fn read_error(e: impl std::fmt::Display) -> EbpfError {
    EbpfError::new(
        Code::GadgetFailed,
        format!("reading the gadget's tables: {e}"),
    )
}

/// Reads the kernel's tables of an aggregating gadget; `stacks: false` leaves a profile's
/// stacks unread (enough for progress).
pub(crate) fn snapshot(
    running: &runner::Running,
    plan: &Plan,
    clock: &Clock,
    stacks: bool,
) -> Result<Option<Snapshot>, EbpfError> {
    let decode = |key: &[u8]| (plan.decode)(key, clock);
    Ok(Some(match plan.output {
        Output::Events => return Ok(None),
        Output::KernelCounts(map) => Snapshot::Counts(
            running
                .map_entries(map)
                .map_err(read_error)?
                .into_iter()
                .filter_map(|(k, v)| Some((decode(&k)?, gadgets::decode_u64(&v))))
                .collect(),
        ),
        Output::KernelHistograms | Output::KernelValues => {
            let rows = running
                .map_entries("hists")
                .map_err(read_error)?
                .into_iter()
                .filter_map(|(k, v)| Some((decode(&k)?, Hist::parse(&v)?)))
                .collect();
            if plan.output == Output::KernelValues {
                Snapshot::Values(rows)
            } else {
                Snapshot::Histograms(rows)
            }
        }
        Output::Stacks => {
            let mut samples = Vec::new();
            for (k, v) in running.map_entries(profile::SAMPLES).map_err(read_error)? {
                let (pid, comm, user_id, kernel_id) = Sample::key(&k);
                let mut lost = false;
                let mut read = |id: i32| -> Vec<u64> {
                    if !stacks || id < 0 {
                        // -EFAULT: no user stack (a kernel thread); others: table full.
                        lost |= stacks && id != -libc::EFAULT;
                        return Vec::new();
                    }
                    running
                        .stack(profile::STACKS, id as u32)
                        .unwrap_or_else(|_| {
                            lost = true;
                            Vec::new()
                        })
                };
                let user = read(user_id);
                let kernel = read(kernel_id);
                samples.push(Sample {
                    pid,
                    comm,
                    user_id,
                    user,
                    user_names: None,
                    modules: Vec::new(),
                    kernel,
                    lost,
                    count: gadgets::decode_u64(&v),
                });
            }
            Snapshot::Stacks(samples)
        }
    }))
}

/// Kernel stacks of events (kfunc): the `stack_id` a decoder leaves becomes `stack`, the
/// stack's frames named through /proc/kallsyms.
struct KernelStacks {
    table: Option<runner::Stacks>,
    names: profile::KernelNames,
}

impl KernelStacks {
    fn new(running: &runner::Running) -> Self {
        Self {
            table: running.stacks(gadgets::kfunc::STACKS),
            names: profile::KernelNames::default(),
        }
    }

    fn annotate(&mut self, record: &mut serde_json::Map<String, serde_json::Value>) {
        // Only kfunc objects have the table: other gadgets' events are not looked at.
        let Some(table) = &self.table else {
            return;
        };
        let Some(id) = record.remove("stack_id").and_then(|v| v.as_u64()) else {
            return;
        };
        let addrs = table.get(id as u32);
        record.insert("stack".into(), self.names.names(&addrs).into());
    }
}

/// Which container an event's cgroup belongs to, from the names the gadget recorded for
/// it (so also for a container already gone), remembered per cgroup.
struct Containers {
    names: Option<runner::CgroupNames>,
    known: HashMap<u64, Option<(String, Option<String>)>>,
}

impl Containers {
    /// Cgroups remembered at most (then it starts afresh).
    const KNOWN: usize = 4096;

    fn new(running: &runner::Running) -> Self {
        Self {
            names: running.cgroup_names(),
            known: HashMap::new(),
        }
    }

    /// Adds `container_id` (and `pod_uid`) to an event whose cgroup is a container's.
    fn annotate(&mut self, record: &mut serde_json::Map<String, serde_json::Value>) {
        let Some(names) = &self.names else {
            return;
        };
        let Some(id) = record.get("cgroup_id").and_then(serde_json::Value::as_u64) else {
            return;
        };
        if id <= 1 {
            return;
        }
        if self.known.len() >= Self::KNOWN {
            self.known.clear();
        }
        let found = match self.known.get(&id) {
            Some(known) => known,
            None => {
                // Not recorded (its table was full): ask again next time.
                let Some((leaf, parent)) = names.get(id) else {
                    return;
                };
                let c = crate::ebpf::process::container_of(&format!("/{parent}/{leaf}"));
                self.known.entry(id).or_insert(c.map(|c| (c.id, c.pod_uid)))
            }
        };
        if let Some((container, pod)) = found {
            record.insert("container_id".into(), container.clone().into());
            if let Some(pod) = pod {
                record.insert("pod_uid".into(), pod.clone().into());
            }
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct RunEnd {
    pub stopped_by: StoppedBy,
    pub elapsed: Duration,
    pub dropped: u64,
    pub malformed: u64,
    /// Events decoded that the call's `filter` did not pass.
    pub filtered: u64,
    /// Events taken from the kernel but not decoded (over the rate limit).
    pub shed: u64,
    /// The kernel's tables at the end (aggregating gadgets).
    pub snapshot: Option<Snapshot>,
}

/// Attaches the gadget, hands every decoded event to `on_event` until the duration passes,
/// `cancel` fires or `on_event` returns false (then: max_events), calls `tick` about every
/// second with the time and events so far (and, when `live`, the kernel's tables), and
/// releases everything before returning.
pub fn execute(
    prepared: &Prepared,
    cancel: &tokio_util::sync::CancellationToken,
    live: bool,
    mut on_event: impl FnMut(Delivery<'_>) -> bool,
    mut tick: impl FnMut(Duration, u64, Option<Snapshot>),
    ready: impl FnOnce(),
) -> Result<RunEnd, EbpfError> {
    let plan = &prepared.plan;
    let ring = if live { SESSION_RING_BYTES } else { RING_BYTES };
    let scope = match &prepared.scope {
        Some(dir) => Some(dir.reopen().map_err(|e| {
            EbpfError::new(
                Code::InvalidArguments,
                format!("the container's cgroup went away: {e}"),
            )
        })?),
        None => None,
    };
    let sizes = prepared.map_sizes();
    let mut running = runner::start(
        plan.object,
        ring,
        &sizes,
        prepared.cfg,
        scope.as_ref(),
        &plan.programs,
    )
    .map_err(|e| load_error(plan.name, &e))?;
    crate::fault::hit(if live {
        "session.after_attach"
    } else {
        "trace.after_attach"
    })
    .map_err(|e| EbpfError::internal(e.to_string()))?;
    ready();
    let clock = Clock::now();
    let started = Instant::now();
    // A duration past what an Instant can hold is as good as forever.
    let deadline = started
        .checked_add(prepared.duration)
        .unwrap_or(started + Duration::from_secs(86_400 * 365));
    let mut total: u64 = 0;
    let mut malformed: u64 = 0;
    let mut shed: u64 = 0;
    let mut window = (Instant::now(), 0u64);
    let mut last_tick = Instant::now();
    let mut user_names = (plan.output == Output::Stacks).then(profile::UserNames::default);
    // Count mode: a record identical to an earlier one (all but its time stamp, the first 8
    // bytes) falls in the same group, so the group is looked up instead of decoding again.
    // Not when grouping by time, the one field those bytes hold.
    // The same for the filter, which passes or fails alike identical records (None: fails).
    let memoize = prepared.mode == Mode::Count
        && !prepared.group_by.iter().any(|f| f == "time")
        && !prepared.filter.as_ref().is_some_and(|f| f.reads("time"));
    let mut memo: HashMap<Box<[u8]>, Option<Group>> = HashMap::new();
    let mut containers = Containers::new(&running);
    let mut stacks = KernelStacks::new(&running);
    let clock_ref = &clock;
    let mut decode = move |bytes: &[u8]| {
        let mut record = (plan.decode)(bytes, clock_ref)?;
        containers.annotate(&mut record);
        stacks.annotate(&mut record);
        Some(record)
    };
    let passes = |record: &serde_json::Map<String, serde_json::Value>| {
        prepared.filter.as_ref().is_none_or(|f| f.matches(record))
    };
    let mut filtered: u64 = 0;
    let mut last_look = Instant::now();
    // Set once the followed process is gone: one more read takes what it left in the ring.
    let mut exited = false;
    // Set at the deadline or a cancellation: one last read takes what is in the ring (for at
    // most FINAL_READ), so the result holds every event up to the stop.
    let mut ending: Option<(StoppedBy, Instant)> = None;
    let stopped_by = loop {
        let now = Instant::now();
        if ending.is_none() {
            if cancel.is_cancelled() {
                ending = Some((StoppedBy::Cancelled, now + FINAL_READ));
            } else if now >= deadline {
                ending = Some((StoppedBy::Duration, now + FINAL_READ));
            }
        }
        if exited {
            running
                .poll(Duration::ZERO, |bytes| {
                    total += 1;
                    match decode(bytes) {
                        Some(record) if passes(&record) => on_event(Delivery::Event(record)),
                        Some(_) => {
                            total -= 1;
                            filtered += 1;
                            true
                        }
                        None => {
                            total -= 1;
                            malformed += 1;
                            true
                        }
                    }
                })
                .map_err(|e| EbpfError::new(Code::GadgetFailed, format!("reading events: {e}")))?;
            break StoppedBy::ProcessExited;
        }
        if let Some(process) = &prepared.process
            && last_look.elapsed() >= PROCESS_LOOK
        {
            last_look = Instant::now();
            exited = !process.still_alive();
        }
        let mut full = false;
        let mut drained: u32 = 0;
        let mut handle = |bytes: &[u8]| -> bool {
            total += 1;
            if prepared.max_rate > 0 {
                if window.0.elapsed() >= Duration::from_secs(1) {
                    window = (Instant::now(), 0);
                }
                if window.1 >= prepared.max_rate {
                    shed += 1;
                    return true;
                }
                window.1 += 1;
            }
            if memoize {
                let tail = bytes.get(8..).unwrap_or_default();
                match memo.get(tail) {
                    Some(Some(group)) => return on_event(Delivery::Group(group)),
                    Some(None) => {
                        total -= 1;
                        filtered += 1;
                        return true;
                    }
                    None => {}
                }
            }
            let Some(record) = decode(bytes) else {
                total -= 1;
                malformed += 1;
                return true;
            };
            let pass = passes(&record);
            if memoize {
                if memo.len() >= MEMO_ENTRIES {
                    memo.clear();
                }
                let group = pass.then(|| Tally::key_of(&prepared.group_by, &record));
                let tail: Box<[u8]> = bytes.get(8..).unwrap_or_default().into();
                if let Some(group) = memo.entry(tail).or_insert(group) {
                    return on_event(Delivery::Group(group));
                }
            }
            if !pass {
                total -= 1;
                filtered += 1;
                return true;
            }
            full = !on_event(Delivery::Event(record));
            !full
        };
        let wait = match ending {
            Some(_) => Duration::ZERO,
            None => POLL.min(deadline - now),
        };
        running
            .poll(wait, |bytes| {
                let more = handle(bytes);
                // Under a storm the ring never empties: stop reading at the deadline, a
                // cancellation or the next progress tick (the last read: at its time limit),
                // so the run ends on time however slow decoding is.
                drained = drained.wrapping_add(1);
                more && !(drained.is_multiple_of(1024)
                    && match ending {
                        Some((_, until)) => Instant::now() >= until,
                        None => {
                            cancel.is_cancelled()
                                || Instant::now() >= deadline
                                || last_tick.elapsed() >= Duration::from_secs(1)
                        }
                    })
            })
            .map_err(|e| EbpfError::new(Code::GadgetFailed, format!("reading events: {e}")))?;
        if full {
            break StoppedBy::MaxEvents;
        }
        if let Some((stopped_by, _)) = ending {
            break stopped_by;
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            let mut snap = snapshot(&running, plan, &clock, live || user_names.is_some())?;
            if let (Some(names), Some(Snapshot::Stacks(samples))) = (&mut user_names, &mut snap) {
                names.learn(samples);
                names.apply(samples);
            }
            let so_far = total + snap.as_ref().map_or(0, Snapshot::total);
            tick(started.elapsed(), so_far, if live { snap } else { None });
        }
    };
    let elapsed = started.elapsed();
    let dropped = running.dropped();
    // Kernel tables are read while the gadget is still loaded, and before symbolizing
    // anything, processes that were sampled may still be alive.
    let mut snapshot = snapshot(&running, plan, &clock, true)?;
    if let (Some(mut names), Some(Snapshot::Stacks(samples))) = (user_names, &mut snapshot) {
        names.learn(samples);
        names.apply(samples);
    }
    // Detach and release everything before answering.
    drop(running);
    Ok(RunEnd {
        stopped_by,
        elapsed,
        dropped,
        malformed,
        filtered,
        shed,
        snapshot,
    })
}
