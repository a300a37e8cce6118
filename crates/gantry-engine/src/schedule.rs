//! The stage graph as a pure state machine.
//!
//! [`Schedule`] knows which stages wait on which, and decides what may start
//! and what must be skipped as stages finish. It does no IO and owns no
//! clock, so every ordering rule is tested here without Docker.

use crate::StageStatus;

/// What a stage needs to know about the pipeline to be scheduled.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    /// Indices of the stages this one waits for.
    pub needs: Vec<usize>,
    /// `allow_failure: true`: a failure neither fails the run nor blocks dependents.
    pub allow_failure: bool,
    /// Set when the stage must not run at all (a `when` that does not match, or
    /// not selected with `--stage`): the reason it is skipped.
    pub skip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Done(StageStatus),
}

/// A decision the driver must carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start(usize),
    Skip { stage: usize, reason: String },
}

#[derive(Debug)]
pub struct Schedule {
    nodes: Vec<Node>,
    states: Vec<State>,
    max_parallel: usize,
    cancelled: bool,
}

impl Schedule {
    /// `nodes` must be acyclic with `needs` in range: the pipeline validator guarantees it.
    pub fn new(nodes: Vec<Node>, max_parallel: usize) -> Schedule {
        let states = vec![State::Waiting; nodes.len()];
        Schedule {
            nodes,
            states,
            max_parallel: max_parallel.max(1),
            cancelled: false,
        }
    }

    pub fn name(&self, stage: usize) -> &str {
        &self.nodes[stage].name
    }

    pub fn running(&self) -> usize {
        self.states.iter().filter(|s| **s == State::Running).count()
    }

    pub fn is_finished(&self) -> bool {
        self.states.iter().all(|s| matches!(s, State::Done(_)))
    }

    /// Every decision that can be taken now: skips first (they may unblock
    /// others), then as many starts as the parallelism limit allows, in
    /// pipeline order.
    pub fn decide(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        loop {
            let mut progressed = false;
            for i in 0..self.nodes.len() {
                if self.states[i] != State::Waiting {
                    continue;
                }
                if let Some(reason) = self.skip_reason(i) {
                    self.states[i] = State::Done(StageStatus::Skipped);
                    actions.push(Action::Skip { stage: i, reason });
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        if self.cancelled {
            return actions;
        }
        for i in 0..self.nodes.len() {
            if self.running() >= self.max_parallel {
                break;
            }
            if self.states[i] == State::Waiting && self.needs_satisfied(i) {
                self.states[i] = State::Running;
                actions.push(Action::Start(i));
            }
        }
        actions
    }

    /// Records how a running stage ended.
    pub fn finish(&mut self, stage: usize, status: StageStatus) {
        self.states[stage] = State::Done(status);
    }

    /// Stops starting stages: everything still waiting is skipped on the next [`Schedule::next`].
    pub fn cancel(&mut self) {
        self.cancelled = true;
    }

    fn needs_satisfied(&self, i: usize) -> bool {
        self.nodes[i].needs.iter().all(|&n| match &self.states[n] {
            State::Done(StageStatus::Success | StageStatus::Skipped) => true,
            State::Done(StageStatus::Failure) => self.nodes[n].allow_failure,
            _ => false,
        })
    }

    fn skip_reason(&self, i: usize) -> Option<String> {
        if self.cancelled {
            return Some("run cancelled".to_string());
        }
        if let Some(reason) = &self.nodes[i].skip {
            return Some(reason.clone());
        }
        for &n in &self.nodes[i].needs {
            let need = &self.nodes[n].name;
            match &self.states[n] {
                State::Done(StageStatus::Failure) if !self.nodes[n].allow_failure => {
                    return Some(format!("needs '{need}', which failed"));
                }
                State::Done(StageStatus::Cancelled) => {
                    return Some(format!("needs '{need}', which was cancelled"));
                }
                // A stage skipped because of a failure upstream passes the skip on;
                // one skipped by its own `when` does not block its dependents.
                State::Done(StageStatus::Skipped) if self.blocked_upstream(n) => {
                    return Some(format!("needs '{need}', which was skipped"));
                }
                _ => {}
            }
        }
        None
    }

    fn blocked_upstream(&self, i: usize) -> bool {
        self.nodes[i].skip.is_none()
            && self.nodes[i].needs.iter().any(|&n| match &self.states[n] {
                State::Done(StageStatus::Failure) => !self.nodes[n].allow_failure,
                State::Done(StageStatus::Cancelled) => true,
                State::Done(StageStatus::Skipped) => self.blocked_upstream(n),
                _ => false,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StageStatus::*;

    fn node(name: &str, needs: &[usize]) -> Node {
        Node {
            name: name.into(),
            needs: needs.to_vec(),
            allow_failure: false,
            skip: None,
        }
    }

    /// Drives a schedule to the end, finishing stages with the given statuses
    /// in start order, and returns a trace like `start a, start b, skip c (..)`.
    fn trace(nodes: Vec<Node>, max_parallel: usize, outcome: &[(&str, StageStatus)]) -> String {
        let mut s = Schedule::new(nodes, max_parallel);
        let mut out = Vec::new();
        let mut running = Vec::new();
        loop {
            for a in s.decide() {
                match a {
                    Action::Start(i) => {
                        out.push(format!("start {}", s.name(i)));
                        running.push(i);
                    }
                    Action::Skip { stage, reason } => {
                        out.push(format!("skip {} ({reason})", s.name(stage)))
                    }
                }
            }
            if running.is_empty() {
                break;
            }
            let i = running.remove(0);
            let status = outcome
                .iter()
                .find(|(n, _)| *n == s.name(i))
                .map(|(_, st)| *st)
                .unwrap_or(Success);
            out.push(format!("{} {}", s.name(i), status));
            s.finish(i, status);
        }
        assert!(s.is_finished());
        out.join(", ")
    }

    #[test]
    fn sequential_by_default() {
        let nodes = vec![node("a", &[]), node("b", &[0]), node("c", &[1])];
        assert_eq!(
            trace(nodes, 4, &[]),
            "start a, a success, start b, b success, start c, c success"
        );
    }

    #[test]
    fn parallel_branch_and_dag() {
        // a and docs start together; b needs a; c needs a and docs.
        let nodes = vec![
            node("a", &[]),
            node("docs", &[]),
            node("b", &[0]),
            node("c", &[0, 1]),
        ];
        assert_eq!(
            trace(nodes, 4, &[]),
            "start a, start docs, a success, start b, docs success, start c, b success, c success"
        );
    }

    #[test]
    fn parallelism_limit() {
        let nodes = vec![node("a", &[]), node("b", &[]), node("c", &[])];
        assert_eq!(
            trace(nodes, 2, &[]),
            "start a, start b, a success, start c, b success, c success"
        );
    }

    #[test]
    fn failure_skips_dependents_transitively_but_not_siblings() {
        let nodes = vec![
            node("a", &[]),
            node("b", &[0]),
            node("c", &[1]),
            node("d", &[]),
        ];
        assert_eq!(
            trace(nodes, 4, &[("a", Failure)]),
            "start a, start d, a failure, skip b (needs 'a', which failed), \
             skip c (needs 'b', which was skipped), d success"
        );
    }

    #[test]
    fn allowed_failure_does_not_block() {
        let mut a = node("a", &[]);
        a.allow_failure = true;
        let nodes = vec![a, node("b", &[0])];
        assert_eq!(
            trace(nodes, 4, &[("a", Failure)]),
            "start a, a failure, start b, b success"
        );
    }

    #[test]
    fn when_skip_does_not_block_dependents() {
        let mut a = node("a", &[]);
        a.skip = Some("when.branch [main] does not match branch 'dev'".into());
        let nodes = vec![a, node("b", &[0])];
        assert_eq!(
            trace(nodes, 4, &[]),
            "skip a (when.branch [main] does not match branch 'dev'), start b, b success"
        );
    }

    #[test]
    fn cancel_skips_everything_waiting() {
        let mut s = Schedule::new(vec![node("a", &[]), node("b", &[0])], 4);
        assert_eq!(s.decide(), [Action::Start(0)]);
        s.cancel();
        s.finish(0, Cancelled);
        assert_eq!(
            s.decide(),
            [Action::Skip {
                stage: 1,
                reason: "run cancelled".into()
            }]
        );
        assert!(s.is_finished());
    }
}
