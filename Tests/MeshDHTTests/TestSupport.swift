import MeshDHT
import MeshIdentity
import MeshTestKit
import Testing

/// Deterministic keys and values for tests.
struct TestRandom {
    var rng: SplitMix64

    init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    mutating func key() -> PrivateKey { rng.privateKey() }

    mutating func id() -> NodeID { NodeID.random(using: &rng) }
}

func endpoint(_ text: String) -> DHTEndpoint { DHTEndpoint(parsing: text)! }

let t0: Int64 = 1_700_000_000_000

/// A few signed `DHTNode`s on the simulator: zero latency, each call runs until nothing is left to deliver now;
/// node i listens at 10.0.0.(i+1):4460.
struct NodeNet {
    var sim: MeshSimulator<DHTEnvelopeNode>
    var stored: [Int: [PresenceRecord]] = [:]
    var dropped: [Int: [NodeID]] = [:]
    var finished: [Int: [(LookupID, LookupOutcome)]] = [:]
    /// The order in which each node's actions came out, as labels ("stored", "send").
    var actionLog: [Int: [String]] = [:]
    /// Clock-skew refusals each node reported for its log.
    var skewReports: [Int: [ClockSkewReport]] = [:]
    /// How far each node's clock is from `now` (clock-skew tests).
    var clockOffsetMs: [Int: Int64] = [:] {
        didSet { for i in sim.nodes.indices { sim[node: i].offsetMs = clockOffsetMs[i, default: 0] } }
    }
    /// How much of the wire `actionLog` has seen.
    private var wireSeen = 0

    init(count: Int, seed: UInt64 = 1, config: DHTConfig = DHTConfig()) {
        var random = TestRandom(seed: seed)
        var simConfig = MeshSimulator<DHTEnvelopeNode>.Config()
        simConfig.startMs = t0
        simConfig.logsWire = true
        simConfig.earlyTickCheck = .everyInput
        sim = MeshSimulator(config: simConfig)
        for i in 0..<count { sim.add(DHTEnvelopeNode(DHTNode(identity: random.key(), config: config, seed: seed &+ UInt64(i)))) }
    }

    static func endpoint(_ i: Int) -> DHTEndpoint { DHTEnvelopeNode.endpoint(i) }

    /// The nodes, read and driven in place.
    var nodes: [DHTNode] {
        get { sim.nodes.map(\.core) }
        set { for (i, core) in newValue.enumerated() { sim[node: i].core = core } }
    }

    var now: Int64 { sim.nowMs }
    /// Every datagram to a node in order, for replay and tampering tests.
    var wire: [(from: Int, to: Int, bytes: [UInt8])] {
        sim.wire.filter { sim.nodes.indices.contains($0.to) }.map { ($0.from, $0.to, $0.datagram) }
    }
    var drop: (Int, Int) -> Bool {
        get { sim.drop ?? { _, _ in false } }
        set { sim.drop = newValue }
    }

    func contact(_ i: Int) -> Contact { Contact(id: sim.nodes[i].core.localID, endpoint: Self.endpoint(i)) }

    /// Node i's clock.
    func clock(_ i: Int) -> Int64 { now + clockOffsetMs[i, default: 0] }

    /// Carries out the actions node `i` produced and runs until nothing is left to deliver now.
    mutating func run(_ actions: [DHTAction], at i: Int) {
        sim.perform(actions, at: i)
        run(until: now)
    }

    mutating func inject(_ bytes: [UInt8], from i: Int, to j: Int) {
        sim.inject(bytes, from: i, to: j)
        run(until: now)
    }

    /// Advances the clock, each node ticked at its deadlines.
    mutating func advance(_ ms: Int64) { run(until: now + ms) }

    /// Runs the network to `time` and files what the nodes reported.
    private mutating func run(until time: Int64) {
        sim.run(until: time)
        for fault in sim.takeEarlyTickFaults() { Issue.record(Comment(rawValue: fault)) }
        let events = sim.takeEvents()
        var logged = events.compactMap { event -> (order: Int, node: Int, label: String)? in
            switch event.action {
            case .recordStored(let record):
                stored[event.node, default: []].append(record)
                return (event.order, event.node, "stored")
            case .recordDropped(let key):
                dropped[event.node, default: []].append(key)
            case .lookupFinished(let id, let outcome):
                finished[event.node, default: []].append((id, outcome))
            case .clockSkew(let report):
                skewReports[event.node, default: []].append(report)
            case .send:
                break
            }
            return nil
        }
        logged += sim.wire[wireSeen...].map { ($0.order, $0.from, "send") }
        wireSeen = sim.wire.count
        for entry in logged.sorted(by: { $0.order < $1.order }) { actionLog[entry.node, default: []].append(entry.label) }
    }

    /// Every node joins through node 0.
    mutating func joinAll() {
        for i in 1..<sim.nodes.count {
            let now = clock(i)
            run(sim[node: i].core.bootstrap([Self.endpoint(0)], nowMs: now), at: i)
        }
    }

    mutating func lookup(_ key: NodeID, from i: Int) -> LookupOutcome? {
        let now = clock(i)
        let (id, actions) = sim[node: i].core.findValue(key, nowMs: now)
        run(actions, at: i)
        return finished[i]?.last { $0.0 == id }?.1
    }
}
