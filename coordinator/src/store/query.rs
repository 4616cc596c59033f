//! What a web page asks of a sweep's trials: one sorted, filtered page of a table, and
//! columns of numbers over every trial for its plots. Both run on a read-only
//! connection (WAL: beside the writer, never blocking it) and neither returns more than
//! it was asked for, whatever the sweep's size.

use rusqlite::params_from_iter;
use rusqlite::types::Value;

use ridgeline_common::ids::SweepId;
use ridgeline_common::params::ParamValue;

use super::read::{TRIAL_COLUMNS, trial_row};
use super::{Store, StoreError, TrialRow, parse_json};
use crate::core::UnitState;

/// What a table is sorted by.
#[derive(Clone, Debug, PartialEq)]
pub enum SortKey {
    /// Trial number.
    Trial,
    /// State name.
    State,
    /// Attempts so far.
    Attempts,
    /// Seconds of the final attempt.
    Duration,
    /// Worker of the last attempt.
    Worker,
    /// A parameter's value (numbers before text, as SQLite orders them).
    Param(String),
    /// A final metric's value.
    Metric(String),
}

impl SortKey {
    /// `trial`, `state`, `attempts`, `duration`, `worker`, `param:NAME`, `metric:NAME`
    /// (empty: `trial`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "" | "trial" => SortKey::Trial,
            "state" => SortKey::State,
            "attempts" => SortKey::Attempts,
            "duration" => SortKey::Duration,
            "worker" => SortKey::Worker,
            _ => match s.split_once(':') {
                Some(("param", n)) if !n.is_empty() => SortKey::Param(n.to_owned()),
                Some(("metric", n)) if !n.is_empty() => SortKey::Metric(n.to_owned()),
                _ => return None,
            },
        })
    }

    /// The SQL expression and its bound value, if any. Names are bound, never spliced.
    fn sql(&self) -> (&'static str, Option<String>) {
        match self {
            SortKey::Trial => ("trial", None),
            SortKey::State => ("state", None),
            SortKey::Attempts => ("attempts", None),
            SortKey::Duration => ("duration_s", None),
            SortKey::Worker => ("worker", None),
            SortKey::Param(n) => (
                "json_extract(params_json, ?)",
                Some(format!("$.\"{}\"", n.replace('"', "\\\""))),
            ),
            SortKey::Metric(n) => (
                "(SELECT json_extract(m.value, '$[1]') FROM json_each(final_json) m
                  WHERE json_extract(m.value, '$[0]') = ?)",
                Some(n.clone()),
            ),
        }
    }
}

/// One page of a table.
#[derive(Clone, Debug)]
pub struct TrialQuery {
    /// Rows skipped.
    pub offset: u32,
    /// Rows returned, at most.
    pub limit: u32,
    /// Order.
    pub sort: SortKey,
    /// Largest first.
    pub descending: bool,
    /// Only these states (all when empty).
    pub states: Vec<UnitState>,
    /// Whether to load each row's history.
    pub with_history: bool,
}

/// A column over every trial: numbers, with a choice's text values as labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Column {
    /// NaN where a trial has no value.
    pub values: Vec<f64>,
    /// Text values seen, in order of first appearance; a text value's number indexes it.
    pub labels: Vec<String>,
}

/// Every trial's number and state, and the columns asked for (aligned with them).
pub type Columns = (Vec<u32>, Vec<UnitState>, Vec<Column>);

impl Store {
    /// The trials matching `q`'s states, and the page of them `q` asks for.
    pub fn query_trials(
        &self,
        id: &SweepId,
        q: &TrialQuery,
    ) -> Result<(u32, Vec<TrialRow>), StoreError> {
        let mut filter = String::from("sweep_id = ?");
        let mut args: Vec<Value> = vec![Value::Text(id.as_str().to_owned())];
        if !q.states.is_empty() {
            filter.push_str(&format!(
                " AND state IN ({})",
                vec!["?"; q.states.len()].join(", ")
            ));
            args.extend(q.states.iter().map(|s| Value::Text(s.as_str().to_owned())));
        }
        let total: u32 = self.conn.query_row(
            &format!("SELECT count(*) FROM units WHERE {filter}"),
            params_from_iter(args.iter()),
            |r| r.get(0),
        )?;
        let (key, bound) = q.sort.sql();
        let dir = if q.descending { "DESC" } else { "ASC" };
        // The key once, in a subquery, so that its bound value is bound once; trials
        // without a value last whichever the direction; ties by trial number.
        let sql = format!(
            "SELECT {TRIAL_COLUMNS} FROM (SELECT *, {key} AS k FROM units WHERE {filter})
             ORDER BY k IS NULL, k {dir}, trial LIMIT ? OFFSET ?"
        );
        let mut all: Vec<Value> = bound.into_iter().map(Value::Text).collect();
        all.extend(args);
        all.push(Value::Integer(i64::from(q.limit)));
        all.push(Value::Integer(i64::from(q.offset)));
        let mut st = self.conn.prepare(&sql)?;
        let mut rows = st.query(params_from_iter(all.iter()))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(trial_row(r)?);
        }
        if q.with_history {
            self.add_histories(&mut out)?;
        }
        Ok((total, out))
    }

    /// Every trial's number and state, and the named columns (`param:NAME`,
    /// `metric:NAME`; anything else is a column of NaN), in trial order.
    pub fn trial_columns(&self, id: &SweepId, names: &[String]) -> Result<Columns, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT trial, state, params_json, final_json FROM units WHERE sweep_id = ?1 ORDER BY trial",
        )?;
        let mut rows = st.query([id.as_str()])?;
        let (mut trials, mut states) = (Vec::new(), Vec::new());
        let mut columns = vec![Column::default(); names.len()];
        let wanted: Vec<Option<(&str, &str)>> = names.iter().map(|n| n.split_once(':')).collect();
        // Each row's JSON is parsed only when a column needs it: a history asks for one
        // metric over every trial.
        let needs_metrics = wanted.iter().any(|w| matches!(w, Some(("metric", _))));
        let needs_params = wanted.iter().any(|w| matches!(w, Some(("param", _))));
        while let Some(r) = rows.next()? {
            trials.push(r.get(0)?);
            let state: String = r.get(1)?;
            states.push(UnitState::parse(&state).ok_or(StoreError::Corrupt {
                what: "unit state",
                err: state.clone(),
            })?);
            let params: ridgeline_common::params::Params = if needs_params {
                parse_json("parameters", &r.get::<_, String>(2)?)?
            } else {
                Default::default()
            };
            let metrics: Vec<(String, Option<f64>)> = match r.get::<_, Option<String>>(3)? {
                Some(j) if needs_metrics => parse_json("final metrics", &j)?,
                _ => vec![],
            };
            for (col, w) in columns.iter_mut().zip(&wanted) {
                let v = match w {
                    Some(("param", n)) => match params.get(*n) {
                        Some(ParamValue::Str(s)) => label(&mut col.labels, s),
                        Some(v) => v.as_f64().unwrap_or(f64::NAN),
                        None => f64::NAN,
                    },
                    Some(("metric", n)) => metrics
                        .iter()
                        .find(|(k, _)| k == n)
                        .and_then(|(_, v)| *v)
                        .unwrap_or(f64::NAN),
                    _ => f64::NAN,
                };
                col.values.push(v);
            }
        }
        Ok((trials, states, columns))
    }
}

/// The index of `s` among `labels`, added when new.
fn label(labels: &mut Vec<String>, s: &str) -> f64 {
    match labels.iter().position(|l| l == s) {
        Some(i) => i as f64,
        None => {
            labels.push(s.to_owned());
            (labels.len() - 1) as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::db_path;

    /// A synthetic sweep's pages against the same trials sorted and filtered here.
    #[test]
    fn pages_are_the_trials_sorted_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let id = crate::synthetic::fill(dir.path(), 300, 7).unwrap();
        let store = Store::open_read_only(&db_path(dir.path())).unwrap();
        let names = vec![
            "metric:loss".to_owned(),
            "param:lr".to_owned(),
            "param:optimizer".to_owned(),
        ];
        let (trials, states, cols) = store.trial_columns(&id, &names).unwrap();
        assert_eq!(trials, (0..300).collect::<Vec<_>>());
        assert_eq!(cols[2].labels.len(), 3, "three optimizers as labels");
        let page = |sort: SortKey, descending: bool, states: Vec<UnitState>, offset: u32| {
            let q = TrialQuery {
                offset,
                limit: 25,
                sort,
                descending,
                states,
                with_history: offset == 25,
            };
            store.query_trials(&id, &q).unwrap()
        };
        // By loss, largest first, ties by trial: the second page.
        let mut want: Vec<u32> = trials.clone();
        want.sort_by(|&a, &b| {
            cols[0].values[b as usize]
                .total_cmp(&cols[0].values[a as usize])
                .then(a.cmp(&b))
        });
        let (total, rows) = page(SortKey::Metric("loss".into()), true, vec![], 25);
        assert_eq!(total, 300);
        assert_eq!(
            rows.iter().map(|r| r.trial).collect::<Vec<_>>(),
            want[25..50]
        );
        // Asked for, each row's history: 9 steps for a completed synthetic trial, the
        // last one its final value.
        let done = rows
            .iter()
            .find(|r| r.state == UnitState::Completed)
            .unwrap();
        let steps: Vec<u32> = done.history.iter().map(|h| h.0).collect();
        assert_eq!(steps, (1..=9).collect::<Vec<_>>());
        assert_eq!(done.history[8].1[0].1, done.final_metrics[0].1);
        // By a parameter, smallest first, pruned trials only.
        let mut pruned: Vec<u32> = trials
            .iter()
            .copied()
            .filter(|&t| states[t as usize] == UnitState::Pruned)
            .collect();
        pruned.sort_by(|&a, &b| cols[1].values[a as usize].total_cmp(&cols[1].values[b as usize]));
        let (total, rows) = page(
            SortKey::Param("lr".into()),
            false,
            vec![UnitState::Pruned],
            0,
        );
        assert!(total > 10 && total as usize == pruned.len());
        assert_eq!(
            rows.iter().map(|r| r.trial).collect::<Vec<_>>(),
            pruned[..25.min(pruned.len())]
        );
        // A metric no trial has: every trial, in trial order (missing values last).
        let (_, rows) = page(SortKey::Metric("nothing".into()), true, vec![], 0);
        assert_eq!(
            rows.iter().map(|r| r.trial).collect::<Vec<_>>(),
            (0..25).collect::<Vec<_>>()
        );
        // A name with a quote is bound, never spliced into the SQL.
        let (total, _) = page(SortKey::Param("x\" OR 1=1 --".into()), false, vec![], 0);
        assert_eq!(total, 300);
        assert_eq!(SortKey::parse("metric:"), None);
        assert_eq!(
            SortKey::parse("param:lr"),
            Some(SortKey::Param("lr".into()))
        );
    }
}
