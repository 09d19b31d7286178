//! The Python `kubernetes` client (pip `kubernetes`) against the real `h8s server`.

mod api_support;

use api_support::Server;

#[test]
fn python_client_suite() {
    let have = std::process::Command::new("python3")
        .args(["-c", "import kubernetes"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(have, "the Python kubernetes client is missing: python3 -m pip install kubernetes (scripts/setup does)");
    let s = Server::start();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/python/test_api.py"
    );
    let out = std::process::Command::new("python3")
        .arg(script)
        .env("H8S_KUBECONFIG", &s.kubeconfig)
        .output()
        .expect("running python3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python suite failed:\n{err}");
    // unittest reports on stderr; make sure tests really ran.
    assert!(err.contains("Ran ") && err.contains("OK"), "{err}");
}
