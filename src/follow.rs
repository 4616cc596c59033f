//! Following a sweep to its end: `watch`'s progress bar (or a line per finished unit
//! without a terminal), and what the failures of a finished sweep mean for the command
//! that waited for it.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use ridgeline_common::proto;

use crate::client::{Client, results, status_error, summary, transient, unit_noun};

/// The distinct reasons a sweep's units failed for good, each with how many failed with
/// it, most frequent first. A reason is the first line of the error (a command trial's
/// stderr tail follows on later lines and differs between trials).
pub fn failure_reasons(r: &proto::GetResultsResponse) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for t in r
        .trials
        .iter()
        .filter(|t| t.state == proto::UnitState::Failed as i32)
    {
        let first = t.error.lines().next().unwrap_or("").trim();
        // "exit status 1; stderr ends with:" says little alone: the last line of the
        // program's stderr usually says what went wrong ("sh: 1: pyhton3: not found").
        let last = t.error.lines().rev().map(str::trim).find(|l| !l.is_empty());
        let line = match last {
            Some(l) if first.ends_with("ends with:") && l != first => format!("{first} {l}"),
            _ => first.to_owned(),
        };
        let reason: String = if line.is_empty() {
            "(no error given)".into()
        } else {
            line.chars().take(240).collect()
        };
        match counts.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => counts.push((reason, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts
}

/// What a finished sweep's failures mean for the command that waited for it: each
/// distinct reason is printed with its count, and any unit that failed for good makes
/// the command fail, unless `allow` (`--allow-failures`).
pub fn check_failures(
    st: &proto::SweepStatus,
    r: &proto::GetResultsResponse,
    allow: bool,
) -> Result<()> {
    if st.failed == 0 {
        return Ok(());
    }
    let noun = unit_noun(&st.kind);
    eprintln!("{} of {} {noun} failed:", st.failed, st.total);
    for (reason, n) in failure_reasons(r) {
        eprintln!("  {n:>5} x {reason}");
    }
    if allow {
        return Ok(());
    }
    anyhow::bail!(
        "sweep {}: {} {noun} failed (see the reasons above; `ridgeline logs {} TRIAL` shows a command trial's output; --allow-failures exits 0 anyway)",
        st.sweep_id,
        st.failed,
        st.sweep_id
    )
}

/// Follows a sweep to its end, prints its summary (on stdout, or stderr where stdout
/// carries something else), and fails if trials failed for good unless `allow`.
pub async fn follow_to_end(
    client: &mut Client,
    sweep: &str,
    allow: bool,
    summary_on_stdout: bool,
) -> Result<()> {
    let st = watch(client, sweep).await?;
    let lines = match st.kind.as_str() {
        // A scan in its own words: points, Hessian rounds, curvature (its spec comes with
        // a status asked for, not with the watched ones).
        "landscape" => {
            let full = client
                .get_status(proto::GetStatusRequest {
                    sweep_id: sweep.to_owned(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            crate::status::scan_lines(client, &full).await?
        }
        _ => vec![summary(&st)],
    };
    for line in lines {
        if summary_on_stdout {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
    }
    let res = match st.failed {
        0 => proto::GetResultsResponse::default(),
        _ => results(client, sweep).await?,
    };
    check_failures(&st, &res, allow)
}

/// How long `watch` keeps trying to reach a coordinator that went away.
const WATCH_PATIENCE: Duration = Duration::from_secs(600);

/// Follows a sweep until it reaches a final state; shows a progress bar on a terminal and
/// a line per finished unit otherwise. Survives a coordinator restart: the stream is
/// opened again with backoff, as workers reconnect. Returns the final status.
pub async fn watch(client: &mut Client, sweep_id: &str) -> Result<proto::SweepStatus> {
    let tty = std::io::stderr().is_terminal();
    let bar = ProgressBar::hidden();
    let mut lines = Lines::default();
    let mut backoff = Duration::from_millis(100);
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        let opened = client
            .watch_sweep(proto::WatchSweepRequest {
                sweep_id: sweep_id.to_owned(),
            })
            .await;
        let mut stream = match opened {
            Ok(s) => s.into_inner(),
            Err(s) if transient(&s) => {
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > WATCH_PATIENCE {
                    bail!(
                        "the coordinator has not answered for {} s: {}",
                        WATCH_PATIENCE.as_secs(),
                        s.message()
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(s) => return Err(status_error(s)),
        };
        failing_since = None;
        backoff = Duration::from_millis(100);
        loop {
            let next = match lines.holding() {
                false => stream.message().await,
                true => match tokio::time::timeout(SETTLE, stream.message()).await {
                    Ok(next) => next,
                    Err(_) => {
                        lines.settle().iter().for_each(print_line);
                        continue;
                    }
                },
            };
            let st = match next {
                Ok(Some(st)) => st,
                // The coordinator ended the stream: after a final state, or because it
                // is shutting down (then the loop opens it again).
                Ok(None) => break,
                Err(s) if transient(&s) => break,
                Err(s) => return Err(status_error(s)),
            };
            if tty && bar.is_hidden() {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(&format!(
                        "{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {}  {{msg}}",
                        unit_noun(&st.kind)
                    ))
                    .expect("valid template"),
                );
                bar.enable_steady_tick(Duration::from_millis(200));
            }
            let done = crate::status::done(&st);
            let eta = eta_note(&st);
            bar.set_length(u64::from(st.total));
            bar.set_position(u64::from(done));
            let best = st
                .best
                .as_ref()
                .map(|b| format!("best {} {:.4}", st.metric, b.value))
                .unwrap_or_default();
            bar.set_message(format!("{} running  {best}{eta}", st.running));
            // Without a terminal, a line per finished unit; the final state is the
            // caller's to print.
            if st.state != proto::SweepState::Running as i32 {
                bar.finish_and_clear();
                return Ok(st);
            }
            if !tty {
                lines.take(st).iter().for_each(print_line);
            }
        }
    }
}

/// How long a line waits for the statuses that follow it (see [`Lines`]).
const SETTLE: Duration = Duration::from_millis(300);

fn eta_note(st: &proto::SweepStatus) -> String {
    crate::status::eta(st)
        .map(|d| format!("  eta {}", crate::status::human(d)))
        .unwrap_or_default()
}

fn print_line(st: &proto::SweepStatus) {
    eprintln!("{}{}", summary(st), eta_note(st).replace("  eta", ", eta"));
}

/// Without a terminal, `watch` prints a line per finished unit. The status that announces
/// a finish is taken between two units of a worker, whose next lease comes a moment
/// later, so it would say "0 running" while every worker is busy. A line is therefore
/// held until no status has come for [`SETTLE`] and shows the last status with the same
/// number of finished units; a status with more finished units prints the held line at
/// once.
#[derive(Default)]
struct Lines {
    /// Finished units of the last line printed.
    printed: Option<u32>,
    held: Option<proto::SweepStatus>,
}

impl Lines {
    fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// Takes the next status; returns a line to print now.
    fn take(&mut self, st: proto::SweepStatus) -> Option<proto::SweepStatus> {
        let done = crate::status::done(&st);
        match &self.held {
            Some(h) if crate::status::done(h) != done => {
                let out = self.held.replace(st);
                self.printed = out.as_ref().map(crate::status::done);
                out
            }
            Some(_) => {
                self.held = Some(st);
                None
            }
            None if self.printed != Some(done) => {
                self.held = Some(st);
                None
            }
            None => None,
        }
    }

    /// Nothing came for [`SETTLE`]: the held line is printed.
    fn settle(&mut self) -> Option<proto::SweepStatus> {
        let out = self.held.take();
        if let Some(h) = &out {
            self.printed = Some(crate::status::done(h));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(completed: u32, running: u32) -> proto::SweepStatus {
        proto::SweepStatus {
            completed,
            running,
            total: 10,
            ..Default::default()
        }
    }

    /// One worker, one slot: unit 1 finishes (0 running for a moment), the next lease
    /// follows (1 running): the line says 1 running.
    #[test]
    fn a_line_shows_the_lease_that_follows_a_finish() {
        let mut l = Lines::default();
        assert_eq!(l.take(st(0, 1)), None);
        assert_eq!(l.settle().map(|s| (s.completed, s.running)), Some((0, 1)));
        assert_eq!(l.take(st(1, 0)), None);
        assert_eq!(l.take(st(1, 1)), None);
        assert_eq!(l.settle().map(|s| (s.completed, s.running)), Some((1, 1)));
        // A repeat of what was printed prints nothing, and holds nothing.
        assert_eq!(l.take(st(1, 1)), None);
        assert!(!l.holding());
        assert_eq!(l.settle(), None);
    }

    /// Units that finish faster than SETTLE still get a line each.
    #[test]
    fn every_finish_gets_its_line() {
        let mut l = Lines::default();
        let mut printed = Vec::new();
        for c in 1..=4 {
            printed.extend(l.take(st(c, 0)));
            printed.extend(l.take(st(c, 2)));
        }
        printed.extend(l.settle());
        let got: Vec<(u32, u32)> = printed.iter().map(|s| (s.completed, s.running)).collect();
        assert_eq!(got, vec![(1, 2), (2, 2), (3, 2), (4, 2)]);
    }
}
