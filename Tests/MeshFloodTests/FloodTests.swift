import MeshDHT
import MeshIdentity
import MeshLink
import Testing
@testable import MeshFlood

/// The flooder's datagrams are what docs/hardening.md says they are: the node's own protocol cores parse them,
/// pass their envelope checks and answer them, and every signature stands for a new identity. A format change in
/// MeshLink or MeshDHT makes these fail, which says the flooder needs its edit.
@Suite struct FloodTests {
    let nowMs: Int64 = 1_800_000_000_000
    let port: UInt16 = 4000

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

    @Test func linkInitsAreAnsweredAsNewInitiators() throws {
        var rng = FastRandom(seed: 2)
        var flood = try Flood(kind: .linkInit, targetPort: port, poolSize: 1, junkMaxBytes: 1, nowMs: nowMs, rng: &rng)
        var node = LinkManager<UInt16>(identity: PrivateKey())
        var responses = 0
        for i in 0..<50 {
            let actions = node.receive(flood.next(nowMs: nowMs, rng: &rng), from: UInt16(5000 + i), now: nowMs)
            responses += actions.filter { if case .send = $0 { true } else { false } }.count
        }
        #expect(node.counters.dropped == 0)
        #expect(responses == 50)
        #expect(node.peerInfos(now: nowMs).count == 50)
    }

    @Test func dhtRequestsPassTheEnvelopeChecksAndAreAnswered() throws {
        var rng = FastRandom(seed: 3)
        var flood = try Flood(kind: .dhtRequest, targetPort: port, poolSize: 1, junkMaxBytes: 1, nowMs: nowMs, rng: &rng)
        var node = DHTNode(identity: PrivateKey(), config: DHTConfig(), seed: 1)
        var answered = Set<DHTEndpoint>()
        for i in 0..<50 {
            for case .send(_, let to) in node.receive(flood.next(nowMs: nowMs, rng: &rng), from: source(i), nowMs: nowMs) {
                answered.insert(to)
            }
        }
        #expect(node.counters.dropped == 0)
        #expect(node.counters.messagesIn == 50)
        #expect(answered == Set((0..<50).map(source)))
    }

    @Test func storesFromThrowAwayWalletsAreStored() throws {
        var rng = FastRandom(seed: 4)
        var flood = try Flood(kind: .store, targetPort: port, poolSize: 20, junkMaxBytes: 1, nowMs: nowMs, rng: &rng)
        var node = DHTNode(identity: PrivateKey(), config: DHTConfig(), seed: 1)
        for i in 0..<20 { _ = node.receive(flood.next(nowMs: nowMs, rng: &rng), from: source(i), nowMs: nowMs) }
        #expect(node.counters.dropped == 0)
        #expect(Set(node.storedRecords.map(\.wallet)).count == 20)
    }

    @Test func junkLengthsStayWithinTheLimit() throws {
        var rng = FastRandom(seed: 5)
        var flood = try Flood(kind: .junk, targetPort: port, poolSize: 1, junkMaxBytes: 64, nowMs: nowMs, rng: &rng)
        let lengths = (0..<2_000).map { _ in flood.next(nowMs: nowMs, rng: &rng).count }
        #expect(lengths.allSatisfy { (1...64).contains($0) })
        #expect(Set(lengths).count == 64)
    }
}
