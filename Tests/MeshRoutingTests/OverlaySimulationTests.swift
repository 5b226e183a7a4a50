import MeshCall
import MeshIdentity
import MeshNodeCore
import MeshRouting
import MeshTestKit
import Testing

/// Whole nodes on one simulated network, each the daemon's own `NodeCore` (`OverlayNode`): encrypted links with
/// gossip, relaying with trunks and calls on top, the DHT beside; latency from random coordinates with jitter, loss, a
/// partition and its heal, a relay killed under a call.
@Suite struct OverlaySimulationTests {
    static let cost: UInt16 = 10

    /// 100 nodes, 5–65 ms apart, 1 % of datagrams lost: the links come up and gossip converges on the routes the
    /// graph implies; a partition takes the links across it down and withdraws every route across; after the heal
    /// the diallers' retries bring the links back and the routes return.
    @Test func gossipOverRealLinksConvergesAcrossAPartitionAndItsHeal() {
        var mesh = OverlayMesh.testing(count: 100, seed: 7, lossRate: 0.01)
        mesh.advance(forMs: 30_000)
        let routes = mesh.expectConverged(over: mesh.edges, "connected")
        #expect(routes > 300, "\(routes) routes within the radius")

        // Halves by index: the links across vanish without a word and are found dead after `deadAfterMs`.
        let half = mesh.sim.nodes.count / 2
        mesh.sim.partition(Dictionary(uniqueKeysWithValues: mesh.sim.nodes.indices.map { ($0, $0 < half ? 0 : 1) }))
        let inside = mesh.edges.filter { ($0.a < half) == ($0.b < half) }
        #expect(inside.count < mesh.edges.count && inside.count > mesh.edges.count / 2)
        let downsBefore = mesh.sim.events.count { if case .event(.linkDown) = $0.action { true } else { false } }
        mesh.advance(forMs: 30_000)
        let downs = mesh.sim.events.count { if case .event(.linkDown) = $0.action { true } else { false } } - downsBefore
        #expect(downs == 2 * (mesh.edges.count - inside.count), "each link across goes down at both ends")
        _ = mesh.expectConverged(over: inside, "partitioned")

        mesh.sim.heal()
        mesh.advance(forMs: 30_000)
        #expect(mesh.expectConverged(over: mesh.edges, "healed") == routes)
        #expect(mesh.sim.datagramsLost > 0)
    }

    /// A call between whole nodes, 40 of them with node announcements and 1 % loss: the caller's node sets up a
    /// chain to the callee's home node (the farthest within 5 links), the offer and answer go through it, media
    /// flows both ways; when the first relay on the chain dies the caller moves the call to a chain without it,
    /// and the call goes on without a media timeout.
    @Test func aCallAcrossTheMeshSurvivesTheDeathOfARelay() throws {
        var mesh = OverlayMesh.testing(count: 40, seed: 11, lossRate: 0.01, linkCosts: .measured)
        mesh.advance(forMs: 30_000)
        let distance = mesh.distances(over: mesh.edges)
        let far = try #require(distance[0].filter { $0 <= 5 }.max())
        #expect(far >= 3, "a chain with relays on it")
        let callee = try #require(distance[0].firstIndex(of: far))
        let id = CallID(raw: 0xCA11)
        func drive(_ node: Int, _ body: (inout OverlayNode, Int64) -> [OverlayNode.Action]) { mesh.drive(node, body) }
        func events(at node: Int) -> [NodeEvent<Int>] { mesh.events(at: node) }
        func activeChain() -> [Int] {
            let chain = mesh.sim.nodes[0].core.relay.chains(call: id.raw, now: mesh.sim.nowMs).first { $0.role == "active" }
            return chain?.nodes.compactMap { node in mesh.addresses.firstIndex { $0.checksummed == node } } ?? []
        }
        /// Media packets that reached `node`.
        func media(at node: Int) -> Int {
            events(at: node).count {
                if case .callBytes(id, .media) = $0 { true } else { false }
            }
        }
        /// Both ends send a packet every 100 ms.
        func talk(forMs ms: Int64) {
            for _ in 0..<ms / 100 {
                drive(0) { $0.sendMedia(id, [0x80, 0], now: $1) }
                drive(callee) { $0.sendMedia(id, [0x80, 1], now: $1) }
                mesh.advance(forMs: 100)
            }
        }

        let (caller, wallet) = (mesh.walletKeys[0], mesh.wallets[callee])
        drive(0) { $0.place(id, from: caller, to: wallet, now: $1) }
        mesh.advance(forMs: 2_000)
        #expect(events(at: 0).contains { if case .chainUp(id) = $0 { true } else { false } })
        #expect(events(at: 0).contains { if case .placed(id, let home, _) = $0 { home.node == mesh.addresses[callee] } else { false } })
        #expect(events(at: callee).contains { $0.isIncoming(id, caller: caller.address, callee: wallet) })
        #expect(events(at: 0).contains { if case .call(.established(id, _)) = $0 { true } else { false } })
        let first = activeChain()
        #expect(first.count >= far && first.last == callee, "chain \(first)")
        talk(forMs: 3_000)
        #expect(media(at: callee) >= 25 && media(at: 0) >= 25, "\(media(at: callee)) and \(media(at: 0)) of 30 packets")

        let dead = try #require(first.first)
        mesh.sim.kill(dead)
        talk(forMs: 15_000)
        let second = activeChain()
        #expect(!second.isEmpty && !second.contains(dead) && second.last == callee, "chain \(second) after \(dead) died")
        #expect(events(at: 0).contains { if case .chainSwitched(id, _, _, _) = $0 { true } else { false } })
        let before = (media(at: callee), media(at: 0))
        talk(forMs: 2_000)
        #expect(media(at: callee) - before.0 >= 15 && media(at: 0) - before.1 >= 15, "media flows on the new chain")
        for end in [0, callee] {
            #expect(mesh.sim.nodes[end].core.calls.calls[id]?.state == .active, "node \(end)")
            #expect(!events(at: end).contains { if case .ended = $0 { true } else { false } }, "node \(end)")
        }
    }

    /// Whole nodes with the DHT beside their links, 100 of them, 1 % loss, datagrams reordered: each joins the DHT
    /// through the neighbour it dialled and publishes its wallet's presence record. Calls to wallets beyond gossip's
    /// radius (2 links) but within the hop limit (6) find the callee's home node as the daemon's calls do, with no
    /// gossip route: the DHT's lookup and a query over links race, and the first answer wins. Each call's chain of
    /// relays reaches the home node, the callee's node rings and answers. Links cost what they measure and data rides
    /// trunks. A wallet nobody hosts is reported with the DHT's reason.
    @Test func callsBeyondGossipFindTheirCalleeAndRideChainsAcross100Nodes() throws {
        // The early-tick check copies a whole node and ticks the copy; before every input of 100 nodes with the DHT
        // it would cost minutes in a debug build, so here it runs every second of virtual time.
        var mesh = OverlayMesh.testing(count: 100, seed: 21, lossRate: 0.01, linkCosts: .measured, earlyTickCheck: .every(ms: 1_000))
        mesh.advance(forMs: 10_000)
        for i in mesh.sim.nodes.indices {
            let neighbour = try #require(mesh.edges.filter { $0.a == i || $0.b == i }.map { $0.a == i ? $0.b : $0.a }.min())
            mesh.drive(i) { $0.join(bootstrap: [neighbour], now: $1) }
        }
        mesh.advance(forMs: 20_000)
        let distance = mesh.distances(over: mesh.edges)
        let sources: Set<String> = ["DHT presence record", "a query over links"]
        var calls: [(id: CallID, caller: Int, callee: Int)] = []
        let callers = Array(stride(from: 0, to: 100, by: 20))
        for caller in callers {
            // One call per wallet: each callee is in no other call.
            let callee = try #require(mesh.sim.nodes.indices.first { callee in
                (3...6).contains(distance[caller][callee]) && !callers.contains(callee) && !calls.contains { $0.callee == callee }
            }, "a wallet beyond gossip's radius from node \(caller)")
            #expect(mesh.sim.nodes[caller].core.gossip.route(to: mesh.wallets[callee]) == nil)
            let id = CallID(raw: 0xCA11_0000 + UInt64(caller))
            let (from, to) = (mesh.walletKeys[caller], mesh.wallets[callee])
            mesh.drive(caller) { $0.place(id, from: from, to: to, now: $1) }
            calls.append((id, caller, callee))
        }
        let nobody = PrivateKey().address
        let someone = mesh.walletKeys[1]
        mesh.drive(1) { $0.place(CallID(raw: 0xDEAD), from: someone, to: nobody, now: $1) }
        mesh.advance(forMs: 5_000)

        for call in calls {
            let events = mesh.events(at: call.caller)
            let home = events.compactMap { if case .placed(call.id, let home, _) = $0 { home } else { nil } }.first
            #expect(home?.node == mesh.addresses[call.callee], "call \(call): home node")
            #expect(home.map { sources.contains($0.source) } == true, "call \(call): found through \(home?.source ?? "nothing")")
            #expect(events.contains { if case .chainUp(call.id) = $0 { true } else { false } }, "call \(call)")
            #expect(events.contains { if case .call(.established(call.id, _)) = $0 { true } else { false } }, "call \(call)")
            #expect(mesh.events(at: call.callee).contains { $0.isIncoming(call.id, caller: mesh.wallets[call.caller], callee: mesh.wallets[call.callee]) })
            let chain = mesh.sim.nodes[call.caller].core.relay.chains(call: call.id.raw, now: mesh.sim.nowMs).first { $0.role == "active" }
            #expect((chain?.nodes.count ?? 0) >= distance[call.caller][call.callee], "call \(call): chain \(chain?.nodes ?? [])")
            #expect(chain?.nodes.last == mesh.addresses[call.callee].checksummed)
        }
        let unresolved = mesh.events(at: 1).compactMap { if case .notPlaced(CallID(raw: 0xDEAD), let why) = $0 { why } else { nil } }
        #expect(unresolved.count == 1 && unresolved.first?.hasPrefix("\(nobody) is not online") == true, "\(unresolved)")
    }

    /// The same seed gives the same run, datagram for datagram.
    @Test func runsRepeatExactlyPerSeed() {
        func run() -> [Int64] {
            var mesh = OverlayMesh.testing(count: 30, seed: 3, lossRate: 0.05, linkCosts: .measured)
            mesh.advance(forMs: 20_000)
            let routes = mesh.sim.nodes.map { Int64($0.core.gossip.routes(nowMs: mesh.sim.nowMs).count) }
            return [Int64(mesh.sim.datagramsSent), Int64(mesh.sim.datagramsLost), Int64(mesh.sim.datagramsDelivered)]
                + mesh.sim.events.map { $0.timeMs * 100 + Int64($0.node) } + routes
        }
        let first = run()
        #expect(run() == first)
        #expect(run() == first)
    }
}

extension NodeEvent {
    func isIncoming(_ id: CallID, caller: WalletAddress, callee: WalletAddress) -> Bool {
        if case .call(.incoming(id, caller, callee)) = self { true } else { false }
    }
}

extension OverlayMesh {
    /// `OverlayMesh` with fixed link costs unless told, the early-tick check before every input unless told.
    static func testing(count: Int, seed: UInt64, lossRate: Double, linkCosts: NodeCoreConfig.LinkCosts = .fixed(OverlaySimulationTests.cost),
                        earlyTickCheck: EarlyTickCheck = .everyInput) -> OverlayMesh {
        OverlayMesh(count: count, seed: seed, lossRate: lossRate, linkCosts: linkCosts, earlyTickCheck: earlyTickCheck)
    }

    /// Runs the network; what the early-tick check finds is an issue.
    mutating func advance(forMs ms: Int64) {
        for fault in run(forMs: ms) { Issue.record(Comment(rawValue: fault)) }
    }

    /// Converged over `up` (`convergence`); returns the routes checked.
    func expectConverged(over up: Set<SimLink>, _ comment: String) -> Int {
        let (routes, faults, _) = convergence(over: up)
        #expect(faults.isEmpty, "\(comment): \(faults.prefix(10))")
        return routes
    }
}
