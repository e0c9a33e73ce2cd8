//! Shared by the integration tests: the problem struct of
//! `convgemm::testing` with its check and proptest strategies,
//! `for_each_isa`, and the one closeness check. The oracles themselves live
//! in `convgemm::reference`.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use convgemm::testing::{ALGORITHMS, ConvProblem, bits, canonical_bits, relayout, values};

use convgemm::reference::Reference;
use convgemm::{Activation, Algorithm, ConvError, ConvOptions, ConvParams, Isa, Layout, Threads};
use proptest::prelude::*;
use std::ops::RangeInclusive;

/// The relative bound of every closeness check: an f32 result may differ from
/// the f64 reference by `REL · Σ|term|` (the magnitude of the defining sum,
/// bias included). A sum of K products in f32 errs by at most about
/// `K · 2⁻²⁴ · Σ|term|` in the worst case and by `√K · 2⁻²⁴ · Σ|term|`
/// typically; 1e-5 is that typical bound with a wide margin for every K
/// the tests draw, and far below any real indexing bug.
pub const REL: f64 = 1e-5;

/// Proptest cases per property: `PROPTEST_CASES` or `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs `f` for every ISA path this CPU has, saying which were skipped.
/// `CONVGEMM_REQUIRE_ISA=avx2_fma,neon` turns a skip of a listed path into a failure.
pub fn for_each_isa(mut f: impl FnMut(Isa)) {
    let required = std::env::var("CONVGEMM_REQUIRE_ISA").unwrap_or_default();
    for isa in Isa::ALL {
        if isa.is_available() {
            f(isa);
        } else {
            assert!(
                !required.split(',').any(|r| r.trim() == isa.name()),
                "{} is required (CONVGEMM_REQUIRE_ISA) but not available",
                isa.name()
            );
            eprintln!("skipped {}: not available on this CPU", isa.name());
        }
    }
}

/// Whether `isa` promises bit-identical results with the portable path.
pub fn is_exact(isa: Isa) -> bool {
    isa != Isa::PortableUnfused
}

/// Asserts `got` is within `REL · magnitude` of the reference, naming the first bad index.
pub fn assert_close(what: &str, reference: &Reference, got: &[f32]) {
    if let Some((i, want, g)) = reference.first_mismatch(got, REL) {
        panic!("{what}: element {i} is {g}, reference {want} (bound {:e})", REL * reference.magnitude[i]);
    }
}

/// The suite's checks of one convolution problem.
pub trait Check {
    /// The whole check: every ISA × algorithm agrees with the portable
    /// result bit for bit (the unfused path within the bound), and the
    /// portable result is within the bound of the f64 reference. A problem
    /// with no output must be rejected by every path with the output untouched.
    fn check(&self);
}

impl Check for ConvProblem {
    /// An NCHW problem is checked, then the same in channels-last, whose
    /// outputs must be the NCHW ones permuted, bit for bit (both layouts sum
    /// the same terms in the same order).
    fn check(&self) {
        self.check_layout();
        if self.params.layout == Layout::Nchw {
            let nhwc = self.in_layout(Layout::Nhwc);
            nhwc.check_layout();
            let opts = ConvOptions::default();
            if let (Ok(nchw_out), Ok(nhwc_out)) = (self.run(&opts), nhwc.run(&opts)) {
                let shape = self.output_shape().expect("it ran");
                let permuted = relayout(&nchw_out, shape, Layout::Nchw, Layout::Nhwc);
                assert_eq!(canonical_bits(&nhwc_out), canonical_bits(&permuted), "NHWC vs NCHW {self:?}");
            }
        }
    }
}

/// The checks of [`Check::check`] in the problem's own layout.
trait CheckLayout {
    fn check_layout(&self);
}

impl CheckLayout for ConvProblem {
    fn check_layout(&self) {
        let portable = ConvOptions { isa: Isa::Portable, algorithm: Algorithm::Im2col, ..ConvOptions::default() };
        let want = match self.run(&portable) {
            Ok(v) => v,
            Err(e) => {
                assert!(matches!(e, ConvError::NoOutput { .. }), "unexpected error {e} for {self:?}");
                return;
            }
        };
        let reference = self.reference().expect("the reference accepts what conv2d accepts");
        assert_close(&format!("portable im2col {self:?}"), &reference, &want);
        for_each_isa(|isa| {
            for algorithm in ALGORITHMS {
                for threads in [Threads::Pool, Threads::Single] {
                    let opts = ConvOptions { isa, algorithm, threads, ..ConvOptions::default() };
                    let got = self.run(&opts).expect("valid problem");
                    let what = format!("{} {algorithm:?} {threads:?} {self:?}", isa.name());
                    if is_exact(isa) {
                        assert_eq!(bits(&got), bits(&want), "{what}: differs from portable");
                    } else {
                        assert_close(&what, &reference, &got);
                    }
                }
            }
            // The fused activation is the scalar activation of the unfused result.
            let act = Activation::Clamp { min: -0.25, max: 0.5 };
            let opts = ConvOptions { isa, activation: act, ..ConvOptions::default() };
            let fused = self.run(&opts).expect("valid problem");
            let plain = self.run(&ConvOptions { isa, ..ConvOptions::default() }).expect("valid problem");
            let applied: Vec<f32> = plain.iter().map(|&x| act.apply(x)).collect();
            assert_eq!(bits(&fused), bits(&applied), "{} fused clamp {self:?}", isa.name());
        });
    }
}

/// Random problems: batch, groups, channels per group in and out, input
/// size, kernel size, stride, padding and dilation each drawn from its
/// range, flip, bias or not.
#[allow(clippy::too_many_arguments)]
fn problems(
    n: RangeInclusive<usize>,
    groups: RangeInclusive<usize>,
    cg_in: RangeInclusive<usize>,
    cg_out: RangeInclusive<usize>,
    hw: RangeInclusive<usize>,
    k: RangeInclusive<usize>,
    stride: RangeInclusive<usize>,
    pad: RangeInclusive<usize>,
    dil: RangeInclusive<usize>,
) -> impl Strategy<Value = ConvProblem> {
    (
        (n, groups, cg_in, cg_out),
        (hw.clone(), hw, k.clone(), k),
        (stride.clone(), stride, [pad.clone(), pad.clone(), pad.clone(), pad]),
        (dil.clone(), dil, any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(|((n, groups, cg_in, cg_out), (h, w, kh, kw), (sh, sw, padding), (dh, dw, flip, bias, seed))| {
            let params =
                ConvParams { stride: [sh, sw], padding, dilation: [dh, dw], groups, flip, ..ConvParams::default() };
            ConvProblem::seeded([n, groups * cg_in, h, w], [groups * cg_out, cg_in, kh, kw], params, bias, seed)
        })
}

/// Problems of every shape, a few channels each, over the ranges of the
/// foundation issue: n 1..3, channels and groups, h, w 1..24, kernel 1..6,
/// stride 1..4, each padding side 0..4, dilation 1..3.
pub fn conv_problem() -> impl Strategy<Value = ConvProblem> {
    problems(1..=3, 1..=3, 1..=4, 1..=4, 1..=24, 1..=6, 1..=4, 0..=4, 1..=3)
}

/// Depthwise problems (one input channel per group, one or two outputs) of
/// stride 1 and kernels 3..5 high, on images up to 72 wide: the shapes of the
/// AVX-512 depthwise rows (1 to 5 vectors of 16 columns, edges masked).
pub fn depthwise_problem() -> impl Strategy<Value = ConvProblem> {
    problems(1..=2, 1..=5, 1..=1, 1..=2, 1..=72, 3..=5, 1..=1, 0..=4, 1..=2)
}

/// Depthwise problems of every stride (1 to 3 in each axis on its own),
/// kernels 1..7 in each axis, channel multipliers 1..3 and planes 1..40
/// wide and high (rows of 1 to 3 pixels included): the shapes of
/// `dwconv_plane`'s stride phases.
pub fn depthwise_problem_strided() -> impl Strategy<Value = ConvProblem> {
    problems(1..=2, 1..=4, 1..=1, 1..=3, 1..=40, 1..=7, 1..=3, 0..=3, 1..=2)
}

/// Depthwise problems at stride 2 both ways with 3 × 3 and 5 × 5 kernels,
/// rows up to 200 wide: the shapes of AVX-512's stride-2 rolling rows (1
/// to 4 vectors of 16 output columns a block, a second block past 64
/// outputs, i.e. past ~127 columns; edges masked), multipliers 1 and 2
/// (which take the rolling rows on any width), every padding side 0..4;
/// a quarter of them with 16 to 20 channels, where the channels-last
/// rows (`dwconv_channels_last_rows_<isa>`) take multiplier 1.
pub fn depthwise_problem_stride_2() -> impl Strategy<Value = ConvProblem> {
    (
        (1..=2usize, prop_oneof![3 => 1..=4usize, 1 => 16..=20usize], 1..=2usize),
        (1..=16usize, 1..=200usize, prop_oneof![Just(3usize), Just(5usize)]),
        [0..=4usize, 0..=4, 0..=4, 0..=4],
        (any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(|((n, groups, m), (h, w, k), padding, (flip, bias, seed))| {
            let params = ConvParams { stride: [2, 2], padding, groups, flip, ..ConvParams::default() };
            ConvProblem::seeded([n, groups, h, w], [groups * m, 1, k, k], params, bias, seed)
        })
}

/// Depthwise 3 × 3 and 5 × 5 problems at stride 1 (dilated along the row
/// or not) and stride 2, multiplier 1, 2 to 20 channels, rows of 5 to 40
/// inputs, every padding side 0..3: AVX-512's rolling rows a block of
/// channels a call (3 × 3 rows of 9 to 32 outputs at stride 1, of 9 to
/// 16 at stride 2, two channels at a time; 5 × 5 rows of 9 to 16), with
/// odd channel counts and partial blocks of channels, and the paths on
/// either side of those widths.
pub fn depthwise_problem_row_blocks() -> impl Strategy<Value = ConvProblem> {
    (
        (1..=2usize, 2..=20usize, 1..=12usize, 5..=40usize),
        ([0..=3usize, 0..=3, 0..=3, 0..=3], prop_oneof![Just(3usize), Just(5usize)]),
        (prop_oneof![Just([1usize, 1usize]), Just([1, 2]), Just([2, 1])], any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(|((n, c, h, w), (padding, k), ([stride, dilation_w], flip, bias, seed))| {
            let params = ConvParams {
                stride: [stride; 2],
                padding,
                dilation: [1, dilation_w],
                groups: c,
                flip,
                ..ConvParams::default()
            };
            ConvProblem::seeded([n, c, h, w], [c, 1, k, k], params, bias, seed)
        })
}

/// Depthwise problems of 6 to 20 channels, multiplier 1: whole and partial
/// blocks of channels as lanes (`dwconv_blocked`, 8 or 4 channels a block),
/// every stride 1..3 and kernel 1..7 in each axis, planes 1..30.
pub fn depthwise_problem_blocks() -> impl Strategy<Value = ConvProblem> {
    problems(1..=2, 6..=20, 1..=1, 1..=1, 1..=30, 1..=7, 1..=3, 0..=3, 1..=2)
}

/// 1×1 convolutions on planes of 1 to 9 pixels (squeeze-and-excite,
/// classifier heads): the matrix-vector path, K past one chunk (up to
/// 300 > 256 input channels per group), every panel of output channels.
pub fn pointwise_problem_tiny() -> impl Strategy<Value = ConvProblem> {
    problems(1..=2, 1..=2, 1..=300, 1..=40, 1..=3, 1..=1, 1..=1, 0..=0, 1..=1)
}

/// Problems with 16 to 40 output channels per group and at least two input
/// channels: the shapes the direct path (`Algorithm::Direct`) takes, with
/// K past one chunk (up to 12 × 5 × 5 = 300 > 256) and channel counts
/// around the 32-lane panel.
pub fn conv_problem_wide() -> impl Strategy<Value = ConvProblem> {
    problems(1..=2, 1..=2, 2..=12, 16..=40, 1..=20, 1..=5, 1..=4, 0..=3, 1..=2)
}
