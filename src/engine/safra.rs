//! Dijkstra–Safra termination detection. Each rank counts work messages
//! sent minus received and turns black when it receives work; rank 0 sends
//! a token round the ring when it is passive, and the phase is over when a
//! white token comes back with the counts summing to zero while rank 0 is
//! white and passive too.

use serde::{Deserialize, Serialize};

use crate::transport::Rank;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub q: i64,
    pub black: bool,
}

/// What a passive rank must do about termination.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Nothing,
    /// Pass the token to the next rank on the ring.
    Send(Rank, Token),
    /// Rank 0: the phase is over; tell everyone.
    Terminate,
}

#[derive(Debug, Default)]
pub(crate) struct Safra {
    /// Work messages sent minus received.
    count: i64,
    black: bool,
    token: Option<Token>,
    /// Rank 0: a token is on its way round.
    wave_out: bool,
}

impl Safra {
    pub fn sent_work(&mut self) {
        self.count += 1;
    }

    pub fn got_work(&mut self) {
        self.count -= 1;
        self.black = true;
    }

    pub fn got_token(&mut self, t: Token) {
        self.token = Some(t);
    }

    /// Called whenever this rank has nothing queued and nothing in flight.
    pub fn when_passive(&mut self, me: Rank, n: usize) -> Step {
        if me != 0 {
            let Some(t) = self.token.take() else {
                return Step::Nothing;
            };
            let out = Token {
                q: t.q + self.count,
                black: t.black || self.black,
            };
            self.black = false;
            return Step::Send((me + 1) % n, out);
        }
        if let Some(t) = self.token.take() {
            if !t.black && !self.black && t.q + self.count == 0 {
                return Step::Terminate;
            }
            self.wave_out = false;
        }
        if self.wave_out {
            return Step::Nothing;
        }
        self.black = false;
        self.wave_out = true;
        let fresh = Token { q: 0, black: false };
        if n == 1 {
            // Alone: the token is back at once.
            self.token = Some(fresh);
            return Step::Nothing;
        }
        Step::Send(1, fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_ring_terminates_after_one_clean_wave() {
        let mut r: Vec<Safra> = (0..3).map(|_| Safra::default()).collect();
        assert_eq!(
            r[0].when_passive(0, 3),
            Step::Send(1, Token { q: 0, black: false })
        );
        assert_eq!(r[0].when_passive(0, 3), Step::Nothing, "one wave at a time");
        r[1].got_token(Token { q: 0, black: false });
        let Step::Send(2, t) = r[1].when_passive(1, 3) else {
            panic!()
        };
        r[2].got_token(t);
        let Step::Send(0, t) = r[2].when_passive(2, 3) else {
            panic!()
        };
        r[0].got_token(t);
        assert_eq!(r[0].when_passive(0, 3), Step::Terminate);
    }

    /// One round trip of a token from rank 0 through rank 1 and back.
    fn round(r: &mut [Safra]) -> Step {
        let Step::Send(1, t) = r[0].when_passive(0, 2) else {
            panic!("rank 0 should start a wave")
        };
        r[1].got_token(t);
        let Step::Send(0, t) = r[1].when_passive(1, 2) else {
            panic!("rank 1 should pass the token on")
        };
        r[0].got_token(t);
        r[0].when_passive(0, 2)
    }

    #[test]
    fn work_in_flight_or_a_black_rank_forces_another_wave() {
        let mut r: Vec<Safra> = (0..2).map(|_| Safra::default()).collect();
        r[0].sent_work(); // not received yet: the counts sum to 1
        let Step::Send(1, t) = round(&mut r) else {
            panic!("must not terminate")
        };
        r[1].got_work(); // now it arrives: counts sum to 0, but rank 1 is black
        r[1].got_token(t);
        let Step::Send(0, t) = r[1].when_passive(1, 2) else {
            panic!()
        };
        assert!(t.black);
        r[0].got_token(t);
        assert!(
            matches!(r[0].when_passive(0, 2), Step::Send(1, _)),
            "black wave"
        );
        // The next wave is clean: done.
        r[1].got_token(Token { q: 0, black: false });
        let Step::Send(0, t) = r[1].when_passive(1, 2) else {
            panic!()
        };
        r[0].got_token(t);
        assert_eq!(r[0].when_passive(0, 2), Step::Terminate);
    }

    #[test]
    fn alone_terminates_on_the_second_look() {
        let mut s = Safra::default();
        assert_eq!(s.when_passive(0, 1), Step::Nothing);
        assert_eq!(s.when_passive(0, 1), Step::Terminate);
    }
}
