import MeshIdentity
import MeshNodeCore
import MeshRouting

/// Whole nodes (`OverlayNode`, the daemon's own core) on one simulated network: node i hosts wallet i and dials
/// one or two random earlier nodes, so the graph is connected. Latency from random coordinates with jitter and
/// reordering. Shared by the simulation tests and `MeshSim`.
public struct OverlayMesh {
    public var sim: MeshSimulator<OverlayNode>
    public private(set) var walletKeys: [PrivateKey] = []
    public var wallets: [WalletAddress] { walletKeys.map(\.address) }
    public private(set) var addresses: [WalletAddress] = []
    /// The links dialled.
    public private(set) var edges: Set<SimLink> = []
    /// Gossip's radius in links.
    public let radius: Int
    /// The cost of every link with `.fixed` costs; nil with measured ones.
    public let fixedCost: UInt16?

    /// `count` nodes 5–65 ms apart, 20 % jitter, datagrams overtaking one another as on a real path.
    public init(count: Int, seed: UInt64, lossRate: Double, linkCosts: NodeCoreConfig.LinkCosts,
                earlyTickCheck: EarlyTickCheck = .off) {
        var config = MeshSimulator<OverlayNode>.Config()
        config.seed = seed
        config.latency = .coordinates(minMs: 5, spanMs: 60)
        config.jitter = 0.2
        config.reorders = true
        config.lossRate = lossRate
        config.earlyTickCheck = earlyTickCheck
        sim = MeshSimulator(config: config)
        let gossip = GossipConfig()
        radius = Int(gossip.radius)
        var core = NodeCoreConfig()
        core.linkCosts = linkCosts
        if case .fixed(let cost) = linkCosts { fixedCost = cost } else { fixedCost = nil }
        for _ in 0..<count {
            let nodeKey = sim.rng.privateKey(), walletKey = sim.rng.privateKey()
            let seed = sim.rng.next()
            sim.add(OverlayNode(index: sim.nodes.count, nodeKey: nodeKey, hosted: [walletKey], seed: seed, config: core, gossip: gossip,
                                now: sim.nowMs))
            addresses.append(nodeKey.address)
            walletKeys.append(walletKey)
        }
        for i in 1..<count {
            for _ in 0..<(i == 1 ? 1 : 2) {
                let j = Int.random(in: 0..<i, using: &sim.rng)
                guard edges.insert(SimLink(i, j)).inserted else { continue }
                drive(i) { $0.connect(to: j, now: $1) }
            }
        }
    }

    /// Runs the network; returns what the early-tick check found.
    public mutating func run(forMs ms: Int64) -> [String] {
        sim.run(forMs: ms)
        return sim.takeEarlyTickFaults()
    }

    /// Drives node `node` in place now, and sends what it asked for.
    public mutating func drive(_ node: Int, _ body: (inout OverlayNode, Int64) -> [OverlayNode.Action]) {
        let now = sim.nowMs
        let actions = body(&sim[node: node], now)
        sim.perform(actions, at: node)
    }

    /// What node `node` reported, in order.
    public func events(at node: Int) -> [NodeEvent<Int>] {
        sim.events.compactMap {
            guard $0.node == node, case .event(let event) = $0.action else { return nil }
            return event
        }
    }

    /// The links of node `node` dialled (either way).
    public func neighbours(of node: Int) -> [Int] {
        edges.compactMap { $0.a == node ? $0.b : $0.b == node ? $0.a : nil }.sorted()
    }

    /// Hop counts between every pair over `links` (`Int.max`: no way).
    public func distances(over links: Set<SimLink>) -> [[Int]] {
        let count = sim.nodes.count
        var adjacency = Array(repeating: [Int](), count: count)
        for link in links {
            adjacency[link.a].append(link.b)
            adjacency[link.b].append(link.a)
        }
        return (0..<count).map { source in
            var d = Array(repeating: Int.max, count: count)
            d[source] = 0
            var queue = [source], head = 0
            while head < queue.count {
                let u = queue[head]
                head += 1
                for v in adjacency[u] where d[v] == .max {
                    d[v] = d[u] + 1
                    queue.append(v)
                }
            }
            return d
        }
    }

    /// How far the network is from converged over `up`: every link in `up` up at both ends and every other dialled
    /// link down at both ends; every node's gossip with exactly the wallets within the radius over `up`, each at
    /// its hop count and metric (`cost` × hops) through a neighbour one hop nearer. With measured costs a node
    /// takes the cheapest route, which may span more links than the fewest, and a neighbour passes on only its
    /// cheapest: a wallet within the radius whose cheapest route is longer than the radius is not in gossip (calls
    /// find it through the DHT or a query over links). So there every route must be sound (the right origin,
    /// no fewer links than the graph allows, within the radius, through a linked neighbour), and a wallet within
    /// the radius without one is counted as `missing`, not as a fault. Returns the routes checked, what was wrong
    /// (nothing when converged) and the wallets missing.
    public func convergence(over up: Set<SimLink>) -> (routes: Int, faults: [String], missing: Int) {
        var faults: [String] = []
        var missing = 0
        for link in edges {
            let isUp = up.contains(link)
            for (a, b) in [(link.a, link.b), (link.b, link.a)] where sim.nodes[a].core.links.isUp(addresses[b]) != isUp {
                faults.append("link \(a)–\(b) is \(isUp ? "down" : "up")")
            }
        }
        let distance = distances(over: up)
        var routes = 0
        for i in sim.nodes.indices {
            let gossip = sim.nodes[i].core.gossip
            for j in sim.nodes.indices {
                let route = gossip.route(to: wallets[j])
                guard distance[i][j] <= radius else {
                    if route != nil { faults.append("node \(i) has a route to wallet \(j), \(distance[i][j]) links away") }
                    continue
                }
                routes += 1
                guard let route else {
                    if fixedCost == nil { missing += 1 } else { faults.append("node \(i) to wallet \(j): no route, \(distance[i][j]) links away") }
                    continue
                }
                let hops = Int(route.hops)
                let sound = fixedCost == nil ? (distance[i][j]...radius).contains(hops) : hops == distance[i][j]
                guard sound, route.origin == addresses[j] else {
                    faults.append("node \(i) to wallet \(j): \(hops) hops from \(route.origin), \(distance[i][j]) links away")
                    continue
                }
                if let fixedCost, route.metric != fixedCost * UInt16(distance[i][j]) {
                    faults.append("node \(i) to wallet \(j): metric \(route.metric)")
                }
                guard i != j else { continue }
                let via = gossip.nextHop(to: wallets[j]).flatMap { addresses.firstIndex(of: $0) }
                let nearer = { (via: Int) in self.fixedCost == nil || distance[via][j] == distance[i][j] - 1 }
                if via.map({ up.contains(SimLink(i, $0)) && nearer($0) }) != true {
                    faults.append("node \(i) to wallet \(j) via \(via.map(String.init) ?? "nothing")")
                }
            }
        }
        return (routes, faults, missing)
    }
}
