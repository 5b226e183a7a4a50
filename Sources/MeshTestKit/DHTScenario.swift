import MeshDHT
import MeshIdentity

/// The churn experiment shared by the simulator test and `DHTBench` (docs/dht.md, "Benchmark"):
/// records are published, then during a window of virtual time a share of the nodes is replaced (each leaving
/// without a word, a fresh node joining through a random live one) while value lookups for the records start
/// from random live nodes; afterwards new presences are published and looked up from many nodes.
public struct DHTScenario: Sendable {
    public var nodes = 1_000
    /// Build the network with real joins (each node bootstraps through a random earlier one) rather than
    /// filling tables from global knowledge.
    public var joinByProtocol = false
    public var records = 50
    public var lookups = 500
    /// Share of the nodes replaced during the window.
    public var churn = 0.2
    public var windowMs: Int64 = 10 * 60_000
    /// New presences published after the window, and lookups for each from random nodes.
    public var presences = 3
    public var probesPerPresence = 200
    public var simulator = DHTSimulator.Config()

    public init() {}

    /// Builds the network and lets it settle.
    public func build() -> DHTSimulator {
        var sim = DHTSimulator(config: simulator)
        if joinByProtocol {
            for _ in 0..<nodes {
                sim.join()
                sim.run(forMs: 20)
            }
            sim.run(forMs: 60_000)
        } else {
            sim.addPopulatedNodes(nodes)
        }
        return sim
    }

    /// Runs the experiment on a built network (a copy: the caller's stays as it was).
    public func run(on built: DHTSimulator) -> DHTScenarioReport {
        var sim = built
        var keys: [NodeID] = []
        for _ in 0..<records {
            let wallet = sim.makeWallet()
            keys.append(NodeID.key(for: wallet.address))
            sim.publish(from: sim.randomAliveNode(), wallet: wallet)
        }
        sim.run(forMs: 10_000)

        // The window: churn steps and lookups, each spread evenly, in time order.
        let start = sim.nowMs
        let churnSteps = Int((Double(nodes) * churn).rounded())
        var timeline: [(timeMs: Int64, isLookup: Bool)] = []
        for i in 0..<churnSteps { timeline.append((start + windowMs * Int64(2 * i + 1) / Int64(2 * churnSteps), false)) }
        for i in 0..<lookups { timeline.append((start + windowMs * Int64(2 * i + 1) / Int64(2 * lookups), true)) }
        timeline.sort { ($0.timeMs, $0.isLookup ? 1 : 0) < ($1.timeMs, $1.isLookup ? 1 : 0) }
        var started: [DHTSimulator.LookupKey] = []
        var waiting: [DHTSimulator.LookupKey] = []
        for step in timeline {
            sim.run(until: step.timeMs)
            if step.isLookup {
                let key = sim.startLookup(from: sim.randomAliveNode(), key: sim.random(keys))
                started.append(key)
                waiting.append(key)
            } else {
                // Origins of lookups still running stay up: a lookup whose origin left did not fail.
                waiting.removeAll { sim.finished[$0] != nil }
                sim.replaceRandomNode(protecting: Set(waiting.map(\.node)))
            }
        }
        sim.run(forMs: 60_000)
        let outcomes = started.compactMap { sim.finished[$0] }

        // New presences: publish, let the STOREs land, then look them up from random nodes.
        var presenceReports: [PresenceReport] = []
        for _ in 0..<presences {
            let wallet = sim.makeWallet()
            let key = NodeID.key(for: wallet.address)
            sim.trackedKeys.insert(key)
            let published = sim.nowMs
            sim.publish(from: sim.randomAliveNode(), wallet: wallet)
            sim.run(forMs: 10_000)
            let lastStore = sim.storeTimes[key]?.map(\.timeMs).max()
            let probes = (0..<probesPerPresence).map { _ in sim.startLookup(from: sim.randomAliveNode(), key: key) }
            sim.run(forMs: 30_000)
            let found = probes.compactMap { sim.finished[$0] }
            presenceReports.append(PresenceReport(
                replicas: sim.storeTimes[key]?.count ?? 0,
                storedAfterMs: lastStore.map { $0 - published },
                probes: probes.count,
                probesFound: found.count { $0.record != nil },
                slowestProbeMs: found.map(\.elapsedMs).max() ?? 0))
        }
        return DHTScenarioReport(started: started.count, outcomes: outcomes, k: simulator.dht.k, alpha: simulator.dht.alpha,
                                 alive: sim.aliveNodes.count,
                                 isolated: sim.aliveNodes.count { sim.nodes[$0].core!.contactCount == 0 },
                                 datagrams: sim.datagramsSent, presences: presenceReports)
    }
}

public struct PresenceReport: Sendable {
    /// Nodes that stored the new record.
    public var replicas: Int
    /// From `publish` to the last replica storing it.
    public var storedAfterMs: Int64?
    public var probes: Int
    public var probesFound: Int
    public var slowestProbeMs: Int64
    /// Findable everywhere: the last STORE landed, plus the slowest lookup (from any of the probe origins)
    /// started after that.
    public var findableEverywhereMs: Int64? {
        guard probesFound == probes, let storedAfterMs else { return nil }
        return storedAfterMs + slowestProbeMs
    }
}

public struct DHTScenarioReport: Sendable {
    public var started: Int
    public var outcomes: [LookupOutcome]
    public var k: Int
    public var alpha: Int
    public var alive: Int
    /// Live nodes with an empty routing table at the end (a join that never got an answer).
    public var isolated: Int
    public var datagrams: Int
    public var presences: [PresenceReport]

    public var succeeded: Int { outcomes.count { $0.record != nil } }
    public var successRate: Double { started == 0 ? 0 : Double(succeeded) / Double(started) }
    /// Rounds of the successful lookups, sorted.
    public var rounds: [Int] { outcomes.filter { $0.record != nil }.map(\.rounds).sorted() }
    public var messages: [Int] { outcomes.map(\.messages).sorted() }
    public var elapsedMs: [Int64] { outcomes.filter { $0.record != nil }.map(\.elapsedMs).sorted() }
    /// Lookups that sent more than 3·α·rounds + k requests.
    public var overMessageBound: Int { outcomes.count { $0.messages > 3 * alpha * $0.rounds + k } }

    /// The value at quantile `q` (nearest rank) of sorted values.
    public static func quantile<T: Comparable>(_ sorted: [T], _ q: Double) -> T? {
        guard !sorted.isEmpty else { return nil }
        let rank = Int((q * Double(sorted.count)).rounded(.up)) - 1
        return sorted[min(max(rank, 0), sorted.count - 1)]
    }
}
