//! The picture-making examples run in their quick mode, and each PNG they
//! write decodes as an image of the expected size with real content (not a
//! blank canvas) — not merely "the program exited 0".
//!
//! `cargo test` builds the examples before it runs this; when this test is
//! run on its own and they are missing, it builds them with the same profile.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory of this build's example binaries.
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().join("examples")
}

/// Runs example `name` with `--quick --out <dir>` and returns the directory.
fn run(name: &str) -> PathBuf {
    run_with_output(name).0
}

/// [`run`], also returning what the example printed.
fn run_with_output(name: &str) -> (PathBuf, String) {
    let bin = examples_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let release = examples_dir().parent().unwrap().ends_with("release");
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "--example", name]).current_dir(env!("CARGO_MANIFEST_DIR"));
        // The features this test was built with, so that the example links
        // the library already compiled for it rather than a second build.
        let features: Vec<&str> = [("candle", cfg!(feature = "candle")), ("ndarray", cfg!(feature = "ndarray"))]
            .into_iter()
            .filter_map(|(name, on)| on.then_some(name))
            .collect();
        if !features.is_empty() {
            build.args(["--features", &features.join(",")]);
        }
        if release {
            build.arg("--release");
        }
        assert!(build.status().unwrap().success(), "building example {name}");
    }
    let out = std::env::temp_dir().join(format!("convgemm-example-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let result = Command::new(&bin).args(["--quick", "--out"]).arg(&out).output().unwrap();
    assert!(
        result.status.success(),
        "{name} failed:\n{}\n{}",
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    (out, String::from_utf8_lossy(&result.stdout).into_owned())
}

/// Decodes `path` and checks its size and that it is not blank: at least
/// `colours` distinct colours, and 5% of the pixels differ from the
/// background (the top-left pixel).
fn check_png(path: &Path, width: u32, height: u32, colours: usize) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (width, height), "{}", path.display());
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(3).collect();
    let distinct: std::collections::HashSet<&[u8]> = pixels.iter().copied().collect();
    assert!(distinct.len() >= colours, "{} has only {} colours", path.display(), distinct.len());
    let drawn = pixels.iter().filter(|p| **p != pixels[0]).count();
    assert!(drawn * 20 >= pixels.len(), "{} is mostly background", path.display());
    let _ = std::fs::remove_file(path);
    // The example's directory goes once its last picture is checked
    // (`remove_dir` leaves a directory that still holds files).
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir(dir);
    }
}

// The sizes follow from each example's layout (10 px padding, 16 px label
// rows, 6 px per character of the 5×7 font).

#[test]
fn example_lenet5() {
    let out = run("lenet5");
    // Ten 64 px digits across; rows: digits, 6 C1 maps, 6 S2 maps, 16 C3 maps (two rows).
    check_png(&out.join("lenet5.png"), 10 * (64 + 8) + 8, 8 + (14 + 64 + 8) + 3 * 14 + 4 * (56 + 8), 100);
}

#[test]
fn example_feature_maps() {
    let out = run("feature_maps");
    // Quick mode: a 64×64 image, 7 filters; a column is as wide as "GAUSSIAN 5x5" (71 px).
    check_png(&out.join("feature_maps.png"), 10 + 7 * (71 + 10), 10 + 2 * (16 + 64 + 10) + 16 + 64 + 10, 100);
    // Four 32×32 panels drawn at 4×, black and white.
    check_png(&out.join("correlation_vs_convolution.png"), 10 + 4 * (128 + 10), 10 + 16 + 128 + 10 + 16, 3);
}

#[test]
fn example_what_a_filter_sees() {
    let out = run("what_a_filter_sees");
    // Eight columns (the Gabor bank), 15×15 patches at 6×.
    check_png(&out.join("what_a_filter_sees.png"), 10 + 8 * (90 + 10), 10 + 2 * (16 + 90 + 10) + 2 * 16, 100);
}

/// The training run learns: the loss of the last epoch is under a third of
/// the first's, and the test accuracy is far above chance (10 %). Its
/// pictures have their layout's sizes; the Grad-CAM strip has a column per
/// digit and one per mistake (at most six), as many as it printed.
#[test]
fn example_train_digits() {
    let (out, stdout) = run_with_output("train_digits");
    // "epoch  3  loss 0.0849  train acc  97.98%  test loss 0.0748  test acc  98.33%  142 ms"
    let field = |line: &str, key: &str| -> f32 {
        let rest = &line[line.find(key).unwrap_or_else(|| panic!("no {key} in {line}")) + key.len()..];
        rest.split_whitespace().next().unwrap().trim_end_matches('%').parse().unwrap()
    };
    let epochs: Vec<(f32, f32)> = stdout
        .lines()
        .filter(|l| l.starts_with("epoch"))
        .map(|l| (field(l, " loss "), field(l, "test acc ")))
        .collect();
    assert!(epochs.len() >= 3, "too few epochs:\n{stdout}");
    let (first, last) = (epochs[0], epochs[epochs.len() - 1]);
    assert!(last.0 < first.0 / 3.0, "the loss did not fall: {first:?} -> {last:?}\n{stdout}");
    assert!(last.1 >= 90.0, "test accuracy {}% after {} epochs\n{stdout}", last.1, epochs.len());
    let summary = stdout.lines().find(|l| l.starts_with("trained in")).expect("a summary line");
    let wrong: u32 = summary.split('(').nth(1).and_then(|s| s.split(' ').next()).unwrap().parse().unwrap();
    // 10 px padding, 16 px label rows, 64 px maps with 8 px gaps (40 px filters).
    check_png(&out.join("digits_filters_maps.png"), 20 + 8 * 72 - 8, 10 + 2 * 64 + 3 * 88 + 72 + 2, 50);
    // 30 px cells, 40 px of row labels, three label rows above.
    check_png(&out.join("digits_confusion.png"), 50 + 300 + 10, 10 + 48 + 300 + 10, 3);
    // Two columns of eight units; each: three (digit, projection) pairs at 3x.
    check_png(&out.join("digits_deconvnet.png"), 20 + 2 * 324 + 20, 20 + 16 + 8 * (16 + 48 + 10) - 10, 50);
    check_png(&out.join("digits_gradcam.png"), 20 + (10 + wrong.min(6)) * 74 - 10, 10 + 16 + 3 * (16 + 64 + 10), 50);
}

/// ResNet-18 and MobileNetV2 in candle-nn with candle's convolutions and
/// with convgemm's (quick mode: 64×64): every variant's output within 1e-4
/// of candle's, relative to the largest output. The speed is in
/// BENCHMARKS.md, not here.
#[cfg(feature = "candle")]
#[test]
fn example_candle_cnn() {
    let (_, stdout) = run_with_output("candle_cnn");
    let diffs: Vec<f64> = stdout
        .lines()
        .filter(|l| l.contains("largest difference"))
        .map(|l| l.split(" = ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(diffs.len(), 6, "three variants for each of two networks:\n{stdout}");
    assert!(diffs.iter().all(|&d| d < 1e-4), "outputs differ from candle's:\n{stdout}");
    assert_eq!(stdout.matches("training step").count(), 2, "{stdout}");
}
