//! Data-parallel training through the `hst` binary: two processes on 127.0.0.1 (burn-collective's global
//! collective, node 0 running the orchestrator) train exactly what two peers in one process train, and a
//! killed process makes the other stop with a clear error instead of hanging.
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use burn::backend::Flex;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use hst_train::trainer::{load_run_model, read_logs};

#[path = "support/tiny.rs"]
mod tiny;
use tiny::TINY;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hst-dp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `hst train --out out extra… --set TINY… --set log_every=2 --set sets…` (the tiny configuration of the CLI
/// tests, 3 batches of 16 an epoch, logging every 2 steps).
fn train_command(out: &Path, extra: &[String], sets: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hst"));
    cmd.arg("train").arg("--out").arg(out).args(extra);
    for s in TINY.iter().chain(&["log_every=2"]).chain(sets) {
        cmd.arg("--set").arg(s);
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn succeeded(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Three distinct ports nobody listens on now (all bound at once, so they differ from each other). Another
/// process may still take one before a node binds it: see [`ports_taken`].
fn free_ports() -> (u16, u16, u16) {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let port = |i: usize| listeners[i].local_addr().unwrap().port();
    (port(0), port(1), port(2))
}

/// Whether a node failed only because one of its ports was taken in the meantime (by some other process's
/// outgoing connection: the ports come from the ephemeral range).
fn ports_taken(out: &Output) -> bool {
    !out.status.success() && text(&out.stderr).contains("Address already in use")
}

/// The two tests start processes that open many connections; one at a time keeps their ports apart.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Node `rank` of two on 127.0.0.1, its tensor service on `port`.
fn node(
    rank: u32,
    coordinator: u16,
    port: u16,
    out: &Path,
    timeout_s: u64,
    sets: &[&str],
) -> Child {
    let args: Vec<String> = [
        "--nodes",
        "2",
        "--node-rank",
        &rank.to_string(),
        "--coordinator",
        &format!("127.0.0.1:{coordinator}"),
        "--node-address",
        &format!("127.0.0.1:{port}"),
        "--collective-timeout",
        &timeout_s.to_string(),
    ]
    .map(String::from)
    .to_vec();
    train_command(out, &args, sets)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the hst binary starts")
}

/// Every float parameter of a run's last checkpoint, in module order.
fn weights(dir: &Path) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor<Flex> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Flex, D>>) {
            self.0.extend(param.val().into_data().iter::<f32>());
        }
    }
    let (_, _, model) = load_run_model::<Flex>(dir, "last.ckpt", &Default::default()).unwrap();
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

#[test]
fn two_processes_train_what_two_peers_in_one_process_train() {
    // Two peers in one process.
    let local = temp("local");
    let out = train_command(&local, &["--devices".into(), "flex,flex".into()], &[])
        .output()
        .unwrap();
    succeeded("hst train --devices flex,flex", &out);
    assert!(
        text(&out.stderr).contains("data-parallel, 2 peers"),
        "{}",
        text(&out.stderr)
    );

    // The same two peers as two processes joined through the coordinator on 127.0.0.1 (again, with new
    // ports, when a port was taken between choosing and binding it; any other failure fails the test).
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut attempt = 0;
    let (a, b, o0, o1) = loop {
        attempt += 1;
        let (coordinator, p0, p1) = free_ports();
        // `temp` empties the folders an earlier attempt wrote.
        let (a, b) = (temp("node0"), temp("node1"));
        let n0 = node(0, coordinator, p0, &a, 120, &[]);
        let n1 = node(1, coordinator, p1, &b, 120, &[]);
        let (o0, o1) = (
            n0.wait_with_output().unwrap(),
            n1.wait_with_output().unwrap(),
        );
        if attempt < 3 && (ports_taken(&o0) || ports_taken(&o1)) {
            continue;
        }
        break (a, b, o0, o1);
    };
    succeeded("node 0", &o0);
    succeeded("node 1", &o1);

    // Node 0 wrote the run; node 1 wrote nothing.
    assert!(!b.join("checkpoints").exists() && !b.join("metrics.jsonl").exists());
    let (x, y) = (read_logs(&local).unwrap(), read_logs(&a).unwrap());
    assert_eq!(x.len(), 2);
    assert_eq!(y.len(), 2);
    for (x, y) in x.iter().zip(&y) {
        assert_eq!(x.record.losses, y.record.losses, "epoch {}", x.record.epoch);
        assert_eq!(x.metrics.map, y.metrics.map);
        assert_eq!(x.record.cst_pseudo, y.record.cst_pseudo);
    }
    let (w, v) = (weights(&local), weights(&a));
    assert_eq!(w.len(), v.len());
    let differing = w
        .iter()
        .zip(&v)
        .filter(|(p, q)| p.to_bits() != q.to_bits())
        .count();
    assert_eq!(differing, 0, "{differing} of {} weights differ", w.len());
}

#[test]
fn a_killed_process_stops_the_other_with_an_error() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (coordinator, p0, p1) = free_ports();
    let (a, b) = (temp("kill0"), temp("kill1"));
    let timeout_s = 20;
    // Long enough not to end before the kill.
    let mut n0 = node(0, coordinator, p0, &a, timeout_s, &["epochs=1000"]);
    let mut n1 = node(1, coordinator, p1, &b, timeout_s, &["epochs=1000"]);
    // Wait until node 0 has written its run folder (both nodes joined and started), then kill node 1.
    let started = Instant::now();
    while !a.join("config.json").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "node 0 never started training"
        );
        if let Some(status) = n0.try_wait().unwrap() {
            panic!("node 0 exited early with {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    n1.kill().unwrap();
    n1.wait().unwrap();
    let killed = Instant::now();
    let deadline = Duration::from_secs(timeout_s + 60);
    loop {
        if n0.try_wait().unwrap().is_some() {
            break;
        }
        if killed.elapsed() > deadline {
            let _ = n0.kill();
            panic!(
                "node 0 still runs {} s after node 1 was killed",
                deadline.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = n0.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "node 0 succeeded without node 1:\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("data-parallel peer 0"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
