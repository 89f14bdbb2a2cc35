//! The typed client against a real server: each family of routes, their status codes and
//! Coffer's error body as [`coffer_sdk::Error`].

use coffer_sdk::wire::{
    Complete, FunctionMode, Heartbeat, Poll, Resolve, RotateSigningSecret, RunStatus, SendEvent,
};
use coffer_sdk::{Client, Error, PageRequest, Role, RunQuery, SecretStatus, function};
use http::StatusCode;
use serde_json::json;

use crate::common::Server;

#[tokio::test(flavor = "multi_thread")]
async fn environments_are_created_listed_and_deleted() {
    let server = Server::start();
    let admin = server.admin();
    let created = admin.create_environment("staging").await.unwrap();
    assert_eq!(created.name, "staging");
    let names: Vec<_> = admin
        .list_environments()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.contains(&"default".into()) && names.contains(&"staging".into()));

    let again = admin.create_environment("staging").await.unwrap_err();
    assert_eq!(again.status(), Some(StatusCode::CONFLICT));
    assert_eq!(again.code(), Some("environment_exists"));

    admin.delete_environment("staging").await.unwrap();
    let gone = admin.delete_environment("staging").await.unwrap_err();
    assert!(gone.is_not_found());
    assert_eq!(gone.code(), Some("environment_not_found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_write_only_with_revisions_and_conflicts() {
    let server = Server::start();
    let admin = server.admin();
    let first = admin
        .set_secret("default", "DATABASE_URL", "postgres://u:p@h/db", Some(0))
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.value.revision, 1);
    assert_eq!(first.value.status, SecretStatus::Ok);

    let second = admin
        .set_secret("default", "DATABASE_URL", "postgres://u:p2@h/db", None)
        .await
        .unwrap();
    assert!(!second.created);
    assert_eq!(second.value.revision, 2);

    // A stale precondition: 409 with the current revision, and never the value.
    let conflict = admin
        .set_secret("default", "DATABASE_URL", "postgres://u:p3@h/db", Some(1))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Some("revision_conflict"));
    assert_eq!(conflict.current_revision(), Some(2));
    assert!(conflict.is_conflict());
    assert!(!format!("{conflict} {conflict:?}").contains("p3@h"));

    let meta = admin.get_secret("default", "DATABASE_URL").await.unwrap();
    assert_eq!((meta.name.as_str(), meta.revision), ("DATABASE_URL", 2));

    let delete = admin
        .delete_secret("default", "DATABASE_URL", Some(1))
        .await
        .unwrap_err();
    assert_eq!(delete.current_revision(), Some(2));
    admin
        .delete_secret("default", "DATABASE_URL", Some(2))
        .await
        .unwrap();
    let missing = admin
        .get_secret("default", "DATABASE_URL")
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some("secret_not_found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn listings_follow_the_cursor_to_the_end() {
    let server = Server::start();
    let admin = server.admin();
    for name in ["C", "A", "B"] {
        admin.set_secret("default", name, "v", None).await.unwrap();
        admin
            .set_config("default", name, &json!({ "name": name }), None)
            .await
            .unwrap();
    }
    let page = admin
        .list_secrets(
            "default",
            &PageRequest {
                limit: Some(2),
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.secrets.len(), 2);
    let rest = admin
        .list_secrets(
            "default",
            &PageRequest {
                limit: Some(2),
                cursor: page.next_cursor.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.secrets.len(), 1);
    assert_eq!(rest.next_cursor, None);
    // The server searches and sorts: written C, A, B, then B again.
    admin.set_secret("default", "B", "v2", None).await.unwrap();
    let names = |v: Vec<coffer_sdk::SecretMeta>| v.into_iter().map(|m| m.name).collect::<Vec<_>>();
    let newest_first = coffer_sdk::SecretQuery {
        sort: Some(coffer_sdk::wire::SecretSort::UpdatedDesc),
        ..Default::default()
    };
    assert_eq!(
        names(
            admin
                .list_all_secrets_where("default", &newest_first)
                .await
                .unwrap()
        ),
        ["B", "A", "C"]
    );
    let one_page = coffer_sdk::SecretQuery {
        sort: Some(coffer_sdk::wire::SecretSort::NameDesc),
        page: PageRequest {
            limit: Some(2),
            cursor: None,
        },
        ..Default::default()
    };
    let page = admin
        .list_secrets_where("default", &one_page)
        .await
        .unwrap();
    assert_eq!(names(page.secrets), ["C", "B"]);
    assert!(page.next_cursor.is_some());
    let searched = coffer_sdk::SecretQuery {
        search: Some("b".into()),
        ..Default::default()
    };
    assert_eq!(
        names(
            admin
                .list_all_secrets_where("default", &searched)
                .await
                .unwrap()
        ),
        ["B"]
    );

    let all: Vec<_> = admin
        .list_all_secrets("default")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(all, ["A", "B", "C"]);
    let config: Vec<_> = admin
        .list_all_config("default")
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.key, c.value))
        .collect();
    assert_eq!(config[1], ("B".into(), json!({"name": "B"})));
    assert_eq!(config.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn config_is_set_read_and_deleted() {
    let server = Server::start();
    let admin = server.admin();
    let written = admin
        .set_config("default", "limits", &json!({"rps": 10}), None)
        .await
        .unwrap();
    assert!(written.created);
    let entry = admin.get_config("default", "limits").await.unwrap();
    assert_eq!((entry.value, entry.revision), (json!({"rps": 10}), 1));
    let page = admin
        .list_config("default", &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.config.len(), 1);
    admin
        .delete_config("default", "limits", None)
        .await
        .unwrap();
    let e = admin.get_config("default", "limits").await.unwrap_err();
    assert_eq!(e.code(), Some("config_not_found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_show_their_signing_secret_once_and_rotate_it() {
    let server = Server::start();
    let admin = server.admin();
    let def = function("send-invoice")
        .triggers(["order.created"])
        .secrets(["STRIPE_KEY"]);
    let put = admin
        .put_function("default", &def.id, &def.push("https://127.0.0.1:9/coffer"))
        .await
        .unwrap();
    assert!(put.created);
    assert!(
        !format!("{:?}", put.value).contains("cs_"),
        "Debug hides it"
    );
    let first = put.value.signing_secret.expect("shown at registration");

    let read = admin.get_function("default", "send-invoice").await.unwrap();
    assert!(read.signing_secret.is_none());
    assert_eq!(read.mode, FunctionMode::Push);
    assert_eq!(read.secrets, ["STRIPE_KEY"]);

    let rotated = admin
        .rotate_signing_secret("default", "send-invoice", &RotateSigningSecret::default())
        .await
        .unwrap();
    let second = rotated.signing_secret.expect("shown at rotation");
    assert_ne!(first.expose(), second.expose());
    assert!(rotated.previous_signing_secret_until.is_some());

    let all = admin.list_all_functions("default").await.unwrap();
    assert_eq!(all.len(), 1);
    let page = admin
        .list_functions("default", &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.functions[0].id, "send-invoice");

    let stale = admin
        .delete_function("default", "send-invoice", Some(1))
        .await
        .unwrap_err();
    assert!(stale.is_conflict(), "{stale}");
    admin
        .delete_function("default", "send-invoice", None)
        .await
        .unwrap();
    let gone = admin
        .get_function("default", "send-invoice")
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Some("function_not_found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_makes_a_retried_send_start_no_second_run() {
    let server = Server::start();
    let admin = server.admin();
    let def = function("count").triggers(["tick"]);
    admin
        .put_function("default", &def.id, &def.pull())
        .await
        .unwrap();
    let event = SendEvent {
        name: "tick".into(),
        data: None,
    };
    let first = admin
        .send_event("default", &event, Some("tick-1"))
        .await
        .unwrap();
    let again = admin
        .send_event("default", &event, Some("tick-1"))
        .await
        .unwrap();
    assert_eq!(first, again);
    let other = admin.send_event("default", &event, None).await.unwrap();
    assert_ne!(first.runs[0].id, other.runs[0].id);

    let runs = admin
        .list_all_runs(
            "default",
            &RunQuery {
                function_id: Some("count".into()),
                status: Some(RunStatus::Queued),
                ..RunQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(runs.len(), 2);
    let page = admin
        .list_runs(
            "default",
            &RunQuery {
                page: PageRequest {
                    limit: Some(1),
                    cursor: None,
                },
                ..RunQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.runs.len(), 1);
    assert!(page.next_cursor.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runtime_routes_lease_extend_and_complete_a_run() {
    let server = Server::start();
    let admin = server.admin();
    let def = function("manual")
        .triggers(["manual.run"])
        .secrets(["TOKEN"]);
    admin
        .put_function("default", &def.id, &def.pull())
        .await
        .unwrap();
    admin
        .set_secret("default", "TOKEN", "tok-123456", None)
        .await
        .unwrap();
    let runtime = server.runtime("default").await;

    let poll = Poll {
        functions: vec!["manual".into()],
        wait_ms: Some(0),
        lease_ms: None,
    };
    assert!(
        runtime.poll("default", &poll).await.unwrap().is_none(),
        "nothing queued"
    );

    let sent = admin
        .send_event(
            "default",
            &SendEvent {
                name: "manual.run".into(),
                data: None,
            },
            None,
        )
        .await
        .unwrap();
    let job = runtime
        .poll(
            "default",
            &Poll {
                wait_ms: Some(5_000),
                ..poll
            },
        )
        .await
        .unwrap()
        .expect("a job");
    assert_eq!(job.run_id.as_deref(), Some(sent.runs[0].id.as_str()));
    assert_eq!(job.secrets.get("TOKEN"), Some("tok-123456"));
    assert!(!format!("{job:?}").contains("tok-123456"));
    let (run_id, attempt) = (job.run_id.clone().unwrap(), job.attempt.unwrap());

    runtime
        .heartbeat(
            "default",
            &run_id,
            &Heartbeat {
                attempt,
                lease_ms: Some(60_000),
            },
        )
        .await
        .unwrap();
    let lost = runtime
        .heartbeat(
            "default",
            &run_id,
            &Heartbeat {
                attempt: attempt + 1,
                lease_ms: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(lost.code(), Some("lease_lost"));

    let done = runtime
        .complete(
            "default",
            &run_id,
            &Complete {
                output: Some(json!({"done": true})),
                error: None,
                attempt: Some(attempt),
            },
        )
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.output, Some(json!({"done": true})));
    let late = runtime
        .complete(
            "default",
            &run_id,
            &Complete {
                output: None,
                error: Some("late".into()),
                attempt: Some(attempt),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(late.code(), Some("lease_lost"));

    let resolved = runtime
        .resolve("default", "manual", &Resolve::default())
        .await
        .unwrap();
    assert_eq!(resolved.run_id, None);
    assert_eq!(resolved.secrets.names().collect::<Vec<_>>(), ["TOKEN"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_keys_never_obtain_a_value() {
    let server = Server::start();
    let admin = server.admin();
    let def = function("f").secrets(["TOKEN"]);
    admin
        .put_function("default", &def.id, &def.pull())
        .await
        .unwrap();
    let e = admin
        .resolve("default", "f", &Resolve::default())
        .await
        .unwrap_err();
    assert_eq!(
        (e.status(), e.code()),
        (Some(StatusCode::FORBIDDEN), Some("forbidden"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_are_created_listed_and_revoked() {
    let server = Server::start();
    let admin = server.admin();
    let key = admin
        .create_api_key("ci", Role::Manage, Some("default"))
        .await
        .unwrap();
    assert!(key.expose_key().starts_with("ck_default_"));
    assert!(!format!("{key:?}").contains(key.expose_key()));
    let manage = Client::new(&server.base, key.expose_key()).unwrap();
    manage.set_secret("default", "X", "v", None).await.unwrap();

    let listed = admin.list_api_keys().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|k| k.id == key.meta.id && k.role == Role::Manage)
    );
    admin.revoke_api_key(&key.meta.id).await.unwrap();
    let e = manage.get_secret("default", "X").await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::UNAUTHORIZED));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_server_is_a_retryable_transport_error() {
    let client = Client::new("http://127.0.0.1:1", "ck_admin_x").unwrap();
    let e = client.list_environments().await.unwrap_err();
    assert!(matches!(e, Error::Transport(_)), "{e:?}");
    assert!(e.is_retryable());
}
