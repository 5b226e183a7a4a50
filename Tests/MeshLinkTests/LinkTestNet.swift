import MeshIdentity
@testable import MeshLink
import MeshTestKit
import MeshWire
import Testing

/// Link managers on the simulator: endpoint = node index, zero latency, every datagram on the wire kept.
/// Each call runs the network until nothing is left to deliver at the current time.
struct LinkTestNet {
    var sim: MeshSimulator<LinkNode>
    /// How far a node's wall clock is off the network's (ms); every node's monotonic clock is `now`.
    var clockOffset: [Int: Int64] = [:] {
        didSet { for i in sim.nodes.indices { sim[node: i].core.clock = WallClock(offsetMs: clockOffset[i, default: 0]) } }
    }

    init(count: Int, config: LinkConfig = LinkConfig()) {
        var simConfig = MeshSimulator<LinkNode>.Config()
        simConfig.earlyTickCheck = .everyInput
        simConfig.logsWire = true
        sim = MeshSimulator(config: simConfig)
        for i in 0..<count {
            sim.add(LinkNode(LinkManager(identity: PrivateKey(), config: config, random: .seeded(42 + UInt64(i)))))
        }
    }

    /// The cores, read and driven in place.
    var nodes: [LinkManager<Int>] {
        get { sim.nodes.map(\.core) }
        set { for (i, core) in newValue.enumerated() { sim[node: i].core = core } }
    }

    var now: Int64 { sim.nowMs }
    var delivered: [Int: [(payload: [UInt8], from: WalletAddress)]] {
        events { if case .deliver(let payload, let from) = $0 { (payload, from) } else { nil } }
    }
    var ups: [Int: [WalletAddress]] { events { if case .up(let peer, _) = $0 { peer } else { nil } } }
    var downs: [Int: [WalletAddress]] { events { if case .down(let peer, _) = $0 { peer } else { nil } } }
    var refused: [Int: [String]] { events { if case .refused(_, let reason) = $0 { reason } else { nil } } }
    /// Every datagram that crossed the network, for replay and tampering tests.
    var wire: [(from: Int, to: Int, bytes: [UInt8])] { sim.wire.map { ($0.from, $0.to, $0.datagram) } }
    /// Datagrams to drop (by predicate on sender and receiver).
    var drop: (Int, Int) -> Bool {
        get { sim.drop ?? { _, _ in false } }
        set { sim.drop = newValue }
    }

    func address(_ i: Int) -> WalletAddress { sim.nodes[i].core.localAddress }

    /// The events of one kind, by node.
    private func events<T>(_ pick: (LinkAction<Int>) -> T?) -> [Int: [T]] {
        var found: [Int: [T]] = [:]
        for event in sim.events {
            if let value = pick(event.action) { found[event.node, default: []].append(value) }
        }
        return found
    }

    /// Carries out the actions node `i` produced and runs until nothing is left to deliver now.
    mutating func run(_ actions: [LinkAction<Int>], at i: Int) {
        sim.perform(actions, at: i)
        settle()
    }

    mutating func connect(_ i: Int, to j: Int, pinned: WalletAddress? = nil) {
        let actions = sim[node: i].core.connect(to: j, pinned: pinned, now: now)
        run(actions, at: i)
    }

    mutating func send(_ payload: [UInt8], from i: Int, to j: Int) {
        let actions = sim[node: i].core.send(payload, to: address(j), now: now)
        run(actions, at: i)
    }

    /// Every tick the simulator's check found acting before the node's deadline is a test issue.
    private mutating func checkTicks() {
        for fault in sim.takeEarlyTickFaults() { Issue.record(Comment(rawValue: fault)) }
    }

    /// Advances virtual time, each node ticked at its deadlines.
    mutating func advance(_ ms: Int64) {
        sim.run(forMs: ms)
        checkTicks()
    }

    /// Feeds raw bytes to node `to` as if they came from endpoint `from`.
    mutating func inject(_ bytes: [UInt8], from: Int, to: Int) {
        sim.inject(bytes, from: from, to: to)
        settle()
    }

    private mutating func settle() {
        sim.run(until: now)
        checkTicks()
    }
}
