import MeshDHT
import MeshIdentity
import MeshTestKit

/// Deterministic keys and values for tests.
struct TestRandom {
    var rng: SplitMix64

    init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    mutating func key() -> PrivateKey { rng.privateKey() }

    mutating func id() -> NodeID { NodeID.random(using: &rng) }
}

func endpoint(_ text: String) -> DHTEndpoint { DHTEndpoint(parsing: text)! }

let t0: Int64 = 1_700_000_000_000

/// A few signed `DHTNode`s on a zero-latency network with a manual clock: node i listens at 10.0.0.(i+1):4460.
struct NodeNet {
    var nodes: [DHTNode]
    var now = t0
    var stored: [Int: [PresenceRecord]] = [:]
    var dropped: [Int: [NodeID]] = [:]
    var finished: [Int: [(LookupID, LookupOutcome)]] = [:]
    /// Every datagram in order, for replay and tampering tests.
    var wire: [(from: Int, to: Int, bytes: [UInt8])] = []
    /// The order in which each node's actions came out, as labels ("stored", "send").
    var actionLog: [Int: [String]] = [:]
    var drop: (Int, Int) -> Bool = { _, _ in false }
    /// How far each node's clock is from `now` (clock-skew tests).
    var clockOffsetMs: [Int: Int64] = [:]
    /// Clock-skew refusals each node reported for its log.
    var skewReports: [Int: [ClockSkewReport]] = [:]

    init(count: Int, seed: UInt64 = 1, config: DHTConfig = DHTConfig()) {
        var random = TestRandom(seed: seed)
        nodes = (0..<count).map { i in DHTNode(identity: random.key(), config: config, seed: seed &+ UInt64(i)) }
    }

    static func endpoint(_ i: Int) -> DHTEndpoint { DHTEndpoint(ip: [10, 0, 0, UInt8(i + 1)], port: 4460)! }
    static func index(_ e: DHTEndpoint) -> Int? { e.ip.count == 4 && e.ip[0] == 10 ? Int(e.ip[3]) - 1 : nil }

    func contact(_ i: Int) -> Contact { Contact(id: nodes[i].localID, endpoint: Self.endpoint(i)) }

    /// Node i's clock.
    func clock(_ i: Int) -> Int64 { now + clockOffsetMs[i, default: 0] }

    /// Delivers datagrams synchronously until quiet.
    mutating func run(_ actions: [DHTAction], at i: Int) {
        var queue = actions.map { (i, $0) }
        while !queue.isEmpty {
            let (node, action) = queue.removeFirst()
            switch action {
            case .send(let bytes, let to):
                actionLog[node, default: []].append("send")
                guard let target = Self.index(to), target < nodes.count else { continue }
                wire.append((node, target, bytes))
                if drop(node, target) { continue }
                queue += nodes[target].receive(bytes, from: Self.endpoint(node), nowMs: clock(target)).map { (target, $0) }
            case .recordStored(let record):
                actionLog[node, default: []].append("stored")
                stored[node, default: []].append(record)
            case .recordDropped(let key):
                dropped[node, default: []].append(key)
            case .lookupFinished(let id, let outcome):
                finished[node, default: []].append((id, outcome))
            case .clockSkew(let report):
                skewReports[node, default: []].append(report)
            }
        }
    }

    mutating func inject(_ bytes: [UInt8], from i: Int, to j: Int) {
        run(nodes[j].receive(bytes, from: Self.endpoint(i), nowMs: clock(j)), at: j)
    }

    /// Advances the clock in steps, ticking every node.
    mutating func advance(_ ms: Int64, step: Int64 = 250) {
        var left = ms
        while left > 0 {
            let d = min(step, left)
            now += d
            left -= d
            for i in nodes.indices { run(nodes[i].tick(nowMs: clock(i)), at: i) }
        }
    }

    /// Every node joins through node 0.
    mutating func joinAll() {
        for i in 1..<nodes.count { run(nodes[i].bootstrap([Self.endpoint(0)], nowMs: clock(i)), at: i) }
    }

    mutating func lookup(_ key: NodeID, from i: Int) -> LookupOutcome? {
        let (id, actions) = nodes[i].findValue(key, nowMs: clock(i))
        run(actions, at: i)
        return finished[i]?.last { $0.0 == id }?.1
    }
}
