//! Small JSON helpers for answers in RAGFlow's shape.
//!
//! Where this sits: at the end of the job path, where rows and results become client JSON (the
//! ingress's dataset and document answers, the retrieval worker's scores). PostgreSQL `real`
//! columns come back as `f32`; written as `f64` they would print as 0.20000000298023224, where
//! RAGFlow (and the client that stored 0.2) expects 0.2.

use serde_json::Value;

/// An `f32` as the shortest decimal that reads back as it (0.2, not 0.20000000298023224);
/// `null` for NaN or an infinity.
pub fn short_f32(x: f32) -> Value {
    format!("{x}")
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

/// The `f64` of [`short_f32`]'s decimal (for arithmetic before writing); `f64::from(x)` for a
/// value that does not print as a number.
pub fn short_f64(x: f32) -> f64 {
    format!("{x}").parse().unwrap_or(f64::from(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_decimals() {
        assert_eq!(short_f32(0.2), serde_json::json!(0.2));
        assert_eq!(short_f32(0.7), serde_json::json!(0.7));
        assert_eq!(short_f32(f32::NAN), Value::Null);
        assert_eq!(short_f64(0.2), 0.2);
    }
}
