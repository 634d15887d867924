//! The process helpers themselves.

use std::process::Command;

/// A process that exits before reporting its port is started again.
#[test]
fn a_process_that_exits_before_its_port_is_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("started-once");
    // First run: leaves a mark and exits without a port; second run: reports one.
    let script = format!(
        "if [ -e '{m}' ]; then echo 'ready: listening on port 4321'; exec sleep 30; else touch '{m}'; fi",
        m = mark.display()
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    let (mut proc, port) = rcodis_tests::spawn_on_free_port("sh", cmd);
    assert_eq!(port, 4321);
    assert!(mark.exists());
    assert!(!proc.exited());
}

/// A process that never reports a port fails the test with its name, after three tries.
#[test]
fn a_process_that_never_reports_a_port_fails() {
    let r = std::panic::catch_unwind(|| {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("exit 3");
        rcodis_tests::spawn_on_free_port("quitter", cmd)
    });
    let e = r.err().expect("must fail");
    let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("quitter exited before reporting its port"),
        "{msg}"
    );
}
