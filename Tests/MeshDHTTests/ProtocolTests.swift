@testable import MeshDHT
import MeshIdentity
import MeshTestKit
import Testing

/// The message-level core with hand-made packets: store rules, republish, renewal, expiry, withdrawal.
@Suite struct ProtocolTests {
    var random = TestRandom(seed: 31)

    func sender(_ i: Int, _ id: NodeID) -> Contact { Contact(id: id, endpoint: DHTEndpoint(ip: [10, 1, 0, UInt8(i)], port: 1)!) }

    func sends(_ actions: [DHTProtocolAction]) -> [(DHTPacket, DHTEndpoint)] {
        actions.compactMap { if case .send(let p, let to) = $0 { (p, to) } else { nil } }
    }

    mutating func store(_ record: PresenceRecord, on node: inout DHTProtocol, from peer: Contact, now: Int64 = t0)
        -> (StoreResult?, [DHTProtocolAction])
    {
        let actions = node.handle(DHTPacket(txid: random.rng.next(), message: .store(record)), from: peer, nowMs: now)
        let result = sends(actions).compactMap { if case .stored(let r) = $0.0.message { r } else { nil } }.first
        return (result, actions)
    }

    @Test mutating func higherSequenceReplacesLowerAndStaleOrInvalidAreRefusedAndCounted() {
        var node = DHTProtocol(localID: random.id(), config: DHTConfig(), seed: 1)
        let peer = sender(1, random.id())
        let wallet = random.key(), home = random.id()
        let make = { (seq: UInt64, expiry: Int64) in
            PresenceRecord.make(wallet: wallet, homeNode: home, endpoints: [endpoint("45.1.2.3:4460")], relays: [],
                                sequence: seq, expiresAtMs: expiry)
        }
        let r5 = make(5, t0 + 600_000)
        let (first, actions) = store(r5, on: &node, from: peer)
        #expect(first == .stored)
        // The record is handed over for persisting before the acknowledgement goes out.
        guard case .recordStored(let kept) = actions.first, case .send = actions.last else {
            Issue.record("expected recordStored, then the acknowledgement: \(actions)")
            return
        }
        #expect(kept == r5)
        #expect(store(r5, on: &node, from: peer).0 == .stored)
        #expect(store(make(4, t0 + 900_000), on: &node, from: peer).0 == .stale)
        #expect(node.localRecord(r5.key) == r5)
        let r6 = make(6, t0 + 900_000)
        #expect(store(r6, on: &node, from: peer).0 == .stored)
        #expect(node.localRecord(r5.key) == r6)

        var forged = make(7, t0 + 900_000)
        forged.endpoints = [endpoint("66.6.6.6:1")]
        #expect(store(forged, on: &node, from: peer).0 == .refused(.badSignature))
        #expect(store(make(8, t0 + 25 * 3_600_000), on: &node, from: peer).0 == .refused(.expiryTooFarAhead))
        #expect(store(make(9, t0 - 1), on: &node, from: peer).0 == .refused(.expired))
        #expect(node.counters.refusedRecords == [.badSignature: 1, .expiryTooFarAhead: 1, .expired: 1])
        #expect(node.localRecord(r5.key) == r6)
    }

    @Test mutating func aFullStoreRefusesNewKeys() {
        var config = DHTConfig()
        config.maxStoredRecords = 2
        var node = DHTProtocol(localID: random.id(), config: config, seed: 1)
        let peer = sender(1, random.id())
        let records = (0..<3).map { _ in
            PresenceRecord.make(wallet: random.key(), homeNode: random.id(), endpoints: [], relays: [], sequence: 1,
                                expiresAtMs: t0 + 60_000)
        }
        #expect(store(records[0], on: &node, from: peer).0 == .stored)
        #expect(store(records[1], on: &node, from: peer).0 == .stored)
        #expect(store(records[2], on: &node, from: peer).0 == .full)
        #expect(node.counters.storeFull == 1)
    }

    @Test mutating func expiredRecordsAreNotServedAndAreDroppedByTick() {
        var config = DHTConfig()
        config.maintenanceIntervalMs = 1_000
        var node = DHTProtocol(localID: random.id(), config: config, seed: 1)
        node.restore(contacts: [], records: [], nowMs: t0)
        let peer = sender(1, random.id())
        let r = PresenceRecord.make(wallet: random.key(), homeNode: random.id(), endpoints: [], relays: [], sequence: 1,
                                    expiresAtMs: t0 + 1_500)
        _ = store(r, on: &node, from: peer)
        let asked = node.handle(DHTPacket(txid: 1, message: .findValue(key: r.key)), from: peer, nowMs: t0 + 1_600)
        #expect(sends(asked).first?.0.message == .nodes([]))
        let ticked = node.tick(nowMs: t0 + 2_000)
        #expect(ticked.contains { if case .recordDropped(let key) = $0 { key == r.key } else { false } })
        #expect(node.localRecord(r.key) == nil)
    }

    @Test mutating func withdrawalIsHonouredOnlyFromTheHomeNodeForTheCurrentSequence() {
        var node = DHTProtocol(localID: random.id(), config: DHTConfig(), seed: 1)
        let home = sender(1, random.id()), other = sender(2, random.id())
        let r = PresenceRecord.make(wallet: random.key(), homeNode: home.id, endpoints: [], relays: [], sequence: 3,
                                    expiresAtMs: t0 + 60_000)
        _ = store(r, on: &node, from: other)
        _ = node.handle(DHTPacket(txid: 1, message: .withdraw(key: r.key, sequence: 3)), from: other, nowMs: t0)
        _ = node.handle(DHTPacket(txid: 2, message: .withdraw(key: r.key, sequence: 2)), from: home, nowMs: t0)
        #expect(node.localRecord(r.key) == r)
        let actions = node.handle(DHTPacket(txid: 3, message: .withdraw(key: r.key, sequence: 3)), from: home, nowMs: t0)
        #expect(node.localRecord(r.key) == nil)
        #expect(actions.contains { if case .recordDropped = $0 { true } else { false } })
        // The withdrawn sequence cannot be stored again (a replay), a newer one can.
        #expect(store(r, on: &node, from: other).0 == .stale)
    }

    @Test mutating func responsesNobodyAskedForAreCountedAndIgnored() {
        var node = DHTProtocol(localID: random.id(), config: DHTConfig(), seed: 1)
        let peer = sender(1, random.id())
        _ = node.handle(DHTPacket(txid: 99, message: .nodes([])), from: peer, nowMs: t0)
        _ = node.handle(DHTPacket(txid: 98, message: .pong(observed: peer.endpoint)), from: peer, nowMs: t0)
        #expect(node.counters.unexpectedResponse == 2)
        #expect(node.contacts.isEmpty)
        // A response from another endpoint than the request went to is not accepted either.
        let (_, actions) = node.findNode(random.id(), nowMs: t0)
        #expect(sends(actions).isEmpty)
        node.restore(contacts: [peer], records: [], nowMs: t0)
        let (_, sent) = node.findNode(random.id(), nowMs: t0)
        let request = sends(sent)[0].0
        _ = node.handle(DHTPacket(txid: request.txid, message: .nodes([])), from: sender(9, peer.id), nowMs: t0)
        #expect(node.counters.unexpectedResponse == 3)
    }

    @Test mutating func ownRecordsAreRepublishedAndRenewedBeforeExpiry() {
        var config = DHTConfig()
        config.maintenanceIntervalMs = 1_000
        config.republishMs = 10_000
        config.recordTTLms = 60_000
        config.renewBeforeMs = 20_000
        config.maxFailures = 1_000
        var node = DHTProtocol(localID: random.id(), config: config, seed: 1)
        let wallet = random.key()
        node.restore(contacts: [sender(1, random.id())], records: [], nowMs: t0)
        _ = node.publish(wallet: wallet, endpoints: [endpoint("45.0.0.1:1")], relays: [], nowMs: t0)
        let first = node.publishedRecords[0]
        #expect(first.sequence == UInt64(t0))
        #expect(first.expiresAtMs == t0 + 60_000)
        func findNodes(_ actions: [DHTProtocolAction]) -> Int {
            sends(actions).count { if case .findNode(let t) = $0.0.message { t == first.key } else { false } }
        }
        var republishes = 0
        var now = t0
        while now < t0 + 39_000 {
            now += 1_000
            republishes += findNodes(node.tick(nowMs: now))
        }
        // Every 10 s: at 10, 20, 30 s.
        #expect(republishes == 3)
        #expect(node.publishedRecords[0] == first)
        now += 1_000
        let renewal = node.tick(nowMs: now)
        let renewed = node.publishedRecords[0]
        #expect(findNodes(renewal) == 1)
        #expect(renewed.sequence > first.sequence)
        #expect(renewed.expiresAtMs == now + 60_000)
        #expect(renewed.validate(nowMs: now, config: config) == nil)
    }

    @Test mutating func lookupsAskedWhileJoiningWaitForTheBootstrapAnswer() {
        let helper = sender(1, random.id()), other = sender(2, random.id())
        var node = DHTProtocol(localID: random.id(), config: DHTConfig(), seed: 1)
        let bootstrap = sends(node.bootstrap([helper.endpoint], nowMs: t0))
        #expect(bootstrap.count == 1 && bootstrap[0].0.message == .findNode(target: node.localID))
        let key = random.id()
        let (_, parked) = node.findValue(key, nowMs: t0)
        #expect(parked.isEmpty)
        // The answer (from an id nobody knew yet) seeds the waiting lookups: both the join and the value lookup.
        let answer = DHTPacket(txid: bootstrap[0].0.txid, message: .nodes([other]))
        let asked = sends(node.handle(answer, from: helper, nowMs: t0 + 50)).map(\.0.message)
        #expect(asked.contains(.findValue(key: key)))
        #expect(asked.contains(.findNode(target: node.localID)))
        #expect(node.contacts == [helper])

        // Without an answer, waiting lookups end (empty) when the bootstrap request times out.
        var lonely = DHTProtocol(localID: random.id(), config: DHTConfig(), seed: 2)
        _ = lonely.bootstrap([helper.endpoint], nowMs: t0)
        let (waiting, _) = lonely.findValue(key, nowMs: t0)
        let ended = lonely.tick(nowMs: t0 + DHTConfig().requestTimeoutMs)
        #expect(ended.contains { if case .lookupFinished(let finished, let outcome) = $0 { finished == waiting && outcome.record == nil } else { false } })
    }

    /// A bootstrap endpoint that is not listening yet is asked again, with growing jittered waits, until it
    /// answers and the own-id lookup through it gets answers; then the node counts as joined.
    @Test mutating func bootstrapIsRetriedWithBackoffUntilAnsweredAndJoined() {
        let config = DHTConfig()
        var node = DHTProtocol(localID: random.id(), config: config, seed: 5)
        let target = sender(9, random.id())
        var asked: [Int64] = []
        func record(_ actions: [DHTProtocolAction], at now: Int64) -> [DHTPacket] {
            let toTarget = sends(actions).filter { $0.1 == target.endpoint }.map(\.0)
            asked += toTarget.filter { $0.message == .findNode(target: node.localID) }.map { _ in now }
            return toTarget
        }
        _ = record(node.bootstrap([target.endpoint], nowMs: t0), at: t0)
        var now = t0
        while now < t0 + 60_000 {
            now += 100
            _ = record(node.tick(nowMs: now), at: now)
        }
        let gaps = zip(asked.dropFirst(), asked).map { $0 - $1 }
        #expect(asked.count >= 5 && asked.count <= 12, "asked at \(asked.map { $0 - t0 })")
        #expect(gaps.allSatisfy { $0 >= config.joinRetryMinMs / 2 && $0 <= config.joinRetryMaxMs + 100 })
        #expect(gaps.last! > gaps.first!)
        #expect(!node.isJoined)

        // The target comes up and answers the next attempt; the own-id lookup asks it too and the node is joined.
        var answered = false
        while !node.isJoined && now < t0 + 120_000 {
            now += 100
            var requests = record(node.tick(nowMs: now), at: now)
            while let request = requests.popLast() {
                answered = true
                requests += record(node.handle(DHTPacket(txid: request.txid, message: .nodes([])), from: target, nowMs: now), at: now)
            }
        }
        #expect(answered && node.isJoined && node.contactCount == 1)
    }

    func padded(_ message: DHTMessage, txid: UInt64) -> DHTPacket {
        DHTPacket(txid: txid, message: message, padding: DHTWire.padding(for: message))
    }

    /// Answers to `peer` PINGed for verification, answered with a PONG (it then counts as verified there).
    mutating func verify(_ peer: Contact, on node: inout DHTProtocol, now: Int64) {
        let pings = sends(node.handle(padded(.findNode(target: random.id()), txid: random.rng.next()), from: peer, nowMs: now))
            .filter { $0.0.message == .ping && $0.1 == peer.endpoint }
        for ping in pings { _ = node.handle(DHTPacket(txid: ping.0.txid, message: .pong(observed: peer.endpoint)), from: peer, nowMs: now) }
    }

    /// A requester enters the table only after answering a PING of ours; a flood of requests under fresh ids
    /// from an address that never answers adds nothing.
    @Test mutating func requestersEnterTheTableOnlyAfterAnsweringOurPing() {
        var node = DHTProtocol(localID: random.id(), config: DHTConfig(), seed: 1)
        let peer = sender(2, random.id())
        let pings = sends(node.handle(padded(.findNode(target: random.id()), txid: 1), from: peer, nowMs: t0))
            .filter { $0.0.message == .ping }
        #expect(node.contactCount == 0)
        #expect(pings.count == 1 && pings.first?.1 == peer.endpoint)
        _ = node.handle(DHTPacket(txid: pings[0].0.txid, message: .pong(observed: peer.endpoint)), from: peer, nowMs: t0 + 20)
        #expect(node.contacts == [peer])

        for i in 0..<500 {
            _ = node.handle(padded(.findNode(target: random.id()), txid: UInt64(100 + i)), from: sender(3, random.id()), nowMs: t0 + 100)
        }
        _ = node.tick(nowMs: t0 + 5_000)
        #expect(node.contacts == [peer])
        // At most `maxPendingVerifications` PINGs were in flight for them.
        #expect(node.counters.timeouts <= DHTConfig().maxPendingVerifications)
    }

    /// FIND_NODE / FIND_VALUE from an address the node has not verified (a spoofed source) are answered with no
    /// more bytes than the request carried; padded requests and verified senders get the whole answer.
    @Test mutating func unverifiedAddressesGetNoMoreBytesThanTheySent() {
        var node = DHTProtocol(localID: random.id(), config: DHTConfig(), seed: 1)
        let friend = sender(60, random.id())
        verify(friend, on: &node, now: t0)
        #expect(node.contacts == [friend])
        let contacts = (0..<60).map { Contact(id: random.id(), endpoint: DHTEndpoint(ip: [45, 0, UInt8($0), 1], port: 4460)!) }
        node.restore(contacts: contacts, records: [], nowMs: t0)
        let wallet = random.key()
        let record = PresenceRecord.make(wallet: wallet, homeNode: random.id(), endpoints: [endpoint("45.1.2.3:4460")],
                                         relays: [], sequence: 1, expiresAtMs: t0 + 600_000)
        #expect(store(record, on: &node, from: sender(9, random.id())).0 == .stored)

        func ratio(_ request: DHTPacket, from peer: Contact) -> (Double, DHTMessage?) {
            let replies = sends(node.handle(request, from: peer, nowMs: t0)).filter { $0.1 == peer.endpoint }
            let bytes = replies.reduce(0) { $0 + DHTWire.size(of: $1.0) }
            return (Double(bytes) / Double(DHTWire.size(of: request)), replies.first { $0.0.message.isResponse }?.0.message)
        }
        let victim = sender(50, random.id())
        let (findNode, nodesAnswer) = ratio(DHTPacket(txid: 1, message: .findNode(target: random.id())), from: victim)
        let (findValue, valueAnswer) = ratio(DHTPacket(txid: 2, message: .findValue(key: record.key)), from: victim)
        #expect(findNode <= 1.0 && findValue <= 1.0, "amplification \(findNode), \(findValue)")
        if case .value = valueAnswer { Issue.record("a VALUE went to an unverified, unpadded request") }
        #expect(node.counters.trimmedReplies >= 2)
        if case .nodes(let list) = nodesAnswer { #expect(list.isEmpty) } else { Issue.record("no NODES: \(String(describing: nodesAnswer))") }

        // A padded request gets all k contacts, and the record.
        let (_, full) = ratio(padded(.findNode(target: random.id()), txid: 3), from: victim)
        if case .nodes(let list) = full { #expect(list.count == 20) } else { Issue.record("no NODES: \(String(describing: full))") }
        let (_, value) = ratio(padded(.findValue(key: record.key), txid: 4), from: victim)
        #expect(value == .value(record))

        // A verified sender gets the whole answer to an unpadded request, but not at another (spoofed) address.
        let (_, friendly) = ratio(DHTPacket(txid: 5, message: .findNode(target: random.id())), from: friend)
        if case .nodes(let list) = friendly { #expect(list.count == 20) } else { Issue.record("no NODES for a verified sender") }
        let spoofed = Contact(id: friend.id, endpoint: victim.endpoint)
        #expect(ratio(DHTPacket(txid: 6, message: .findNode(target: random.id())), from: spoofed).0 <= 1.0)
    }

    /// Per-node and per-prefix storage quotas, and a full store that still takes a wallet from a source
    /// holding less, by evicting from the source prefix holding the most.
    @Test mutating func storageQuotasHoldAndAFullStoreStillTakesNewWallets() {
        var config = DHTConfig()
        config.maxStoredRecords = 30
        config.maxRecordsPerNode = 10
        config.maxRecordsPerPrefix = 25
        var node = DHTProtocol(localID: random.id(), config: config, seed: 1)
        let make = { (wallet: PrivateKey) in
            PresenceRecord.make(wallet: wallet, homeNode: NodeID(publicKey: wallet.publicKey), endpoints: [], relays: [],
                                sequence: 1, expiresAtMs: t0 + 600_000)
        }
        // One node id: ten records, then "full".
        let spammer = sender(1, random.id())
        let single = (0..<11).map { _ in store(make(random.key()), on: &node, from: spammer).0 }
        #expect(single.prefix(10).allSatisfy { $0 == .stored } && single.last == .full)
        // Fresh node ids in the same /24 (10.1.0.0/24): 15 more, then "full".
        let sybils = (0..<20).map { i in store(make(random.key()), on: &node, from: sender(2 + i, random.id())).0 }
        #expect(sybils.count { $0 == .stored } == 15)
        #expect(node.counters.quotaExceeded == 6)
        // Another prefix fills the store.
        let other = Contact(id: random.id(), endpoint: endpoint("45.7.7.7:4460"))
        #expect((0..<5).allSatisfy { _ in store(make(random.key()), on: &node, from: other).0 == .stored })
        #expect(node.storedRecords.count == 30)
        // A new wallet from a third prefix is stored: a record of the heaviest prefix (10.1.0.0/24) makes room.
        let honest = make(random.key())
        #expect(store(honest, on: &node, from: Contact(id: random.id(), endpoint: endpoint("81.2.3.4:4460"))).0 == .stored)
        #expect(node.localRecord(honest.key) == honest && node.storedRecords.count == 30)
        #expect(node.counters.evicted == 1)
        // The prefix holding the most cannot make room by evicting the others: "full".
        #expect(store(make(random.key()), on: &node, from: sender(40, random.id())).0 == .full)
    }

    /// A STORE that will be refused anyway (at or below the held sequence, or over the sender's quota) is
    /// answered before the record's signature is checked: a forged record there costs no signature work.
    @Test mutating func staleAndOverQuotaStoresAreRefusedBeforeTheSignatureIsChecked() {
        var config = DHTConfig()
        config.maxRecordsPerNode = 1
        var node = DHTProtocol(localID: random.id(), config: config, seed: 1)
        let peer = sender(1, random.id())
        let wallet = random.key()
        let held = PresenceRecord.make(wallet: wallet, homeNode: peer.id, endpoints: [], relays: [], sequence: 5,
                                       expiresAtMs: t0 + 600_000)
        #expect(store(held, on: &node, from: peer).0 == .stored)
        var forgedOld = held
        forgedOld.sequence = 4
        #expect(store(forgedOld, on: &node, from: peer).0 == .stale)
        var forgedNew = PresenceRecord.make(wallet: random.key(), homeNode: peer.id, endpoints: [], relays: [], sequence: 1,
                                            expiresAtMs: t0 + 600_000)
        forgedNew.sequence = 2
        #expect(store(forgedNew, on: &node, from: peer).0 == .full)
        #expect(node.counters.refusedRecords.isEmpty && node.counters.quotaExceeded == 1)
    }
}
