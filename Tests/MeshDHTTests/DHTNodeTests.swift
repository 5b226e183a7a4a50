@testable import MeshDHT
import MeshIdentity
import MeshTestKit
import Testing

/// Signed nodes end to end: joining, publishing, finding, restoring, and hostile datagrams.
@Suite struct DHTNodeTests {
    @Test func nodesJoinPublishAndFindEveryWallet() throws {
        var net = NodeNet(count: 12)
        net.joinAll()
        var random = TestRandom(seed: 5)
        let wallets = (0..<net.nodes.count).map { _ in random.key() }
        for i in net.nodes.indices {
            net.run(net.nodes[i].publish(wallet: wallets[i], endpoints: [NodeNet.endpoint(i)], relays: [], nowMs: net.now), at: i)
        }
        for i in net.nodes.indices {
            for wallet in wallets {
                let found = net.lookup(NodeID.key(for: wallet.address), from: i)
                let outcome = try #require(found)
                #expect(outcome.record?.wallet == wallet.address)
            }
        }
        // Each record sits on min(k, n) nodes (k = 20 > 12: all of them).
        for wallet in wallets {
            #expect(net.nodes.count { $0.localRecord(NodeID.key(for: wallet.address)) != nil } == net.nodes.count)
        }
        for datagram in net.wire {
            #expect(datagram.bytes.first == DHTWire.marker)
            #expect(datagram.bytes.count < 1200)
        }
        #expect(net.nodes.allSatisfy { $0.counters.dropped == 0 && $0.counters.unexpectedResponse == 0 })
        // A storing node persists before it acknowledges.
        for (_, log) in net.actionLog where log.contains("stored") {
            #expect(log[log.index(after: log.firstIndex(of: "stored")!)] == "send")
        }
    }

    @Test func aRestartedNodeAnswersFromItsStoredTableAndRecords() throws {
        var net = NodeNet(count: 6)
        net.joinAll()
        var random = TestRandom(seed: 6)
        let wallet = random.key()
        net.run(net.nodes[2].publish(wallet: wallet, endpoints: [NodeNet.endpoint(2)], relays: [], nowMs: net.now), at: 2)
        let contacts = net.nodes[3].contacts, records = net.nodes[3].storedRecords
        #expect(!contacts.isEmpty && records.count == 1)
        // Node 3 restarts with its key and what it had persisted; it knows nobody new yet.
        var restarted = DHTNode(identity: net.nodes[3].identity, config: DHTConfig(), seed: 99)
        restarted.restore(contacts: contacts, records: records, nowMs: net.now)
        net.nodes[3] = restarted
        #expect(net.nodes[3].contacts.count == contacts.count)
        net.finished = [:]
        let found = net.lookup(NodeID.key(for: wallet.address), from: 5)
        let fromOther = try #require(found)
        #expect(fromOther.record != nil)
        let (_, local) = net.nodes[3].findValue(NodeID.key(for: wallet.address), nowMs: net.now)
        guard case .lookupFinished(_, let outcome) = local.first else {
            Issue.record("a held record is answered at once")
            return
        }
        #expect(outcome.record?.wallet == wallet.address && outcome.messages == 0)
        // Its own lookups start from the restored table.
        let (_, actions) = net.nodes[3].findNode(random.id(), nowMs: net.now)
        #expect(actions.count == DHTConfig().alpha)
    }

    @Test func withdrawnRecordsAreDroppedByTheNodesThatHeldThem() throws {
        var net = NodeNet(count: 8)
        net.joinAll()
        var random = TestRandom(seed: 8)
        let wallet = random.key()
        net.run(net.nodes[1].publish(wallet: wallet, endpoints: [NodeNet.endpoint(1)], relays: [], nowMs: net.now), at: 1)
        let key = NodeID.key(for: wallet.address)
        #expect(net.nodes.allSatisfy { $0.localRecord(key) != nil })
        net.run(net.nodes[1].withdraw(wallet.address, nowMs: net.now), at: 1)
        #expect(net.nodes.allSatisfy { $0.localRecord(key) == nil })
        #expect(net.dropped.values.count { $0.contains(key) } == net.nodes.count)
        let after = net.lookup(key, from: 4)
        #expect(try #require(after).record == nil)
    }

    @Test func garbageMutatedReplayedAndStaleDatagramsAreDroppedAndCounted() {
        var net = NodeNet(count: 5)
        net.joinAll()
        var random = TestRandom(seed: 9)
        let wallet = random.key()
        net.run(net.nodes[1].publish(wallet: wallet, endpoints: [NodeNet.endpoint(1)], relays: [], nowMs: net.now), at: 1)
        let victim = 4
        let samples = net.wire.filter { $0.to == victim }.map(\.bytes)
        let requests = net.wire.filter { $0.to == victim && DHTWire.open($0.bytes)?.packet.message.isResponse == false }
        let recordsBefore = net.nodes[victim].storedRecords
        var rng = SplitMix64(seed: 10)
        var sent = 0
        for round in 0..<2_000 {
            var bytes = samples[Int.random(in: 0..<samples.count, using: &rng)]
            switch round % 5 {
            case 0: bytes = rng.bytes(Int.random(in: 0..<1300, using: &rng))
            case 1: bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &rng)))
            case 2:
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            case 3: bytes += rng.bytes(Int.random(in: 1...40, using: &rng))
            default: bytes[0] = DHTWire.marker; bytes[2] = UInt8.random(in: 0...12, using: &rng)
            }
            net.inject(bytes, from: 3, to: victim)
            sent += 1
        }
        let c = net.nodes[victim].counters
        #expect(c.malformed + c.badSignature + c.staleTimestamp + c.replayed > sent / 2)
        #expect(net.nodes[victim].storedRecords == recordsBefore)

        // A request seen before is dropped.
        let replays = net.nodes[victim].counters.replayed
        net.inject(requests[0].bytes, from: requests[0].from, to: victim)
        #expect(net.nodes[victim].counters.replayed == replays + 1)
        // A datagram signed more than a minute ago is dropped.
        net.now += 61_000
        let stale = net.nodes[victim].counters.staleTimestamp
        net.inject(samples[0], from: 0, to: victim)
        #expect(net.nodes[victim].counters.staleTimestamp == stale + 1)
    }

    /// Found by the `dht` fuzz target (Fuzz/Regressions/dht/skew-overflow): a timestamp 2^63 ms before the
    /// receiver's clock made the skew Int64.min, whose `abs` traps, so one datagram, unsigned even, stopped the node.
    @Test func timestampsAtTheEndsOfTheIntegerRangeAreStaleNotACrash() {
        let now: Int64 = 1_800_000_000_000
        var random = TestRandom(seed: 13)
        var node = DHTNode(identity: random.key(), config: DHTConfig(), seed: 1)
        let sender = random.key()
        let timestamps = [Int64.min &+ now, Int64.min, Int64.max, now &- Int64.max]
        for (txid, timestamp) in timestamps.enumerated() {
            let datagram = DHTWire.seal(DHTPacket(txid: UInt64(txid), message: .ping), timestampMs: timestamp, identity: sender)
            #expect(node.receive(datagram, from: endpoint("10.0.0.2:4460"), nowMs: now).isEmpty)
        }
        #expect(node.counters.staleTimestamp == timestamps.count)
    }

    @Test func aForgedRecordIsRefusedAndCounted() {
        var net = NodeNet(count: 3)
        net.joinAll()
        var random = TestRandom(seed: 12)
        var forged = PresenceRecord.make(wallet: random.key(), homeNode: net.nodes[0].localID, endpoints: [], relays: [],
                                         sequence: 1, expiresAtMs: net.now + 60_000)
        forged.endpoints = [endpoint("66.6.6.6:6")]
        let attacker = random.key()
        let datagram = DHTWire.seal(DHTPacket(txid: 1, message: .store(forged)), timestampMs: net.now, identity: attacker)
        net.inject(datagram, from: 0, to: 2)
        #expect(net.nodes[2].counters.refusedRecords[.badSignature] == 1)
        #expect(net.nodes[2].storedRecords.isEmpty)
    }

    @Test func aFullNodesReplyWithTwentyIPv6ContactsFitsWellUnder1200Bytes() {
        var random = TestRandom(seed: 13)
        let contacts = (0..<20).map { i in
            Contact(id: random.id(), endpoint: DHTEndpoint(ip: [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 7, count: 11) + [UInt8(i)], port: 9)!)
        }
        let datagram = DHTWire.seal(DHTPacket(txid: 1, message: .nodes(contacts)), timestampMs: t0, identity: random.key())
        #expect(datagram.count == 1_105)
        #expect(DHTWire.open(datagram)?.packet.message == .nodes(contacts))
    }
}
