import MeshIdentity
@testable import MeshRouting
import MeshTestKit
import Testing

/// Wallet finders on the simulator, on a graph of links, messages delivered at once and in order; `known` is what
/// each node's gossip knows.
struct FinderNet {
    var sim: MeshSimulator<FinderNode>
    let addresses: [WalletAddress]

    init(count: Int, edges: [(Int, Int)], seed: UInt64 = 1, config: WalletFinder.Config = .init()) {
        var simConfig = MeshSimulator<FinderNode>.Config()
        simConfig.seed = seed
        simConfig.startMs = 1_000_000
        simConfig.logsWire = true
        var sim = MeshSimulator<FinderNode>(config: simConfig)
        let addresses = (0..<count).map { _ in WalletAddress(bytes: sim.rng.bytes(20))! }
        self.addresses = addresses
        let links = Set(edges.map { SimLink($0.0, $0.1) })
        sim.links = links
        let directory = SimDirectory(addresses)
        for i in 0..<count {
            var node = FinderNode(WalletFinder(config: config), directory: directory)
            node.neighbours = addresses.indices.filter { links.contains(SimLink(i, $0)) && $0 != i }.map { addresses[$0] }
            sim.add(node)
        }
        self.sim = sim
    }

    /// The finders, read and driven in place.
    var finders: [WalletFinder] {
        get { sim.nodes.map(\.core) }
        set { for (i, core) in newValue.enumerated() { sim[node: i].core = core } }
    }
    /// What each node's gossip knows.
    var known: [[WalletAddress: HostAnnouncement]] {
        get { sim.nodes.map(\.known) }
        set { for (i, table) in newValue.enumerated() { sim[node: i].known = table } }
    }
    var now: Int64 { sim.nowMs }
    var found: [[WalletFinder.Action]] {
        var found = Array(repeating: [WalletFinder.Action](), count: addresses.count)
        for event in sim.events { found[event.node].append(event.action) }
        return found
    }
    /// Find messages each node sent (that were delivered).
    var finds: [Int] { sent { if case .find = $0 { true } else { false } } }
    /// Found messages each node sent (that were delivered).
    var answers: [Int] { sent { if case .find = $0 { false } else { true } } }

    private func sent(_ counts: (WalletFinder.Message) -> Bool) -> [Int] {
        var sent = Array(repeating: 0, count: addresses.count)
        for record in sim.wire where !record.lost {
            if let message = WalletFinder.Message(parsing: record.datagram), counts(message) { sent[record.from] += 1 }
        }
        return sent
    }

    mutating func find(_ wallet: WalletAddress, query: UInt64, ttl: UInt8, from i: Int) {
        let now = now
        let actions = sim[node: i].core.find(wallet, query: query, ttl: ttl, neighbours: sim.nodes[i].neighbours, now: now)
        sim.perform(actions, at: i)
        sim.run(until: now)
    }

    /// What node `j` answers to `payload` from `i`, not passed on.
    mutating func receive(_ payload: [UInt8], at j: Int, from i: Int) -> [WalletFinder.Action] {
        let now = now
        return sim[node: j].receive(payload, from: i, now: now)
    }

    mutating func advance(_ ms: Int64) { sim.run(forMs: ms) }

    static func line(_ count: Int) -> FinderNet { FinderNet(count: count, edges: (1..<count).map { ($0 - 1, $0) }) }
    static func ring(_ count: Int) -> FinderNet { FinderNet(count: count, edges: (0..<count).map { ($0, ($0 + 1) % count) }) }
}

@Suite struct WalletFinderTests {
    /// Bob's wallet, hosted at `home`, announced until 2,000 s (the nets start at 1,000 s).
    static func bob(home: WalletAddress, key: PrivateKey) -> HostAnnouncement {
        HostAnnouncement.sign(wallet: key, origin: home, sequence: 3, expiresAtS: 2_000)
    }

    @Test func findsTheWalletWithinTheTTLAndNotBeyond() {
        var rng = SplitMix64(seed: 1)
        let bobKey = rng.privateKey()
        for (ttl, reaches) in [(UInt8(3), false), (4, true), (10, true)] {
            // A line 0 … 5; only node 4 (the last but one) knows Bob.
            var net = FinderNet.line(6)
            let announcement = Self.bob(home: net.addresses[5], key: bobKey)
            net.known[4][bobKey.address] = announcement
            net.find(bobKey.address, query: 42, ttl: ttl, from: 0)
            if reaches {
                #expect(net.found[0] == [.found(query: 42, announcement)], "ttl \(ttl)")
                #expect(net.finders[4].counters.answered == 1)
                #expect(net.answers[4] == 1 && net.answers[3] == 1 && net.answers[2] == 1 && net.answers[1] == 1)
                #expect(net.finds[4] == 0 && net.finds[5] == 0, "the answering node does not ask on")
            } else {
                #expect(net.found[0].isEmpty, "ttl \(ttl)")
                #expect(net.finders[4].counters.answered == 0)
                #expect(net.finds == [1, 1, 1, 0, 0, 0], "the query went 3 links")
            }
            #expect(net.finders.allSatisfy { $0.counters.forged == 0 && $0.counters.malformed == 0 })
        }
    }

    @Test func eachNodePassesAQueryOnOnceAndTheAskerHearsOneAnswer() {
        var rng = SplitMix64(seed: 2)
        let bobKey = rng.privateKey()
        // Nobody knows: the query goes round the ring both ways; each node passes it on once.
        var net = FinderNet.ring(6)
        net.find(bobKey.address, query: 7, ttl: 20, from: 0)
        #expect(net.finds == [2, 1, 1, 1, 1, 1])
        let duplicates = net.finders.map(\.counters.duplicates).reduce(0, +)
        #expect(duplicates == net.finds.reduce(0, +) - 5, "every copy after a node's first is dropped")
        #expect(duplicates == 2)
        // The node opposite knows Bob: both copies reach it and are answered, one answer reaches the asker.
        var known = FinderNet.ring(6)
        let announcement = Self.bob(home: known.addresses[3], key: bobKey)
        known.known[3][bobKey.address] = announcement
        known.find(bobKey.address, query: 8, ttl: 20, from: 0)
        #expect(known.found[0] == [.found(query: 8, announcement)])
        #expect(known.found.dropFirst().allSatisfy { $0.isEmpty })
        #expect(known.finds[3] == 0)
        // The same query id again (from any neighbour) is a duplicate: the id is remembered.
        let again = net.receive(WalletFinder.Message.find(query: 7, wallet: bobKey.address, ttl: 5).serialize(), at: 2, from: 1)
        #expect(again.isEmpty)
        #expect(net.finders[2].counters.duplicates == 1)
    }

    @Test func forgedOrExpiredAnswersAreDroppedAndCounted() {
        var rng = SplitMix64(seed: 3)
        let bobKey = rng.privateKey(), mallory = rng.privateKey()
        var net = FinderNet.line(6)
        // Node 4 is lying: "Bob is at my place", signed with a key that is not Bob's.
        var forged = HostAnnouncement.sign(wallet: mallory, origin: net.addresses[4], sequence: 99, expiresAtS: 2_000)
        forged.wallet = bobKey.address
        net.known[4][bobKey.address] = forged
        net.find(bobKey.address, query: 1, ttl: 6, from: 0)
        #expect(net.found[0].isEmpty)
        #expect(net.finders[3].counters.forged == 1, "the first node back drops it")
        #expect(net.answers[3] == 0)
        // An announcement that expired.
        var stale = FinderNet.line(6)
        stale.known[4][bobKey.address] = HostAnnouncement.sign(wallet: bobKey, origin: stale.addresses[4], sequence: 1, expiresAtS: 999)
        stale.find(bobKey.address, query: 2, ttl: 6, from: 0)
        #expect(stale.found[0].isEmpty)
        #expect(stale.finders[3].counters.forged == 1)
    }

    @Test func answersNobodyAskedForAreDropped() {
        var rng = SplitMix64(seed: 4)
        let bobKey = rng.privateKey(), carolKey = rng.privateKey()
        var net = FinderNet.line(4)
        let bob = Self.bob(home: net.addresses[3], key: bobKey)
        // No query at all.
        #expect(net.receive(WalletFinder.Message.found(query: 5, bob).serialize(), at: 1, from: 2).isEmpty)
        #expect(net.finders[1].counters.duplicates == 1)
        // A live query for Carol (nobody knows her), answered with Bob's genuine announcement.
        net.find(carolKey.address, query: 6, ttl: 3, from: 0)
        #expect(net.receive(WalletFinder.Message.found(query: 6, bob).serialize(), at: 1, from: 2).isEmpty)
        #expect(net.finders[1].counters.duplicates == 2)
        #expect(net.receive(WalletFinder.Message.found(query: 6, bob).serialize(), at: 0, from: 1).isEmpty)
        #expect(net.found[0].isEmpty)
        // Her real answer goes through, once.
        let carol = Self.bob(home: net.addresses[3], key: carolKey)
        let first = net.receive(WalletFinder.Message.found(query: 6, carol).serialize(), at: 1, from: 2)
        #expect(first == [.send(WalletFinder.Message.found(query: 6, carol).serialize(), to: net.addresses[0])])
        #expect(net.receive(WalletFinder.Message.found(query: 6, carol).serialize(), at: 1, from: 2).isEmpty)
        // Malformed.
        for bytes: [UInt8] in [[], [0x04], [0x05, 1, 2], [0x06] + rng.bytes(40), [0x04] + rng.bytes(28)] {
            #expect(net.receive(bytes, at: 1, from: 0).isEmpty)
        }
        #expect(net.finders[1].counters.malformed == 5)
    }

    @Test func queriesAreRateLimitedPerNeighbour() {
        var rng = SplitMix64(seed: 5)
        let wallet = rng.privateKey().address
        // 0 – 1 – 2 and 3 – 1: node 0 floods node 1.
        var net = FinderNet(count: 4, edges: [(0, 1), (1, 2), (3, 1)])
        var passedOn = 0
        for query in UInt64(1)...50 {
            passedOn += net.receive(WalletFinder.Message.find(query: query, wallet: wallet, ttl: 4).serialize(), at: 1, from: 0).count
        }
        #expect(net.finders[1].counters.rateLimited == 10, "a burst of 40")
        #expect(passedOn == 80, "the 40 taken went on to nodes 2 and 3")
        // Node 3 has its own budget.
        #expect(net.receive(WalletFinder.Message.find(query: 100, wallet: wallet, ttl: 4).serialize(), at: 1, from: 3).count == 2)
        // A second later node 0 has 20 more.
        net.advance(1_000)
        var taken = 0
        for query in UInt64(200)..<230 {
            taken += net.receive(WalletFinder.Message.find(query: query, wallet: wallet, ttl: 4).serialize(), at: 1, from: 0).isEmpty ? 0 : 1
        }
        #expect(taken == 20)
        #expect(net.finders[1].counters.rateLimited == 20)
    }

    /// A query asking for more links than this node's hop limit goes no further than the limit, and a node whose
    /// memory is full of others' queries makes room rather than passing a query on unremembered (it would go round).
    @Test func queriesAreBoundedByTheLocalHopLimitAndByMemory() {
        var config = WalletFinder.Config()
        config.maxTTL = 3
        var net = FinderNet(count: 8, edges: (1..<8).map { ($0 - 1, $0) }, config: config)
        net.find(WalletAddress(bytes: Array(repeating: 7, count: 20))!, query: 1, ttl: 255, from: 0)
        #expect(net.finds == [1, 1, 1, 0, 0, 0, 0, 0], "3 links, not 255")

        config.maxTTL = 6
        config.maxRemembered = 4
        var ring = FinderNet(count: 6, edges: (0..<6).map { ($0, ($0 + 1) % 6) }, config: config)
        for query in 1...6 { ring.find(WalletAddress(bytes: Array(repeating: UInt8(query), count: 20))!, query: UInt64(query), ttl: 4, from: 0) }
        // Every query was passed on at most once by each node, however full their memories.
        #expect(ring.finds.allSatisfy { $0 <= 6 * 2 }, "\(ring.finds)")
        #expect(ring.finders.map(\.counters.duplicates).reduce(0, +) > 0, "the two ways round met: \(ring.finds)")
    }

    @Test func messagesRoundTrip() {
        var rng = SplitMix64(seed: 6)
        let key = rng.privateKey()
        let announcement = Self.bob(home: WalletAddress(bytes: rng.bytes(20))!, key: key)
        for m in [WalletFinder.Message.find(query: .max, wallet: key.address, ttl: 6), .found(query: 1, announcement)] {
            let bytes = m.serialize()
            #expect(WalletFinder.Message(parsing: bytes) == m)
            #expect(WalletFinder.Message.claims(bytes))
            #expect(WalletFinder.Message(parsing: bytes + [0]) == nil)
            for cut in 0..<bytes.count { #expect(WalletFinder.Message(parsing: Array(bytes.prefix(cut))) == nil) }
        }
    }
}
