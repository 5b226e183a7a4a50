import MeshIdentity
@testable import MeshRouting
import MeshTestKit
import Testing

/// The forwarding layer's wire format: every message round-trips; truncated, extended and out-of-range
/// inputs are refused.
@Suite struct ChainWireTests {
    static func nodes(_ count: Int, _ rng: inout SplitMix64) -> [WalletAddress] {
        (0..<count).map { _ in WalletAddress(bytes: rng.bytes(20))! }
    }

    /// One of each message, with lists of several lengths.
    static func samples() -> [ChainMessage] {
        var rng = SplitMix64(seed: 11)
        let wallet = rng.privateKey()
        let key = ChainKey(call: 0x0123_4567_89AB_CDEF, chain: 0xDEAD_BEEF)
        let figures = [HopFigures(node: nodes(1, &rng)[0], rttMs: 12.3, lossPercent: 1.5),
                       HopFigures(node: nodes(1, &rng)[0], rttMs: nil, lossPercent: 0),
                       HopFigures(node: nodes(1, &rng)[0], rttMs: 6553.4, lossPercent: 100)]
        var out: [ChainMessage] = []
        for (pathCount, avoidCount) in [(1, 0), (3, 2), (16, 16)] {
            out.append(.setup(.sign(key: key, wallet: wallet, target: nodes(1, &rng)[0], expiresAtMs: 1_700_000_000_000,
                                    hopLimit: 6, backLabel: 0x0102_0304, path: nodes(pathCount, &rng),
                                    avoid: nodes(avoidCount, &rng))))
        }
        for count in [0, 1, 3] {
            out.append(.accept(key, label: 77, figures: Array(figures.prefix(count))))
            out.append(.report(label: 5, Array(figures.prefix(count))))
            out.append(.reportBack(label: 0xFFFF_FFFF, Array(figures.prefix(count))))
        }
        for reason in [ChainRefusal.sessionLimit, .neighbourLimit, .hopLimit, .noRoute, .badSignature, .expired, .timeout,
                       .duplicate, .linkDown, .closed, .idle, .replaced] {
            out.append(.refuse(key, reason, by: nodes(1, &rng)[0]))
            out.append(.teardown(key, reason))
        }
        out.append(.data(label: 9, []))
        out.append(.data(label: 0xABCD_EF01, [0x01] + rng.bytes(300)))
        return out
    }

    @Test func everyMessageRoundTrips() {
        for message in Self.samples() {
            let bytes = message.serialize()
            #expect(ChainMessage(parsing: bytes) == message, "\(message)")
            #expect(ChainMessage.claims(bytes))
            #expect(ChainMessage.isData(bytes) == { if case .data = message { true } else { false } }())
        }
        // Figures survive to a tenth of a millisecond and of a percent.
        if case .accept(_, _, let figures)? = ChainMessage(parsing: Self.samples().first { if case .accept(_, _, let f) = $0 { f.count == 3 } else { false } }!.serialize()) {
            #expect(figures.map(\.rttMs) == [12.3, nil, 6553.4])
            #expect(figures.map(\.lossPercent) == [1.5, 0, 100])
        } else {
            Issue.record("no accept")
        }
        // The data message's shape as the hot path builds and reads it.
        let data: [UInt8] = ChainMessage.data(label: 0x0102_0304, [9, 8])
        #expect(data == [0x34, 1, 2, 3, 4, 9, 8])
        #expect(ChainMessage.label(of: data) == 0x0102_0304)
        var relabelled = data
        ChainMessage.setLabel(0xA0B0_C0D0, in: &relabelled)
        #expect(relabelled == [0x34, 0xA0, 0xB0, 0xC0, 0xD0, 9, 8])
        #expect(ChainMessage.label(of: [0x34, 1, 2, 3]) == nil)
        #expect(!ChainMessage.claims([0x04]) && !ChainMessage.claims([]) && !ChainMessage.claims([0x35]))
    }

    @Test func signedSetUpsVerifyAndTamperingShows() {
        var rng = SplitMix64(seed: 12)
        let wallet = rng.privateKey()
        let setup = ChainMessage.Setup.sign(key: ChainKey(call: 1, chain: 2), wallet: wallet, target: Self.nodes(1, &rng)[0],
                                            expiresAtMs: 5_000, hopLimit: 6, backLabel: 3, path: Self.nodes(2, &rng), avoid: [])
        #expect(setup.isAuthentic)
        #expect(setup.caller == wallet.address)
        guard case .setup(let parsed)? = ChainMessage(parsing: ChainMessage.setup(setup).serialize()) else {
            Issue.record("no setup")
            return
        }
        #expect(parsed.isAuthentic)
        var t = setup
        t.expiresAtMs += 1
        #expect(!t.isAuthentic)
        t = setup
        t.key = ChainKey(call: 1, chain: 3)
        #expect(!t.isAuthentic)
        t = setup
        t.caller = Self.nodes(1, &rng)[0]
        #expect(!t.isAuthentic)
        // Path, avoid list and back label are the hops' own, not signed.
        t = setup
        t.path.append(Self.nodes(1, &rng)[0])
        t.backLabel = 99
        #expect(t.isAuthentic)
    }

    @Test func truncatedAndExtendedInputsAreRefused() {
        for message in Self.samples() {
            let bytes = message.serialize()
            if case .data = message {
                // Data carries whatever follows its label; only the label is needed.
                for cut in 0..<5 { #expect(ChainMessage(parsing: Array(bytes.prefix(cut))) == nil) }
                continue
            }
            for cut in 0..<bytes.count {
                #expect(ChainMessage(parsing: Array(bytes.prefix(cut))) == nil, "\(message) cut at \(cut)")
            }
            #expect(ChainMessage(parsing: bytes + [0]) == nil, "\(message) with a byte more")
        }
        #expect(ChainMessage(parsing: []) == nil)
        #expect(ChainMessage(parsing: [0x35, 0, 0, 0, 0]) == nil, "probe and pong tags are not link messages")
        #expect(ChainMessage(parsing: [0x39]) == nil)
    }

    @Test func outOfRangeFieldsAreRefused() throws {
        var rng = SplitMix64(seed: 13)
        let wallet = rng.privateKey()
        let key = ChainKey(call: 1, chain: 2)
        func setup(path: Int = 1, avoid: Int = 0, backLabel: UInt32 = 1) -> [UInt8] {
            ChainMessage.setup(.sign(key: key, wallet: wallet, target: Self.nodes(1, &rng)[0], expiresAtMs: 1, hopLimit: 6,
                                     backLabel: backLabel, path: Self.nodes(path, &rng), avoid: Self.nodes(avoid, &rng))).serialize()
        }
        #expect(ChainMessage(parsing: setup(path: 16, avoid: 16)) != nil)
        #expect(ChainMessage(parsing: setup(path: 17)) == nil, "a path of more than 16 nodes")
        #expect(ChainMessage(parsing: setup(avoid: 17)) == nil, "an avoid list of more than 16 nodes")
        #expect(ChainMessage(parsing: setup(path: 0)) == nil, "an empty path")
        #expect(ChainMessage(parsing: setup(backLabel: 0)) == nil, "a zero back label")
        #expect(ChainMessage(parsing: ChainMessage.accept(key, label: 0, figures: []).serialize()) == nil, "a zero label")

        let node = Self.nodes(1, &rng)[0]
        let figures = (0..<17).map { HopFigures(node: node, rttMs: Double($0), lossPercent: 0) }
        #expect(ChainMessage(parsing: ChainMessage.report(label: 1, Array(figures.prefix(16))).serialize()) != nil)
        #expect(ChainMessage(parsing: ChainMessage.report(label: 1, figures).serialize()) == nil, "17 figures")
        #expect(ChainMessage(parsing: ChainMessage.accept(key, label: 1, figures: figures).serialize()) == nil)
        let lossy = HopFigures(node: node, rttMs: 1, lossPercent: 100.1)
        #expect(ChainMessage(parsing: ChainMessage.reportBack(label: 1, [lossy]).serialize()) == nil, "loss over 1000 per mille")
        #expect(ChainMessage(parsing: ChainMessage.accept(key, label: 1, figures: [lossy]).serialize()) == nil)

        // Unknown refusal reasons.
        var refuse = ChainMessage.refuse(key, .noRoute, by: node).serialize()
        refuse[13] = 0
        #expect(ChainMessage(parsing: refuse) == nil)
        refuse[13] = 14
        #expect(ChainMessage(parsing: refuse) == nil)
        var teardown = ChainMessage.teardown(key, .closed).serialize()
        teardown[13] = 200
        #expect(ChainMessage(parsing: teardown) == nil)
        // A setup whose signature bytes are not a canonical signature.
        var bytes = setup()
        let v = 1 + 12 + 20 + 20 + 8 + 1 + 64
        bytes[v] = 29
        #expect(ChainMessage(parsing: bytes) == nil)
    }

    @Test func innerPayloadsRoundTrip() {
        var rng = SplitMix64(seed: 14)
        let samples: [ChainInner] = [.probe(sequence: 1, sentAtMs: 1_700_000_000_123), .probe(sequence: 2, sentAtMs: 3, active: false),
                                     .pong(sequence: .max, sentAtMs: 0),
                                     .call([0x01]), .call([0x02] + rng.bytes(500)), .call([0xFF, 0x35, 0x36])]
        for inner in samples {
            let bytes = inner.serialize()
            #expect(ChainInner(parsing: bytes[...]) == inner, "\(inner)")
            // As the ends read it: after a data message's five bytes.
            let data: [UInt8] = ChainMessage.data(label: 1, bytes)
            #expect(ChainInner(parsing: data[5...]) == inner)
        }
        let probe = ChainInner.probe(sequence: 7, sentAtMs: 9).serialize()
        #expect(probe.count == 13)
        for cut in 1..<probe.count { #expect(ChainInner(parsing: probe.prefix(cut)) == nil) }
        #expect(ChainInner(parsing: (probe + [0])[...]) == nil)
        #expect(ChainInner(parsing: [][...]) == nil, "no empty payload")
    }
}
