import MeshIdentity
@testable import MeshLink
import MeshTestKit
import Testing

@Suite struct LinkManagerTests {
    @Test func handshakeBringsBothSidesUpAndCarriesPayloads() {
        var net = LinkTestNet(count: 2)
        net.connect(0, to: 1)
        #expect(net.ups[0] == [net.address(1)])
        #expect(net.ups[1] == [net.address(0)])
        net.send([1, 2, 3], from: 0, to: 1)
        net.send([9, 8], from: 1, to: 0)
        #expect(net.delivered[1]?.map(\.payload) == [[1, 2, 3]])
        #expect(net.delivered[1]?.first?.from == net.address(0))
        #expect(net.delivered[0]?.map(\.payload) == [[9, 8]])
        // Ciphertext on the wire never contains the payload in clear.
        let secret: [UInt8] = Array("a secret phrase for the wire".utf8)
        net.send(secret, from: 0, to: 1)
        let last = net.wire.last!.bytes
        #expect(!contains(last, secret))
        #expect(net.nodes[0].counters.dropped == 0 && net.nodes[1].counters.dropped == 0)
    }

    @Test func pinnedLinkWithAnotherKeyIsRefused() {
        var net = LinkTestNet(count: 2)
        let someoneElse = PrivateKey().address
        net.connect(0, to: 1, pinned: someoneElse)
        #expect(net.ups[0] == nil)
        #expect(net.nodes[0].counters.pinMismatch == 1)
        #expect(net.refused[0]?.first?.contains("pinned") == true)
        #expect(!net.nodes[0].isUp(net.address(1)))
    }

    @Test func repeatedPinMismatchesAreCountedEachTimeAndLoggedOncePerInterval() {
        var net = LinkTestNet(count: 2)
        let someoneElse = PrivateKey().address
        net.connect(0, to: 1, pinned: someoneElse)
        let line = "pinned to \(someoneElse) but \(net.address(1)) answered"
        #expect(net.refused[0] == [line])
        // The dial retries with backoff (up to 8 s): every answer is refused and counted, none logged in the minute.
        var counted = net.nodes[0].counters.pinMismatch
        for _ in 0..<5 {
            net.advance(9_000)
            #expect(net.nodes[0].counters.pinMismatch > counted)
            counted = net.nodes[0].counters.pinMismatch
        }
        #expect(net.refused[0] == [line])
        // A minute after the first line, one more says how many were not logged; then nothing until the next minute.
        net.advance(16_000)
        #expect(net.refused[0]?.count == 2)
        let summary = net.refused[0]?.last ?? ""
        #expect(summary.hasPrefix(line + " (and ") && summary.hasSuffix(" more in 60 s, not logged)"), "\(summary)")
        net.advance(50_000)
        #expect(net.refused[0]?.count == 2)
        net.advance(10_000)
        #expect(net.refused[0]?.count == 3)
        #expect(!net.nodes[0].isUp(net.address(1)))
    }

    @Test func aRespondersRepeatedPinMismatchesAreLoggedOncePerInterval() {
        var net = LinkTestNet(count: 3)
        // Node 1 expects node 2's key at endpoint 0; node 0 (another key) knocks from there again and again.
        _ = net.nodes[1].connect(to: 0, pinned: net.address(2), now: net.now)
        net.connect(0, to: 1)
        net.advance(30_000)
        #expect(net.nodes[1].counters.pinMismatch > 1)
        #expect(net.refused[1]?.filter { $0.hasPrefix("pinned to \(net.address(2))") }.count == 1, "\(net.refused[1] ?? [])")
    }

    @Test func pinnedLinkWithTheRightKeyComesUp() {
        var net = LinkTestNet(count: 2)
        net.connect(0, to: 1, pinned: net.address(1))
        #expect(net.nodes[0].isUp(net.address(1)))
        #expect(net.nodes[0].peerInfos(now: net.now).first?.pinned == true)
    }

    @Test func responderPinRefusesInitiationsFromAnotherKey() {
        var net = LinkTestNet(count: 3)
        // Node 1 expects node 2's key at endpoint 0; node 0 (another key) knocks from there.
        _ = net.nodes[1].connect(to: 0, pinned: net.address(2), now: net.now)
        net.connect(0, to: 1)
        #expect(net.nodes[1].counters.pinMismatch == 1)
        #expect(!net.nodes[1].isUp(net.address(0)))
    }

    @Test func garbageTruncatedForgedAndReplayedDatagramsAreDroppedAndCounted() {
        var net = LinkTestNet(count: 2)
        net.connect(0, to: 1)
        net.send([42], from: 0, to: 1)
        let valid = net.wire.last!.bytes
        let before = net.delivered[1]?.count ?? 0

        net.inject([], from: 0, to: 1)
        net.inject([0x00, 0x01, 0x02], from: 0, to: 1)
        #expect(net.nodes[1].counters.malformed == 2)

        net.inject(Array(valid.prefix(10)), from: 0, to: 1)
        #expect(net.nodes[1].counters.malformed == 3)

        var forged = valid
        forged[forged.count - 1] ^= 0x01
        // A fresh counter so it is not caught as a replay first.
        forged[12] ^= 0x40
        net.inject(forged, from: 0, to: 1)
        #expect(net.nodes[1].counters.authFailed == 1)

        net.inject(valid, from: 0, to: 1)
        #expect(net.nodes[1].counters.replayed == 1)

        var unknown = valid
        unknown[1] ^= 0xff
        net.inject(unknown, from: 0, to: 1)
        #expect(net.nodes[1].counters.unknownSession == 1)

        #expect((net.delivered[1]?.count ?? 0) == before)
        net.send([43], from: 0, to: 1)
        #expect(net.delivered[1]?.last?.payload == [43])
    }

    @Test func randomMutationsNeverDeliverAnything() {
        var net = LinkTestNet(count: 2)
        net.connect(0, to: 1)
        net.send(Array(repeating: 7, count: 40), from: 0, to: 1)
        let samples = net.wire.map(\.bytes)
        let before = net.delivered[1]?.count ?? 0
        var rng = SplitMix64(seed: 7)
        for i in 0..<3_000 {
            var bytes = samples[i % samples.count]
            switch rng.next() % 3 {
            case 0: bytes[Int(rng.next() % UInt64(bytes.count))] ^= UInt8(1 + rng.next() % 255)
            case 1: bytes = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count))))
            default: bytes = rng.bytes(Int(rng.next() % 200))
            }
            net.inject(bytes, from: 0, to: 1)
        }
        #expect((net.delivered[1]?.count ?? 0) == before)
        #expect(net.nodes[1].isUp(net.address(0)))
    }

    @Test func replayedHandshakeInitiationIsRefused() {
        var net = LinkTestNet(count: 2)
        net.connect(0, to: 1)
        let initiation = net.wire.last { HandshakeInit(parsing: $0.bytes).map { !$0.isForAnyResponder } ?? false }!.bytes
        net.inject(initiation, from: 0, to: 1)
        #expect(net.nodes[1].counters.handshakeRefused == 1)
        #expect(net.nodes[1].halfOpenCount == 0)
    }

    @Test func pingsEstimateRTTAndLoss() {
        var net = LinkTestNet(count: 2)
        net.connect(0, to: 1)
        net.advance(5_000)
        let info = net.nodes[0].peerInfos(now: net.now).first!
        #expect(info.state == "up")
        #expect(info.rttMs == 0)
        #expect(info.lossPercent == 0)
        // Drop everything from 1 to 0 for a while: pings go unanswered, loss rises, then the link dies.
        net.drop = { from, _ in from == 1 }
        net.advance(5_000)
        #expect(net.nodes[0].peerInfos(now: net.now).first!.lossPercent > 0)
        net.advance(6_000)
        #expect(net.downs[0] == [net.address(1)])
        #expect(!net.nodes[0].isUp(net.address(1)))
    }

    @Test func dialledLinkReconnectsAfterItDies() {
        var net = LinkTestNet(count: 2)
        net.connect(0, to: 1)
        net.drop = { _, _ in true }
        net.advance(11_000)
        #expect(net.downs[0]?.count == 1)
        net.drop = { _, _ in false }
        net.advance(10_000)
        #expect(net.nodes[0].isUp(net.address(1)))
        #expect(net.ups[0]?.count == 2)
    }

    @Test func closingTakesTheLinkDownOnBothSidesAtOnce() {
        var net = LinkTestNet(count: 2)
        net.connect(0, to: 1)
        net.run(net.nodes[0].closeAll(now: net.now), at: 0)
        #expect(net.downs[0] == [net.address(1)])
        #expect(net.downs[1] == [net.address(0)])
        #expect(!net.nodes[1].isUp(net.address(0)))
        net.advance(20_000)
        #expect(net.ups[0]?.count == 1, "a closed manager no longer dials")
    }

    @Test func sessionsRekeyWithoutInterruptingTraffic() {
        var config = LinkConfig()
        config.rekeyAfterMs = 3_000
        config.rejectAfterMs = 6_000
        var net = LinkTestNet(count: 2, config: config)
        net.connect(0, to: 1)
        let initiations = { (net: LinkTestNet) in
            net.wire.filter { HandshakeInit(parsing: $0.bytes).map { !$0.isForAnyResponder } ?? false }.count
        }
        #expect(initiations(net) == 1)
        for round in 0..<10 {
            net.advance(1_000)
            net.send([UInt8(round)], from: 0, to: 1)
            net.send([UInt8(round)], from: 1, to: 0)
        }
        #expect(initiations(net) >= 3)
        #expect(net.delivered[1]?.count == 10)
        #expect(net.delivered[0]?.count == 10)
        #expect(net.downs.isEmpty)
    }

    private func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard haystack.count >= needle.count else { return false }
        return (0...(haystack.count - needle.count)).contains { Array(haystack[$0..<$0 + needle.count]) == needle }
    }
}
