import MeshDHT
import MeshIdentity
import MeshLink
import Testing
@testable import MeshFlood

/// The flooder's datagrams are what docs/hardening.md says they are: the node's own protocol cores parse them,
/// they pass every check an attacker can pass (size, mac1, named responder, DHT envelope), and what stops them
/// is the defence meant to (cookies and rate limits bound the signature work), not a format error. A format
/// change in MeshLink or MeshDHT makes these fail, which says the flooder needs its edit.
@Suite struct FloodTests {
    let nowMs: Int64 = 1_800_000_000_000
    let target = FloodEndpoint(ip: [127, 0, 0, 1], port: 4000)

    /// The endpoint of flood datagram `i`: 127.1.i.1, one /24 each (as mesh-flood's --sources spreads them).
    func source(_ i: Int) -> DHTEndpoint { DHTEndpoint(ip: [127, 1, UInt8(i), 1], port: 40_000)! }

    @Test func randomSignaturesParseAndEachRecoversANewKey() {
        var rng = FastRandom(seed: 1)
        let signatures = RandomSignatures()
        let digest = [UInt8](repeating: 7, count: 32)
        var keys = Set<WalletAddress>()
        for _ in 0..<1_000 {
            var bytes = [UInt8](repeating: 0, count: Signature.byteCount)
            signatures.write(into: &bytes, at: 0, rng: &rng)
            let signature = Signature(bytes: bytes)
            #expect(signature != nil)
            if let key = signature?.recoverAddress(digest: digest) { keys.insert(key) }
        }
        #expect(keys.count == 1_000)
    }

    /// 3,000 initiations over 3 s from one source, as mesh-flood sends them at 1,000/s: each one passes the
    /// size, mac1 and named-responder checks (none is malformed, macFailed or wrongResponder); the node recovers
    /// signatures only until its load meter asks for cookies, and answers the rest with cookie replies, which
    /// the blind flooder cannot use. No peer is left.
    @Test func linkInitsPassMac1AndAreStoppedByCookies() throws {
        let key = PrivateKey()
        var rng = FastRandom(seed: 2)
        var flood = try Flood(kind: .linkInit, target: target, targetNode: key.address, poolSize: 1, junkMaxBytes: 1, nowMs: nowMs, rng: &rng)
        var node = LinkManager<FloodEndpoint>(identity: key)
        let from = FloodEndpoint(ip: [127, 1, 0, 1], port: 5000)
        var answers: [UInt8: Int] = [:]
        for i in 0..<3_000 {
            let now = nowMs + Int64(i)
            for case .send(let bytes, _) in node.receive(flood.next(nowMs: now, rng: &rng), from: from, now: now) {
                answers[bytes[0], default: 0] += 1
            }
        }
        let c = node.counters
        #expect(c.malformed == 0 && c.macFailed == 0 && c.wrongResponder == 0 && c.clockSkew == 0)
        #expect(c.signatureRecoveries == node.config.handshakesPerSecondUnderLoad)
        #expect(answers[LinkMessageType.handshakeResponse.rawValue] == c.signatureRecoveries)
        #expect(c.cookieRequired == 3_000 - c.signatureRecoveries)
        #expect(answers[LinkMessageType.cookieReply.rawValue] == c.cookieRequired)
        #expect(node.peerInfos(now: nowMs + 3_000).isEmpty)
    }

    /// With the cookie stage out of the way (a node whose load threshold is never reached), the per-source
    /// rate limit bounds the same flood: the burst and then 20 a second.
    @Test func linkInitsFromOneSourceAreRateLimited() throws {
        let key = PrivateKey()
        var config = LinkConfig()
        config.handshakesPerSecondUnderLoad = .max
        var rng = FastRandom(seed: 3)
        var flood = try Flood(kind: .linkInit, target: target, targetNode: key.address, poolSize: 1, junkMaxBytes: 1, nowMs: nowMs, rng: &rng)
        var node = LinkManager<FloodEndpoint>(identity: key, config: config)
        for i in 0..<3_000 {
            let now = nowMs + Int64(i)
            _ = node.receive(flood.next(nowMs: now, rng: &rng), from: FloodEndpoint(ip: [127, 1, 0, 1], port: UInt16(5000 + i % 100)), now: now)
        }
        let c = node.counters
        #expect(c.malformed == 0 && c.macFailed == 0 && c.wrongResponder == 0 && c.cookieRequired == 0)
        let bound = config.handshakeBurstPerSource + Int(3 * config.handshakesPerSecondPerSource) + 1
        #expect((config.handshakeBurstPerSource...bound).contains(c.signatureRecoveries))
        #expect(c.rateLimited == 3_000 - c.signatureRecoveries)
    }

    /// --random-mac1: an attacker without the node's address is stopped at mac1, before anything else.
    @Test func linkInitsWithRandomMac1StopAtMac1() throws {
        let key = PrivateKey()
        var rng = FastRandom(seed: 4)
        var flood = try Flood(kind: .linkInit, target: target, targetNode: key.address, mac1: .random, poolSize: 1, junkMaxBytes: 1,
                              nowMs: nowMs, rng: &rng)
        var node = LinkManager<FloodEndpoint>(identity: key)
        var sent = 0
        for _ in 0..<500 { sent += node.receive(flood.next(nowMs: nowMs, rng: &rng), from: target, now: nowMs).count }
        #expect(node.counters.macFailed == 500)
        #expect(node.counters.signatureRecoveries == 0)
        #expect(sent == 0)
    }

    @Test func linkInitWithAValidMac1NeedsTheTargetNode() {
        var rng = FastRandom(seed: 5)
        #expect(throws: FloodError.self) {
            try Flood(kind: .linkInit, target: target, targetNode: nil, poolSize: 1, junkMaxBytes: 1, nowMs: nowMs, rng: &rng)
        }
    }

    /// FIND_NODEs from 50 /24s: every one passes the envelope checks and the rate limits, is answered with no
    /// more bytes than it carried (the sender is unverified), and its signature recovers a key of its own. None
    /// becomes a contact (contacts only after answering the node's PING).
    @Test func dhtRequestsPassTheEnvelopeChecksAndRecoverDistinctKeys() throws {
        var rng = FastRandom(seed: 6)
        var flood = try Flood(kind: .dhtRequest, target: target, targetNode: nil, poolSize: 1, junkMaxBytes: 1, nowMs: nowMs, rng: &rng)
        var node = DHTNode(identity: PrivateKey(), config: DHTConfig(), seed: 1)
        var answered = Set<DHTEndpoint>()
        var senders = Set<WalletAddress>()
        for i in 0..<50 {
            let datagram = flood.next(nowMs: nowMs, rng: &rng)
            let signed = datagram.count - Signature.byteCount
            let digest = Keccak.hash256(Array("meshdht/v1/message".utf8) + datagram[..<signed])
            if let sender = Signature(bytes: Array(datagram[signed...]))?.recoverAddress(digest: digest) { senders.insert(sender) }
            for case .send(let reply, let to) in node.receive(datagram, from: source(i), nowMs: nowMs) {
                #expect(reply.count <= datagram.count)
                answered.insert(to)
            }
        }
        #expect(node.counters.dropped == 0)
        #expect(node.counters.rateLimited == 0)
        #expect(node.counters.messagesIn == 50)
        #expect(answered == Set((0..<50).map(source)))
        #expect(senders.count == 50)
        #expect(node.contactCount == 0)
    }

    /// The store flood's records are ones a node takes: each STORE first gets a cookie (its address is unproven)
    /// and is stored once it comes back with it; a flooder that cannot receive at its addresses stores nothing.
    @Test func storesFromThrowAwayWalletsAreStoredOnceTheyEchoACookie() throws {
        var rng = FastRandom(seed: 7)
        var flood = try Flood(kind: .store, target: target, targetNode: nil, poolSize: 20, junkMaxBytes: 1, nowMs: nowMs, rng: &rng)
        var node = DHTNode(identity: PrivateKey(), config: DHTConfig(), seed: 1)
        for i in 0..<20 {
            let store = flood.next(nowMs: nowMs, rng: &rng)
            guard case .send(let bytes, _)? = node.receive(store, from: source(i), nowMs: nowMs).first,
                  let cookie = DHTWire.CookieReply(parsing: bytes)?.cookie else {
                Issue.record("a cookie reply for STORE \(i)")
                continue
            }
            #expect(node.storedRecords.count == i, "nothing stored before the cookie came back")
            _ = node.receive(DHTWire.Cookied.wrap(store, cookie: cookie), from: source(i), nowMs: nowMs)
        }
        #expect(node.counters.dropped == 0)
        #expect(node.counters.quotaExceeded == 0)
        #expect(node.counters.cookiesSent == 20)
        #expect(Set(node.storedRecords.map(\.wallet)).count == 20)
    }

    @Test func junkLengthsStayWithinTheLimit() throws {
        var rng = FastRandom(seed: 8)
        var flood = try Flood(kind: .junk, target: target, targetNode: nil, poolSize: 1, junkMaxBytes: 64, nowMs: nowMs, rng: &rng)
        let lengths = (0..<2_000).map { _ in flood.next(nowMs: nowMs, rng: &rng).count }
        #expect(lengths.allSatisfy { (1...64).contains($0) })
        #expect(Set(lengths).count == 64)
    }
}
