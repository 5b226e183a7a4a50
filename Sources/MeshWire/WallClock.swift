/// The wall clock as a pure core knows it (docs/architecture.md, "Clocks"). Cores take `now` from the node's
/// monotonic clock (timers, RTTs, ages: an NTP step moves none of them); what is signed, compared with other nodes'
/// clocks or kept across restarts (timestamps, expiries, sequence numbers drawn from the clock) is wall-clock Unix
/// time, `now` plus this offset. The shell reads both clocks on its link tick and hands each core the offset
/// (`clock`), an input like any other: the core stays a function of its inputs, and a test steps the wall clock by
/// changing it.
public struct WallClock: Sendable, Equatable {
    /// The wall clock minus the monotonic clock, ms.
    public var offsetMs: Int64

    public init(offsetMs: Int64 = 0) { self.offsetMs = offsetMs }

    /// Wall-clock Unix ms at monotonic `now`.
    public func wall(_ now: Int64) -> Int64 { now &+ offsetMs }

    /// The monotonic time at which the wall clock reads `wallMs` (a signed expiry as a local deadline).
    public func monotonic(_ wallMs: Int64) -> Int64 { wallMs &- offsetMs }
}
