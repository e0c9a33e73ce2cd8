//! Fuzz target: small convolutions with arbitrary shapes (zero-sized ones
//! included), parameters and data (NaN, infinities, huge values) through
//! every ISA × algorithm × thread setting, against the f64 direct
//! convolution; every FMA path bit-identical to the portable im2col result.
#![no_main]

use convgemm::testing::ConvProblem;
use convgemm::{
    Activation, Algorithm, ConvError, ConvOptions, ConvParams, Isa, Layout, Precision, Threads, conv2d_output_shape,
};
use convgemm_fuzz::{
    ALGORITHMS, THREADS, activation, all_tame, assert_close, bits, canonical_bits, layout, sentinel, trace, values,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// A convolution problem and the activation to fuse into it.
#[derive(Debug)]
struct Problem {
    conv: ConvProblem,
    activation: Activation,
}

impl std::ops::Deref for Problem {
    type Target = ConvProblem;
    fn deref(&self) -> &ConvProblem {
        &self.conv
    }
}

impl Problem {
    fn arbitrary(u: &mut Unstructured) -> Result<Self> {
        let batch = u.int_in_range(0..=2)?;
        let groups = u.int_in_range(1..=3)?;
        let (cg_in, cg_out) = (u.int_in_range(0..=4)?, u.int_in_range(0..=4)?);
        let (h, w) = (u.int_in_range(0..=12)?, u.int_in_range(0..=12)?);
        let (kh, kw) = (u.int_in_range(1..=5)?, u.int_in_range(1..=5)?);
        let stride = [u.int_in_range(1..=4)?, u.int_in_range(1..=4)?];
        let mut padding = [0; 4];
        for p in &mut padding {
            *p = u.int_in_range(0..=4)?;
        }
        let dilation = [u.int_in_range(1..=3)?, u.int_in_range(1..=3)?];
        let flip = u.arbitrary()?;
        let has_bias: bool = u.arbitrary()?;
        let activation = activation(u)?;
        let params = ConvParams { stride, padding, dilation, groups, flip, layout: layout(u)? };
        let input_shape = [batch, groups * cg_in, h, w];
        let weight_shape = [groups * cg_out, cg_in, kh, kw];
        let bias = if has_bias { Some(values(u, groups * cg_out)?) } else { None };
        let weight = values(u, weight_shape.iter().product())?;
        let input = values(u, input_shape.iter().product())?;
        Ok(Problem { conv: ConvProblem { input_shape, weight_shape, params, input, weight, bias }, activation })
    }

    fn options(isa: Isa, algorithm: Algorithm, threads: Threads, activation: Activation) -> ConvOptions {
        ConvOptions { isa, algorithm, activation, threads, precision: Precision::Exact }
    }

    fn check(&self) {
        trace(self);
        let shape = match conv2d_output_shape(self.input_shape, self.weight_shape, &self.params) {
            Ok(shape) => shape,
            Err(e) => {
                // Every parameter drawn above is in range: only an empty axis is an error.
                assert!(matches!(e, ConvError::NoOutput { .. }), "unexpected {e} for {self:?}");
                self.check_rejected(&e);
                return;
            }
        };
        let len: usize = shape.iter().product();
        let k = self.weight_shape[1] * self.weight_shape[2] * self.weight_shape[3];
        let tame = all_tame(&self.input) && all_tame(&self.weight) && self.bias.as_deref().is_none_or(all_tame);
        let reference = self.reference().expect("the reference accepts what conv2d_output_shape accepts");

        let mut want = sentinel(len);
        self.run_into(&Self::options(Isa::Portable, Algorithm::Im2col, Threads::Single, Activation::None), &mut want)
            .expect("valid problem");
        if tame {
            assert_close(&format!("portable im2col {self:?}"), &reference, &want, k);
        }
        for isa in Isa::available() {
            for algorithm in ALGORITHMS {
                // Threads only matter where a path may fork: try both once per ISA.
                let threads_tried: &[Threads] =
                    if algorithm == Algorithm::Auto { &THREADS } else { &[Threads::Single] };
                for &threads in threads_tried {
                    let what = format!("{} {algorithm:?} {threads:?} {self:?}", isa.name());
                    let mut got = sentinel(len);
                    self.run_into(&Self::options(isa, algorithm, threads, Activation::None), &mut got)
                        .expect("valid problem");
                    if isa == Isa::PortableUnfused {
                        if tame {
                            assert_close(&what, &reference, &got, k);
                        }
                    } else {
                        assert_eq!(canonical_bits(&got), canonical_bits(&want), "{what}: differs from portable im2col");
                    }
                    if self.activation == Activation::None {
                        continue;
                    }
                    // The fused activation is the scalar activation of the plain result.
                    let mut fused = sentinel(len);
                    self.run_into(&Self::options(isa, algorithm, threads, self.activation), &mut fused)
                        .expect("valid problem");
                    let applied: Vec<f32> = got.iter().map(|&x| self.activation.apply(x)).collect();
                    assert_eq!(bits(&fused), bits(&applied), "{what}: fused {:?}", self.activation);
                }
            }
        }
        self.check_winograd(shape, &reference, tame);
        // The one-call API runs the detected path.
        let mut got = sentinel(len);
        self.run_default_into(&mut got).expect("valid problem");
        if Isa::detect() != Isa::PortableUnfused {
            assert_eq!(canonical_bits(&got), canonical_bits(&want), "conv2d (detected path) {self:?}");
        }
    }

    /// Winograd, where it applies: the same bits on every path (the
    /// unfused one aside), thread setting and with `Auto` under `Relaxed`
    /// where that takes it; near the reference when the data are tame and
    /// finite. Its error grows with the largest terms of an output's tile,
    /// not the output's own (values here span 2^±20), so the bound is
    /// `rel_bound · 16 ·` the larger of the largest magnitude of the
    /// output's (image, channel) plane (found in either layout) and its
    /// filter's `Σ|w|` times the largest input (taps that meet only padding
    /// still enter the transforms): a wrong index or tap is off by a term,
    /// far past it.
    fn check_winograd(&self, shape: [usize; 4], reference: &convgemm::reference::Reference, tame: bool) {
        if !convgemm_fuzz::winograd_applies(self.weight_shape, &self.params) {
            return;
        }
        let forced = |isa, threads| Self::options(isa, Algorithm::Winograd, threads, Activation::None);
        let mut want = sentinel(reference.value.len());
        self.run_into(&forced(Isa::Portable, Threads::Single), &mut want).expect("valid problem");
        for isa in Isa::available().into_iter().filter(|&i| i != Isa::PortableUnfused) {
            for threads in THREADS {
                let mut got = sentinel(want.len());
                self.run_into(&forced(isa, threads), &mut got).expect("valid problem");
                let what = format!("winograd {} {threads:?} {self:?}", isa.name());
                assert_eq!(canonical_bits(&got), canonical_bits(&want), "{what}: differs from portable");
            }
        }
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        let all_finite = finite(&self.input) && finite(&self.weight) && self.bias.as_deref().is_none_or(finite);
        if !(tame && all_finite) {
            return;
        }
        // Each element's (image, channel) plane, in the output's layout.
        let [_, c, h, w] = shape;
        let plane_of = |e: usize| match self.params.layout {
            Layout::Nchw => e / (h * w).max(1),
            _ => e / (c * h * w).max(1) * c + e % c.max(1),
        };
        let mut top = vec![0.0f64; shape[0] * c];
        for (e, &m) in reference.magnitude.iter().enumerate() {
            top[plane_of(e)] = top[plane_of(e)].max(m);
        }
        // A tile's taps that meet only padding still enter its transforms:
        // the scale also counts the whole filter against the largest input.
        let k = self.weight_shape[1] * 9;
        let x_max = self.input.iter().fold(0.0f64, |m, &x| m.max(f64::from(x).abs()));
        let filter: Vec<f64> =
            self.weight.chunks(k.max(1)).map(|f| f.iter().map(|&v| f64::from(v).abs()).sum()).collect();
        let channel_of = |e: usize| match self.params.layout {
            Layout::Nchw => e / (h * w).max(1) % c.max(1),
            _ => e % c.max(1),
        };
        for (e, &g) in want.iter().enumerate() {
            let w = reference.value[e];
            let scale = top[plane_of(e)].max(filter.get(channel_of(e)).copied().unwrap_or(0.0) * x_max);
            let bound = convgemm_fuzz::rel_bound(k) * 16.0 * scale;
            assert!((f64::from(g) - w).abs() <= bound, "winograd element {e}: {g} vs {w} (bound {bound:e}) {self:?}");
        }
    }

    /// A problem with no output: every path rejects it and leaves a buffer alone.
    fn check_rejected(&self, expected: &ConvError) {
        let before = sentinel(4);
        for isa in Isa::available() {
            for algorithm in ALGORITHMS {
                let mut out = before.clone();
                let err = self
                    .run_into(&Self::options(isa, algorithm, Threads::Pool, self.activation), &mut out)
                    .expect_err("no output");
                assert_eq!(&err, expected, "{} {algorithm:?} {self:?}", isa.name());
                assert_eq!(bits(&out), bits(&before), "output changed on Err");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    if let Ok(problem) = Problem::arbitrary(&mut u) {
        problem.check();
    }
});
