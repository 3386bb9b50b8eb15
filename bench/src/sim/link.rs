//! Link models: seeded loss (iid or Gilbert–Elliott bursts), delay and jitter.
//! Jitter larger than the packet spacing reorders packets.

use core::time::Duration;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How a link loses packets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// Never.
    None,
    /// Each packet independently with this probability.
    Iid(f64),
    /// Gilbert–Elliott: a good and a bad state, each with its own loss
    /// probability, and per-packet transition probabilities.
    GilbertElliott {
        /// P(good → bad) per packet.
        p_good_bad: f64,
        /// P(bad → good) per packet (1 / mean burst length).
        p_bad_good: f64,
        /// Loss probability in the good state.
        loss_good: f64,
        /// Loss probability in the bad state.
        loss_bad: f64,
    },
}

impl Loss {
    /// Bursty loss with the given mean loss rate and mean burst length, losing
    /// everything in the bad state.
    pub fn bursty(rate: f64, mean_burst: f64) -> Loss {
        let p_bad_good = 1.0 / mean_burst.max(1.0);
        // Stationary P(bad) = p_gb / (p_gb + p_bg) = rate.
        let p_good_bad = rate * p_bad_good / (1.0 - rate).max(1e-9);
        Loss::GilbertElliott {
            p_good_bad,
            p_bad_good,
            loss_good: 0.0,
            loss_bad: 1.0,
        }
    }
    /// The long-run loss fraction.
    pub fn mean(&self) -> f64 {
        match *self {
            Loss::None => 0.0,
            Loss::Iid(p) => p,
            Loss::GilbertElliott {
                p_good_bad,
                p_bad_good,
                loss_good,
                loss_bad,
            } => {
                let bad = p_good_bad / (p_good_bad + p_bad_good);
                bad * loss_bad + (1.0 - bad) * loss_good
            }
        }
    }
}

/// A link's model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkModel {
    /// Loss.
    pub loss: Loss,
    /// One-way delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly in `[0, jitter]` per packet.
    pub jitter: Duration,
}

impl Default for LinkModel {
    fn default() -> Self {
        LinkModel {
            loss: Loss::None,
            delay: Duration::from_micros(100),
            jitter: Duration::ZERO,
        }
    }
}

impl LinkModel {
    /// A default link with this loss.
    pub fn lossy(loss: Loss) -> Self {
        LinkModel {
            loss,
            ..Default::default()
        }
    }
}

/// One direction of one link, with its own seeded generator.
#[derive(Debug)]
pub struct Link {
    model: LinkModel,
    rng: ChaCha8Rng,
    bad: bool,
    /// Packets offered.
    pub offered: u64,
    /// Packets lost.
    pub lost: u64,
}

impl Link {
    /// A link with `model`, seeded.
    pub fn new(model: LinkModel, seed: u64) -> Self {
        Link {
            model,
            rng: ChaCha8Rng::seed_from_u64(seed),
            bad: false,
            offered: 0,
            lost: 0,
        }
    }

    /// Whether the next packet is lost (advances the loss model).
    pub fn drops(&mut self) -> bool {
        self.offered += 1;
        let lost = match self.model.loss {
            Loss::None => false,
            Loss::Iid(p) => self.rng.gen::<f64>() < p,
            Loss::GilbertElliott {
                p_good_bad,
                p_bad_good,
                loss_good,
                loss_bad,
            } => {
                let flip = if self.bad { p_bad_good } else { p_good_bad };
                if self.rng.gen::<f64>() < flip {
                    self.bad = !self.bad;
                }
                let p = if self.bad { loss_bad } else { loss_good };
                p > 0.0 && self.rng.gen::<f64>() < p
            }
        };
        self.lost += u64::from(lost);
        lost
    }

    /// The delay of the next packet that gets through.
    pub fn delay(&mut self) -> Duration {
        if self.model.jitter.is_zero() {
            self.model.delay
        } else {
            self.model.delay + self.model.jitter.mul_f64(self.rng.gen::<f64>())
        }
    }

    /// A coin with probability `p`, from this link's generator.
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.gen::<f64>() < p
    }

    /// Loss then delay: `None` if the packet is lost.
    pub fn transmit(&mut self) -> Option<Duration> {
        if self.drops() {
            None
        } else {
            Some(self.delay())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursty_model_has_the_asked_rate_and_burst_length() {
        let mut l = Link::new(LinkModel::lossy(Loss::bursty(0.05, 4.0)), 7);
        let (mut bursts, mut in_burst) = (0u64, false);
        for _ in 0..1_000_000 {
            let lost = l.drops();
            if lost && !in_burst {
                bursts += 1;
            }
            in_burst = lost;
        }
        let rate = l.lost as f64 / l.offered as f64;
        let mean_burst = l.lost as f64 / bursts as f64;
        assert!((rate - 0.05).abs() < 0.005, "rate {rate}");
        assert!((mean_burst - 4.0).abs() < 0.3, "burst {mean_burst}");
    }
}
