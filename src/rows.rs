//! Fitting a result's rows into a byte budget: the leading rows whose JSON fits, so a
//! page's cursor can continue exactly after the last row kept.

use serde::Serialize;

/// Keeps the leading rows that fit `budget` bytes of JSON (at least one). Returns whether
/// rows were dropped; the caller then sets its cursor after the last row kept.
pub fn fit_rows<T: Serialize>(rows: &mut Vec<T>, budget: usize) -> bool {
    let mut used = 0;
    let keep = rows
        .iter()
        .take_while(|row| {
            used += serde_json::to_vec(row).map_or(0, |v| v.len()) + 1;
            used <= budget
        })
        .count()
        .max(1);
    let cut = keep < rows.len();
    rows.truncate(keep);
    cut
}
