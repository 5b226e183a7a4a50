import MeshCall
import MeshIdentity
import MeshLink
import MeshNodeCore
import MeshRouting
import MeshTestKit
import Testing

/// The node's glue (`NodeCore`) through small simulated networks of whole nodes (`OverlayNode`, the daemon's own
/// core): placing a call in its stages, declining, giving up, trunks at a relay, and what it counts.
@Suite struct NodeCoreTests {
    struct Net {
        var sim: MeshSimulator<OverlayNode>
        var walletKeys: [PrivateKey] = []
        var addresses: [WalletAddress] = []

        /// `count` nodes 10 ms apart, each hosting one wallet; `configure` gives node i its core's configuration.
        init(count: Int, seed: UInt64, configure: (Int, inout NodeCoreConfig) -> Void = { _, _ in }) {
            var config = MeshSimulator<OverlayNode>.Config()
            config.seed = seed
            config.latency = .fixed(ms: 10)
            config.earlyTickCheck = .everyInput
            sim = MeshSimulator(config: config)
            for i in 0..<count {
                let nodeKey = sim.rng.privateKey(), walletKey = sim.rng.privateKey()
                var core = NodeCoreConfig()
                configure(i, &core)
                sim.add(OverlayNode(index: i, nodeKey: nodeKey, hosted: [walletKey], seed: sim.rng.next(), config: core, now: sim.nowMs))
                walletKeys.append(walletKey)
                addresses.append(nodeKey.address)
            }
        }

        mutating func drive(_ node: Int, _ body: (inout OverlayNode, Int64) -> [OverlayNode.Action]) {
            let now = sim.nowMs
            let actions = body(&sim[node: node], now)
            sim.perform(actions, at: node)
        }

        mutating func run(forMs ms: Int64) {
            sim.run(forMs: ms)
            for fault in sim.takeEarlyTickFaults() { Issue.record(Comment(rawValue: fault)) }
        }

        func events(at node: Int) -> [NodeEvent<Int>] {
            sim.events.compactMap {
                guard $0.node == node, case .event(let event) = $0.action else { return nil }
                return event
            }
        }

        /// Links node i to node i+1 for every i.
        mutating func line() {
            for i in 1..<sim.nodes.count { drive(i) { $0.connect(to: i - 1, now: $1) } }
            run(forMs: 3_000)
        }
    }

    /// A wallet whose home node nobody is linked to, found only in the DHT: the caller's node dials the home node
    /// from its presence record (`HomeReach`), builds the chain over the new link and offers the call.
    @Test func aCallToAHomeNodeNobodyIsLinkedToDialsItFirst() throws {
        var net = Net(count: 4, seed: 5)
        // 0–1–2 linked; 3 has no link at all, and joins the DHT through 2.
        for i in 1...2 { net.drive(i) { $0.connect(to: i - 1, now: $1) } }
        net.run(forMs: 3_000)
        for (node, bootstrap) in [(0, 1), (1, 0), (2, 1), (3, 2)] { net.drive(node) { $0.join(bootstrap: [bootstrap], now: $1) } }
        net.run(forMs: 5_000)
        #expect(!net.sim.nodes[0].core.links.isUp(net.addresses[3]))

        let id = CallID(raw: 0x5EED)
        let (caller, callee) = (net.walletKeys[0], net.walletKeys[3].address)
        net.drive(0) { $0.place(id, from: caller, to: callee, now: $1) }
        net.run(forMs: 3_000)

        let home = net.events(at: 0).compactMap { if case .placed(id, let home, _) = $0 { home } else { nil } }.first
        #expect(home?.node == net.addresses[3])
        #expect(home?.source == "DHT presence record")
        #expect(net.sim.nodes[0].core.links.isUp(net.addresses[3]), "the caller's node dialled the home node")
        #expect(net.sim.nodes[0].core.calls.calls[id]?.state == .active)
        #expect(net.sim.nodes[3].core.calls.calls[id]?.state == .active)
        #expect(!net.sim.nodes[0].core.isPlacing(id))
    }

    /// A node that does not answer calls declines them; the caller's call ends so, its chain closed.
    @Test func aNodeThatDoesNotAnswerDeclines() {
        var net = Net(count: 3, seed: 6) { i, config in config.answersCalls = i != 2 }
        net.line()
        let id = CallID(raw: 0xDEC1)
        let (caller, callee) = (net.walletKeys[0], net.walletKeys[2].address)
        net.drive(0) { $0.place(id, from: caller, to: callee, now: $1) }
        net.run(forMs: 2_000)
        #expect(net.events(at: 2).contains { if case .call(.incoming(id, _, _)) = $0 { true } else { false } })
        #expect(net.events(at: 0).contains { if case .ended(id, .declined, _) = $0 { true } else { false } })
        #expect(net.sim.nodes[0].core.relay.chains(call: id.raw, now: net.sim.nowMs).isEmpty)
    }

    /// A call given up while it is being placed leaves nothing behind: no offer, no chain, no answer.
    @Test func anAbandonedCallIsNeverOffered() {
        var net = Net(count: 3, seed: 7)
        net.line()
        let id = CallID(raw: 0xAB)
        let (caller, callee) = (net.walletKeys[0], net.walletKeys[2].address)
        net.drive(0) { node, now in
            node.turn(now: now) { core, time, out in
                core.place(id, from: caller, to: callee, bitrate: 24_000, now: time, into: &out)
                #expect(core.isPlacing(id))
                core.abandon(id, now: time, into: &out)
            }
        }
        net.run(forMs: 3_000)
        #expect(!net.sim.nodes[0].core.isPlacing(id))
        #expect(!net.events(at: 0).contains { if case .placed = $0 { true } else if case .notPlaced = $0 { true } else { false } })
        #expect(!net.events(at: 2).contains { if case .call = $0 { true } else { false } })
        #expect(net.sim.nodes.allSatisfy { $0.core.relay.sessionCount == 0 })
    }

    /// Calls' media through a relay rides trunks when trunking is on (shared datagrams, as counted by both ends
    /// of each link), and datagrams of their own when it is off; either way every packet arrives.
    @Test(arguments: [true, false]) func mediaThroughARelayRidesTrunks(trunking: Bool) throws {
        var net = Net(count: 3, seed: 8) { _, config in config.trunking = trunking }
        net.line()
        let id = CallID(raw: 0x7C)
        let (caller, callee) = (net.walletKeys[0], net.walletKeys[2].address)
        net.drive(0) { $0.place(id, from: caller, to: callee, now: $1) }
        net.run(forMs: 2_000)
        try #require(net.sim.nodes[2].core.calls.calls[id]?.state == .active)
        for _ in 0..<100 {
            net.drive(0) { $0.sendMedia(id, [0x80, 0], now: $1) }
            net.drive(2) { $0.sendMedia(id, [0x80, 1], now: $1) }
            net.run(forMs: 20)
        }
        net.run(forMs: 100)
        func media(at node: Int) -> Int { net.events(at: node).count { if case .callBytes(id, .media) = $0 { true } else { false } } }
        #expect(media(at: 0) == 100 && media(at: 2) == 100, "\(media(at: 0)) and \(media(at: 2)) of 100")
        let relay = net.sim.nodes[1].core.trunks
        if trunking {
            #expect(relay.sent.trunks >= 150 && relay.received.trunks >= 150, "\(relay.sent.trunks) sent, \(relay.received.trunks) received")
        } else {
            #expect(relay.sent.trunks == 0 && relay.received.trunks == 0)
        }
    }

    /// Link payloads the glue cannot use are dropped and counted: an application message that does not parse, an
    /// answer to a question nobody asked.
    @Test func payloadsItCannotUseAreCounted() {
        var net = Net(count: 2, seed: 9)
        net.line()
        let to = net.addresses[1]
        for payload in [[0x01, 0xFF], AppMessage.resolveReply(query: 42, address: net.walletKeys[0].address, hosted: true).serialize()] {
            net.drive(0) { node, now in
                node.core.links.send(payload, to: to, now: now).compactMap {
                    if case .send(let bytes, let index) = $0 { .send(bytes, to: index) } else { nil }
                }
            }
        }
        net.run(forMs: 100)
        #expect(net.sim.nodes[1].core.counters == { var c = NodeCoreCounters(); c.malformedApp = 1; c.resolveUnsolicited = 1; return c }())
    }

    /// A link's cost is its smoothed RTT with a loss penalty; gossip hears of a new one only when it moved by a
    /// fifth and by 2 at least (the jitter of RTT samples would otherwise reweigh routes across the mesh every 2 s).
    @Test func linkCostsReachGossipOnlyWhenTheyMoveEnough() {
        typealias Core = NodeCore<Int>
        #expect(Core.linkCost(rttMs: nil, lossPercent: 0) == Core.unknownLinkCost)
        #expect(Core.linkCost(rttMs: 0.2, lossPercent: 0) == 1)
        #expect(Core.linkCost(rttMs: 40, lossPercent: 10) == 80)
        #expect(Core.costChanged(from: 100, to: 20))
        #expect(!Core.costChanged(from: 100, to: 81) && Core.costChanged(from: 100, to: 80) && Core.costChanged(from: 100, to: 120))
        #expect(!Core.costChanged(from: 5, to: 6) && Core.costChanged(from: 5, to: 7) && Core.costChanged(from: 5, to: 3))
        #expect(!Core.costChanged(from: 40, to: 40))
    }
}
