//! The optional quote fields a tick may carry besides its price: the top of book (bid, ask and
//! their sizes), the last trade's size, and the day's volume, open, high, low and previous close.
//!
//! A [`Quote`] is part of one [`crate::Tick`] and is validated and encoded with it (see
//! `Tick::with_quote`): every field is optional, and an absent field is absent from the tick's
//! JSON (never `null`). A tick's record is whole: a later tick replaces the earlier one with every
//! field, so a field a producer leaves out is absent from the ticker's latest record (README, "The
//! tick schema").

use std::fmt::Write as _;

use serde::Deserialize;

/// Optional quote fields of a tick. All are finite and non-negative; `bid <= ask` when both.
///
/// Sizes and volume are numbers rather than integers: crypto and fractional shares trade in
/// fractions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Quote {
    pub bid: Option<f64>,
    pub ask: Option<f64>,
    pub bid_size: Option<f64>,
    pub ask_size: Option<f64>,
    /// Size of the last trade.
    pub size: Option<f64>,
    /// The day's volume so far.
    pub volume: Option<f64>,
    pub open: Option<f64>,
    pub high: Option<f64>,
    pub low: Option<f64>,
    /// The previous session's close (the board's "change" is against it).
    pub prev_close: Option<f64>,
}

/// Why a quote is refused.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum QuoteError {
    /// A field that is not a finite, non-negative number (`invalid_quote`).
    #[error("{field} must be a finite number of at least zero, got {value}")]
    BadField { field: &'static str, value: f64 },
    /// `bid` above `ask` (`crossed_quote`).
    #[error("bid {bid} is above ask {ask}")]
    Crossed { bid: f64, ask: f64 },
}

impl Quote {
    /// No field present.
    pub const EMPTY: Self = Self {
        bid: None,
        ask: None,
        bid_size: None,
        ask_size: None,
        size: None,
        volume: None,
        open: None,
        high: None,
        low: None,
        prev_close: None,
    };

    /// The JSON names of the fields, in wire order.
    pub const FIELDS: [&'static str; 10] =
        ["bid", "ask", "bid_size", "ask_size", "size", "volume", "open", "high", "low", "prev_close"];

    /// Each field with its JSON name, in wire order.
    pub fn fields(&self) -> [(&'static str, Option<f64>); 10] {
        let v = [
            self.bid,
            self.ask,
            self.bid_size,
            self.ask_size,
            self.size,
            self.volume,
            self.open,
            self.high,
            self.low,
            self.prev_close,
        ];
        let mut out = [("", None); 10];
        for (i, (name, value)) in Self::FIELDS.iter().zip(v).enumerate() {
            out[i] = (*name, value);
        }
        out
    }

    /// True when no field is present.
    pub fn is_empty(&self) -> bool {
        self.fields().iter().all(|(_, v)| v.is_none())
    }

    /// Checks every present field.
    ///
    /// # Errors
    /// [`QuoteError::BadField`] for the first field that is not finite or is negative,
    /// [`QuoteError::Crossed`] for a bid above the ask.
    pub fn validate(&self) -> Result<(), QuoteError> {
        for (field, value) in self.fields() {
            if let Some(value) = value
                && (!value.is_finite() || value < 0.0)
            {
                return Err(QuoteError::BadField { field, value });
            }
        }
        if let (Some(bid), Some(ask)) = (self.bid, self.ask)
            && bid > ask
        {
            return Err(QuoteError::Crossed { bid, ask });
        }
        Ok(())
    }

    /// Appends `,"name":value` for each present field (the tail of a tick's JSON object).
    pub(crate) fn write_json(&self, out: &mut String) {
        for (name, value) in self.fields() {
            if let Some(n) = value.and_then(serde_json::Number::from_f64) {
                // Writing to a String cannot fail.
                let _ = write!(out, r#","{name}":{n}"#);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_every_field_and_the_spread() {
        assert!(Quote::EMPTY.validate().is_ok());
        assert!(Quote::EMPTY.is_empty());
        let ok = Quote { bid: Some(1.0), ask: Some(1.0), volume: Some(0.0), ..Quote::EMPTY };
        assert!(ok.validate().is_ok(), "a locked market (bid = ask) and zero volume are fine");
        for (i, name) in Quote::FIELDS.iter().enumerate() {
            for bad in [-0.5, f64::NAN, f64::INFINITY] {
                let mut values = [None; 10];
                values[i] = Some(bad);
                let q = from_values(values);
                match q.validate() {
                    Err(QuoteError::BadField { field, .. }) => assert_eq!(field, *name),
                    other => panic!("{name}={bad}: {other:?}"),
                }
            }
        }
        let crossed = Quote { bid: Some(2.0), ask: Some(1.0), ..Quote::EMPTY };
        assert_eq!(crossed.validate(), Err(QuoteError::Crossed { bid: 2.0, ask: 1.0 }));
        assert!(Quote { bid: Some(2.0), ..Quote::EMPTY }.validate().is_ok(), "one side alone");
    }

    fn from_values(v: [Option<f64>; 10]) -> Quote {
        Quote {
            bid: v[0],
            ask: v[1],
            bid_size: v[2],
            ask_size: v[3],
            size: v[4],
            volume: v[5],
            open: v[6],
            high: v[7],
            low: v[8],
            prev_close: v[9],
        }
    }

    #[test]
    fn fields_follow_the_wire_order() {
        let q = from_values([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0].map(Some));
        let names: Vec<&str> = q.fields().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, Quote::FIELDS);
        let values: Vec<f64> = q.fields().iter().filter_map(|(_, v)| *v).collect();
        assert_eq!(values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
        let mut s = String::new();
        Quote { bid: Some(1.5), low: Some(0.25), ..Quote::EMPTY }.write_json(&mut s);
        assert_eq!(s, r#","bid":1.5,"low":0.25"#);
    }
}
