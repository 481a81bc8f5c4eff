//! The circuit breaker's state machine: pure bookkeeping, no I/O and no locks, with the clock
//! passed in so that the caller decides how it is shared and tests can drive time.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::ramp::{self, Ramp, RampAdmission, RAMP_START};
use super::window::{format_duration, Window, WindowSettings, WindowTotals};

/// While every half-open trial slot is taken the breaker does not know when one frees up, so
/// rejected callers get a short hint instead of an exact time.
const HALF_OPEN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The hint for callers refused while a probe is due or in flight, or by the ramp.
const PROBE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A probe in flight for longer than this is presumed lost (its task died), and the next
/// [`Breaker::begin_probe`] may send another. Probes are bounded by a timeout far below it.
const PROBE_GIVE_UP: Duration = Duration::from_secs(60);

/// The default spread of re-open times: ±20%.
pub const REOPEN_JITTER: f64 = 0.2;

/// Tuning for one breaker.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerSettings {
    /// Trip when at least this fraction (0.0..=1.0) of the calls in the window failed.
    pub failure_rate_threshold: f64,
    /// Trip when at least this fraction of the calls in the window were slow. Above 1.0 never
    /// trips. Below 1.0 a slow half-open trial also counts as a failed one; at 1.0 (the
    /// default) it does not, since a single slow call says little when only all-slow trips.
    pub slow_call_rate_threshold: f64,
    /// A call taking at least this long is slow.
    pub slow_call_duration: Duration,
    /// Which recent calls the rates are computed over.
    pub window: WindowSettings,
    /// Rates are only judged once the window holds at least this many calls, so that two
    /// failures out of three calls at startup do not open the breaker. Should not exceed a
    /// count window's size, or the rates can never trip.
    pub minimum_calls: u32,
    /// Trip after this many failures in a row regardless of the window; 0 turns it off.
    pub consecutive_failures: u32,
    /// How long the breaker stays open after tripping from closed.
    pub open_duration: Duration,
    /// Each consecutive re-trip from half-open doubles the open time up to this cap. Equal to
    /// (or below) `open_duration` means the open time never grows.
    pub max_open_duration: Duration,
    /// How many trial calls half-open admits; all of them must succeed to close. 0 is
    /// treated as 1.
    pub half_open_calls: u32,
    /// `probe_path` as written. The breaker itself is given the path it probes (this, or the
    /// health check's): when set, an expired open time waits for one passing probe
    /// ([`Breaker::begin_probe`]) before half-open admits trial calls.
    pub probe_path: Option<String>,
    /// After closing, the upstream's share of traffic grows from [`RAMP_START`] to all of it
    /// over this long, and a failure meanwhile re-opens at once.
    pub ramp_duration: Option<Duration>,
    /// Every re-open (failed trial, failed probe, failure during the ramp) lasts the grown
    /// penalty times a uniform factor in `1 ± reopen_jitter`, so that many levee instances in
    /// front of one backend do not probe it in lockstep. The first trip is exact.
    pub reopen_jitter: f64,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 1.0,
            slow_call_duration: Duration::from_secs(5),
            window: WindowSettings::Count { size: 100 },
            minimum_calls: 20,
            consecutive_failures: 0,
            open_duration: Duration::from_secs(30),
            max_open_duration: Duration::from_secs(30),
            half_open_calls: 5,
            probe_path: None,
            ramp_duration: None,
            reopen_jitter: REOPEN_JITTER,
        }
    }
}

/// The breaker's state without its data, for metrics, logs and comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// Calls flow and are counted.
    Closed,
    /// Calls are rejected until the open time runs out.
    Open,
    /// A few trial calls are let through to probe the upstream.
    HalfOpen,
}

impl StateKind {
    /// Every state change this machine makes (`trip`, `half_open`, `close`), so the transitions
    /// counter can export a zero for each before it first happens.
    pub const TRANSITIONS: [(StateKind, StateKind); 4] = [
        (Self::Closed, Self::Open),
        (Self::Open, Self::HalfOpen),
        (Self::HalfOpen, Self::Closed),
        (Self::HalfOpen, Self::Open),
    ];

    /// The label used in metrics and logs: "closed", "open" or "half_open".
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The value exported on the state gauge: 0 closed, 1 open, 2 half-open.
    pub const fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The breaker's state with the data each state needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow and are counted in the window.
    Closed,
    /// Calls are rejected until `until`; the first admission at or after it goes half-open.
    Open {
        /// When the open time runs out.
        until: Instant,
    },
    /// Still open for callers: the open time is over and the probe that decides whether
    /// half-open may start is in flight.
    Probing {
        /// When the probe was sent.
        since: Instant,
    },
    /// Trial calls are being let through.
    HalfOpen {
        /// Trials admitted and not cancelled, including those that already succeeded.
        admitted: u32,
        /// Trials that finished successfully.
        succeeded: u32,
    },
}

impl BreakerState {
    /// The state without its data.
    pub const fn kind(&self) -> StateKind {
        match self {
            Self::Closed => StateKind::Closed,
            Self::Open { .. } | Self::Probing { .. } => StateKind::Open,
            Self::HalfOpen { .. } => StateKind::HalfOpen,
        }
    }
}

/// How an admitted call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallResult {
    /// Whether the call counts as a failure (the caller's classification).
    pub failed: bool,
    /// How long the call took; at least `slow_call_duration` makes it slow.
    pub elapsed: Duration,
}

/// Proof that a call was admitted, to be handed back to [`Breaker::record`] or
/// [`Breaker::cancel`]. Dropping it instead leaks a half-open trial slot until the next
/// transition, so callers should cancel from a drop guard.
#[derive(Debug)]
#[must_use = "a ticket must be passed to Breaker::record or Breaker::cancel"]
pub struct Ticket {
    trial: bool,
    generation: u64,
}

impl Ticket {
    /// Whether this call is a half-open trial.
    pub fn is_trial(&self) -> bool {
        self.trial
    }
}

/// The answer to "may this call go through?".
#[derive(Debug)]
#[must_use]
pub enum Admission {
    /// Go ahead, and report the outcome with the ticket.
    Admitted(Ticket),
    /// Refused; the breaker should be asked again after `retry_after` (exact, unrounded).
    Rejected {
        /// Remaining open time, or a short hint while half-open trials are in flight.
        retry_after: Duration,
    },
}

/// Proof that a probe was begun, to be handed back to [`Breaker::finish_probe`].
#[derive(Debug)]
#[must_use = "a probe ticket must be passed to Breaker::finish_probe"]
pub struct ProbeTicket {
    generation: u64,
}

/// How a probe went: `detail` is the status code or the error, in words ("503", "timed out
/// after 1s").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// Whether the probe passed (2xx or 3xx in time).
    pub passed: bool,
    /// What came back, for the reason in words.
    pub detail: String,
}

/// What a finished probe did to the breaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeEnd {
    /// Passed: half-open, admitting the trial calls.
    HalfOpen(Transition),
    /// Failed: open again for the grown (and jittered) penalty; the reason in words.
    Reopened(String),
    /// The breaker moved on while the probe was in flight; nothing changed.
    Stale,
}

/// A state change, for the caller to log and count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: StateKind,
    /// The state entered.
    pub to: StateKind,
    /// Why, in an operator's words; for a trip, the same text [`Breaker::reason`] reports.
    pub reason: String,
}

/// A point-in-time view for status pages and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerSnapshot {
    /// The current state (an expired open still reads open, see [`Breaker::kind`]).
    pub state: StateKind,
    /// See [`Breaker::reason`].
    pub reason: String,
    /// Calls in the window. Kept while open and half-open so the tripping numbers stay
    /// visible; emptied when the breaker closes.
    pub calls: u32,
    /// Failed calls in the window.
    pub failures: u32,
    /// Slow calls in the window.
    pub slow: u32,
    /// Current run of failures while closed.
    pub consecutive_failures: u32,
    /// Time left while open.
    pub open_remaining: Option<Duration>,
    /// How many times the breaker has opened, re-trips from half-open included.
    pub trips: u64,
}

/// One circuit breaker: decides admission and digests outcomes.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: BreakerState,
    window: Window,
    consecutive_failures: u32,
    /// Bumped on every transition so results of calls admitted under an earlier state can be
    /// recognised and ignored.
    generation: u64,
    trips: u64,
    /// The open time of the latest trip, which the next re-trip from half-open doubles.
    open_for: Duration,
    /// Kept from the latest trip because the window may have moved on since.
    open_reason: String,
    /// The ramp after the latest close, while it runs (`ramp_duration`).
    ramp: Option<Ramp>,
    /// Draws the re-open jitter; seeded in tests.
    rng: fastrand::Rng,
}

impl Breaker {
    /// A closed breaker with an empty window.
    pub fn new(settings: BreakerSettings) -> Self {
        Self::with_rng(settings, fastrand::Rng::new())
    }

    /// A closed breaker drawing its re-open jitter from `rng` (a seeded one in tests).
    pub fn with_rng(settings: BreakerSettings, rng: fastrand::Rng) -> Self {
        Self {
            window: Window::new(&settings.window),
            state: BreakerState::Closed,
            consecutive_failures: 0,
            generation: 0,
            trips: 0,
            open_for: settings.open_duration,
            open_reason: String::new(),
            ramp: None,
            rng,
            settings,
        }
    }

    /// The settings the breaker was built with.
    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    /// The current state with its data.
    pub fn state(&self) -> &BreakerState {
        &self.state
    }

    /// Whether a call may go through now.
    ///
    /// Open -> HalfOpen happens lazily here once `now >= until`, the call that notices being
    /// the first trial; with a `probe_path` it never does: callers are refused until a probe
    /// passes ([`begin_probe`](Self::begin_probe)). Half-open admits exactly
    /// `half_open_calls` trials, then rejects with a short `retry_after` hint until they
    /// resolve. While ramping after a close, only the ramp's share of callers is admitted.
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        self.admit_ramping(now, true)
    }

    /// [`admit`](Self::admit), where `ramp` false lets a closed breaker admit past its ramp:
    /// for a split's target, whose ramp the split applies by shifting traffic instead
    /// (`crate::proxy::split`).
    pub fn admit_ramping(&mut self, now: Instant, ramp: bool) -> (Admission, Option<Transition>) {
        match self.state {
            BreakerState::Closed if !ramp => (Admission::Admitted(self.ticket(false)), None),
            BreakerState::Closed => match self.ramp_admission(now) {
                None => (Admission::Admitted(self.ticket(false)), None),
                Some(retry_after) => (Admission::Rejected { retry_after }, None),
            },
            BreakerState::Open { until } if now < until => (
                Admission::Rejected {
                    retry_after: until.saturating_duration_since(now),
                },
                None,
            ),
            // Probe-gated: callers wait for the probe (`begin_probe`), never trial it.
            BreakerState::Open { .. } | BreakerState::Probing { .. }
                if self.settings.probe_path.is_some() =>
            {
                (
                    Admission::Rejected {
                        retry_after: PROBE_RETRY_AFTER,
                    },
                    None,
                )
            }
            BreakerState::Open { .. } | BreakerState::Probing { .. } => {
                let transition = self.half_open();
                self.state = BreakerState::HalfOpen {
                    admitted: 1,
                    succeeded: 0,
                };
                (Admission::Admitted(self.ticket(true)), Some(transition))
            }
            BreakerState::HalfOpen {
                admitted,
                succeeded,
            } => {
                if admitted < self.trial_calls() {
                    self.state = BreakerState::HalfOpen {
                        admitted: admitted + 1,
                        succeeded,
                    };
                    (Admission::Admitted(self.ticket(true)), None)
                } else {
                    (
                        Admission::Rejected {
                            retry_after: HALF_OPEN_RETRY_AFTER,
                        },
                        None,
                    )
                }
            }
        }
    }

    /// Digests the outcome of an admitted call.
    ///
    /// Closed: the call enters the window; the breaker trips when the window holds at least
    /// `minimum_calls` and the failure or slow rate reached its threshold, or when
    /// `consecutive_failures` is on and the run of failures reached it. Half-open: a failed
    /// trial (or a slow one, when `slow_call_rate_threshold < 1.0`) re-opens with a doubled
    /// open time; once `half_open_calls` trials succeeded the breaker closes with an empty
    /// window. Results of tickets admitted before the latest transition are ignored, so a
    /// slow call admitted while closed can neither close nor re-open a half-open breaker.
    pub fn record(
        &mut self,
        ticket: Ticket,
        result: CallResult,
        now: Instant,
    ) -> Option<Transition> {
        if ticket.generation != self.generation {
            return None;
        }
        match self.state {
            BreakerState::Closed if !ticket.trial => self.record_closed(result, now),
            BreakerState::HalfOpen {
                admitted,
                succeeded,
            } if ticket.trial => {
                let slow = self.settings.slow_call_rate_threshold < 1.0
                    && result.elapsed >= self.settings.slow_call_duration;
                if result.failed {
                    Some(self.trip(
                        StateKind::HalfOpen,
                        "half-open trial failed".to_owned(),
                        now,
                    ))
                } else if slow {
                    let reason = format!(
                        "half-open trial slow (over {})",
                        format_duration(self.settings.slow_call_duration)
                    );
                    Some(self.trip(StateKind::HalfOpen, reason, now))
                } else {
                    let succeeded = succeeded.saturating_add(1);
                    if succeeded >= self.trial_calls() {
                        Some(self.close(succeeded, now))
                    } else {
                        self.state = BreakerState::HalfOpen {
                            admitted,
                            succeeded,
                        };
                        None
                    }
                }
            }
            // Unreachable for tickets this breaker issued in this generation.
            _ => None,
        }
    }

    /// A call already recorded as a success failed afterwards: its response body was cut (reset,
    /// stall). It counts as one more failed call in the closed state's window, so an upstream
    /// that sends headers and then breaks mid-body still trips the breaker. Open and half-open
    /// breakers ignore it: their verdicts come from the calls they admitted.
    pub fn record_late_failure(&mut self, now: Instant) -> Option<Transition> {
        match self.state {
            BreakerState::Closed => self.record_closed(
                CallResult {
                    failed: true,
                    elapsed: Duration::ZERO,
                },
                now,
            ),
            _ => None,
        }
    }

    /// The call was abandoned (the client went away): frees its half-open trial slot without
    /// counting as a success or a failure. Tickets from closed or older states are dropped.
    pub fn cancel(&mut self, ticket: Ticket) {
        if ticket.generation != self.generation || !ticket.trial {
            return;
        }
        if let BreakerState::HalfOpen {
            admitted,
            succeeded,
        } = self.state
        {
            self.state = BreakerState::HalfOpen {
                admitted: admitted.saturating_sub(1),
                succeeded,
            };
        }
    }

    /// The current state. An open breaker whose time has run out still reports open until
    /// the next [`admit`](Self::admit) moves it to half-open: with no traffic nothing is
    /// being probed, and reporting half-open then would claim trials that are not happening.
    pub fn kind(&self, _now: Instant) -> StateKind {
        self.state.kind()
    }

    /// Why the breaker is where it is, in words an operator reads on a status page, e.g.
    /// "failure rate 62% over the last 100 calls >= 50%" (open), "half-open: 2 of 5 trial
    /// calls succeeded", or "12 calls in the last 100 calls, fewer than minimum 20" (closed).
    pub fn reason(&mut self, now: Instant) -> String {
        match self.state {
            BreakerState::Open { until } => match &self.settings.probe_path {
                None => self.open_reason.clone(),
                Some(_) if now < until => format!(
                    "{}, next probe in {}",
                    self.open_reason,
                    format_duration(whole_seconds(until.saturating_duration_since(now)))
                ),
                Some(path) => format!("{}, probe GET {path} due", self.open_reason),
            },
            BreakerState::Probing { .. } => match &self.settings.probe_path {
                Some(path) => format!("{}, probe GET {path} in flight", self.open_reason),
                None => self.open_reason.clone(),
            },
            BreakerState::Closed if self.ramping(now) => format!(
                "ramping up after recovery: {}% admitted",
                ramp::percent(self.admitted_share(now))
            ),
            BreakerState::HalfOpen { succeeded, .. } => format!(
                "half-open: {succeeded} of {} trial calls succeeded",
                self.trial_calls()
            ),
            BreakerState::Closed => {
                let totals = self.window.totals(now);
                self.closed_reason(totals)
            }
        }
    }

    /// Everything a status page or metrics scrape wants, in one go.
    pub fn snapshot(&mut self, now: Instant) -> BreakerSnapshot {
        let totals = self.window.totals(now);
        let open_remaining = match self.state {
            BreakerState::Open { until } => Some(until.saturating_duration_since(now)),
            BreakerState::Probing { .. } => Some(Duration::ZERO),
            _ => None,
        };
        BreakerSnapshot {
            state: self.state.kind(),
            reason: self.reason(now),
            calls: totals.calls,
            failures: totals.failures,
            slow: totals.slow,
            consecutive_failures: self.consecutive_failures,
            open_remaining,
            trips: self.trips,
        }
    }

    fn ticket(&self, trial: bool) -> Ticket {
        Ticket {
            trial,
            generation: self.generation,
        }
    }

    fn trial_calls(&self) -> u32 {
        self.settings.half_open_calls.max(1)
    }

    fn record_closed(&mut self, result: CallResult, now: Instant) -> Option<Transition> {
        if result.failed && self.ramping(now) {
            let reason = "failed during the ramp after recovery".to_owned();
            return Some(self.trip_with(StateKind::Closed, reason, now, true));
        }
        let slow = result.elapsed >= self.settings.slow_call_duration;
        self.window.record(result.failed, slow, now);
        self.consecutive_failures = if result.failed {
            self.consecutive_failures.saturating_add(1)
        } else {
            0
        };
        let totals = self.window.totals(now);
        let reason = self.trip_reason(totals)?;
        Some(self.trip(StateKind::Closed, reason, now))
    }

    /// Only formats on the way to a trip; the common path is a few compares and divisions.
    fn trip_reason(&self, totals: WindowTotals) -> Option<String> {
        let s = &self.settings;
        if totals.calls > 0 && totals.calls >= s.minimum_calls {
            let calls = f64::from(totals.calls);
            // Divide rather than multiply the threshold, so that a rate equal to the threshold
            // as displayed (62 of 100 against 0.62) compares equal.
            let failure_rate = f64::from(totals.failures) / calls;
            if totals.failures > 0 && failure_rate >= s.failure_rate_threshold {
                return Some(self.failure_clause(totals));
            }
            let slow_rate = f64::from(totals.slow) / calls;
            if totals.slow > 0 && slow_rate >= s.slow_call_rate_threshold {
                return Some(self.slow_clause(totals));
            }
        }
        if s.consecutive_failures > 0 && self.consecutive_failures >= s.consecutive_failures {
            return Some(self.consecutive_clause());
        }
        None
    }

    fn failure_clause(&self, totals: WindowTotals) -> String {
        let (op, rate, threshold) = compare(
            totals.failures,
            totals.calls,
            self.settings.failure_rate_threshold,
        );
        format!(
            "failure rate {rate} over {} {op} {threshold}",
            self.window.describe()
        )
    }

    fn slow_clause(&self, totals: WindowTotals) -> String {
        let (op, rate, threshold) = compare(
            totals.slow,
            totals.calls,
            self.settings.slow_call_rate_threshold,
        );
        format!(
            "slow call rate {rate} (calls over {}) over {} {op} {threshold}",
            format_duration(self.settings.slow_call_duration),
            self.window.describe()
        )
    }

    fn consecutive_clause(&self) -> String {
        let limit = self.settings.consecutive_failures;
        let op = if self.consecutive_failures >= limit {
            ">="
        } else {
            "<"
        };
        format!(
            "{} consecutive failures {op} {limit}",
            self.consecutive_failures
        )
    }

    fn closed_reason(&self, totals: WindowTotals) -> String {
        let s = &self.settings;
        let mut reason = if totals.calls == 0 && s.minimum_calls <= 1 {
            format!("no calls in {}", self.window.describe())
        } else if totals.calls < s.minimum_calls.max(1) {
            format!(
                "{} {} in {}, fewer than minimum {}",
                totals.calls,
                if totals.calls == 1 { "call" } else { "calls" },
                self.window.describe(),
                s.minimum_calls
            )
        } else {
            let mut reason = self.failure_clause(totals);
            // Above 1.0 the slow rate can never trip, so mentioning it would only be noise.
            if s.slow_call_rate_threshold <= 1.0 {
                reason.push_str(", ");
                reason.push_str(&self.slow_clause(totals));
            }
            reason
        };
        if s.consecutive_failures > 0 {
            reason.push_str(", ");
            reason.push_str(&self.consecutive_clause());
        }
        reason
    }

    fn trip(&mut self, from: StateKind, reason: String, now: Instant) -> Transition {
        self.trip_with(from, reason, now, from == StateKind::HalfOpen)
    }

    /// Opens; `grow`: a re-open, whose open time doubles (up to the cap) and is jittered.
    fn trip_with(
        &mut self,
        from: StateKind,
        reason: String,
        now: Instant,
        grow: bool,
    ) -> Transition {
        self.open_for = if grow {
            let cap = self
                .settings
                .max_open_duration
                .max(self.settings.open_duration);
            self.open_for.saturating_mul(2).min(cap)
        } else {
            self.settings.open_duration
        };
        let open_for = if grow {
            self.jittered(self.open_for)
        } else {
            self.open_for
        };
        self.ramp = None;
        self.state = BreakerState::Open {
            until: add_saturating(now, open_for),
        };
        self.generation = self.generation.wrapping_add(1);
        self.trips = self.trips.saturating_add(1);
        self.open_reason.clone_from(&reason);
        Transition {
            from,
            to: StateKind::Open,
            reason,
        }
    }

    fn half_open(&mut self) -> Transition {
        self.generation = self.generation.wrapping_add(1);
        Transition {
            from: StateKind::Open,
            to: StateKind::HalfOpen,
            reason: format!(
                "open for {}, trying {} trial calls",
                format_duration(self.open_for),
                self.trial_calls()
            ),
        }
    }

    fn close(&mut self, succeeded: u32, now: Instant) -> Transition {
        self.state = BreakerState::Closed;
        self.ramp = self.settings.ramp_duration.map(|_| Ramp::new(now));
        self.window.reset();
        self.consecutive_failures = 0;
        self.open_for = self.settings.open_duration;
        self.generation = self.generation.wrapping_add(1);
        Transition {
            from: StateKind::HalfOpen,
            to: StateKind::Closed,
            reason: match self.settings.ramp_duration {
                None => format!(
                    "{succeeded} of {} half-open trial calls succeeded",
                    self.trial_calls()
                ),
                Some(ramp) => format!(
                    "{succeeded} of {} half-open trial calls succeeded, ramping up over {}",
                    self.trial_calls(),
                    format_duration(ramp)
                ),
            },
        }
    }
}

/// Recovery: the probe that gates half-open, the ramp after closing, the jittered re-open.
impl Breaker {
    /// When the next probe is due: the end of the open time (past, for an expired one), or,
    /// with a probe in flight, the moment it is presumed lost. `None` when nothing is to be
    /// probed: closed, half-open, or no `probe_path`.
    pub fn probe_due(&self) -> Option<Instant> {
        self.settings.probe_path.as_ref()?;
        match self.state {
            BreakerState::Open { until } => Some(until),
            BreakerState::Probing { since } => Some(add_saturating(since, PROBE_GIVE_UP)),
            _ => None,
        }
    }

    /// Starts the one probe of this open period when it is due at `now`: the breaker stays
    /// open for callers until [`finish_probe`](Self::finish_probe). `None` when no probe is
    /// due, so of many callers (one per upstream, whatever the workers) only one probes.
    pub fn begin_probe(&mut self, now: Instant) -> Option<ProbeTicket> {
        let due = self.probe_due()?;
        if now < due {
            return None;
        }
        self.state = BreakerState::Probing { since: now };
        self.generation = self.generation.wrapping_add(1);
        Some(ProbeTicket {
            generation: self.generation,
        })
    }

    /// Digests a probe: a pass goes half-open and admits the trial calls; a failure opens
    /// again for the grown, jittered penalty, with no caller having been let through.
    pub fn finish_probe(
        &mut self,
        ticket: ProbeTicket,
        outcome: &ProbeOutcome,
        now: Instant,
    ) -> ProbeEnd {
        if ticket.generation != self.generation
            || !matches!(self.state, BreakerState::Probing { .. })
        {
            return ProbeEnd::Stale;
        }
        let path = self.settings.probe_path.clone().unwrap_or_default();
        if outcome.passed {
            self.generation = self.generation.wrapping_add(1);
            self.state = BreakerState::HalfOpen {
                admitted: 0,
                succeeded: 0,
            };
            return ProbeEnd::HalfOpen(Transition {
                from: StateKind::Open,
                to: StateKind::HalfOpen,
                reason: format!(
                    "probe GET {path} passed ({}), trying {} trial calls",
                    outcome.detail,
                    self.trial_calls()
                ),
            });
        }
        let reason = format!("open: probe GET {path} failed ({})", outcome.detail);
        // A re-open, as a failed trial is: the penalty grows and is jittered.
        self.trip_with(StateKind::Open, reason, now, true);
        ProbeEnd::Reopened(self.reason(now))
    }

    /// The share of the upstream's traffic this breaker lets through at `now`: 1.0 closed,
    /// the ramp's share while ramping, [`RAMP_START`] half-open (its trial calls need some
    /// traffic), 0.0 open.
    // A weighted split scales a target's weight by this, so a recovering upstream gets its
    // traffic back gradually instead of having most of it refused here and failed over.
    pub fn admitted_share(&self, now: Instant) -> f64 {
        match (&self.state, &self.ramp, self.settings.ramp_duration) {
            (BreakerState::Closed, Some(ramp), Some(d)) => ramp.share(d, now),
            (BreakerState::Closed, _, _) => 1.0,
            (BreakerState::HalfOpen { .. }, _, _) => RAMP_START,
            (BreakerState::Open { .. } | BreakerState::Probing { .. }, _, _) => 0.0,
        }
    }

    /// When the ramp after the latest close began, and how long it lasts (for lock-free
    /// readers: `super::published`).
    pub fn ramp_start(&self) -> Option<(Instant, Duration)> {
        Some((self.ramp.as_ref()?.started(), self.settings.ramp_duration?))
    }

    /// Whether the ramp after the latest close is still running at `now`.
    fn ramping(&self, now: Instant) -> bool {
        match (&self.ramp, self.settings.ramp_duration) {
            (Some(ramp), Some(d)) => ramp.is_running(d, now),
            _ => false,
        }
    }

    /// While ramping, `Some(retry_after)` for a caller the ramp refuses; `None` to admit.
    fn ramp_admission(&mut self, now: Instant) -> Option<Duration> {
        let d = self.settings.ramp_duration?;
        let ramp = self.ramp.as_mut()?;
        match ramp.admit(d, now) {
            RampAdmission::Over => {
                self.ramp = None;
                None
            }
            RampAdmission::Admitted => None,
            RampAdmission::Refused(_) => Some(PROBE_RETRY_AFTER),
        }
    }

    /// `open_for` times a uniform factor in `1 ± reopen_jitter`.
    fn jittered(&mut self, open_for: Duration) -> Duration {
        let spread = self.settings.reopen_jitter.clamp(0.0, 1.0);
        if spread == 0.0 {
            return open_for;
        }
        let factor = 1.0 - spread + 2.0 * spread * self.rng.f64();
        Duration::try_from_secs_f64(open_for.as_secs_f64() * factor).unwrap_or(open_for)
    }
}

/// `d` rounded up to whole seconds (below a second: whole milliseconds), for "next probe in".
fn whole_seconds(d: Duration) -> Duration {
    if d < Duration::from_secs(1) {
        let ms = d.as_millis().min(999);
        return Duration::from_millis(u64::try_from(ms).unwrap_or(999).max(1));
    }
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Duration::from_secs(secs)
}

/// `now + d`, shortened rather than panicking if a misconfigured duration overflows the clock.
fn add_saturating(now: Instant, mut d: Duration) -> Instant {
    loop {
        if let Some(t) = now.checked_add(d) {
            return t;
        }
        if d.is_zero() {
            return now;
        }
        d /= 2;
    }
}

/// Formats `part / whole` against `threshold` as percentages with the comparison that holds.
///
/// Percentages are rounded to integers, except where that would print a contradiction such
/// as "50% < 50%" for 49.6%; then just enough decimals are shown to tell them apart.
fn compare(part: u32, whole: u32, threshold: f64) -> (&'static str, String, String) {
    let rate = if whole == 0 {
        0.0
    } else {
        f64::from(part) / f64::from(whole)
    };
    let op = if part > 0 && rate >= threshold {
        ">="
    } else {
        "<"
    };
    let (r, t) = (rate * 100.0, threshold * 100.0);
    for decimals in 0..=4 {
        let (rs, ts) = (percent(r, decimals), percent(t, decimals));
        if rs != ts || rate == threshold {
            return (op, rs, ts);
        }
    }
    (op, format!("{r}%"), format!("{t}%"))
}

fn percent(value: f64, decimals: usize) -> String {
    // Explicit rounding because float formatting rounds halves to even (62.5 -> "62").
    let scale = 10f64.powi(i32::try_from(decimals).unwrap_or(0));
    let rounded = (value * scale).round() / scale;
    format!("{rounded:.decimals$}%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const FAIL: CallResult = CallResult {
        failed: true,
        elapsed: Duration::from_millis(10),
    };
    const OK: CallResult = CallResult {
        failed: false,
        elapsed: Duration::from_millis(10),
    };
    const SLOW_OK: CallResult = CallResult {
        failed: false,
        elapsed: Duration::from_secs(10),
    };

    fn now() -> Instant {
        Instant::now()
    }

    fn admitted(breaker: &mut Breaker) -> Ticket {
        match breaker.admit(now()) {
            (Admission::Admitted(ticket), _) => ticket,
            (Admission::Rejected { retry_after }, _) => {
                panic!("rejected, retry after {retry_after:?}")
            }
        }
    }

    fn call(breaker: &mut Breaker, result: CallResult) -> Option<Transition> {
        let ticket = admitted(breaker);
        breaker.record(ticket, result, now())
    }

    fn rejected(breaker: &mut Breaker) -> Duration {
        match breaker.admit(now()) {
            (Admission::Rejected { retry_after }, None) => retry_after,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn settings() -> BreakerSettings {
        BreakerSettings {
            minimum_calls: 10,
            open_duration: Duration::from_secs(10),
            max_open_duration: Duration::from_secs(25),
            half_open_calls: 3,
            reopen_jitter: 0.0,
            ..BreakerSettings::default()
        }
    }

    /// A breaker tripped by ten failures, open for `open_duration`.
    fn tripped(settings: BreakerSettings) -> Breaker {
        let mut breaker = Breaker::new(settings);
        let mut transition = None;
        while transition.is_none() {
            transition = call(&mut breaker, FAIL);
        }
        assert_eq!(breaker.kind(now()), StateKind::Open);
        breaker
    }

    /// Moves an open breaker past its open time and admits the first trial.
    async fn first_trial(breaker: &mut Breaker) -> Ticket {
        advance(rejected(breaker)).await;
        match breaker.admit(now()) {
            (Admission::Admitted(ticket), Some(t)) => {
                assert_eq!((t.from, t.to), (StateKind::Open, StateKind::HalfOpen));
                assert!(ticket.is_trial());
                ticket
            }
            other => panic!("expected half-open admission, got {other:?}"),
        }
    }

    /// A full cycle, with a failed and a passed trial, makes each listed transition and no other
    /// (the metrics export a zero for each listed one from start-up).
    #[tokio::test(start_paused = true)]
    async fn transitions_lists_every_state_change_the_machine_makes() {
        let mut breaker = tripped(settings());
        let mut seen = vec![(StateKind::Closed, StateKind::Open)];
        let ticket = first_trial(&mut breaker).await;
        seen.push((StateKind::Open, StateKind::HalfOpen));
        let t = breaker.record(ticket, FAIL, now()).unwrap();
        seen.push((t.from, t.to));
        let ticket = first_trial(&mut breaker).await;
        let mut last = breaker.record(ticket, OK, now());
        while last.is_none() {
            last = call(&mut breaker, OK);
        }
        let t = last.unwrap();
        seen.push((t.from, t.to));
        seen.sort_by_key(|(a, b)| (a.gauge(), b.gauge()));
        let mut listed = StateKind::TRANSITIONS.to_vec();
        listed.sort_by_key(|(a, b)| (a.gauge(), b.gauge()));
        assert_eq!(seen, listed);
    }

    #[test]
    fn defaults_match_the_documentation() {
        let s = BreakerSettings::default();
        assert_eq!(s.failure_rate_threshold, 0.5);
        assert_eq!(s.slow_call_rate_threshold, 1.0);
        assert_eq!(s.slow_call_duration, Duration::from_secs(5));
        assert_eq!(s.window, WindowSettings::Count { size: 100 });
        assert_eq!(s.minimum_calls, 20);
        assert_eq!(s.consecutive_failures, 0);
        assert_eq!(s.open_duration, Duration::from_secs(30));
        assert_eq!(s.max_open_duration, Duration::from_secs(30));
        assert_eq!(s.half_open_calls, 5);
        assert_eq!(s.probe_path, None);
        assert_eq!(s.ramp_duration, None);
        assert_eq!(s.reopen_jitter, 0.2);
    }

    #[test]
    fn state_kinds_have_labels_and_gauge_values() {
        assert_eq!(StateKind::Closed.as_str(), "closed");
        assert_eq!(StateKind::Open.as_str(), "open");
        assert_eq!(StateKind::HalfOpen.as_str(), "half_open");
        assert_eq!(StateKind::HalfOpen.to_string(), "half_open");
        assert_eq!(StateKind::Closed.gauge(), 0);
        assert_eq!(StateKind::Open.gauge(), 1);
        assert_eq!(StateKind::HalfOpen.gauge(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn trips_on_failure_rate_only_after_minimum_calls() {
        let mut breaker = Breaker::new(BreakerSettings::default());
        // 19 calls, all failed: 100% but below the minimum of 20.
        for _ in 0..19 {
            assert_eq!(call(&mut breaker, FAIL), None);
        }
        assert_eq!(breaker.kind(now()), StateKind::Closed);
        assert_eq!(
            breaker.reason(now()),
            "19 calls in the last 100 calls, fewer than minimum 20"
        );
        let t = call(&mut breaker, FAIL).expect("20th call trips");
        assert_eq!((t.from, t.to), (StateKind::Closed, StateKind::Open));
        assert_eq!(t.reason, "failure rate 100% over the last 100 calls >= 50%");
        assert_eq!(breaker.reason(now()), t.reason);
        assert_eq!(breaker.snapshot(now()).trips, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn trips_when_failure_rate_reaches_threshold_exactly() {
        let mut breaker = Breaker::new(BreakerSettings::default());
        for _ in 0..10 {
            assert_eq!(call(&mut breaker, OK), None);
        }
        for _ in 0..9 {
            assert_eq!(call(&mut breaker, FAIL), None);
        }
        // 9 of 20 = 45%: below threshold, stays closed.
        assert_eq!(call(&mut breaker, OK), None);
        assert_eq!(
            breaker.reason(now()),
            "failure rate 45% over the last 100 calls < 50%, \
             slow call rate 0% (calls over 5s) over the last 100 calls < 100%"
        );
        // 10 of 21 = 48%, then 11 of 22 = 50%.
        assert_eq!(call(&mut breaker, FAIL), None);
        let t = call(&mut breaker, FAIL).expect("trips at 50%");
        assert_eq!(t.reason, "failure rate 50% over the last 100 calls >= 50%");
    }

    #[tokio::test(start_paused = true)]
    async fn trips_on_slow_call_rate() {
        let mut breaker = Breaker::new(BreakerSettings {
            minimum_calls: 5,
            window: WindowSettings::Time {
                size: Duration::from_secs(10),
            },
            ..BreakerSettings::default()
        });
        // One fast call keeps the slow rate below 100%.
        assert_eq!(call(&mut breaker, OK), None);
        for _ in 0..5 {
            assert_eq!(call(&mut breaker, SLOW_OK), None);
        }
        assert_eq!(breaker.kind(now()), StateKind::Closed);
        // Once those calls have left the window, five slow calls in a row trip.
        advance(Duration::from_secs(10)).await;
        for _ in 0..4 {
            assert_eq!(call(&mut breaker, SLOW_OK), None);
        }
        let t = call(&mut breaker, SLOW_OK).expect("all slow trips");
        assert_eq!(
            t.reason,
            "slow call rate 100% (calls over 5s) over the last 10s >= 100%"
        );
        assert_eq!(breaker.kind(now()), StateKind::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn trips_on_consecutive_failures() {
        let mut breaker = Breaker::new(BreakerSettings {
            consecutive_failures: 3,
            ..BreakerSettings::default()
        });
        for result in [FAIL, FAIL, OK, FAIL, FAIL] {
            assert_eq!(call(&mut breaker, result), None);
        }
        assert_eq!(
            breaker.reason(now()),
            "5 calls in the last 100 calls, fewer than minimum 20, 2 consecutive failures < 3"
        );
        let t = call(&mut breaker, FAIL).expect("third in a row trips");
        assert_eq!(t.reason, "3 consecutive failures >= 3");
        assert_eq!(breaker.snapshot(now()).consecutive_failures, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn late_failures_count_only_while_closed() {
        let mut breaker = Breaker::new(BreakerSettings {
            consecutive_failures: 2,
            ..BreakerSettings::default()
        });
        assert_eq!(call(&mut breaker, OK), None);
        assert_eq!(breaker.record_late_failure(now()), None);
        let t = breaker
            .record_late_failure(now())
            .expect("two broken bodies in a row trip");
        assert_eq!(t.to, StateKind::Open);
        assert_eq!(breaker.snapshot(now()).failures, 2);
        // Open: a body cut now belongs to a call admitted before the trip.
        assert_eq!(breaker.record_late_failure(now()), None);
        assert_eq!(breaker.snapshot(now()).failures, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn old_failures_in_a_time_window_stop_counting() {
        let mut breaker = Breaker::new(BreakerSettings {
            minimum_calls: 4,
            window: WindowSettings::Time {
                size: Duration::from_secs(10),
            },
            ..BreakerSettings::default()
        });
        for _ in 0..3 {
            assert_eq!(call(&mut breaker, FAIL), None);
        }
        advance(Duration::from_secs(10)).await;
        // Without expiry this would be 4 failures of 4 calls.
        assert_eq!(call(&mut breaker, FAIL), None);
        assert_eq!(breaker.kind(now()), StateKind::Closed);
        assert_eq!(
            breaker.reason(now()),
            "1 call in the last 10s, fewer than minimum 4"
        );
        let snap = breaker.snapshot(now());
        assert_eq!((snap.calls, snap.failures), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn open_rejects_with_shrinking_retry_after() {
        let mut breaker = tripped(settings());
        assert_eq!(rejected(&mut breaker), Duration::from_secs(10));
        advance(Duration::from_millis(2500)).await;
        assert_eq!(rejected(&mut breaker), Duration::from_millis(7500));
        let snap = breaker.snapshot(now());
        assert_eq!(snap.state, StateKind::Open);
        assert_eq!(snap.open_remaining, Some(Duration::from_millis(7500)));
        assert_eq!(snap.calls, 10);
        assert_eq!(snap.failures, 10);
        advance(Duration::from_millis(7499)).await;
        assert_eq!(rejected(&mut breaker), Duration::from_millis(1));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_open_reads_open_until_admit_moves_it() {
        let mut breaker = tripped(settings());
        advance(Duration::from_secs(60)).await;
        assert_eq!(breaker.kind(now()), StateKind::Open);
        assert_eq!(breaker.snapshot(now()).open_remaining, Some(Duration::ZERO));
        let (admission, transition) = breaker.admit(now());
        assert!(matches!(admission, Admission::Admitted(_)));
        let t = transition.expect("goes half-open");
        assert_eq!(t.reason, "open for 10s, trying 3 trial calls");
        assert_eq!(breaker.kind(now()), StateKind::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_exactly_the_trial_calls() {
        let mut breaker = tripped(settings());
        let first = first_trial(&mut breaker).await;
        let second = admitted(&mut breaker);
        let third = admitted(&mut breaker);
        assert!(second.is_trial() && third.is_trial());
        assert_eq!(rejected(&mut breaker), HALF_OPEN_RETRY_AFTER);
        assert_eq!(
            *breaker.state(),
            BreakerState::HalfOpen {
                admitted: 3,
                succeeded: 0
            }
        );
        // A finished trial does not free a slot: exactly three trials per half-open period.
        assert_eq!(breaker.record(first, OK, now()), None);
        assert_eq!(rejected(&mut breaker), HALF_OPEN_RETRY_AFTER);
        breaker.cancel(second);
        breaker.cancel(third);
    }

    #[tokio::test(start_paused = true)]
    async fn all_trials_succeeding_closes_with_a_fresh_window() {
        let mut breaker = tripped(settings());
        let tickets = [
            first_trial(&mut breaker).await,
            admitted(&mut breaker),
            admitted(&mut breaker),
        ];
        let mut transitions = Vec::new();
        for ticket in tickets {
            transitions.extend(breaker.record(ticket, OK, now()));
        }
        assert_eq!(
            transitions,
            vec![Transition {
                from: StateKind::HalfOpen,
                to: StateKind::Closed,
                reason: "3 of 3 half-open trial calls succeeded".to_owned(),
            }]
        );
        let snap = breaker.snapshot(now());
        assert_eq!(snap.state, StateKind::Closed);
        assert_eq!((snap.calls, snap.failures, snap.slow), (0, 0, 0));
        assert_eq!(snap.consecutive_failures, 0);
        assert_eq!(snap.open_remaining, None);
        assert_eq!(snap.trips, 1);
        // The ten old failures are gone: nine new ones do not reach the minimum.
        for _ in 0..9 {
            assert_eq!(call(&mut breaker, FAIL), None);
        }
        assert_eq!(breaker.kind(now()), StateKind::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_trial_reopens_with_doubling_capped_open_time() {
        let mut breaker = tripped(settings());
        // 10s, then 20s, then capped at 25s.
        for expected in [20, 25, 25] {
            let trial = first_trial(&mut breaker).await;
            let t = breaker
                .record(trial, FAIL, now())
                .expect("failed trial re-opens");
            assert_eq!((t.from, t.to), (StateKind::HalfOpen, StateKind::Open));
            assert_eq!(t.reason, "half-open trial failed");
            assert_eq!(breaker.reason(now()), "half-open trial failed");
            assert_eq!(rejected(&mut breaker), Duration::from_secs(expected));
        }
        assert_eq!(breaker.snapshot(now()).trips, 4);

        // Closing resets the growth: the next trip is back to the base open time.
        for _ in 0..3 {
            let trial = if breaker.kind(now()) == StateKind::Open {
                first_trial(&mut breaker).await
            } else {
                admitted(&mut breaker)
            };
            let _ = breaker.record(trial, OK, now());
        }
        assert_eq!(breaker.kind(now()), StateKind::Closed);
        let mut breaker_trip = None;
        while breaker_trip.is_none() {
            breaker_trip = call(&mut breaker, FAIL);
        }
        assert_eq!(rejected(&mut breaker), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn no_growth_when_max_equals_open_duration() {
        let mut breaker = tripped(BreakerSettings {
            minimum_calls: 1,
            reopen_jitter: 0.0,
            ..BreakerSettings::default()
        });
        for _ in 0..3 {
            let trial = first_trial(&mut breaker).await;
            assert!(breaker.record(trial, FAIL, now()).is_some());
            assert_eq!(rejected(&mut breaker), Duration::from_secs(30));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stale_generation_results_are_ignored() {
        let mut breaker = Breaker::new(settings());
        // Admitted while closed, finishes much later.
        let straggler = admitted(&mut breaker);
        let another = admitted(&mut breaker);
        for _ in 0..10 {
            let _ = call(&mut breaker, FAIL);
        }
        assert_eq!(breaker.kind(now()), StateKind::Open);
        // Ignored while open.
        assert_eq!(breaker.record(another, FAIL, now()), None);

        let trial = first_trial(&mut breaker).await;
        // A success from the closed era neither counts as a trial nor closes anything.
        assert_eq!(breaker.record(straggler, OK, now()), None);
        assert_eq!(
            *breaker.state(),
            BreakerState::HalfOpen {
                admitted: 1,
                succeeded: 0
            }
        );
        assert_eq!(
            breaker.reason(now()),
            "half-open: 0 of 3 trial calls succeeded"
        );

        // A trial from a previous half-open period cannot re-open the new one either.
        let t = breaker.record(trial, FAIL, now()).expect("re-opens");
        assert_eq!(t.to, StateKind::Open);
        let first = first_trial(&mut breaker).await;
        let second = admitted(&mut breaker);
        assert_eq!(breaker.record(second, OK, now()), None);
        assert_eq!(
            breaker.reason(now()),
            "half-open: 1 of 3 trial calls succeeded"
        );
        breaker.cancel(first);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_trial_from_previous_half_open_is_ignored() {
        let mut breaker = tripped(settings());
        let first = first_trial(&mut breaker).await;
        let slow_trial = admitted(&mut breaker);
        assert!(breaker.record(first, FAIL, now()).is_some());
        let fresh = first_trial(&mut breaker).await;
        // The trial admitted in the previous half-open period reports a failure: ignored.
        assert_eq!(breaker.record(slow_trial, FAIL, now()), None);
        assert_eq!(breaker.kind(now()), StateKind::HalfOpen);
        assert_eq!(breaker.record(fresh, OK, now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_frees_a_trial_slot() {
        let mut breaker = tripped(BreakerSettings {
            half_open_calls: 1,
            ..settings()
        });
        let trial = first_trial(&mut breaker).await;
        assert_eq!(rejected(&mut breaker), HALF_OPEN_RETRY_AFTER);
        breaker.cancel(trial);
        assert_eq!(
            *breaker.state(),
            BreakerState::HalfOpen {
                admitted: 0,
                succeeded: 0
            }
        );
        let retry = admitted(&mut breaker);
        let t = breaker.record(retry, OK, now()).expect("closes");
        assert_eq!(t.to, StateKind::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_outside_half_open_changes_nothing() {
        let mut breaker = Breaker::new(settings());
        let ticket = admitted(&mut breaker);
        breaker.cancel(ticket);
        let snap = breaker.snapshot(now());
        assert_eq!((snap.state, snap.calls), (StateKind::Closed, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_trial_counts_as_failure_only_below_full_slow_threshold() {
        // At the default threshold of 1.0 a slow trial is a success.
        let mut breaker = tripped(BreakerSettings {
            half_open_calls: 1,
            ..settings()
        });
        let trial = first_trial(&mut breaker).await;
        let t = breaker.record(trial, SLOW_OK, now()).expect("closes");
        assert_eq!(t.to, StateKind::Closed);

        let mut breaker = tripped(BreakerSettings {
            half_open_calls: 1,
            slow_call_rate_threshold: 0.8,
            ..settings()
        });
        let trial = first_trial(&mut breaker).await;
        let t = breaker.record(trial, SLOW_OK, now()).expect("re-opens");
        assert_eq!(t.to, StateKind::Open);
        assert_eq!(t.reason, "half-open trial slow (over 5s)");
    }

    #[tokio::test(start_paused = true)]
    async fn reasons_name_numbers_and_thresholds() {
        let mut breaker = Breaker::new(BreakerSettings::default());
        assert_eq!(
            breaker.reason(now()),
            "0 calls in the last 100 calls, fewer than minimum 20"
        );
        for _ in 0..12 {
            let _ = call(&mut breaker, OK);
        }
        assert_eq!(
            breaker.reason(now()),
            "12 calls in the last 100 calls, fewer than minimum 20"
        );
        for _ in 0..17 {
            let _ = call(&mut breaker, OK);
        }
        let _ = call(&mut breaker, FAIL);
        let _ = call(&mut breaker, SLOW_OK);
        // 1 of 31 failed = 3.2%, 1 of 31 slow.
        let reason = breaker.reason(now());
        assert!(
            reason.starts_with("failure rate 3% over the last 100 calls < 50%"),
            "{reason}"
        );
        assert!(
            reason.contains("slow call rate 3% (calls over 5s) over the last 100 calls < 100%"),
            "{reason}"
        );

        let mut breaker = tripped(BreakerSettings {
            half_open_calls: 5,
            ..settings()
        });
        assert_eq!(
            breaker.reason(now()),
            "failure rate 100% over the last 100 calls >= 50%"
        );
        let first = first_trial(&mut breaker).await;
        let second = admitted(&mut breaker);
        let _ = breaker.record(first, OK, now());
        let _ = breaker.record(second, OK, now());
        assert_eq!(
            breaker.reason(now()),
            "half-open: 2 of 5 trial calls succeeded"
        );
        assert_eq!(breaker.snapshot(now()).state, StateKind::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_rate_disabled_above_one_is_not_mentioned() {
        let mut breaker = Breaker::new(BreakerSettings {
            minimum_calls: 1,
            slow_call_rate_threshold: 1.01,
            ..BreakerSettings::default()
        });
        for _ in 0..10 {
            assert_eq!(call(&mut breaker, SLOW_OK), None);
        }
        assert_eq!(
            breaker.reason(now()),
            "failure rate 0% over the last 100 calls < 50%"
        );
    }

    #[test]
    fn percentages_round_but_never_contradict_the_comparison() {
        assert_eq!(compare(62, 100, 0.5), (">=", "62%".into(), "50%".into()));
        assert_eq!(compare(5, 8, 0.5), (">=", "63%".into(), "50%".into()));
        assert_eq!(compare(50, 100, 0.5), (">=", "50%".into(), "50%".into()));
        assert_eq!(compare(62, 125, 0.5), ("<", "49.6%".into(), "50.0%".into()));
        assert_eq!(compare(62, 100, 0.62), (">=", "62%".into(), "62%".into()));
        assert_eq!(compare(0, 0, 0.5), ("<", "0%".into(), "50%".into()));
    }

    fn gated() -> BreakerSettings {
        BreakerSettings {
            probe_path: Some("/healthz".to_owned()),
            ..settings()
        }
    }

    fn probe_result(passed: bool, detail: &str) -> ProbeOutcome {
        ProbeOutcome {
            passed,
            detail: detail.to_owned(),
        }
    }

    /// Every caller is refused from the trip until a probe passes, whatever the time: an
    /// expired open time, a probe in flight and a failed probe all keep users out.
    #[tokio::test(start_paused = true)]
    async fn probe_gate_sends_no_caller_until_a_probe_passes() {
        let mut breaker = tripped(gated());
        let until = now() + Duration::from_secs(10);
        assert_eq!(breaker.probe_due(), Some(until));
        assert!(breaker.begin_probe(now()).is_none(), "not due yet");
        assert_eq!(
            breaker.reason(now()),
            "failure rate 100% over the last 100 calls >= 50%, next probe in 10s"
        );
        advance(Duration::from_secs(10)).await;
        // Due but not sent: still open, a short hint, no transition.
        assert_eq!(rejected(&mut breaker), PROBE_RETRY_AFTER);
        assert_eq!(breaker.kind(now()), StateKind::Open);
        assert!(breaker.reason(now()).ends_with(", probe GET /healthz due"));

        let probe = breaker.begin_probe(now()).expect("due");
        assert!(breaker.begin_probe(now()).is_none(), "one probe at a time");
        assert_eq!(breaker.probe_due(), Some(now() + PROBE_GIVE_UP));
        assert_eq!(rejected(&mut breaker), PROBE_RETRY_AFTER);
        assert_eq!(breaker.kind(now()), StateKind::Open);
        assert_eq!(breaker.snapshot(now()).open_remaining, Some(Duration::ZERO));
        assert!(breaker
            .reason(now())
            .ends_with(", probe GET /healthz in flight"));
        assert_eq!(breaker.admitted_share(now()), 0.0);

        // A failed probe re-opens for the doubled penalty (jitter off here).
        let end = breaker.finish_probe(probe, &probe_result(false, "503"), now());
        let reason = "open: probe GET /healthz failed (503), next probe in 20s";
        assert_eq!(end, ProbeEnd::Reopened(reason.to_owned()));
        assert_eq!(breaker.reason(now()), reason);
        assert_eq!(rejected(&mut breaker), Duration::from_secs(20));
        assert_eq!(breaker.snapshot(now()).trips, 2);
        advance(Duration::from_millis(8500)).await;
        assert_eq!(
            breaker.reason(now()),
            "open: probe GET /healthz failed (503), next probe in 12s"
        );

        // Then capped at 25s; then a pass goes half-open with no trial admitted yet.
        advance(Duration::from_millis(11500)).await;
        let probe = breaker.begin_probe(now()).expect("due");
        let _ = breaker.finish_probe(probe, &probe_result(false, "timed out after 1s"), now());
        assert_eq!(rejected(&mut breaker), Duration::from_secs(25));
        advance(Duration::from_secs(25)).await;
        let probe = breaker.begin_probe(now()).expect("due");
        let end = breaker.finish_probe(probe, &probe_result(true, "200"), now());
        assert_eq!(
            end,
            ProbeEnd::HalfOpen(Transition {
                from: StateKind::Open,
                to: StateKind::HalfOpen,
                reason: "probe GET /healthz passed (200), trying 3 trial calls".to_owned(),
            })
        );
        assert_eq!(breaker.probe_due(), None);
        assert_eq!(
            *breaker.state(),
            BreakerState::HalfOpen {
                admitted: 0,
                succeeded: 0
            }
        );
        for _ in 0..2 {
            assert_eq!(call(&mut breaker, OK), None);
        }
        let t = call(&mut breaker, OK).expect("closes");
        assert_eq!(t.to, StateKind::Closed);
        assert_eq!(breaker.probe_due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_after_a_passed_probe_waits_for_the_next_probe() {
        let mut breaker = tripped(gated());
        advance(Duration::from_secs(10)).await;
        let probe = breaker.begin_probe(now()).expect("due");
        let _ = breaker.finish_probe(probe, &probe_result(true, "204"), now());
        let t = call(&mut breaker, FAIL).expect("re-opens");
        assert_eq!(t.to, StateKind::Open);
        assert_eq!(breaker.probe_due(), Some(now() + Duration::from_secs(20)));
        advance(Duration::from_secs(20)).await;
        assert_eq!(rejected(&mut breaker), PROBE_RETRY_AFTER);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_and_lost_probes_change_nothing_but_can_be_replaced() {
        let mut breaker = tripped(gated());
        advance(Duration::from_secs(10)).await;
        let lost = breaker.begin_probe(now()).expect("due");
        advance(PROBE_GIVE_UP - Duration::from_millis(1)).await;
        assert!(breaker.begin_probe(now()).is_none());
        advance(Duration::from_millis(1)).await;
        let fresh = breaker
            .begin_probe(now())
            .expect("a lost probe is replaced");
        // The lost one's late verdict is ignored, even a pass.
        assert_eq!(
            breaker.finish_probe(lost, &probe_result(true, "200"), now()),
            ProbeEnd::Stale
        );
        assert_eq!(breaker.kind(now()), StateKind::Open);
        assert!(matches!(
            breaker.finish_probe(fresh, &probe_result(false, "502"), now()),
            ProbeEnd::Reopened(_)
        ));
        // Without a probe path nothing is ever probed: half-open as before.
        let mut plain = tripped(settings());
        assert_eq!(plain.probe_due(), None);
        let _trial = first_trial(&mut plain).await;
        assert!(plain.begin_probe(now()).is_none());
    }

    /// Closes a breaker with `ramp_duration` through its half-open trials.
    async fn closed_with_ramp(ramp: Duration) -> Breaker {
        let mut breaker = tripped(BreakerSettings {
            ramp_duration: Some(ramp),
            half_open_calls: 1,
            ..settings()
        });
        let trial = first_trial(&mut breaker).await;
        let t = breaker.record(trial, OK, now()).expect("closes");
        assert_eq!(
            t.reason,
            format!(
                "1 of 1 half-open trial calls succeeded, ramping up over {}",
                format_duration(ramp)
            )
        );
        breaker
    }

    fn admitted_of(breaker: &mut Breaker, calls: usize) -> usize {
        (0..calls)
            .filter(|_| match breaker.admit(now()) {
                (Admission::Admitted(t), None) => {
                    assert_eq!(breaker.record(t, OK, now()), None);
                    true
                }
                (Admission::Rejected { retry_after }, None) => {
                    assert_eq!(retry_after, PROBE_RETRY_AFTER);
                    false
                }
                other => panic!("no transition expected, got {other:?}"),
            })
            .count()
    }

    #[tokio::test(start_paused = true)]
    async fn the_ramp_admits_a_growing_share_after_closing() {
        let mut breaker = closed_with_ramp(Duration::from_secs(30)).await;
        assert_eq!(breaker.admitted_share(now()), RAMP_START);
        assert_eq!(
            breaker.reason(now()),
            "ramping up after recovery: 10% admitted"
        );
        assert_eq!(admitted_of(&mut breaker, 100), 10);
        advance(Duration::from_secs(10)).await;
        assert_eq!(
            breaker.reason(now()),
            "ramping up after recovery: 40% admitted"
        );
        assert!((breaker.admitted_share(now()) - 0.4).abs() < 1e-9);
        assert!((39..=41).contains(&admitted_of(&mut breaker, 100)));
        advance(Duration::from_secs(20)).await;
        assert_eq!(breaker.admitted_share(now()), 1.0);
        assert_eq!(admitted_of(&mut breaker, 100), 100);
        assert!(
            breaker
                .reason(now())
                .starts_with("100 calls in the last 100 calls")
                || breaker.reason(now()).starts_with("failure rate 0%")
        );
        // The ramp is over: a failure is judged by the window again.
        assert_eq!(call(&mut breaker, FAIL), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_split_ramps_by_shifting_so_its_calls_pass_the_ramp() {
        let ramp = Duration::from_secs(30);
        let mut breaker = closed_with_ramp(ramp).await;
        assert_eq!(breaker.ramp_start(), Some((now(), ramp)));
        for _ in 0..100 {
            match breaker.admit_ramping(now(), false) {
                (Admission::Admitted(t), None) => assert_eq!(breaker.record(t, OK, now()), None),
                other => panic!("a split's call is admitted during the ramp, got {other:?}"),
            }
        }
        // The breaker's own ramp still holds for callers that are not a split's.
        assert_eq!(admitted_of(&mut breaker, 100), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_during_the_ramp_reopens_at_once_with_the_grown_penalty() {
        let mut breaker = closed_with_ramp(Duration::from_secs(30)).await;
        advance(Duration::from_secs(5)).await;
        let t = call(&mut breaker, FAIL).expect("one failure re-opens");
        assert_eq!((t.from, t.to), (StateKind::Closed, StateKind::Open));
        assert_eq!(t.reason, "failed during the ramp after recovery");
        assert_eq!(rejected(&mut breaker), Duration::from_secs(20));
        assert_eq!(breaker.admitted_share(now()), 0.0);
        // A body cut during the ramp counts too.
        let mut breaker = closed_with_ramp(Duration::from_secs(30)).await;
        let t = breaker.record_late_failure(now()).expect("re-opens");
        assert_eq!(t.reason, "failed during the ramp after recovery");
    }

    #[tokio::test(start_paused = true)]
    async fn admitted_share_by_state() {
        let mut breaker = Breaker::new(settings());
        assert_eq!(breaker.admitted_share(now()), 1.0);
        for _ in 0..10 {
            let _ = call(&mut breaker, FAIL);
        }
        assert_eq!(breaker.admitted_share(now()), 0.0);
        let _trial = first_trial(&mut breaker).await;
        assert_eq!(breaker.admitted_share(now()), RAMP_START);
    }

    /// Re-open times spread uniformly over ±20% of the penalty, reproducibly for one seed; the
    /// first trip is exact.
    #[tokio::test(start_paused = true)]
    async fn reopen_times_are_jittered_by_the_seeded_source() {
        let reopen_times = |seed: u64| async move {
            let settings = BreakerSettings {
                reopen_jitter: REOPEN_JITTER,
                max_open_duration: Duration::from_secs(20),
                ..settings()
            };
            let mut breaker = Breaker::with_rng(settings.clone(), fastrand::Rng::with_seed(seed));
            while call(&mut breaker, FAIL).is_none() {}
            assert_eq!(
                rejected(&mut breaker),
                Duration::from_secs(10),
                "first trip exact"
            );
            let mut times = Vec::new();
            for _ in 0..50 {
                let trial = first_trial(&mut breaker).await;
                let _ = breaker.record(trial, FAIL, now());
                times.push(rejected(&mut breaker));
            }
            times
        };
        let a = reopen_times(7).await;
        assert_eq!(a, reopen_times(7).await, "same seed, same times");
        assert_ne!(a, reopen_times(8).await);
        let (lo, hi) = (Duration::from_secs(16), Duration::from_secs(24));
        assert!(a.iter().all(|t| (lo..=hi).contains(t)), "{a:?}");
        // Spread over the range, not bunched: some in each outer fifth.
        assert!(a.iter().any(|t| *t < Duration::from_millis(17600)), "{a:?}");
        assert!(a.iter().any(|t| *t > Duration::from_millis(22400)), "{a:?}");
    }
}
