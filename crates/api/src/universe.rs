//! The simulated ticker universe: the symbols the feed moves and the load generator watches.
//!
//! It lives here, in the vocabulary crate, because two crates that must not depend on each other
//! agree on it: the feed (which publishes through a broker) and the load generator (which must not
//! compile a broker, let alone a Redis client).

use std::collections::HashSet;

use crate::Ticker;

/// Well-known symbols that lead the simulated universe, so demos show familiar names.
const WELL_KNOWN: &[&str] = &[
    "AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "BRK.B", "AVGO", "JPM", "LLY", "V", "UNH",
    "XOM", "MA", "JNJ", "PG", "HD", "COST", "ORCL", "MRK", "ABBV", "CVX", "CRM", "BAC", "NFLX", "KO", "AMD",
    "PEP", "TMO", "WMT", "ADBE", "LIN", "MCD", "CSCO", "ACN", "ABT", "DIS", "INTC", "WFC", "QCOM", "IBM",
    "TXN", "CAT", "GE", "AMGN", "INTU", "VZ", "PFE", "NOW", "UBER", "BA", "GS", "SPGI", "MS", "T", "HON",
    "AMAT", "SBUX", "BKNG", "PLTR", "SHOP", "SQ", "PYPL", "NKE", "LOW", "RTX", "DE", "MU", "ADI", "LRCX",
    "PANW", "SNOW", "ABNB", "COIN", "F", "GM",
];

/// The first `n` tickers of the simulated universe: well-known symbols, then generated
/// three-to-four-letter ones (`AAA`, `AAB`, …) that avoid them.
pub fn universe(n: usize) -> Vec<Ticker> {
    let mut out: Vec<Ticker> = WELL_KNOWN.iter().filter_map(|s| Ticker::parse(s).ok()).take(n).collect();
    let letters = |mut i: usize, len: usize| -> String {
        let mut s = vec![b'A'; len];
        for slot in s.iter_mut().rev() {
            *slot = b'A' + (i % 26) as u8;
            i /= 26;
        }
        String::from_utf8(s).unwrap_or_default()
    };
    let generated =
        (0..26usize.pow(3)).map(|i| letters(i, 3)).chain((0..26usize.pow(4)).map(|i| letters(i, 4)));
    let mut seen: HashSet<Ticker> = out.iter().copied().collect();
    for sym in generated {
        if out.len() >= n {
            break;
        }
        if let Ok(t) = Ticker::parse(&sym)
            && seen.insert(t)
        {
            out.push(t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn universe_starts_with_well_known_and_is_unique() {
        let u = universe(500);
        assert_eq!(u.len(), 500);
        assert_eq!(u[0].as_str(), "AAPL");
        assert_eq!(u[1].as_str(), "MSFT");
        let mut sorted = u.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 500, "duplicates in universe");
        assert_eq!(universe(3).len(), 3);
        assert_eq!(universe(20_000).len(), 20_000);
    }
}
