import MeshIdentity
@testable import MeshRouting
import MeshTestKit
import Testing

/// Gossip engines on a graph of links, messages delivered in order, time passed in.
struct GossipNet {
    var nodes: [GossipEngine]
    var addresses: [WalletAddress]
    var walletKeys: [PrivateKey]
    var wallets: [WalletAddress] { walletKeys.map(\.address) }
    var links: Set<[Int]> = []
    var now: Int64 = 0
    var messages = 0

    init(count: Int, radius: UInt8 = 2) {
        addresses = (0..<count).map { _ in PrivateKey().address }
        walletKeys = (0..<count).map { _ in PrivateKey() }
        var config = GossipConfig()
        config.radius = radius
        let (addresses, walletKeys) = (addresses, walletKeys)
        nodes = (0..<count).map { GossipEngine(local: addresses[$0], hosted: [walletKeys[$0]], sequence: 1, config: config, nowMs: 0) }
    }

    func index(of address: WalletAddress) -> Int { addresses.firstIndex(of: address)! }

    mutating func deliver(_ actions: [GossipAction], from i: Int) {
        var queue = actions.map { (i, $0) }
        while !queue.isEmpty {
            let (from, action) = queue.removeFirst()
            guard case .send(let bytes, let to) = action, let j = addresses.firstIndex(of: to),
                  links.contains([min(from, j), max(from, j)]) else { continue }
            messages += 1
            queue += nodes[j].receive(bytes, from: addresses[from], nowMs: now).map { (j, $0) }
        }
    }

    mutating func link(_ i: Int, _ j: Int, cost: UInt16 = 10) {
        links.insert([min(i, j), max(i, j)])
        let a = nodes[i].neighbourUp(addresses[j], cost: cost, nowMs: now)
        let b = nodes[j].neighbourUp(addresses[i], cost: cost, nowMs: now)
        deliver(a, from: i)
        deliver(b, from: j)
    }

    mutating func unlink(_ i: Int, _ j: Int) {
        links.remove([min(i, j), max(i, j)])
        deliver(nodes[i].neighbourDown(addresses[j], nowMs: now), from: i)
        deliver(nodes[j].neighbourDown(addresses[i], nowMs: now), from: j)
    }

    mutating func advance(_ ms: Int64, step: Int64 = 500) {
        var left = ms
        while left > 0 {
            now += step
            left -= step
            for i in nodes.indices { deliver(nodes[i].tick(nowMs: now), from: i) }
        }
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
        net.links.insert([1, 2])
        _ = net.nodes[1].neighbourUp(net.addresses[2], cost: 10, nowMs: net.now)
        net.deliver(net.nodes[2].neighbourUp(net.addresses[1], cost: 10, nowMs: net.now), from: 2)
        #expect(net.nodes[2].route(to: net.wallets[0]) == nil)
        net.advance(11_000)
        #expect(net.nodes[2].route(to: net.wallets[0])?.hops == 2, "the digest mismatch asked for a full table")
        // A neighbour that goes silent (without a link-down event) has its routes expire.
        net.links.remove([1, 2])
        net.advance(40_000)
        #expect(net.nodes[2].route(to: net.wallets[0]) == nil)
    }

    @Test func noLoopsOnRandomGraphsWithChurn() {
        var rng = SplitMix64(seed: 5)
        for radius in [UInt8(2), 3, 4] {
            var net = GossipNet(count: 12, radius: radius)
            for _ in 0..<30 {
                let i = Int(rng.next() % 12), j = Int(rng.next() % 12)
                guard i != j else { continue }
                if net.links.contains([min(i, j), max(i, j)]) { net.unlink(i, j) } else { net.link(i, j, cost: UInt16(1 + rng.next() % 50)) }
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
            _ = engine.receive(GossipMessage.update(entries, reset: false).serialize(), from: peer, nowMs: 0)
        }
        #expect(engine.routes(nowMs: 0).count == 30)
        #expect(engine.counters.refusedRoutes == 70)
    }

    @Test func messagesRoundTripAndMalformedAreCounted() {
        let e = signedEntry(PrivateKey(), origin: PrivateKey().address, sequence: 7, hops: 1, metric: 33)
        for m in [GossipMessage.update([e, e], reset: true), .update([e], reset: false), .digest(Array(repeating: 1, count: 32)), .requestFull] {
            #expect(GossipMessage(parsing: m.serialize()) == m)
            #expect(GossipMessage(parsing: m.serialize() + [0]) == nil)
        }
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
