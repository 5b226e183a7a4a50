import MeshIdentity
@testable import MeshLink
import MeshTestKit
import Synchronization
import Testing

/// The responder's defences before any signature work (docs/links.md, "Before any signature work").
@Suite struct HandshakeDefenceTests {
    /// An initiation with a random 65-byte signature, as a sender without any key makes them; with `mac1For`,
    /// mac1 is keyed correctly for that responder (the sender knows the node's address), else it is random.
    static func forgedInit(to responder: WalletAddress, mac1For: WalletAddress?, timestampMs: Int64, rng: inout SplitMix64,
                           cookie: [UInt8]? = nil) -> [UInt8] {
        let signed = HandshakeInit.signedPart(senderIndex: UInt32(truncatingIfNeeded: rng.next()), responder: responder.bytes,
                                              ephemeral: rng.bytes(32), timestampMs: UInt64(timestampMs))
        var signature = rng.bytes(65)
        signature[64] = UInt8(rng.next() % 2)
        let mac1 = mac1For.map { HandshakeMAC.mac(key: HandshakeMAC.mac1Key(responder: $0.bytes), signed + signature) } ?? rng.bytes(16)
        let mac2 = cookie.map { HandshakeMAC.mac(key: $0, signed + signature + mac1) } ?? [UInt8](repeating: 0, count: 16)
        return signed + signature + mac1 + mac2
    }

    /// What the test network sent to endpoint `to` of type `type`.
    /// A well-formed initiation to node 1 signed by a throw-away key (so it is answered but never finishes),
    /// injected from `host`.
    static func injectThrowAwayInit(_ net: inout LinkTestNet, index: Int, from host: Int, rng: inout SplitMix64) {
        let initiation = HandshakeInit(senderIndex: UInt32(index), responder: net.address(1).bytes, ephemeral: rng.bytes(32),
                                       timestampMs: UInt64(net.now), signer: PrivateKey(), cookie: nil)
        net.inject(initiation.serialized, from: host, to: 1)
    }

    static func sent(_ net: LinkTestNet, type: LinkMessageType, to: Int) -> [[UInt8]] {
        net.wire.filter { $0.to == to && $0.bytes.first == type.rawValue }.map(\.bytes)
    }

    @Test func initiationWithABadMac1IsDroppedBeforeAnySignatureWork() {
        var net = LinkTestNet(count: 2)
        var rng = SplitMix64(seed: 1)
        // Made without knowing node 1's address: mac1 is keyed by a guess.
        for _ in 0..<50 {
            net.inject(Self.forgedInit(to: net.address(1), mac1For: PrivateKey().address, timestampMs: net.now, rng: &rng), from: 9, to: 1)
        }
        #expect(net.nodes[1].counters.macFailed == 50)
        #expect(net.nodes[1].counters.signatureRecoveries == 0)
        #expect(net.wire.filter { $0.from == 1 }.isEmpty, "nothing is answered")
        // The same forgery with mac1 right costs a signature recovery: the check above is what saved it.
        net.inject(Self.forgedInit(to: net.address(1), mac1For: net.address(1), timestampMs: net.now, rng: &rng), from: 9, to: 1)
        #expect(net.nodes[1].counters.signatureRecoveries == 1)
        // A node that knows the address links as usual.
        net.connect(0, to: 1, pinned: net.address(1))
        #expect(net.nodes[0].isUp(net.address(1)))
    }

    @Test func initiationReplayedToAnotherNodeIsRefused() {
        var net = LinkTestNet(count: 3)
        net.connect(0, to: 1, pinned: net.address(1))
        let initiation = net.wire.first { $0.bytes.first == LinkMessageType.handshakeInit.rawValue }!.bytes
        // As captured, it names node 1: node 2 does no signature work and keeps nothing (it tells the sender who
        // it is, in a cookie reply smaller than the initiation).
        net.inject(initiation, from: 7, to: 2)
        #expect(net.nodes[2].counters.wrongResponder == 1)
        #expect(HandshakeDefenceTests.sent(net, type: .cookieReply, to: 7).count == 1)
        // With mac1 recomputed for node 2 (anyone knowing its address can), mac1 no longer matches the named node.
        var retargeted = Array(initiation[..<LinkWire.initTranscriptBytes])
        retargeted += HandshakeMAC.mac(key: HandshakeMAC.mac1Key(responder: net.address(2).bytes), retargeted)
        retargeted += [UInt8](repeating: 0, count: LinkWire.macBytes)
        net.inject(retargeted, from: 7, to: 2)
        #expect(net.nodes[2].counters.macFailed == 1)
        #expect(net.nodes[2].counters.signatureRecoveries == 0)
        // Rewriting the responder field breaks the signature: it recovers some other key, never node 0.
        var rewritten = Array(initiation[..<LinkWire.initTranscriptBytes])
        rewritten.replaceSubrange(6..<26, with: net.address(2).bytes)
        rewritten += HandshakeMAC.mac(key: HandshakeMAC.mac1Key(responder: net.address(2).bytes), rewritten)
        rewritten += [UInt8](repeating: 0, count: LinkWire.macBytes)
        net.inject(rewritten, from: 7, to: 2)
        net.advance(1_000)
        #expect(net.nodes[2].peerInfos(now: net.now).isEmpty)
        #expect(!net.nodes[2].isUp(net.address(0)))
    }

    @Test func underLoadOnlyInitiationsWithACookieForTheirEndpointGetWork() {
        var config = LinkConfig()
        config.handshakesPerSecondUnderLoad = 10
        var net = LinkTestNet(count: 2, config: config)
        var rng = SplitMix64(seed: 2)
        for _ in 0..<200 {
            net.inject(Self.forgedInit(to: net.address(1), mac1For: net.address(1), timestampMs: net.now, rng: &rng), from: 9, to: 1)
        }
        let counters = net.nodes[1].counters
        #expect(counters.signatureRecoveries == 10, "work stops at the load threshold")
        #expect(counters.cookieRequired == 190)
        let cookieReplies = Self.sent(net, type: .cookieReply, to: 9)
        #expect(cookieReplies.count == 190)
        #expect(cookieReplies.allSatisfy { $0.count < LinkWire.initBytes }, "no amplification")
        // A cookie given to endpoint 9 is no good from endpoint 8 (it proves the address it was sent to).
        let cookie = Array(cookieReplies[0][25..<41])
        net.inject(Self.forgedInit(to: net.address(1), mac1For: net.address(1), timestampMs: net.now, rng: &rng, cookie: cookie),
                   from: 8, to: 1)
        #expect(net.nodes[1].counters.signatureRecoveries == 10)
        net.inject(Self.forgedInit(to: net.address(1), mac1For: net.address(1), timestampMs: net.now, rng: &rng, cookie: cookie),
                   from: 9, to: 1)
        #expect(net.nodes[1].counters.signatureRecoveries == 11, "from its own endpoint it gets work")
        // A real node takes the cookie round and links while the flood goes on.
        net.connect(0, to: 1, pinned: net.address(1))
        #expect(net.nodes[0].isUp(net.address(1)))
        #expect(Self.sent(net, type: .cookieReply, to: 0).count == 1)
    }

    @Test func cookiesExpireWithTheirSecret() {
        final class Draws: Sendable { let count = Mutex<UInt8>(0) }
        let draws = Draws()
        var config = LinkConfig()
        config.handshakesPerSecondUnderLoad = 0
        config.cookieSecretLifetimeMs = 10_000
        var node = LinkManager<Int>(identity: PrivateKey(), config: config, random: LinkRandom { n in
            [UInt8](repeating: draws.count.withLock { $0 += 1; return $0 }, count: n)
        })
        var rng = SplitMix64(seed: 3)
        var now: Int64 = 1_700_000_000_000
        let first = node.receive(Self.forgedInit(to: node.localAddress, mac1For: node.localAddress, timestampMs: now, rng: &rng), from: 9, now: now)
        guard case .send(let reply, to: 9) = first.first else { Issue.record("no cookie reply"); return }
        let cookie = Array(reply[25..<41])
        let withCookie = { (rng: inout SplitMix64, now: Int64) in
            Self.forgedInit(to: node.localAddress, mac1For: node.localAddress, timestampMs: now, rng: &rng, cookie: cookie)
        }
        now += 15_000
        _ = node.receive(withCookie(&rng, now), from: 9, now: now)
        #expect(node.counters.signatureRecoveries == 1, "the previous secret's cookies still count")
        now += 20_000
        _ = node.receive(withCookie(&rng, now), from: 9, now: now)
        #expect(node.counters.signatureRecoveries == 1, "two rotations later they do not")
    }

    @Test func eachSourceHostGetsABoundedShareOfHandshakeWork() {
        var config = LinkConfig()
        config.handshakesPerSecondUnderLoad = 1_000
        config.handshakeBurstPerSource = 5
        config.handshakesPerSecondPerSource = 2
        var net = LinkTestNet(count: 2, config: config)
        var rng = SplitMix64(seed: 4)
        for _ in 0..<20 {
            net.inject(Self.forgedInit(to: net.address(1), mac1For: net.address(1), timestampMs: net.now, rng: &rng), from: 9, to: 1)
        }
        #expect(net.nodes[1].counters.signatureRecoveries == 5)
        #expect(net.nodes[1].counters.rateLimited == 15)
        // Another host is not held back by the first one's flood, and the first refills.
        net.connect(0, to: 1, pinned: net.address(1))
        #expect(net.nodes[0].isUp(net.address(1)))
        net.advance(1_000)
        for _ in 0..<5 {
            net.inject(Self.forgedInit(to: net.address(1), mac1For: net.address(1), timestampMs: net.now, rng: &rng), from: 9, to: 1)
        }
        #expect(net.nodes[1].counters.signatureRecoveries == 5 + 1 + 2)
    }

    @Test func aSenderThatDoesNotFinishItsHandshakeLeavesNoPeer() {
        var config = LinkConfig()
        config.halfOpenLimit = 20
        var net = LinkTestNet(count: 2, config: config)
        var rng = SplitMix64(seed: 5)
        // Throw-away keys (a forged signature recovers some key too): each is answered, yet none finishes.
        for i in 0..<30 { Self.injectThrowAwayInit(&net, index: i + 1, from: 9, rng: &rng) }
        #expect(net.nodes[1].peerCount == 0)
        #expect(net.nodes[1].peerInfos(now: net.now).isEmpty)
        #expect(net.nodes[1].halfOpenCount == 20, "half-open entries are bounded")
        #expect(net.nodes[1].counters.rateLimited == 10)
        net.advance(config.halfOpenTimeoutMs)
        #expect(net.nodes[1].halfOpenCount == 0, "and expire")
        // A real node that completes its handshake is kept.
        net.connect(0, to: 1, pinned: net.address(1))
        #expect(net.nodes[1].peerCount == 1)
        #expect(net.nodes[1].isUp(net.address(0)))
    }

    /// A host that fills the half-open table does not lock other hosts out: its oldest entry makes room
    /// (review finding: a few hosts holding all 1,024 slots refused every honest initiation).
    @Test func aFullHalfOpenTableStillTakesAnotherHostsHandshake() {
        var config = LinkConfig()
        config.halfOpenLimit = 20
        var net = LinkTestNet(count: 2, config: config)
        var rng = SplitMix64(seed: 6)
        for i in 0..<20 { Self.injectThrowAwayInit(&net, index: i + 1, from: 9, rng: &rng) }
        #expect(net.nodes[1].halfOpenCount == 20)
        net.connect(0, to: 1, pinned: net.address(1))
        #expect(net.nodes[1].isUp(net.address(0)), "the honest host got in while the table was full")
        #expect(net.nodes[1].halfOpenCount == 19, "one of the flooding host's entries made room")
    }

    /// Hosts beyond the tracked ones share one bucket: a table of buckets filled by other hosts throttles a
    /// newcomer but does not refuse it (review finding: a full table locked every new host out).
    @Test func aFullTableOfRateLimitBucketsStillAdmitsANewHost() {
        var config = LinkConfig()
        config.rateLimitSources = 4
        var net = LinkTestNet(count: 2, config: config)
        var rng = SplitMix64(seed: 7)
        for host in 10..<14 { Self.injectThrowAwayInit(&net, index: host, from: host, rng: &rng) }
        #expect(net.nodes[1].counters.rateLimited == 0)
        net.connect(0, to: 1, pinned: net.address(1))
        #expect(net.nodes[1].isUp(net.address(0)), "a fifth host got its handshake through the shared bucket")
    }

    @Test func anUnpinnedDialLearnsTheResponderFromItsCookieReply() {
        var net = LinkTestNet(count: 2)
        net.connect(0, to: 1)
        #expect(net.nodes[0].isUp(net.address(1)))
        let inits = net.wire.compactMap { HandshakeInit(parsing: $0.bytes) }
        #expect(inits.count == 2)
        #expect(inits[0].isForAnyResponder && inits[1].responder == net.address(1).bytes)
        #expect(net.nodes[1].counters.signatureRecoveries == 1, "the initiation for any node got no signature work")
    }
}

/// Clocks too far apart for a handshake: both sides say so, with the skew.
@Suite struct ClockSkewTests {
    @Test func aHandshakeFromANodeWhoseClockIsAheadIsRefusedAndBothSidesSaySo() {
        var net = LinkTestNet(count: 2)
        net.clockOffset[0] = 150_000
        net.connect(0, to: 1, pinned: net.address(1))
        #expect(!net.nodes[0].isUp(net.address(1)))
        #expect(net.nodes[1].counters.clockSkew == 1)
        #expect(net.nodes[1].counters.signatureRecoveries == 1, "one recovery, for the log line")
        #expect(net.refused[1] == ["handshake from \(net.address(0)) refused: its clock is 150 s ahead of ours (accepted: ±120 s)"])
        #expect(net.refused[0] == ["peer \(net.address(1)) refused our handshake: our clock is 150 s ahead of its clock"])
        #expect(net.nodes[0].peerInfos(now: net.now).first?.refusal == net.refused[0]?.first)
        #expect(net.nodes[1].peerCount == 0 && net.nodes[1].halfOpenCount == 0, "no state on the refusing side")
        let refusal = net.wire.first { $0.bytes.first == LinkMessageType.refusal.rawValue }!.bytes
        #expect(refusal.count < LinkWire.initBytes, "no amplification")
        // The dial retries; each retry is refused again, but logged once a minute on either side.
        net.advance(30_000)
        #expect(net.nodes[1].counters.clockSkew > 1)
        #expect(net.refused[0]?.count == 1 && net.refused[1]?.count == 1)
        net.advance(40_000)
        #expect(net.refused[0]?.count == 2 && net.refused[1]?.count == 2)
        // Once the clock is set right, the link comes up and the refusal is no longer shown.
        net.clockOffset[0] = 0
        net.advance(10_000)
        #expect(net.nodes[0].isUp(net.address(1)))
        #expect(net.nodes[0].peerInfos(now: net.now).allSatisfy { $0.refusal == nil })
    }

    @Test func aClockBehindIsReportedAsBehind() {
        var net = LinkTestNet(count: 2)
        net.clockOffset[0] = -200_000
        net.connect(0, to: 1)
        #expect(net.refused[0] == ["peer \(net.address(1)) refused our handshake: our clock is 200 s behind its clock"])
    }

    /// Timers run on the monotonic `now`: a node whose wall clock steps 40 s ahead, then 80 s back, keeps its link
    /// (it would look silent past `deadAfterMs`, or send no ping for 40 s), and its next handshake (the rekey) is
    /// stamped with the stepped wall clock, within what the peer accepts.
    @Test func aWallClockStepMovesNoLinkTimer() {
        var net = LinkTestNet(count: 2)
        net.connect(0, to: 1, pinned: net.address(1))
        let connectedAt = net.now
        #expect(net.nodes[0].isUp(net.address(1)))
        net.clockOffset[0] = 40_000
        net.advance(15_000)
        net.clockOffset[0] = -40_000
        net.advance(15_000)
        #expect(net.downs.isEmpty)
        #expect(net.nodes[0].isUp(net.address(1)) && net.nodes[1].isUp(net.address(0)))
        let pings = net.nodes[1].peerInfos(now: net.now).first?.packetsIn ?? 0
        #expect(pings >= 28, "a ping a second from node 0 for 30 s, got \(pings) packets")
        let rekeyAt = connectedAt + LinkConfig().rekeyAfterMs
        net.advance(rekeyAt + 2_000 - net.now)
        let stamps = net.wire.compactMap { HandshakeInit(parsing: $0.bytes) }.filter { $0.responder == net.address(1).bytes }.map(\.timestampMs)
        #expect(stamps.count == 2, "the first handshake and the rekey")
        let wallAtRekey = rekeyAt - 40_000
        #expect(stamps.last.map { (wallAtRekey...wallAtRekey + 100).contains(Int64($0)) } ?? false, "the rekey carries the wall clock: \(stamps)")
        #expect(net.downs.isEmpty && net.nodes[1].counters.clockSkew == 0)
    }

    @Test func aRefusalNotTaggedWithOurInitiationsMac1IsIgnored() {
        var net = LinkTestNet(count: 2)
        net.clockOffset[0] = 150_000
        net.drop = { from, _ in from == 1 }
        net.connect(0, to: 1, pinned: net.address(1))
        var forged = net.wire.first { $0.bytes.first == LinkMessageType.refusal.rawValue }!.bytes
        forged[forged.count - 1] ^= 1
        net.inject(forged, from: 1, to: 0)
        #expect(net.refused[0] == nil)
        #expect(net.nodes[0].counters.unknownSession == 1)
    }
}
