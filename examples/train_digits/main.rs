//! A CNN that learns: a LeNet-5-style network trained on real handwritten
//! digits (the UCI set, 1,797 8×8 images) with Adam, every convolution,
//! pool and matrix product — forward and backward — a call to convgemm.
//! Then pictures of what it learned and of what its units see.
//!
//! ```text
//! cargo run --release --example train_digits                # 20 epochs, ~99% on the test split
//! cargo run --release --example train_digits -- --quick     # 4 epochs (the test suite runs this)
//! cargo run --release --example train_digits -- --out DIR   # where the PNGs go
//! ```
//!
//! The network is in `net.rs`, the data in `data.rs`, the pictures in
//! `see.rs`. It prints the loss and accuracy of each epoch and its time, and
//! writes `digits_filters_maps.png` (first-layer filters before and after
//! training, the feature maps of one test digit), `digits_confusion.png`,
//! `digits_deconvnet.png` (Zeiler & Fergus's projection of C3 units back to
//! pixels) and `digits_gradcam.png` (Grad-CAM over C3).

#[path = "../common/mod.rs"]
mod common;
mod data;
mod net;
mod see;

use std::error::Error;
use std::path::Path;
use std::time::Instant;

use common::Rng;
use data::Split;
use net::{Adam, CLASSES, Params, SIDE};

/// The images `ids` of `split` as one batch: `(images, labels)`.
fn gather(split: &Split, ids: &[usize]) -> (Vec<f32>, Vec<u8>) {
    let px = SIDE * SIDE;
    let x = ids.iter().flat_map(|&i| &split.images[i * px..][..px]).copied().collect();
    (x, ids.iter().map(|&i| split.labels[i]).collect())
}

/// The predicted class of each row of scores.
pub fn predictions(z: &[f32]) -> Vec<u8> {
    z.chunks_exact(CLASSES).map(|r| (0..CLASSES).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap() as u8).collect()
}

fn correct(z: &[f32], labels: &[u8]) -> usize {
    predictions(z).iter().zip(labels).filter(|(p, l)| p == l).count()
}

/// Mean loss and accuracy on a whole split, in one forward pass.
fn evaluate(p: &Params, split: &Split) -> (f32, f32) {
    let f = net::forward(p, &split.images);
    let (loss, _) = net::loss_and_grad(&f.z, &split.labels);
    (loss, correct(&f.z, &split.labels) as f32 / split.len() as f32)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = common::args();
    let (train, test) = data::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits.csv.gz"))?;
    let (epochs, batch) = if args.quick { (4, 32) } else { (20, 32) };
    println!(
        "UCI handwritten digits: {} training and {} test images, 8x8 upsampled to {SIDE}x{SIDE}; \
         Adam, batch {batch}, {epochs} epochs, {} threads",
        train.len(),
        test.len(),
        rayon::current_num_threads()
    );
    let mut rng = Rng::new(20);
    let init = Params::init(|| rng.next_f32());
    let mut p = init.clone();
    let mut adam = Adam::new(2e-3);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let start = Instant::now();
    for epoch in 1..=epochs {
        let t = Instant::now();
        rng.shuffle(&mut order);
        let (mut loss_sum, mut right) = (0.0, 0);
        for ids in order.chunks(batch) {
            let (x, labels) = gather(&train, ids);
            let f = net::forward(&p, &x);
            let (loss, d_z) = net::loss_and_grad(&f.z, &labels);
            loss_sum += loss * ids.len() as f32;
            right += correct(&f.z, &labels);
            let g = net::backward(&p, &f, &d_z);
            adam.update(&mut p, &g.params);
        }
        let secs = t.elapsed().as_secs_f64();
        // A step decay: the second half of the run refines at a tenth of the rate.
        if epoch == epochs / 2 {
            adam.lr *= 0.1;
        }
        let (test_loss, test_acc) = evaluate(&p, &test);
        println!(
            "epoch {epoch:>2}  loss {:.4}  train acc {:6.2}%  test loss {test_loss:.4}  test acc {:6.2}%  {:.0} ms",
            loss_sum / train.len() as f32,
            100.0 * right as f32 / train.len() as f32,
            100.0 * test_acc,
            secs * 1e3
        );
    }
    let (_, test_acc) = evaluate(&p, &test);
    println!(
        "trained in {:.2} s: test accuracy {:.2}% ({} of {} wrong)",
        start.elapsed().as_secs_f64(),
        100.0 * test_acc,
        ((1.0 - test_acc) * test.len() as f32).round(),
        test.len()
    );
    see::filters_and_maps(&init, &p, &test, &args.out.join("digits_filters_maps.png"))?;
    see::confusion(&p, &test, &args.out.join("digits_confusion.png"))?;
    see::deconvnet(&p, &test, &args.out.join("digits_deconvnet.png"))?;
    see::gradcam(&p, &test, &args.out.join("digits_gradcam.png"))?;
    Ok(())
}
