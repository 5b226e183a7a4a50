import MeshIdentity
@testable import MeshRouting
import MeshTestKit
import Testing

/// A node's routes in a `RelayNet`: the links in the graph are the links up; next hops by BFS distance in the
/// whole graph (avoiding nothing), nearest first, then by address; fixed figures.
struct GraphRoutes: RelayRoutes {
    let local: Int
    let addresses: [WalletAddress]
    let index: [WalletAddress: Int]
    let neighbours: [Int]
    let distances: [[Int]]
    var rttMs: Double = 10

    func isUp(_ node: WalletAddress) -> Bool { index[node].map { neighbours.contains($0) } ?? false }

    func nextHops(toward target: WalletAddress, within links: Int) -> [WalletAddress] {
        guard let t = index[target] else { return [] }
        return neighbours.filter { distances[$0][t] <= links - 1 }
            .sorted { (distances[$0][t], $0) < (distances[$1][t], $1) }
            .map { addresses[$0] }
    }

    func figures(_ neighbour: WalletAddress) -> HopFigures { HopFigures(node: addresses[local], rttMs: rttMs, lossPercent: 0) }
}

/// `RelayEngine`s on the simulator, on a graph: every `.send` is delivered at once (in order) to the neighbour's
/// engine unless the link is gone, cut or loses it, or either end is killed; time advances in steps of 50 ms,
/// each node ticked at its deadlines. Node indices are in address order, so ties between next hops go to the
/// lower index.
struct RelayNet {
    static let tickMs: Int64 = 50
    static let unreachable = 1_000_000

    struct Delivery: Equatable {
        var call: UInt64
        var bytes: [UInt8]
    }
    struct Failure {
        var call: UInt64
        var why: String
        var at: Int64
    }
    struct Switch {
        var call: UInt64
        var from: [WalletAddress]
        var to: [WalletAddress]
        var why: String
        var at: Int64
    }
    struct Logged {
        var from: Int
        var to: Int
        var message: ChainMessage?
    }

    var sim: MeshSimulator<RelayNode<GraphRoutes>>
    let addresses: [WalletAddress]
    let index: [WalletAddress: Int]
    private(set) var distances: [[Int]] = []
    private var adjacency: [[Int]] = []
    /// Nodes whose messages (both ways) vanish; their neighbours are not told.
    var killed: Set<Int> = [] {
        didSet {
            for i in killed.subtracting(oldValue) { sim.kill(i) }
            for i in oldValue.subtracting(killed) { sim.revive(i) }
        }
    }
    /// What every node measures of each of its links.
    var rttMs: Double = 10 {
        didSet { recompute() }
    }
    let wallet: PrivateKey

    init(count: Int, edges: [(Int, Int)], seed: UInt64 = 1, config: (Int) -> RelayConfig = { _ in RelayConfig() }) {
        var simConfig = MeshSimulator<RelayNode<GraphRoutes>>.Config()
        simConfig.seed = seed
        simConfig.startMs = 1_000_000
        // A caller's chains are watched on every tick (its deadline is the `watchMs` cadence), so the check runs on
        // that cadence rather than before every input.
        simConfig.earlyTickCheck = .every(ms: RelayEngine.watchMs)
        simConfig.logsWire = true
        var sim = MeshSimulator<RelayNode<GraphRoutes>>(config: simConfig)
        wallet = sim.rng.privateKey()
        let addresses = (0..<count).map { _ in WalletAddress(bytes: sim.rng.bytes(20))! }.sorted()
        self.addresses = addresses
        index = Dictionary(uniqueKeysWithValues: addresses.enumerated().map { ($1, $0) })
        sim.links = Set(edges.map { SimLink($0.0, $0.1) })
        let directory = SimDirectory(addresses)
        for i in 0..<count {
            let engine = RelayEngine(local: addresses[i], config: config(i), random: .seeded(sim.rng.next()))
            sim.add(RelayNode(engine, routes: GraphRoutes(local: i, addresses: addresses, index: [:], neighbours: [], distances: []),
                              directory: directory))
        }
        self.sim = sim
        recompute()
    }

    /// 0 – 1 – … – (count-1).
    static func line(_ count: Int, seed: UInt64 = 1, config: (Int) -> RelayConfig = { _ in RelayConfig() }) -> RelayNet {
        RelayNet(count: count, edges: (1..<count).map { ($0 - 1, $0) }, seed: seed, config: config)
    }

    /// 0 – 1 – 3 and 0 – 2 – 3.
    static func diamond(seed: UInt64 = 1, config: (Int) -> RelayConfig = { _ in RelayConfig() }) -> RelayNet {
        RelayNet(count: 4, edges: [(0, 1), (1, 3), (0, 2), (2, 3)], seed: seed, config: config)
    }

    /// The engines, read and driven in place.
    var engines: [RelayEngine] {
        get { sim.nodes.map(\.core) }
        set { for (i, core) in newValue.enumerated() { sim[node: i].core = core } }
    }

    var now: Int64 { sim.nowMs }
    /// The links of the graph.
    var edges: Set<SimLink> { sim.links ?? [] }
    /// Links that lose everything while still up.
    var cut: Set<SimLink> {
        get { sim.cut }
        set { sim.cut = newValue }
    }
    /// Links that lose each message with this probability.
    var loss: [SimLink: Double] {
        get { sim.linkLoss }
        set { sim.linkLoss = newValue }
    }

    var delivered: [[Delivery]] { events { if case .deliver(let call, let bytes) = $0.action { Delivery(call: call, bytes: bytes) } else { nil } } }
    var ups: [[UInt64]] { events { if case .chainUp(let call) = $0.action { call } else { nil } } }
    var failures: [[Failure]] {
        events { if case .chainFailed(let call, let why) = $0.action { Failure(call: call, why: why, at: $0.timeMs) } else { nil } }
    }
    var switches: [[Switch]] {
        events {
            guard case .chainSwitched(let call, let old, let new, let why) = $0.action else { return nil }
            return Switch(call: call, from: old, to: new, why: why, at: $0.timeMs)
        }
    }
    /// Each relay's judgements, as it asked for them to be signed and sent.
    var judged: [[(key: ChainKey, tier: QualityTier, sample: QualitySample)]] {
        events { if case .judged(let key, let tier, let sample) = $0.action { (key, tier, sample) } else { nil } }
    }
    /// Every control message delivered, parsed.
    var control: [Logged] {
        sim.wire.filter { !$0.lost && !ChainMessage.isData($0.datagram) }
            .map { Logged(from: $0.from, to: $0.to, message: ChainMessage(parsing: $0.datagram)) }
    }

    /// The events of one kind, by node.
    private func events<T>(_ pick: (MeshSimulator<RelayNode<GraphRoutes>>.Event) -> T?) -> [[T]] {
        var found = Array(repeating: [T](), count: addresses.count)
        for event in sim.events {
            if let value = pick(event) { found[event.node].append(value) }
        }
        return found
    }

    private mutating func recompute() {
        let n = addresses.count
        adjacency = Array(repeating: [], count: n)
        for e in edges {
            adjacency[e.a].append(e.b)
            adjacency[e.b].append(e.a)
        }
        for i in 0..<n { adjacency[i].sort() }
        distances = (0..<n).map { bfs(from: $0) }
        for i in 0..<n { sim[node: i].routes = routes(i) }
    }

    /// Shortest distances from `source` (through `through` nodes only, the ends excepted).
    func bfs(from source: Int, through: (Int) -> Bool = { _ in true }) -> [Int] {
        var d = Array(repeating: Self.unreachable, count: addresses.count)
        d[source] = 0
        var queue = [source], head = 0
        while head < queue.count {
            let u = queue[head]
            head += 1
            guard u == source || through(u) else { continue }
            for v in adjacency[u] where d[v] == Self.unreachable {
                d[v] = d[u] + 1
                queue.append(v)
            }
        }
        return d
    }

    func routes(_ i: Int) -> GraphRoutes {
        GraphRoutes(local: i, addresses: addresses, index: index, neighbours: adjacency[i], distances: distances, rttMs: rttMs)
    }

    func address(_ i: Int) -> WalletAddress { addresses[i] }
    func node(_ checksummed: String) -> Int? { addresses.firstIndex { $0.checksummed == checksummed } }

    /// Removes a link from the graph (and the routes); the ends are told only with `tell`.
    mutating func unlink(_ i: Int, _ j: Int, tell: [Int]) {
        sim.links?.remove(SimLink(i, j))
        recompute()
        for end in tell {
            let other = end == i ? j : i
            let (routes, now) = (routes(end), now)
            process(sim[node: end].core.linkDown(addresses[other], routes: routes, now: now), at: end)
        }
    }

    /// Adds a link to the graph (and the routes).
    mutating func link(_ i: Int, _ j: Int) {
        sim.links?.insert(SimLink(i, j))
        recompute()
    }

    // MARK: driving

    mutating func open(_ call: UInt64, from i: Int, to j: Int, hints: [Int] = []) {
        let (routes, now) = (routes(i), now)
        process(sim[node: i].core.open(call: call, wallet: wallet, target: addresses[j], hints: hints.map { addresses[$0] },
                                       routes: routes, now: now), at: i)
    }

    mutating func send(_ call: UInt64, from i: Int, _ bytes: [UInt8]) { process(sim[node: i].core.send(call: call, bytes), at: i) }

    mutating func close(_ call: UInt64, at i: Int) { process(sim[node: i].core.close(call: call), at: i) }

    /// What node `j` answers to `payload` from `i`, not passed on.
    mutating func receive(_ payload: [UInt8], at j: Int, from i: Int) -> [RelayAction] {
        let (routes, now) = (routes(j), now)
        return sim[node: j].core.receive(payload, from: addresses[i], routes: routes, now: now)
    }

    /// Carries out the actions node `origin` took and runs until nothing is left to deliver now.
    mutating func process(_ actions: [RelayAction], at origin: Int) {
        sim.perform(actions, at: origin)
        if !sim.run(until: now, maxEvents: 1_000_000) { Issue.record("message storm") }
        checkTicks()
    }

    mutating func step() {
        sim.run(forMs: Self.tickMs)
        checkTicks()
    }

    /// Every tick the simulator's check found acting before the node's deadline is a test issue.
    private mutating func checkTicks() {
        for fault in sim.takeEarlyTickFaults() { Issue.record(Comment(rawValue: fault)) }
    }

    mutating func advance(_ ms: Int64) {
        let end = now + ms
        while now < end { step() }
    }

    /// Steps until `done` holds (checked before each step) or `ms` passed; whether it held.
    mutating func run(for ms: Int64, until done: (RelayNet) -> Bool) -> Bool {
        let end = now + ms
        while !done(self) {
            guard now < end else { return false }
            step()
        }
        return true
    }

    // MARK: looking

    /// The caller's chain of `call` with `role`, as node indices after the caller's.
    func chain(_ call: UInt64, at i: Int, role: String = "active") -> [Int]? {
        engines[i].chains(call: call, now: now).first { $0.role == role }.map { $0.nodes.map { node($0) ?? -1 } }
    }

    func sessions(_ i: Int, role: String? = nil) -> [SessionInfo] {
        engines[i].sessions(now: now).filter { role == nil || $0.role == role }
    }

    /// The refusals node `i` sent.
    func refusals(by i: Int) -> [ChainRefusal] {
        control.compactMap {
            guard $0.from == i, case .refuse(_, let reason, _)? = $0.message else { return nil }
            return reason
        }
    }
}

@Suite struct RelayEngineTests {
    // MARK: 1. a chain along a line

    @Test func lineCarriesCallBytesBothWays() {
        var net = RelayNet.line(5)
        net.open(1, from: 0, to: 4)
        #expect(net.ups[0] == [1])
        #expect(net.failures[0].isEmpty)
        for r in 1...3 {
            let s = net.sessions(r)
            #expect(s.count == 1)
            #expect(s.first?.role == "relay")
            #expect(s.first?.state == "up")
            #expect(s.first?.upstream == net.address(r - 1).checksummed)
            #expect(s.first?.downstream == net.address(r + 1).checksummed)
        }
        #expect(net.sessions(4).map(\.role) == ["callee"])
        let info = net.engines[0].chains(call: 1, now: net.now)
        #expect(info.count == 1)
        #expect(info.first?.role == "active")
        #expect(info.first?.nodes == [1, 2, 3, 4].map { net.address($0).checksummed })
        #expect(info.first?.hops.map(\.node) == [0, 1, 2, 3].map { net.address($0) }, "each hop's figures, caller's first")
        #expect(net.engines[0].farEnd(call: 1) == net.address(4))
        #expect(net.engines[4].farEnd(call: 1) == net.address(0))

        // Probes, reports and (impossible on a line) standby attempts for a while: still one session per relay.
        net.advance(2_000)
        for r in 1...3 { #expect(net.sessions(r).count == 1) }
        #expect(net.engines[0].chains(call: 1, now: net.now).first?.rttMs != nil, "probes were answered")
        #expect(net.engines[0].chains(call: 1, now: net.now).first.map { $0.lastHeardMsAgo! < 100 } == true)
        #expect(net.switches[0].isEmpty)

        let before = (1...3).map { net.engines[$0].counters.forwardedPackets }
        let bytes: [UInt8] = [0x01] + (0..<200).map { UInt8($0) }
        net.send(1, from: 0, bytes)
        #expect(net.delivered[4] == [.init(call: 1, bytes: bytes)])
        #expect(net.delivered[0].isEmpty)
        net.send(1, from: 4, [0x02, 0xFE, 0x35])
        #expect(net.delivered[0] == [.init(call: 1, bytes: [0x02, 0xFE, 0x35])])
        #expect(net.delivered[4].count == 1)
        for r in 1...3 {
            #expect(net.engines[r].counters.forwardedPackets == before[r - 1] + 2)
            #expect(net.engines[r].counters.unknownLabel == 0)
            #expect(net.engines[r].counters.wrongNeighbour == 0)
        }
    }

    /// A relay that quelches a call drops the caller's media toward the callee (and nothing else: not the callee's
    /// media, not other call bytes), tells both ends, forgets it with the call, and lets media through again.
    @Test func aQuelchingRelayDropsOnlyTheCallersMediaAndTellsBothEnds() {
        var net = RelayNet.line(4)
        net.open(1, from: 0, to: 3)
        let media: [UInt8] = [0x20, 0x80] + Array(repeating: 7, count: 40)
        let notice: [UInt8] = [0x41, 1, 2, 3]
        let atCaller = net.engines[0].quelch(call: 1, true, notice: notice)
        #expect(atCaller == nil, "the caller does not relay its own call")
        let actions = net.engines[1].quelch(call: 1, true, notice: notice)!
        #expect(actions.count == 2, "one notice each way")
        #expect(net.engines[1].quelches(call: 1))
        #expect(net.sessions(1).first?.quelched == true)
        net.process(actions, at: 1)
        #expect(net.delivered[0] == [.init(call: 1, bytes: notice)])
        #expect(net.delivered[3] == [.init(call: 1, bytes: notice)])

        net.send(1, from: 0, media)
        net.send(1, from: 0, [0x10, 9, 9])
        net.send(1, from: 3, media)
        #expect(net.delivered[3].map(\.bytes) == [notice, [0x10, 9, 9]], "the caller's media stops at the relay, its signalling passes")
        #expect(net.delivered[0].map(\.bytes) == [notice, media], "the callee's media passes")
        #expect(net.engines[1].counters.quelchDrops == 1)
        #expect(net.engines[2].counters.quelchDrops == 0)

        _ = net.engines[1].quelch(call: 1, false, notice: notice)
        net.send(1, from: 0, media)
        #expect(net.delivered[3].last?.bytes == media)
        _ = net.engines[1].quelch(call: 1, true, notice: notice)
        net.close(1, at: 0)
        #expect(!net.engines[1].quelches(call: 1), "forgotten with the call's last session")
    }

    /// Relays judge the media they carry from its RTP sequence numbers: loss on one link makes the relays on both
    /// sides of it recommend a lower tier within a few seconds, sent as judgements for that session; loss-free,
    /// they recommend normal again after the good period.
    @Test func relaysJudgeTheLossOfTheMediaTheyCarry() {
        var net = RelayNet.line(4)
        net.open(1, from: 0, to: 3)
        var sequence: UInt16 = 65_000
        func media(_ seconds: Int) {
            for _ in 0..<seconds * 50 {
                sequence &+= 1
                let rtp: [UInt8] = [0x80, 111, UInt8(sequence >> 8), UInt8(sequence & 0xFF), 0, 0, 0, 0, 1, 2, 3, 4] + Array(repeating: 9, count: 40)
                net.send(1, from: 0, [0x20] + rtp)
                net.send(1, from: 3, [0x20] + rtp)
                if Int(sequence) % 2 == 0 { net.step() }
            }
        }
        media(2)
        #expect(net.judged[1].isEmpty && net.judged[2].isEmpty, "no loss: nothing to say below studio")
        net.loss[SimLink(1, 2)] = 0.3
        let start = net.now
        media(3)
        for relay in [1, 2] {
            let first = net.judged[relay].first { $0.tier == .catastrophic }
            #expect(first != nil, "relay \(relay): \(net.judged[relay].map(\.tier))")
            #expect(first.map { $0.sample.lossPercent! > 10 } == true)
            #expect(net.judged[relay].allSatisfy { $0.key.call == 1 })
        }
        #expect(net.judged[1].count + net.judged[2].count <= 8, "a verdict per change and per 5 s, not per second")
        _ = start
        net.loss[SimLink(1, 2)] = nil
        media(12)
        // Back at normal, or (when the lossy link made the caller rebuild its chain and the relay's sessions of the
        // call went meanwhile) a new judgement that objects to nothing.
        let now = net.sessions(2).first?.tier.flatMap(QualityTier.named)
        #expect(now.map { $0 >= .normal } == true, "\(now.map(\.name) ?? "-"): \(net.judged[2].map(\.tier))")
    }

    // MARK: 2. hop limit

    @Test func hopLimitBoundsTheChain() {
        for (limit, expectUp) in [(6, false), (7, true)] {
            var net = RelayNet.line(8) { _ in
                var c = RelayConfig()
                c.hopLimit = limit
                return c
            }
            net.open(1, from: 0, to: 7)
            let done1 = net.run(for: 20_000) { !$0.ups[0].isEmpty || !$0.failures[0].isEmpty }
            #expect(done1)
            if expectUp {
                #expect(net.ups[0] == [1])
                #expect(net.chain(1, at: 0) == [1, 2, 3, 4, 5, 6, 7])
            } else {
                #expect(net.ups[0].isEmpty)
                #expect(net.failures[0].count == 1)
                let why = net.failures[0].first?.why ?? ""
                #expect(why.contains(ChainRefusal.noRoute.description) || why.contains(ChainRefusal.hopLimit.description), "\(why)")
                #expect(net.engines.allSatisfy { $0.sessionCount == 0 }, "nothing left behind")
            }
        }
        // A hint beyond the hop limit is tried and refused, with nothing left behind either.
        var net = RelayNet.line(8) { _ in
            var c = RelayConfig()
            c.hopLimit = 6
            return c
        }
        net.open(1, from: 0, to: 7, hints: [1])
        #expect(net.failures[0].count == 1)
        #expect(net.engines.allSatisfy { $0.sessionCount == 0 })
        #expect(net.control.allSatisfy {
            guard case .setup(let s)? = $0.message else { return true }
            return s.path.count <= 6
        })
    }

    // MARK: 3. property: no loops, and a chain whenever one exists

    @Test func findsAChainIffOneExistsWithinTheHopLimitAndNeverLoops() {
        var rng = SplitMix64(seed: 42)
        var ups = 0, fails = 0, backtracked = 0
        for trial in 0..<1_000 {
            let n = Int.random(in: 6...20, using: &rng)
            // A random spanning tree over a random order, plus random extra edges.
            let order = Array(0..<n).shuffled(using: &rng)
            var edges: [(Int, Int)] = []
            for k in 1..<n { edges.append((order[k], order[Int.random(in: 0..<k, using: &rng)])) }
            for _ in 0..<Int.random(in: 0...n, using: &rng) {
                let i = Int.random(in: 0..<n, using: &rng), j = Int.random(in: 0..<n, using: &rng)
                if i != j { edges.append((i, j)) }
            }
            let src = Int.random(in: 0..<n, using: &rng)
            var dst = Int.random(in: 0..<n - 1, using: &rng)
            if dst >= src { dst += 1 }
            let hopLimit = Int.random(in: 2...7, using: &rng)
            // In two trials of three some relays are full (they refuse every set-up): the set-up must back off and
            // go around them.
            var full: Set<Int> = []
            if trial % 3 != 0 {
                for i in 0..<n where i != src && i != dst && Double.random(in: 0..<1, using: &rng) < 0.3 { full.insert(i) }
            }
            var net = RelayNet(count: n, edges: edges, seed: rng.next()) { i in
                var c = RelayConfig()
                c.hopLimit = hopLimit
                if full.contains(i) { c.maxSessions = 0 }
                return c
            }
            let reachable = net.bfs(from: src) { !full.contains($0) }[dst] <= hopLimit
            net.open(1, from: src, to: dst)
            let decided = net.run(for: 60_000) { !$0.ups[src].isEmpty || !$0.failures[src].isEmpty }
            let context = "trial \(trial): n \(n), \(src) → \(dst), hop limit \(hopLimit), full \(full.sorted()), edges \(edges)"
            #expect(decided, "\(context)")
            #expect(net.ups[src].isEmpty != reachable, "\(context): \(net.failures[src].first?.why ?? "up")")
            // Never a loop: every set-up's path is simple, within the hop limit, and never comes back to a node on it.
            for logged in net.control {
                guard case .setup(let s)? = logged.message else { continue }
                #expect(Set(s.path).count == s.path.count, "\(context)")
                #expect(!s.path.contains(net.address(logged.to)), "\(context)")
                #expect(s.path.count <= hopLimit, "\(context)")
            }
            let refused = net.control.contains { if case .refuse? = $0.message { true } else { false } }
            #expect(net.engines.allSatisfy { $0.counters.setupsRateLimited == 0 }, "\(context)")
            if reachable, let nodes = net.chain(1, at: src) {
                ups += 1
                if refused { backtracked += 1 }
                let path = [src] + nodes
                #expect(Set(path).count == path.count, "\(context): chain \(path)")
                #expect(path.last == dst, "\(context): chain \(path)")
                #expect(nodes.count <= hopLimit, "\(context): chain \(path)")
                #expect(zip(path, path.dropFirst()).allSatisfy { net.edges.contains(SimLink($0, $1)) }, "\(context): chain \(path)")
                #expect(nodes.dropLast().allSatisfy { !full.contains($0) }, "\(context): chain \(path)")
                // Exactly the chain's relays hold a session, one each.
                for i in 0..<n where i != src && i != dst {
                    #expect(net.engines[i].sessionCount == (nodes.contains(i) ? 1 : 0), "\(context): chain \(path), node \(i)")
                }
            } else if !reachable {
                fails += 1
                #expect(net.engines.allSatisfy { $0.sessionCount == 0 }, "\(context): state left behind after a failure")
            }
        }
        // The trials cover both outcomes, and chains found only after a refusal sent the set-up back.
        #expect(ups > 500 && fails > 150 && backtracked > 25, "\(ups) up, \(fails) failed, \(backtracked) up after backing off")
    }

    @Test func aDeadEndTwoHopsOnSendsTheSetUpBackToTheCallersNextCandidate() {
        // 0 – 1 – 2(full) – 5 and 0 – 3 – 4 – 5: node 1 is the caller's first choice (lower address, same
        // distance), its only way on refuses, so 1 refuses too and the caller takes 3.
        var net = RelayNet(count: 6, edges: [(0, 1), (1, 2), (2, 5), (0, 3), (3, 4), (4, 5)]) { i in
            var c = RelayConfig()
            if i == 2 { c.maxSessions = 0 }
            return c
        }
        net.open(1, from: 0, to: 5)
        #expect(net.ups[0] == [1])
        #expect(net.chain(1, at: 0) == [3, 4, 5])
        #expect(net.refusals(by: 2) == [.sessionLimit])
        #expect(net.refusals(by: 1) == [.sessionLimit], "the most telling reason travels back")
        #expect(net.engines[1].sessionCount == 0 && net.engines[2].sessionCount == 0)
        // With no other way the failure names the full relay, two hops away.
        var blocked = RelayNet(count: 4, edges: [(0, 1), (1, 2), (2, 3)]) { i in
            var c = RelayConfig()
            if i == 2 { c.maxSessions = 0 }
            return c
        }
        blocked.open(1, from: 0, to: 3)
        #expect(blocked.failures[0].first?.why.contains(blocked.address(2).description) == true)
        #expect(blocked.engines.allSatisfy { $0.sessionCount == 0 })
    }

    // MARK: 4. session limits

    @Test func fullRelayIsAvoidedOrNamed() {
        // Diamond: B (1) takes one session; call 1 goes through it, call 2 goes around through C (2).
        var net = RelayNet.diamond { i in
            var c = RelayConfig()
            if i == 1 { c.maxSessions = 1 }
            return c
        }
        net.open(1, from: 0, to: 3)
        #expect(net.chain(1, at: 0) == [1, 3])
        net.advance(500)
        #expect(net.chain(1, at: 0, role: "standby") == [2, 3], "the standby takes the other relay")
        net.open(2, from: 0, to: 3)
        #expect(net.ups[0] == [1, 2])
        #expect(net.refusals(by: 1) == [.sessionLimit])
        #expect(net.chain(2, at: 0) == [2, 3])
        #expect(net.sessions(1).count == 1)
        #expect(net.engines[1].counters.setupsRefused == 1)

        // A line: no way around the full relay; the failure names the limit and the relay.
        var line = RelayNet.line(3) { i in
            var c = RelayConfig()
            if i == 1 { c.maxSessions = 1 }
            return c
        }
        line.open(1, from: 0, to: 2)
        line.open(2, from: 0, to: 2)
        #expect(line.ups[0] == [1])
        #expect(line.failures[0].map(\.call) == [2])
        let why = line.failures[0].first?.why ?? ""
        #expect(why.contains(ChainRefusal.sessionLimit.description) && why.contains(line.address(1).description), "\(why)")
        #expect(line.sessions(1).count == 1)

        // Per neighbour: 0 – 1 – 2 and 3 – 1; node 1 takes one session from each neighbour.
        var star = RelayNet(count: 4, edges: [(0, 1), (1, 2), (3, 1)]) { i in
            var c = RelayConfig()
            if i == 1 { c.maxSessionsPerNeighbour = 1 }
            return c
        }
        star.open(1, from: 0, to: 2)
        star.open(2, from: 0, to: 2)
        star.open(3, from: 3, to: 2)
        #expect(star.ups[0] == [1])
        #expect(star.failures[0].map(\.call) == [2])
        #expect(star.failures[0].first?.why.contains(ChainRefusal.neighbourLimit.description) == true)
        #expect(star.refusals(by: 1) == [.neighbourLimit])
        #expect(star.ups[3] == [3], "another neighbour's call still goes through")
        #expect(star.sessions(1, role: "relay").count == 2)
    }

    // MARK: 5. forged and unknown labels

    @Test func unknownLabelsAndWrongNeighboursAreDropped() throws {
        var net = RelayNet.line(4)
        net.open(1, from: 0, to: 3)
        let session = try #require(net.sessions(1).first)
        let fromUp = try #require(session.upstreamLabel), fromDown = try #require(session.downstreamLabel)
        let forwarded = net.engines[1].counters.forwardedPackets  // the new chain's first probe and its pong
        var rng = SplitMix64(seed: 9)
        var forged: [UInt32] = []
        while forged.count < 20 {
            let label = UInt32(truncatingIfNeeded: rng.next())
            if label != fromUp && label != fromDown { forged.append(label) }
        }
        for label in forged {
            let r1 = net.receive(ChainMessage.data(label: label, [0x01, 2, 3]), at: 1, from: 0)
            #expect(r1.isEmpty)
        }
        let r2 = net.receive([0x34, 1, 2], at: 1, from: 0)
        #expect(r2.isEmpty, "too short for a label")
        #expect(net.engines[1].counters.unknownLabel == 21)
        // The right label from the wrong side, or from a stranger.
        let r3 = net.receive(ChainMessage.data(label: fromUp, [0x01]), at: 1, from: 2)
        #expect(r3.isEmpty)
        let r4 = net.receive(ChainMessage.data(label: fromDown, [0x01]), at: 1, from: 0)
        #expect(r4.isEmpty)
        let r5 = net.receive(ChainMessage.data(label: fromUp, [0x01]), at: 1, from: 3)
        #expect(r5.isEmpty)
        #expect(net.engines[1].counters.wrongNeighbour == 3)
        #expect(net.sessions(1).first?.drops == 3)
        #expect(net.engines[1].counters.forwardedPackets == forwarded)
        // The callee too drops a label it does not know.
        let r6 = net.receive(ChainMessage.data(label: forged[0], [0x01]), at: 3, from: 2)
        #expect(r6.isEmpty)
        #expect(net.engines[3].counters.unknownLabel == 1)
        #expect(net.delivered[3].isEmpty)
        // The right label from the right neighbour is forwarded to the next hop, relabelled (control).
        let out = net.receive(ChainMessage.data(label: fromUp, [0x01, 7]), at: 1, from: 0)
        let downLabel = try #require(net.sessions(2).first?.upstreamLabel)
        #expect(out == [.send(ChainMessage.data(label: downLabel, [0x01, 7]), to: net.address(2))])
        #expect(net.engines[1].counters.forwardedPackets == forwarded + 1)
    }

    // MARK: 6. bad set-ups

    @Test func badSetUpsAreRefused() throws {
        // 0 – 1 – 2 and 3 – 1: node 1 relays toward 2.
        var net = RelayNet(count: 4, edges: [(0, 1), (1, 2), (3, 1)])
        let relay = net.address(1)
        func setup(_ chain: UInt32, expires: Int64? = nil, hopLimit: UInt8 = 6, path: [Int] = [0]) -> ChainMessage.Setup {
            .sign(key: ChainKey(call: 7, chain: chain), wallet: net.wallet, target: net.address(2),
                  expiresAtMs: UInt64(expires ?? net.now + 30_000), hopLimit: hopLimit, backLabel: 99,
                  path: path.map { net.address($0) }, avoid: [])
        }
        func refused(_ s: ChainMessage.Setup, _ reason: ChainRefusal, from sender: Int = 0) -> Bool {
            net.receive(ChainMessage.setup(s).serialize(), at: 1, from: sender)
                == [.send(ChainMessage.refuse(s.key, reason, by: relay).serialize(), to: net.address(sender))]
        }

        var forged = setup(1)
        var signature = forged.signature.bytes
        signature[10] ^= 0x01
        forged.signature = try #require(Signature(bytes: signature))
        #expect(refused(forged, .badSignature))
        var otherTarget = setup(2)
        otherTarget.target = net.address(3)
        #expect(refused(otherTarget, .badSignature), "the target is signed")
        var longer = setup(3)
        longer.hopLimit = 16
        #expect(refused(longer, .badSignature), "the hop limit is signed")
        #expect(refused(setup(4, expires: net.now - 1), .expired))
        #expect(refused(setup(5, expires: net.now + 30_000 + 120_000 + 1), .expired), "too far ahead")
        #expect(refused(setup(6, hopLimit: 1), .hopLimit))
        #expect(refused(setup(7, path: [3]), .duplicate), "the path must end at the sender")
        #expect(refused(setup(8, path: [1, 0]), .duplicate), "the path already holds this node: a loop")
        #expect(net.engines[1].counters.setupsRefused == 8)
        #expect(net.engines[1].sessionCount == 0)

        // A genuine set-up is relayed; the same one replayed through another neighbour is refused, while a
        // retransmission from the same neighbour is answered again. (Node 0 only stands in for a caller here: what
        // comes back to it is not delivered, or it would tear down a chain it never built.)
        let good = setup(9)
        net.killed.insert(0)
        net.process(net.receive(ChainMessage.setup(good).serialize(), at: 1, from: 0), at: 1)
        net.killed.remove(0)
        #expect(net.sessions(1).map(\.state) == ["up"])
        var replay = good
        replay.path = [net.address(3)]
        #expect(refused(replay, .duplicate, from: 3))
        let again = net.receive(ChainMessage.setup(good).serialize(), at: 1, from: 0)
        guard case .send(let bytes, let to)? = again.first, case .accept(let key, _, _)? = ChainMessage(parsing: bytes) else {
            Issue.record("no accept for the retransmission: \(again)")
            return
        }
        #expect(again.count == 1 && to == net.address(0) && key == good.key)
        #expect(net.sessions(1).count == 1)

        // Malformed payloads of every control tag, and an unknown tag.
        var rng = SplitMix64(seed: 4)
        var sent = 0
        for tag: UInt8 in [0x30, 0x31, 0x32, 0x33, 0x37, 0x38, 0x39, 0x3F] {
            for length in 0..<13 {
                _ = net.receive([tag] + rng.bytes(length), at: 1, from: 0)
                sent += 1
            }
        }
        #expect(net.engines[1].counters.malformed == sent)
        #expect(net.sessions(1).count == 1)
    }

    @Test func setUpFloodFromOneNeighbourIsRateLimited() {
        var net = RelayNet(count: 4, edges: [(0, 1), (1, 2), (3, 1)])
        for chain in UInt32(1)...120 {
            let s = ChainMessage.Setup.sign(key: ChainKey(call: 1, chain: chain), wallet: net.wallet, target: net.address(2),
                                            expiresAtMs: UInt64(net.now + 30_000), hopLimit: 6, backLabel: 5,
                                            path: [net.address(0)], avoid: [])
            _ = net.receive(ChainMessage.setup(s).serialize(), at: 1, from: 0)
        }
        #expect(net.engines[1].counters.setupsRateLimited == 20, "a burst of 100")
        #expect(net.engines[1].sessionCount == 100)
        // Another neighbour has its own budget.
        let s = ChainMessage.Setup.sign(key: ChainKey(call: 2, chain: 1), wallet: net.wallet, target: net.address(2),
                                        expiresAtMs: UInt64(net.now + 30_000), hopLimit: 6, backLabel: 5,
                                        path: [net.address(3)], avoid: [])
        let r7 = net.receive(ChainMessage.setup(s).serialize(), at: 1, from: 3)
        #expect(!r7.isEmpty)
        #expect(net.engines[1].counters.setupsRateLimited == 20)
    }

    @Test func lostSetUpsAndAcceptsAreSentAgain() {
        var net = RelayNet.line(4)
        net.loss[SimLink(1, 2)] = 0.3
        net.loss[SimLink(2, 3)] = 0.3
        net.open(1, from: 0, to: 3)
        let done2 = net.run(for: 4_000) { !$0.ups[0].isEmpty }
        #expect(done2)
        #expect(net.failures[0].isEmpty)
        #expect(net.chain(1, at: 0) == [1, 2, 3])
        #expect(net.sessions(1, role: "relay").count == 1 && net.sessions(2, role: "relay").count == 1)
    }

    // MARK: 7. failover

    /// For several seeds (chain ids in either order) and every phase of the standby's once-a-second probe.
    @Test func deadActiveRelayFailsOverToTheStandby() {
        var chainOrders: Set<Bool> = []
        for seed: UInt64 in 1...4 {
            for phase in stride(from: Int64(0), to: 1_000, by: 100) {
                let context = "seed \(seed), killed \(phase) ms after the standby's probe"
                var net = RelayNet.diamond(seed: seed)
                net.open(1, from: 0, to: 3)
                let built = net.run(for: 2_000) { $0.chain(1, at: 0, role: "standby") != nil }
                #expect(built, "\(context)")
                #expect(net.chain(1, at: 0) == [1, 3], "\(context)")
                #expect(net.chain(1, at: 0, role: "standby") == [2, 3], "\(context)")
                let ids = net.engines[0].chains(call: 1, now: net.now).map(\.chain)
                chainOrders.insert(ids[0] < ids[1])
                net.advance(300)
                net.send(1, from: 0, [0x01])
                #expect(net.delivered[3].map(\.bytes) == [[0x01]], "\(context)")
                let aligned = net.run(for: 2_000) {
                    $0.engines[0].chains(call: 1, now: $0.now).first { $0.role == "standby" }?.lastHeardMsAgo == phase
                }
                #expect(aligned, "\(context)")

                // The active relay dies; nobody tells the caller (no link-down): its probes go unanswered.
                net.killed.insert(1)
                let killedAt = net.now
                let switched = net.run(for: 1_000) { !$0.switches[0].isEmpty }
                #expect(switched, "\(context): switched within 1 s")
                let s = net.switches[0].first
                #expect(s.map { $0.at - killedAt <= RelayConfig().deadAfterMs + RelayNet.tickMs } == true, "\(context)")
                #expect(s?.from == [net.address(1), net.address(3)], "\(context)")
                #expect(s?.to == [net.address(2), net.address(3)], "\(context)")
                #expect(net.chain(1, at: 0) == [2, 3], "\(context)")
                #expect(net.engines[0].counters.failovers == 1, "\(context)")

                // The new active chain is probed and answered from then on: never silent for long, not given up.
                var silences: [Int64] = []
                for _ in 0..<60 {
                    net.step()
                    silences.append(net.engines[0].chains(call: 1, now: net.now).first { $0.role == "active" }?.lastHeardMsAgo ?? -1)
                }
                #expect(silences.allSatisfy { (0..<RelayConfig().deadAfterMs).contains($0) }, "\(context): \(silences)")
                #expect(net.switches[0].count == 1, "\(context): \(net.switches[0].map { "\($0.why) \($0.to)" })")
                #expect(net.failures[0].isEmpty, "\(context)")
                #expect(net.chain(1, at: 0) == [2, 3], "\(context)")
                // Data both ways over the new chain: the callee answers over the chain the caller's bytes came on.
                let relayed = net.engines[2].counters.forwardedPackets
                net.send(1, from: 0, [0x01, 2])
                #expect(net.delivered[3].map(\.bytes) == [[0x01], [0x01, 2]], "\(context)")
                net.send(1, from: 3, [0x03, 4])
                #expect(net.delivered[0].map(\.bytes) == [[0x03, 4]], "\(context)")
                #expect(net.engines[2].counters.forwardedPackets == relayed + 2, "\(context)")
            }
        }
        #expect(chainOrders == [true, false], "the seeds put the active chain's id before and after the standby's")
    }

    /// A chain that keeps losing packets (15 % on one link, each way) is left for the standby within the loss window;
    /// two chains losing alike do not make the call flap between them.
    @Test func aLossyChainIsLeftForTheStandbyWithoutFlapping() {
        // Silence detection slowed down, so what moves the call is the loss rule, not three probes lost in a row.
        var config = RelayConfig()
        config.deadAfterMs = 2_000
        var net = RelayNet.diamond(seed: 3) { _ in config }
        net.open(1, from: 0, to: 3)
        #expect(net.run(for: 2_000) { $0.chain(1, at: 0, role: "standby") != nil })
        #expect(net.chain(1, at: 0) == [1, 3])
        net.advance(3_000)
        #expect(net.switches[0].isEmpty, "no loss, no move")
        net.loss[SimLink(1, 3)] = 0.15
        let lossFrom = net.now
        #expect(net.run(for: 4_000) { !$0.switches[0].isEmpty }, "moved off the lossy chain")
        #expect(net.switches[0].first?.why.contains("probes lost") == true, "\(net.switches[0].map(\.why))")
        #expect((net.switches[0].first?.at ?? .max) - lossFrom <= 3_000)
        #expect(net.chain(1, at: 0) == [2, 3])
        #expect(net.failures[0].isEmpty)

        var flap = RelayNet.diamond(seed: 4) { _ in config }
        flap.open(1, from: 0, to: 3)
        #expect(flap.run(for: 2_000) { $0.chain(1, at: 0, role: "standby") != nil })
        flap.loss[SimLink(1, 3)] = 0.25
        flap.loss[SimLink(2, 3)] = 0.25
        flap.advance(30_000)
        let moves = flap.switches[0].filter { $0.why.contains("probes lost") }
        #expect(moves.count <= 3, "at most one loss move per 10 s: \(moves.map(\.at))")
    }

    /// A chain that loses 40 % each way on one link (64 % of probes unanswered: 300 ms without a pong is a quarter
    /// of such spans) still carries the call. With no standby to move to, a silent active chain is kept while a
    /// replacement is built (make-before-break: a rebuild across the lossy link takes seconds, and tearing the chain
    /// down first left the call without media meanwhile: 105 of these 600 delivered). A chain cut outright has its
    /// replacement under way within 300 ms and a tick, and a call that cannot get one ends after `repairGiveUpMs`.
    @Test func aLossyOnlyChainKeepsTheCallAndADeadOneIsReplacedAtOnce() {
        var net = RelayNet.line(4, seed: 8)
        net.open(1, from: 0, to: 3)
        #expect(net.run(for: 1_000) { $0.chain(1, at: 0) != nil })
        net.loss[SimLink(1, 2)] = 0.4
        for _ in 0..<600 {
            net.send(1, from: 0, [0x01])
            net.step()
        }
        let delivered = net.delivered[3].count
        #expect(delivered >= 600 * 50 / 100, "\(delivered) of 600 delivered (60 % pass the lossy link)")
        #expect(net.failures[0].isEmpty)
        net.loss[SimLink(1, 2)] = nil
        net.advance(3_000)
        net.cut.insert(SimLink(2, 3))
        let cutAt = net.now
        #expect(net.run(for: 2_000) { $0.engines[0].chains(call: 1, now: $0.now).contains { $0.role == "building" } })
        #expect(net.now - cutAt <= 300 + RelayNet.tickMs, "a replacement \(net.now - cutAt) ms after the cut")
        #expect(net.run(for: RelayConfig().repairGiveUpMs + 2_000) { !$0.failures[0].isEmpty }, "no chain: the call ends")
    }

    /// After a failover the callee's replies follow the caller to the new chain even while the caller sends no
    /// call bytes (a pause): the probes on the active chain move them, the standby's probes do not.
    @Test func theCalleeFollowsTheActiveChainsProbesThroughASilence() {
        var net = RelayNet.diamond(seed: 5)
        net.open(1, from: 0, to: 3)
        #expect(net.run(for: 2_000) { $0.chain(1, at: 0, role: "standby") != nil })
        net.send(1, from: 0, [0x01])
        net.advance(1_500)
        net.send(1, from: 3, [0x02])
        #expect(net.delivered[0].map(\.bytes) == [[0x02]], "replies on the active chain, standby probes notwithstanding")
        net.killed.insert(1)
        #expect(net.run(for: 1_000) { !$0.switches[0].isEmpty })
        net.advance(200)
        net.send(1, from: 3, [0x03])
        #expect(net.delivered[0].map(\.bytes) == [[0x02], [0x03]], "the callee replied over the new chain without hearing call bytes")
    }

    /// A chain the caller left while its teardown was lost on the way stays at the nodes after the loss until they
    /// sweep it. Bytes a relay injects on it (a verdict, a quelch notice) reach the callee but do not pull its
    /// replies onto it (only the caller's active probes move them), and a relay judges and tells only the sessions
    /// of a call that carry media.
    @Test func aStaleChainNeitherPullsTheCalleesRepliesNorHearsVerdicts() throws {
        // 0 – 1 – 2 – 5 and 0 – 3 – 4 – 5.
        var net = RelayNet(count: 6, edges: [(0, 1), (1, 2), (2, 5), (0, 3), (3, 4), (4, 5)], seed: 9)
        net.open(1, from: 0, to: 5)
        #expect(net.run(for: 2_000) { $0.chain(1, at: 0, role: "standby") != nil })
        let old = try #require(net.chain(1, at: 0)), live = try #require(net.chain(1, at: 0, role: "standby"))
        let stale = try #require(net.sessions(old[1]).first.flatMap { UInt32($0.chain, radix: 16) })
        net.cut.insert(SimLink(old[0], old[1]))
        #expect(net.run(for: 1_000) { $0.chain(1, at: 0) == live }, "failed over")
        #expect(net.sessions(old[1]).count == 1 && net.sessions(5).count == 2, "the old chain is still at \(old[1]) and 5")

        net.process(net.engines[old[1]].inject(ChainKey(call: 1, chain: stale), [0x42, 1]), at: old[1])
        #expect(net.delivered[5].map(\.bytes) == [[0x42, 1]])
        net.send(1, from: 5, [0x02])
        #expect(net.delivered[0].map(\.bytes) == [[0x02]], "the reply went on the caller's chain, not the stale one")

        net.loss[SimLink(0, live[0])] = 0.3
        var sequence: UInt16 = 0
        for _ in 0..<150 {
            sequence &+= 1
            net.send(1, from: 0, [0x20, 0x80, 111, UInt8(sequence >> 8), UInt8(sequence & 0xFF), 0, 0, 0, 0, 1, 2, 3, 4]
                     + Array(repeating: 9, count: 40))
            if sequence % 2 == 0 { net.step() }
        }
        #expect(!net.judged[live[0]].isEmpty, "the loss was judged")
        #expect(net.judged[old[1]].isEmpty, "\(net.judged[old[1]].map(\.key))")
    }

    /// A caller with a single neighbour still gets a standby: through the same first hop, then away from the active
    /// chain's other relays; when the relay after the first hop dies, the call moves to it.
    @Test func aCallerWithOneNeighbourSharesTheFirstHopOfItsStandby() {
        // 0 – 1, then 1 – 2 – 4 and 1 – 3 – 4.
        var net = RelayNet(count: 5, edges: [(0, 1), (1, 2), (1, 3), (2, 4), (3, 4)], seed: 6)
        net.open(1, from: 0, to: 4)
        #expect(net.run(for: 2_000) { $0.chain(1, at: 0, role: "standby") != nil })
        let active = net.chain(1, at: 0) ?? []
        let standby = net.chain(1, at: 0, role: "standby") ?? []
        #expect(active.first == 1 && standby.first == 1)
        #expect(Set([active.dropFirst().first, standby.dropFirst().first]) == [2, 3], "\(active) and \(standby)")
        net.killed.insert(active[1])
        #expect(net.run(for: 1_000) { !$0.switches[0].isEmpty })
        #expect(net.chain(1, at: 0) == standby)
        net.send(1, from: 0, [0x05])
        #expect(net.delivered[4].map(\.bytes).last == [0x05])
    }

    /// Once the call is answered its probes and pongs are authenticated: a relay that black-holes the call and answers
    /// the caller's probes itself is not believed, and the caller moves to its standby as if the relay were dead.
    @Test func aRelayCannotFakeTheCalleesPongs() {
        var net = RelayNet.diamond(seed: 7)
        net.open(1, from: 0, to: 3)
        #expect(net.run(for: 2_000) { $0.chain(1, at: 0, role: "standby") != nil })
        let key = ProbeKey(callerToCallee: [1, 2, 3], calleeToCaller: [4, 5, 6])
        net.engines[0].authenticate(call: 1, key: key)
        net.engines[3].authenticate(call: 1, key: key)
        net.advance(500)
        #expect(net.switches[0].isEmpty && net.engines[0].counters.forgedProbes == 0, "authenticated probes are answered")
        // Relay 1 stops forwarding toward the callee and forges a pong to the caller every tick.
        let active = net.chain(1, at: 0)
        #expect(active == [1, 3])
        let label = UInt32(net.sessions(0).first { $0.downstream == net.address(1).checksummed }?.downstreamLabel ?? 0)
        net.cut.insert(SimLink(1, 3))
        let cutAt = net.now
        var forged = 0
        while net.switches[0].isEmpty && net.now - cutAt < 1_000 {
            let pong = ChainInner.pong(sequence: UInt32(forged), sentAtMs: UInt64(net.now)).serialize()
            net.process(net.receive(ChainMessage.data(label: label, pong), at: 0, from: 1), at: 0)
            forged += 1
            net.step()
        }
        #expect(net.engines[0].counters.forgedProbes == forged)
        #expect(net.switches[0].first.map { $0.at - cutAt <= RelayConfig().deadAfterMs + 2 * RelayNet.tickMs } == true)
        #expect(net.chain(1, at: 0) == [2, 3])
    }

    /// The callee answered but its answer has not reached the caller: the caller's probes carry no MAC yet, and the
    /// callee still answers them and follows the caller's active chain (else the caller would drop chain after chain
    /// while the callee's repeated answers went on one it gave up). Once a probe with the MAC came, one without is
    /// refused.
    @Test func theCalleeTakesUnauthenticatedProbesUntilTheCallerHasTheKey() {
        var net = RelayNet.diamond(seed: 7)
        net.open(1, from: 0, to: 3)
        #expect(net.run(for: 2_000) { $0.chain(1, at: 0, role: "standby") != nil })
        let key = ProbeKey(callerToCallee: [1, 2, 3], calleeToCaller: [4, 5, 6])
        net.engines[3].authenticate(call: 1, key: key)
        net.advance(2_000)
        #expect(net.switches[0].isEmpty && net.engines[3].counters.forgedProbes == 0, "the caller without the key keeps its chain")
        net.engines[0].authenticate(call: 1, key: key)
        net.advance(500)
        #expect(net.switches[0].isEmpty && net.engines[3].counters.forgedProbes == 0)
        // An unauthenticated probe now (a relay's forgery) is refused.
        let label = UInt32(net.sessions(3).first { $0.role == "callee" }?.upstreamLabel ?? 0)
        let from = net.addresses.firstIndex { $0.checksummed == net.sessions(3).first { $0.role == "callee" }?.upstream } ?? 1
        let probe = ChainInner.probe(sequence: 99, sentAtMs: UInt64(net.now), active: true).serialize()
        net.process(net.receive(ChainMessage.data(label: label, probe), at: 3, from: from), at: 3)
        #expect(net.engines[3].counters.forgedProbes == 1)
    }

    /// A set-up repeated after a relay refused it (the repeat crossed the refusal) gets the same refusal, with no
    /// second search behind it; an accept for a chain nobody is building any more is answered with a teardown.
    @Test func repeatsOfARefusedSetUpGetTheSameRefusalAndStrayAcceptsATeardown() throws {
        // 0 – 1 – 2 – 3, node 2 full.
        var net = RelayNet.line(4) { i in
            var config = RelayConfig()
            if i == 2 { config.maxSessions = 0 }
            return config
        }
        net.open(1, from: 0, to: 3)
        #expect(net.run(for: 2_000) { !$0.failures[0].isEmpty })
        let setup = try #require(net.control.first { $0.from == 0 && $0.to == 1 }?.message)
        let toTwo = net.control.count { if $0.from == 1, $0.to == 2, case .setup? = $0.message { true } else { false } }
        let answer = net.receive(setup.serialize(), at: 1, from: 0)
        guard case .send(let bytes, let to)? = answer.first, case .refuse(_, let reason, let by)? = ChainMessage(parsing: bytes) else {
            Issue.record("a refusal: \(answer)")
            return
        }
        #expect(to == net.address(0) && reason == .sessionLimit && by == net.address(2))
        #expect(net.engines[1].sessionCount == 0)
        #expect(net.control.count { if $0.from == 1, $0.to == 2, case .setup? = $0.message { true } else { false } } == toTwo)

        let stray = net.receive(ChainMessage.accept(ChainKey(call: 9, chain: 9), label: 5, figures: []).serialize(), at: 1, from: 2)
        guard case .send(let teardown, let back)? = stray.first, case .teardown? = ChainMessage(parsing: teardown) else {
            Issue.record("a teardown: \(stray)")
            return
        }
        #expect(back == net.address(2))
    }

    /// At the callee a call's chains all come from the wallet that signed its first set-up, and there are a few at
    /// most: a node on one of the call's chains cannot add its own chain (signed by another wallet) and pull the
    /// callee's replies onto it.
    @Test func theCalleeTakesChainsOnlyFromTheCallsWalletAndAFewAtMost() {
        var net = RelayNet.line(3)
        net.open(1, from: 0, to: 2)
        #expect(net.run(for: 1_000) { $0.chain(1, at: 0) != nil })
        var rng = SplitMix64(seed: 99)
        let intruder = rng.privateKey()
        func setup(_ chain: UInt32, wallet: PrivateKey) -> [UInt8] {
            ChainMessage.setup(.sign(key: ChainKey(call: 1, chain: chain), wallet: wallet, target: net.address(2),
                                     expiresAtMs: UInt64(net.now + 30_000), hopLimit: 6, backLabel: 77,
                                     path: [net.address(0), net.address(1)], avoid: [])).serialize()
        }
        let foreign = net.receive(setup(0xBAD, wallet: intruder), at: 2, from: 1)
        guard case .send(let bytes, _)? = foreign.first, case .refuse(_, .duplicate, _)? = ChainMessage(parsing: bytes) else {
            Issue.record("a set-up for the call from another wallet is refused: \(foreign)")
            return
        }
        // The caller's own wallet may add chains, up to the bound.
        var accepted = 0
        for chain in UInt32(100)..<110 {
            if case .send(let reply, _)? = net.receive(setup(chain, wallet: net.wallet), at: 2, from: 1).first,
               case .accept? = ChainMessage(parsing: reply) { accepted += 1 }
        }
        #expect(accepted == 3, "4 chains per call at the callee, one already up")
        #expect(net.sessions(2).count == 4)
    }

    /// A set-up signed with a hop limit far above this node's makes it wait for the rest of the chain as if the limit
    /// were its own (and never past the set-up's expiry): a caller cannot pin relays' set-up state for minutes.
    @Test func aHugeSignedHopLimitDoesNotStretchARelaysWait() throws {
        // 0 – 1 – 2, where 2 swallows everything (killed): relay 1 waits for it, then refuses.
        var net = RelayNet.line(3)
        net.killed.insert(2)
        let setup = ChainMessage.Setup.sign(key: ChainKey(call: 5, chain: 5), wallet: net.wallet, target: net.address(2),
                                            expiresAtMs: UInt64(net.now + 30_000), hopLimit: 255, backLabel: 7,
                                            path: [net.address(0)], avoid: [])
        _ = net.receive(ChainMessage.setup(setup).serialize(), at: 1, from: 0)
        #expect(net.sessions(1).count == 1)
        let started = net.now
        #expect(net.run(for: 60_000) { $0.sessions(1).isEmpty })
        #expect(net.now - started <= RelayConfig().hopWaitMs * Int64(RelayConfig().hopLimit - 1) + RelayNet.tickMs,
                "waited \(net.now - started) ms")
    }

    @Test func deadRelayWithoutStandbyEndsInChainFailed() {
        var net = RelayNet.line(3)
        net.open(1, from: 0, to: 2)
        net.advance(1_000)
        #expect(net.chain(1, at: 0, role: "standby") == nil)
        net.killed.insert(1)
        let killedAt = net.now
        let config = RelayConfig()
        let done5 = net.run(for: 15_000) { !$0.failures[0].isEmpty }
        #expect(done5)
        let failure = net.failures[0].first
        #expect(failure.map { $0.at - killedAt >= config.repairGiveUpMs } == true)
        #expect(failure.map { $0.at - killedAt <= config.repairGiveUpMs + config.deadAfterMs + 2 * RelayNet.tickMs } == true,
                "\(failure.map { $0.at - killedAt } ?? -1)")
        #expect(failure?.why.contains("no working chain") == true)
        #expect(net.switches[0].isEmpty)
        #expect(net.engines[0].sessionCount == 0)
        #expect(net.engines[0].chains(call: 1, now: net.now).isEmpty)
    }

    // MARK: 8. teardown

    @Test func closeRemovesEverySessionAlongTheChain() {
        var net = RelayNet.diamond()
        net.open(1, from: 0, to: 3)
        net.advance(500)
        #expect(net.chain(1, at: 0, role: "standby") != nil)
        #expect(net.engines[3].sessionCount == 2)
        net.close(1, at: 0)
        for i in 0..<4 { #expect(net.engines[i].sessionCount == 0, "node \(i)") }
        #expect(net.engines[0].chains(call: 1, now: net.now).isEmpty)
        net.advance(5_000)
        #expect(net.engines.allSatisfy { $0.sessionCount == 0 }, "and nothing is rebuilt")
        #expect(net.failures[0].isEmpty && net.switches[0].isEmpty)
    }

    @Test func idleSessionsGoWhenTheCallerVanishes() {
        var net = RelayNet.line(4)
        net.open(1, from: 0, to: 3)
        net.advance(1_000)
        net.killed.insert(0)
        let idle = RelayConfig().idleTimeoutMs
        net.advance(idle - 1_000)
        #expect((1...3).allSatisfy { net.engines[$0].sessionCount == 1 }, "not before the idle timeout")
        net.advance(1_000 + RelayNet.tickMs)
        #expect((1...3).allSatisfy { net.engines[$0].sessionCount == 0 })
    }

    // MARK: 9. soft state

    @Test func downstreamLinkDownTearsDownUpstreamAndTheCallerMovesToItsStandby() throws {
        // 0 – 1, 1 – 2 – 4 and 1 – 3 – 4: the standby shares the first hop (the caller has no other).
        var net = RelayNet(count: 5, edges: [(0, 1), (1, 2), (2, 4), (1, 3), (3, 4)])
        net.open(1, from: 0, to: 4)
        net.advance(500)
        #expect(net.chain(1, at: 0) == [1, 2, 4])
        #expect(net.chain(1, at: 0, role: "standby") == [1, 3, 4])
        net.unlink(2, 4, tell: [2])
        #expect(net.engines[2].sessionCount == 0)
        #expect(net.sessions(1).allSatisfy { $0.downstream == net.address(3).checksummed }, "the old session at 1 is gone")
        let s = try #require(net.switches[0].first)
        #expect(s.why.contains("link down") && s.to == [1, 3, 4].map { net.address($0) }, "\(s.why)")
        #expect(net.chain(1, at: 0) == [1, 3, 4])
        net.send(1, from: 0, [0x01])
        #expect(net.delivered[4].map(\.bytes) == [[0x01]])
        net.send(1, from: 4, [0x02])
        #expect(net.delivered[0].map(\.bytes) == [[0x02]])
        // The callee's end of the old chain goes with its own link-down.
        net.unlink(2, 4, tell: [4])
        #expect(net.engines[4].sessionCount == 1)
    }

    // MARK: more

    @Test func closeWhileBuildingClearsEveryPendingHop() {
        var net = RelayNet.line(4)
        net.cut.insert(SimLink(2, 3))
        net.open(1, from: 0, to: 3)
        #expect(net.sessions(1).map(\.state) == ["setting up"])
        #expect(net.sessions(2).map(\.state) == ["setting up"])
        net.advance(1_000)
        net.close(1, at: 0)
        #expect(net.engines.allSatisfy { $0.sessionCount == 0 })
        net.advance(10_000)
        #expect(net.engines.allSatisfy { $0.sessionCount == 0 })
        #expect(net.ups[0].isEmpty && net.failures[0].isEmpty, "a closed call reports nothing more")
    }

    @Test func aDeadRelayOnTheWayCostsOneHopsWait() {
        // 0 – 1, then 1 – 2(dead) – 4 and 1 – 3 – 4: node 1 tries 2 first and gives up on it before the caller
        // gives up on node 1 (the deadlines nest by hop budget).
        var net = RelayNet(count: 5, edges: [(0, 1), (1, 2), (2, 4), (1, 3), (3, 4)])
        net.killed.insert(2)
        let start = net.now
        net.open(1, from: 0, to: 4)
        let up = net.run(for: 10_000) { !$0.ups[0].isEmpty || !$0.failures[0].isEmpty }
        #expect(up && net.ups[0] == [1])
        #expect(net.chain(1, at: 0) == [1, 3, 4])
        let config = RelayConfig()
        let waited = net.now - start
        #expect(waited >= config.hopWaitMs * Int64(config.hopLimit - 1) && waited < config.hopWaitMs * Int64(config.hopLimit),
                "node 1 waited its own budget, not the caller's: \(waited) ms")
        #expect(net.sessions(1, role: "relay").count == 1)
    }

    @Test func callerLinkDownFailsOverAtOnce() {
        var net = RelayNet.diamond()
        net.open(1, from: 0, to: 3)
        net.advance(500)
        #expect(net.chain(1, at: 0, role: "standby") == [2, 3])
        net.unlink(0, 1, tell: [0, 1])
        #expect(net.switches[0].count == 1)
        #expect(net.switches[0].first?.to == [net.address(2), net.address(3)])
        #expect(net.switches[0].first?.why.contains("down") == true)
        #expect(net.chain(1, at: 0) == [2, 3])
        #expect(net.engines[1].sessionCount == 0, "the relay's end goes with its own link-down")
        net.send(1, from: 0, [0x01])
        #expect(net.delivered[3].map(\.bytes) == [[0x01]])
    }

    @Test func reportsRefreshEveryHopsFigures() {
        var net = RelayNet.line(5)
        net.open(1, from: 0, to: 4)
        #expect(net.engines[0].chains(call: 1, now: net.now).first?.hops.map(\.rttMs) == [10, 10, 10, 10])
        net.rttMs = 37.5
        net.advance(RelayConfig().reportMs + 100)
        let hops = net.engines[0].chains(call: 1, now: net.now).first?.hops
        #expect(hops?.map(\.rttMs) == [37.5, 37.5, 37.5, 37.5])
        #expect(hops?.map(\.node) == [0, 1, 2, 3].map { net.address($0) })
        // A report under a label nobody gave out is dropped and counted.
        #expect(net.receive(ChainMessage.report(label: 12345, []).serialize(), at: 1, from: 0).isEmpty)
        #expect(net.engines[1].counters.unknownLabel == 1)
    }

    @Test func strangersCannotTearDownOrAnswerForAChain() throws {
        // 0 – 1 – 2 – 3 and 4 – 1: node 4 is a neighbour of relay 1 but not on the chain.
        var net = RelayNet(count: 5, edges: [(0, 1), (1, 2), (2, 3), (4, 1)])
        net.open(1, from: 0, to: 3)
        let info = try #require(net.engines[0].chains(call: 1, now: net.now).first)
        #expect(info.role == "active")
        let key = ChainKey(call: 1, chain: UInt32(info.chain, radix: 16)!)
        for reason in [ChainRefusal.closed, .linkDown, .idle] {
            #expect(net.receive(ChainMessage.teardown(key, reason).serialize(), at: 1, from: 4).isEmpty)
        }
        #expect(net.receive(ChainMessage.refuse(key, .noRoute, by: net.address(4)).serialize(), at: 1, from: 4).isEmpty)
        // An accept from a node that is not the chain's next hop only gets a teardown for its own side back.
        let stray = net.receive(ChainMessage.accept(key, label: 5, figures: []).serialize(), at: 1, from: 4)
        #expect(stray == [.send(ChainMessage.teardown(key, .closed).serialize(), to: net.address(4))])
        #expect(net.sessions(1).map(\.state) == ["up"])
        #expect(net.receive(ChainMessage.teardown(key, .closed).serialize(), at: 0, from: 4).isEmpty)
        #expect(net.chain(1, at: 0) == [1, 2, 3])
        // The real neighbour's teardown is taken, and passed on.
        net.process(net.receive(ChainMessage.teardown(key, .closed).serialize(), at: 1, from: 0), at: 1)
        #expect(net.engines[1].sessionCount == 0 && net.engines[2].sessionCount == 0 && net.engines[3].sessionCount == 0)
    }

    @Test func aStandbyThatDiesSilentlyIsReplaced() {
        // Three ways from 0 to 4: through 1, 2 and 3. Active through 1, standby through 2.
        var net = RelayNet(count: 5, edges: [(0, 1), (1, 4), (0, 2), (2, 4), (0, 3), (3, 4)])
        net.open(1, from: 0, to: 4)
        net.advance(500)
        #expect(net.chain(1, at: 0) == [1, 4])
        #expect(net.chain(1, at: 0, role: "standby") == [2, 4])
        // The standby's relay dies; nobody says so.
        net.killed.insert(2)
        let replaced = net.run(for: 15_000) { $0.chain(1, at: 0, role: "standby") == [3, 4] }
        #expect(replaced, "a new standby through node 3: \(net.engines[0].chains(call: 1, now: net.now))")
        #expect(net.engines[0].chains(call: 1, now: net.now).count == 2, "the dead standby is gone")
        // Now the active relay dies too: the call fails over to the new standby within a second.
        net.killed.insert(1)
        let killedAt = net.now
        let switched = net.run(for: 1_000) { !$0.switches[0].isEmpty }
        #expect(switched)
        #expect(net.switches[0].first.map { $0.at - killedAt <= RelayConfig().deadAfterMs + RelayNet.tickMs } == true)
        #expect(net.switches[0].first?.to == [net.address(3), net.address(4)])
        // The callee's ends of the dead chains go when they idle out (their relays cannot tell it).
        net.advance(RelayConfig().idleTimeoutMs + 1_000)
        #expect(net.chain(1, at: 0) == [3, 4])
        #expect(net.sessions(4).count == net.engines[0].chains(call: 1, now: net.now).filter { $0.role != "building" }.count)
    }

    /// Links come and go (both ends told): whenever a way within the hop limit exists the call has a working
    /// chain along links that are up, carrying bytes both ways; no relay keeps a session of a chain the caller
    /// no longer has; with no way left the call fails after repairGiveUpMs.
    @Test func churnKeepsTheCallOnAWorkingChainAndLeavesNothingBehind() {
        var rng = SplitMix64(seed: 77)
        var checks = 0, failed = 0
        for trial in 0..<40 {
            let n = Int.random(in: 6...12, using: &rng)
            let order = Array(0..<n).shuffled(using: &rng)
            var edges: [(Int, Int)] = []
            for k in 1..<n { edges.append((order[k], order[Int.random(in: 0..<k, using: &rng)])) }
            for _ in 0..<n {
                let i = Int.random(in: 0..<n, using: &rng), j = Int.random(in: 0..<n, using: &rng)
                if i != j { edges.append((i, j)) }
            }
            var net = RelayNet(count: n, edges: edges, seed: rng.next())
            let (src, dst) = (order[0], order[n - 1])
            net.open(1, from: src, to: dst)
            let hopLimit = RelayConfig().hopLimit
            var message: UInt8 = 0
            for event in 0..<12 {
                let context = "trial \(trial) event \(event): \(src) → \(dst), edges \(net.edges.map { [$0.a, $0.b] })"
                net.advance(2_000)
                #expect(net.failures[src].isEmpty, "\(context): \(net.failures[src].map(\.why))")
                if !net.failures[src].isEmpty { break }
                let reachable = net.distances[src][dst] <= hopLimit
                guard reachable else {
                    // No way left: the call ends after repairGiveUpMs.
                    let ended = net.run(for: RelayConfig().repairGiveUpMs + 1_000) { !$0.failures[src].isEmpty }
                    #expect(ended || net.distances[src][dst] <= hopLimit, "\(context)")
                    failed += 1
                    break
                }
                checks += 1
                let nodes = net.chain(1, at: src)
                #expect(nodes != nil, "\(context): no active chain")
                if let nodes {
                    let path = [src] + nodes
                    #expect(path.last == dst && Set(path).count == path.count, "\(context): \(path)")
                    #expect(zip(path, path.dropFirst()).allSatisfy { net.edges.contains(SimLink($0, $1)) }, "\(context): \(path)")
                }
                message &+= 1
                net.send(1, from: src, [0x01, message])
                #expect(net.delivered[dst].last?.bytes == [0x01, message], "\(context)")
                net.send(1, from: dst, [0x02, message])
                #expect(net.delivered[src].last?.bytes == [0x02, message], "\(context)")
                // Every relay session belongs to a chain the caller still has.
                let known = Set(net.engines[src].chains(call: 1, now: net.now).map(\.chain))
                for i in 0..<n where i != src && i != dst {
                    let orphans = net.sessions(i).filter { !known.contains($0.chain) }
                    #expect(orphans.isEmpty, "\(context): node \(i) keeps \(orphans.map(\.chain)), caller has \(known)")
                }
                // Change the graph: drop a link (both ends told) or add one.
                let present = net.edges.sorted { ($0.a, $0.b) < ($1.a, $1.b) }
                if Double.random(in: 0..<1, using: &rng) < 0.65 || present.count == n * (n - 1) / 2 {
                    let e = present[Int.random(in: 0..<present.count, using: &rng)]
                    net.unlink(e.a, e.b, tell: [e.a, e.b])
                } else {
                    var i = 0, j = 0
                    repeat {
                        i = Int.random(in: 0..<n, using: &rng)
                        j = Int.random(in: 0..<n, using: &rng)
                    } while i == j || net.edges.contains(SimLink(i, j))
                    net.link(i, j)
                }
            }
        }
        #expect(checks > 250 && failed > 8, "\(checks) checks, \(failed) calls left without a way")
    }
}
