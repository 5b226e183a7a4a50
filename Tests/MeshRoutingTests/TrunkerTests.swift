import MeshIdentity
@testable import MeshRouting
import MeshTestKit
import Testing

/// When trunks leave: packets of one batch together at its end, a lone packet held only toward a neighbour whose
/// packet rate makes company likely within the hold and never past it, full trunks at once, control messages never overtaking queued data.
@Suite struct TrunkerTests {
    let a = WalletAddress(bytes: [UInt8](repeating: 0xA0, count: 20))!
    let b = WalletAddress(bytes: [UInt8](repeating: 0xB0, count: 20))!

    /// A media data message of session `label` (RTP sequence `seq`), `size` bytes of SRTP payload.
    static func media(label: UInt32, seq: UInt16, size: Int = 60) -> [UInt8] {
        let rtp: [UInt8] = [0x80, 111, UInt8(seq >> 8), UInt8(seq & 0xFF), 0, 0, UInt8(seq >> 8), UInt8(seq & 0xFF), 1, 2, 3, UInt8(label)]
        return ChainMessage.data(label: label, [0x20] + rtp + [UInt8](repeating: 0x5A, count: size))
    }

    /// `companyExpected` low enough that two packets in the rate window make company likely.
    static func config(holdUs: Int64 = 2_000, maxBytes: Int = 1_200, companyExpected: Double = 0.003) -> TrunkConfig {
        var c = TrunkConfig()
        c.holdUs = holdUs
        c.maxBytes = maxBytes
        c.companyExpected = companyExpected
        return c
    }

    /// What the next hop gets out of the trunks that left.
    func opened(_ trunks: [(WalletAddress, [UInt8])]) -> [[UInt8]] {
        var receiver = Trunker()
        return trunks.flatMap { receiver.opened($0.1, from: a) }
    }

    @Test func aBatchLeavesTogetherAtItsEnd() {
        var t = Trunker(config: Self.config())
        let messages = (0..<10).map { Self.media(label: UInt32(100 + $0), seq: 7) }
        for m in messages { #expect(t.enqueue(m, to: a, now: 0) == nil) }
        let out = t.endOfBatch(now: 0)
        #expect(out.count == 1 && out[0].0 == a)
        #expect(opened(out) == messages)
        #expect(t.nextDeadline == nil)
        #expect(t.sent.trunks == 1 && t.sent.fullEntries == 10)
    }

    /// With the default threshold, one call (50 packets/s) never waits: company is not likely within 2 ms.
    @Test func aLoneSessionNeverWaits() {
        var t = Trunker(config: Self.config(companyExpected: TrunkConfig().companyExpected))
        for seq in UInt16(0)..<5 {
            _ = t.enqueue(Self.media(label: 9, seq: seq), to: a, now: Int64(seq) * 20_000)
            #expect(t.endOfBatch(now: Int64(seq) * 20_000).count == 1, "one session: nothing to wait for")
        }
        #expect(t.sent.miniEntries > 0, "consecutive packets of the session go as mini-frames")
    }

    @Test func aLonePacketWaitsForCompanyButNotPastTheHold() {
        var t = Trunker(config: Self.config(holdUs: 2_000))
        // Two packets toward `a` in the rate window: company counts as likely.
        _ = t.enqueue(Self.media(label: 1, seq: 0), to: a, now: 0)
        _ = t.enqueue(Self.media(label: 2, seq: 0), to: a, now: 0)
        #expect(t.endOfBatch(now: 0).count == 1)
        // A lone packet now waits...
        _ = t.enqueue(Self.media(label: 1, seq: 1), to: a, now: 10_000)
        #expect(t.endOfBatch(now: 10_000).isEmpty)
        #expect(t.nextDeadline == 12_000)
        #expect(t.expire(now: 11_999).isEmpty)
        // ...and company arriving in a later batch takes it along at that batch's end.
        _ = t.enqueue(Self.media(label: 2, seq: 1), to: a, now: 11_000)
        let together = t.endOfBatch(now: 11_000)
        #expect(together.count == 1 && opened(together).count == 2)
        #expect(t.nextDeadline == nil)
        // Without company it leaves when the hold ends.
        _ = t.enqueue(Self.media(label: 1, seq: 2), to: a, now: 20_000)
        #expect(t.endOfBatch(now: 20_000).isEmpty)
        #expect(t.expire(now: 22_000).count == 1)
        #expect(t.nextDeadline == nil)
    }

    /// The rate decides: 400 packets in the last second toward a neighbour (0.8 expected within 2 ms) make a lone
    /// packet wait; 300 (0.6) do not.
    @Test func theDefaultThresholdWaitsFromAbout350PacketsPerSecond() {
        for (rate, waits) in [(300, false), (400, true)] {
            var t = Trunker(config: Self.config(companyExpected: TrunkConfig().companyExpected))
            for i in 0..<rate {
                let now = Int64(i) * 1_000_000 / Int64(rate)
                _ = t.enqueue(Self.media(label: UInt32(i % 20), seq: UInt16(i / 20)), to: a, now: now)
                _ = t.endOfBatch(now: now)
                _ = t.expire(now: now + 2_000)
            }
            _ = t.enqueue(Self.media(label: 1, seq: 999), to: a, now: 999_999)
            #expect(t.endOfBatch(now: 999_999).isEmpty == waits, "\(rate) packets/s")
        }
    }

    @Test func holdZeroNeverWaits() {
        var t = Trunker(config: Self.config(holdUs: 0))
        _ = t.enqueue(Self.media(label: 1, seq: 0), to: a, now: 0)
        _ = t.enqueue(Self.media(label: 2, seq: 0), to: a, now: 0)
        _ = t.endOfBatch(now: 0)
        _ = t.enqueue(Self.media(label: 1, seq: 1), to: a, now: 10)
        #expect(t.endOfBatch(now: 10).count == 1)
    }

    @Test func aFullTrunkLeavesAtOnceAndNeighboursAreApart() {
        var t = Trunker(config: Self.config(maxBytes: 400))
        var early: [[UInt8]] = []
        let toA = (0..<12).map { Self.media(label: UInt32($0), seq: 0, size: 100) }
        for m in toA { if let full = t.enqueue(m, to: a, now: 0) { early.append(full) } }
        _ = t.enqueue(Self.media(label: 99, seq: 0), to: b, now: 0)
        #expect(!early.isEmpty && early.allSatisfy { $0.count <= 400 })
        let rest = t.endOfBatch(now: 0)
        #expect(Set(rest.map(\.0)) == [a, b])
        var receiver = Trunker()
        let atA = early.flatMap { receiver.opened($0, from: a) } + rest.filter { $0.0 == a }.flatMap { receiver.opened($0.1, from: a) }
        #expect(atA == toA, "every message to a, in order, across the trunks")
    }

    /// The forwarding path reuses storage: each trunk, once sent, is given back for a later one, and one
    /// `TrunkMessages` takes every trunk that arrives. Neither may leak bytes from one trunk into the next.
    @Test func reusedStorageCarriesEveryTrunkIntact() {
        var sender = Trunker(config: Self.config(holdUs: 0, maxBytes: 300))
        var receiver = Trunker()
        var messages = TrunkMessages()
        var sent: [[UInt8]] = []
        var restored: [[UInt8]] = []
        func deliver(_ trunk: consuming [UInt8]) {
            receiver.open(trunk, from: a, into: &messages)
            restored += messages.map(Array.init)
            sender.recycle(trunk, to: a)
        }
        for round in 0..<20 {
            // Sizes vary, so a reused buffer is sometimes longer than the trunk written into it.
            for session in 0..<(3 + round % 5) {
                let m = Self.media(label: UInt32(session), seq: UInt16(round), size: 20 + 37 * ((round + session) % 4))
                sent.append(m)
                if let full = sender.enqueue(m, to: a, now: Int64(round) * 20_000) { deliver(full) }
            }
            for (_, trunk) in sender.endOfBatch(now: Int64(round) * 20_000) { deliver(trunk) }
        }
        #expect(restored.count == sent.count)
        #expect(restored.indices.first { restored[$0] != sent[$0] } == nil)
        #expect(sender.sent.miniEntries > 0, "mini entries were restored from reused buffers too")
    }

    @Test func flushEmptiesOneNeighbourAndLinkDownForgets() {
        var t = Trunker(config: Self.config())
        _ = t.enqueue(Self.media(label: 1, seq: 0), to: a, now: 0)
        _ = t.enqueue(Self.media(label: 2, seq: 0), to: b, now: 0)
        #expect(t.flush(a).map { opened([(a, $0)]).count } == 1)
        #expect(t.flush(a) == nil)
        t.linkDown(b)
        #expect(t.endOfBatch(now: 0).isEmpty, "b's queue went with its link")
        #expect(t.flushAll().isEmpty)
    }
}

extension Trunker {
    /// The messages of one trunk from `neighbour` as arrays.
    mutating func opened(_ payload: [UInt8], from neighbour: WalletAddress) -> [[UInt8]] {
        var messages = TrunkMessages()
        open(payload, from: neighbour, into: &messages)
        return messages.map(Array.init)
    }
}
