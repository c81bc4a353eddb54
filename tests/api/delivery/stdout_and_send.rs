//! The `stdout` target prints the rendered message; `crisp-relay send`
//! reports delivered, not delivered or an unknown target, without printing
//! secrets.

use super::*;
use crate::fakes::*;
use crate::helpers::*;

// ---------------------------------------------------------------------------
// stdout target, `send`

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stdout_target_prints_the_rendered_message() {
    let app = TestApp::spawn_with(&config_with(&one_target("console", "{kind: stdout}"))).await;
    let resp = app
        .post_event(fixture("message_send_text_basic.json"))
        .await;
    assert_eq!(resp.status(), 200);
    // The link is the message's last line: once it is in, so is the rest.
    wait_until("the message on stdout", || {
        app.stdout()
            .contains("https://app.crisp.chat/website/3f9d2b7e-61c4-4a8e-9b1f-0d5e7a2c8b46/")
    })
    .await;
    let out = app.stdout();
    assert!(
        out.contains("Hi! Is the Pro plan billed monthly or yearly?"),
        "{out}"
    );
    assert!(out.contains("New message from visitor493603"), "{out}");
    assert!(!out.contains("{{"), "unrendered template: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reports_delivered_not_delivered_or_unknown_target() {
    let fake = FakeServer::webhook().await;
    let target = format!(
        "{{kind: webhook, url: \"{}\", headers: {{Authorization: \"Bearer SECRET-XYZ\"}}}}",
        fake.url("/in/PATH-TOKEN-77")
    );
    let work = Workdir::new(&config_with(&one_target("hook", &target)));
    work.write("event.json", &message(7));
    let event = work.path().join("event.json");
    let event = event.to_str().unwrap();

    let out = cli(&work, &["send", "--target", "hook", "--event", event]);
    let text = stdout_of(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr_of(&out));
    assert!(
        text.contains("HTTP 200") && text.contains("delivered"),
        "{text}"
    );
    let received = fake.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/in/PATH-TOKEN-77");
    assert_eq!(
        received[0].header("authorization"),
        Some("Bearer SECRET-XYZ")
    );
    assert_eq!(hook_seq(&received[0]), 7);

    fake.always(500, "internal error");
    let out = cli(&work, &["send", "--target", "hook", "--event", event]);
    let text = stdout_of(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr_of(&out));
    assert!(text.contains("not delivered"), "{text}");
    assert!(text.contains("HTTP 500"), "{text}");
    assert_eq!(fake.received().len(), 2, "send does not retry");

    let out = cli(&work, &["send", "--target", "nope", "--event", event]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("no target `nope`"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(fake.received().len(), 2);

    for secret in ["SECRET-XYZ", "PATH-TOKEN-77"] {
        for out in [&text, &stderr_of(&out)] {
            assert!(!out.contains(secret), "{secret} printed: {out}");
        }
    }
}
