//! Where a Deployment's rollout stands, decided exactly as `kubectl rollout status` does
//! (`DeploymentStatusViewer` in kubectl's `rollout_status.go`).

use k8s_openapi::api::apps::v1::Deployment;

/// The `Progressing` condition's reason once `spec.progressDeadlineSeconds` ran out.
const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutStatus {
    /// The deployment controller has not yet seen the latest spec (`status.observedGeneration <
    /// metadata.generation`): the status fields still describe the previous one.
    Waiting {
        observed_generation: i64,
        generation: i64,
    },
    /// New pods are being created, or old ones are terminating, or new ones are not yet available.
    Progressing {
        /// `status.updatedReplicas`: pods with the latest template.
        updated: i32,
        /// `spec.replicas`.
        desired: i32,
        /// `status.availableReplicas`.
        available: i32,
        /// `status.replicas - status.updatedReplicas`: pods of older templates still running.
        old: i32,
    },
    Complete,
    /// The controller gave up: the progress deadline ran out.
    Failed(String),
}

/// What `kubectl rollout status` would decide for this Deployment. Absent status fields count as
/// 0; an absent `spec.replicas` (the API server defaults it to 1) skips the updated-replicas
/// check, as kubectl does.
pub fn rollout_status(deployment: &Deployment) -> RolloutStatus {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let status = deployment.status.clone().unwrap_or_default();
    let observed_generation = status.observed_generation.unwrap_or(0);
    if generation > observed_generation {
        return RolloutStatus::Waiting {
            observed_generation,
            generation,
        };
    }
    let deadline_exceeded = status.conditions.iter().flatten().any(|condition| {
        condition.type_.as_deref() == Some("Progressing")
            && condition.reason.as_deref() == Some(PROGRESS_DEADLINE_EXCEEDED)
    });
    if deadline_exceeded {
        let name = deployment.metadata.name.as_deref().unwrap_or_default();
        return RolloutStatus::Failed(format!(
            "deployment \"{name}\" exceeded its progress deadline"
        ));
    }
    let desired = deployment.spec.replicas;
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let behind = desired.is_some_and(|desired| updated < desired);
    if behind || replicas > updated || available < updated {
        return RolloutStatus::Progressing {
            updated,
            desired: desired.unwrap_or(1),
            available,
            old: (replicas - updated).max(0),
        };
    }
    RolloutStatus::Complete
}

/// One line for the deploy log, e.g. `2 of 3 updated, 1 available`.
pub fn progress_line(status: &RolloutStatus) -> String {
    match status {
        RolloutStatus::Waiting {
            observed_generation,
            generation,
        } => format!(
            "waiting for the deployment controller to observe generation {generation} (observed {observed_generation})"
        ),
        RolloutStatus::Progressing {
            updated,
            desired,
            available,
            old,
        } => {
            let mut line = format!("{updated} of {desired} updated, {available} available");
            if *old > 0 {
                line.push_str(&format!(", {old} old pending termination"));
            }
            line
        }
        RolloutStatus::Complete => "rollout complete".to_owned(),
        RolloutStatus::Failed(cause) => format!("rollout failed: {cause}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};

    /// `spec` and `status` are the Deployment's JSON fields; the name is "backend".
    fn check(generation: i64, spec: &str, status: &str, expected: Expect) {
        let json = format!(
            r#"{{"metadata":{{"name":"backend","generation":{generation}}},"spec":{spec},"status":{status}}}"#
        );
        let deployment: Deployment = match serde_json::from_str(&json) {
            Ok(deployment) => deployment,
            Err(err) => panic!("bad fixture {json}: {err}"),
        };
        let status = rollout_status(&deployment);
        expected.assert_eq(&format!("{status:?}\n{}", progress_line(&status)));
    }

    const SPEC3: &str = r#"{"replicas":3,"selector":{},"template":{}}"#;

    #[test]
    fn not_yet_observed() {
        check(
            5,
            SPEC3,
            r#"{"observedGeneration":4,"replicas":3,"updatedReplicas":3,"availableReplicas":3}"#,
            expect![[r#"
                Waiting { observed_generation: 4, generation: 5 }
                waiting for the deployment controller to observe generation 5 (observed 4)"#]],
        );
        check(
            1,
            SPEC3,
            "{}",
            expect![[r#"
                Waiting { observed_generation: 0, generation: 1 }
                waiting for the deployment controller to observe generation 1 (observed 0)"#]],
        );
    }

    #[test]
    fn updating() {
        check(
            5,
            SPEC3,
            r#"{"observedGeneration":5,"replicas":4,"updatedReplicas":2,"availableReplicas":3}"#,
            expect![[r#"
                Progressing { updated: 2, desired: 3, available: 3, old: 2 }
                2 of 3 updated, 3 available, 2 old pending termination"#]],
        );
        check(
            5,
            SPEC3,
            r#"{"observedGeneration":5}"#,
            expect![[r#"
                Progressing { updated: 0, desired: 3, available: 0, old: 0 }
                0 of 3 updated, 0 available"#]],
        );
    }

    #[test]
    fn old_pods_terminating() {
        check(
            5,
            SPEC3,
            r#"{"observedGeneration":5,"replicas":4,"updatedReplicas":3,"availableReplicas":3}"#,
            expect![[r#"
                Progressing { updated: 3, desired: 3, available: 3, old: 1 }
                3 of 3 updated, 3 available, 1 old pending termination"#]],
        );
    }

    #[test]
    fn updated_but_not_available() {
        check(
            5,
            SPEC3,
            r#"{"observedGeneration":5,"replicas":3,"updatedReplicas":3,"availableReplicas":1}"#,
            expect![[r#"
                Progressing { updated: 3, desired: 3, available: 1, old: 0 }
                3 of 3 updated, 1 available"#]],
        );
    }

    #[test]
    fn complete() {
        check(
            5,
            SPEC3,
            r#"{"observedGeneration":5,"replicas":3,"updatedReplicas":3,"availableReplicas":3}"#,
            expect![[r#"
                Complete
                rollout complete"#]],
        );
        // The controller may observe a newer generation than the object we hold.
        check(
            5,
            SPEC3,
            r#"{"observedGeneration":6,"replicas":3,"updatedReplicas":3,"availableReplicas":3}"#,
            expect![[r#"
                Complete
                rollout complete"#]],
        );
        // Scaled to zero: nothing to wait for.
        check(
            2,
            r#"{"replicas":0,"selector":{},"template":{}}"#,
            r#"{"observedGeneration":2}"#,
            expect![[r#"
                Complete
                rollout complete"#]],
        );
    }

    #[test]
    fn without_spec_replicas_kubectl_skips_the_updated_check() {
        check(
            2,
            r#"{"selector":{},"template":{}}"#,
            r#"{"observedGeneration":2}"#,
            expect![[r#"
                Complete
                rollout complete"#]],
        );
    }

    #[test]
    fn progress_deadline_exceeded() {
        let status = r#"{"observedGeneration":5,"replicas":4,"updatedReplicas":1,"availableReplicas":3,
            "conditions":[
              {"type":"Available","status":"True","reason":"MinimumReplicasAvailable"},
              {"type":"Progressing","status":"False","reason":"ProgressDeadlineExceeded",
               "message":"ReplicaSet \"backend-7d9f\" has timed out progressing."}]}"#;
        check(
            5,
            SPEC3,
            status,
            expect![[r#"
                Failed("deployment \"backend\" exceeded its progress deadline")
                rollout failed: deployment "backend" exceeded its progress deadline"#]],
        );
    }

    #[test]
    fn other_progressing_reasons_are_not_failures() {
        let status = r#"{"observedGeneration":5,"replicas":3,"updatedReplicas":1,"availableReplicas":3,
            "conditions":[{"type":"Progressing","status":"True","reason":"ReplicaSetUpdated"}]}"#;
        check(
            5,
            SPEC3,
            status,
            expect![[r#"
                Progressing { updated: 1, desired: 3, available: 3, old: 2 }
                1 of 3 updated, 3 available, 2 old pending termination"#]],
        );
    }

    #[test]
    fn deadline_is_only_read_once_observed() {
        let status = r#"{"observedGeneration":4,
            "conditions":[{"type":"Progressing","status":"False","reason":"ProgressDeadlineExceeded"}]}"#;
        check(
            5,
            SPEC3,
            status,
            expect![[r#"
                Waiting { observed_generation: 4, generation: 5 }
                waiting for the deployment controller to observe generation 5 (observed 4)"#]],
        );
    }
}
