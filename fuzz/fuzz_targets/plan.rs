//! Fuzz target: `Conv2dPlan` built once from arbitrary weights, parameters
//! and options, then run on several inputs (matching, mismatched, empty):
//! each run equals `conv2d_with` bit for bit and the f64 reference within the
//! bound; each rejected call leaves the output untouched.
#![no_main]

use convgemm::reference::conv2d_direct;
use convgemm::{Conv2dPlan, ConvOptions, ConvParams, conv2d_output_shape, conv2d_with};
use convgemm_fuzz::{
    all_tame, any_options, assert_close, bits, layout, may_relax, rarely, sentinel, trace, values, winograd_applies,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

struct Case {
    weight: Vec<f32>,
    weight_shape: [usize; 4],
    bias: Option<Vec<f32>>,
    params: ConvParams,
    options: ConvOptions,
}

/// Small parameters, sometimes out of range (zero stride, dilation or groups).
fn params(u: &mut Unstructured) -> Result<ConvParams> {
    let low = if rarely(u, 16)? { 0 } else { 1 };
    let mut padding = [0; 4];
    for p in &mut padding {
        *p = u.int_in_range(0..=3)?;
    }
    Ok(ConvParams {
        stride: [u.int_in_range(low..=3)?, u.int_in_range(low..=3)?],
        padding,
        dilation: [u.int_in_range(low..=2)?, u.int_in_range(low..=2)?],
        groups: u.int_in_range(low..=3)?,
        flip: u.arbitrary()?,
        layout: layout(u)?,
    })
}

impl Case {
    fn arbitrary(u: &mut Unstructured) -> Result<Self> {
        let params = params(u)?;
        let g = params.groups.max(1);
        let weight_shape =
            [g * u.int_in_range(0..=3)?, u.int_in_range(0..=3)?, u.int_in_range(0..=4)?, u.int_in_range(0..=4)?];
        let len: usize = weight_shape.iter().product();
        // Now and then a weight or bias of the wrong length.
        let wrong = rarely(u, 16)?;
        let weight = values(u, if wrong { len + 1 } else { len })?;
        let bias = match u.int_in_range(0u8..=4)? {
            0 | 1 => None,
            2 => Some(values(u, weight_shape[0] + 1)?),
            _ => Some(values(u, weight_shape[0])?),
        };
        let options = any_options(u)?;
        Ok(Case { weight, weight_shape, bias, params, options })
    }

    /// Runs the plan on one arbitrary input.
    fn run_one(&self, plan: &Conv2dPlan, u: &mut Unstructured) -> Result<()> {
        let [c_out, cg_in, _, _] = self.weight_shape;
        let c_in = if rarely(u, 8)? { u.int_in_range(0..=7)? } else { cg_in * self.params.groups };
        let input_shape = [u.int_in_range(0..=3)?, c_in, u.int_in_range(0..=9)?, u.int_in_range(0..=9)?];
        let in_len: usize = input_shape.iter().product();
        trace(&input_shape);
        let short = rarely(u, 16)?;
        let input = values(u, if short { in_len.saturating_sub(1) } else { in_len })?;
        let shape = plan.output_shape(input_shape);
        assert_eq!(shape, conv2d_output_shape(input_shape, self.weight_shape, &self.params), "output_shape");
        let out_len = match shape {
            Ok(s) if !rarely(u, 16)? => s.iter().product(),
            Ok(s) => s.iter().product::<usize>() + 1,
            Err(_) => c_out,
        };
        let mut out = sentinel(out_len);
        let result = plan.run(&input, input_shape, &mut out);
        // conv2d_with on the same arguments: the same outcome, the same bits.
        let mut direct = sentinel(out_len);
        let direct_result = conv2d_with(
            &self.options,
            &input,
            input_shape,
            &self.weight,
            self.weight_shape,
            self.bias.as_deref(),
            &self.params,
            &mut direct,
        );
        assert_eq!(result, direct_result, "plan.run vs conv2d_with, input {input_shape:?}");
        assert_eq!(bits(&out), bits(&direct), "plan.run vs conv2d_with, input {input_shape:?}");
        if result.is_err() {
            assert_eq!(bits(&out), bits(&sentinel(out_len)), "output changed on {result:?}");
            return Ok(());
        }
        let mut again = sentinel(out_len);
        plan.run(&input, input_shape, &mut again).expect("the same call succeeded before");
        assert_eq!(bits(&again), bits(&out), "second run of the plan differs");
        let tame = all_tame(&input) && all_tame(&self.weight) && self.bias.as_deref().is_none_or(all_tame);
        // Winograd rounds within a bound of its tiles' scale, checked by
        // conv2d_vs_reference; here the exact paths against the reference.
        if tame && self.options.activation == convgemm::Activation::None && !may_relax(&self.options) {
            let reference =
                conv2d_direct(&input, input_shape, &self.weight, self.weight_shape, self.bias.as_deref(), &self.params)
                    .expect("reference accepts a valid call");
            let k = self.weight_shape[1] * self.weight_shape[2] * self.weight_shape[3];
            assert_close(&format!("plan {:?} input {input_shape:?}", self.options), &reference, &out, k);
        }
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(case) = Case::arbitrary(&mut u) else { return };
    trace(&(case.weight_shape, case.weight.len(), case.bias.as_ref().map(Vec::len), case.params, case.options));
    let plan = Conv2dPlan::new(&case.weight, case.weight_shape, case.bias.as_deref(), &case.params, &case.options);
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => {
            let valid_len = case.weight.len() == case.weight_shape.iter().product::<usize>()
                && case.bias.as_ref().is_none_or(|b| b.len() == case.weight_shape[0]);
            let valid_params = case.params.stride.iter().chain(&case.params.dilation).all(|&s| s > 0)
                && case.params.groups > 0
                && case.weight_shape[2] > 0
                && case.weight_shape[3] > 0;
            let winograd_ok = case.options.algorithm != convgemm::Algorithm::Winograd
                || winograd_applies(case.weight_shape, &case.params);
            assert!(
                !valid_len || !valid_params || !case.options.isa.is_available() || !winograd_ok,
                "Conv2dPlan::new rejected a valid plan: {e}"
            );
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(!format!("{plan:?}").is_empty());
    for i in 0..3 {
        if (i > 0 && u.is_empty()) || case.run_one(&plan, &mut u).is_err() {
            break;
        }
    }
});
