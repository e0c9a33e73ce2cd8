//! `Activation`: what is applied to each output after the bias. The scalar
//! definition here is the one every vector path (`simd`) reproduces bit for bit.

/// An activation fused into the output stores (after the bias).
///
/// `Relu` maps `x < 0` to `0` and keeps NaN; `Clamp` maps `x < min` to `min`
/// and `x > max` to `max`, keeping NaN.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Activation {
    /// The identity.
    #[default]
    None,
    /// `max(x, 0)`, NaN stays NaN.
    Relu,
    /// `min(max(x, min), max)`, NaN stays NaN.
    Clamp {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
}

impl Activation {
    /// The activation of one value; the SIMD kernels compute exactly this.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Clamp { min, max } => {
                let y = if x < min { min } else { x };
                if y > max { max } else { y }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_keeps_nan_and_negative_zero() {
        assert!(Activation::Relu.apply(f32::NAN).is_nan());
        assert_eq!(Activation::Relu.apply(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(Activation::Relu.apply(-3.0), 0.0);
        let clamp = Activation::Clamp { min: -1.0, max: 2.0 };
        assert_eq!((clamp.apply(-5.0), clamp.apply(5.0), clamp.apply(0.5)), (-1.0, 2.0, 0.5));
        assert!(clamp.apply(f32::NAN).is_nan());
    }
}
