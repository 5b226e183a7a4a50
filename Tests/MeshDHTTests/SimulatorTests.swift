import MeshDHT
import MeshTestKit
import Testing

/// The protocol at scale on the deterministic simulator.
@Suite struct SimulatorTests {
    /// 1,000 nodes, 5 % of them replaced (each newcomer joins through the protocol) while 200 lookups run.
    /// DHTBench runs the same scenario at 10,000 nodes and up to 30 % churn.
    @Test func thousandNodesUnderChurnFindRecordsInFewRounds() {
        var scenario = DHTScenario()
        scenario.nodes = 1_000
        scenario.records = 20
        scenario.lookups = 200
        scenario.churn = 0.05
        scenario.windowMs = 2 * 60_000
        scenario.presences = 1
        scenario.probesPerPresence = 50
        let report = scenario.run(on: scenario.build())
        #expect(report.started == 200)
        #expect(report.successRate >= 0.99)
        #expect(DHTScenarioReport.quantile(report.rounds, 0.5)! <= 3)
        #expect(DHTScenarioReport.quantile(report.rounds, 0.99)! <= 6)
        #expect(report.overMessageBound == 0)
        #expect(report.alive == 1_000)
        let presence = report.presences[0]
        #expect(presence.replicas >= scenario.simulator.dht.k)
        #expect(presence.probesFound == presence.probes)
    }

    @Test func nodesJoiningThroughTheProtocolBuildTablesThatFindEveryRecord() {
        var sim = DHTSimulator(config: DHTSimulator.Config())
        for _ in 0..<100 {
            sim.join()
            sim.run(forMs: 50)
        }
        sim.run(forMs: 10_000)
        // Each joined node knows a good part of a network this small, and was verified by answering.
        let sizes = sim.aliveNodes.map { sim.nodes[$0].core!.contacts.count }
        #expect(sizes.min()! >= 20)
        let wallet = sim.makeWallet()
        sim.publish(from: 7, wallet: wallet)
        sim.run(forMs: 5_000)
        let lookups = sim.aliveNodes.map { sim.startLookup(from: $0, key: NodeID.key(for: wallet.address)) }
        sim.run(forMs: 10_000)
        #expect(lookups.allSatisfy { sim.finished[$0]?.record?.wallet == wallet.address })
    }

    /// 24 nodes started within 1.5 s in a random order, each bootstrapping from one random node earlier in the
    /// list, which is often not listening yet (its datagrams are lost). Without join retries the nodes whose
    /// target was down stay alone or in islands; with them every lookup from every node finds every record.
    @Test(arguments: [1, 2, 3, 4, 5] as [UInt64])
    func nodesStartedTogetherInAnyOrderConverge(seed: UInt64) {
        var config = DHTSimulator.Config()
        config.seed = seed
        var sim = DHTSimulator(config: config)
        var rng = SplitMix64(seed: seed &* 7919)
        let count = 24
        let nodes = (0..<count).map { _ in sim.addSilentNode() }
        let starts = nodes.map { (timeMs: Int64(rng.next() % 1_500), node: $0) }.sorted { $0 < $1 }
        let origin = sim.nowMs
        for start in starts {
            sim.run(until: origin + start.timeMs)
            let helpers = start.node == 0 ? [] : [nodes[Int(rng.next() % UInt64(start.node))]]
            sim.start(start.node, bootstrapFrom: helpers)
        }
        sim.run(forMs: 30_000)
        #expect(sim.aliveNodes.allSatisfy { sim.nodes[$0].core!.contactCount >= count / 2 })
        let wallets = (0..<4).map { _ in sim.makeWallet() }
        for (i, wallet) in wallets.enumerated() { sim.publish(from: nodes[i * 5], wallet: wallet) }
        sim.run(forMs: 5_000)
        let probes = nodes.flatMap { node in wallets.map { (sim.startLookup(from: node, key: NodeID.key(for: $0.address)), $0) } }
        sim.run(forMs: 10_000)
        let found = probes.count { sim.finished[$0.0]?.record?.wallet == $0.1.address }
        #expect(found == probes.count, "\(found) of \(probes.count) lookups found their record")
    }

    @Test func runsRepeatExactlyPerSeed() {
        func run(seed: UInt64) -> [Int] {
            var scenario = DHTScenario()
            scenario.nodes = 150
            scenario.records = 5
            scenario.lookups = 40
            scenario.windowMs = 30_000
            scenario.presences = 0
            scenario.simulator.seed = seed
            scenario.simulator.lossRate = 0.02
            let report = scenario.run(on: scenario.build())
            return report.outcomes.flatMap { [$0.rounds, $0.messages, Int($0.elapsedMs)] } + [report.datagrams]
        }
        let first = run(seed: 3), again = run(seed: 3), other = run(seed: 4)
        #expect(first == again)
        #expect(first != other)
    }

    @Test func partitionsCutNodesOffUntilTheyHeal() {
        var config = DHTSimulator.Config()
        config.dht.requestTimeoutMs = 500
        var sim = DHTSimulator(config: config)
        sim.addPopulatedNodes(200)
        let wallet = sim.makeWallet()
        let key = NodeID.key(for: wallet.address)
        sim.publish(from: 0, wallet: wallet)
        sim.run(forMs: 5_000)
        // Random halves: each half holds some of the k replicas, so lookups still succeed.
        sim.partition(into: 2)
        let halves = sim.aliveNodes.map { sim.startLookup(from: $0, key: key) }
        sim.run(forMs: 30_000)
        #expect(halves.allSatisfy { sim.finished[$0]?.record != nil })
        #expect(sim.datagramsLost > 0)
        // A node cut off from everyone fails its lookup (it ends; it does not hang), and succeeds after healing.
        sim.partition { $0 == 150 ? 1 : 0 }
        let alone = sim.startLookup(from: 150, key: key)
        sim.run(forMs: 30_000)
        #expect(sim.finished[alone] != nil && sim.finished[alone]?.record == nil)
        sim.heal()
        let healed = sim.startLookup(from: 150, key: key)
        sim.run(forMs: 30_000)
        #expect(sim.finished[healed]?.record != nil)
    }

    @Test func lookupsSucceedDespiteFivePercentLoss() {
        var config = DHTSimulator.Config()
        config.lossRate = 0.05
        var sim = DHTSimulator(config: config)
        sim.addPopulatedNodes(300)
        let wallet = sim.makeWallet()
        sim.publish(from: 1, wallet: wallet)
        sim.run(forMs: 5_000)
        let lookups = (0..<100).map { _ in sim.startLookup(from: sim.randomAliveNode(), key: NodeID.key(for: wallet.address)) }
        sim.run(forMs: 30_000)
        #expect(lookups.allSatisfy { sim.finished[$0]?.record != nil })
    }
}
