import MeshIdentity
import MeshRouting
import MeshTestKit
import Testing

/// Whole nodes on one simulated network: encrypted links with gossip on top (`OverlayNode`), latency from random
/// coordinates with jitter, loss, a partition and its heal.
@Suite struct OverlaySimulationTests {
    /// Nodes that each host one wallet; node i dials one or two random earlier nodes, so the graph is connected.
    struct Mesh {
        static let cost: UInt16 = 10
        var sim: MeshSimulator<OverlayNode>
        var wallets: [WalletAddress] = []
        var addresses: [WalletAddress] = []
        var edges: Set<SimLink> = []
        let radius: Int

        init(count: Int, seed: UInt64, lossRate: Double) {
            var config = MeshSimulator<OverlayNode>.Config()
            config.seed = seed
            config.latency = .coordinates(minMs: 5, spanMs: 60)
            config.jitter = 0.2
            config.lossRate = lossRate
            config.earlyTickCheck = .everyInput
            sim = MeshSimulator(config: config)
            let gossip = GossipConfig()
            radius = Int(gossip.radius)
            for _ in 0..<count {
                let nodeKey = sim.rng.privateKey(), walletKey = sim.rng.privateKey()
                let secret = sim.rng.bytes(32)
                sim.add(OverlayNode(nodeKey: nodeKey, hosted: [walletKey], secret: secret, gossip: gossip, linkCost: Self.cost,
                                    now: sim.nowMs))
                addresses.append(nodeKey.address)
                wallets.append(walletKey.address)
            }
            for i in 1..<count {
                for _ in 0..<(i == 1 ? 1 : 2) {
                    let j = Int.random(in: 0..<i, using: &sim.rng)
                    guard edges.insert(SimLink(i, j)).inserted else { continue }
                    let now = sim.nowMs
                    let actions = sim[node: i].connect(to: j, now: now)
                    sim.perform(actions, at: i)
                }
            }
        }

        /// Hop counts between every pair over `links` (`Int.max`: no way).
        func distances(over links: Set<SimLink>) -> [[Int]] {
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

        /// Every link in `up` is up at both ends and every other dialled link is down at both ends; every node's
        /// gossip has exactly the wallets within the radius over `up`, each at its hop count and metric, through a
        /// neighbour one hop nearer. Returns how many routes were checked.
        func expectConverged(over up: Set<SimLink>, _ comment: String) -> Int {
            for link in edges {
                let isUp = up.contains(link)
                #expect(sim.nodes[link.a].links.isUp(addresses[link.b]) == isUp, "\(comment): link \(link.a)–\(link.b)")
                #expect(sim.nodes[link.b].links.isUp(addresses[link.a]) == isUp, "\(comment): link \(link.b)–\(link.a)")
            }
            let distance = distances(over: up)
            var routes = 0
            for i in sim.nodes.indices {
                let gossip = sim.nodes[i].gossip
                for j in sim.nodes.indices {
                    let route = gossip.route(to: wallets[j])
                    guard distance[i][j] <= radius else {
                        #expect(route == nil, "\(comment): node \(i) has a route to wallet \(j), \(distance[i][j]) links away")
                        continue
                    }
                    routes += 1
                    #expect(route?.hops == UInt8(distance[i][j]), "\(comment): node \(i) to wallet \(j)")
                    #expect(route?.metric == Self.cost * UInt16(distance[i][j]), "\(comment): node \(i) to wallet \(j)")
                    #expect(route?.origin == addresses[j], "\(comment): node \(i) to wallet \(j)")
                    guard i != j else { continue }
                    let via = gossip.nextHop(to: wallets[j]).flatMap { addresses.firstIndex(of: $0) }
                    #expect(via.map { up.contains(SimLink(i, $0)) && distance[$0][j] == distance[i][j] - 1 } == true,
                            "\(comment): node \(i) to wallet \(j) via \(via.map(String.init) ?? "nothing")")
                }
            }
            return routes
        }

        mutating func run(forMs ms: Int64) {
            sim.run(forMs: ms)
            for fault in sim.takeEarlyTickFaults() { Issue.record(Comment(rawValue: fault)) }
        }
    }

    /// 100 nodes, 5–65 ms apart, 1 % of datagrams lost: the links come up and gossip converges on the routes the
    /// graph implies; a partition takes the links across it down and withdraws every route across; after the heal
    /// the diallers' retries bring the links back and the routes return.
    @Test func gossipOverRealLinksConvergesAcrossAPartitionAndItsHeal() {
        var mesh = Mesh(count: 100, seed: 7, lossRate: 0.01)
        mesh.run(forMs: 40_000)
        let routes = mesh.expectConverged(over: mesh.edges, "connected")
        #expect(routes > 300, "\(routes) routes within the radius")

        // Halves by index: the links across vanish without a word and are found dead after `deadAfterMs`.
        let half = mesh.sim.nodes.count / 2
        mesh.sim.partition(Dictionary(uniqueKeysWithValues: mesh.sim.nodes.indices.map { ($0, $0 < half ? 0 : 1) }))
        let inside = mesh.edges.filter { ($0.a < half) == ($0.b < half) }
        #expect(inside.count < mesh.edges.count && inside.count > mesh.edges.count / 2)
        let downsBefore = mesh.sim.events.count { if case .event(.linkDown) = $0.action { true } else { false } }
        mesh.run(forMs: 40_000)
        let downs = mesh.sim.events.count { if case .event(.linkDown) = $0.action { true } else { false } } - downsBefore
        #expect(downs == 2 * (mesh.edges.count - inside.count), "each link across goes down at both ends")
        _ = mesh.expectConverged(over: inside, "partitioned")

        mesh.sim.heal()
        mesh.run(forMs: 40_000)
        #expect(mesh.expectConverged(over: mesh.edges, "healed") == routes)
        #expect(mesh.sim.datagramsLost > 0)
    }

    /// The same seed gives the same run, datagram for datagram.
    @Test func runsRepeatExactlyPerSeed() {
        func run() -> [Int] {
            var mesh = Mesh(count: 30, seed: 3, lossRate: 0.05)
            mesh.run(forMs: 20_000)
            return [mesh.sim.datagramsSent, mesh.sim.datagramsLost, mesh.sim.datagramsDelivered, mesh.sim.events.count]
        }
        #expect(run() == run())
    }
}
