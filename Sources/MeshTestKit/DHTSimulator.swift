import MeshDHT
import MeshIdentity

/// Many DHT cores in one process on a virtual clock (docs/dht.md, "Simulator"): `MeshSimulator` with latency from
/// random coordinates, loss, partitions and churn, all drawn from one seeded generator, so a run repeats exactly.
///
/// The simulator drives the message-level core (`DHTProtocol`) and delivers `DHTPacket`s as they are, with the
/// sender's id as the envelope layer would have proven it: signing and recovering every message of a
/// 10,000-node network would cost minutes of secp256k1 work and test nothing the envelope tests don't. Node ids
/// are drawn from the seed. Presence records are real: signed by wallet keys made from the seed and validated
/// by the nodes that store and find them.
public struct DHTSimulator {
    public struct Config: Sendable {
        public var seed: UInt64 = 1
        public var dht = DHTConfig()
        /// One-way latency = `minLatencyMs` + distance in the unit square / √2 × `spanLatencyMs`, plus up to
        /// `jitter` of that, drawn per datagram.
        public var minLatencyMs = 5.0
        public var spanLatencyMs = 145.0
        public var jitter = 0.1
        /// Chance that a datagram is lost.
        public var lossRate = 0.0
        /// Virtual start time (Unix ms, so record expiry behaves as on a real clock).
        public var startMs: Int64 = 1_700_000_000_000
        public init() {}
    }

    /// A packet on the simulated wire, with its sender as the envelope layer would have proven it.
    public struct Datagram: Sendable {
        public let packet: DHTPacket
        public let sender: Contact
    }

    public struct Node: SimNode, Sendable {
        /// Nil once the node has left.
        public fileprivate(set) var core: DHTProtocol?
        public let contact: Contact
        /// False for a node added with `addSilentNode()` until `start(_:bootstrapFrom:)`: datagrams to it are lost.
        public fileprivate(set) var isListening = true
        public var isAlive: Bool { core != nil }

        public mutating func receive(_ datagram: Datagram, from sender: Int, now: Int64) -> [DHTProtocolAction] {
            core!.handle(datagram.packet, from: datagram.sender, nowMs: now)
        }

        public mutating func tick(now: Int64) -> [DHTProtocolAction] { core!.tick(nowMs: now) }

        public var nextDeadline: Int64? { core?.nextTimeoutMs }

        public func route(_ action: DHTProtocolAction) -> SimRoute<Datagram> {
            switch action {
            case .send(let packet, let endpoint):
                .send(Datagram(packet: packet, sender: contact), to: DHTSimulator.index(of: endpoint) ?? -1)
            case .lookupFinished, .recordStored:
                .event
            case .recordDropped:
                .ignore
            }
        }
    }

    /// A lookup started with `startLookup`, by its origin node.
    public struct LookupKey: Hashable, Sendable {
        public let node: Int
        public let id: LookupID
    }

    public let config: Config
    public var nowMs: Int64 { network.nowMs }
    public var nodes: [Node] { network.nodes }
    /// Outcomes of lookups started with `startLookup`.
    public private(set) var finished: [LookupKey: LookupOutcome] = [:]
    /// When each node stored a record, for the keys in `trackedKeys`.
    public private(set) var storeTimes: [NodeID: [(node: Int, timeMs: Int64)]] = [:]
    public var trackedKeys: Set<NodeID> = []
    public var datagramsSent: Int { network.datagramsSent }
    public var datagramsLost: Int { network.datagramsLost }
    public var lossRate: Double {
        get { network.lossRate }
        set { network.lossRate = newValue }
    }

    private var network: MeshSimulator<Node>
    private var alive: [Int] = []
    private var alivePosition: [Int: Int] = [:]

    public init(config: Config) {
        self.config = config
        var network = MeshSimulator<Node>.Config()
        network.seed = config.seed
        network.startMs = config.startMs
        network.latency = .coordinates(minMs: config.minLatencyMs, spanMs: config.spanLatencyMs)
        network.jitter = config.jitter
        network.reorders = true
        network.lossRate = config.lossRate
        self.network = MeshSimulator(config: network)
    }

    // MARK: building the network

    /// Adds `count` nodes whose routing tables are filled from global knowledge (up to k random contacts in
    /// every bucket, unverified, as if restored from storage): a large network in moments, without running
    /// thousands of joins.
    public mutating func addPopulatedNodes(_ count: Int) {
        let first = nodes.count
        for _ in 0..<count { _ = makeNode() }
        let everyone = alive.map { (nodes[$0].contact.id, $0) }.sorted { $0.0 < $1.0 }
        let ids = everyone.map(\.0)
        for index in first..<nodes.count {
            let id = nodes[index].contact.id
            var contacts: [Contact] = []
            for bucket in stride(from: 255, through: 0, by: -1) {
                let range = id.bucketRange(bucket)
                let low = Self.lowerBound(ids, range.lowerBound), high = Self.upperBound(ids, range.upperBound)
                if low < high {
                    contacts += sample(config.dht.k, from: low..<high).map { nodes[everyone[$0].1].contact }
                }
            }
            let now = nowMs
            network[node: index].core!.restore(contacts: contacts, records: [], nowMs: now)
        }
    }

    /// Adds one node that joins through the DHT protocol, bootstrapping from a random live node (or nothing,
    /// for the first). Returns its index.
    @discardableResult
    public mutating func join() -> Int {
        let helper = alive.isEmpty ? nil : alive[Int.random(in: 0..<alive.count, using: &network.rng)]
        let index = makeNode()
        let endpoints = helper.map { [nodes[$0].contact.endpoint] } ?? []
        act(at: index) { $0.bootstrap(endpoints, nowMs: $1) }
        return index
    }

    /// Adds a node that is not started yet: it has an id and an endpoint, datagrams to it are lost (as to a
    /// process that has not bound its port), and it is not among `aliveNodes` until `start`.
    public mutating func addSilentNode() -> Int {
        let index = makeNode()
        network[node: index].isListening = false
        network.setListening(index, false)
        alive.removeLast()
        alivePosition[index] = nil
        return index
    }

    /// Starts a node added with `addSilentNode()`: it listens and bootstraps from the given nodes' endpoints
    /// (which may not be listening yet).
    public mutating func start(_ index: Int, bootstrapFrom helpers: [Int]) {
        precondition(!nodes[index].isListening, "node \(index) already started")
        network[node: index].isListening = true
        network.setListening(index, true)
        alivePosition[index] = alive.count
        alive.append(index)
        let endpoints = helpers.map { nodes[$0].contact.endpoint }
        act(at: index) { $0.bootstrap(endpoints, nowMs: $1) }
    }

    /// The node leaves without a word (crash or disconnect); datagrams to it are lost.
    public mutating func kill(_ index: Int) {
        guard nodes[index].isAlive, let position = alivePosition.removeValue(forKey: index) else { return }
        network.kill(index)
        network[node: index].core = nil
        let last = alive.removeLast()
        if last != index {
            alive[position] = last
            alivePosition[last] = position
        }
    }

    /// Churn step: a random live node outside `protected` leaves and a new node joins.
    public mutating func replaceRandomNode(protecting protected: Set<Int> = []) {
        for _ in 0..<100 {
            let victim = alive[Int.random(in: 0..<alive.count, using: &network.rng)]
            if protected.contains(victim) { continue }
            kill(victim)
            break
        }
        join()
    }

    /// Splits the live nodes into `groups` random groups; datagrams between groups are lost until `heal()`.
    public mutating func partition(into groups: Int) {
        var groupOf: [Int: Int] = [:]
        for index in alive { groupOf[index] = Int.random(in: 0..<groups, using: &network.rng) }
        network.partition(groupOf)
    }

    /// Puts each live node in the group `groupOf` gives it; datagrams between groups are lost until `heal()`.
    public mutating func partition(by groupOf: (Int) -> Int) {
        network.partition(Dictionary(uniqueKeysWithValues: alive.map { ($0, groupOf($0)) }))
    }

    public mutating func heal() { network.heal() }

    // MARK: driving nodes

    public var aliveNodes: [Int] { alive }

    public mutating func randomAliveNode() -> Int { alive[Int.random(in: 0..<alive.count, using: &network.rng)] }

    public mutating func random<T>(_ choices: [T]) -> T { choices[Int.random(in: 0..<choices.count, using: &network.rng)] }

    /// Starts a value lookup at `node`; its outcome lands in `finished`.
    @discardableResult
    public mutating func startLookup(from node: Int, key: NodeID) -> LookupKey {
        var lookup: LookupID?
        act(at: node) {
            let (id, actions) = $0.findValue(key, nowMs: $1)
            lookup = id
            return actions
        }
        return LookupKey(node: node, id: lookup!)
    }

    /// `node` publishes a presence record for `wallet` (its own endpoint as the home endpoint).
    public mutating func publish(from node: Int, wallet: PrivateKey) {
        let endpoint = nodes[node].contact.endpoint
        act(at: node) { $0.publish(wallet: wallet, endpoints: [endpoint], relays: [], nowMs: $1) }
    }

    /// A wallet key drawn from the simulation's generator (so records repeat exactly per seed).
    public mutating func makeWallet() -> PrivateKey { network.rng.privateKey() }

    /// Runs every event up to and including `timeMs`; the clock ends at `timeMs`.
    public mutating func run(until timeMs: Int64) {
        network.run(until: timeMs)
        takeEvents()
    }

    public mutating func run(forMs duration: Int64) { run(until: nowMs + duration) }

    /// The one-way latency between two nodes before jitter.
    public func baseLatencyMs(_ a: Int, _ b: Int) -> Double { network.baseLatencyMs(a, b) }

    /// Which node listens at `endpoint` (endpoints encode the index: 16+i>>16 . i>>8 . i . 1).
    public static func index(of endpoint: DHTEndpoint) -> Int? {
        guard let ip = endpoint.ipv4, ip & 0xff == 1, ip >> 24 >= 16 else { return nil }
        return Int(ip >> 8) - (16 << 16)
    }

    // MARK: internals

    private mutating func makeNode() -> Int {
        let index = nodes.count
        precondition(index < 240 << 16, "too many simulated nodes")
        let endpoint = DHTEndpoint(ip: [UInt8(16 + index >> 16), UInt8(index >> 8 & 0xff), UInt8(index & 0xff), 1],
                                   port: 4460)!
        let id = NodeID.random(using: &network.rng)
        let core = DHTProtocol(localID: id, config: config.dht, seed: network.rng.next())
        network.add(Node(core: core, contact: Contact(id: id, endpoint: endpoint)))
        alivePosition[index] = alive.count
        alive.append(index)
        return index
    }

    /// Runs `body` on node `index`'s core at the current time and carries out the actions it returns.
    private mutating func act(at index: Int, _ body: (inout DHTProtocol, Int64) -> [DHTProtocolAction]) {
        let now = nowMs
        let actions = body(&network[node: index].core!, now)
        network.perform(actions, at: index)
        takeEvents()
    }

    /// Files the lookup outcomes and (tracked) stores the nodes reported.
    private mutating func takeEvents() {
        for event in network.takeEvents() {
            switch event.action {
            case .lookupFinished(let id, let outcome):
                finished[LookupKey(node: event.node, id: id)] = outcome
            case .recordStored(let record):
                if trackedKeys.contains(record.key) { storeTimes[record.key, default: []].append((event.node, event.timeMs)) }
            case .send, .recordDropped:
                break
            }
        }
    }

    /// Up to `count` distinct random positions of `range`.
    private mutating func sample(_ count: Int, from range: Range<Int>) -> [Int] {
        if range.count <= count { return Array(range) }
        var chosen: [Int] = []
        var seen: Set<Int> = []
        while chosen.count < count {
            let pick = Int.random(in: range, using: &network.rng)
            if seen.insert(pick).inserted { chosen.append(pick) }
        }
        return chosen
    }

    private static func lowerBound(_ ids: [NodeID], _ value: NodeID) -> Int {
        var low = 0, high = ids.count
        while low < high {
            let mid = (low + high) / 2
            if ids[mid] < value { low = mid + 1 } else { high = mid }
        }
        return low
    }

    private static func upperBound(_ ids: [NodeID], _ value: NodeID) -> Int {
        var low = 0, high = ids.count
        while low < high {
            let mid = (low + high) / 2
            if ids[mid] <= value { low = mid + 1 } else { high = mid }
        }
        return low
    }
}
