import MeshCall
import MeshDHT
import MeshIdentity
import MeshLink
import MeshRouting
import MeshWire

/// An address the node's one port is reached at, as links and the DHT both name it (a socket address in the
/// daemon, a node index in the simulator).
public protocol NodeAddress: LinkEndpoint {
    /// The address of a DHT endpoint; nil for one this node cannot use.
    init?(dhtEndpoint: DHTEndpoint)
    /// This address as a DHT endpoint; nil when it has none.
    var dhtEndpoint: DHTEndpoint? { get }
}

/// A moment as the node's cores take it: `ms` on the node's monotonic clock for every core, `us` (a monotonic
/// clock of its own) for how long the trunker holds a lone packet.
public struct NodeTime: Sendable {
    public var ms: Int64
    public var us: Int64

    public init(ms: Int64, us: Int64) {
        self.ms = ms
        self.us = us
    }

    /// One clock for both (the simulator's).
    public init(ms: Int64) { self.init(ms: ms, us: ms * 1_000) }
}

/// What the node decides beyond its cores' own configuration.
public struct NodeCoreConfig: Sendable {
    /// The most links a chain or a query over links may span.
    public var hopLimit = 6
    /// Data messages to a neighbour gathered into shared datagrams (docs/forwarding.md, "Trunks").
    public var trunking = true
    public var trunk = TrunkConfig()
    /// Incoming calls are answered (the shell then gives them media); without, they are declined.
    public var answersCalls = true
    /// The node publishes only its relays, never its own endpoints (behind a NAT nobody can dial).
    public var relayOnly = false

    /// What a link costs in gossip: measured (RTT with a loss penalty, `NodeCore.linkCost`) or one figure for all.
    public enum LinkCosts: Sendable {
        case measured
        case fixed(UInt16)
    }

    public var linkCosts = LinkCosts.measured

    public init() {}
}

/// Counters of input the glue dropped above the link layer.
public struct NodeCoreCounters: Sendable, Codable, Equatable {
    public var malformedApp = 0
    /// Call bytes over a chain that were malformed or named another call than the chain's.
    public var callWrongChain = 0
    /// Answers to "do you host this wallet?" that nobody asked for.
    public var resolveUnsolicited = 0
    public init() {}
}

/// What the node's glue asks of its shell besides sending datagrams (those go straight into the sink), in the order
/// it happened.
public enum NodeEvent<Address: Hashable & Sendable>: Sendable {
    case linkUp(WalletAddress, Address)
    case linkDown(WalletAddress, reason: String)
    case refused(Address, reason: String)
    /// An incoming call (already answered or declined, `NodeCoreConfig.answersCalls`), one ringing, one
    /// established (its chain already authenticated): the shell starts media.
    case call(CallAction)
    /// A call ended; its chains as they were just before they closed.
    case ended(CallID, CallEndReason, chains: [ChainInfo])
    /// End-to-end bytes of a call that reached this end of its chain: media, ICE, control, quelch, verdicts.
    case callBytes(CallID, CallInner)
    case chainUp(CallID)
    /// A call's chain failed and could not be repaired; the call engine has been told.
    case chainLost(CallID, String)
    case chainSwitched(CallID, from: [WalletAddress], to: [WalletAddress], why: String)
    /// A relay's judgement of a call it carries: the shell signs a verdict and hands it back (`inject`).
    case judged(ChainKey, QualityTier, QualitySample)
    /// The answer to `resolve`.
    case resolved(HomeResolver<Address>.ID, HomeResolver<Address>.Home)
    case unresolved(HomeResolver<Address>.ID, String)
    /// A gossip route its home node did not confirm, withdrawn.
    case refuted(wallet: WalletAddress, home: WalletAddress, why: String)
    /// A call `place`d was offered on its first chain; `resolvedAt` is when its home node was known (and reached).
    case placed(CallID, home: HomeResolver<Address>.Home, resolvedAt: Int64)
    /// A call `place`d could not be offered: nobody hosts the callee, no chain, the wallet is busy.
    case notPlaced(CallID, String)
    /// The answer to `lookup`.
    case lookedUp(LookupID, LookupOutcome)
    /// A record a peer stored here: the shell persists it, then sends the acknowledgement (nothing unsaved is
    /// acknowledged).
    case recordStored(PresenceRecord, acknowledgement: (bytes: [UInt8], to: Address)?)
    case recordDropped(NodeID)
    /// The hosted wallets' records were published: the shell keeps them (their sequence numbers must grow).
    case published([PresenceRecord])
    case clockSkew(ClockSkewReport)
}

/// Where the glue writes: datagrams in place (`DatagramSink`) and events.
public protocol NodeSink<Address>: DatagramSink {
    associatedtype Address: Hashable & Sendable
    mutating func event(_ event: NodeEvent<Address>)
}

/// A whole node's protocol logic: the cores (links, gossip, forwarding with trunks, calls, the DHT with its
/// presence policy, the wallet finder and the home resolver) and the glue between them. Pure: the shell feeds in
/// datagrams, commands and ticks with `now`, and gets datagrams and `NodeEvent`s out through a `NodeSink`
/// (docs/architecture.md, "One node core"). The daemon runs it on its event loop; the simulator runs many.
///
/// The glue: a link payload goes to the forwarding layer (data and chain messages, trunks), the wallet finder, or
/// as an `AppMessage` to gossip and the resolver; a link up or down is a gossip neighbour up or down, a trunk
/// dropped, chains repaired. A call is placed in stages (`place`): its callee's home node resolved, reached
/// (`HomeReach`), a chain built to it, then the offer sent through it. Call signalling and media ride the call's
/// chain as `CallInner`.
public struct NodeCore<Address: NodeAddress>: Sendable {
    public var links: LinkManager<Address>
    public var gossip: GossipEngine
    public var relay: RelayEngine
    public var trunks: Trunker
    public var calls: CallEngine
    public var dht: DHTNode
    public var finder: WalletFinder
    public var resolver: HomeResolver<Address>
    /// When and what to publish in the DHT; nil until the node joins it (`join`).
    public private(set) var presence: PresencePolicy?
    public let config: NodeCoreConfig
    public private(set) var counters = NodeCoreCounters()
    /// The address the node's port is bound to, as its presence records may list it.
    public var bound: Address?
    private let hosted: [PrivateKey]

    /// How often measured link costs are handed to gossip.
    public static var costRefreshMs: Int64 { 2_000 }
    /// The cost of a link before its first RTT sample.
    public static var unknownLinkCost: UInt16 { 100 }
    private var nextCostRefresh: Int64
    /// The cost gossip has for each link up.
    private var linkCosts: [WalletAddress: UInt16] = [:]

    /// Calls being placed, by call; resolutions and lookups by what waits for them.
    private var placements: [CallID: Placement] = [:]
    private var placingResolutions: [HomeResolver<Address>.ID: CallID] = [:]
    private var lookups: [LookupID: PendingLookup] = [:]

    /// The forwarding path's buffers, reused: a link payload read in place, a trunk's messages, one of them.
    private var payload: [UInt8] = []
    private var trunkMessages = TrunkMessages()
    private var message: [UInt8] = []

    struct Placement: Sendable {
        let caller: PrivateKey
        let callee: WalletAddress
        let bitrate: Int
        let replacing: CallID?
        var stage: Stage

        enum Stage: Sendable {
            case resolving
            case reaching(HomeReach<Address>, HomeResolver<Address>.Home, deadline: Int64)
            case building(HomeResolver<Address>.Home, resolvedAt: Int64)
        }
    }

    enum PendingLookup: Sendable {
        case asked
        case resolving(HomeResolver<Address>.ID, WalletAddress)
    }

    /// The node with identity `nodeKey` hosting `hosted`; `random` for link sessions, chain labels, calls and the
    /// resolver's queries, `dhtSeed` for the DHT's generator; `sequence` starts gossip's numbers (it must grow
    /// across restarts).
    public init(nodeKey: PrivateKey, hosted: [PrivateKey], config: NodeCoreConfig = NodeCoreConfig(),
                linkConfig: LinkConfig = LinkConfig(), gossipConfig: GossipConfig = GossipConfig(),
                relayConfig: RelayConfig = RelayConfig(), random: LinkRandom, dhtSeed: UInt64,
                sequence: UInt32, now: Int64) {
        self.config = config
        self.hosted = hosted
        links = LinkManager(identity: nodeKey, config: linkConfig, random: random)
        gossip = GossipEngine(local: nodeKey.address, hosted: hosted, nodeKey: nodeKey, sequence: sequence, config: gossipConfig,
                              nowMs: now)
        var relayConfig = relayConfig
        relayConfig.hopLimit = config.hopLimit
        relay = RelayEngine(local: nodeKey.address, config: relayConfig, random: random)
        trunks = Trunker(config: config.trunk)
        calls = CallEngine(wallets: hosted, random: random)
        dht = DHTNode(identity: nodeKey, config: DHTConfig(), seed: dhtSeed)
        var finderConfig = WalletFinder.Config()
        finderConfig.maxTTL = UInt8(clamping: config.hopLimit)
        finder = WalletFinder(config: finderConfig)
        resolver = HomeResolver(random: random.bytes)
        nextCostRefresh = now + Self.costRefreshMs
    }

    public var address: WalletAddress { links.localAddress }

    /// The forwarding layer's view of the node: links up, gossip's node routes, link figures.
    public var routes: LinkRoutes<Address> { LinkRoutes(links: links, gossip: gossip) }

    /// Hands the wall clock to every core (signed timestamps; timers go by `now`).
    public mutating func setClock(_ clock: WallClock) {
        links.clock = clock
        dht.clock = clock
        gossip.clock = clock
        relay.clock = clock
        finder.clock = clock
        calls.clock = clock
    }

    /// The earliest moment a core or the glue needs a tick (trunk holds apart: `trunks.nextDeadline`, in µs).
    public var nextDeadline: Int64? {
        var next = min(min(gossip.nextDeadline, links.nextDeadline ?? .max), min(calls.nextDeadline ?? .max, dht.nextDeadline ?? .max))
        next = min(min(next, relay.nextDeadline ?? .max), min(resolver.nextDeadline ?? .max, presence?.nextCheck ?? .max))
        if case .measured = config.linkCosts { next = min(next, nextCostRefresh) }
        for placement in placements.values {
            if case .reaching(_, _, let deadline) = placement.stage { next = min(next, deadline) }
        }
        return next == .max ? nil : next
    }

    // MARK: inputs

    /// Ticks the cores that are due.
    public mutating func tick(now: NodeTime, into sink: inout some NodeSink<Address>) {
        let ms = now.ms
        func due(_ deadline: Int64?) -> Bool { deadline.map { $0 <= ms } ?? false }
        if due(links.nextDeadline) { run(links.tick(now: ms), now, &sink) }
        if due(calls.nextDeadline) { run(calls.tick(now: ms), now, &sink) }
        if due(gossip.nextDeadline) { run(gossip.tick(nowMs: ms), now, &sink) }
        if due(dht.nextDeadline) { run(dht.tick(nowMs: ms), now, &sink) }
        if due(relay.nextDeadline) { run(relay.tick(routes: routes, now: ms), now, &sink) }
        if case .measured = config.linkCosts, ms >= nextCostRefresh {
            nextCostRefresh = ms + Self.costRefreshMs
            refreshLinkCosts(now, &sink)
        }
        if due(resolver.nextDeadline) { run(resolver.tick(now: ms), now, &sink) }
        endTurn(now: now, into: &sink)
    }

    /// A datagram copied out of the socket: a DHT datagram (by its marker) or a link datagram.
    public mutating func receive(_ datagram: [UInt8], from source: Address, now: NodeTime, into sink: inout some NodeSink<Address>) {
        if datagram.first == DHTWire.marker {
            guard let endpoint = source.dhtEndpoint else { return }
            run(dht.receive(datagram, from: endpoint, nowMs: now.ms), now, &sink)
        } else {
            run(links.receive(datagram, from: source, now: now.ms), now, &sink)
        }
    }

    /// A link datagram where it lies (the forwarding path: a data message is decrypted into a reused buffer,
    /// relabelled there and sealed from there into the sink; nothing is allocated).
    public mutating func receive(link datagram: UnsafeRawBufferPointer, from source: Address, now: NodeTime,
                                 into sink: inout some NodeSink<Address>) {
        switch links.receive(datagram, from: source, now: now.ms, payload: &payload) {
        case .payload(let node):
            guard ChainMessage.isData(payload) else {
                deliver(payload, from: node, now, &sink)
                return
            }
            var message: [UInt8] = []
            swap(&message, &payload)
            forward(&message, from: node, now, &sink)
            swap(&message, &payload)
        case .actions(let actions):
            run(actions, now, &sink)
        }
    }

    /// The end of a turn of the shell's loop (after a batch of datagrams, a tick, a command): plans reaching a
    /// home node step (a link came up, a node route arrived), presence records are published if due, and trunks
    /// with company leave (lone packets start their hold).
    public mutating func endTurn(now: NodeTime, into sink: inout some NodeSink<Address>) {
        stepReaches(now, &sink)
        publishIfDue(now, &sink)
        for (neighbour, trunk) in trunks.endOfBatch(now: now.us) { sendTrunk(trunk, to: neighbour, now, &sink) }
    }

    /// Sends the trunks whose hold is over (`trunks.nextDeadline`, µs).
    public mutating func expireTrunks(now: NodeTime, into sink: inout some NodeSink<Address>) {
        for (neighbour, trunk) in trunks.expire(now: now.us) { sendTrunk(trunk, to: neighbour, now, &sink) }
    }

    // MARK: commands

    /// Dials a neighbour (pinned to its node key, when given), retrying until the link is up.
    public mutating func connect(to address: Address, pinned: WalletAddress? = nil, now: NodeTime, into sink: inout some NodeSink<Address>) {
        run(links.connect(to: address, pinned: pinned, now: now.ms), now, &sink)
    }

    /// Joins the DHT through `bootstrap` and publishes the hosted wallets' presence records, then as the presence
    /// policy says; `advertise` overrides the endpoints the records list.
    public mutating func join(bootstrap: [DHTEndpoint], advertise: [DHTEndpoint], now: NodeTime, into sink: inout some NodeSink<Address>) {
        var policy = PresencePolicy(relayOnly: config.relayOnly, advertised: advertise, now: now.ms)
        run(dht.bootstrap(bootstrap, nowMs: now.ms), now, &sink)
        let reach = policy.reach(bound: bound?.dhtEndpoint, neighbours: neighbourContacts)
        presence = policy
        publish(reach, now, &sink)
    }

    /// Withdraws the hosted wallets' records (best effort), hangs up every call, flushes the trunks and closes the
    /// links.
    public mutating func leave(now: NodeTime, into sink: inout some NodeSink<Address>) {
        for call in calls.calls.values where call.state != .ended { run(calls.hangup(call.id, now: now.ms), now, &sink) }
        for wallet in hosted { run(dht.withdraw(wallet.address, nowMs: now.ms), now, &sink) }
        for (neighbour, trunk) in trunks.flushAll() { sendTrunk(trunk, to: neighbour, now, &sink) }
        run(links.closeAll(now: now.ms), now, &sink)
    }

    /// Finds `wallet`'s home node (docs/routing.md, "Wallet → home node"): answered by `.resolved` or
    /// `.unresolved` with the id returned.
    public mutating func resolve(_ wallet: WalletAddress, now: NodeTime, into sink: inout some NodeSink<Address>) -> HomeResolver<Address>.ID {
        let (id, actions) = startResolving(wallet, now: now)
        run(actions, now, &sink)
        return id
    }

    private mutating func startResolving(_ wallet: WalletAddress, now: NodeTime) -> (HomeResolver<Address>.ID, [HomeResolver<Address>.Action]) {
        let route = gossip.route(to: wallet).map { (home: $0.origin, linked: links.isUp($0.origin)) }
        return resolver.resolve(wallet, route: route, now: now.ms)
    }

    /// Looks up `wallet`'s presence record in the DHT: answered by `.lookedUp` with the id returned.
    public mutating func lookup(_ wallet: WalletAddress, now: NodeTime, into sink: inout some NodeSink<Address>) -> LookupID {
        let (id, actions) = dht.findValue(NodeID.key(for: wallet), nowMs: now.ms)
        lookups[id] = .asked
        run(actions, now, &sink)
        return id
    }

    /// Calls `callee` from the hosted wallet `caller`: its home node resolved, reached, a chain built to it, then
    /// the offer (docs/forwarding.md). Answered by `.placed` or `.notPlaced`; `replacing` is the call a blind
    /// transfer moves from (the wallet may be in that one).
    public mutating func place(_ id: CallID, from caller: PrivateKey, to callee: WalletAddress, bitrate: Int, replacing: CallID? = nil,
                               now: NodeTime, into sink: inout some NodeSink<Address>) {
        placements[id] = Placement(caller: caller, callee: callee, bitrate: bitrate, replacing: replacing, stage: .resolving)
        let (resolution, actions) = startResolving(callee, now: now)
        placingResolutions[resolution] = id
        run(actions, now, &sink)
    }

    /// Gives up placing a call (its client went): what was built for it is closed.
    public mutating func abandon(_ id: CallID, now: NodeTime, into sink: inout some NodeSink<Address>) {
        guard let placement = placements.removeValue(forKey: id) else { return }
        placingResolutions = placingResolutions.filter { $0.value != id }
        if case .building = placement.stage { run(relay.close(call: id.raw), now, &sink) }
    }

    /// Whether a call is being placed (not yet offered or refused).
    public func isPlacing(_ id: CallID) -> Bool { placements[id] != nil }

    public mutating func answer(_ id: CallID, now: NodeTime, into sink: inout some NodeSink<Address>) {
        run(calls.answer(id, now: now.ms), now, &sink)
    }

    public mutating func hangup(_ id: CallID, reason: CallEndReason = .normal, now: NodeTime, into sink: inout some NodeSink<Address>) {
        run(calls.hangup(id, reason: reason, now: now.ms), now, &sink)
    }

    /// Sends end-to-end bytes of a call (media, ICE, control, quelch) on its active chain.
    public mutating func send(call id: CallID, _ inner: CallInner, now: NodeTime, into sink: inout some NodeSink<Address>) {
        run(relay.send(call: id.raw, inner.serialize()), now, &sink)
    }

    /// Media arrived for a call (on its chain or its direct path): it is alive.
    public mutating func mediaArrived(_ id: CallID, now: NodeTime) { calls.mediaArrived(id, now: now.ms) }

    /// A signed verdict of this relay (`.judged`), sent toward both ends of the session judged.
    public mutating func inject(_ key: ChainKey, _ bytes: [UInt8], now: NodeTime, into sink: inout some NodeSink<Address>) {
        run(relay.inject(key, bytes), now, &sink)
    }

    /// Quelches (or lets through) a call this node relays, with the signed notice for its ends; false when this
    /// node relays no such call.
    public mutating func quelch(call: UInt64, _ on: Bool, notice: [UInt8], now: NodeTime, into sink: inout some NodeSink<Address>) -> Bool {
        guard let actions = relay.quelch(call: call, on, notice: notice) else { return false }
        run(actions, now, &sink)
        return true
    }

    /// Opens a link once (no retries) to an endpoint, pinned to its node key.
    public mutating func dialOnce(_ address: Address, pinned: WalletAddress, now: NodeTime, into sink: inout some NodeSink<Address>) {
        run(links.dialOnce(address, pinned: pinned, now: now.ms), now, &sink)
    }

    // MARK: link costs

    /// Link cost: smoothed RTT in ms (at least 1), doubled for every 10 % of ping loss; `unknownLinkCost` before
    /// the first sample.
    public static func linkCost(rttMs: Double?, lossPercent: Double) -> UInt16 {
        guard let rttMs else { return unknownLinkCost }
        return UInt16(clamping: Int((max(rttMs, 1) * (1 + lossPercent / 10)).rounded()))
    }

    private var newLinkCost: UInt16 {
        switch config.linkCosts {
        case .measured: Self.unknownLinkCost
        case .fixed(let cost): cost
        }
    }

    /// Whether a link's measured cost differs enough from the one gossip has to be handed on: by a fifth and by
    /// 2 at least. Each change reweighs every route learned over the link and may send updates across the
    /// mesh, so the jitter of RTT samples is kept out of it.
    public static func costChanged(from old: UInt16, to new: UInt16) -> Bool {
        let change = abs(Int(new) - Int(old))
        return change >= 2 && change * 5 >= Int(old)
    }

    private mutating func refreshLinkCosts(_ now: NodeTime, _ sink: inout some NodeSink<Address>) {
        for address in links.upPeers {
            guard let quality = links.quality(address), quality.rttMs != nil else { continue }
            let cost = Self.linkCost(rttMs: quality.rttMs, lossPercent: quality.lossPercent)
            guard Self.costChanged(from: linkCosts[address] ?? Self.unknownLinkCost, to: cost) else { continue }
            linkCosts[address] = cost
            run(gossip.setCost(address, cost: cost, nowMs: now.ms), now, &sink)
        }
    }

    // MARK: the glue

    private mutating func run(_ actions: [LinkAction<Address>], _ now: NodeTime, _ sink: inout some NodeSink<Address>) {
        for action in actions {
            switch action {
            case .send(let bytes, let to):
                Self.write(bytes, to: to, into: &sink)
            case .deliver(let payload, let from):
                deliver(payload, from: from, now, &sink)
            case .up(let peer, let endpoint):
                sink.event(.linkUp(peer, endpoint))
                linkCosts[peer] = newLinkCost
                run(gossip.neighbourUp(peer, cost: newLinkCost, nowMs: now.ms), now, &sink)
            case .down(let peer, let reason):
                sink.event(.linkDown(peer, reason: reason))
                linkCosts[peer] = nil
                run(gossip.neighbourDown(peer, nowMs: now.ms), now, &sink)
                trunks.linkDown(peer)
                run(relay.linkDown(peer, routes: routes, now: now.ms), now, &sink)
            case .refused(let endpoint, let reason):
                sink.event(.refused(endpoint, reason: reason))
            }
        }
    }

    private static func write(_ bytes: [UInt8], to address: Address, into sink: inout some NodeSink<Address>) {
        bytes.withUnsafeBytes { source in sink.append(length: source.count, to: address) { $0.copyMemory(from: source) } }
    }

    private mutating func deliver(_ payload: [UInt8], from node: WalletAddress, _ now: NodeTime, _ sink: inout some NodeSink<Address>) {
        if ChainMessage.isData(payload) {
            var message = payload
            forward(&message, from: node, now, &sink)
        } else if TrunkWire.isTrunk(payload) {
            trunks.open(payload, from: node, into: &trunkMessages)
            for part in trunkMessages {
                var one: [UInt8] = []
                swap(&one, &message)
                one.removeAll(keepingCapacity: true)
                one.append(contentsOf: part)
                forward(&one, from: node, now, &sink)
                swap(&one, &message)
            }
        } else if ChainMessage.claims(payload) {
            run(relay.receive(payload, from: node, routes: routes, now: now.ms), now, &sink)
        } else if WalletFinder.Message.claims(payload) {
            let actions: [WalletFinder.Action]
            do {
                let gossip = gossip
                actions = finder.receive(payload, from: node, neighbours: links.upPeers, known: { gossip.route(to: $0)?.announcement },
                                         now: now.ms)
            }
            run(actions, now, &sink)
        } else {
            switch AppMessage(parsing: payload) {
            case .resolveRequest(let query, let address)?:
                let reply = AppMessage.resolveReply(query: query, address: address, hosted: calls.hosts(address))
                run(links.send(reply.serialize(), to: node, now: now.ms), now, &sink)
            case .resolveReply(let query, let address, let hosted)?:
                guard let actions = resolver.answered(query: query, wallet: address, hosted: hosted, from: node, now: now.ms) else {
                    counters.resolveUnsolicited += 1
                    return
                }
                run(actions, now, &sink)
            case .gossip(let body)?:
                run(gossip.receive(body, from: node, nowMs: now.ms), now, &sink)
            case nil:
                counters.malformedApp += 1
            }
        }
    }

    /// The hot path: a data message (its storage reused) relabelled and passed on, or handed up at a chain's end.
    private mutating func forward(_ message: inout [UInt8], from node: WalletAddress, _ now: NodeTime, _ sink: inout some NodeSink<Address>) {
        switch relay.forward(&message, from: node, now: now.ms) {
        case .pass(let to): sendData(message, to: to, now, &sink)
        case .actions(let actions): run(actions, now, &sink)
        }
    }

    /// A data message to a neighbour: into its trunk when trunking is on, else a datagram of its own, sealed
    /// straight into the sink.
    private mutating func sendData(_ message: [UInt8], to neighbour: WalletAddress, _ now: NodeTime, _ sink: inout some NodeSink<Address>) {
        guard config.trunking, TrunkWire.canCarry(message) else {
            _ = links.send(message, to: neighbour, now: now.ms, into: &sink)
            return
        }
        if let full = trunks.enqueue(message, to: neighbour, now: now.us) { sendTrunk(full, to: neighbour, now, &sink) }
    }

    /// A finished trunk, sealed straight into the sink; its storage goes back to the trunker for the next one.
    private mutating func sendTrunk(_ trunk: consuming [UInt8], to neighbour: WalletAddress, _ now: NodeTime, _ sink: inout some NodeSink<Address>) {
        _ = links.send(trunk, to: neighbour, now: now.ms, into: &sink)
        trunks.recycle(consume trunk, to: neighbour)
    }

    private mutating func run(_ actions: [RelayAction], _ now: NodeTime, _ sink: inout some NodeSink<Address>) {
        for action in actions {
            switch action {
            case .send(let bytes, let to):
                if ChainMessage.isData(bytes) {
                    sendData(bytes, to: to, now, &sink)
                } else {
                    // A chain message must not overtake the data queued before it.
                    if let trunk = trunks.flush(to) { sendTrunk(trunk, to: to, now, &sink) }
                    run(links.send(bytes, to: to, now: now.ms), now, &sink)
                }
            case .deliver(let call, let bytes):
                deliverCall(CallID(raw: call), bytes, now, &sink)
            case .chainUp(let call):
                let id = CallID(raw: call)
                sink.event(.chainUp(id))
                offer(id, now, &sink)
            case .chainFailed(let call, let why):
                let id = CallID(raw: call)
                if placements.removeValue(forKey: id) != nil {
                    sink.event(.notPlaced(id, "no relay chain to the callee's home node: \(why)"))
                } else {
                    sink.event(.chainLost(id, why))
                    run(calls.chainLost(id, now: now.ms), now, &sink)
                }
            case .chainSwitched(let call, let from, let to, let why):
                sink.event(.chainSwitched(CallID(raw: call), from: from, to: to, why: why))
            case .judged(let key, let tier, let sample):
                sink.event(.judged(key, tier, sample))
            }
        }
    }

    /// End-to-end bytes of a call that reached this end of its chain: signalling for the chain's own call to the
    /// call engine, the rest to the shell.
    private mutating func deliverCall(_ id: CallID, _ bytes: [UInt8], _ now: NodeTime, _ sink: inout some NodeSink<Address>) {
        switch CallInner(parsing: bytes) {
        case .signal(let body)?:
            // The chain was set up for one call: signalling for any other is refused here.
            guard CallMessage(parsing: body)?.callID == id, let farEnd = relay.farEnd(call: id.raw) else {
                counters.callWrongChain += 1
                return
            }
            run(calls.receive(body, from: farEnd, now: now.ms), now, &sink)
        case let inner?:
            sink.event(.callBytes(id, inner))
        case nil:
            counters.callWrongChain += 1
        }
    }

    private mutating func run(_ actions: [CallAction], _ now: NodeTime, _ sink: inout some NodeSink<Address>) {
        for action in actions {
            switch action {
            case .send(let body, _):
                guard let id = CallMessage(parsing: body)?.callID else { continue }
                run(relay.send(call: id.raw, CallInner.signal(body).serialize()), now, &sink)
            case .incoming(let id, _, _):
                sink.event(.call(action))
                if config.answersCalls {
                    run(calls.answer(id, now: now.ms), now, &sink)
                } else {
                    run(calls.hangup(id, reason: .declined, now: now.ms), now, &sink)
                }
            case .established(let id, let keys):
                let caller = calls.calls[id]?.role == .caller
                relay.authenticate(call: id.raw, key: ProbeKey(callerToCallee: caller ? keys.send : keys.receive,
                                                               calleeToCaller: caller ? keys.receive : keys.send))
                sink.event(.call(action))
            case .ringing:
                sink.event(.call(action))
            case .ended(let id, let reason):
                sink.event(.ended(id, reason, chains: relay.chains(call: id.raw, now: now.ms)))
                run(relay.close(call: id.raw), now, &sink)
            }
        }
    }

    private mutating func run(_ actions: [GossipAction], _ now: NodeTime, _ sink: inout some NodeSink<Address>) {
        for case .send(let body, let to) in actions {
            run(links.send(AppMessage.gossip(body).serialize(), to: to, now: now.ms), now, &sink)
        }
    }

    private mutating func run(_ actions: [WalletFinder.Action], _ now: NodeTime, _ sink: inout some NodeSink<Address>) {
        for action in actions {
            switch action {
            case .send(let bytes, let to): run(links.send(bytes, to: to, now: now.ms), now, &sink)
            case .found(let query, let announcement): run(resolver.found(query: query, home: announcement.origin), now, &sink)
            }
        }
    }

    private mutating func run(_ actions: [HomeResolver<Address>.Action], _ now: NodeTime, _ sink: inout some NodeSink<Address>) {
        for action in actions {
            switch action {
            case .ask(let query, let wallet, let home):
                run(links.send(AppMessage.resolveRequest(query: query, address: wallet).serialize(), to: home, now: now.ms), now, &sink)
            case .refute(let wallet, let home, let why):
                sink.event(.refuted(wallet: wallet, home: home, why: why))
                run(gossip.refute(wallet, origin: home, nowMs: now.ms), now, &sink)
            case .lookup(let resolution, let wallet):
                let (id, actions) = dht.findValue(NodeID.key(for: wallet), nowMs: now.ms)
                lookups[id] = .resolving(resolution, wallet)
                run(actions, now, &sink)
            case .find(let query, let wallet):
                run(finder.find(wallet, query: query, ttl: finder.config.maxTTL, neighbours: links.upPeers, now: now.ms), now, &sink)
            case .resolved(let resolution, let home):
                guard let id = placingResolutions.removeValue(forKey: resolution) else {
                    sink.event(.resolved(resolution, home))
                    continue
                }
                reach(id, home, now, &sink)
            case .failed(let resolution, let why):
                guard let id = placingResolutions.removeValue(forKey: resolution) else {
                    sink.event(.unresolved(resolution, why))
                    continue
                }
                placements[id] = nil
                sink.event(.notPlaced(id, why))
            }
        }
    }

    private mutating func run(_ actions: [DHTAction], _ now: NodeTime, _ sink: inout some NodeSink<Address>) {
        var rest = actions[...]
        while let action = rest.popFirst() {
            switch action {
            case .send(let bytes, let to):
                guard let address = Address(dhtEndpoint: to) else { continue }
                Self.write(bytes, to: address, into: &sink)
            case .recordStored(let record):
                // The STORE's acknowledgement (the `.send` right after) waits for the shell to persist the record.
                var acknowledgement: (bytes: [UInt8], to: Address)?
                if case .send(let bytes, let to)? = rest.first {
                    rest.removeFirst()
                    acknowledgement = Address(dhtEndpoint: to).map { (bytes, $0) }
                }
                sink.event(.recordStored(record, acknowledgement: acknowledgement))
            case .recordDropped(let key):
                sink.event(.recordDropped(key))
            case .lookupFinished(let id, let outcome):
                switch lookups.removeValue(forKey: id) {
                case .asked?:
                    sink.event(.lookedUp(id, outcome))
                case .resolving(let resolution, let wallet)?:
                    run(resolver.dhtAnswered(resolution, HomeResolver.home(of: wallet, outcome) { Address(dhtEndpoint: $0) }), now, &sink)
                case nil:
                    continue
                }
            case .clockSkew(let report):
                sink.event(.clockSkew(report))
            }
        }
    }

    // MARK: placing a call

    /// The callee's home node is known: reach it (`HomeReach`) before building the chain.
    private mutating func reach(_ id: CallID, _ home: HomeResolver<Address>.Home, _ now: NodeTime, _ sink: inout some NodeSink<Address>) {
        guard var placement = placements[id] else { return }
        placement.stage = .reaching(HomeReach(home: home.node, relays: home.hints, targets: home.dial, now: now.ms), home, deadline: .min)
        placements[id] = placement
        stepReaches(now, &sink)
    }

    /// Steps every plan reaching a home node: at the end of every turn and at its deadline.
    private mutating func stepReaches(_ now: NodeTime, _ sink: inout some NodeSink<Address>) {
        guard !placements.isEmpty else { return }
        for id in placements.keys.sorted(by: { $0.raw < $1.raw }) {
            guard var placement = placements[id], case .reaching(var plan, let home, _) = placement.stage else { continue }
            let routed = links.isUp(home.node) || !routes.nextHops(toward: home.node, within: config.hopLimit).isEmpty
            switch plan.step(now: now.ms, isUp: { self.links.isUp($0) }, routed: routed) {
            case .ready:
                placement.stage = .building(home, resolvedAt: now.ms)
                placements[id] = placement
                run(relay.open(call: id.raw, wallet: placement.caller, target: home.node, hints: home.hints, routes: routes, now: now.ms),
                    now, &sink)
            case .wait(let dial, let deadline):
                placement.stage = .reaching(plan, home, deadline: deadline)
                placements[id] = placement
                for (endpoint, node) in dial { run(links.dialOnce(endpoint, pinned: node, now: now.ms), now, &sink) }
            }
        }
    }

    /// The call's first chain is up: offer the call through it.
    private mutating func offer(_ id: CallID, _ now: NodeTime, _ sink: inout some NodeSink<Address>) {
        guard let placement = placements[id], case .building(let home, let resolvedAt) = placement.stage else { return }
        placements[id] = nil
        guard let (_, actions) = calls.place(id: id, from: placement.caller.address, to: placement.callee, via: home.node,
                                             bitrate: placement.bitrate, replacing: placement.replacing, now: now.ms) else {
            run(relay.close(call: id.raw), now, &sink)
            sink.event(.notPlaced(id, "\(placement.caller.address) is already in a call (busy)"))
            return
        }
        sink.event(.placed(id, home: home, resolvedAt: resolvedAt))
        run(actions, now, &sink)
    }

    // MARK: presence

    /// The linked neighbours as DHT contacts: the relays a presence record lists.
    private var neighbourContacts: [Contact] {
        links.upPeers.compactMap { address in
            guard let peer = links.upPeer(address), let endpoint = peer.endpoint.dhtEndpoint else { return nil }
            return Contact(id: NodeID(publicKey: peer.publicKey), endpoint: endpoint)
        }
    }

    private mutating func publishIfDue(_ now: NodeTime, _ sink: inout some NodeSink<Address>) {
        guard var policy = presence else { return }
        let due = policy.due(now: now.ms, contacts: dht.contactCount) { (self.bound?.dhtEndpoint, self.neighbourContacts) }
        presence = policy
        if let due { publish(due, now, &sink) }
    }

    private mutating func publish(_ reach: PresencePolicy.Reach, _ now: NodeTime, _ sink: inout some NodeSink<Address>) {
        presence?.didPublish(reach, contacts: dht.contactCount)
        for wallet in hosted {
            run(dht.publish(wallet: wallet, endpoints: reach.endpoints, relays: reach.relays, nowMs: now.ms), now, &sink)
        }
        sink.event(.published(dht.publishedRecords))
    }
}
