import MeshIdentity
@testable import MeshRouting
import MeshTestKit
import Testing

/// Gossip engines on the simulator: messages cross only the links in the graph, at once and in order; each call
/// runs the network until nothing is left to deliver at the current time.
struct GossipNet {
    var sim: MeshSimulator<GossipNode>
    var addresses: [WalletAddress]
    var walletKeys: [PrivateKey]
    var wallets: [WalletAddress] { walletKeys.map(\.address) }

    /// With `announceNodes` every node also announces itself (its node key's address is its address).
    init(count: Int, radius: UInt8 = 2, announceNodes: Bool = false) {
        let nodeKeys = (0..<count).map { _ in PrivateKey() }
        addresses = nodeKeys.map(\.address)
        walletKeys = (0..<count).map { _ in PrivateKey() }
        var config = GossipConfig()
        config.radius = radius
        var simConfig = MeshSimulator<GossipNode>.Config()
        simConfig.startMs = 0
        simConfig.earlyTickCheck = .everyInput
        sim = MeshSimulator(config: simConfig)
        sim.links = []
        let directory = SimDirectory(addresses)
        for i in 0..<count {
            let engine = GossipEngine(local: addresses[i], hosted: [walletKeys[i]], nodeKey: announceNodes ? nodeKeys[i] : nil,
                                      sequence: 1, config: config, nowMs: 0)
            sim.add(GossipNode(engine, directory: directory))
        }
    }

    /// The engines, read and driven in place.
    var nodes: [GossipEngine] {
        get { sim.nodes.map(\.core) }
        set { for (i, core) in newValue.enumerated() { sim[node: i].core = core } }
    }

    var now: Int64 { sim.nowMs }
    /// Messages delivered so far.
    var messages: Int { sim.datagramsDelivered }
    /// The links messages cross.
    var links: Set<SimLink> {
        get { sim.links ?? [] }
        set { sim.links = newValue }
    }

    func index(of address: WalletAddress) -> Int { addresses.firstIndex(of: address)! }

    mutating func deliver(_ actions: [GossipAction], from i: Int) {
        sim.perform(actions, at: i)
        sim.run(until: now)
        checkTicks()
    }

    mutating func link(_ i: Int, _ j: Int, cost: UInt16 = 10) {
        links.insert(SimLink(i, j))
        let now = now
        let a = sim[node: i].core.neighbourUp(addresses[j], cost: cost, nowMs: now)
        let b = sim[node: j].core.neighbourUp(addresses[i], cost: cost, nowMs: now)
        deliver(a, from: i)
        deliver(b, from: j)
    }

    mutating func unlink(_ i: Int, _ j: Int) {
        links.remove(SimLink(i, j))
        let now = now
        deliver(sim[node: i].core.neighbourDown(addresses[j], nowMs: now), from: i)
        deliver(sim[node: j].core.neighbourDown(addresses[i], nowMs: now), from: j)
    }

    /// Every tick the simulator's check found acting before the node's deadline is a test issue.
    private mutating func checkTicks() {
        for fault in sim.takeEarlyTickFaults() { Issue.record(Comment(rawValue: fault)) }
    }

    /// Advances virtual time, each node ticked at its deadlines.
    mutating func advance(_ ms: Int64) {
        sim.run(forMs: ms)
        checkTicks()
    }
}

@Suite struct GossipTests {
    @Test func routesSpreadWithinTheRadius() {
        // A line 0 - 1 - 2 - 3.
        var net = GossipNet(count: 4)
        net.link(0, 1)
        net.link(1, 2)
        net.link(2, 3)
        #expect(net.nodes[1].route(to: net.wallets[0])?.hops == 1)
        #expect(net.nodes[2].route(to: net.wallets[0])?.hops == 2)
        #expect(net.nodes[2].nextHop(to: net.wallets[0]) == net.addresses[1])
        #expect(net.nodes[3].route(to: net.wallets[0]) == nil, "radius 2 stops at two hops")
        #expect(net.nodes[0].route(to: net.wallets[0])?.hops == 0)
        #expect(net.nodes[2].route(to: net.wallets[0])?.origin == net.addresses[0])
        #expect(net.nodes[2].route(to: net.wallets[0])?.metric == 20)
    }

    @Test func nodesAreKnownToNodeRadiusWalletsToRadius() {
        // A line 0 – 1 – … – 7, node routes to 6 links (the default node radius), wallets to 2.
        var net = GossipNet(count: 8, announceNodes: true)
        #expect(net.nodes[0].config.nodeRadius == 6)
        for i in 1..<8 { net.link(i - 1, i) }
        for i in 0..<8 {
            for j in 0..<8 where j != i {
                let distance = abs(i - j)
                let towardJ = net.addresses[j > i ? i + 1 : i - 1]
                let routes = net.nodes[i].neighbourRoutes(to: net.addresses[j])
                if distance <= 6 {
                    #expect(routes.map(\.via) == [towardJ], "node \(i) to node \(j)")
                    #expect(routes.map(\.links) == [distance], "node \(i) to node \(j)")
                    #expect(routes.map(\.metric) == [10 * distance], "node \(i) to node \(j)")
                    #expect(net.nodes[i].route(to: net.addresses[j])?.hops == UInt8(distance))
                    #expect(net.nodes[i].nextHop(to: net.addresses[j]) == towardJ)
                } else {
                    #expect(routes.isEmpty, "node \(i) to node \(j), 7 links away")
                    #expect(net.nodes[i].route(to: net.addresses[j]) == nil)
                }
                // Wallets still travel two links only.
                #expect((net.nodes[i].route(to: net.wallets[j]) != nil) == (distance <= 2), "node \(i) to wallet \(j)")
                #expect(net.nodes[i].neighbourRoutes(to: net.wallets[j]).isEmpty == (distance > 2), "node \(i) to wallet \(j)")
            }
        }
        #expect(net.nodes[0].routes(nowMs: net.now).filter { $0.kind == "node" }.count == 1 + 6, "itself and the 6 others in reach")
        #expect(net.nodes[3].routes(nowMs: net.now).filter { $0.kind == "node" }.count == 8)
        // A cut withdraws node routes beyond it.
        net.unlink(3, 4)
        #expect(net.nodes[0].neighbourRoutes(to: net.addresses[4]).isEmpty)
        #expect(net.nodes[7].neighbourRoutes(to: net.addresses[3]).isEmpty)
        #expect(net.nodes[0].neighbourRoutes(to: net.addresses[3]).map(\.links) == [3])
    }

    @Test func neighbourRoutesListEveryNeighboursWayBestFirst() {
        // A ring of 6: every node reaches the opposite node both ways, 3 links each; the cheaper side first.
        var net = GossipNet(count: 6, announceNodes: true)
        for i in 0..<6 { net.link(i, (i + 1) % 6, cost: i == 0 ? 5 : 10) }
        let routes = net.nodes[0].neighbourRoutes(to: net.addresses[3])
        #expect(routes.map(\.via) == [net.addresses[1], net.addresses[5]])
        #expect(routes.map(\.links) == [3, 3])
        #expect(routes.map(\.metric) == [25, 30])
        // Node 2: node 5's own best way goes through node 0 (split horizon: not offered back to it).
        let toTwo = net.nodes[0].neighbourRoutes(to: net.addresses[2])
        #expect(toTwo.map(\.via) == [net.addresses[1]])
        #expect(toTwo.map(\.links) == [2])
        // Node 4 reaches node 1 three links either way: both choices, the cheaper (through the cheap link) first.
        let fourToOne = net.nodes[4].neighbourRoutes(to: net.addresses[1])
        #expect(fourToOne.map(\.via) == [net.addresses[5], net.addresses[3]])
        #expect(fourToOne.map(\.links) == [3, 3])
        #expect(fourToOne.map(\.metric) == [25, 30])
    }

    @Test func cheaperPathWinsAndFailoverWorks() {
        // 0 - 1 - 2 (cheap) and 0 - 2 directly (expensive).
        var net = GossipNet(count: 3)
        net.link(0, 1, cost: 5)
        net.link(1, 2, cost: 5)
        net.link(0, 2, cost: 100)
        #expect(net.nodes[2].nextHop(to: net.wallets[0]) == net.addresses[1])
        #expect(net.nodes[2].route(to: net.wallets[0])?.metric == 10)
        net.unlink(1, 2)
        #expect(net.nodes[2].nextHop(to: net.wallets[0]) == net.addresses[0])
        #expect(net.nodes[2].route(to: net.wallets[0])?.metric == 100)
        net.unlink(0, 2)
        #expect(net.nodes[2].route(to: net.wallets[0]) == nil)
    }

    @Test func withdrawalReachesEveryone() {
        var net = GossipNet(count: 3)
        net.link(0, 1)
        net.link(1, 2)
        #expect(net.nodes[2].route(to: net.wallets[0]) != nil)
        net.unlink(0, 1)
        #expect(net.nodes[1].route(to: net.wallets[0]) == nil)
        #expect(net.nodes[2].route(to: net.wallets[0]) == nil)
    }

    @Test func digestsRepairLostUpdatesAndStaleRoutesExpire() {
        var net = GossipNet(count: 3)
        net.link(0, 1)
        // Node 2 links to 1 but the first full table is lost.
        net.links.insert(SimLink(1, 2))
        _ = net.nodes[1].neighbourUp(net.addresses[2], cost: 10, nowMs: net.now)
        net.deliver(net.nodes[2].neighbourUp(net.addresses[1], cost: 10, nowMs: net.now), from: 2)
        #expect(net.nodes[2].route(to: net.wallets[0]) == nil)
        net.advance(11_000)
        #expect(net.nodes[2].route(to: net.wallets[0])?.hops == 2, "the digest mismatch asked for a full table")
        // A neighbour that goes silent (without a link-down event) has its routes expire.
        net.links.remove(SimLink(1, 2))
        net.advance(40_000)
        #expect(net.nodes[2].route(to: net.wallets[0]) == nil)
    }

    /// A full table goes out in parts. Its parts may come in any order (the whole-node simulation found, with
    /// per-datagram jitter, that a table whose first part alone reset the sender's routes wiped the parts that came
    /// before it); only once every part is in is what the sender said before the table and no longer says
    /// forgotten, and a table with a part lost forgets nothing. An update sent after a table may overtake it and
    /// stands; a part of an older table that comes late changes nothing.
    @Test func aFullTableInAnyOrderKeepsEveryRouteAndForgetsOnlyWhenComplete() {
        var net = GossipNet(count: 2)
        let hosted = (0..<2 * GossipMessage.maxEntries).map { _ in PrivateKey() }
        net.nodes[0] = GossipEngine(local: net.addresses[0], hosted: hosted, sequence: 1, nowMs: 0)
        net.link(0, 1)
        #expect(net.nodes[1].routes(nowMs: net.now).count == hosted.count + 1)
        // Something node 0 said once and no longer says.
        let gone = signedEntry(PrivateKey(), origin: PrivateKey().address, hops: 1, metric: 5)
        _ = net.nodes[1].receive(GossipMessage.update([gone], table: 0).serialize(), from: net.addresses[0], nowMs: net.now)
        #expect(net.nodes[1].route(to: gone.wallet) != nil)
        func table() -> [[UInt8]] {
            net.nodes[0].receive(GossipMessage.requestFull.serialize(), from: net.addresses[1], nowMs: net.now)
                .compactMap { if case .send(let bytes, _) = $0 { bytes } else { nil } }
        }
        let lost = table()
        #expect(lost.count == 2, "the table's parts: 20 entries")
        for bytes in lost.dropFirst().reversed() { _ = net.nodes[1].receive(bytes, from: net.addresses[0], nowMs: net.now) }
        #expect(net.nodes[1].routes(nowMs: net.now).count == hosted.count + 2, "a part is missing: nothing forgotten")
        #expect(net.nodes[1].route(to: gone.wallet) != nil)
        for bytes in table().reversed() { _ = net.nodes[1].receive(bytes, from: net.addresses[0], nowMs: net.now) }
        #expect(net.nodes[1].routes(nowMs: net.now).count == hosted.count + 1, "every route the table names, in any order")
        #expect(net.nodes[1].route(to: gone.wallet) == nil, "and only those")

        let older = table()
        let newer = table()
        guard case .tablePart(_, let part)? = GossipMessage(parsing: newer[0]) else {
            Issue.record("not a table part")
            return
        }
        let late = signedEntry(PrivateKey(), origin: PrivateKey().address, hops: 1, metric: 5)
        _ = net.nodes[1].receive(GossipMessage.update([late], table: part.table).serialize(), from: net.addresses[0], nowMs: net.now)
        for bytes in newer.reversed() { _ = net.nodes[1].receive(bytes, from: net.addresses[0], nowMs: net.now) }
        #expect(net.nodes[1].route(to: late.wallet) != nil, "said after the table, though it came first")
        for bytes in older { _ = net.nodes[1].receive(bytes, from: net.addresses[0], nowMs: net.now) }
        #expect(net.nodes[1].route(to: late.wallet) != nil, "an older table's parts change nothing")
        #expect(net.nodes[1].routes(nowMs: net.now).count == hosted.count + 2)
    }

    @Test func noLoopsOnRandomGraphsWithChurn() {
        var rng = SplitMix64(seed: 5)
        for radius in [UInt8(2), 3, 4] {
            var net = GossipNet(count: 12, radius: radius)
            for _ in 0..<30 {
                let i = Int(rng.next() % 12), j = Int(rng.next() % 12)
                guard i != j else { continue }
                if net.links.contains(SimLink(i, j)) { net.unlink(i, j) } else { net.link(i, j, cost: UInt16(1 + rng.next() % 50)) }
                net.advance(1_000)
                // Following next hops from any node toward any wallet must reach its origin without revisiting a node.
                for start in 0..<12 {
                    for target in 0..<12 {
                        var at = start
                        var seen: Set<Int> = [start]
                        while let hop = net.nodes[at].nextHop(to: net.wallets[target]) {
                            at = net.index(of: hop)
                            #expect(!seen.contains(at), "loop toward wallet \(target) from \(start)")
                            if seen.contains(at) { break }
                            seen.insert(at)
                        }
                        if net.nodes[start].route(to: net.wallets[target]) != nil { #expect(at == target) }
                    }
                }
            }
        }
    }

    @Test func oneNeighbourCannotFillTheTable() {
        var config = GossipConfig()
        config.maxRoutesPerNeighbour = 30
        var engine = GossipEngine(local: PrivateKey().address, hosted: [], sequence: 1, config: config, nowMs: 0)
        let peer = PrivateKey().address
        _ = engine.neighbourUp(peer, cost: 1, nowMs: 0)
        for _ in 0..<10 {
            let entries = (0..<GossipMessage.maxEntries).map { _ in signedEntry(PrivateKey(), origin: peer) }
            _ = engine.receive(GossipMessage.update(entries, table: 0).serialize(), from: peer, nowMs: 0)
        }
        #expect(engine.routes(nowMs: 0).count == 30)
        #expect(engine.counters.refusedRoutes == 70)
    }

    @Test func messagesRoundTripAndMalformedAreCounted() {
        let e = signedEntry(PrivateKey(), origin: PrivateKey().address, sequence: 7, hops: 1, metric: 33)
        let part = GossipMessage.TablePart(table: 9, index: 1, count: 2)
        for m in [GossipMessage.tablePart([e, e], part), .tablePart([], part), .update([e], table: 7), .digest(Array(repeating: 1, count: 32)), .requestFull] {
            #expect(GossipMessage(parsing: m.serialize()) == m)
            #expect(GossipMessage(parsing: m.serialize() + [0]) == nil)
        }
        #expect(GossipMessage(parsing: [4, 0, 0, 0, 0, 0, 0, 0, 9, 0, 2, 0, 2, 0]) == nil, "a part past the table's count")
        var engine = GossipEngine(local: PrivateKey().address, hosted: [], sequence: 1, nowMs: 0)
        let peer = PrivateKey().address
        _ = engine.neighbourUp(peer, cost: 1, nowMs: 0)
        var rng = SplitMix64(seed: 3)
        for n in 0..<200 { _ = engine.receive(rng.bytes(n % 90), from: peer, nowMs: 0) }
        #expect(engine.counters.malformed > 150)
        #expect(GossipEngine.newer(1, than: UInt32.max))
        #expect(!GossipEngine.newer(UInt32.max, than: 1))
    }
}

/// An entry for `wallet` hosted at `origin`, signed by the wallet key, valid for 10 minutes from time 0.
func signedEntry(_ wallet: PrivateKey, origin: WalletAddress, sequence: UInt32 = 1, expiresAtS: UInt32 = 600,
                 hops: UInt8 = 0, metric: UInt16 = 0) -> GossipEntry {
    GossipEntry(HostAnnouncement.sign(wallet: wallet, origin: origin, sequence: sequence, expiresAtS: expiresAtS), hops: hops, metric: metric)
}
