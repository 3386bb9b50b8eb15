//! Smoke runs of the simulator.

use bench::sim::link::{LinkModel, Loss};
use bench::sim::{fixture, ClientOutcome, ClientSpec, Sim, SimConfig};

fn run(n: usize, loss: Loss, seed: u64) -> bench::sim::SimOutcome {
    let img = fixture::image(seed, 300_000);
    let sf = fixture::stream_file(&img, 4096);
    let mut cfg = SimConfig::new(seed, vec![("img".into(), sf)]);
    cfg.engine.min_clients = n as u32;
    let spec = ClientSpec {
        down: LinkModel::lossy(loss),
        ..Default::default()
    };
    let mut sim = Sim::new(cfg, vec![spec; n]);
    sim.run()
}

#[test]
fn lossless_four() {
    let o = run(4, Loss::None, 1);
    for c in &o.clients {
        assert_eq!(
            c.outcome,
            ClientOutcome::Finished {
                acknowledged: true,
                exact: true
            },
            "{c:?}"
        );
    }
    assert!(o.all_over);
    eprintln!("{:?} {:?}", o.end, o.net);
}

#[test]
fn lossy_ten() {
    let o = run(10, Loss::Iid(0.05), 2);
    assert_eq!(o.exact(), 10, "{:#?}", o.clients);
    eprintln!("{:?} {:?}", o.end, o.net);
}
