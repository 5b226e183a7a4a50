/// A token bucket on a clock passed in (milliseconds): `Rate.perSecond` tokens a second, up to `Rate.burst`.
/// The rate is passed to each call rather than stored, so a table of many buckets keeps two words each. The
/// per-source limits of the link layer and the DHT and gossip's per-neighbour signature budget share it.
public struct TokenBucket: Sendable {
    public struct Rate: Sendable, Equatable {
        public var perSecond: Double
        public var burst: Double
        public init(perSecond: Double, burst: Double) {
            self.perSecond = perSecond
            self.burst = burst
        }
    }

    public private(set) var tokens: Double
    private var lastMs: Int64

    /// A full bucket.
    public init(_ rate: Rate, nowMs: Int64) {
        tokens = rate.burst
        lastMs = nowMs
    }

    /// Adds what the time since the last call earned (a clock stepping back earns nothing); returns the tokens.
    @discardableResult
    public mutating func refill(_ rate: Rate, nowMs: Int64) -> Double {
        tokens = min(rate.burst, tokens + Double(max(nowMs - lastMs, 0)) * rate.perSecond / 1_000)
        lastMs = max(lastMs, nowMs)
        return tokens
    }

    /// Spends one token, which the caller saw with `refill`.
    public mutating func spend() { tokens -= 1 }

    /// Refills, then spends one token if there is one.
    public mutating func take(_ rate: Rate, nowMs: Int64) -> Bool {
        guard refill(rate, nowMs: nowMs) >= 1 else { return false }
        spend()
        return true
    }
}
