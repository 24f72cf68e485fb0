//! Terminal manners: completions, the man page, no progress bars or colour
//! off a terminal.

use crate::common::{TestEnv, five_users, run_binary_env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_name_every_subcommand() {
    let env = TestEnv::new().await;
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run_raw(&["completions", shell]).await;
        assert_eq!(out.code, 0, "{shell}: {out:?}");
        for sub in ["plan", "sync", "apply", "report", "completions", "man"] {
            assert!(out.stdout.contains(sub), "{shell} lacks {sub}");
        }
        let cron = if shell == "fish" { "-l cron" } else { "--cron" };
        assert!(out.stdout.contains(cron), "{shell} lacks --cron");
    }
    let out = env.run_raw(&["completions", "tcsh"]).await;
    assert_eq!(out.code, 2, "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_man_page_is_roff_and_renders() {
    let env = TestEnv::new().await;
    let out = env.run_raw(&["man"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let roff = &out.stdout;
    assert!(
        roff.starts_with(".ie \\n(.g .ds Aq") || roff.contains(".TH scimsync"),
        "{roff}"
    );
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH SUBCOMMANDS",
        ".SH \"SCIMSYNC APPLY\"",
        ".SH \"SCIMSYNC SYNC\"",
    ] {
        assert!(roff.contains(section), "{section} missing");
    }
    assert!(
        roff.contains("\\-\\-cron"),
        "sync's options are in the page"
    );
    // Render it when man(1) is installed (it is on the CI image; the check is
    // skipped, and says so, elsewhere).
    let page = env.path("scimsync.1");
    std::fs::write(&page, roff).unwrap();
    let rendered = std::process::Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output();
    match rendered {
        Ok(r) if r.status.success() => {
            let text = String::from_utf8_lossy(&r.stdout);
            assert!(text.contains("SCIMSYNC APPLY"), "{text}");
            assert!(text.contains("--metrics-file"), "{text}");
            let stderr = String::from_utf8_lossy(&r.stderr);
            assert!(!stderr.contains("warning"), "man warned: {stderr}");
        }
        #[allow(clippy::print_stderr)]
        other => eprintln!("man -l not available here, roff markers checked only: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_progress_bar_or_colour_off_a_terminal() {
    let env = TestEnv::new().await;
    env.write_users(&five_users());
    // Not a terminal (pipes): no bar, no carriage returns, no escape codes,
    // even without NO_COLOR.
    let config = env.config_path().display().to_string();
    let out = run_binary_env(
        env.dir.path(),
        vec!["-c".into(), config.clone(), "sync".into()],
        &[("NO_COLOR", "")],
    )
    .await;
    assert_eq!(out.code, 0, "{out:?}");
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains('\r'), "{out:?}");
        assert!(!text.contains('\u{1b}'), "{out:?}");
    }
    assert!(out.stderr.contains("Reading the whole target"), "{out:?}");
    // --color always forces colour on the plan even into a pipe.
    env.write_users(&five_users()[..4]);
    let out = env.run(&["--color", "always", "plan"]).await;
    assert!(out.stdout.contains("\u{1b}["), "{out:?}");
}
