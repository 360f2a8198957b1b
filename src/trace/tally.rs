//! What a run's events add up to: counts grouped by fields (bounded in groups), what the
//! kernel aggregated, and the result rows built from both within a byte budget.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{CountRow, Cut, Mode};
use crate::gadgets::hist::{self, Hist, HistRow};
use crate::gadgets::profile::{self, FunctionRow, Sample, StackRow};

/// Distinct groups a count keeps; events of further groups are counted in `other`.
pub const MAX_GROUPS: usize = 10_000;

/// A group of a count: its identity (the values as JSON text) and its field values.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub key: Map<String, Value>,
}

/// What the reader hands over: a decoded event (events mode), or the group an event falls
/// in (count mode, where repeated records are not decoded again).
#[derive(Debug)]
pub enum Delivery<'a> {
    Event(Map<String, Value>),
    Group(&'a Group),
}

/// Count mode remembers the group of this many distinct records (then starts afresh).
pub(crate) const MEMO_ENTRIES: usize = 16_384;

/// Counts of events grouped by fields.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub(crate) groups: HashMap<String, (Map<String, Value>, u64)>,
    /// Events of groups beyond [`MAX_GROUPS`]: counted, not kept apart.
    pub(crate) other: u64,
}

impl Tally {
    /// The group a record falls in: its identity and its field values.
    pub fn key_of(group_by: &[String], record: &Map<String, Value>) -> Group {
        let key: Map<String, Value> = group_by
            .iter()
            .map(|f| (f.clone(), record.get(f).cloned().unwrap_or(Value::Null)))
            .collect();
        let id = Value::Object(key.clone()).to_string();
        Group { id, key }
    }

    pub fn add(&mut self, group_by: &[String], record: &Map<String, Value>, n: u64) {
        self.add_group(&Self::key_of(group_by, record), n);
    }

    pub fn add_group(&mut self, group: &Group, n: u64) {
        let full = self.groups.len() >= MAX_GROUPS;
        match self.groups.get_mut(&group.id) {
            Some(entry) => entry.1 += n,
            None if full => self.other += n,
            None => {
                self.groups.insert(group.id.clone(), (group.key.clone(), n));
            }
        }
    }

    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    /// Events counted in groups past [`MAX_GROUPS`].
    pub fn other(&self) -> u64 {
        self.other
    }

    /// Every event counted, in kept groups or not.
    pub fn total(&self) -> u64 {
        self.groups.values().map(|(_, n)| n).sum::<u64>() + self.other
    }

    /// The `n` largest groups, largest first (ties in key order).
    pub fn top(&self, n: usize) -> Vec<CountRow> {
        let mut rows: Vec<_> = self.groups.iter().collect();
        rows.sort_by(|a, b| b.1.1.cmp(&a.1.1).then_with(|| a.0.cmp(b.0)));
        rows.into_iter()
            .take(n)
            .map(|(_, (key, count))| CountRow {
                key: key.clone(),
                count: *count,
            })
            .collect()
    }
}

/// What the kernel has aggregated so far (its tables are cumulative: a later snapshot
/// replaces an earlier one).
#[derive(Debug, Clone)]
pub enum Snapshot {
    Counts(Vec<(Map<String, Value>, u64)>),
    Histograms(Vec<(Map<String, Value>, Hist)>),
    /// Histograms of a value, not a latency.
    Values(Vec<(Map<String, Value>, Hist)>),
    Stacks(Vec<Sample>),
}

impl Snapshot {
    /// Events it stands for: counts, observations or samples.
    pub fn total(&self) -> u64 {
        match self {
            Snapshot::Counts(rows) => rows.iter().map(|(_, n)| n).sum(),
            Snapshot::Histograms(rows) | Snapshot::Values(rows) => {
                rows.iter().map(|(_, h)| h.count).sum()
            }
            Snapshot::Stacks(samples) => samples.iter().map(|s| s.count).sum(),
        }
    }
}

/// The aggregate rows of a `trace` or `trace_read` result: counts, histograms or a profile.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct Aggregates {
    /// count mode: the largest groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Vec<CountRow>>,
    /// count and histogram modes: distinct groups seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<usize>,
    /// histogram mode: one per group, largest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub histograms: Option<Vec<HistRow>>,
    /// histogram mode of the tracepoint gadget's `value`: one per group, largest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<hist::ValueRow>>,
    /// profile: the functions CPU samples were in, most first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub functions: Option<Vec<FunctionRow>>,
    /// profile: the most sampled stacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stacks: Option<Vec<StackRow>>,
    /// profile: folded stacks (`comm;root;...;leaf count`) for flame graphs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folded: Option<Vec<String>>,
    /// profile: the files of frames without a symbol (`file+0xADDR`), with build ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modules: Option<Vec<profile::ModuleRow>>,
}

/// The aggregate part of a result, with how much of it fits.
#[derive(Debug, Default)]
pub struct Summary {
    pub rows: Aggregates,
    /// Events the rows stand for.
    pub returned: usize,
    pub truncated: bool,
    /// What cut the rows short.
    pub cut: Vec<Cut>,
    pub hint: Option<String>,
}

/// Builds the aggregate part of a result from what user space counted (`tally`) and what
/// the kernel aggregated (`snapshot`), within `budget` bytes of rows.
pub fn summarize(
    mode: Mode,
    group_by: &[String],
    top: usize,
    tally: &Tally,
    snapshot: Option<&Snapshot>,
    budget: usize,
) -> Summary {
    let mut out = Summary::default();
    let counted = |tally: &Tally, out: &mut Summary| {
        let mut rows = tally.top(top);
        if rows.len() < tally.groups() {
            out.cut.push(Cut::Top);
            out.hint = Some(format!(
                "the {} largest of {} groups; raise `top` or add filters for the rest",
                rows.len(),
                tally.groups()
            ));
        }
        let cut = crate::rows::fit_rows(&mut rows, budget);
        out.returned = rows.iter().map(|r| r.count as usize).sum();
        out.truncated = rows.len() < tally.groups() || tally.other() > 0;
        if cut {
            out.cut.push(Cut::Size);
            note(
                &mut out.hint,
                "groups cut to fit server.max_result_bytes; lower top".into(),
            );
        }
        if tally.other() > 0 {
            out.cut.push(Cut::Groups);
            note(
                &mut out.hint,
                format!(
                    "over {MAX_GROUPS} distinct groups: {} events of further groups were \
                     counted but not kept apart; group by fewer fields or add filters",
                    tally.other()
                ),
            );
        }
        out.rows.groups = Some(tally.groups());
        out.rows.counts = Some(rows);
    };
    match (mode, snapshot) {
        (Mode::Events, _) => {}
        (Mode::Histogram, Some(Snapshot::Histograms(entries))) => {
            let rows = hist::grouped(entries, group_by);
            out.rows.histograms = Some(ranked(rows, top, budget, &mut out, |r| r.count));
        }
        (Mode::Histogram, Some(Snapshot::Values(entries))) => {
            let rows = hist::merged(entries, group_by)
                .into_iter()
                .map(|(key, h)| hist::ValueRow::new(key, &h))
                .collect();
            out.rows.values = Some(ranked(rows, top, budget, &mut out, |r| r.count));
        }
        (Mode::Histogram, _) => out.rows.histograms = Some(Vec::new()),
        (Mode::Count, Some(Snapshot::Stacks(samples))) => {
            let mut by_process = Tally::default();
            for s in samples {
                let mut record = Map::new();
                record.insert("pid".into(), s.pid.into());
                record.insert("comm".into(), s.comm.clone().into());
                by_process.add(group_by, &record, s.count);
            }
            counted(&by_process, &mut out);
            let report = profile::report(samples, top);
            // Functions and stacks are small; folded stacks get the rest of the budget.
            let (mut functions, mut stacks, mut folded) =
                (report.functions, report.stacks, report.folded);
            let all_folded = folded.len();
            let mut cut = crate::rows::fit_rows(&mut functions, budget / 5);
            cut |= crate::rows::fit_rows(&mut stacks, budget * 2 / 5);
            cut |= crate::rows::fit_rows(&mut folded, budget / 5);
            if folded.len() < all_folded || cut {
                out.truncated = true;
                out.cut.push(Cut::Size);
                note(
                    &mut out.hint,
                    format!(
                        "{} of {all_folded} folded stacks fit server.max_result_bytes; the largest are kept",
                        folded.len()
                    ),
                );
            }
            out.rows.functions = Some(functions);
            out.rows.stacks = Some(stacks);
            out.rows.folded = Some(folded);
            out.rows.modules = (!report.modules.is_empty()).then_some(report.modules);
        }
        (Mode::Count, snap) => {
            let mut merged = tally.clone();
            if let Some(Snapshot::Counts(rows)) = snap {
                for (record, n) in rows {
                    merged.add(group_by, record, *n);
                }
            }
            counted(&merged, &mut out);
        }
    }
    out
}

/// Histogram rows (largest first) cut to `top` and to `budget` bytes, with what cut them.
fn ranked<R: Serialize>(
    mut rows: Vec<R>,
    top: usize,
    budget: usize,
    out: &mut Summary,
    count: impl Fn(&R) -> u64,
) -> Vec<R> {
    let groups = rows.len();
    rows.truncate(top);
    if rows.len() < groups {
        out.cut.push(Cut::Top);
        out.hint = Some(format!(
            "the {} largest of {groups} histograms; raise `top` or add filters for the rest",
            rows.len()
        ));
    }
    let cut = crate::rows::fit_rows(&mut rows, budget);
    out.returned = rows.iter().map(|r| count(r) as usize).sum();
    out.truncated = rows.len() < groups;
    if cut {
        out.cut.push(Cut::Size);
        note(
            &mut out.hint,
            "histograms cut to fit server.max_result_bytes; lower top or group by fewer fields"
                .into(),
        );
    }
    out.rows.groups = Some(groups);
    rows
}

pub(crate) fn note(out: &mut Option<String>, note: String) {
    *out = Some(match out.take() {
        Some(h) => format!("{h}; {note}"),
        None => note,
    });
}

/// Names the shedding among the cuts, and in the hint what the kernel dropped and what the
/// server shed.
pub fn note_shed(cuts: &mut Vec<Cut>, hint: &mut Option<String>, dropped: u64, shed: u64) {
    if shed > 0 {
        super::add_cut(cuts, Cut::Shed);
    }
    note_losses(hint, dropped, shed);
}

/// Adds to the hint what the kernel dropped and what the server shed.
pub fn note_losses(out: &mut Option<String>, dropped: u64, shed: u64) {
    if dropped > 0 {
        note(
            out,
            format!(
                "{dropped} events were dropped in the kernel (ring buffer or table full); add filters or shorten the trace"
            ),
        );
    }
    if shed > 0 {
        note(
            out,
            format!(
                "{shed} events were counted but not decoded: over resources.max_events_per_second; add filters or raise it"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(comm: &str, pid: u32) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("comm".into(), json!(comm));
        m.insert("pid".into(), json!(pid));
        m
    }

    #[test]
    fn groups_count_and_rank_with_stable_ties() {
        let by = vec!["comm".to_owned()];
        let mut t = Tally::default();
        for (comm, n) in [("b", 2), ("a", 2), ("c", 5), ("b", 1)] {
            t.add(&by, &record(comm, 1), n);
        }
        assert_eq!(t.groups(), 3);
        assert_eq!(t.total(), 10);
        let top: Vec<(String, u64)> = t
            .top(10)
            .into_iter()
            .map(|r| (r.key["comm"].as_str().unwrap().to_owned(), r.count))
            .collect();
        assert_eq!(top, [("c".into(), 5), ("b".into(), 3), ("a".into(), 2)]);
        assert_eq!(t.top(1).len(), 1);
    }

    #[test]
    fn a_missing_field_groups_as_null() {
        let by = vec!["comm".to_owned(), "dport".to_owned()];
        let g = Tally::key_of(&by, &record("x", 1));
        assert_eq!(g.key["dport"], Value::Null);
        assert_eq!(g.id, r#"{"comm":"x","dport":null}"#);
    }

    #[test]
    fn groups_are_bounded_and_the_rest_is_counted() {
        let by = vec!["pid".to_owned()];
        let mut t = Tally::default();
        for pid in 0..(MAX_GROUPS as u32 + 50) {
            t.add(&by, &record("p", pid), 1);
        }
        assert_eq!(t.groups(), MAX_GROUPS);
        assert_eq!(t.other(), 50);
        assert_eq!(t.total(), MAX_GROUPS as u64 + 50);
        // A group already kept still counts after the bound is reached.
        t.add(&by, &record("p", 0), 4);
        assert_eq!(t.other(), 50);
        let s = summarize(Mode::Count, &by, 5, &t, None, 1 << 20);
        assert!(s.truncated);
        assert_eq!(s.cut, [Cut::Top, Cut::Groups]);
        let hint = s.hint.unwrap();
        assert!(hint.contains("50 events of further groups"), "{hint}");
        assert!(
            hint.contains(&format!(
                "the 5 largest of {MAX_GROUPS} groups; raise `top`"
            )),
            "{hint}"
        );
        assert_eq!(s.rows.groups, Some(MAX_GROUPS));
        assert_eq!(s.rows.counts.unwrap()[0].count, 5);
    }

    #[test]
    fn kernel_counts_merge_with_user_counts() {
        let by = vec!["comm".to_owned()];
        let mut t = Tally::default();
        t.add(&by, &record("a", 1), 1);
        let snap = Snapshot::Counts(vec![(record("a", 1), 4), (record("b", 2), 2)]);
        assert_eq!(snap.total(), 6);
        let s = summarize(Mode::Count, &by, 10, &t, Some(&snap), 1 << 20);
        let counts = s.rows.counts.unwrap();
        assert_eq!(counts[0].count, 5);
        assert_eq!(counts[1].count, 2);
        assert!(!s.truncated && s.cut.is_empty() && s.hint.is_none());
        assert_eq!(s.returned, 7);
    }

    #[test]
    fn rows_are_cut_to_the_byte_budget() {
        let by = vec!["comm".to_owned()];
        let mut t = Tally::default();
        for i in 0..200 {
            t.add(&by, &record(&format!("process-{i:04}"), i), 1);
        }
        let s = summarize(Mode::Count, &by, 200, &t, None, 1000);
        let counts = s.rows.counts.unwrap();
        assert!(counts.len() < 200 && !counts.is_empty(), "{}", counts.len());
        assert!(serde_json::to_string(&counts).unwrap().len() <= 1000);
        assert!(s.truncated);
        assert_eq!(
            s.cut,
            [Cut::Size],
            "all 200 groups were asked for: only size cut"
        );
        assert!(s.hint.unwrap().contains("lower top"));
    }

    #[test]
    fn losses_are_explained() {
        let mut hint = None;
        note_losses(&mut hint, 0, 0);
        assert!(hint.is_none());
        note_losses(&mut hint, 3, 4);
        let h = hint.unwrap();
        assert!(h.contains("3 events were dropped in the kernel"), "{h}");
        assert!(h.contains("4 events were counted but not decoded"), "{h}");
        let (mut cuts, mut hint) = (vec![Cut::Top], None);
        note_shed(&mut cuts, &mut hint, 0, 0);
        assert_eq!(
            (cuts.as_slice(), hint.is_none()),
            ([Cut::Top].as_slice(), true)
        );
        note_shed(&mut cuts, &mut hint, 0, 2);
        note_shed(&mut cuts, &mut hint, 0, 2);
        assert_eq!(cuts, [Cut::Top, Cut::Shed]);
    }
}
