//! What ranks say to each other: one serde-derived enum, sent in an envelope
//! that names the phase, in postcard's compact binary form.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::safra::Tally;
use super::Command;
use super::RankReport;

#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "I: DeserializeOwned"))]
pub(crate) enum Msg<I> {
    /// Items for the receiver: stolen ones it may pass on, or `pinned` ones
    /// that must run there (a hardlink group's owner).
    Work { items: Vec<I>, pinned: bool },
    /// "Give me half of your oldest items."
    Steal,
    /// The answer to `Steal` when there is nothing to give.
    NoWork,
    /// A termination wave coming down the tree (see `safra`).
    Probe,
    /// A subtree's answer to the wave, going up.
    Answer(Tally),
    /// Rank 0 saw a clean wave: everyone stops this phase.
    Terminate,
    /// A rank's counters and active items, for rank 0's status.
    Report(RankReport),
    /// A control command rank 0 took from the broker (stop, pool size, start).
    Control(Command),
}

/// A message and the phase it belongs to: a straggler from an earlier phase
/// is dropped, never taken for this phase's work.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "I: DeserializeOwned"))]
pub(crate) struct Envelope<I> {
    pub epoch: u32,
    pub msg: Msg<I>,
}

impl<I: Serialize + DeserializeOwned> Envelope<I> {
    pub fn encode(&self) -> Vec<u8> {
        // Encoding into a Vec fails only on a Serialize impl that errors, which
        // derived impls of our plain types never do.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope<I>, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_survives_the_wire() {
        let msgs: Vec<Msg<Vec<u8>>> = vec![
            Msg::Work {
                items: vec![b"a/\xff\n".to_vec(), Vec::new()],
                pinned: true,
            },
            Msg::Steal,
            Msg::NoWork,
            Msg::Probe,
            Msg::Answer(Tally { q: -3, black: true }),
            Msg::Terminate,
            Msg::Report(RankReport {
                counters: Default::default(),
                active: vec!["dir x".into()],
            }),
            Msg::Control(Command::PoolGrow(3)),
        ];
        for msg in msgs {
            let shown = format!("{msg:?}");
            let bytes = Envelope { epoch: 7, msg }.encode();
            let back = Envelope::<Vec<u8>>::decode(&bytes).expect("decode");
            assert_eq!(back.epoch, 7);
            assert_eq!(format!("{:?}", back.msg), shown);
        }
        assert!(Envelope::<Vec<u8>>::decode(&[0xff, 0xff]).is_err());
    }
}
