import MeshTestKit
import Testing

/// The simulator itself, on a toy node: latency, loss, partitions, kills, ticks and the early-tick check.
@Suite struct MeshSimulatorTests {
    /// Answers each datagram (a hop budget) to its sender with one hop less, and reports each tick at its deadline;
    /// with `actsEarly` it also reports ticks before the deadline (the fault the check is for).
    struct EchoNode: SimNode {
        enum Action: Equatable {
            case send(Int, to: Int)
            case heard(Int, from: Int)
            case ticked
        }

        var deadline: Int64?
        var actsEarly = false

        mutating func receive(_ datagram: Int, from sender: Int, now: Int64) -> [Action] {
            [.heard(datagram, from: sender)] + (datagram > 0 ? [.send(datagram - 1, to: sender)] : [])
        }

        mutating func tick(now: Int64) -> [Action] {
            guard let due = deadline, due <= now || actsEarly else { return [] }
            if due <= now { deadline = nil }
            return [.ticked]
        }

        var nextDeadline: Int64? { deadline }

        func route(_ action: Action) -> SimRoute<Int> {
            if case .send(let hops, let to) = action { return .send(hops, to: to) }
            return .event
        }
    }

    typealias Sim = MeshSimulator<EchoNode>

    static func network(_ count: Int, configure: (inout Sim.Config) -> Void = { _ in }) -> Sim {
        var config = Sim.Config()
        config.startMs = 0
        configure(&config)
        var sim = Sim(config: config)
        for _ in 0..<count { sim.add(EchoNode()) }
        return sim
    }

    /// The datagrams node `node` took, in order: [hop budget, sender, time].
    static func arrivals(_ sim: Sim, at node: Int) -> [[Int64]] {
        sim.events.compactMap {
            guard $0.node == node, case .heard(let hops, let from) = $0.action else { return nil }
            return [Int64(hops), Int64(from), $0.timeMs]
        }
    }

    @Test func datagramsTakeTheirLinksLatency() {
        var sim = Self.network(3) { $0.latency = .fixed(ms: 20) }
        sim.linkLatencyMs[SimLink(0, 2)] = 75
        sim.perform([.send(3, to: 1), .send(1, to: 2)], at: 0)
        let quiet = sim.runUntilQuiet()
        #expect(quiet)
        #expect(Self.arrivals(sim, at: 1) == [[3, 0, 20], [1, 0, 60]])
        #expect(Self.arrivals(sim, at: 0) == [[2, 1, 40], [0, 1, 80], [0, 2, 150]])
        #expect(Self.arrivals(sim, at: 2) == [[1, 0, 75]])
        #expect(sim.nowMs == 150, "the clock stays at the last delivery")

        var spread = Self.network(40) {
            $0.latency = .coordinates(minMs: 5, spanMs: 100)
            $0.jitter = 0.5
        }
        for i in 1..<40 {
            let base = spread.baseLatencyMs(0, i)
            #expect(base >= 5 && base <= 105 && base == spread.baseLatencyMs(i, 0))
            spread.perform([.send(0, to: i)], at: 0)
            spread.run(forMs: 200)
            let latency = Double(Self.arrivals(spread, at: i).first![2] - (spread.nowMs - 200))
            #expect(latency >= base.rounded(.down) && latency <= (base * 1.5).rounded(.up), "\(latency) ms for \(base) ms")
        }
    }

    @Test func lossPartitionsCutsAndKillsLoseDatagrams() {
        var sim = Self.network(4) { $0.lossRate = 0.3 }
        for _ in 0..<2_000 { sim.perform([.send(0, to: 1)], at: 0) }
        sim.runUntilQuiet()
        #expect(abs(sim.datagramsLost - 600) < 90, "\(sim.datagramsLost) of 2,000 lost")
        #expect(sim.datagramsDelivered == 2_000 - sim.datagramsLost)

        var net = Self.network(4)
        net.linkLoss[SimLink(0, 1)] = 1
        net.cut = [SimLink(0, 2)]
        net.perform([.send(0, to: 1), .send(0, to: 2), .send(0, to: 3)], at: 0)
        net.runUntilQuiet()
        #expect(net.datagramsDelivered == 1 && Self.arrivals(net, at: 3) == [[0, 0, 0]])
        net.partition([0: 0, 1: 0, 2: 1, 3: 1])
        net.linkLoss = [:]
        net.cut = []
        net.perform([.send(0, to: 1), .send(0, to: 2), .send(0, to: 3)], at: 0)
        net.runUntilQuiet()
        #expect(net.datagramsDelivered == 2, "only the one within the group")
        net.heal()
        net.kill(3)
        net.perform([.send(0, to: 2), .send(0, to: 3)], at: 0)
        net.perform([.send(0, to: 0)], at: 3)
        net.runUntilQuiet()
        #expect(net.datagramsDelivered == 3, "nothing to or from the killed node")
        net.revive(3)
        net.perform([.send(0, to: 3)], at: 0)
        net.runUntilQuiet()
        #expect(net.datagramsDelivered == 4)

        var late = Self.network(2) { $0.latency = .fixed(ms: 50) }
        late.perform([.send(0, to: 1)], at: 0)
        late.run(forMs: 10)
        late.kill(1)
        late.run(forMs: 100)
        #expect(late.datagramsDelivered == 0, "a datagram in flight to a node killed meanwhile vanishes")
    }

    @Test func nodesAreTickedAtTheirDeadlinesAndEarlyActingIsCaught() {
        var sim = Self.network(2) { $0.earlyTickCheck = .everyInput }
        sim[node: 0].deadline = 500
        sim[node: 1].deadline = 300
        sim.run(until: 1_000)
        let ticks = sim.events.filter { $0.action == .ticked }.map { [$0.node, Int($0.timeMs)] }
        #expect(ticks == [[1, 300], [0, 500]])
        #expect(sim.takeEarlyTickFaults().isEmpty)

        sim[node: 0].actsEarly = true
        sim[node: 0].deadline = 2_000
        sim.perform([.send(0, to: 0)], at: 1)
        sim.run(until: 3_000)
        let faults = sim.takeEarlyTickFaults()
        #expect(faults.count == 2, "\(faults)")
        #expect(faults.contains("node 0 ticked at 1000, before its deadline 2000, acted"), "before the datagram it took")
        #expect(faults.contains("node 0 ticked at 1999, before its deadline 2000, acted"), "the millisecond before its deadline")

        var cadence = Self.network(1) { $0.earlyTickCheck = .every(ms: 250) }
        cadence[node: 0].actsEarly = true
        cadence[node: 0].deadline = 600
        cadence.run(until: 1_000)
        #expect(cadence.takeEarlyTickFaults() == ["node 0 ticked at 250, before its deadline 600, acted",
                                                  "node 0 ticked at 500, before its deadline 600, acted"])
    }

    @Test func runsRepeatExactlyPerSeed() {
        func run(seed: UInt64) -> [Int64] {
            var sim = Self.network(10) {
                $0.seed = seed
                $0.latency = .coordinates(minMs: 5, spanMs: 50)
                $0.jitter = 0.3
                $0.lossRate = 0.2
            }
            for i in 0..<10 { sim.perform([.send(6, to: (i + 3) % 10)], at: i) }
            sim.runUntilQuiet()
            return sim.events.map { $0.timeMs * 100 + Int64($0.node) }
        }
        #expect(run(seed: 4) == run(seed: 4))
        #expect(run(seed: 4) != run(seed: 5))
    }
}
