//! Orchestrations on the typed client: definitions (create, get, list, update, delete) and
//! their runs (start, get, list, approve, reject), as `coffer-wire`'s types.
//!
//! An encrypted parameter's plaintext goes out once, in a create or an update
//! ([`Param::encrypt`](coffer_wire::Param::encrypt)); every answer shows it masked. To keep
//! a stored one in an update, send back the masked form a read returned; to remove it,
//! leave it out.

use coffer_wire::{
    CreateOrchestration, DecideOrchestrationRun, Orchestration, OrchestrationList,
    OrchestrationRun, OrchestrationRunList, OrchestrationRunStatus, StartOrchestrationRun,
    UpdateOrchestration,
};
use reqwest::Method;

use crate::client::{Client, page_query};
use crate::error::Error;
use crate::management::{PageRequest, Paged};

/// Which orchestration runs to list (`GET /v1/environments/{env}/orchestration-runs`),
/// newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrchestrationRunQuery {
    /// Only runs of this orchestration.
    pub orchestration_id: Option<String>,
    /// Only runs with this status.
    pub status: Option<OrchestrationRunStatus>,
    /// Which page.
    pub page: PageRequest,
}

impl Client {
    /// `POST /v1/environments/{env}/orchestrations`: creates an orchestration (revision 1)
    /// and answers with it, its encrypted params masked. 422 `invalid` names the step that
    /// breaks a rule.
    ///
    /// ```no_run
    /// # async fn example(admin: coffer_sdk::Client) -> Result<(), coffer_sdk::Error> {
    /// use coffer_sdk::wire::{ApprovalStep, ComputeStep, CreateOrchestration, Param, Step};
    ///
    /// let mut charge = ComputeStep {
    ///     id: "charge".into(),
    ///     function_id: "billing".into(),
    ///     params: Default::default(),
    ///     encrypted_params: Default::default(),
    /// };
    /// charge.encrypted_params.insert("API_TOKEN".into(), Param::encrypt("tok-123"));
    /// charge.encrypted_params.insert("STRIPE".into(), Param::reference("STRIPE_KEY"));
    /// let created = admin
    ///     .create_orchestration(
    ///         "production",
    ///         &CreateOrchestration {
    ///             name: "nightly-billing".into(),
    ///             steps: vec![
    ///                 Step::Compute(charge),
    ///                 Step::Approval(ApprovalStep { id: "review".into(), timeout_ms: None }),
    ///             ],
    ///         },
    ///     )
    ///     .await?;
    /// let run = admin.run_orchestration("production", &created.id, None).await?;
    /// println!("{} is {}", run.id, run.status.as_str());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_orchestration(
        &self,
        env: &str,
        orchestration: &CreateOrchestration,
    ) -> Result<Orchestration, Error> {
        self.send_json(
            Method::POST,
            &["environments", env, "orchestrations"],
            &[],
            orchestration,
        )
        .await
    }

    /// `GET /v1/environments/{env}/orchestrations/{id}`, encrypted params masked.
    pub async fn get_orchestration(&self, env: &str, id: &str) -> Result<Orchestration, Error> {
        self.get(&["environments", env, "orchestrations", id], &[])
            .await
    }

    /// `GET /v1/environments/{env}/orchestrations`: one page, in id order.
    pub async fn list_orchestrations(
        &self,
        env: &str,
        page: &PageRequest,
    ) -> Result<OrchestrationList, Error> {
        self.get(&["environments", env, "orchestrations"], &page_query(page))
            .await
    }

    /// Every orchestration, following the cursor from page to page.
    pub async fn list_all_orchestrations(&self, env: &str) -> Result<Vec<Orchestration>, Error> {
        self.all_pages::<OrchestrationList>(&["environments", env, "orchestrations"], Vec::new())
            .await
    }

    /// `PUT /v1/environments/{env}/orchestrations/{id}`: replaces the whole definition
    /// (revision + 1). With `expected_revision` set, only at that revision: otherwise 409
    /// `conflict` with [`Error::current_revision`].
    ///
    /// ```no_run
    /// # async fn example(admin: coffer_sdk::Client, id: &str) -> Result<(), coffer_sdk::Error> {
    /// use coffer_sdk::wire::UpdateOrchestration;
    ///
    /// // A read shows encrypted params masked; sent back as they are, they are kept.
    /// let current = admin.get_orchestration("production", id).await?;
    /// let updated = admin
    ///     .update_orchestration(
    ///         "production",
    ///         id,
    ///         &UpdateOrchestration {
    ///             name: "nightly-billing v2".into(),
    ///             steps: current.steps,
    ///             expected_revision: Some(current.revision),
    ///         },
    ///     )
    ///     .await?;
    /// assert_eq!(updated.revision, current.revision + 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn update_orchestration(
        &self,
        env: &str,
        id: &str,
        orchestration: &UpdateOrchestration,
    ) -> Result<Orchestration, Error> {
        self.send_json(
            Method::PUT,
            &["environments", env, "orchestrations", id],
            &[],
            orchestration,
        )
        .await
    }

    /// `DELETE /v1/environments/{env}/orchestrations/{id}` (with `expected_revision`, only
    /// at that revision). Its runs stay; one still going fails at its next compute step.
    pub async fn delete_orchestration(
        &self,
        env: &str,
        id: &str,
        expected_revision: Option<u64>,
    ) -> Result<(), Error> {
        self.delete(
            &["environments", env, "orchestrations", id],
            expected_revision,
        )
        .await
    }

    /// `POST /v1/environments/{env}/orchestrations/{id}/runs`: starts a run with `params`
    /// (not secret: every read of the run shows them).
    pub async fn run_orchestration(
        &self,
        env: &str,
        id: &str,
        params: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<OrchestrationRun, Error> {
        let path = ["environments", env, "orchestrations", id, "runs"];
        let body = StartOrchestrationRun { params };
        self.send_json(Method::POST, &path, &[], &body).await
    }

    /// `GET /v1/environments/{env}/orchestration-runs/{id}`: the run and each step's
    /// status, output (redacted) or error.
    pub async fn get_orchestration_run(
        &self,
        env: &str,
        run_id: &str,
    ) -> Result<OrchestrationRun, Error> {
        self.get(&["environments", env, "orchestration-runs", run_id], &[])
            .await
    }

    /// `GET /v1/environments/{env}/orchestration-runs`: one page, newest first.
    pub async fn list_orchestration_runs(
        &self,
        env: &str,
        query: &OrchestrationRunQuery,
    ) -> Result<OrchestrationRunList, Error> {
        let mut q = run_filter(query);
        q.extend(page_query(&query.page));
        self.get(&["environments", env, "orchestration-runs"], &q)
            .await
    }

    /// Every orchestration run `query` selects (its page is ignored), following the
    /// cursor.
    pub async fn list_all_orchestration_runs(
        &self,
        env: &str,
        query: &OrchestrationRunQuery,
    ) -> Result<Vec<OrchestrationRun>, Error> {
        self.all_pages::<OrchestrationRunList>(
            &["environments", env, "orchestration-runs"],
            run_filter(query),
        )
        .await
    }

    /// `POST /v1/environments/{env}/orchestration-runs/{id}/approve`: the run goes on past
    /// the approval step it waits at. 409 `not_waiting` when it waits for none.
    pub async fn approve_orchestration_run(
        &self,
        env: &str,
        run_id: &str,
        reason: Option<&str>,
    ) -> Result<OrchestrationRun, Error> {
        self.decide(env, run_id, "approve", reason).await
    }

    /// `POST /v1/environments/{env}/orchestration-runs/{id}/reject`: the run ends
    /// `rejected`. 409 `not_waiting` when it waits for no approval.
    pub async fn reject_orchestration_run(
        &self,
        env: &str,
        run_id: &str,
        reason: Option<&str>,
    ) -> Result<OrchestrationRun, Error> {
        self.decide(env, run_id, "reject", reason).await
    }

    async fn decide(
        &self,
        env: &str,
        run_id: &str,
        verb: &str,
        reason: Option<&str>,
    ) -> Result<OrchestrationRun, Error> {
        let path = ["environments", env, "orchestration-runs", run_id, verb];
        let body = DecideOrchestrationRun {
            reason: reason.map(str::to_owned),
        };
        self.send_json(Method::POST, &path, &[], &body).await
    }
}

impl Paged for OrchestrationList {
    type Item = Orchestration;
    fn into_parts(self) -> (Vec<Orchestration>, Option<String>) {
        (self.orchestrations, self.next_cursor)
    }
}

impl Paged for OrchestrationRunList {
    type Item = OrchestrationRun;
    fn into_parts(self) -> (Vec<OrchestrationRun>, Option<String>) {
        (self.runs, self.next_cursor)
    }
}

fn run_filter(query: &OrchestrationRunQuery) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(id) = &query.orchestration_id {
        q.push(("orchestrationId", id.clone()));
    }
    if let Some(status) = query.status {
        q.push(("status", status.as_str().to_owned()));
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_filters_use_the_routes_query_names() {
        let query = OrchestrationRunQuery {
            orchestration_id: Some("orch_0123456789abcdef".into()),
            status: Some(OrchestrationRunStatus::WaitingApproval),
            page: PageRequest::default(),
        };
        assert_eq!(
            run_filter(&query),
            vec![
                ("orchestrationId", "orch_0123456789abcdef".to_owned()),
                ("status", "waiting_approval".to_owned())
            ]
        );
    }
}
