import MeshIdentity

/// When trunks leave (docs/forwarding.md, "Trunks and mini-frames").
public struct TrunkConfig: Sendable {
    /// Largest trunk payload, bytes (a link datagram adds 30 bytes: header, type byte, tag).
    public var maxBytes = TrunkWire.defaultMaxBytes
    /// Longest wait of a lone packet for others to the same neighbour, µs (0: never waits).
    public var holdUs: Int64 = 2_000
    /// A lone packet waits only when this many other packets are expected toward its neighbour within the hold
    /// (from the packets sent to it over the last `rateWindowUs`): 0.7 makes company more likely than not
    /// (1 − e^−0.7 ≈ 50 %). With one call (50 packets/s) nothing waits; at a 2 ms hold, from about 350 packets/s.
    public var companyExpected = 0.7
    public var rateWindowUs: Int64 = 1_000_000

    public init() {}
}

/// The trunks of one node, sans-IO: data messages to neighbours in, trunk payloads out (one link datagram each),
/// and the trunks that arrive opened into data messages again. `now` is a monotonic clock in µs.
///
/// Decision: packets that arrive together (one read batch, one received trunk, one tick of the media grid) leave
/// together at the end of the batch, without waiting. A trunk holding a single packet at that point waits up to
/// `holdUs` for company, but only toward a neighbour where company is likely to come within the hold (its recent
/// packet rate); a trunk that fills up leaves at once. So a few calls pay no hold (they would wait for nothing),
/// and a busy link needs none (its batches are full already); the hold gathers the stragglers of a link with
/// many independent calls.
public struct Trunker: Sendable {
    public let config: TrunkConfig
    private var outgoing: [WalletAddress: Outgoing] = [:]
    private var decoders: [WalletAddress: TrunkDecoder] = [:]
    /// Neighbours whose open trunk got a packet in the current batch.
    private var touched: [WalletAddress] = []
    /// Lone packets waiting for company, with the time their wait ends.
    private var holding: [WalletAddress: Int64] = [:]
    /// The counters of neighbours whose link went down.
    private var retiredSent = TrunkCounters()
    private var retiredReceived = TrunkCounters()

    struct Outgoing {
        var encoder: TrunkEncoder
        /// When the open trunk's first packet was queued.
        var openedAt: Int64 = 0
        /// Packets queued in the current and the previous rate window, and when the current one began.
        var packets = 0
        var previousPackets = 0
        var windowStart: Int64
    }

    public init(config: TrunkConfig = TrunkConfig()) {
        self.config = config
    }

    /// Queues a data message for `neighbour`. Returns a trunk that filled up and must leave now.
    public mutating func enqueue(_ message: [UInt8], to neighbour: WalletAddress, now: Int64) -> [UInt8]? {
        var out = outgoing.removeValue(forKey: neighbour)
            ?? Outgoing(encoder: TrunkEncoder(maxBytes: config.maxBytes), windowStart: now)
        defer { outgoing[neighbour] = out }
        if now - out.windowStart >= config.rateWindowUs {
            out.previousPackets = now - out.windowStart >= 2 * config.rateWindowUs ? 0 : out.packets
            out.packets = 0
            out.windowStart = now
        }
        out.packets += 1
        if out.encoder.pending == 0 {
            out.openedAt = now
            touched.append(neighbour)
        } else if holding.removeValue(forKey: neighbour) != nil {
            // A lone packet waiting from an earlier batch found company: both leave at the end of this one.
            touched.append(neighbour)
        }
        let full = out.encoder.append(message)
        // The message that did not fit opened the next trunk.
        if full != nil { out.openedAt = now }
        return full
    }

    /// The end of a batch of inputs: every trunk with company leaves; a lone packet waits when it may.
    public mutating func endOfBatch(now: Int64) -> [(WalletAddress, [UInt8])] {
        var out: [(WalletAddress, [UInt8])] = []
        for neighbour in touched {
            guard let state = outgoing[neighbour], state.encoder.pending > 0 else { continue }
            let expected = Double(max(state.packets, state.previousPackets)) * Double(config.holdUs) / Double(config.rateWindowUs)
            let company = expected >= config.companyExpected
            if state.encoder.pending == 1, company, config.holdUs > 0, now - state.openedAt < config.holdUs {
                holding[neighbour] = state.openedAt + config.holdUs
            } else if let trunk = finish(neighbour) {
                out.append((neighbour, trunk))
            }
        }
        touched.removeAll(keepingCapacity: true)
        return out
    }

    /// Trunks whose hold ended, to leave now.
    public mutating func expire(now: Int64) -> [(WalletAddress, [UInt8])] {
        var out: [(WalletAddress, [UInt8])] = []
        for (neighbour, deadline) in holding where deadline <= now {
            if let trunk = finish(neighbour) { out.append((neighbour, trunk)) }
        }
        return out
    }

    /// The open trunk to `neighbour`, at once: a control message to it must not overtake the data queued before it
    /// (a teardown arriving before the hangup it follows).
    public mutating func flush(_ neighbour: WalletAddress) -> [UInt8]? {
        outgoing[neighbour]?.encoder.pending ?? 0 > 0 ? finish(neighbour) : nil
    }

    /// Every open trunk, at once (the node is stopping).
    public mutating func flushAll() -> [(WalletAddress, [UInt8])] {
        touched.removeAll(keepingCapacity: true)
        return outgoing.keys.sorted().compactMap { neighbour in finish(neighbour).map { (neighbour, $0) } }
    }

    /// When the next held trunk must leave.
    public var nextDeadline: Int64? { holding.values.min() }

    /// The data messages of a trunk from `neighbour`, restored byte for byte into `messages` (its storage reused).
    public mutating func open(_ payload: [UInt8], from neighbour: WalletAddress, into messages: inout TrunkMessages) {
        var decoder = decoders.removeValue(forKey: neighbour) ?? TrunkDecoder()
        defer { decoders[neighbour] = decoder }
        decoder.decode(payload, into: &messages)
    }

    /// Gives a sent trunk's storage back for the next trunk to `neighbour`.
    public mutating func recycle(_ trunk: consuming [UInt8], to neighbour: WalletAddress) {
        guard var state = outgoing.removeValue(forKey: neighbour) else { return }
        state.encoder.recycle(consume trunk)
        outgoing[neighbour] = state
    }

    /// The link to `neighbour` went down: its header contexts go (a new link starts with full headers), and so do
    /// the packets still queued for it.
    public mutating func linkDown(_ neighbour: WalletAddress) {
        if let gone = decoders.removeValue(forKey: neighbour) { retiredReceived = retiredReceived + gone.counters }
        if let gone = outgoing.removeValue(forKey: neighbour) { retiredSent = retiredSent + gone.encoder.counters }
        holding[neighbour] = nil
    }

    /// Trunks and entries that went out, and that came in, over every link.
    public var sent: TrunkCounters { outgoing.values.reduce(retiredSent) { $0 + $1.encoder.counters } }
    public var received: TrunkCounters { decoders.values.reduce(retiredReceived) { $0 + $1.counters } }

    private mutating func finish(_ neighbour: WalletAddress) -> [UInt8]? {
        holding[neighbour] = nil
        guard var state = outgoing.removeValue(forKey: neighbour) else { return nil }
        defer { outgoing[neighbour] = state }
        return state.encoder.finish()
    }
}

extension TrunkCounters {
    static func + (a: TrunkCounters, b: TrunkCounters) -> TrunkCounters {
        var sum = a
        sum.trunks += b.trunks
        sum.fullEntries += b.fullEntries
        sum.miniEntries += b.miniEntries
        sum.malformed += b.malformed
        sum.miniWithoutContext += b.miniWithoutContext
        sum.miniMismatch += b.miniMismatch
        return sum
    }
}
