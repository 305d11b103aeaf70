//! The README's ten-line library example, kept compiling and checked against its comments.

use abba::adapter::{
    Adapter,
    init::{AbbaInit, InitOptions, init_abba},
    scaling::AbbaScale,
};

#[test]
fn readme_library_example_runs_and_its_comments_hold() -> Result<(), abba::AbbaError> {
    let mut rng = abba::rng::seeded(0);
    let w0 = abba::adapter::init::gaussian::<f32, _>(1024, 1024, 0.02, &mut rng); // a "pretrained" weight
    let init = init_abba(
        w0.view(),
        16,
        16,
        AbbaScale::Paper { alpha: 16.0 },
        AbbaInit::Paper,
        InitOptions::default(),
        &mut rng,
    )?;
    let abba = init.adapter;
    assert_eq!(abba.num_params(), (16 + 16) * (1024 + 1024));
    let x = abba::adapter::init::gaussian::<f32, _>(1024, 8, 1.0, &mut rng);
    let y = abba.apply(x.view())?;
    let grads = abba.grads(y.view().dot(&x.t()).view())?;
    assert_eq!(grads.len(), 4);
    assert!(y.iter().all(|&v| v == 0.0), "ΔW = 0 at step 0, so ΔW·X = 0");
    Ok(())
}
