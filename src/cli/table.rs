//! `call --output table`: a result for people, its rows as aligned columns, its totals as
//! `key  value` lines, other lists as tables, latency histograms as bars.

use serde_json::Value;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// The view for people: the tool's rows as aligned columns; then its other fields (totals,
/// cursors, why it stopped) as `key  value` lines; then any other list of objects as a table
/// under its name, latency histograms as bars.
pub(super) fn table_view(value: &Value, list_field: Option<&str>) -> String {
    let Some(fields) = value.as_object() else {
        return format!("{}\n", scalar(value));
    };
    let mut out = String::new();
    if let Some(field) = list_field
        && let Some(rows) = fields.get(field).and_then(Value::as_array)
    {
        if rows.is_empty() {
            out.push_str(&format!("(no {field})\n"));
        } else {
            out.push_str(&table(rows));
        }
    }
    let mut lines = Vec::new();
    let mut lists = Vec::new();
    for (k, v) in fields {
        if Some(k.as_str()) == list_field && v.is_array() {
            continue;
        }
        match v.as_array() {
            Some(rows) if !rows.is_empty() && rows.iter().all(Value::is_object) => {
                lists.push((k, rows));
            }
            _ => flatten(k, v, &mut lines),
        }
    }
    if !lines.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in &lines {
            out.push_str(&format!("{k:width$}  {v}\n"));
        }
    }
    for (name, rows) in lists {
        if !out.is_empty() {
            out.push('\n');
        }
        if name == "histograms" {
            out.push_str(&histograms(rows));
        } else {
            out.push_str(&format!("{name}:\n{}", table(rows)));
        }
    }
    out
}

/// Log2 latency histograms as bars, one block per group, in the style of bpftrace's `hist()`.
pub(super) fn histograms(groups: &[Value]) -> String {
    const BAR: usize = 40;
    let mut out = String::new();
    for (i, group) in groups.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let key = group
            .get("key")
            .and_then(Value::as_object)
            .filter(|k| !k.is_empty())
            .map(|k| {
                k.iter()
                    .map(|(f, v)| format!("{f}={}", scalar(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| "all".to_owned());
        let stat = |f: &str| group.get(f).map(scalar).unwrap_or_default();
        out.push_str(&format!(
            "{key}: {} observations, avg {} us, p50 <= {} us, p90 <= {} us, p99 <= {} us\n",
            stat("count"),
            stat("avg_us"),
            stat("p50_us"),
            stat("p90_us"),
            stat("p99_us")
        ));
        let buckets: Vec<(String, u64)> = group
            .get("buckets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|b| {
                let bound = |f: &str| b.get(f).and_then(Value::as_u64).unwrap_or(0);
                let range = format!("[{}, {}]", bound("low_us"), bound("high_us"));
                (range, bound("count"))
            })
            .collect();
        let most = buckets.iter().map(|(_, c)| *c).max().unwrap_or(0).max(1);
        let range_width = buckets.iter().map(|(r, _)| r.len()).max().unwrap_or(0);
        let count_width = buckets
            .iter()
            .map(|(_, c)| c.to_string().len())
            .max()
            .unwrap_or(0);
        for (range, count) in &buckets {
            let filled = usize::try_from(count * BAR as u64 / most).unwrap_or(BAR);
            out.push_str(&format!(
                "{range:>range_width$} {count:>count_width$} |{:<BAR$}|\n",
                "@".repeat(filled)
            ));
        }
    }
    out
}

pub(super) fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(super) fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                flatten(&key(k), child, out);
            }
        }
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            out.push((
                prefix.to_owned(),
                a.iter().map(scalar).collect::<Vec<_>>().join(", "),
            ));
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), child, out);
            }
        }
        other => out.push((prefix.to_owned(), scalar(other))),
    }
}

/// Terminal columns a cell takes at most; longer ones end in `…` (`-o json` has them whole).
const MAX_CELL: usize = 48;

/// `text` in at most `max` terminal columns (by display width: wide characters count two).
fn cut(text: &str, max: usize) -> String {
    if text.width() <= max {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > max - 1 {
            break;
        }
        used += w;
        out.push(c);
    }
    out.push('…');
    out
}

/// Rows as aligned columns; nested objects become dotted columns (`value.bytes`).
pub(super) fn table(rows: &[Value]) -> String {
    let flat: Vec<Vec<(String, String)>> = rows
        .iter()
        .map(|r| {
            let mut cells = Vec::new();
            flatten("", r, &mut cells);
            cells
        })
        .collect();
    let mut columns: Vec<String> = Vec::new();
    for row in &flat {
        for (k, _) in row {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let cells: Vec<Vec<String>> = flat
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| {
                    row.iter()
                        .find(|(k, _)| k == c)
                        .map(|(_, v)| v.replace(", ", ","))
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();
    let cells: Vec<Vec<String>> = cells
        .into_iter()
        .map(|row| row.into_iter().map(|c| cut(&c, MAX_CELL)).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].width())
                .chain([c.width()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: &[String]| -> String {
        let mut s = vals
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v}{}", " ".repeat(w.saturating_sub(v.width()))))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let mut out = line(&header);
    for r in &cells {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cli::args::OutputFormat;
    use crate::cli::call::render;

    #[test]
    fn table_renders_rows_with_union_of_columns() {
        let rows = vec![
            json!({"id": 1, "name": "a", "maps": [3, 4]}),
            json!({"id": 22, "extra": true}),
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["ID", "NAME", "MAPS", "EXTRA"]
        );
        assert!(lines[1].contains("3,4"));
        assert!(lines[2].ends_with("true"));
    }

    #[test]
    fn columns_align_by_display_width_and_long_cells_are_cut() {
        let long = "x".repeat(300);
        let rows = vec![
            json!({"name": "日本語", "path": long, "n": 1}),
            json!({"name": "abc", "path": "/etc", "n": 2}),
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        // Both rows put `n` in the same terminal column.
        let col = |l: &str| l[..l.rfind(char::is_numeric).unwrap()].width();
        assert_eq!(col(lines[1]), col(lines[2]), "{t}");
        assert!(lines.iter().all(|l| l.width() < 80), "{t}");
        assert!(lines[1].contains('…'));
        assert_eq!(cut("日本語", 4), "日…");
        assert_eq!(cut("short", 48), "short");
    }

    #[test]
    fn objects_flatten_to_dotted_keys() {
        let v = json!({"kernel": {"release": "6.1", "caps": ["A", "B"]}, "n": 1});
        let s = render(&v, None, OutputFormat::Table);
        assert!(s.contains("kernel.release  6.1"), "{s}");
        assert!(s.contains("kernel.caps     A, B"), "{s}");
    }

    #[test]
    fn table_view_puts_rows_first_then_totals_then_other_lists() {
        let v = json!({
            "events": [{"pid": 1, "comm": "a"}],
            "events_total": 7,
            "stopped_by": "duration",
            "counts": [{"key": {"comm": "a"}, "count": 7}],
        });
        let s = render(&v, Some("events"), OutputFormat::Table);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["PID", "COMM"]
        );
        assert!(
            s.contains("events_total  7\nstopped_by    duration\n"),
            "{s}"
        );
        assert!(s.contains("counts:\nKEY.COMM  COUNT\na         7\n"), "{s}");
        let empty = render(
            &json!({"events": [], "events_total": 0}),
            Some("events"),
            OutputFormat::Table,
        );
        assert!(empty.starts_with("(no events)\n"), "{empty}");
    }

    #[test]
    fn histograms_draw_bars_scaled_to_the_fullest_bucket() {
        let v = json!({"histograms": [{
            "key": {"comm": "dd"}, "count": 30, "avg_us": 5.5, "p50_us": 7, "p90_us": 15, "p99_us": 15,
            "buckets": [
                {"low_us": 4, "high_us": 7, "count": 20},
                {"low_us": 8, "high_us": 15, "count": 10},
            ],
        }]});
        let s = render(&v, None, OutputFormat::Table);
        let lines: Vec<&str> = s.lines().collect();
        assert!(
            lines[0].starts_with("comm=dd: 30 observations, avg 5.5 us, p50 <= 7 us"),
            "{s}"
        );
        assert_eq!(lines[1], format!(" [4, 7] 20 |{}|", "@".repeat(40)));
        assert_eq!(
            lines[2],
            format!("[8, 15] 10 |{}{}|", "@".repeat(20), " ".repeat(20))
        );
    }

    #[test]
    fn jsonl_prints_one_row_per_line_then_the_summary() {
        let v = json!({"rows": [{"a": 1}, {"a": 2}], "total": 2});
        assert_eq!(
            render(&v, Some("rows"), OutputFormat::Jsonl),
            "{\"a\":1}\n{\"a\":2}\n{\"summary\":{\"total\":2}}\n"
        );
        assert_eq!(render(&v, None, OutputFormat::Jsonl).lines().count(), 1);
    }
}
